#pragma once

// ISO 8601 UTC text of Weir timestamps (microseconds since 1970) and back, for the examples'
// generators, sinks and checks.

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace weir_examples {

/// "2026-11-28T10:05:00Z" of a timestamp in microseconds (whole seconds).
inline std::string iso(int64_t us) {
  std::time_t s = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  ::gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// The microseconds of "YYYY-MM-DDTHH:MM:SSZ"; -1 when it is not that.
inline int64_t parse_iso(const std::string& s) {
  std::tm tm{};
  int y, mo, d, h, mi, se;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &se) != 6)
    return -1;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  return static_cast<int64_t>(::timegm(&tm)) * 1000000;
}

} // namespace weir_examples
