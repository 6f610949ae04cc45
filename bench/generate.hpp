#pragma once

/// Generates transaction events as CSV: tx_id, ts (ISO-8601 UTC), merchant, amount, currency,
/// and optionally card. Shared by the example generator and the benchmark so both describe the
/// same workload. Seeded: the same workload always gives the same bytes, and the extras (late
/// records, the card column) draw random numbers only when they are on, so the default output
/// stays what it always was.

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
  double late_share = 0;          ///< share of events moved back by late_shift (0: none)
  int64_t late_shift = 2 * 86400; ///< seconds a late event is moved back: far behind watermark
  uint32_t cards = 0;             ///< distinct values of a `card` column (0: no such column)
};

/// Writes the digits of `v` (at least `width` of them, zero-padded) at `p`; returns the end.
inline char* put_uint(char* p, uint64_t v, int width = 1) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n < width)
    tmp[n++] = '0';
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

/// Formats event times as ISO-8601 UTC seconds. The date part is formatted once per day (the
/// times grow slowly), the time of day by arithmetic: a gmtime and a printf per event would
/// take most of the generation time.
class time_formatter {
public:
  /// Writes `t` as YYYY-MM-DDTHH:MM:SSZ at `p`; returns the end.
  char* put(char* p, int64_t t) {
    int64_t day = t / 86400 - (t % 86400 < 0 ? 1 : 0);
    if (day != day_ || date_len_ == 0)
      set_day(day);
    for (int i = 0; i < date_len_; ++i)
      *p++ = date_[i];
    int64_t s = t - day * 86400;
    p = put_uint(p, static_cast<uint64_t>(s / 3600), 2);
    *p++ = ':';
    p = put_uint(p, static_cast<uint64_t>(s / 60 % 60), 2);
    *p++ = ':';
    p = put_uint(p, static_cast<uint64_t>(s % 60), 2);
    *p++ = 'Z';
    return p;
  }

private:
  void set_day(int64_t day) {
    std::time_t tt = static_cast<std::time_t>(day * 86400);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    date_len_ = std::snprintf(date_, sizeof(date_), "%04d-%02d-%02dT", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday);
    day_ = day;
  }

  int64_t day_ = 0;
  int date_len_ = 0;
  char date_[48];
};

/// One generated event as the benchmark sees it (to compute what `weir run` must output).
struct event {
  int64_t time; ///< epoch seconds
  uint32_t key; ///< merchant number
};

/// Writes the events to `out` and calls on_event(event) for each. Event times grow evenly over
/// the span; a share of them is moved back by up to max_shift seconds (out of order, within the
/// usual out-of-orderness bound), and a share (late_share) by late_shift seconds more.
template <class OnEvent>
void generate(const workload& w, std::FILE* out, OnEvent&& on_event) {
  std::mt19937_64 rng(w.seed);
  std::uniform_int_distribution<uint32_t> key(0, w.keys - 1);
  std::lognormal_distribution<double> amount(3.0, 1.0);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::uniform_int_distribution<int64_t> shift(1, w.max_shift);
  std::uniform_int_distribution<uint32_t> card(0, w.cards == 0 ? 0 : w.cards - 1);
  static const char* currencies[] = {"EUR", "USD", "GBP"};
  std::fputs(w.cards > 0 ? "tx_id,ts,merchant,amount,currency,card\n"
                         : "tx_id,ts,merchant,amount,currency\n",
             out);
  time_formatter times;
  std::string buf;
  buf.resize(1 << 16);
  size_t used = 0;
  for (uint64_t i = 0; i < w.events; ++i) {
    int64_t t = w.start + static_cast<int64_t>((static_cast<double>(i) / w.events) * w.span);
    if (coin(rng) < w.disorder)
      t -= shift(rng);
    uint32_t k = key(rng);
    // round(a * 100) / 100 printed with %.2f is exactly these cents.
    const auto cents = static_cast<uint64_t>(std::llround(amount(rng) * 100.0));
    if (w.late_share > 0 && coin(rng) < w.late_share)
      t -= w.late_shift;
    if (used + 160 > buf.size()) {
      std::fwrite(buf.data(), 1, used, out);
      used = 0;
    }
    char* p = buf.data() + used;
    *p++ = 't';
    *p++ = 'x';
    p = put_uint(p, i);
    *p++ = ',';
    p = times.put(p, t);
    *p++ = ',';
    *p++ = 'm';
    p = put_uint(p, k, 3);
    *p++ = ',';
    p = put_uint(p, cents / 100);
    *p++ = '.';
    p = put_uint(p, cents % 100, 2);
    *p++ = ',';
    for (const char* c = currencies[k % 3]; *c; ++c)
      *p++ = *c;
    if (w.cards > 0) {
      *p++ = ',';
      *p++ = 'c';
      p = put_uint(p, card(rng));
    }
    *p++ = '\n';
    used = static_cast<size_t>(p - buf.data());
    on_event(event{t, k});
  }
  std::fwrite(buf.data(), 1, used, out);
}

/// Writes the events to `out`.
inline void generate(const workload& w, std::FILE* out) {
  generate(w, out, [](const event&) {});
}

} // namespace weir::bench
