// sensors_gen: writes temperature readings of 16 devices over two days as csv
// (device,ts,temperature; ts in epoch milliseconds). A device reports every 10 to 90 s while it
// is active and goes quiet for 10 to 60 minutes between active spells. Readings arrive up to
// 20 s out of order; one in 200 arrives 10 to 30 minutes late.
//
//   sensors_gen OUT.csv [DEVICES] [HOURS] [SEED]

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: sensors_gen OUT.csv [DEVICES] [HOURS] [SEED]\n");
    return 2;
  }
  const int devices = argc > 2 ? std::stoi(argv[2]) : 16;
  const int64_t hours = argc > 3 ? std::stoll(argv[3]) : 48;
  std::mt19937_64 rng(argc > 4 ? std::stoull(argv[4]) : 3);
  const int64_t start = 1795996800000; // 2026-11-30T00:00:00Z, in ms
  const int64_t end = start + hours * 3600000;
  // Event times are whole seconds; arrival order is finer.
  std::uniform_int_distribution<int64_t> step(10, 90), idle(600, 3600), spell(300, 7200),
    jitter(0, 20000), delay(600000, 1800000);
  std::uniform_int_distribution<int> late(0, 199);
  std::normal_distribution<double> drift(0, 0.2);
  struct row {
    int64_t arrival;
    std::string text;
  };
  std::vector<row> rows;
  char buf[96];
  for (int d = 0; d < devices; ++d) {
    double temp = 18 + d % 7;
    int64_t t = start + idle(rng) / 4 * 1000;
    while (t < end) {
      int64_t spell_end = t + spell(rng) * 1000;
      for (; t < spell_end && t < end; t += step(rng) * 1000) {
        temp += drift(rng);
        std::snprintf(buf, sizeof buf, "d%02d,%lld,%.3f", d, static_cast<long long>(t), temp);
        int64_t arrival = t + jitter(rng) + (late(rng) == 0 ? delay(rng) : 0);
        rows.push_back({arrival, buf});
      }
      t += idle(rng) * 1000;
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const row& a, const row& b) { return a.arrival < b.arrival; });
  std::FILE* f = std::fopen(argv[1], "w");
  if (f == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  std::fprintf(f, "device,ts,temperature\n");
  for (const auto& r : rows)
    std::fprintf(f, "%s\n", r.text.c_str());
  std::fclose(f);
  std::printf("%zu readings written to %s\n", rows.size(), argv[1]);
  return 0;
}
