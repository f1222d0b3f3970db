// The command-line half shared by the C++ runners (see cli.h).
#include "zeroseg/cli.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <set>

#include "zeroseg/image.h"

namespace zeroseg {

double number(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double v = std::stod(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error(flag + " needs a number, got '" + value + "'");
}

Options parse_options(int argc, char** argv, const std::string& usage, const std::vector<std::string>& extra_flags) {
  Options opt;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(arg + " needs a value; " + usage);
      return argv[++i];
    };
    if (arg == "--out") opt.out = value();
    else if (arg == "--bg-thresh") opt.bg_thresh = number(arg, value());
    else if (arg == "--threads") opt.threads = static_cast<int>(number(arg, value()));
    else if (arg == "--repeat") opt.repeat = static_cast<int>(number(arg, value()));
    else if (std::find(extra_flags.begin(), extra_flags.end(), arg) != extra_flags.end()) opt.extra[arg] = value();
    else if (arg == "-h" || arg == "--help") {
      std::cout << usage << "\n";
      std::exit(0);
    } else if (arg.rfind("--", 0) == 0) throw Error("unknown option " + arg + "; " + usage);
    else positional.push_back(arg);
  }
  if (positional.size() < 2) throw Error("give a bundle folder and at least one image; " + usage);
  opt.bundle = positional[0];
  opt.images.assign(positional.begin() + 1, positional.end());
  if (opt.bg_thresh != -1.0 && !(opt.bg_thresh >= 0.0 && opt.bg_thresh <= 1.0))
    throw Error("--bg-thresh must lie in [0, 1]");
  if (opt.threads < 0 || opt.repeat < 0) throw Error("--threads and --repeat must be >= 0");
  return opt;
}

void write_json(const std::filesystem::path& path, const nlohmann::json& data) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp);
    out << data.dump(2) << "\n";
    if (!out) throw Error("cannot write " + path.string());
  }
  std::filesystem::rename(tmp, path);
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / std::max<size_t>(1, v.size()); }

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

namespace {

// --out is a folder or can become one: neither it nor the nearest existing folder above is a file.
void check_out(const std::filesystem::path& out) {
  std::error_code ec;
  std::filesystem::path at = std::filesystem::absolute(out, ec);
  while (!std::filesystem::exists(at, ec) && at.has_parent_path() && at.parent_path() != at) at = at.parent_path();
  if (std::filesystem::exists(at, ec) && !std::filesystem::is_directory(at, ec)) {
    if (at == std::filesystem::absolute(out, ec))
      throw Error("--out " + out.string() + " is a file; pass a folder for the outputs");
    throw Error("--out " + out.string() + " lies under the file " + at.string() + "; pass a folder");
  }
}

}  // namespace

void check_inputs(const std::filesystem::path& out, const std::vector<std::filesystem::path>& images) {
  check_out(out);
  const auto key = [](const std::filesystem::path& path) {
    std::error_code ec;
    const std::filesystem::path real = std::filesystem::weakly_canonical(path, ec);
    return (ec ? std::filesystem::absolute(path, ec) : real).lexically_normal().string();
  };
  std::set<std::string> stems, inputs;
  for (const auto& image : images) inputs.insert(key(image));
  for (const auto& image : images) {
    const std::string stem = image.stem().string();
    if (!stems.insert(stem).second)
      throw Error("two input images share the file name '" + stem + "'; their outputs would collide");
    for (const std::string suffix : {"_labels.png", ".json"})
      if (inputs.count(key(out / (stem + suffix))))
        throw Error("an output would overwrite the input " + (out / (stem + suffix)).string() +
                    "; write to another --out folder");
  }
  for (const auto& image : images) check_image(image);
}

void write_outputs(const std::filesystem::path& out, const std::filesystem::path& image, const std::int32_t* labels,
                   int height, int width, const std::vector<std::string>& names, const std::vector<double>& fractions,
                   nlohmann::json info, double ms) {
  const std::string stem = image.stem().string();
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) throw Error("cannot create --out " + out.string() + ": " + ec.message());
  const auto labels_path = out / (stem + "_labels.png");
  write_label_png(labels_path, labels, height, width, static_cast<int>(names.size()));
  nlohmann::json shares = nlohmann::json::object();
  for (size_t c = 0; c < fractions.size() && c < names.size(); ++c)
    if (fractions[c] > 0) shares[names[c]] = fractions[c];
  info["image"] = image.string();
  info["size"] = {width, height};
  info["class_names"] = names;
  info["fractions"] = shares;
  info["labels_png"] = labels_path.filename().string();
  info["ms"] = ms;
  write_json(out / (stem + ".json"), info);
  std::printf("%s -> %s (%.1f ms)\n", image.string().c_str(), labels_path.string().c_str(), ms);
}

int run_main(const std::function<int()>& run) {
  try {
    return run();
  } catch (const Error& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
  } catch (const std::exception& err) {  // torch / ExecuTorch / filesystem: first line only
    std::string what = err.what();
    std::fprintf(stderr, "error: %s\n", what.substr(0, what.find('\n')).c_str());
  }
  return 2;
}

}  // namespace zeroseg
