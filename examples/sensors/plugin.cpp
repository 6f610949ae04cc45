// The sensors example's plugin: "ewma", a time-decayed mean. A reading at time t weighs
// 2^((t - last) / half_life), where `last` is the newest reading of the window: the newest
// counts fully, one half_life older counts half. The weights depend on times only, not on the
// order readings come in, so slices and merged sessions combine exactly: the accumulator keeps
// its sums relative to the newest time it has seen and rescales when a newer one comes.
//
//   [[pipeline.aggregate]]
//   fn = "ewma"
//   field = "temperature"
//   options = { half_life = "2m" }

#include <actors/core/extension.hpp>

#include <cmath>
#include <limits>
#include <memory>

namespace {

struct ewma {
  struct state {
    double newest; ///< seconds; the reference time of the sums
    double weights;
    double weighted;
  };

  explicit ewma(const weir::extension_options& o)
    : half_life_s(static_cast<double>(o.duration("half_life", 60 * int64_t{1000000})) / 1e6) {
    o.allow_only({"half_life"});
    if (!(half_life_s > 0))
      throw weir::extension_error("options.half_life: must be greater than zero");
  }

  state init() const { return {0, 0, 0}; }

  void add(state& s, double value, weir::timestamp time) const {
    merge(s, state{static_cast<double>(time) / 1e6, 1, value});
  }

  void merge(state& into, const state& other) const {
    if (other.weights == 0)
      return;
    if (into.weights == 0) {
      into = other;
      return;
    }
    // Both sums to the newer reference time: the older one's weights shrink.
    if (other.newest > into.newest) {
      double f = std::exp2((into.newest - other.newest) / half_life_s);
      into = {other.newest, into.weights * f + other.weights, into.weighted * f + other.weighted};
    } else {
      double f = std::exp2((other.newest - into.newest) / half_life_s);
      into.weights += other.weights * f;
      into.weighted += other.weighted * f;
    }
  }

  double result(const state& s) const {
    return s.weights > 0 ? s.weighted / s.weights : std::numeric_limits<double>::quiet_NaN();
  }

  double half_life_s;
};

} // namespace

WEIR_PLUGIN(registry) {
  registry.add_aggregate("ewma", [](const weir::extension_options& o) {
    return std::make_shared<weir::aggregate_of<ewma>>(o);
  });
}
