// zeroseg_et: segment images with a bundle from `zeroseg-export executorch`, from C++, no libtorch.
//
//   zeroseg_et BUNDLE IMAGE... [--out DIR] [--bg-thresh T] [--threads N] [--repeat N] [--precision fp32|int8]
//
// Writes DIR/<stem>_labels.png (palette PNG, 0 = background) and DIR/<stem>.json (the head, the
// program and the fraction of the pixels each class got) per image. --repeat N times preprocessing +
// program N times after one warm-up run and prints the mean and median. Errors are one line on
// stderr ("error: ...") with exit status 2.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "zeroseg/cli.h"
#include "zeroseg/et_runner.h"

namespace {

constexpr const char* kUsage =
    "usage: zeroseg_et BUNDLE IMAGE... [--out DIR] [--bg-thresh T] [--threads N] [--repeat N] "
    "[--precision fp32|int8]";

void time_runs(zeroseg::EtSegmenter& seg, const zeroseg::Image& image, double thresh, int repeat) {
  seg.segment(image, thresh);  // warm-up
  std::vector<double> total;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    seg.segment(image, thresh);
    total.push_back(zeroseg::ms_since(t0));
  }
  const auto [h, w] = seg.input_size(image.height, image.width);
  std::printf("latency %dx%d -> input %dx%d, %d runs, %d threads: mean %.2f ms, p50 %.2f ms\n", image.width,
              image.height, w, h, repeat, zeroseg::thread_count(), zeroseg::mean(total), zeroseg::median(total));
}

int run(const zeroseg::Options& opt) {
  const std::string precision = opt.extra.count("--precision") ? opt.extra.at("--precision") : "fp32";
  if (precision != "fp32" && precision != "int8")
    throw zeroseg::Error("--precision is fp32 or int8, not '" + precision + "'");
  zeroseg::check_inputs(opt.out, opt.images);
  zeroseg::set_threads(opt.threads);
  zeroseg::EtSegmenter seg(opt.bundle, precision);
  const double thresh = opt.bg_thresh >= 0 ? opt.bg_thresh : seg.default_bg_thresh();
  for (size_t i = 0; i < opt.images.size(); ++i) {
    const zeroseg::Image image = zeroseg::read_image(opt.images[i]);
    const auto t0 = std::chrono::steady_clock::now();
    const zeroseg::EtResult result = seg.segment(image, thresh);
    const double ms = zeroseg::ms_since(t0);
    const auto [h, w] = seg.input_size(image.height, image.width);
    zeroseg::write_outputs(opt.out, opt.images[i], result.labels.data(), image.height, image.width,
                           seg.class_names(), result.fractions,
                           {{"input_hw", {h, w}}, {"head", seg.head()}, {"program", seg.program()},
                            {"bg_thresh", thresh}}, ms);
    if (i == 0 && opt.repeat > 0) time_runs(seg, image, thresh, opt.repeat);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return zeroseg::run_main([&] { return run(zeroseg::parse_options(argc, argv, kUsage, {"--precision"})); });
}
