// zeroseg C++ runners, the command-line half shared by zeroseg_aoti and zeroseg_et (no libtorch).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zeroseg {

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

}  // namespace zeroseg
