// zeroseg AOTInductor runner: a bundle from `zeroseg-export aoti` run from C++.
//
// The library reads images (libpng, libjpeg-turbo), preprocesses them exactly as zeroseg.Segmenter
// does (input size rule and PyTorch's antialiased bicubic resize, see resize.cpp), runs the bundle's
// segmenter.pt2 through torch::inductor::AOTIModelPackageLoader with the text embeddings of the
// bundle's vocab.bin, and writes the label map as a palette PNG.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "zeroseg/image.h"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace zeroseg {

// [0, 1] pixels (1, 3, out_h, out_w) float32: uint8 / 255, PyTorch's antialiased bicubic resize
// (a = -0.5, width pass first, a pass skipped when its size is unchanged), clamped to [0, 1].
at::Tensor preprocess(const Image& image, int out_h, int out_w);

struct Result {
  at::Tensor labels;  // (H, W) int32 at the image's own size; 0 = background
  std::vector<double> fractions;  // share of the pixels per label value
};

// A bundle folder: manifest checks (read_manifest: format, version, the manifest's own checksum and
// the sha256 of every file it lists), the package loader and the label space.
class Segmenter {
 public:
  explicit Segmenter(const std::filesystem::path& bundle_dir);
  ~Segmenter();
  Segmenter(const Segmenter&) = delete;
  Segmenter& operator=(const Segmenter&) = delete;

  std::pair<int, int> input_size(int height, int width) const;
  // Runs the package on preprocessed pixels, labelling at (out_h, out_w).
  at::Tensor run(const at::Tensor& pixels, int out_h, int out_w, double bg_thresh);
  Result segment(const Image& image, double bg_thresh);

  const std::vector<std::string>& class_names() const { return names_; }
  double default_bg_thresh() const { return bg_thresh_; }
  // The head inside the package ("paper" or "dense", the manifest's `head`); the label map is that head's.
  const std::string& head() const { return head_; }
  bool is_static() const { return static_h_ > 0; }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  at::Tensor text_;  // (C, D) float32
  std::int64_t label_offset_ = 1;
  std::vector<std::string> names_;
  int short_side_ = 0, patch_ = 0, max_side_ = 0, static_h_ = 0, static_w_ = 0;
  double bg_thresh_ = 0.5;
  std::string head_ = "paper";
};

}  // namespace zeroseg
