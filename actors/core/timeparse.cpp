#include "actors/core/timeparse.hpp"

namespace weir {

namespace {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// Reads exactly `n` digits at `p` into `out`.
inline bool read_digits(const char* p, const char* end, int n, int& out) {
  if (end - p < n)
    return false;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    if (!is_digit(p[i]))
      return false;
    v = v * 10 + (p[i] - '0');
  }
  out = v;
  return true;
}

constexpr bool is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

constexpr int days_in_month(int y, int m) {
  constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/// The one reason for any time outside min_parsed_time..max_parsed_time, whatever its format.
constexpr const char* out_of_range = "out of range: years 0000 to 9999 only";

bool fail(const char*& reason, const char* why) {
  reason = why;
  return false;
}

bool parse_iso8601(std::string_view s, timestamp& out, const char*& reason) {
  const char* p = s.data();
  const char* end = p + s.size();
  int year = 0;
  int month = 0;
  int day = 0;
  if (!read_digits(p, end, 4, year) || end - p < 5 || p[4] != '-')
    return fail(reason, "expected YYYY-MM-DD");
  if (!read_digits(p + 5, end, 2, month) || end - p < 8 || p[7] != '-'
      || !read_digits(p + 8, end, 2, day))
    return fail(reason, "expected YYYY-MM-DD");
  if (month < 1 || month > 12)
    return fail(reason, "month out of range");
  if (day < 1 || day > days_in_month(year, month))
    return fail(reason, "day out of range");
  p += 10;
  int64_t secs = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day))
                 * 86400;
  if (p == end) {
    out = secs * us_per_s;
    return true;
  }
  if (*p != 'T' && *p != 't' && *p != ' ')
    return fail(reason, "expected 'T' or a space after the date");
  ++p;
  int hour = 0;
  int minute = 0;
  int second = 0;
  if (!read_digits(p, end, 2, hour) || end - p < 5 || p[2] != ':'
      || !read_digits(p + 3, end, 2, minute))
    return fail(reason, "expected hh:mm after the date");
  p += 5;
  if (p != end && *p == ':') {
    if (!read_digits(p + 1, end, 2, second))
      return fail(reason, "expected two digits of seconds");
    p += 3;
  }
  if (hour > 23)
    return fail(reason, "hour out of range");
  if (minute > 59)
    return fail(reason, "minute out of range");
  if (second > 59)
    return fail(reason, "second out of range");
  int64_t frac = 0;
  if (p != end && (*p == '.' || *p == ',')) {
    ++p;
    int digits = 0;
    while (p != end && is_digit(*p)) {
      if (digits < 6)
        frac = frac * 10 + (*p - '0');
      ++digits;
      ++p;
    }
    if (digits == 0 || digits > 9)
      return fail(reason, "the fraction of a second needs 1 to 9 digits");
    for (int i = digits; i < 6; ++i)
      frac *= 10;
  }
  if (p == end)
    return fail(reason, "no time zone (add Z or an offset such as +02:00)");
  int64_t zone = 0;
  if (*p == 'Z' || *p == 'z') {
    ++p;
  } else if (*p == '+' || *p == '-') {
    const bool neg = *p == '-';
    ++p;
    int zh = 0;
    int zm = 0;
    if (!read_digits(p, end, 2, zh))
      return fail(reason, "bad time zone offset");
    p += 2;
    if (p != end) {
      if (*p == ':')
        ++p;
      if (!read_digits(p, end, 2, zm))
        return fail(reason, "bad time zone offset");
      p += 2;
    }
    if (zh > 23 || zm > 59)
      return fail(reason, "time zone offset out of range");
    zone = (zh * 3600 + zm * 60) * (neg ? -1 : 1);
  } else {
    return fail(reason, "unexpected text after the time");
  }
  if (p != end)
    return fail(reason, "unexpected text after the time zone");
  secs += hour * 3600 + minute * 60 + second - zone;
  out = secs * us_per_s + frac;
  if (out < min_parsed_time || out > max_parsed_time)
    return fail(reason, out_of_range);
  return true;
}

