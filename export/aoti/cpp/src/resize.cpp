// Preprocessing exactly as zeroseg.Segmenter: the input size rule and PyTorch's antialiased bicubic.
//
// PyTorch's CPU kernel (aten/src/ATen/native/cpu/UpSampleKernel.cpp, `HelperInterpCubic` and
// `_compute_indices_weights_aa`, itself Pillow's resampling) for float32 input, reproduced with the
// same types and order of operations: scale = in / out (float); support = 2 * scale when
// downsampling, else 2; per output index the taps xmin..xmin+size-1 around center = scale * (i + 0.5),
// weights Keys' cubic (a = -0.5) of (j + xmin - center + 0.5) * invscale (evaluated in double,
// stored as float), divided by their float sum. Separable: the width pass first, then the height
// pass, a pass skipped when its size does not change; each output value is the taps' products
// accumulated in order, in float32. Then clamped to [0, 1]. Agreement with PyTorch: within 4e-7
// (a few ulp: PyTorch's vectorised kernels may contract to FMA), ~30-40 % of values bit-identical;
// tests/test_export_cpp.py compares the two (--dump-input) and the label maps.
#include <algorithm>
#include <cmath>

#include "zeroseg/image.h"

namespace zeroseg {
namespace {

constexpr double kA = -0.5;

float cubic(float x) {  // the kernel's _filter: scalar_t argument, double arithmetic
  if (x < 0.0) x = -x;
  if (x < 1.0) return static_cast<float>(((kA + 2.0) * x - (kA + 3.0)) * x * x + 1);
  if (x < 2.0) return static_cast<float>((((x - 5) * x + 8) * x - 4) * kA);
  return 0.0f;
}

struct Taps {
  std::vector<int> start, size;
  std::vector<float> weights;  // n_out x width, row-major
  int width = 0;
};

Taps make_taps(int n_in, int n_out) {
  Taps taps;
  const float scale = static_cast<float>(n_in) / static_cast<float>(n_out);
  const float support = static_cast<float>(scale >= 1.0f ? (4 * 0.5) * scale : 4 * 0.5);
  const float invscale = scale >= 1.0f ? static_cast<float>(1.0 / scale) : 1.0f;
  taps.width = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.start.resize(n_out);
  taps.size.resize(n_out);
  taps.weights.assign(static_cast<size_t>(n_out) * taps.width, 0.0f);
  for (int i = 0; i < n_out; ++i) {
    const float center = static_cast<float>(scale * (i + 0.5));
    const std::int64_t xmin = std::max<std::int64_t>(static_cast<std::int64_t>(center - support + 0.5), 0);
    const std::int64_t xmax =
        std::min<std::int64_t>(static_cast<std::int64_t>(center + support + 0.5), n_in) - xmin;
    taps.start[i] = static_cast<int>(xmin);
    taps.size[i] = static_cast<int>(xmax);
    float* w = taps.weights.data() + static_cast<size_t>(i) * taps.width;
    float total = 0.0f;
    for (std::int64_t j = 0; j < xmax; ++j) {
      w[j] = cubic(static_cast<float>((static_cast<float>(j + xmin) - center + 0.5) * invscale));
      total += w[j];
    }
    if (total != 0.0f)
      for (std::int64_t j = 0; j < xmax; ++j) w[j] /= total;
  }
  return taps;
}

// Width pass over `lines` rows of `n_in` values: each output the taps' products in order.
void resample_rows(const float* src, float* dst, const Taps& taps, int lines, int n_in, int n_out) {
  for (int line = 0; line < lines; ++line) {
    const float* row = src + static_cast<std::int64_t>(line) * n_in;
    for (int i = 0; i < n_out; ++i) {
      const float* w = taps.weights.data() + static_cast<size_t>(i) * taps.width;
      const float* s = row + taps.start[i];
      float acc = s[0] * w[0];
      for (int j = 1; j < taps.size[i]; ++j) acc += s[j] * w[j];
      dst[static_cast<std::int64_t>(line) * n_out + i] = acc;
    }
  }
}

// Height pass of one (n_in, cols) plane: whole rows at a time (same order per value, vectorisable).
void resample_cols(const float* src, float* dst, const Taps& taps, int n_out, int cols) {
  for (int i = 0; i < n_out; ++i) {
    const float* w = taps.weights.data() + static_cast<size_t>(i) * taps.width;
    const float* s = src + static_cast<std::int64_t>(taps.start[i]) * cols;
    float* out = dst + static_cast<std::int64_t>(i) * cols;
    for (int k = 0; k < cols; ++k) out[k] = s[k] * w[0];
    for (int j = 1; j < taps.size[i]; ++j) {
      const float* r = s + static_cast<std::int64_t>(j) * cols;
      for (int k = 0; k < cols; ++k) out[k] += r[k] * w[j];
    }
  }
}

}  // namespace

std::pair<int, int> input_size(int height, int width, int short_side, int patch, int max_side) {
  const double scale = static_cast<double>(short_side) / std::min(height, width);
  // Python's round(): half to even, which nearbyint gives in the default rounding mode
  int h = std::max(patch, static_cast<int>(std::nearbyint(height * scale / patch)) * patch);
  int w = std::max(patch, static_cast<int>(std::nearbyint(width * scale / patch)) * patch);
  if (std::max(h, w) > max_side) {
    const double cap = static_cast<double>(max_side) / std::max(h, w);
    h = std::max(patch, static_cast<int>(h * cap) / patch * patch);
    w = std::max(patch, static_cast<int>(w * cap) / patch * patch);
  }
  return {h, w};
}

std::vector<float> resize_unit(const Image& image, int out_h, int out_w) {
  const int h = image.height, w = image.width;
  std::vector<float> planes(static_cast<size_t>(3) * h * w);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        planes[(static_cast<size_t>(c) * h + y) * w + x] =
            static_cast<float>(image.rgb[(static_cast<size_t>(y) * w + x) * 3 + c]) / 255.0f;
  if (w != out_w) {  // width pass: taps along a row, rows = 3 * h
    std::vector<float> next(static_cast<size_t>(3) * h * out_w);
    resample_rows(planes.data(), next.data(), make_taps(w, out_w), 3 * h, w, out_w);
    planes.swap(next);
  }
  if (h != out_h) {  // height pass, per channel plane
    std::vector<float> next(static_cast<size_t>(3) * out_h * out_w);
    const Taps taps = make_taps(h, out_h);
    for (int c = 0; c < 3; ++c)
      resample_cols(planes.data() + static_cast<std::int64_t>(c) * h * out_w,
                    next.data() + static_cast<std::int64_t>(c) * out_h * out_w, taps, out_h, out_w);
    planes.swap(next);
  }
  if (w != out_w || h != out_h)
    for (float& v : planes) v = std::clamp(v, 0.0f, 1.0f);
  return planes;
}

}  // namespace zeroseg
