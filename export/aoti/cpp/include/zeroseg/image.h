// zeroseg C++ runner, the torch-free half: image files, the input size rule, the resize.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
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

// PNG (any colour type: palette / grey expanded, 16-bit reduced to its high byte, alpha dropped
// as Pillow's convert("RGB") does) or JPEG (libjpeg's default decoder, as Pillow's); by signature.
Image read_image(const std::filesystem::path& path);

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

// sha256 of a file as lower-case hex (OpenSSL's EVP).
std::string sha256_file(const std::filesystem::path& path);

}  // namespace zeroseg
