// zeroseg C++ runners, the command-line half shared by zeroseg_aoti and zeroseg_et (no libtorch).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zeroseg {

// What both runners take: BUNDLE IMAGE... [--out DIR] [--bg-thresh T] [--threads N] [--repeat N], and
// the values of the runner's own one-value flags (`extra`).
struct Options {
  std::filesystem::path bundle, out = ".";
  std::vector<std::filesystem::path> images;
  double bg_thresh = -1.0;  // -1: the bundle's default
  int threads = 0, repeat = 0;
  std::map<std::string, std::string> extra;
};

// Parses argv; `extra_flags` are the runner's own flags (each takes one value). -h / --help prints
// `usage` and exits 0; anything else unknown or malformed is a one-line Error ending in `usage`.
Options parse_options(int argc, char** argv, const std::string& usage, const std::vector<std::string>& extra_flags);

// The value of a numeric flag, or a one-line Error naming the flag.
double number(const std::string& flag, const std::string& value);

// JSON written to a temporary file beside `path` and renamed into place.
void write_json(const std::filesystem::path& path, const nlohmann::json& data);

double ms_since(std::chrono::steady_clock::time_point start);
double mean(const std::vector<double>& v);
double median(std::vector<double> v);

// Every refusal that needs no model, before a bundle loads or anything is written: --out is a folder
// or can become one, no two images share a stem, no output overwrites an input, each image's file and
// header read (check_image).
void check_inputs(const std::filesystem::path& out, const std::vector<std::filesystem::path>& images);

// One image's outputs in `out` (created on first use): <stem>_labels.png (the palette PNG) and
// <stem>.json, `info` plus image, size, class_names, the fractions of the pixels each class got,
// bg_thresh, labels_png and ms; then the "IMAGE -> PNG (ms)" line on stdout.
void write_outputs(const std::filesystem::path& out, const std::filesystem::path& image, const std::int32_t* labels,
                   int height, int width, const std::vector<std::string>& names, const std::vector<double>& fractions,
                   nlohmann::json info, double ms);

// A runner's main(): `run()`'s exit status, or for any exception one "error: ..." line (its first
// line) on stderr and exit status 2.
int run_main(const std::function<int()>& run);

}  // namespace zeroseg