/// Parses `[+-]digits[.digits]` as a count of `unit` microseconds, truncating toward zero.
bool parse_epoch(std::string_view s, int64_t unit, timestamp& out, const char*& reason) {
  const char* p = s.data();
  const char* end = p + s.size();
  bool neg = false;
  if (p != end && (*p == '-' || *p == '+')) {
    neg = *p == '-';
    ++p;
  }
  // Any whole part of 10^18 or more is past the year 9999 in every unit; stopping there keeps
  // the accumulation below far from int64 overflow, whatever the number of digits.
  constexpr int64_t limit = 1'000'000'000'000'000'000LL;
  int64_t whole = 0;
  const char* digits_begin = p;
  while (p != end && is_digit(*p)) {
    if (whole >= limit / 10)
      return fail(reason, out_of_range);
    whole = whole * 10 + (*p - '0');
    ++p;
  }
  bool any = p != digits_begin;
  int64_t frac = 0; // in microseconds
  if (p != end && *p == '.') {
    ++p;
    int64_t scale = unit;
    const char* frac_begin = p;
    while (p != end && is_digit(*p)) {
      scale /= 10;
      frac += (*p - '0') * scale;
      ++p;
    }
    any = any || p != frac_begin;
    if (p == frac_begin && digits_begin == frac_begin - 1)
      return fail(reason, "expected a number");
  }
  if (!any)
    return fail(reason, "expected a number");
  if (p != end)
    return fail(reason, "expected a number");
  if (whole > max_parsed_time / unit + 1)
    return fail(reason, out_of_range);
  int64_t v = whole * unit + frac;
  out = neg ? -v : v;
  if (out < min_parsed_time || out > max_parsed_time)
    return fail(reason, out_of_range);
  return true;
}

/// Writes v in at least `width` digits at p; returns the end.
char* put_digits(char* p, int64_t v, int width) {
  if (width == 2 && v < 100) { // the usual fields, without a loop
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
    return p + 2;
  }
  char buf[24];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (int i = n; i < width; ++i)
    *p++ = '0';
  while (n > 0)
    *p++ = buf[--n];
  return p;
}

} // namespace

bool parse_time(std::string_view s, time_format f, timestamp& out, const char*& reason) {
  switch (f) {
    case time_format::iso8601: return parse_iso8601(s, out, reason);
    case time_format::epoch_s: return parse_epoch(s, us_per_s, out, reason);
    case time_format::epoch_ms: return parse_epoch(s, us_per_ms, out, reason);
    case time_format::epoch_us: return parse_epoch(s, 1, out, reason);
  }
  return fail(reason, "unknown time format");
}

bool parse_time(std::string_view s, time_format f, timestamp& out) {
  const char* reason = nullptr;
  return parse_time(s, f, out, reason);
}

void append_time(std::string& out, timestamp t) {
  // Floor division so that times before 1970 get a positive fraction within their second.
  int64_t secs = t / us_per_s;
  int64_t frac = t % us_per_s;
  if (frac < 0) {
    frac += us_per_s;
    --secs;
  }
  int64_t days = secs / 86400;
  int64_t sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  int64_t y = 0;
  unsigned m = 0;
  unsigned d = 0;
  civil_from_days(days, y, m, d);
  char buf[64];
  char* p = buf;
  if (y < 0) {
    *p++ = '-';
    y = -y;
  }
  p = put_digits(p, y, 4);
  *p++ = '-';
  p = put_digits(p, m, 2);
  *p++ = '-';
  p = put_digits(p, d, 2);
  *p++ = 'T';
  p = put_digits(p, sod / 3600, 2);
  *p++ = ':';
  p = put_digits(p, sod / 60 % 60, 2);
  *p++ = ':';
  p = put_digits(p, sod % 60, 2);
  if (frac != 0) {
    *p++ = '.';
    int width = 6;
    while (frac % 10 == 0) {
      frac /= 10;
      --width;
    }
    p = put_digits(p, frac, width);
  }
  *p++ = 'Z';
  out.append(buf, static_cast<size_t>(p - buf));
}

std::string format_time(timestamp t) {
  std::string out;
  append_time(out, t);
  return out;
}

bool parse_duration(std::string_view s, int64_t& us) {
  size_t i = 0;
  int64_t v = 0;
  while (i < s.size() && is_digit(s[i])) {
    v = v * 10 + (s[i] - '0');
    if (v > max_duration)
      return false;
    ++i;
  }
  if (i == 0)
    return false;
  std::string_view unit = s.substr(i);
  int64_t mult = 0;
  if (unit.empty() || unit == "ms")
    mult = us_per_ms;
  else if (unit == "us")
    mult = 1;
  else if (unit == "s")
    mult = us_per_s;
  else if (unit == "m")
    mult = 60 * us_per_s;
  else if (unit == "h")
    mult = 3600 * us_per_s;
  else if (unit == "d")
    mult = 86400 * us_per_s;
  else
    return false;
  if (v > max_duration / mult)
    return false;
  us = v * mult;
  return true;
}

std::string format_duration(int64_t us) {
  struct unit {
    int64_t us;
    const char* name;
  };
  constexpr unit units[] = {{86400 * us_per_s, "d"}, {3600 * us_per_s, "h"},
                            {60 * us_per_s, "m"},    {us_per_s, "s"},
                            {us_per_ms, "ms"},       {1, "us"}};
  if (us == 0)
    return "0s";
  for (const auto& u : units)
    if (us % u.us == 0)
      return std::to_string(us / u.us) + u.name;
  return std::to_string(us) + "us";
}

} // namespace weir
