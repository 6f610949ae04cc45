#pragma once

/// Number formatting for the `weir` command's machine-readable output.

#include <charconv>
#include <cmath>
#include <string>
#include <system_error>

namespace weir {

/// `v` as a JSON value. Finite numbers print in the shortest text that reads back as exactly
/// `v` (std::to_chars), which is always a valid JSON number. JSON has no infinity or NaN, and a
/// bare `inf` would make the whole document unreadable, so NaN (an aggregate with no input)
/// prints as `null` and an infinity (a sum that overflowed) as the string "inf" or "-inf".
inline std::string json_number(double v) {
  if (std::isnan(v))
    return "null";
  if (std::isinf(v))
    return v > 0 ? "\"inf\"" : "\"-inf\"";
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  if (r.ec != std::errc{})
    return "null"; // unreachable: 32 bytes hold any shortest double
  return std::string(buf, r.ptr);
}

} // namespace weir
