// End to end through the `weir` binary: times and numbers at the edge of what 64 bits hold.
// Epoch values past the year 9999 are dead letters (never a wrong time that moves the
// watermark), out-of-range --from/--to are refused, and sums that overflow to infinity still
// give valid JSON.

#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

#include <simdjson.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using weir::test::split;
using weir::test::temp_dir;
using weir::test::write_file;

const std::string weir_bin = WEIR_BINARY;

weir::test::command_result run(const std::string& cmd) {
  return weir::test::sh("timeout 120 " + cmd);
}

/// One ndjson pipeline: `ts` in epoch_ms, tumbling 60 s windows without lateness, count and sum.
std::string ndjson_config() {
  return "store = \"store\"\ncommit_interval = \"20ms\"\n\n"
         "[[pipeline]]\nname = \"p\"\n\n"
         "  [[pipeline.source]]\n  name = \"in\"\n  path = \"in.ndjson\"\n\n"
         "  [pipeline.fields]\n  time = \"ts\"\n  time_format = \"epoch_ms\"\n"
         "  key = [\"k\"]\n  measures = [\"v\"]\n\n"
         "  [pipeline.window]\n  kind = \"tumbling\"\n  size = \"60s\"\n\n"
         "  [[pipeline.aggregate]]\n  fn = \"count\"\n"
         "  [[pipeline.aggregate]]\n  fn = \"sum\"\n  field = \"v\"\n";
}

/// Epoch-ms texts that do not fit the years 0000 to 9999: 2^63, 2^64, 19 and 20 digits (the
/// last one, with 64-bit wrap-around, would read as the year 5984).
const std::vector<std::string> out_of_range = {
  "9223372036854775808", "-9223372036854775809", "18446744073709551616", "9300000000000000000",
  "9999999999999999999", "1000000000000000000",  "5000000000000000123",  "99999999999999999999",
  "253402300800000",     "9223498738005175808"};

/// True when `t` fits neither int64 nor uint64: as a json number (not a string) the json
/// parser rejects it ("bad json") before any time is read.
bool beyond_64_bits(const std::string& t) {
  return t == "-9223372036854775809" || t == "18446744073709551616" || t == "99999999999999999999";
}

/// "window start,key" -> count: the csv of a query, without the end, sum and version columns.
std::map<std::string, int> counts_of(const std::string& csv) {
  std::map<std::string, int> out;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    auto f = split(line, ',');
    if (f.size() >= 4)
      out[f[0] + "," + f[2]] = std::stoi(f[3]);
  }
  return out;
}

} // namespace

TEST_CASE("epoch times past the year 9999 are dead letters and leave the watermark alone") {
  temp_dir dir;
  // Valid records one second apart from 2024-06-01, in order; every 7th line an out-of-range
  // time (as a json number or a string). With the watermark moved by a wrong time, every valid
  // record after it would be late.
  const int64_t base_ms = 1717200000000LL;
  std::string text;
  std::map<std::string, int> expected;
  size_t bad = 0;
  size_t bad_json = 0;
  for (int i = 0; i < 600; ++i) {
    if (i % 7 == 3) {
      const auto& t = out_of_range[bad % out_of_range.size()];
      const bool as_string = bad % 2 == 1;
      text += as_string ? "{\"ts\": \"" + t + "\", \"k\": \"a\", \"v\": 1}\n"
                        : "{\"ts\": " + t + ", \"k\": \"a\", \"v\": 1}\n";
      bad_json += !as_string && beyond_64_bits(t);
      ++bad;
    }
    const int64_t t = base_ms + i * 1000LL;
    const std::string key = i % 2 ? "a" : "b";
    text += "{\"ts\": " + std::to_string(t) + ", \"k\": \"" + key + "\", \"v\": 2}\n";
    ++expected[weir::test::iso(t / 1000 - (t / 1000) % 60) + "," + key];
  }
  write_file(dir.path / "in.ndjson", text);
  write_file(dir.path / "p.toml", ndjson_config());
  auto r = run(weir_bin + " run --final " + (dir.path / "p.toml").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Matches("[\\s\\S]*late \\(dead letter\\) +0\n[\\s\\S]*"));
  REQUIRE(bad_json > 0);
  CHECK_THAT(
    r.out, Catch::Matches("[\\s\\S]*bad time +" + std::to_string(bad - bad_json) + "\n[\\s\\S]*"));
  CHECK_THAT(r.out,
             Catch::Matches("[\\s\\S]*bad json +" + std::to_string(bad_json) + "\n[\\s\\S]*"));
  const auto store = (dir.path / "store").string();
  auto q = run(weir_bin + " query --store " + store + " --pipeline p --format csv");
  REQUIRE(q.rc == 0);
  CHECK(counts_of(q.out) == expected);
  auto d = run(weir_bin + " dead-letters --store " + store + " --format csv");
  REQUIRE(d.rc == 0);
  size_t rows = 0;
  std::istringstream in(d.out);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    INFO(line);
    CHECK_THAT(line, Catch::Contains("out of range: years 0000 to 9999 only") ||
                       Catch::Contains("bad json: Problem while parsing a number"));
    ++rows;
  }
  CHECK(rows == bad);
}

