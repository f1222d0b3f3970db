// The ExecuTorch bundle: manifest fields (checked by read_manifest), vocab.bin, the program, one image.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <nlohmann/json.hpp>

#include "zeroseg/et_runner.h"
#include "zeroseg/manifest.h"

// The wheel ships libexecutorch_threadpool.so without its header; these two entry points are its
// exported API (extension/threadpool/threadpool.h in the ExecuTorch sources).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace zeroseg {
namespace {

constexpr const char* kFormat = "zeroseg-executorch-bundle";
constexpr int kFormatVersion = 1;
using nlohmann::json;
namespace et = executorch;

std::string code(et::runtime::Error err) { return "ExecuTorch error " + std::to_string(static_cast<int>(err)); }

}  // namespace

// One loaded method's planned memory: calloc'd, so its pages are mapped when first touched.
struct Planned {
  std::vector<void*> buffers;
  std::vector<et::runtime::Span<uint8_t>> spans;
  std::unique_ptr<et::runtime::HierarchicalAllocator> allocator;
  Planned() = default;
  Planned(const Planned&) = delete;
  Planned& operator=(const Planned&) = delete;
  ~Planned() {
    for (void* p : buffers) std::free(p);
  }
};

struct EtSegmenter::State {
  std::string path;
  std::unique_ptr<et::extension::Module> module;
  std::map<std::string, std::unique_ptr<Planned>> planned;  // by method, loaded on first use
  ~State() { module.reset(); }  // the methods go before their memory

  const std::string& method(int h, int w) {
    static thread_local std::string name;
    name = "forward_" + std::to_string(h) + "x" + std::to_string(w);
    if (planned.count(name)) return name;
    auto meta = module->method_meta(name);
    if (!meta.ok()) throw Error("cannot load method " + name + " of " + path + " (" + code(meta.error()) + "); re-export it");
    auto mem = std::make_unique<Planned>();
    for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
      const auto size = static_cast<size_t>(meta->memory_planned_buffer_size(i).get());
      void* p = std::calloc(std::max<size_t>(size, 1), 1);
      if (p == nullptr) throw Error("cannot reserve " + std::to_string(size) + " bytes of planned memory");
      mem->buffers.push_back(p);
      mem->spans.emplace_back(static_cast<uint8_t*>(p), size);
    }
    mem->allocator = std::make_unique<et::runtime::HierarchicalAllocator>(
        et::runtime::Span<et::runtime::Span<uint8_t>>(mem->spans.data(), mem->spans.size()));
    const auto err = module->load_method(name, mem->allocator.get());
    if (err != et::runtime::Error::Ok)
      throw Error("cannot load method " + name + " of " + path + " (" + code(err) + "); re-export it");
    planned[name] = std::move(mem);
    return name;
  }
};

void set_threads(int threads) {
  if (threads > 0) et::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);
}

int thread_count() { return static_cast<int>(et::extension::threadpool::get_threadpool()->get_thread_count()); }

EtSegmenter::EtSegmenter(const std::filesystem::path& dir, const std::string& precision) : state_(new State) {
  const json m = read_manifest(dir, kFormat, kFormatVersion);
  try {
    const json& pre = field(m, "preprocess", "manifest.json");
    short_side_ = field(pre, "short_side", "preprocess").get<int>();
    patch_ = field(pre, "patch_multiple", "preprocess").get<int>();
    max_side_ = field(pre, "max_side", "preprocess").get<int>();
    const json& exporter = field(m, "exporter", "manifest.json");
    for (const json& s : exporter.at("static_inputs"))
      static_sizes_.emplace_back(s.at("hw")[0].get<int>(), s.at("hw")[1].get<int>());
    max_output_side_ = exporter.at("max_output_side").get<int>();
    max_classes_ = exporter.at("max_classes").get<int>();
    const json& model = field(m, "model", "manifest.json");
    bg_thresh_ = model.contains("inference") ? model["inference"].value("bg_thresh", 0.5) : 0.5;
    head_ = m.value("head", std::string("paper"));
    Vocab vocab = read_vocab(dir, m, "zeroseg-export executorch");
    names_ = std::move(vocab.names);
    label_offset_ = vocab.label_offset;
    rows_ = vocab.rows;
    dim_ = vocab.dim;
    text_ = std::move(vocab.text);
    if (rows_ > max_classes_)
      throw Error("vocab.bin holds " + std::to_string(rows_) + " classes, above the program's --max-classes " +
                  std::to_string(max_classes_) + "; re-export the bundle");
    const json& graph = field(field(m, "graphs", "manifest.json"), "segmenter", "graphs");
    if (precision == "int8" && !graph.contains("int8_file"))
      throw Error("the bundle has no int8 program: re-export it with zeroseg-export executorch --int8");
    if (precision != "fp32" && precision != "int8") throw Error("--precision is fp32 or int8, not " + precision);
    program_ = graph.at(precision == "int8" ? "int8_file" : "file").get<std::string>();
  } catch (const json::exception& exc) {
    throw Error((dir / "manifest.json").string() + " is incomplete (" + exc.what() + "); re-export the bundle");
  }
  const std::filesystem::path ppath = listed(dir, m, program_);
  state_->path = ppath.string();
  state_->module = std::make_unique<et::extension::Module>(ppath.string(), et::extension::Module::LoadMode::Mmap);
  const auto names = state_->module->method_names();
  if (!names.ok()) throw Error("cannot load the ExecuTorch program " + ppath.string() + " (" + code(names.error()) + "); re-export it");
}

