// risk_check: recomputes the risk example's alerts by brute force from the transactions
// (hourly totals per merchant after dropping repeated ids, negative amounts and damaged rows;
// z-scores against the previous 24 hourly totals) and compares them with the alerts file.
//
//   risk_check TRANSACTIONS.csv ALERTS.csv [HISTORY] [MIN_HISTORY] [Z]

#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../common/timefmt.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: risk_check TRANSACTIONS.csv ALERTS.csv [HISTORY] [MIN] [Z]\n");
    return 2;
  }
  const size_t history = argc > 3 ? std::stoul(argv[3]) : 24;
  const size_t min_history = argc > 4 ? std::stoul(argv[4]) : 12;
  const double zmax = argc > 5 ? std::stod(argv[5]) : 4.0;
  const int64_t hour = 3600000000LL;
  std::map<std::string, std::map<int64_t, double>> totals; // merchant -> hour -> total
  std::set<std::string> ids;
  std::ifstream in(argv[1]);
  std::string l;
  std::getline(in, l); // header
  long records = 0;
  while (std::getline(in, l)) {
    char id[64], ts[32], merchant[32];
    double amount;
    if (std::sscanf(l.c_str(), "%63[^,],%31[^,],%31[^,],%lf", id, ts, merchant, &amount) != 4)
      continue; // damaged
    auto t = weir_examples::parse_iso(ts);
    if (t < 0 || amount < 0 || !ids.insert(id).second)
      continue;
    ++records;
    totals[merchant][t - t % hour] += amount;
  }
  struct alert {
    double z;
    bool seen = false;
  };
  std::map<std::pair<std::string, std::string>, alert> expected;
  std::set<std::pair<std::string, std::string>> borderline; // |z| within 1e-6 of the limit
  for (const auto& [merchant, hours] : totals) {
    std::deque<double> h;
    for (const auto& [start, x] : hours) {
      if (h.size() >= min_history) {
        double mean = 0, var = 0;
        for (double v : h)
          mean += v;
        mean /= static_cast<double>(h.size());
        for (double v : h)
          var += (v - mean) * (v - mean);
        double sd = std::sqrt(var / static_cast<double>(h.size() - 1));
        double z = sd > 0 ? (x - mean) / sd : 0;
        std::pair<std::string, std::string> k{merchant, weir_examples::iso(start)};
        if (std::fabs(std::fabs(z) - zmax) < 1e-6)
          borderline.insert(k);
        else if (std::fabs(z) > zmax)
          expected[k] = {z};
      }
      h.push_back(x);
      if (h.size() > history)
        h.pop_front();
    }
  }
  std::ifstream alerts(argv[2]);
  long lines = 0, bad = 0;
  while (std::getline(alerts, l)) {
    ++lines;
    char merchant[32], start[32];
    double x, mean, z;
    if (std::sscanf(l.c_str(), "%31[^,],%31[^,],%lf,%lf,%lf", merchant, start, &x, &mean, &z) !=
        5) {
      std::printf("damaged alert line: %s\n", l.c_str());
      ++bad;
      continue;
    }
    std::pair<std::string, std::string> k{merchant, start};
    auto e = expected.find(k);
    if (e == expected.end()) {
      if (borderline.count(k) == 0) {
        std::printf("unexpected alert: %s\n", l.c_str());
        ++bad;
      }
    } else if (e->second.seen) {
      std::printf("alert written twice: %s\n", l.c_str());
      ++bad;
    } else if (std::fabs(e->second.z - z) > 0.0015) {
      std::printf("z-score %.3f, expected %.3f: %s\n", z, e->second.z, l.c_str());
      ++bad;
    } else {
      e->second.seen = true;
    }
  }
  for (const auto& [k, a] : expected)
    if (!a.seen) {
      std::printf("missing alert: %s %s (z %.3f)\n", k.first.c_str(), k.second.c_str(), a.z);
      ++bad;
    }
  if (bad != 0) {
    std::printf("FAIL: %ld wrong alert lines of %ld\n", bad, lines);
    return 1;
  }
  std::printf("PASS: %ld alerts for %zu merchants, each once, equal to a brute-force z-score over "
              "%ld transactions\n",
              lines, totals.size(), records);
  return 0;
}
