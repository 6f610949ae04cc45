// The risk example's plugin: a sink that keeps, per key, the last `history` values of one
// aggregate (its rolling baseline) and writes an alert when a window's value is more than `z`
// standard deviations away from the baseline's mean. The baselines are the sink's state: they
// are recorded with the alerts of each epoch, in one step (examples/common/exact_file.hpp), so
// that a redelivered epoch neither alerts twice nor counts twice in a baseline.
//
//   [[pipeline.sink]]
//   kind = "zscore_alerts"
//   options = { aggregate = "total", history = 24, min_history = 12, z = 4.0,
//               file = "alerts.csv" }
//
// alerts.csv: key,window start,value,baseline mean,z-score.

#include <actors/core/extension.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "../common/epoch_rows.hpp"
#include "../common/exact_file.hpp"
#include "../common/timefmt.hpp"

namespace {

using baselines = std::map<std::string, std::deque<double>>;

std::string encode(const baselines& b) {
  std::string out;
  char num[40];
  for (const auto& [key, xs] : b) {
    out += key;
    for (double x : xs) {
      std::snprintf(num, sizeof num, " %.17g", x);
      out += num;
    }
    out += '\n';
  }
  return out;
}

baselines decode(const std::string& text) {
  baselines b;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string key;
    l >> key;
    double x;
    while (l >> x)
      b[key].push_back(x);
  }
  return b;
}

class zscore_alerts final : public weir::sink {
public:
  explicit zscore_alerts(const weir::extension_options& o)
    : aggregate_(o.text("aggregate")), history_(static_cast<size_t>(o.number("history", 24))),
      min_history_(static_cast<size_t>(o.number("min_history", 12))), z_(o.number("z", 4.0)),
      out_(o.text("file", "alerts.csv")), baselines_(decode(out_.state())) {
    o.allow_only({"aggregate", "history", "min_history", "z", "file"});
    if (aggregate_.empty())
      throw weir::extension_error("options.aggregate: name the aggregate to watch");
    if (min_history_ < 2 || min_history_ > history_)
      throw weir::extension_error("options.min_history: must be at least 2 and at most history");
    if (!(z_ > 0))
      throw weir::extension_error("options.z: must be greater than zero");
  }

  void deliver(const weir::committed_epoch& e) override {
    if (e.epoch <= out_.last_epoch())
      return; // delivered again after a restart: applied already
    const size_t i = weir_examples::aggregate_column(e, aggregate_);
    auto next = baselines_; // applied only once the epoch is recorded
    std::string lines;
    for (const auto& r : e.rows) {
      auto& h = next[r.key];
      double x = r.values[i];
      if (h.size() >= min_history_) {
        double mean = 0, var = 0;
        for (double v : h)
          mean += v;
        mean /= static_cast<double>(h.size());
        for (double v : h)
          var += (v - mean) * (v - mean);
        double sd = std::sqrt(var / static_cast<double>(h.size() - 1));
        double z = sd > 0 ? (x - mean) / sd : 0;
        if (std::fabs(z) > z_) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ",%.2f,%.2f,%.3f\n", x, mean, z);
          lines += r.key + "," + weir_examples::iso(r.start) + buf;
        }
      }
      h.push_back(x);
      if (h.size() > history_)
        h.pop_front();
    }
    out_.apply(e.epoch, lines, encode(next));
    baselines_ = std::move(next);
  }

private:
  std::string aggregate_;
  size_t history_, min_history_;
  double z_;
  weir_examples::exact_file out_;
  baselines baselines_;
};

} // namespace

WEIR_PLUGIN(registry) {
  registry.add_sink("zscore_alerts", [](const weir::extension_options& o, const std::string&) {
    return std::make_unique<zscore_alerts>(o);
  });
}
