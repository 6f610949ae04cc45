// sensors_check: recomputes the sensors example's sessions by brute force, reading the readings
// in arrival order the way Weir's event time works (docs/architecture.md): the watermark is the
// newest time seen minus 30 s; a session [first, last + 5m) fires when the watermark reaches
// its end + 1 min; a reading whose own session would already have fired is late (dead letter);
// a reading joins the open sessions of its device it touches, merging them. Then compares the
// sessions, their counts, means and time-decayed means with Weir's (`weir query --format csv`).
//
//   sensors_check READINGS.csv RESULTS.csv

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "../common/timefmt.hpp"

namespace {

const int64_t gap = 300000000, lateness = 60000000, ooo = 30000000; // microseconds
const double half_life = 120;                                        // seconds

struct session {
  int64_t start, end;
  std::vector<std::pair<int64_t, double>> readings;
};

struct result {
  long count;
  double mean, recent;
};

result summarize(const session& s) {
  double sum = 0, newest = -1e300;
  for (const auto& [t, v] : s.readings) {
    sum += v;
    newest = std::max(newest, static_cast<double>(t) / 1e6);
  }
  double w = 0, wx = 0;
  for (const auto& [t, v] : s.readings) {
    double x = std::exp2((static_cast<double>(t) / 1e6 - newest) / half_life);
    w += x;
    wx += x * v;
  }
  return {static_cast<long>(s.readings.size()), sum / static_cast<double>(s.readings.size()),
          wx / w};
}

bool close(double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b)); }

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: sensors_check READINGS.csv RESULTS.csv\n");
    return 2;
  }
  using key = std::tuple<std::string, int64_t, int64_t>;
  std::map<key, result> expected;
  std::map<std::string, std::vector<session>> open;
  auto fire = [&](int64_t watermark) {
    for (auto& [device, list] : open)
      for (size_t i = 0; i < list.size();)
        if (list[i].end + lateness <= watermark) {
          expected[{device, list[i].start, list[i].end}] = summarize(list[i]);
          list.erase(list.begin() + static_cast<long>(i));
        } else {
          ++i;
        }
  };
  std::ifstream in(argv[1]);
  std::string l;
  std::getline(in, l);
  int64_t newest = std::numeric_limits<int64_t>::min();
  long readings = 0, late = 0;
  while (std::getline(in, l)) {
    char device[16];
    long long ms;
    double v;
    if (std::sscanf(l.c_str(), "%15[^,],%lld,%lf", device, &ms, &v) != 3)
      continue;
    ++readings;
    int64_t t = ms * 1000;
    int64_t w = newest == std::numeric_limits<int64_t>::min() ? newest : newest - ooo;
    fire(w);
    newest = std::max(newest, t);
    if (w >= t + gap + lateness) {
      ++late;
      continue;
    }
    session joined{t, t + gap, {{t, v}}};
    auto& list = open[device];
    for (size_t i = 0; i < list.size();)
      if (t <= list[i].end && list[i].start <= t + gap) {
        joined.start = std::min(joined.start, list[i].start);
        joined.end = std::max(joined.end, list[i].end);
        joined.readings.insert(joined.readings.end(), list[i].readings.begin(),
                               list[i].readings.end());
        list.erase(list.begin() + static_cast<long>(i));
      } else {
        ++i;
      }
    list.push_back(std::move(joined));
  }
  fire(std::numeric_limits<int64_t>::max()); // the end of the input fires every session
  std::ifstream res(argv[2]);
  std::getline(res, l); // window_start,window_end,key,readings,mean,recent,version
  long rows = 0, bad = 0;
  while (std::getline(res, l)) {
    ++rows;
    char from[32], to[32], device[16];
    long count;
    double mean, recent;
    if (std::sscanf(l.c_str(), "%31[^,],%31[^,],%15[^,],%ld,%lf,%lf", from, to, device, &count,
                    &mean, &recent) != 6) {
      std::printf("damaged result line: %s\n", l.c_str());
      ++bad;
      continue;
    }
    auto match = expected.find(
      {device, weir_examples::parse_iso(from), weir_examples::parse_iso(to)});
    if (match == expected.end()) {
      std::printf("unexpected session: %s\n", l.c_str());
      ++bad;
      continue;
    }
    const auto& e = match->second;
    if (e.count != count || !close(mean, e.mean) || !close(recent, e.recent)) {
      std::printf("session %s: expected %ld readings, mean %.12g, recent %.12g\n", l.c_str(),
                  e.count, e.mean, e.recent);
      ++bad;
    }
    expected.erase(match);
  }
  for (const auto& [k, e] : expected) {
    std::printf("missing session: %s %s\n", std::get<0>(k).c_str(),
                weir_examples::iso(std::get<1>(k)).c_str());
    ++bad;
  }
  if (bad != 0) {
    std::printf("FAIL: %ld differences\n", bad);
    return 1;
  }
  std::printf("PASS: %ld sessions equal to a brute-force sessionization of %ld readings (%ld "
              "late, in the dead letters)\n",
              rows, readings, late);
  return 0;
}
