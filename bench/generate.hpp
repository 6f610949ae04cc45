#pragma once

/// Generates transaction events as CSV: tx_id, ts (ISO-8601 UTC), merchant, amount, currency.
/// Shared by the example generator and the benchmark so both describe the same workload.

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>

namespace weir::bench {

struct workload {
  uint64_t events = 3'000'000;
  uint32_t keys = 300;
  int64_t start = 1704067200;   ///< 2024-01-01T00:00:00Z
  int64_t span = 182LL * 86400; ///< six months of event time, in seconds
  double disorder = 0.02;       ///< share of events shifted back in time
  int64_t max_shift = 60;       ///< seconds an out-of-order event is shifted back at most
  uint64_t seed = 42;
};

/// Writes the events to `out`. Event times grow evenly over the span; a share of them is moved
/// back by up to max_shift seconds (out of order, within the usual out-of-orderness bound).
inline void generate(const workload& w, std::FILE* out) {
  std::mt19937_64 rng(w.seed);
  std::uniform_int_distribution<uint32_t> key(0, w.keys - 1);
  std::lognormal_distribution<double> amount(3.0, 1.0);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::uniform_int_distribution<int64_t> shift(1, w.max_shift);
  static const char* currencies[] = {"EUR", "USD", "GBP"};
  std::fputs("tx_id,ts,merchant,amount,currency\n", out);
  char line[160];
  for (uint64_t i = 0; i < w.events; ++i) {
    int64_t t = w.start + static_cast<int64_t>((static_cast<double>(i) / w.events) * w.span);
    if (coin(rng) < w.disorder)
      t -= shift(rng);
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    uint32_t k = key(rng);
    double a = std::round(amount(rng) * 100.0) / 100.0;
    int n = std::snprintf(line, sizeof(line),
                          "tx%" PRIu64 ",%04d-%02d-%02dT%02d:%02d:%02dZ,m%03u,%.2f,%s\n", i,
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                          tm.tm_sec, k, a, currencies[k % 3]);
    std::fwrite(line, 1, static_cast<size_t>(n), out);
  }
}

} // namespace weir::bench
