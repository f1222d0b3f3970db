// zeroseg C++ runner: the bundle manifest, checked as Python's zeroseg.export.core.manifest does.
#pragma once

#include <filesystem>
#include <string>
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

}  // namespace zeroseg
