// The security example's plugin:
//
// - a stage, "allowlist", that drops the records of keys starting with one of the prefixes in
//   its options (here: the addresses of the office network, whose scanner tries logins on
//   purpose), before any window counts them:
//
//   [[pipeline.stage]]
//   kind = "allowlist"
//   options = { prefixes = "10.0.0.,10.0.1." }
//
// - a sink, "threshold_alerts", that writes an alert line for every window whose aggregate is
//   above a threshold, exactly once (examples/common/exact_file.hpp):
//
//   [[pipeline.sink]]
//   kind = "threshold_alerts"
//   options = { aggregate = "failures", above = 20, file = "alerts.csv" }
//
// alerts.csv: key,window start,window end,value (times in ISO 8601 UTC), in commit order.

#include <actors/core/extension.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../common/epoch_rows.hpp"
#include "../common/exact_file.hpp"
#include "../common/timefmt.hpp"

namespace {

class allowlist final : public weir::stage {
public:
  explicit allowlist(const weir::extension_options& o) {
    o.allow_only({"prefixes"});
    std::string all = o.text("prefixes");
    for (size_t at = 0; at <= all.size();) {
      auto comma = std::min(all.find(',', at), all.size());
      if (comma > at)
        prefixes_.push_back(all.substr(at, comma - at));
      at = comma + 1;
    }
    if (prefixes_.empty())
      throw weir::extension_error("options.prefixes: give the key prefixes to drop, "
                                  "separated by commas");
  }

  void process(weir::stage_batch& batch) override {
    for (size_t r = 0; r < batch.size(); ++r) {
      auto key = batch.key(r);
      for (const auto& p : prefixes_)
        if (key.substr(0, p.size()) == p) {
          batch.drop(r);
          break;
        }
    }
  }

private:
  std::vector<std::string> prefixes_;
};

class threshold_alerts final : public weir::sink {
public:
  explicit threshold_alerts(const weir::extension_options& o)
    : aggregate_(o.text("aggregate")), above_(o.number("above", 0)),
      out_(o.text("file", "alerts.csv")) {
    o.allow_only({"aggregate", "above", "file"});
    if (aggregate_.empty())
      throw weir::extension_error("options.aggregate: name the aggregate to watch");
  }

  void deliver(const weir::committed_epoch& e) override {
    if (e.epoch <= out_.last_epoch())
      return; // delivered again after a restart: applied already
    const size_t i = weir_examples::aggregate_column(e, aggregate_);
    std::string lines;
    char value[64];
    for (const auto& r : e.rows)
      if (r.values[i] > above_) {
        std::snprintf(value, sizeof value, "%.17g", r.values[i]);
        lines += r.key + "," + weir_examples::iso(r.start) + "," + weir_examples::iso(r.end) +
                 "," + value + "\n";
      }
    out_.apply(e.epoch, lines, "");
  }

private:
  std::string aggregate_;
  double above_;
  weir_examples::exact_file out_;
};

} // namespace

WEIR_PLUGIN(registry) {
  registry.add_stage("allowlist",
                     [](const weir::extension_options& o, const weir::stage_context&) {
                       return std::make_unique<allowlist>(o);
                     });
  registry.add_sink("threshold_alerts",
                    [](const weir::extension_options& o, const std::string&) {
                      return std::make_unique<threshold_alerts>(o);
                    });
}