EtSegmenter::~EtSegmenter() = default;

std::pair<int, int> EtSegmenter::input_size(int height, int width) const {
  const auto size = zeroseg::input_size(height, width, short_side_, patch_, max_side_);
  if (std::find(static_sizes_.begin(), static_sizes_.end(), size) == static_sizes_.end()) {
    std::ostringstream msg;
    msg << program_ << " is static at";
    for (const auto& [h, w] : static_sizes_) msg << " " << h << "x" << w;
    msg << " (batch 1) but this image needs a " << size.first << "x" << size.second
        << " input; re-export with --aspects including its aspect (or --short-side)";
    throw Error(msg.str());
  }
  return size;
}

std::vector<std::int32_t> EtSegmenter::run(std::vector<float>& pixels, int in_h, int in_w, int out_h, int out_w,
                                           double bg_thresh) {
  if (std::max(out_h, out_w) > max_output_side_)
    throw Error(program_ + " labels at most " + std::to_string(max_output_side_) + " px per side, this image is " +
                std::to_string(out_h) + "x" + std::to_string(out_w) + ": re-export with --max-output-side " +
                std::to_string(std::max(out_h, out_w)));
  float thresh = static_cast<float>(bg_thresh);
  std::int64_t offset = label_offset_;
  std::vector<std::uint8_t> rows(out_h), cols(out_w);
  if (pixels.size() != static_cast<size_t>(3) * in_h * in_w) throw Error("pixels are not (3, H, W) at the input size");
  auto px = et::extension::from_blob(pixels.data(), {1, 3, in_h, in_w});
  auto text = et::extension::from_blob(text_.data(), {rows_, dim_});
  auto bg = et::extension::from_blob(&thresh, {}, et::aten::ScalarType::Float);
  auto off = et::extension::from_blob(&offset, {}, et::aten::ScalarType::Long);
  auto r = et::extension::from_blob(rows.data(), {out_h}, et::aten::ScalarType::Byte);
  auto c = et::extension::from_blob(cols.data(), {out_w}, et::aten::ScalarType::Byte);
  const std::string& method = state_->method(in_h, in_w);
  const auto out = state_->module->execute(method, {*px, *text, *bg, *off, *r, *c});
  if (!out.ok()) throw Error("running " + program_ + " failed (" + code(out.error()) + ")");
  const auto& labels = out.get().at(0).toTensor();
  const auto* p = labels.const_data_ptr<std::int32_t>();
  return std::vector<std::int32_t>(p, p + labels.numel());
}

EtResult EtSegmenter::segment(const Image& image, double bg_thresh) {
  const auto [h, w] = input_size(image.height, image.width);
  std::vector<float> pixels = resize_unit(image, h, w);
  EtResult result;
  result.labels = run(pixels, h, w, image.height, image.width, bg_thresh);
  std::vector<std::int64_t> counts(names_.size(), 0);
  for (const std::int32_t v : result.labels)
    if (v >= 0 && static_cast<size_t>(v) < counts.size()) ++counts[v];
  result.fractions.resize(counts.size());
  const double n = static_cast<double>(std::max<size_t>(1, result.labels.size()));
  for (size_t i = 0; i < counts.size(); ++i) result.fractions[i] = counts[i] / n;
  return result;
}

}  // namespace zeroseg
