#pragma once

/// Aggregate functions of the tests, header-only so that the plugin (tests/plugins/
/// aggregates.cpp) and the operator tests share them without linking anything of Weir:
///
/// - sum_sq: the sum of the squares of the values (NaN without values);
/// - plain_sum: the sum of the values (NaN without values);
/// - ewma: a time-weighted mean: a value `age` seconds older than the newest value of the window
///   weighs (1 - alpha)^age; options: alpha in (0, 1), default 0.5. Its merge aligns both
///   accumulators to the later of their newest times, so it needs the times add() gets.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "actors/core/extension.hpp"

namespace weir_test {

using weir::extension_error;
using weir::extension_options;
using weir::timestamp;

/// The number of option `key` (`fallback` when missing), parsed here rather than with
/// extension_options::number so that a plugin needs no symbol of the weir library.
inline double option_number(const extension_options& o, const std::string& key, double fallback) {
  for (const auto& [k, v] : o.values()) {
    if (k != key)
      continue;
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0')
      throw extension_error("options." + k + ": expected a number, got \"" + v + "\"");
    return x;
  }
  return fallback;
}

/// extension_error for an option other than `allowed` (empty: none is taken).
inline void only_option(const extension_options& o, const std::string& allowed) {
  for (const auto& [k, v] : o.values())
    if (k != allowed)
      throw extension_error(
        "options." + k + ": unknown option" +
        (allowed.empty() ? std::string{" (it takes none)"} : " (allowed: " + allowed + ")"));
}

struct sum_sq {
  struct state {
    double sum;
    double n;
  };
  explicit sum_sq(const extension_options& o) { only_option(o, {}); }
  state init() const { return {0, 0}; }
  void add(state& s, double v, timestamp) const {
    s.sum += v * v;
    s.n += 1;
  }
  void merge(state& into, const state& other) const {
    into.sum += other.sum;
    into.n += other.n;
  }
  double result(const state& s) const {
    return s.n > 0 ? s.sum : std::numeric_limits<double>::quiet_NaN();
  }
};

/// The sum of the values, as a registered aggregate (to measure what the interface costs
/// against the built-in sum).
struct plain_sum {
  struct state {
    double sum;
    double n;
  };
  explicit plain_sum(const extension_options& o) { only_option(o, {}); }
  state init() const { return {0, 0}; }
  void add(state& s, double v, timestamp) const {
    s.sum += v;
    s.n += 1;
  }
  void merge(state& into, const state& other) const {
    into.sum += other.sum;
    into.n += other.n;
  }
  double result(const state& s) const {
    return s.n > 0 ? s.sum : std::numeric_limits<double>::quiet_NaN();
  }
};

struct ewma {
  struct state {
    timestamp newest; ///< event time the sums are weighted at
    double weighted;  ///< sum of value * weight
    double weight;    ///< sum of weights (0: empty)
  };
  explicit ewma(const extension_options& o)
    : alpha_(option_number(o, "alpha", 0.5)) {
    only_option(o, "alpha");
    if (!(alpha_ > 0 && alpha_ < 1))
      throw extension_error("options.alpha: must be between 0 and 1 (exclusive), got " +
                            std::to_string(alpha_));
    log_keep_ = std::log1p(-alpha_);
  }
  /// The factor a weight decays by over `us` microseconds.
  double decay(timestamp us) const { return std::exp(log_keep_ * (static_cast<double>(us) / 1e6)); }
  state init() const { return {0, 0, 0}; }
  void add(state& s, double v, timestamp t) const { merge(s, state{t, v, 1}); }
  void merge(state& into, const state& other) const {
    if (other.weight == 0)
      return;
    if (into.weight == 0) {
      into = other;
      return;
    }
    const timestamp newest = std::max(into.newest, other.newest);
    const double a = decay(newest - into.newest);
    const double b = decay(newest - other.newest);
    into.weighted = into.weighted * a + other.weighted * b;
    into.weight = into.weight * a + other.weight * b;
    into.newest = newest;
  }
  double result(const state& s) const {
    return s.weight > 0 ? s.weighted / s.weight : std::numeric_limits<double>::quiet_NaN();
  }

private:
  double alpha_;
  double log_keep_ = 0;
};

} // namespace weir_test