TEST_CASE("query --from and --to out of range are refused with exit code 2") {
  temp_dir dir;
  for (const char* t : {"99999999999999999999", "9223372036854775808", "-9223372036854775809",
                        "253402300800", "10000-01-01T00:00:00Z"}) {
    for (const char* opt : {" --from ", " --to "}) {
      auto r = run(weir_bin + " query --store " + dir.str() + " --pipeline p" + opt + t);
      INFO(opt << t << ": " << r.out);
      CHECK(r.rc == 2);
      CHECK_THAT(r.out, Catch::Contains(std::string{"bad time '"} + t + "'"));
    }
  }
  auto r =
    run(weir_bin + " query --store " + dir.str() + " --pipeline p --from 9223372036854775808");
  CHECK_THAT(r.out, Catch::Contains("out of range: years 0000 to 9999 only"));
}

TEST_CASE("query --format json stays valid JSON when a sum overflows to infinity") {
  temp_dir dir;
  std::string text;
  // 1e308 + 1e308 overflows a double: the window's sum is +inf, another key's is -inf.
  for (int i = 0; i < 2; ++i) {
    text += "{\"ts\": 1717200000000, \"k\": \"up\", \"v\": 1e308}\n";
    text += "{\"ts\": 1717200000000, \"k\": \"down\", \"v\": -1e308}\n";
  }
  text += "{\"ts\": 1717200000000, \"k\": \"plain\", \"v\": 0.1}\n";
  write_file(dir.path / "in.ndjson", text);
  write_file(dir.path / "p.toml", ndjson_config());
  auto r = run(weir_bin + " run --final " + (dir.path / "p.toml").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto q = run(weir_bin + " query --store " + (dir.path / "store").string() +
               " --pipeline p --format json");
  INFO(q.out);
  REQUIRE(q.rc == 0);
  CHECK_THAT(q.out, Catch::Contains("\"key\": \"up\", \"count\": 2, \"sum_v\": \"inf\""));
  CHECK_THAT(q.out, Catch::Contains("\"key\": \"down\", \"count\": 2, \"sum_v\": \"-inf\""));
  CHECK_THAT(q.out, Catch::Contains("\"key\": \"plain\", \"count\": 1, \"sum_v\": 0.1,"));
  // Valid JSON: simdjson's strict parser (no Infinity or NaN) reads it back, 3 rows.
  simdjson::dom::parser parser;
  simdjson::dom::array rows;
  REQUIRE(parser.parse(q.out).get(rows) == simdjson::SUCCESS);
  CHECK(rows.size() == 3);
}
