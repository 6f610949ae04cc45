#pragma once

/// Checked reading of TOML config files, shared by the pipeline config (actors/core/config.cpp)
/// and the cluster config (cluster/config.cpp), so that both report every mistake the same way:
/// `FILE:LINE: KEY: message`, unknown keys with the list of allowed ones.
///
/// The checks throw `config_failure` (through `fail`) and `parse_checked` is the one place that
/// turns it into a caf::error: config checks are deeply nested, and unwinding keeps each check a
/// single line. Nothing outside a `parse_checked` call may let a config_failure escape.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <toml++/toml.h>

namespace weir::toml_check {

/// A config error in flight (see the header comment).
struct config_failure {
  uint32_t line;
  std::string key;
  std::string message;
};

/// The line a node starts on (1 when toml++ does not know).
uint32_t line_of(const toml::node& n);

[[noreturn]] void fail(uint32_t line, std::string key, std::string message);
[[noreturn]] void fail(const toml::node& n, std::string key, std::string message);

std::string in_quotes(std::string_view s);
std::string join(std::initializer_list<const char*> xs);

/// Names that appear in store keys, file names and output: [A-Za-z0-9_.-]+.
bool valid_name(std::string_view s);

/// `p` resolved against `dir` (the config file's directory) unless it is absolute, "-" or empty.
std::string resolve(const std::string& dir, const std::string& p);

/// "BASE.K[I]", the key of element I of array K of table BASE.
std::string index_key(const std::string& base, std::string_view k, size_t i);

/// A network address "HOST:PORT" as written in a config.
struct host_port {
  std::string host;
  uint16_t port = 0;
};

/// Splits "HOST:PORT" (an IPv6 host in brackets: "[::1]:7700", returned without them). Without
/// a port the address is "HOST" and gets `default_port`, or is refused when that is 0. The host
/// must be non-empty and hold no spaces or slashes; the port is 1..65535.
std::optional<host_port> parse_host_port(std::string_view s, uint16_t default_port);

/// Typed, checked access to one TOML table whose keys were checked against an allowed list.
/// `path` is the table's dotted key, used in messages ("" for the root).
class table_reader {
public:
  table_reader(const toml::table& t, std::string path, std::initializer_list<const char*> allowed);

  const toml::table& table() const { return t_; }
  const std::string& path() const { return path_; }
  uint32_t line() const { return line_of(t_); }

  std::string key(std::string_view k) const;

  const toml::node* get(std::string_view k) const { return t_.get(k); }
  bool has(std::string_view k) const { return t_.contains(k); }

  const toml::node& require(std::string_view k) const;

  std::string get_string(std::string_view k, std::string def) const;
  std::string req_string(std::string_view k) const;
  bool get_bool(std::string_view k, bool def) const;

  /// A non-negative integer no larger than `max`.
  int64_t get_count(std::string_view k, int64_t def, int64_t max = INT64_MAX) const;

  /// A duration in microseconds: "250us", "100ms", "5s", "2m", "1h", "1d", or an integer of
  /// milliseconds.
  int64_t get_duration(std::string_view k, int64_t def) const;

  std::optional<double> get_number(std::string_view k) const;

  /// An array of non-empty strings, or (with `single`) one string.
  std::vector<std::string> get_strings(std::string_view k, bool single = false) const;

  /// A string that must be one of `names`; returns its index.
  size_t get_choice(std::string_view k, std::initializer_list<const char*> names, size_t def) const;

  /// A sub-table (optional when `required` is false: then nullptr when missing).
  const toml::table* get_table(std::string_view k, bool required) const;

  /// An array of tables ([[k]] or an array of inline tables).
  std::vector<const toml::table*> get_tables(std::string_view k) const;

private:
  /// The value of key `k` of type T (`def` when it is missing); `expected` says what it must be.
  template <class T>
  T get_scalar(std::string_view k, T def, const char* expected) const {
    auto n = get(k);
    if (n == nullptr)
      return def;
    auto v = n->as<T>();
    if (v == nullptr)
      fail(*n, key(k), expected);
    return v->get();
  }

  const toml::table& t_;
  std::string path_;
};

/// The error of a syntax error or a failed check in the config text read from `path`
/// (errc::bad_config, "FILE:LINE: ...").
caf::error syntax_error(const toml::parse_error& e, const std::string& path);
caf::error check_error(const config_failure& e, const std::string& path);

/// Parses `text` (read from `path`) and hands the root table to `read`, which checks it with
/// the functions above; any syntax error or failed check becomes errc::bad_config.
template <class T, class Read>
caf::expected<T> parse_checked(std::string_view text, const std::string& path, Read read) {
  try {
    toml::table root = toml::parse(text, path);
    return read(root);
  } catch (const toml::parse_error& e) {
    return syntax_error(e, path);
  } catch (const config_failure& e) {
    return check_error(e, path);
  }
}

/// The whole content of the config file at `path`; errc::bad_input naming it when it cannot be
/// read.
caf::expected<std::string> read_config_file(const std::string& path);

} // namespace weir::toml_check
