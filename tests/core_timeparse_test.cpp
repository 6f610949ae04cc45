#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "actors/core/timeparse.hpp"

using namespace weir;

namespace {

/// Days since 1970-01-01, counted the slow way: whole years, then whole months.
int64_t brute_days(int y, int m, int d) {
  auto leap = [](int yy) { return (yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0; };
  int64_t days = 0;
  if (y >= 1970)
    for (int yy = 1970; yy < y; ++yy)
      days += leap(yy) ? 366 : 365;
  else
    for (int yy = y; yy < 1970; ++yy)
      days -= leap(yy) ? 366 : 365;
  const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  for (int mm = 1; mm < m; ++mm)
    days += mdays[mm - 1] + (mm == 2 && leap(y) ? 1 : 0);
  return days + d - 1;
}

int month_days(int y, int m) {
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return mdays[m - 1] + (m == 2 && leap ? 1 : 0);
}

std::string fmt(const char* f, int a, int b = 0, int c = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

std::string reason_of(std::string_view s, time_format f = time_format::iso8601) {
  timestamp t = 0;
  const char* why = nullptr;
  if (parse_time(s, f, t, why))
    return "ok";
  return why;
}

/// The microseconds `text` ([+-]digits[.digits]) stands for in `unit`, computed in 128 bits with
/// digits beyond 10^30 saturating, so that no input can overflow the reference itself.
__int128 wide_epoch(std::string_view text, int64_t unit) {
  const __int128 cap = static_cast<__int128>(1'000'000'000'000'000LL) * 1'000'000'000'000'000LL;
  bool neg = !text.empty() && text[0] == '-';
  if (!text.empty() && (text[0] == '-' || text[0] == '+'))
    text.remove_prefix(1);
  __int128 whole = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] != '.'; ++i)
    whole = std::min(cap, whole * 10 + (text[i] - '0'));
  __int128 frac = 0;
  __int128 scale = unit;
  for (++i; i < text.size(); ++i) {
    scale /= 10;
    frac += (text[i] - '0') * scale;
  }
  __int128 v = whole * unit + frac;
  return neg ? -v : v;
}

/// Numbers near every limit an epoch parser could trip on: int64's, 10^18, 10^19 and the ends
/// of the years 0000 to 9999 in `unit`.
std::vector<std::string> epoch_boundaries(int64_t unit) {
  std::vector<std::string> out;
  const char* fixed[] = {"9223372036854775807",           "9223372036854775808",
                         "9223372036854775809",           "18446744073709551615",
                         "18446744073709551616",          "999999999999999999",
                         "1000000000000000000",           "9999999999999999999",
                         "10000000000000000000",          "99999999999999999999",
                         "9300000000000000000",           "5000000000000000000",
                         "00000000000000000000000000012", "0"};
  for (const char* f : fixed)
    out.emplace_back(f);
  for (int64_t edge : {max_parsed_time / unit, -min_parsed_time / unit})
    for (int64_t d = -2; d <= 2; ++d)
      out.push_back(std::to_string(edge + d));
  return out;
}

} // namespace

TEST_CASE("days_from_civil agrees with counting days year by year") {
  for (int y : {0, 1, 4, 100, 399, 400, 1582, 1899, 1900, 1969, 1970, 1971, 2000, 2024, 2100,
                9999})
    for (int m = 1; m <= 12; ++m)
      for (int d : {1, 15, month_days(y, m)}) {
        CHECK(days_from_civil(y, m, d) == brute_days(y, m, d));
        int64_t yy = 0;
        unsigned mm = 0;
        unsigned dd = 0;
        civil_from_days(brute_days(y, m, d), yy, mm, dd);
        CHECK(yy == y);
        CHECK(mm == static_cast<unsigned>(m));
        CHECK(dd == static_cast<unsigned>(d));
      }
}

TEST_CASE("iso8601: random valid times match the reference") {
  std::mt19937_64 rng{42};
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>{lo, hi}(rng); };
  for (int i = 0; i < 20000; ++i) {
    int y = pick(1, 9998);
    int m = pick(1, 12);
    int d = pick(1, month_days(y, m));
    int h = pick(0, 23);
    int mi = pick(0, 59);
    int s = pick(0, 59);
    std::string text = fmt("%04d-%02d-%02d", y, m, d);
    int64_t expect = brute_days(y, m, d) * 86400 * us_per_s;
    if (pick(0, 9) == 0) {
      timestamp t = 0;
      REQUIRE(parse_time(text, time_format::iso8601, t));
      CHECK(t == expect);
      continue;
    }
    text += "T "[pick(0, 1)];
    text += fmt("%02d:%02d:%02d", h, mi, s);
    expect += (h * 3600 + mi * 60 + s) * us_per_s;
    int digits = pick(0, 9);
    if (digits > 0) {
      std::string frac;
      for (int k = 0; k < digits; ++k)
        frac += static_cast<char>('0' + pick(0, 9));
      text += "." + frac;
      std::string us = (frac + "000000").substr(0, 6);
      expect += std::stoll(us);
    }
    switch (pick(0, 4)) {
      case 0: text += "Z"; break;
      case 1: {
        int zh = pick(0, 14);
        int zm = pick(0, 59);
        bool neg = pick(0, 1) == 1;
        text += (neg ? "-" : "+") + fmt("%02d:%02d", zh, zm);
        expect -= (neg ? -1 : 1) * (zh * 3600 + zm * 60) * us_per_s;
        break;
      }
      case 2: {
        int zh = pick(0, 14);
        int zm = pick(0, 59);
        text += "-" + fmt("%02d%02d", zh, zm);
        expect += (zh * 3600 + zm * 60) * us_per_s;
        break;
      }
      case 3: {
        int zh = pick(0, 14);
        text += "+" + fmt("%02d", zh);
        expect -= zh * 3600 * us_per_s;
        break;
      }
      default: text += "z"; break;
    }
    timestamp t = 0;
    INFO(text);
    REQUIRE(parse_time(text, time_format::iso8601, t));
    CHECK(t == expect);
  }
}

