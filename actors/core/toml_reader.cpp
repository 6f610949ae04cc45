#include "actors/core/toml_reader.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "actors/core/error.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/core/types.hpp"

namespace weir::toml_check {

uint32_t line_of(const toml::node& n) {
  auto l = n.source().begin.line;
  return l == 0 ? 1 : l;
}

void fail(uint32_t line, std::string key, std::string message) {
  throw config_failure{line, std::move(key), std::move(message)};
}

void fail(const toml::node& n, std::string key, std::string message) {
  fail(line_of(n), std::move(key), std::move(message));
}

std::string in_quotes(std::string_view s) {
  return "\"" + std::string{s} + "\"";
}

std::string join(std::initializer_list<const char*> xs) {
  std::string out;
  for (auto x : xs) {
    if (!out.empty())
      out += ", ";
    out += x;
  }
  return out;
}

bool valid_name(std::string_view s) {
  if (s.empty())
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string resolve(const std::string& dir, const std::string& p) {
  if (p == "-" || p.empty())
    return p;
  std::filesystem::path path{p};
  if (path.is_absolute() || dir.empty())
    return p;
  return (std::filesystem::path{dir} / path).lexically_normal().string();
}

std::string index_key(const std::string& base, std::string_view k, size_t i) {
  return base + "." + std::string{k} + "[" + std::to_string(i) + "]";
}

std::optional<host_port> parse_host_port(std::string_view s, uint16_t default_port) {
  host_port out;
  auto colon = s.rfind(':');
  // "[v6]" alone: its colons are inside the brackets.
  if (colon != std::string_view::npos && !s.empty() && s.back() == ']')
    colon = std::string_view::npos;
  out.host = std::string{s.substr(0, colon)};
  out.port = default_port;
  if (colon != std::string_view::npos) {
    auto port = s.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != port.npos)
      return std::nullopt;
    auto value = std::stoul(std::string{port});
    if (value == 0 || value > 65535)
      return std::nullopt;
    out.port = static_cast<uint16_t>(value);
  }
  bool bracketed = out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']';
  if (bracketed)
    out.host = out.host.substr(1, out.host.size() - 2);
  else if (out.host.find(':') != std::string::npos)
    return std::nullopt; // an IPv6 address needs its brackets: "[::1]:7700"
  if (out.port == 0 || out.host.empty() || out.host.find_first_of(" /[]") != std::string::npos)
    return std::nullopt;
  return out;
}

table_reader::table_reader(const toml::table& t, std::string path,
                           std::initializer_list<const char*> allowed)
  : t_(t)
  , path_(std::move(path)) {
  for (auto&& [k, v] : t) {
    const std::string_view name = k.str(); // a lambda cannot capture a binding in C++17
    bool ok = std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return name == a; });
    if (!ok)
      fail(v, key(k.str()), "unknown key; allowed: " + join(allowed));
  }
}

std::string table_reader::key(std::string_view k) const {
  return path_.empty() ? std::string{k} : path_ + "." + std::string{k};
}

const toml::node& table_reader::require(std::string_view k) const {
  auto n = get(k);
  if (n == nullptr)
    fail(line(), key(k), "missing required key");
  return *n;
}

std::string table_reader::get_string(std::string_view k, std::string def) const {
  return get_scalar<std::string>(k, std::move(def), "expected a string");
}

std::string table_reader::req_string(std::string_view k) const {
  require(k);
  return get_string(k, {});
}

bool table_reader::get_bool(std::string_view k, bool def) const {
  return get_scalar<bool>(k, def, "expected true or false");
}

int64_t table_reader::get_count(std::string_view k, int64_t def, int64_t max) const {
  auto n = get(k);
  if (n == nullptr)
    return def;
  if (!n->is_integer())
    fail(*n, key(k), "expected an integer");
  int64_t v = n->as_integer()->get();
  if (v < 0 || v > max)
    fail(*n, key(k), "must be between 0 and " + std::to_string(max));
  return v;
}

