// EXIF / XMP orientation, read and applied as Pillow's Image.getexif and ImageOps.exif_transpose do.
#include <algorithm>
#include <cstring>
#include <iterator>
#include <string_view>

#include "zeroseg/image.h"

namespace zeroseg {
namespace {

constexpr std::uint16_t kOrientationTag = 0x0112;

// A TIFF block (the EXIF payload) read with its byte order; reads past the end return false.
struct Tiff {
  const std::vector<std::uint8_t>& data;
  bool little;
  bool u16(size_t at, std::uint32_t& out) const {
    if (at + 2 > data.size()) return false;
    out = little ? data[at] | data[at + 1] << 8 : data[at] << 8 | data[at + 1];
    return true;
  }
  bool u32(size_t at, std::uint32_t& out) const {
    std::uint32_t a = 0, b = 0;
    if (!u16(at, a) || !u16(at + 2, b)) return false;
    out = little ? a | b << 16 : a << 16 | b;
    return true;
  }
};

// The first value of an Orientation entry of integer type (SHORT, LONG, SSHORT, SLONG).
bool entry_value(const Tiff& tiff, size_t entry, std::uint32_t type, std::uint32_t count, int& value) {
  const size_t unit = (type == 3 || type == 8) ? 2 : 4;
  std::uint32_t at = static_cast<std::uint32_t>(entry + 8);
  if (count * unit > 4 && !tiff.u32(entry + 8, at)) return false;  // stored at an offset
  if (static_cast<std::uint64_t>(at) + count * unit > tiff.data.size()) return false;
  std::uint32_t v = 0;
  if (unit == 2 ? !tiff.u16(at, v) : !tiff.u32(at, v)) return false;
  const std::int64_t signed_v = type == 8 ? static_cast<std::int16_t>(v) : type == 9 ? static_cast<std::int32_t>(v) : v;
  value = signed_v >= 1 && signed_v <= 8 ? static_cast<int>(signed_v) : 0;  // other values: no transpose
  return true;
}

}  // namespace

int exif_orientation(std::vector<std::uint8_t> exif) {
  for (int k = 0; k < 2 && exif.size() >= 6 && std::memcmp(exif.data(), "Exif\0\0", 6) == 0; ++k)
    exif.erase(exif.begin(), exif.begin() + 6);
  if (exif.empty()) return -1;
  static const char* const kHeads[] = {"MM\0*", "II*\0", "MM*\0", "II\0*"};  // Pillow's TIFF prefixes
  const bool tiff_head = exif.size() >= 8 && std::any_of(std::begin(kHeads), std::end(kHeads), [&](const char* h) {
    return std::memcmp(exif.data(), h, 4) == 0;
  });
  if (!tiff_head) return 0;  // Pillow fails reading it: no orientation, and no XMP fallback either
  const Tiff tiff{exif, exif[0] == 'I'};
  std::uint32_t ifd = 0, entries = 0;
  if (!tiff.u32(4, ifd) || !tiff.u16(ifd, entries)) return -1;
  for (std::uint32_t i = 0; i < entries; ++i) {  // a truncated table keeps the entries read so far
    const size_t entry = ifd + 2 + static_cast<size_t>(i) * 12;
    std::uint32_t tag = 0, type = 0, count = 0;
    if (!tiff.u16(entry, tag) || !tiff.u16(entry + 2, type) || !tiff.u32(entry + 4, count)) break;
    if (tag != kOrientationTag || count == 0) continue;
    if (type < 1 || type > 13) continue;  // a type Pillow does not read: as if absent
    int value = 0;  // another readable type (bytes, text, rationals): present, no transpose
    if ((type == 3 || type == 4 || type == 8 || type == 9) && !entry_value(tiff, entry, type, count, value)) continue;
    return value;  // Pillow keeps the first readable entry of a tag
  }
  return -1;
}

int xmp_orientation(std::string_view xmp) {  // Pillow's regex: tiff:Orientation(="|>)([0-9])
  constexpr std::string_view kKey = "tiff:Orientation";
  for (size_t at = xmp.find(kKey); at != std::string_view::npos; at = xmp.find(kKey, at + 1)) {
    const std::string_view rest = xmp.substr(at + kKey.size());
    const size_t digit = rest.substr(0, 2) == "=\"" ? 2 : rest.substr(0, 1) == ">" ? 1 : 0;
    if (digit > 0 && rest.size() > digit && rest[digit] >= '0' && rest[digit] <= '9') return rest[digit] - '0';
  }
  return -1;
}

Image apply_orientation(const Image& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int h = in.height, w = in.width;
  const bool swap = orientation >= 5;  // TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90
  Image out;
  out.height = swap ? w : h;
  out.width = swap ? h : w;
  out.rgb.resize(in.rgb.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sy = y, sx = x;  // the source pixel of output (y, x), as PIL's Image.transpose
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                  // FLIP_LEFT_RIGHT
        case 3: sy = h - 1 - y; sx = w - 1 - x; break;  // ROTATE_180
        case 4: sy = h - 1 - y; break;                  // FLIP_TOP_BOTTOM
        case 5: sy = x; sx = y; break;                  // TRANSPOSE
        case 6: sy = h - 1 - x; sx = y; break;          // ROTATE_270 (90 degrees clockwise)
        case 7: sy = h - 1 - x; sx = w - 1 - y; break;  // TRANSVERSE
        default: sy = x; sx = w - 1 - y; break;         // 8: ROTATE_90 (counter-clockwise)
      }
      const std::uint8_t* src = in.rgb.data() + (static_cast<size_t>(sy) * w + sx) * 3;
      std::uint8_t* dst = out.rgb.data() + (static_cast<size_t>(y) * out.width + x) * 3;
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

}  // namespace zeroseg