TEST_CASE("iso8601: known instants") {
  timestamp t = 0;
  REQUIRE(parse_time("1970-01-01T00:00:00Z", time_format::iso8601, t));
  CHECK(t == 0);
  REQUIRE(parse_time("2024-03-01T12:34:56Z", time_format::iso8601, t));
  CHECK(t == 1709296496LL * us_per_s);
  REQUIRE(parse_time("2024-03-01T14:34:56.123456789+02:00", time_format::iso8601, t));
  CHECK(t == 1709296496LL * us_per_s + 123456);
  REQUIRE(parse_time("2024-03-01T07:04:56-0530", time_format::iso8601, t));
  CHECK(t == 1709296496LL * us_per_s);
  REQUIRE(parse_time("1969-12-31T23:59:59.5Z", time_format::iso8601, t));
  CHECK(t == -500000);
  REQUIRE(parse_time("2024-02-29", time_format::iso8601, t));
  CHECK(t == 1709164800LL * us_per_s);
  REQUIRE(parse_time("2024-03-01 12:34Z", time_format::iso8601, t));
  CHECK(t == 1709296440LL * us_per_s);
}

TEST_CASE("iso8601: errors say why") {
  CHECK(reason_of("2024-13-01T00:00:00Z") == "month out of range");
  CHECK(reason_of("2024-00-01T00:00:00Z") == "month out of range");
  CHECK(reason_of("2023-02-29T00:00:00Z") == "day out of range");
  CHECK(reason_of("2024-02-30") == "day out of range");
  CHECK(reason_of("2024-04-31") == "day out of range");
  CHECK(reason_of("2024-04-00") == "day out of range");
  CHECK(reason_of("2024-03-01T24:00:00Z") == "hour out of range");
  CHECK(reason_of("2024-03-01T12:60:00Z") == "minute out of range");
  CHECK(reason_of("2024-03-01T12:00:60Z") == "second out of range");
  CHECK(reason_of("2024-03-01T12:00:00").find("no time zone") != std::string::npos);
  CHECK(reason_of("2024-03-01T12:00:00.").find("fraction") != std::string::npos);
  CHECK(reason_of("2024-03-01T12:00:00.1234567890Z").find("fraction") != std::string::npos);
  CHECK(reason_of("2024-03-01T12:00:00+2") == "bad time zone offset");
  CHECK(reason_of("2024-03-01T12:00:00+24:00") == "time zone offset out of range");
  CHECK(reason_of("2024-03-01T12:00:00+02:60") == "time zone offset out of range");
  CHECK(reason_of("2024-03-01T12:00:00Zjunk") != "ok");
  CHECK(reason_of("2024-03-01T12:00:00 Z") != "ok");
  CHECK(reason_of("2024-3-01") != "ok");
  CHECK(reason_of("24-03-01") != "ok");
  CHECK(reason_of("") != "ok");
  CHECK(reason_of("abc") != "ok");
  CHECK(reason_of("2024-03-01X") != "ok");
  CHECK(reason_of("2024-03-01T1:00:00Z") != "ok");
  CHECK(reason_of("0000-01-01T00:00:00+01:00") == "out of range: years 0000 to 9999 only");
  CHECK(reason_of("9999-12-31T23:59:59-00:01") == "out of range: years 0000 to 9999 only");
  CHECK(reason_of("0000-01-01T00:00:00Z") == "ok");
  CHECK(reason_of("9999-12-31T23:59:59.999999Z") == "ok");
}

