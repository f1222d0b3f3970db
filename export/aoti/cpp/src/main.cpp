// zeroseg_aoti: segment images with a bundle from `zeroseg-export aoti`, from C++.
//
//   zeroseg_aoti BUNDLE IMAGE... [--out DIR] [--bg-thresh T] [--threads N] [--repeat N]
//                [--dump-input FILE]
//
// Writes DIR/<stem>_labels.png (palette PNG, 0 = background) and DIR/<stem>.json (the package's head
// and the fraction of the image's pixels each class got: the label map's, so right for either head)
// per image. --repeat N times preprocessing + package N times after one warm-up run and prints the
// mean and median; --dump-input writes the first image's network input as raw float32 (3, H, W).
// Errors are one line on stderr ("error: ...") with exit status 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "zeroseg/aoti_runner.h"
#include "zeroseg/cli.h"

namespace {

constexpr const char* kUsage =
    "usage: zeroseg_aoti BUNDLE IMAGE... [--out DIR] [--bg-thresh T] [--threads N] [--repeat N] "
    "[--dump-input FILE]";

using zeroseg::ms_since;

void time_runs(zeroseg::Segmenter& seg, const zeroseg::Image& image, double thresh, int repeat) {
  const auto [h, w] = seg.input_size(image.height, image.width);
  seg.run(zeroseg::preprocess(image, h, w), image.height, image.width, thresh);  // warm-up
  std::vector<double> total, pre;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor pixels = zeroseg::preprocess(image, h, w);
    pre.push_back(ms_since(t0));
    seg.run(pixels, image.height, image.width, thresh);
    total.push_back(ms_since(t0));
  }
  using zeroseg::mean;
  const auto p50 = zeroseg::median;
  std::printf("latency %dx%d -> input %dx%d, %d runs, %d threads: mean %.2f ms, p50 %.2f ms "
              "(preprocess mean %.2f ms)\n",
              image.width, image.height, w, h, repeat, at::get_num_threads(), mean(total), p50(total), mean(pre));
}

int run(const zeroseg::Options& opt) {
  const std::filesystem::path dump_input = opt.extra.count("--dump-input") ? opt.extra.at("--dump-input") : "";
  zeroseg::check_inputs(opt.out, opt.images);
  if (opt.threads > 0) at::set_num_threads(opt.threads);
  zeroseg::Segmenter seg(opt.bundle);
  const double thresh = opt.bg_thresh >= 0 ? opt.bg_thresh : seg.default_bg_thresh();
  for (size_t i = 0; i < opt.images.size(); ++i) {
    const zeroseg::Image image = zeroseg::read_image(opt.images[i]);
    if (i == 0 && !dump_input.empty()) {
      const auto [h, w] = seg.input_size(image.height, image.width);
      at::Tensor pixels = zeroseg::preprocess(image, h, w);
      std::ofstream dump(dump_input, std::ios::binary);
      dump.write(reinterpret_cast<const char*>(pixels.data_ptr<float>()), static_cast<std::streamsize>(pixels.nbytes()));
      if (!dump) throw zeroseg::Error("cannot write --dump-input " + dump_input.string());
    }
    const auto t0 = std::chrono::steady_clock::now();
    const zeroseg::Result result = seg.segment(image, thresh);
    const double ms = ms_since(t0);
    const auto [h, w] = seg.input_size(image.height, image.width);
    zeroseg::write_outputs(opt.out, opt.images[i], result.labels.data_ptr<std::int32_t>(), image.height,
                           image.width, seg.class_names(), result.fractions,
                           {{"input_hw", {h, w}}, {"head", seg.head()}, {"bg_thresh", thresh}}, ms);
    if (i == 0 && opt.repeat > 0) time_runs(seg, image, thresh, opt.repeat);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return zeroseg::run_main([&] { return run(zeroseg::parse_options(argc, argv, kUsage, {"--dump-input"})); });
}
