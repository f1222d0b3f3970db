// The bundle manifest: Python's canonical JSON, sha256 (OpenSSL), and the checks of read_manifest.
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include <openssl/evp.h>

#include "zeroseg/image.h"
#include "zeroseg/manifest.h"

namespace zeroseg {
namespace {

using nlohmann::json;

constexpr const char* kSelfKey = "manifest_sha256";

// Python's float.__repr__: the shortest digits that round-trip (std::to_chars gives the same
// digits), written in exponent form when the decimal point lies outside (-4, 16].
std::string python_float(double value) {
  if (!std::isfinite(value)) throw Error("manifest.json holds a non-finite number; re-export the bundle");
  std::array<char, 64> buf{};
  const auto end = std::to_chars(buf.data(), buf.data() + buf.size(), std::abs(value),
                                 std::chars_format::scientific).ptr;
  const std::string sci(buf.data(), end);  // d[.ddd]e[+-]XX
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const int point = exponent + 1;  // digits = 0.DIGITS x 10^point
  const int n = static_cast<int>(digits.size());
  std::string out = std::signbit(value) ? "-" : "";
  if (point > 16 || point <= -4) {
    out.append(digits, 0, 1);
    if (n > 1) out.append(".").append(digits, 1);
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out.append(exp);
  } else if (point <= 0) {
    out.append("0.").append(static_cast<size_t>(-point), '0').append(digits);
  } else if (point >= n) {
    out.append(digits).append(static_cast<size_t>(point - n), '0').append(".0");
  } else {
    out.append(digits, 0, point).append(".").append(digits, point);
  }
  return out;
}

// Next code point of UTF-8 `s` at `i` (nlohmann has validated the text when parsing it).
char32_t next_code_point(const std::string& s, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s.at(k)); };
  const unsigned char b = byte(i);
  const int extra = b < 0x80 ? 0 : b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
  char32_t cp = extra == 0 ? b : extra == 1 ? (b & 0x1F) : extra == 2 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (byte(i + k) & 0x3F);
  i += 1 + extra;
  return cp;
}

// A JSON string as Python's ensure_ascii encoder writes it.
void python_string(const std::string& s, std::string& out) {
  out += '"';
  char esc[16];
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp >= 0x20 && cp <= 0x7E) {
          out += static_cast<char>(cp);
        } else if (cp < 0x10000) {
          std::snprintf(esc, sizeof(esc), "\\u%04x", static_cast<unsigned>(cp));
          out += esc;
        } else {
          const char32_t v = cp - 0x10000;
          std::snprintf(esc, sizeof(esc), "\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)));
          out += esc;
          std::snprintf(esc, sizeof(esc), "\\u%04x", static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
          out += esc;
        }
    }
  }
  out += '"';
}

void canonical(const json& v, std::string& out) {
  switch (v.type()) {
    case json::value_t::object: {  // std::map: UTF-8 byte order, which is code point order
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) out += ',';
        first = false;
        python_string(key, out);
        out += ':';
        canonical(item, out);
      }
      out += '}';
      break;
    }
    case json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ',';
        canonical(v[i], out);
      }
      out += ']';
      break;
    }
    case json::value_t::string: python_string(v.get_ref<const std::string&>(), out); break;
    case json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case json::value_t::number_integer: out += std::to_string(v.get<std::int64_t>()); break;
    case json::value_t::number_unsigned: out += std::to_string(v.get<std::uint64_t>()); break;
    case json::value_t::number_float: out += python_float(v.get<double>()); break;
    default: out += "null";
  }
}

// Every file the manifest lists, present inside `dir` and matching its sha256.
void verify_files(const std::filesystem::path& dir, const json& manifest) {
  if (!manifest.contains("files") || !manifest["files"].is_object())
    throw Error("manifest.json has no 'files' entry: re-export the bundle with this zeroseg");
  for (const auto& [name, want] : manifest["files"].items()) {
    const std::filesystem::path rel(name);
    if (name.empty() || rel.has_parent_path() || rel.is_absolute() || name == "." || name == "..")
      throw Error("manifest.json lists '" + name + "', not a file name inside the bundle; re-export it");
    const std::filesystem::path path = dir / rel;
    if (!std::filesystem::is_regular_file(path))
      throw Error(path.string() + " is missing from the bundle; re-export it");
    if (!want.is_string() || sha256_file(path) != want.get<std::string>())
      throw Error(path.string() + " does not match its sha256 in the manifest (edited or damaged); re-export");
  }
}

std::string to_hex(const unsigned char* digest, unsigned int len) {
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

}  // namespace