TEST_CASE("epoch formats: integers and decimals, truncated toward zero") {
  std::mt19937_64 rng{7};
  struct unit_case {
    time_format f;
    int64_t unit;
    int64_t max_whole;
  };
  for (auto u : {unit_case{time_format::epoch_s, us_per_s, 253402300799LL},
                 unit_case{time_format::epoch_ms, us_per_ms, 253402300799000LL},
                 unit_case{time_format::epoch_us, 1, 253402300799000000LL}}) {
    for (int i = 0; i < 5000; ++i) {
      int64_t whole = std::uniform_int_distribution<int64_t>{0, u.max_whole - 1}(rng);
      bool neg = rng() % 2 == 0 && whole < 62167219200LL * us_per_s / u.unit;
      int digits = static_cast<int>(rng() % 8);
      std::string frac;
      for (int k = 0; k < digits; ++k)
        frac += static_cast<char>('0' + rng() % 10);
      std::string text = (neg ? "-" : "") + std::to_string(whole);
      if (digits > 0 || rng() % 3 == 0)
        text += "." + frac;
      // Reference: the fraction as microseconds, by digit position.
      int64_t frac_us = 0;
      int64_t scale = u.unit;
      for (char c : frac) {
        scale /= 10;
        frac_us += (c - '0') * scale;
      }
      int64_t expect = whole * u.unit + frac_us;
      if (neg)
        expect = -expect;
      timestamp t = 0;
      INFO(text);
      REQUIRE(parse_time(text, u.f, t));
      CHECK(t == expect);
    }
  }
  timestamp t = 0;
  REQUIRE(parse_time("1700000000.5", time_format::epoch_s, t));
  CHECK(t == 1700000000500000LL);
  REQUIRE(parse_time("+12", time_format::epoch_ms, t));
  CHECK(t == 12000);
  REQUIRE(parse_time("-1.5", time_format::epoch_s, t));
  CHECK(t == -1500000);
  REQUIRE(parse_time(".5", time_format::epoch_s, t));
  CHECK(t == 500000);
  for (const char* bad : {"", "-", ".", "abc", "12a", "1.2.3", "1e9", " 12", "12 ", "0x10",
                          "99999999999999999999", "253402300800"})
    CHECK_FALSE(parse_time(bad, time_format::epoch_s, t));
  CHECK(parse_time("253402300799", time_format::epoch_s, t));
}

