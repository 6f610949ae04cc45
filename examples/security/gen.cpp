// security_gen: writes a web server's access log as ndjson, six hours of it: ordinary traffic
// from 200 addresses (some failed logins among it) and a few addresses that try passwords in
// bursts, among them the office's scanner. Lines come in arrival order, up to 15 s out of event-time order, and three of them are
// damaged (they go to Weir's dead letters).
//
//   security_gen OUT.ndjson [EVENTS] [SEED]

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../common/timefmt.hpp"

namespace {

struct line {
  int64_t arrival; // when the server wrote it (orders the file)
  std::string text;
};

std::string entry(int64_t t, const std::string& ip, const char* method, const char* path,
                  int status, int bytes) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"ts\":\"%s\",\"ip\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,"
                "\"bytes\":%d}",
                weir_examples::iso(t).c_str(), ip.c_str(), method, path, status, bytes);
  return buf;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: security_gen OUT.ndjson [EVENTS] [SEED]\n");
    return 2;
  }
  const long events = argc > 2 ? std::stol(argv[2]) : 200000;
  std::mt19937_64 rng(argc > 3 ? std::stoull(argv[3]) : 42);
  const int64_t start = weir_examples::parse_iso("2026-11-28T00:00:00Z");
  const int64_t span = int64_t{6} * 3600 * 1000000;
  std::uniform_int_distribution<int64_t> when(0, span - 1), jitter(0, 15 * 1000000);
  std::uniform_int_distribution<int> host(0, 199), pick(0, 99);
  static const char* paths[] = {"/", "/login", "/api/items", "/static/app.js"};
  std::vector<line> out;
  out.reserve(static_cast<size_t>(events) + 4096);
  for (long i = 0; i < events; ++i) {
    int64_t t = start + when(rng) / 1000000 * 1000000;
    auto ip = "10.0." + std::to_string(host(rng) / 50) + "." + std::to_string(host(rng));
    const char* path = paths[pick(rng) % 4];
    bool login = path[1] == 'l';
    int status = login ? (pick(rng) < 8 ? 401 : 200) : (pick(rng) < 3 ? 404 : 200);
    out.push_back({t + jitter(rng), entry(t, ip, login ? "POST" : "GET", path, status, 512)});
  }
  // Password guessing: bursts of failed logins, one every 5 to 25 seconds, from a few addresses.
  std::uniform_int_distribution<int64_t> gap(5, 25), burst_len(8, 25);
  // The last one is the office's own scanner (10.0.0.7), which the example's allowlist drops.
  for (int attacker = 0; attacker < 5; ++attacker) {
    auto ip = attacker == 4 ? std::string{"10.0.0.7"} : "203.0.113." + std::to_string(10 + attacker);
    for (int burst = 0; burst < 3; ++burst) {
      int64_t t = start + when(rng) / 1000000 * 1000000;
      int64_t end = t + burst_len(rng) * 60 * 1000000;
      for (; t < end && t < start + span; t += gap(rng) * 1000000)
        out.push_back({t + jitter(rng), entry(t, ip, "POST", "/login", 401, 128)});
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const line& a, const line& b) { return a.arrival < b.arrival; });
  // Damaged lines, as a crashed writer leaves them.
  out.insert(out.begin() + static_cast<long>(out.size() / 3), {0, "{\"ts\":\"2026-11-28T02:00"});
  out.insert(out.begin() + static_cast<long>(out.size() / 2), {0, "not json at all"});
  out.push_back({0, "{\"ts\":\"2026-11-28T05:59:59Z\",\"ip\":\"10.0.0.1\",\"status\":"});
  std::FILE* f = std::fopen(argv[1], "w");
  if (f == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  for (const auto& l : out)
    std::fprintf(f, "%s\n", l.text.c_str());
  std::fclose(f);
  std::printf("%zu lines written to %s\n", out.size(), argv[1]);
  return 0;
}
