// zeroseg C++ runner: the bundle manifest, checked as Python's zeroseg.export.core.manifest does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>
#include <string_view>

#include <nlohmann/json.hpp>

namespace zeroseg {

// Python's json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True), byte for
// byte: keys in code point order, floats as Python's repr (shortest round trip; exponent form below
// 1e-4 and from 1e16 on, "1.0" for integral values), non-ASCII and control characters as lower-case
// \uXXXX escapes (surrogate pairs above U+FFFF).
std::string canonical_json(const nlohmann::json& value);

// sha256 as lower-case hex (OpenSSL's EVP), of bytes or of a file.
std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::filesystem::path& path);

// `dir`/manifest.json after every check Python's read_manifest makes (readable JSON of `format`,
// a version in [1, max_version], `manifest_sha256` equal to the sha256 of the canonical JSON
// without that key) and the sha256 of every file its `files` lists (plain names inside `dir`).
// Every failure is a one-line zeroseg::Error naming the fix.
nlohmann::json read_manifest(const std::filesystem::path& dir, const std::string& format, int max_version);

// obj[key], or a one-line Error naming `where` and the fix (re-export with this zeroseg).
const nlohmann::json& field(const nlohmann::json& obj, const char* key, const std::string& where);

// dir/name for a file the manifest lists (read_manifest has checked every listed file's sha256).
std::filesystem::path listed(const std::filesystem::path& dir, const nlohmann::json& manifest, const std::string& name);

// The label space a bundle's vocab.bin holds (its manifest's vocab.label_space): class names, the
// label offset and the (rows, dim) float32 text embeddings of its prompts.
struct Vocab {
  std::vector<std::string> names;
  std::int64_t label_offset = 1;
  int rows = 0, dim = 0;
  std::vector<float> text;
};

// Reads and checks vocab.bin; a bundle without one is an Error naming `export_command` --labels.
Vocab read_vocab(const std::filesystem::path& dir, const nlohmann::json& manifest, const std::string& export_command);

}  // namespace zeroseg
