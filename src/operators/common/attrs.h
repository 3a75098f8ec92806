/*!
 * \file attrs.h
 * \brief Parsing of operator attributes.
 *
 * MXNet hands attributes of external operators over as strings made by Python's str():
 * `sizes=[0.5, 0.25]` arrives as "[0.5, 0.25]", `clip=True` as "True", `steps=(-1, -1)` as
 * "(-1, -1)". These helpers turn them into values and report malformed text through an
 * std::invalid_argument whose message names the attribute; the .cc glue turns that into an
 * MXNet error. Standard library only, so CUDA sources may include it.
 */
#ifndef SSDKIT_COMMON_ATTRS_H_
#define SSDKIT_COMMON_ATTRS_H_

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace ssdkit {

using AttrMap = std::unordered_map<std::string, std::string>;

inline std::string Strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

/*! \brief Parse one float; the whole text must be a number ("inf"/"nan" accepted). */
inline double ParseDouble(const std::string& name, const std::string& text) {
  std::string t = Strip(text);
  if (t.empty()) throw std::invalid_argument("attribute '" + name + "' is empty");
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || *end != '\0') {
    throw std::invalid_argument("attribute '" + name + "' = '" + text + "' is not a number");
  }
  return v;
}

inline int ParseInt(const std::string& name, const std::string& text) {
  double v = ParseDouble(name, text);
  if (v != std::floor(v) || std::fabs(v) > 2147483647.0) {
    throw std::invalid_argument("attribute '" + name + "' = '" + text + "' is not an integer");
  }
  return static_cast<int>(v);
}

inline bool ParseBool(const std::string& name, const std::string& text) {
  std::string t = Strip(text);
  for (auto& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (t == "1" || t == "true") return true;
  if (t == "0" || t == "false") return false;
  throw std::invalid_argument("attribute '" + name + "' = '" + text +
                              "' is not a boolean (use True/False or 1/0)");
}

/*! \brief Parse "(a, b, c)", "[a,b]", "a" or "a,b" into floats. "()" / "[]" give an empty list. */
inline std::vector<double> ParseDoubleList(const std::string& name, const std::string& text) {
  std::string t = Strip(text);
  if (!t.empty() && (t.front() == '(' || t.front() == '[')) {
    char close = t.front() == '(' ? ')' : ']';
    if (t.back() != close) {
      throw std::invalid_argument("attribute '" + name + "' = '" + text + "' has unbalanced brackets");
    }
    t = t.substr(1, t.size() - 2);
  }
  std::vector<double> out;
  if (Strip(t).empty()) return out;
  size_t start = 0;
  while (true) {
    size_t comma = t.find(',', start);
    std::string item = Strip(t.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (item.empty()) {
      // Python writes 1-tuples as "(0.5,)": a trailing empty item is allowed.
      if (comma == std::string::npos && !out.empty()) break;
      throw std::invalid_argument("attribute '" + name + "' = '" + text + "' has an empty item");
    }
    out.push_back(ParseDouble(name, item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

/*! \brief Look up an attribute, or return `fallback` when it is absent. */
inline std::string AttrOr(const AttrMap& attrs, const std::string& name, const std::string& fallback) {
  auto it = attrs.find(name);
  return it == attrs.end() ? fallback : it->second;
}

/*! \brief Refuse attribute names the operator does not know, so that typos are errors. */
inline void CheckKnownAttrs(const std::string& op, const AttrMap& attrs,
                            const std::vector<std::string>& known) {
  for (const auto& kv : attrs) {
    const std::string& key = kv.first;
    if (key.rfind("__", 0) == 0) continue;  // MXNet's own (__ext_shape__, __profiler_scope__, ...)
    bool ok = false;
    for (const auto& k : known) ok = ok || (k == key);
    if (!ok) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      if (kv.second.find("<NDArray") != std::string::npos) {
        throw std::invalid_argument("'" + key + "' looks like an input array: pass input arrays "
                                    "positionally, e.g. mx.nd." + op + "(x, ...)");
      }
      throw std::invalid_argument("unknown attribute '" + key + "'; known: " + names);
    }
  }
}

}  // namespace ssdkit

#endif  // SSDKIT_COMMON_ATTRS_H_
