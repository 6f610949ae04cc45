#pragma once

/// Event-time and duration parsing. These run once per record on the preprocess hot path, so
/// they never allocate and never call the C library's locale- or timezone-aware functions:
/// calendar arithmetic is Howard Hinnant's days-from-civil, valid for every proleptic Gregorian
/// date.

#include <cstdint>
#include <string>
#include <string_view>

#include "actors/core/types.hpp"

namespace weir {

/// Parsed times are limited to the years 0000 to 9999 so that adding any configured duration
/// (see max_duration) to one can never overflow an int64.
constexpr timestamp min_parsed_time = -62'167'219'200LL * us_per_s; ///< 0000-01-01T00:00:00Z
constexpr timestamp max_parsed_time = 253'402'300'800LL * us_per_s - 1; ///< end of 9999

/// The longest duration parse_duration accepts (about 3,170 years).
constexpr int64_t max_duration = 100'000'000'000'000'000LL;

/// Days since 1970-01-01 of the proleptic Gregorian date y-m-d (m in 1..12, d in 1..31).
constexpr int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

/// The inverse of days_from_civil.
constexpr void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

/// Parses `s` as an event time in format `f` into microseconds since the epoch (UTC).
///
/// iso8601: `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DD(T|t| )hh:mm[:ss[.f]]` followed by a zone:
/// `Z`, `z`, `+hh`, `+hhmm` or `+hh:mm` (or `-`). The fraction has 1 to 9 digits; digits beyond
/// microseconds are truncated. A time without a zone is rejected: guessing one would silently
/// shift every window. epoch_s / epoch_ms / epoch_us: an integer or decimal number of that
/// unit, optionally signed; sub-microsecond digits are truncated toward zero.
///
/// Any format refuses a time outside min_parsed_time..max_parsed_time ("out of range: years
/// 0000 to 9999 only"), however many digits it has: no input overflows into a wrong time.
/// On failure returns false and points `reason` at a static text ("month out of range", ...).
bool parse_time(std::string_view s, time_format f, timestamp& out, const char*& reason);

/// Same as above, without the reason.
bool parse_time(std::string_view s, time_format f, timestamp& out);

/// Formats `t` as `YYYY-MM-DDThh:mm:ssZ`, with a fraction (trailing zeros dropped) only when
/// `t` is not a whole second. Years outside 0000-9999 print with as many digits as needed.
std::string format_time(timestamp t);
/// Appends format_time(t) to `out` (no allocation of its own).
void append_time(std::string& out, timestamp t);

/// Parses a non-negative duration: an integer followed by `us`, `ms`, `s`, `m`, `h` or `d`, or a
/// bare integer of milliseconds. Rejects anything above max_duration.
bool parse_duration(std::string_view s, int64_t& us);

/// Formats a duration in the largest unit that divides it exactly (`90s` -> "90s", 3600 s ->
/// "1h"), so that the text parses back with parse_duration.
std::string format_duration(int64_t us);

} // namespace weir
