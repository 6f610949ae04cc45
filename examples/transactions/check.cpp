// transactions_check: recomputes the founding example by brute force from transactions.csv
// (hourly count, total and average amount per merchant, after dropping damaged rows, negative
// amounts and repeated transaction ids) and compares it with the report's csv output.
//
//   transactions_check TRANSACTIONS.csv REPORT.csv

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../common/timefmt.hpp"

namespace {

struct hour_total {
  long count = 0;
  double total = 0;
  bool seen = false;
};

/// The fields of a csv line without quoting (the sample has none).
std::vector<std::string> split(const std::string& l) {
  std::vector<std::string> out(1);
  for (char c : l)
    if (c == ',')
      out.emplace_back();
    else
      out.back() += c;
  return out;
}

bool number(const std::string& s, double& v) {
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: transactions_check TRANSACTIONS.csv REPORT.csv\n");
    return 2;
  }
  const int64_t hour = 3600000000LL;
  std::map<std::pair<std::string, int64_t>, hour_total> expected;
  std::set<std::string> ids;
  std::ifstream in(argv[1]);
  std::string l;
  std::getline(in, l); // tx_id,ts,merchant,amount,currency
  long accepted = 0;
  while (std::getline(in, l)) {
    auto f = split(l);
    double amount;
    if (f.size() != 5 || f[0].empty() || f[2].empty() || !number(f[3], amount) || amount < 0)
      continue;
    auto t = weir_examples::parse_iso(f[1]);
    int h, m, s;
    if (t < 0 || std::sscanf(f[1].c_str() + 11, "%d:%d:%d", &h, &m, &s) != 3 || h > 23)
      continue; // not a time (2024-06-01T25:00:00Z is refused, not wrapped)
    if (!ids.insert(f[0]).second)
      continue; // the same transaction again
    ++accepted;
    auto& x = expected[std::make_pair(f[2], t - t % hour)];
    ++x.count;
    x.total += amount;
  }
  std::ifstream report(argv[2]);
  std::getline(report, l); // merchant,hour,transactions,total,average
  long rows = 0, bad = 0;
  while (std::getline(report, l)) {
    ++rows;
    char merchant[32], start[32];
    long count;
    double total, average;
    if (std::sscanf(l.c_str(), "%31[^,],%31[^,],%ld,%lf,%lf", merchant, start, &count, &total,
                    &average) != 5) {
      std::printf("damaged report line: %s\n", l.c_str());
      ++bad;
      continue;
    }
    auto e = expected.find(std::make_pair(std::string{merchant}, weir_examples::parse_iso(start)));
    if (e == expected.end() || e->second.seen) {
      std::printf("%s report line: %s\n", e == expected.end() ? "unexpected" : "repeated",
                  l.c_str());
      ++bad;
      continue;
    }
    e->second.seen = true;
    const auto& x = e->second;
    double avg = x.total / static_cast<double>(x.count);
    if (x.count != count || std::fabs(x.total - total) > 1e-6 * std::max(1.0, x.total) ||
        std::fabs(avg - average) > 1e-6 * std::max(1.0, avg)) {
      std::printf("%s: expected %ld transactions, total %.2f, average %.4f\n", l.c_str(), x.count,
                  x.total, avg);
      ++bad;
    }
  }
  for (const auto& [k, x] : expected)
    if (!x.seen) {
      std::printf("missing: %s %s\n", k.first.c_str(), weir_examples::iso(k.second).c_str());
      ++bad;
    }
  if (bad != 0) {
    std::printf("FAIL: %ld differences\n", bad);
    return 1;
  }
  std::printf("PASS: %ld merchant-hours equal to a brute-force total over %ld accepted "
              "transactions\n",
              rows, accepted);
  return 0;
}
