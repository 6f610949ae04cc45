// A plugin for tests/core_extension_test.cpp: registers one extension of each kind under a
// "probe_" name, and refuses an option to show how a factory's refusal reaches the config.
#include <actors/core/extension.hpp>

#include <limits>

namespace {

struct probe_sum {
  struct state {
    double sum;
  };
  explicit probe_sum(const weir::extension_options& o) { o.allow_only({}); }
  state init() const { return {0}; }
  void add(state& s, double v, weir::timestamp) const { s.sum += v; }
  void merge(state& a, const state& b) const { a.sum += b.sum; }
  double result(const state& s) const { return s.sum; }
};

struct probe_stage final : weir::stage {
  void process(weir::stage_batch&) override {}
};

struct probe_sink final : weir::sink {
  void deliver(const weir::committed_epoch&) override {}
};

} // namespace

WEIR_PLUGIN(r) {
  r.add_aggregate("probe_sum", [](const weir::extension_options& o) {
    return std::make_shared<weir::aggregate_of<probe_sum>>(o);
  });
  r.add_stage("probe_stage", [](const weir::extension_options&, const weir::stage_context&) {
    return std::make_unique<probe_stage>();
  });
  r.add_sink("probe_sink", [](const weir::extension_options&, const std::string&) {
    return std::make_unique<probe_sink>();
  });
}
