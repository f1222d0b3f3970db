// The bundle: manifest fields (checked by read_manifest), vocab.bin, the AOTInductor package loader,
// one image end to end.
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include "zeroseg/aoti_runner.h"
#include "zeroseg/manifest.h"

namespace zeroseg {
namespace {

constexpr const char* kFormat = "zeroseg-aoti-bundle";
constexpr int kFormatVersion = 1;

using nlohmann::json;

}  // namespace

Segmenter::Segmenter(const std::filesystem::path& dir) {
  const std::filesystem::path mpath = dir / "manifest.json";
  const json m = read_manifest(dir, kFormat, kFormatVersion);
  try {
    const json& pre = field(m, "preprocess", "manifest.json");
    short_side_ = field(pre, "short_side", "preprocess").get<int>();
    patch_ = field(pre, "patch_multiple", "preprocess").get<int>();
    max_side_ = field(pre, "max_side", "preprocess").get<int>();
    const json& exporter = field(m, "exporter", "manifest.json");
    if (exporter.contains("static_input") && !exporter["static_input"].is_null()) {
      static_h_ = exporter["static_input"]["hw"][0].get<int>();
      static_w_ = exporter["static_input"]["hw"][1].get<int>();
    }
    const json& model = field(m, "model", "manifest.json");
    bg_thresh_ = model.contains("inference") ? model["inference"].value("bg_thresh", 0.5) : 0.5;
    head_ = m.value("head", std::string("paper"));  // the head inside the package (before --head: the paper's)
    Vocab vocab = read_vocab(dir, m, "zeroseg-export aoti");
    names_ = std::move(vocab.names);
    label_offset_ = vocab.label_offset;
    text_ = at::empty({vocab.rows, vocab.dim}, at::kFloat);
    std::copy(vocab.text.begin(), vocab.text.end(), text_.data_ptr<float>());
    const std::string package = field(field(field(m, "graphs", "manifest.json"), "segmenter", "graphs"),
                                      "file", "graphs.segmenter").get<std::string>();
    const std::filesystem::path ppath = listed(dir, m, package);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(ppath.string(), "model", false, 1);
    } catch (const std::exception& exc) {
      std::string first = exc.what();
      first = first.substr(0, std::min<size_t>(first.find('\n'), 200));
      throw Error("cannot load the AOTInductor package " + ppath.string() + ": " + first + "; re-export it");
    }
  } catch (const json::exception& exc) {
    throw Error(mpath.string() + " is incomplete (" + exc.what() + "); re-export the bundle");
  }
}

Segmenter::~Segmenter() = default;

at::Tensor preprocess(const Image& image, int out_h, int out_w) {
  const std::vector<float> planes = resize_unit(image, out_h, out_w);
  at::Tensor out = at::empty({1, 3, out_h, out_w}, at::kFloat);
  std::copy(planes.begin(), planes.end(), out.data_ptr<float>());
  return out;
}

std::pair<int, int> Segmenter::input_size(int height, int width) const {
  return zeroseg::input_size(height, width, short_side_, patch_, max_side_);
}

at::Tensor Segmenter::run(const at::Tensor& pixels, int out_h, int out_w, double bg_thresh) {
  if (static_h_ > 0 && (pixels.size(2) != static_h_ || pixels.size(3) != static_w_)) {
    std::ostringstream msg;
    msg << "segmenter.pt2 is static at " << static_h_ << "x" << static_w_ << " (batch 1) but this image needs a "
        << pixels.size(2) << "x" << pixels.size(3) << " input; re-export with --dynamic (or pass images of "
        << static_w_ << ":" << static_h_ << " aspect)";
    throw Error(msg.str());
  }
  std::vector<at::Tensor> inputs = {
      pixels.contiguous(),
      text_,
      at::scalar_tensor(bg_thresh, at::kFloat),
      at::scalar_tensor(label_offset_, at::kLong),
      at::tensor(std::vector<std::int64_t>{out_h, out_w}, at::kLong),
  };
  return loader_->run(inputs).at(0);  // labels (1, out_h, out_w) int32
}

Result Segmenter::segment(const Image& image, double bg_thresh) {
  const auto [h, w] = input_size(image.height, image.width);
  Result result;
  result.labels = run(preprocess(image, h, w), image.height, image.width, bg_thresh)[0].contiguous();
  result.fractions.assign(names_.size(), 0.0);
  const std::int32_t* p = result.labels.data_ptr<std::int32_t>();
  const std::int64_t n = result.labels.numel();
  std::vector<std::int64_t> counts(names_.size(), 0);
  for (std::int64_t i = 0; i < n; ++i)
    if (p[i] >= 0 && static_cast<size_t>(p[i]) < counts.size()) ++counts[p[i]];
  for (size_t i = 0; i < counts.size(); ++i) result.fractions[i] = static_cast<double>(counts[i]) / std::max<std::int64_t>(1, n);
  return result;
}

}  // namespace zeroseg