int64_t table_reader::get_duration(std::string_view k, int64_t def) const {
  auto n = get(k);
  if (n == nullptr)
    return def;
  int64_t us = 0;
  if (n->is_integer()) {
    int64_t ms = n->as_integer()->get();
    if (ms < 0 || ms > max_duration / us_per_ms)
      fail(*n, key(k), "duration out of range");
    return ms * us_per_ms;
  }
  if (!n->is_string() || !parse_duration(n->as_string()->get(), us))
    fail(*n, key(k),
         "expected a duration such as \"250us\", \"100ms\", \"5s\", \"2m\", \"1h\", \"1d\" or "
         "an integer of milliseconds");
  return us;
}

std::optional<double> table_reader::get_number(std::string_view k) const {
  auto n = get(k);
  if (n == nullptr)
    return std::nullopt;
  if (n->is_integer())
    return static_cast<double>(n->as_integer()->get());
  if (!n->is_floating_point())
    fail(*n, key(k), "expected a number");
  double v = n->as_floating_point()->get();
  if (std::isnan(v))
    fail(*n, key(k), "expected a number, not nan");
  return v;
}

std::vector<std::string> table_reader::get_strings(std::string_view k, bool single) const {
  std::vector<std::string> out;
  auto n = get(k);
  if (n == nullptr)
    return out;
  if (single && n->is_string()) {
    out.push_back(n->as_string()->get());
    if (out.back().empty())
      fail(*n, key(k), "must not be empty");
    return out;
  }
  if (!n->is_array())
    fail(*n, key(k),
         single ? "expected a string or an array of strings" : "expected an array of strings");
  const auto& a = *n->as_array();
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& e = *a.get(i);
    auto ek = key(k) + "[" + std::to_string(i) + "]";
    if (!e.is_string())
      fail(e, ek, "expected a string");
    if (e.as_string()->get().empty())
      fail(e, ek, "must not be empty");
    out.push_back(e.as_string()->get());
  }
  return out;
}

size_t table_reader::get_choice(std::string_view k, std::initializer_list<const char*> names,
                                size_t def) const {
  auto n = get(k);
  if (n == nullptr)
    return def;
  if (!n->is_string())
    fail(*n, key(k), "expected one of: " + join(names));
  const auto& s = n->as_string()->get();
  size_t i = 0;
  for (auto x : names) {
    if (s == x)
      return i;
    ++i;
  }
  fail(*n, key(k), "unknown value " + in_quotes(s) + "; expected one of: " + join(names));
}

const toml::table* table_reader::get_table(std::string_view k, bool required) const {
  auto n = required ? &require(k) : get(k);
  if (n == nullptr)
    return nullptr;
  if (!n->is_table())
    fail(*n, key(k), "expected a table");
  return n->as_table();
}

std::vector<const toml::table*> table_reader::get_tables(std::string_view k) const {
  std::vector<const toml::table*> out;
  auto n = get(k);
  if (n == nullptr)
    return out;
  if (!n->is_array())
    fail(*n, key(k), "expected an array of tables ([[" + key(k) + "]] or [{...}, ...])");
  const auto& a = *n->as_array();
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& e = *a.get(i);
    if (!e.is_table())
      fail(e, key(k) + "[" + std::to_string(i) + "]", "expected a table");
    out.push_back(e.as_table());
  }
  return out;
}

caf::error syntax_error(const toml::parse_error& e, const std::string& path) {
  auto line = e.source().begin.line == 0 ? 1 : e.source().begin.line;
  return make_error(errc::bad_config, path + ":" + std::to_string(line) +
                                        ": syntax: " + std::string{e.description()});
}

caf::error check_error(const config_failure& e, const std::string& path) {
  return make_error(errc::bad_config,
                    path + ":" + std::to_string(e.line) + ": " + e.key + ": " + e.message);
}

caf::expected<std::string> read_config_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::bad_input, "cannot read config file " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad())
    return make_error(errc::bad_input, "cannot read config file " + path);
  return buf.str();
}

} // namespace weir::toml_check
