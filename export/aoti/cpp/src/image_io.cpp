// Image files through the system's libpng and libjpeg-turbo (no vendored copies).
#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "zeroseg/image.h"

namespace zeroseg {
namespace {

struct File {
  std::FILE* fp = nullptr;
  File(const std::filesystem::path& path, const char* mode) : fp(std::fopen(path.c_str(), mode)) {}
  ~File() {
    if (fp) std::fclose(fp);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
};

// libpng reports errors through longjmp; the message is kept here and thrown after the jump.
struct PngErr {
  char message[256] = "unknown libpng error";
};

void png_error_fn(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngErr*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof(err->message), "%s", msg);
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}

std::string too_large(const std::string& name, std::uint64_t width, std::uint64_t height) {
  return "image too large (> " + std::to_string(kMaxPixels) + " pixels): " + name + " (" + std::to_string(width) +
         "x" + std::to_string(height) + "); downscale it before segmenting";
}

// EXIF and XMP as Pillow's PNG plugin finds them: the eXIf chunk, else the hex "Raw profile type
// exif" text (ImageMagick's); XMP from the "XML:com.adobe.xmp" text.
struct PngMeta {
  bool has_exif = false, has_raw_profile = false;
  std::vector<std::uint8_t> exif;
  std::string raw_profile, xmp;
};

void png_metadata(png_structp png, png_infop info, PngMeta& meta) {
  png_uint_32 length = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &length, &exif) & PNG_INFO_eXIf) {
    meta.has_exif = true;
    meta.exif.assign(exif, exif + length);
  }
  png_textp text = nullptr;
  int count = 0;
  png_get_text(png, info, &text, &count);
  for (int i = 0; i < count; ++i) {
    const std::string key = text[i].key;
    const size_t n = text[i].compression > 0 ? text[i].itxt_length : text[i].text_length;  // iTXt: UTF-8
    if (key == "Raw profile type exif" && !meta.has_raw_profile) {
      meta.has_raw_profile = true;
      meta.raw_profile.assign(text[i].text, n);
    } else if (key == "XML:com.adobe.xmp") {
      meta.xmp.assign(text[i].text, n);
    }
  }
}

// Pillow: bytes.fromhex of the profile's lines after the third; bad hex makes the image unreadable.
std::vector<std::uint8_t> raw_profile_bytes(const std::string& profile, const std::string& name) {
  size_t start = 0;
  for (int line = 0; line < 3 && start != std::string::npos; ++line) start = profile.find('\n', start + (line > 0));
  std::vector<std::uint8_t> out;
  int high = -1;
  for (size_t i = start == std::string::npos ? profile.size() : start + 1; i < profile.size(); ++i) {
    const char c = profile[i];
    if (c == '\n' || (high < 0 && std::isspace(static_cast<unsigned char>(c)))) continue;  // lines joined
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      throw Error("not a readable image: " + name + " (bad hex in its 'Raw profile type exif')");
    const int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10);
    if (high < 0) high = v;
    else out.push_back(static_cast<std::uint8_t>(high << 4 | v)), high = -1;
  }
  if (high >= 0) throw Error("not a readable image: " + name + " (bad hex in its 'Raw profile type exif')");
  return out;
}

int png_orientation(const PngMeta& meta, const std::string& name) {
  int orientation = -1;
  if (meta.has_exif) orientation = exif_orientation(meta.exif);
  else if (meta.has_raw_profile) orientation = exif_orientation(raw_profile_bytes(meta.raw_profile, name));
  return orientation >= 0 ? orientation : xmp_orientation(meta.xmp);
}

// The whole file must decode (png_read_end checks the last chunks and their CRCs, so a file cut
// short is a libpng error); with header_only, only the size is read and checked.
Image read_png(std::FILE* fp, const std::string& name, bool header_only) {
  PngErr err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("out of memory reading " + name);
  }
  Image img;
  PngMeta meta;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(name + " is not a readable PNG (" + err.message + ")");
  }
  png_init_io(png, fp);
  png_read_info(png, info);
  img.width = static_cast<int>(png_get_image_width(png, info));
  img.height = static_cast<int>(png_get_image_height(png, info));
  const bool too_big = static_cast<std::int64_t>(img.width) * img.height > kMaxPixels;
  if (header_only || too_big) {  // before any pixel buffer is allocated
    png_destroy_read_struct(&png, &info, nullptr);
    if (too_big) throw Error(too_large(name, img.width, img.height));
    return img;
  }
  // Pillow's convert("RGB"): palette and grey expanded, 16 bits -> high byte, alpha dropped
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<png_size_t>(img.width) * 3) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(name + ": unsupported PNG layout");
  }
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  rows.resize(img.height);
  for (int y = 0; y < img.height; ++y) rows[y] = img.rgb.data() + static_cast<size_t>(y) * img.width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, info);  // chunks after the pixels (eXIf, text) join `info`, as Pillow reads them
  png_metadata(png, info, meta);
  png_destroy_read_struct(&png, &info, nullptr);
  return apply_orientation(img, png_orientation(meta, name));
}

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "unknown libjpeg error";
};

