// security_check: recomputes the alerts of the security example by brute force from the access
// log (leaving out the addresses the allowlist drops) and compares them with the alerts file the
// sink wrote: every alert once, none missing.
//
//   security_check ACCESS.ndjson ALERTS.csv THRESHOLD [DROPPED_PREFIX]

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "../common/timefmt.hpp"

namespace {

/// The text of "name":"value" or "name":value in a flat JSON object, or "" when absent.
std::string field(const std::string& l, const std::string& name) {
  auto at = l.find("\"" + name + "\":");
  if (at == std::string::npos)
    return {};
  at += name.size() + 3;
  if (at < l.size() && l[at] == '"') {
    auto end = l.find('"', at + 1);
    return end == std::string::npos ? std::string{} : l.substr(at + 1, end - at - 1);
  }
  auto end = l.find_first_of(",}", at);
  return end == std::string::npos ? std::string{} : l.substr(at, end - at);
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: security_check ACCESS.ndjson ALERTS.csv THRESHOLD\n");
    return 2;
  }
  const double threshold = std::stod(argv[3]);
  const std::string dropped = argc > 4 ? argv[4] : "10.0.0.";
  const int64_t minute = 60 * int64_t{1000000}, size = 5 * minute;
  std::map<std::pair<std::string, int64_t>, long> counts; // (ip, window start) -> failures
  std::ifstream in(argv[1]);
  std::string l;
  long lines = 0;
  while (std::getline(in, l)) {
    ++lines;
    if (l.empty() || l.back() != '}')
      continue; // damaged: Weir dead-letters it
    auto t = weir_examples::parse_iso(field(l, "ts"));
    if (t < 0 || field(l, "path") != "/login" || field(l, "status") != "401" ||
        field(l, "ip").rfind(dropped, 0) == 0)
      continue;
    // Every window [s, s + 5m) with s a whole minute that holds t.
    int64_t last = t - t % minute;
    for (int64_t s = last; s > t - size; s -= minute)
      ++counts[{field(l, "ip"), s}];
  }
  std::set<std::tuple<std::string, std::string, std::string, long>> expected, got;
  for (const auto& [k, n] : counts)
    if (n > threshold)
      expected.insert({k.first, weir_examples::iso(k.second), weir_examples::iso(k.second + size),
                       n});
  std::ifstream alerts(argv[2]);
  long rows = 0;
  while (std::getline(alerts, l)) {
    ++rows;
    char ip[64], from[32], to[32];
    double v = 0;
    if (std::sscanf(l.c_str(), "%63[^,],%31[^,],%31[^,],%lf", ip, from, to, &v) != 4 ||
        std::floor(v) != v) {
      std::printf("FAIL: a damaged alert line: %s\n", l.c_str());
      return 1;
    }
    if (!got.insert({ip, from, to, static_cast<long>(v)}).second) {
      std::printf("FAIL: alert written twice: %s\n", l.c_str());
      return 1;
    }
  }
  if (got != expected) {
    for (const auto& e : expected)
      if (got.count(e) == 0)
        std::printf("missing: %s %s %ld\n", std::get<0>(e).c_str(), std::get<1>(e).c_str(),
                    std::get<3>(e));
    for (const auto& g : got)
      if (expected.count(g) == 0)
        std::printf("unexpected: %s %s %ld\n", std::get<0>(g).c_str(), std::get<1>(g).c_str(),
                    std::get<3>(g));
    std::printf("FAIL: %zu alerts written, %zu expected\n", got.size(), expected.size());
    return 1;
  }
  std::set<std::string> ips;
  for (const auto& e : expected)
    ips.insert(std::get<0>(e));
  std::printf("PASS: %ld alerts for %zu addresses, each once, equal to a brute-force count over "
              "%ld log lines\n",
              rows, ips.size(), lines);
  return 0;
}
