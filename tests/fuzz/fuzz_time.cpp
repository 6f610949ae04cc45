// Fuzz target: event-time and duration parsing. Whatever parses must be in range and read back
// from its own formatting; nothing may overflow.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "actors/core/timeparse.hpp"

using namespace weir;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s{reinterpret_cast<const char*>(data), size};
  for (auto f :
       {time_format::iso8601, time_format::epoch_s, time_format::epoch_ms, time_format::epoch_us}) {
    timestamp t = 0;
    const char* why = nullptr;
    if (!parse_time(s, f, t, why)) {
      if (why == nullptr)
        std::abort();
      continue;
    }
    if (t < min_parsed_time || t > max_parsed_time)
      std::abort();
    timestamp back = 0;
    if (!parse_time(format_time(t), time_format::iso8601, back) || back != t)
      std::abort();
  }
  int64_t us = 0;
  if (parse_duration(s, us)) {
    if (us < 0 || us > max_duration)
      std::abort();
    int64_t back = 0;
    if (!parse_duration(format_duration(us), back) || back != us)
      std::abort();
  }
  // format_time must print any int64 without overflow, not only parsed ones.
  if (size >= 8) {
    int64_t raw = 0;
    for (int i = 0; i < 8; ++i)
      raw = static_cast<int64_t>(static_cast<uint64_t>(raw) << 8 | data[i]);
    (void)format_time(raw);
    (void)format_duration(raw < 0 ? 0 : raw);
  }
  return 0;
}
