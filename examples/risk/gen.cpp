// risk_gen: writes card transactions as csv (tx_id,ts,merchant,amount): each merchant has its
// own hourly rhythm (busier by day), and now and then an hour with several times its usual
// volume (the anomalies the example should flag). A few records are sent twice (deduplicated by
// Weir) and a few are damaged (dead letters). Rows come in arrival order, up to 20 s out of
// event-time order.
//
//   risk_gen OUT.csv [DAYS] [MERCHANTS] [PER_HOUR] [SEED]

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../common/timefmt.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: risk_gen OUT.csv [DAYS] [MERCHANTS] [PER_HOUR] [SEED]\n");
    return 2;
  }
  const int days = argc > 2 ? std::stoi(argv[2]) : 7;
  const int merchants = argc > 3 ? std::stoi(argv[3]) : 20;
  const double per_hour = argc > 4 ? std::stod(argv[4]) : 12;
  std::mt19937_64 rng(argc > 5 ? std::stoull(argv[5]) : 7);
  const int64_t start = weir_examples::parse_iso("2026-11-01T00:00:00Z"), hour = 3600000000LL;
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_int_distribution<int64_t> in_hour(0, hour - 1), jitter(0, 20000000);
  struct row {
    int64_t arrival;
    std::string text;
  };
  std::vector<row> rows;
  long id = 0;
  char buf[160];
  for (int m = 0; m < merchants; ++m) {
    std::snprintf(buf, sizeof buf, "m%03d", m);
    std::string merchant = buf;
    double scale = 20 + 80 * unit(rng); // the merchant's typical ticket
    for (int64_t h = 0; h < int64_t{days} * 24; ++h) {
      double day = 0.6 + 0.4 * std::sin(static_cast<double>(h % 24) / 24 * 2 * M_PI);
      double spike = unit(rng) < 0.004 ? 5 + 5 * unit(rng) : 1; // an anomalous hour
      std::poisson_distribution<int> count(per_hour * day * spike);
      std::lognormal_distribution<double> amount(std::log(scale), 0.4);
      for (int n = count(rng); n > 0; --n) {
        int64_t t = start + h * hour + in_hour(rng) / 1000000 * 1000000;
        std::snprintf(buf, sizeof buf, "tx%ld,%s,%s,%.2f", id++, weir_examples::iso(t).c_str(),
                      merchant.c_str(), amount(rng));
        rows.push_back({t + jitter(rng), buf});
        if (unit(rng) < 0.001) // a retried submission: the same transaction again
          rows.push_back({t + jitter(rng) + 1, buf});
      }
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const row& a, const row& b) { return a.arrival < b.arrival; });
  rows.insert(rows.begin() + static_cast<long>(rows.size() / 2), {0, "tx_bad,2026-11-01"});
  rows.insert(rows.begin() + static_cast<long>(rows.size() / 3),
              {0, "tx_neg,2026-11-01T05:00:00Z,m000,-10.00"});
  std::FILE* f = std::fopen(argv[1], "w");
  if (f == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  std::fprintf(f, "tx_id,ts,merchant,amount\n");
  for (const auto& r : rows)
    std::fprintf(f, "%s\n", r.text.c_str());
  std::fclose(f);
  std::printf("%zu transactions written to %s\n", rows.size(), argv[1]);
  return 0;
}
