#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "cli/format.hpp"

using namespace weir;

namespace {

/// True when `s` is a JSON number by RFC 8259's grammar:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
bool is_json_number(const std::string& s) {
  size_t i = 0;
  auto digits = [&] {
    size_t b = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9')
      ++i;
    return i > b;
  };
  if (i < s.size() && s[i] == '-')
    ++i;
  if (i < s.size() && s[i] == '0')
    ++i;
  else if (!digits())
    return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits())
      return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-'))
      ++i;
    if (!digits())
      return false;
  }
  return i == s.size();
}

/// The shortest %.Ng text (fewest significant digits) that reads back as exactly `v`.
std::string shortest_g(double v) {
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  return buf;
}

} // namespace

TEST_CASE("json_number: non-finite values stay valid JSON") {
  CHECK(json_number(std::numeric_limits<double>::quiet_NaN()) == "null");
  CHECK(json_number(std::numeric_limits<double>::infinity()) == "\"inf\"");
  CHECK(json_number(-std::numeric_limits<double>::infinity()) == "\"-inf\"");
  CHECK(json_number(DBL_MAX * 2) == "\"inf\"");
}

TEST_CASE("json_number: known values") {
  CHECK(json_number(0) == "0");
  CHECK(json_number(3) == "3");
  CHECK(json_number(-2.5) == "-2.5");
  CHECK(json_number(0.1) == "0.1");
  CHECK(json_number(1e300) == "1e+300");
}

TEST_CASE("json_number: every finite value reads back exactly, shortest, as a JSON number") {
  std::mt19937_64 rng{5};
  std::vector<double> values{0.0,
                             -0.0,
                             DBL_MIN,
                             DBL_MAX,
                             -DBL_MAX,
                             DBL_TRUE_MIN,
                             1e15,
                             1e16,
                             1e21,
                             1e-7,
                             123456789012345678.0,
                             0.1 + 0.2,
                             1.0 / 3,
                             9007199254740993.0};
  for (int i = 0; i < 20000; ++i) {
    uint64_t bits = rng();
    double v = 0;
    std::memcpy(&v, &bits, sizeof v);
    if (std::isfinite(v))
      values.push_back(v);
    values.push_back(static_cast<double>(static_cast<int64_t>(rng() >> (rng() % 64))));
  }
  for (double v : values) {
    auto s = json_number(v);
    INFO(s);
    CHECK(is_json_number(s));
    CHECK(std::strtod(s.c_str(), nullptr) == v);
    CHECK(std::signbit(std::strtod(s.c_str(), nullptr)) == std::signbit(v));
    CHECK(s.size() <= shortest_g(v).size());
  }
}