std::string canonical_json(const json& value) {
  std::string out;
  canonical(value, out);
  return out;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1)
    throw Error("OpenSSL cannot compute sha256");
  return to_hex(digest.data(), len);
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw Error("OpenSSL cannot compute sha256");
  }
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx, block.data(), static_cast<size_t>(in.gcount()));
  }
  const bool failed = in.bad();
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest.data(), &len);
  EVP_MD_CTX_free(ctx);
  if (failed) throw Error("cannot read " + path.string());
  return to_hex(digest.data(), len);
}

namespace {

// "AOTInductor" / "aoti" for zeroseg-aoti-bundle, "ExecuTorch" / "executorch" for zeroseg-executorch-bundle.
std::pair<std::string, std::string> bundle_kind(const std::string& format) {
  if (format == "zeroseg-executorch-bundle") return {"ExecuTorch", "executorch"};
  return {"AOTInductor", "aoti"};
}

}  // namespace

json read_manifest(const std::filesystem::path& dir, const std::string& format, int max_version) {
  const auto [kind, command] = bundle_kind(format);
  if (!std::filesystem::is_directory(dir))
    throw Error("bundle folder not found: " + dir.string() + " (pass the folder zeroseg-export " + command + " wrote)");
  const std::filesystem::path path = dir / "manifest.json";
  std::ifstream in(path);
  if (!in || !std::filesystem::is_regular_file(path))
    throw Error(dir.string() + " has no manifest.json: not a zeroseg " + kind + " bundle (re-export it)");
  json m;
  try {
    m = json::parse(in);
  } catch (const json::exception&) {
    throw Error(path.string() + " is not readable JSON; re-export the bundle");
  }
  if (!m.is_object() || !m.contains("format") || m["format"] != format)
    throw Error(path.string() + " is not a zeroseg " + kind + " bundle manifest (format != '" + format + "')");
  const json& version = m.contains("version") ? m["version"] : json();
  if (!version.is_number_integer() || version.get<std::int64_t>() < 1)
    throw Error(path.string() + " has an invalid format version; re-export the bundle");
  if (version.get<std::int64_t>() > max_version)
    throw Error(dir.string() + " is a newer bundle format (v" + version.dump() + ") than this runner (v" +
                std::to_string(max_version) + "); rebuild the runner from a newer zeroseg");
  json body = m;
  body.erase(kSelfKey);
  const json& stored = m.contains(kSelfKey) ? m[kSelfKey] : json();
  if (!stored.is_string() || stored.get<std::string>() != sha256_hex(canonical_json(body)))
    throw Error(path.string() + " was edited after export (checksum mismatch); re-export the bundle");
  verify_files(dir, m);
  return m;
}

const nlohmann::json& field(const nlohmann::json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key))
    throw Error(where + " has no '" + key + "' entry: re-export the bundle with this zeroseg");
  return obj.at(key);
}

std::filesystem::path listed(const std::filesystem::path& dir, const nlohmann::json& manifest, const std::string& name) {
  if (!field(manifest, "files", "manifest.json").contains(name))
    throw Error(name + " is not listed in the bundle's manifest; re-export the bundle");
  return dir / name;
}

Vocab read_vocab(const std::filesystem::path& dir, const nlohmann::json& manifest, const std::string& export_command) {
  static constexpr char kMagic[8] = {'Z', 'S', 'V', 'O', 'C', 'A', 'B', '1'};
  const nlohmann::json& vocab = manifest.contains("vocab") ? manifest["vocab"] : nlohmann::json();
  if (vocab.is_null() || !vocab.contains("label_space"))
    throw Error("the bundle has no vocab.bin (the C++ runner's class embeddings): re-export it with " +
                export_command + " --labels \"a,b,c\"");
  const nlohmann::json& space = vocab["label_space"];
  Vocab out;
  out.names = space.at("names").get<std::vector<std::string>>();
  out.label_offset = space.at("label_offset").get<std::int64_t>();
  const std::filesystem::path path = listed(dir, manifest, space.at("file").get<std::string>());
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  std::int32_t header[4];
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  if (!in || std::memcmp(magic, kMagic, 8) != 0 || header[0] <= 0 || header[1] <= 0 || header[2] != out.label_offset)
    throw Error(path.string() + " is not a zeroseg vocab.bin matching the manifest; re-export the bundle");
  out.rows = header[0];
  out.dim = header[1];
  out.text.resize(static_cast<size_t>(out.rows) * out.dim);
  in.read(reinterpret_cast<char*>(out.text.data()), static_cast<std::streamsize>(out.text.size() * sizeof(float)));
  if (!in) throw Error(path.string() + " is truncated; re-export the bundle");
  return out;
}

}  // namespace zeroseg