void jpeg_error_fn(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg only warns when the file ends early (it pads the image with grey) or its pixel data is
// corrupt: those warnings are errors here (Pillow refuses a truncated JPEG); the harmless ones
// (extraneous bytes before a marker, an unknown JFIF revision, ...) are ignored, as Pillow does.
void jpeg_message_fn(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
      jpeg_error_fn(cinfo);
      break;
    default:
      break;
  }
}

// Pillow's JPEG plugin: the "Exif" APP1 segments concatenated (the later ones without their
// "Exif\0\0"), the XMP of the last XMP APP1 segment.
int jpeg_orientation(const jpeg_decompress_struct& cinfo) {
  static constexpr char kXmp[] = "http://ns.adobe.com/xap/1.0/";  // + '\0'
  std::vector<std::uint8_t> exif;
  std::string_view xmp;
  bool has_exif = false;
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    const auto* data = reinterpret_cast<const char*>(m->data);
    if (m->data_length >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
      exif.insert(exif.end(), m->data + (has_exif ? 6 : 0), m->data + m->data_length);
      has_exif = true;
    } else if (m->data_length >= sizeof(kXmp) && std::memcmp(data, kXmp, sizeof(kXmp)) == 0) {
      xmp = std::string_view(data + sizeof(kXmp), m->data_length - sizeof(kXmp));
    }
  }
  const int orientation = has_exif ? exif_orientation(exif) : -1;
  return orientation >= 0 ? orientation : xmp_orientation(xmp);
}

Image read_jpeg(std::FILE* fp, const std::string& name, bool header_only) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_fn;
  err.mgr.emit_message = jpeg_message_fn;
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(name + " is not a readable JPEG (" + err.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, fp);
  if (!header_only) jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&cinfo, TRUE);
  img.width = static_cast<int>(cinfo.image_width);
  img.height = static_cast<int>(cinfo.image_height);
  const bool too_big = static_cast<std::int64_t>(img.width) * img.height > kMaxPixels;
  if (header_only || too_big) {  // before any pixel buffer is allocated
    jpeg_destroy_decompress(&cinfo);
    if (too_big) throw Error(too_large(name, img.width, img.height));
    return img;
  }
  const int orientation = jpeg_orientation(cinfo);  // before jpeg_finish_decompress frees the markers
  cinfo.out_color_space = JCS_RGB;  // defaults otherwise: islow DCT, fancy upsampling (as Pillow)
  jpeg_start_decompress(&cinfo);
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);  // reads on to the end marker: a missing end is refused too
  jpeg_destroy_decompress(&cinfo);
  return apply_orientation(img, orientation);
}

void write_png_file(const std::filesystem::path& path, const std::int32_t* labels, int height, int width,
                    int num_labels) {
  File out(path, "wb");
  if (!out.fp) throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
  PngErr err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw Error("out of memory writing " + path.string());
  }
  const bool wide = num_labels > 255;  // 255 never means a class in a palette PNG
  std::vector<std::uint8_t> row(static_cast<size_t>(width) * (wide ? 2 : 1));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("cannot write " + path.string() + " (" + err.message + ")");
  }
  png_init_io(png, out.fp);
  if (wide) {
    png_set_IHDR(png, info, width, height, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  } else {
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color palette[256];
    for (int i = 0; i < 256; ++i) {  // PASCAL VOC: label bits spread over the channels' high bits
      int r = 0, g = 0, b = 0;
      for (int shift = 0; shift < 8; ++shift) {
        r |= ((i >> (3 * shift)) & 1) << (7 - shift);
        g |= ((i >> (3 * shift + 1)) & 1) << (7 - shift);
        b |= ((i >> (3 * shift + 2)) & 1) << (7 - shift);
      }
      palette[i] = png_color{static_cast<png_byte>(r), static_cast<png_byte>(g), static_cast<png_byte>(b)};
    }
    png_set_PLTE(png, info, palette, 256);
  }
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) {
    const std::int32_t* src = labels + static_cast<size_t>(y) * width;
    for (int x = 0; x < width; ++x) {
      if (wide) {
        row[2 * x] = static_cast<std::uint8_t>(src[x] >> 8);
        row[2 * x + 1] = static_cast<std::uint8_t>(src[x] & 0xff);
      } else {
        row[x] = static_cast<std::uint8_t>(src[x]);
      }
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fflush(out.fp) != 0) throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

namespace {

// Opens `path` and reads it as a PNG or a JPEG by its signature (only the header with header_only).
Image read_file(const std::filesystem::path& path, bool header_only) {
  const std::string name = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(name + " is a folder, not an image: pass the image files inside it");
  if (!std::filesystem::exists(path, ec)) throw Error("image not found: " + name + " (check the path)");
  File in(path, "rb");
  if (!in.fp) throw Error("cannot open image " + name + ": " + std::strerror(errno));
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, sizeof(magic), in.fp);
  std::rewind(in.fp);
  if (got >= 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(in.fp, name, header_only);
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg(in.fp, name, header_only);
  throw Error(name + " is neither a PNG nor a JPEG file (this runner reads those two)");
}

}  // namespace

Image read_image(const std::filesystem::path& path) { return read_file(path, false); }

void check_image(const std::filesystem::path& path) { read_file(path, true); }

void write_label_png(const std::filesystem::path& path, const std::int32_t* labels, int height, int width,
                     int num_labels) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  try {
    write_png_file(tmp, labels, height, width, num_labels);
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace zeroseg
