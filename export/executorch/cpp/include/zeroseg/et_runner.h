// zeroseg ExecuTorch runner: a bundle from `zeroseg-export executorch` run from C++ without libtorch.
//
// The image, the input size rule, the resize, the manifest checks and the palette PNG are the
// torch-free sources of the AOTInductor runner (export/aoti/cpp); the program runs through
// ExecuTorch's Module with the XNNPACK delegate, its planned memory in zero pages mapped on demand
// (calloc), so the resident memory follows the image, not the --max-output-side bound.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "zeroseg/image.h"

namespace zeroseg {

struct EtResult {
  std::vector<std::int32_t> labels;  // (H, W) at the image's own size; 0 = background
  std::vector<double> fractions;     // share of the pixels per label value
};

class EtSegmenter {
 public:
  // precision "fp32" (segmenter.pte) or "int8" (segmenter.int8.pte, exported with --int8).
  EtSegmenter(const std::filesystem::path& bundle_dir, const std::string& precision);
  ~EtSegmenter();
  EtSegmenter(const EtSegmenter&) = delete;
  EtSegmenter& operator=(const EtSegmenter&) = delete;

  // The network input (H, W) of an image (the size rule); one of the program's static sizes, or an Error.
  std::pair<int, int> input_size(int height, int width) const;
  // Labels (out_h * out_w) of preprocessed (3, in_h, in_w) pixels (a static input size).
  std::vector<std::int32_t> run(std::vector<float>& pixels, int in_h, int in_w, int out_h, int out_w,
                                double bg_thresh);
  EtResult segment(const Image& image, double bg_thresh);

  const std::vector<std::string>& class_names() const { return names_; }
  double default_bg_thresh() const { return bg_thresh_; }
  const std::string& head() const { return head_; }
  const std::string& program() const { return program_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::vector<float> text_;  // (rows_, dim_) float32
  int rows_ = 0, dim_ = 0;
  std::int64_t label_offset_ = 1;
  std::vector<std::string> names_;
  std::vector<std::pair<int, int>> static_sizes_;  // one `.pte` method each: forward_<H>x<W>
  int short_side_ = 0, patch_ = 0, max_side_ = 0, max_output_side_ = 0, max_classes_ = 0;
  double bg_thresh_ = 0.5;
  std::string head_ = "paper", program_;
};

// ExecuTorch's threadpool size (XNNPACK's workers); 0 leaves the default (one per core).
void set_threads(int threads);
int thread_count();

}  // namespace zeroseg
