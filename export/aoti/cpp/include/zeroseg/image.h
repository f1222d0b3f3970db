// zeroseg C++ runner, the torch-free half: image files, the input size rule, the resize.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zeroseg {

// Every problem a user can fix: one line, printed as "error: ..." with exit status 2.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An 8-bit RGB image, rows top to bottom, pixels interleaved (R, G, B).
struct Image {
  int height = 0;
  int width = 0;
  std::vector<std::uint8_t> rgb;
};

// Images above this many pixels are refused from their header, before any pixel is decoded
// (zeroseg.data.images.MAX_PIXELS).
constexpr std::int64_t kMaxPixels = 268'435'456;

// PNG (any colour type: palette / grey expanded, 16-bit reduced to its high byte, alpha dropped
// as Pillow's convert("RGB") does) or JPEG (libjpeg's default decoder, as Pillow's); by signature.
// Turned upright by its EXIF orientation (or XMP tiff:Orientation) as zeroseg's open_rgb does
// (PIL.ImageOps.exif_transpose). A missing file, a folder, another format, a file cut short, a
// JPEG with corrupt pixel data or more than kMaxPixels pixels is a one-line Error.
Image read_image(const std::filesystem::path& path);

// read_image's checks that need no pixel decoding: the file exists, is a PNG or JPEG whose header
// reads and has at most kMaxPixels pixels. Run on every input before the first output is written.
void check_image(const std::filesystem::path& path);

// The EXIF Orientation (TIFF block, with or without "Exif\0\0") as Pillow's getexif reads it: the
// first readable entry of IFD0; 1..8, 0 when present with another value, -1 when absent.
int exif_orientation(std::vector<std::uint8_t> exif);

// The first tiff:Orientation digit of an XMP packet (Pillow's fallback without EXIF Orientation);
// -1 when absent.
int xmp_orientation(std::string_view xmp);

// The image as PIL.ImageOps.exif_transpose turns it for an orientation 2..8 (others: unchanged).
Image apply_orientation(const Image& image, int orientation);

// Label map (H, W) as an 8-bit palette PNG with the PASCAL VOC palette (labels <= 254) or a
// 16-bit grey PNG (more labels); written to a temporary file and renamed into place.
void write_label_png(const std::filesystem::path& path, const std::int32_t* labels, int height, int width,
                     int num_labels);

// The network input size of an image (zeroseg.infer.base.SegmenterBase.input_size): shorter side
// `short_side`, each side round-half-even(side * scale / patch) * patch (at least one patch), both
// scaled down to `max_side` and floored to the patch if the longer side exceeds it.
std::pair<int, int> input_size(int height, int width, int short_side, int patch, int max_side);

// [0, 1] pixels (3, out_h, out_w) float32, planar: uint8 / 255, PyTorch's antialiased bicubic
// resize (a = -0.5, width pass first, a pass skipped when its size is unchanged), clamped to [0, 1].
std::vector<float> resize_unit(const Image& image, int out_h, int out_w);

}  // namespace zeroseg