TEST_CASE("epoch formats: huge numbers are out of range, never a wrong time (128-bit reference)") {
  std::mt19937_64 rng{11};
  for (auto [f, unit] :
       {std::pair{time_format::epoch_s, us_per_s}, std::pair{time_format::epoch_ms, us_per_ms},
        std::pair{time_format::epoch_us, int64_t{1}}}) {
    std::vector<std::string> texts;
    for (const auto& b : epoch_boundaries(unit))
      for (const char* sign : {"", "-", "+"})
        for (const char* frac : {"", ".5", ".999999999"})
          texts.push_back(sign + b + frac);
    for (int i = 0; i < 20000; ++i) {
      std::string t = rng() % 2 ? "-" : "";
      int digits = 1 + static_cast<int>(rng() % 25);
      for (int k = 0; k < digits; ++k)
        t += static_cast<char>('0' + rng() % 10);
      texts.push_back(t);
    }
    for (const auto& text : texts) {
      const __int128 want = wide_epoch(text, unit);
      const bool in_range = want >= min_parsed_time && want <= max_parsed_time;
      timestamp got = 0;
      const char* why = nullptr;
      INFO(text << " unit " << unit);
      REQUIRE(parse_time(text, f, got, why) == in_range);
      if (in_range)
        CHECK(got == static_cast<int64_t>(want));
      else
        CHECK(std::string{why} == "out of range: years 0000 to 9999 only");
    }
  }
}

TEST_CASE("format_time prints UTC with a fraction only when needed, and parses back") {
  CHECK(format_time(0) == "1970-01-01T00:00:00Z");
  CHECK(format_time(1709296496LL * us_per_s) == "2024-03-01T12:34:56Z");
  CHECK(format_time(1709296496LL * us_per_s + 123000) == "2024-03-01T12:34:56.123Z");
  CHECK(format_time(1709296496LL * us_per_s + 5) == "2024-03-01T12:34:56.000005Z");
  CHECK(format_time(-1) == "1969-12-31T23:59:59.999999Z");
  CHECK(format_time(min_parsed_time) == "0000-01-01T00:00:00Z");
  std::mt19937_64 rng{3};
  for (int i = 0; i < 20000; ++i) {
    timestamp t =
      std::uniform_int_distribution<int64_t>{min_parsed_time, max_parsed_time}(rng);
    if (i % 2 == 0)
      t -= t % us_per_s;
    auto s = format_time(t);
    timestamp back = 0;
    INFO(s);
    REQUIRE(parse_time(s, time_format::iso8601, back));
    CHECK(back == t);
  }
}

TEST_CASE("durations") {
  int64_t us = 0;
  struct dcase {
    const char* text;
    int64_t us;
  };
  for (auto c : {dcase{"250us", 250}, dcase{"100ms", 100000}, dcase{"5s", 5000000},
                 dcase{"2m", 120000000}, dcase{"1h", 3600000000LL}, dcase{"1d", 86400000000LL},
                 dcase{"0s", 0}, dcase{"1500", 1500000}}) {
    INFO(c.text);
    REQUIRE(parse_duration(c.text, us));
    CHECK(us == c.us);
    CHECK(parse_duration(format_duration(c.us), us));
    CHECK(us == c.us);
  }
  for (const char* bad : {"", "s", "-5s", "5 s", "5x", "1.5s", "5sec", "99999999999999999999d",
                          "2000000d"})
    CHECK_FALSE(parse_duration(bad, us));
  CHECK(format_duration(5400 * us_per_s) == "90m");
  CHECK(format_duration(1500) == "1500us");
}
