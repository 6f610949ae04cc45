#pragma once

/// Weir's extension points: user code that a pipeline config names, registered by name.
///
/// - an aggregate function ([[pipeline.aggregate]] fn = "NAME"): init, add, merge, result and
///   serialize over a fixed-size accumulator, so that it works with slices, sessions,
///   checkpoints and partitions on other nodes like the built-in ones;
/// - a stage ([[pipeline.stage]] kind = "NAME"): sees each batch of accepted events after
///   preprocess and before the window aggregators; it can drop records, rewrite their values and
///   fill fields of its own;
/// - a sink ([[pipeline.sink]] kind = "NAME"): receives the results of each committed epoch, in
///   epoch order, at least once, with the epoch number to deduplicate by: exactly once for a
///   sink that records the last epoch it applied together with what it applied.
///
/// Each takes its `options = { ... }` table from the config. A factory checks them and throws
/// extension_error to refuse them; the config then fails to load, naming file, line and key.
///
/// Registration: a program on the weir library calls register_aggregate / register_stage /
/// register_sink before it loads its config. The `weir` command loads shared objects named by
/// the config's `plugins = ["libmine.so"]` (relative to the config file), each exporting
///
///     WEIR_PLUGIN(registry) { registry.add_aggregate("ewma", ...); }
///
/// docs/guide.md walks through writing each of them.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/error.hpp>

#include "actors/core/types.hpp"

namespace weir {

/// A factory's refusal of its options (or anything else it cannot work with): the config load
/// fails with this message, at the place of the extension in the config.
struct extension_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The `options = { ... }` table of an extension in the config, as key -> value text (strings
/// as written, numbers and booleans in TOML form). Typed getters throw extension_error naming
/// the key.
class extension_options {
public:
  extension_options() = default;
  explicit extension_options(std::vector<std::pair<std::string, std::string>> values)
    : values_(std::move(values)) {}

  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }
  bool has(std::string_view key) const { return find(key) != nullptr; }
  /// The text of `key`, or `fallback` when it is missing.
  std::string text(std::string_view key, std::string fallback = {}) const;
  /// The number of `key` (`fallback` when missing); extension_error when it is not a number.
  double number(std::string_view key, double fallback) const;
  /// A duration of `key` in microseconds ("250ms", "5s", "2m", "1h", "1d", or milliseconds as
  /// a number); extension_error when it is not one.
  int64_t duration(std::string_view key, int64_t fallback) const;
  /// true/false of `key`; extension_error when it is neither.
  bool flag(std::string_view key, bool fallback) const;
  /// extension_error unless every key is one of `allowed` (a misspelled option is an error).
  void allow_only(std::initializer_list<const char*> allowed) const;
  /// Canonical text of all options (sorted), part of the pipeline's definition: a run whose
  /// options changed is a different pipeline for its stored state.
  std::string canonical() const;

private:
  const std::string* find(std::string_view key) const;
  std::vector<std::pair<std::string, std::string>> values_;
};

// -- aggregate functions -----------------------------------------------------------------------

/// A user aggregate. Its accumulator is `state_size()` bytes that Weir keeps for each slice
/// (tumbling, sliding) or session of each key, pooled, without allocating per record. The
/// object is shared by every partition and thread: its functions must not change it.
///
/// - init: a fresh accumulator (the memory is not initialized before);
/// - add: one record's value (never NaN: records without the field are skipped) at its event
///   time;
/// - merge: `other` into `into`, for windows made of several slices (combined in start order)
///   and sessions that merge; `other` is then dropped;
/// - result: the window's value (NaN when nothing was added, by convention);
/// - serialize / deserialize: the accumulator as stored in checkpoints and sent between nodes;
///   deserialize returns false on bytes it cannot read (the state is then corrupt).
class aggregate_function {
public:
  virtual ~aggregate_function() = default;
  virtual size_t state_size() const = 0;
  virtual void init(void* state) const = 0;
  virtual void add(void* state, double value, timestamp time) const = 0;
  virtual void merge(void* into, const void* other) const = 0;
  virtual double result(const void* state) const = 0;
  virtual void serialize(const void* state, std::string& out) const = 0;
  virtual bool deserialize(std::string_view in, void* state) const = 0;
};

/// The most bytes an accumulator may have.
constexpr size_t max_aggregate_state = 256;

/// An aggregate_function from a class with a trivially copyable `state` type:
///
///     struct ewma {
///       struct state { double weight, weighted; };
///       explicit ewma(const extension_options& o);
///       state init() const;
///       void add(state& s, double value, timestamp time) const;
///       void merge(state& into, const state& other) const;
///       double result(const state& s) const;
///     };
///
/// Its state is serialized as its bytes (little-endian machines of one build: the cluster's
/// nodes run the same build).
template <class Impl>
class aggregate_of final : public aggregate_function {
public:
  using state = typename Impl::state;
  static_assert(std::is_trivially_copyable_v<state>, "an aggregate's state must be trivially "
                                                     "copyable (plain numbers, no pointers)");
  static_assert(sizeof(state) <= max_aggregate_state, "an aggregate's state is too large");

  template <class... Ts>
  explicit aggregate_of(Ts&&... xs) : impl_(std::forward<Ts>(xs)...) {}

  size_t state_size() const override { return sizeof(state); }
  void init(void* s) const override { new (s) state(impl_.init()); }
  void add(void* s, double value, timestamp time) const override {
    impl_.add(*static_cast<state*>(s), value, time);
  }
  void merge(void* into, const void* other) const override {
    impl_.merge(*static_cast<state*>(into), *static_cast<const state*>(other));
  }
  double result(const void* s) const override { return impl_.result(*static_cast<const state*>(s)); }
  void serialize(const void* s, std::string& out) const override {
    out.append(static_cast<const char*>(s), sizeof(state));
  }
  bool deserialize(std::string_view in, void* s) const override {
    if (in.size() != sizeof(state))
      return false;
    std::memcpy(s, in.data(), sizeof(state));
    return true;
  }
  const Impl& impl() const { return impl_; }

private:
  Impl impl_;
};

// -- stages ------------------------------------------------------------------------------------

/// What a stage knows of its pipeline when it is made: the numeric fields a batch carries (the
/// measures, derived fields and the outputs of stages), by name.
struct stage_context {
  std::string pipeline;
  std::vector<std::string> fields; ///< the numeric fields of a batch, in column order
  /// The column of numeric field `name`, or -1.
  int column(std::string_view name) const {
    for (size_t i = 0; i < fields.size(); ++i)
      if (fields[i] == name)
        return static_cast<int>(i);
    return -1;
  }
};

/// One batch of accepted events of one key partition, in source order, as a stage sees it.
/// Weir implements it over its event columns; a stage only reads and changes it through this.
class stage_batch {
public:
  virtual ~stage_batch() = default;
  virtual size_t size() const = 0;
  virtual std::string_view key(size_t r) const = 0; ///< the record's key (fields joined)
  virtual timestamp time(size_t r) const = 0;       ///< its event time
  /// Numeric field `column` (stage_context::column) of record r; NaN when the record lacks it.
  virtual double value(size_t r, int column) const = 0;
  virtual void set_value(size_t r, int column, double v) = 0;
  /// Drops record r: no aggregate sees it (counted as filtered by the stage).
  virtual void drop(size_t r) = 0;
  virtual bool dropped(size_t r) const = 0;
};

/// A user stage. Weir makes one per key partition of a pipeline and calls it from that
/// partition's preprocessing, in order; it may keep state in memory, but that state is not
/// checkpointed: after a restart, records are replayed from the last commit through a new
/// stage, so a stage whose output depends only on the records it saw since the last commit, or
/// on nothing but each record, stays exactly-once.
class stage {
public:
  virtual ~stage() = default;
  virtual void process(stage_batch& batch) = 0;
};

// -- sinks -------------------------------------------------------------------------------------

/// The results one epoch committed for one pipeline: new windows, and re-committed windows
/// (late = update) with a higher version.
struct committed_epoch {
  std::string pipeline;
  uint64_t epoch = 0;
  std::string window;                  ///< e.g. "tumbling 1h"
  std::vector<std::string> aggregates; ///< column names, in order
  std::vector<window_result> rows;     ///< ordered by (start, end, key)
};

/// A user sink. Weir calls deliver for every committed epoch of its pipeline, in epoch order,
/// from one thread at a time (an actor of its own). When deliver returns, Weir records the
/// epoch as delivered; when it throws, Weir retries it with backoff. After a crash, delivery
/// resumes after the last recorded epoch, so an epoch may come a second time: a sink that keeps
/// the last epoch it applied next to what it applied (in one file rename, one database
/// transaction) and skips epochs at or below it is exactly once.
class sink {
public:
  virtual ~sink() = default;
  virtual void deliver(const committed_epoch& e) = 0;
};

// -- registration ------------------------------------------------------------------------------

/// Where the config looks up extension names. One per process (extension_registry::global());
/// a plugin gets it passed in.
class extension_registry {
public:
  using aggregate_factory =
    std::function<std::shared_ptr<const aggregate_function>(const extension_options&)>;
  using stage_factory =
    std::function<std::unique_ptr<stage>(const extension_options&, const stage_context&)>;
  using sink_factory = std::function<std::unique_ptr<sink>(const extension_options&,
                                                           const std::string& pipeline)>;

  virtual ~extension_registry() = default;

  /// Registers (or replaces) an extension. Names match [A-Za-z0-9_.-]+; an aggregate may not
  /// take the name of a built-in one (count, sum, avg, min, max, distinct, quantile).
  /// std::invalid_argument otherwise.
  virtual void add_aggregate(const std::string& name, aggregate_factory f) = 0;
  virtual void add_stage(const std::string& name, stage_factory f) = 0;
  virtual void add_sink(const std::string& name, sink_factory f) = 0;

  /// The factory registered under `name`, or nullptr.
  virtual const aggregate_factory* aggregate(std::string_view name) const = 0;
  virtual const stage_factory* stage_kind(std::string_view name) const = 0;
  virtual const sink_factory* sink_kind(std::string_view name) const = 0;
  /// The registered names, sorted (for messages).
  virtual std::vector<std::string> names(std::string_view what) const = 0;

  static extension_registry& global();
};

/// Shorthands for the global registry.
inline void register_aggregate(const std::string& name,
                               extension_registry::aggregate_factory f) {
  extension_registry::global().add_aggregate(name, std::move(f));
}
inline void register_stage(const std::string& name, extension_registry::stage_factory f) {
  extension_registry::global().add_stage(name, std::move(f));
}
inline void register_sink(const std::string& name, extension_registry::sink_factory f) {
  extension_registry::global().add_sink(name, std::move(f));
}

/// Loads the plugin at `path` (a shared object exporting WEIR_PLUGIN) into the global registry,
/// once per path. errc::bad_input naming the path when it cannot be loaded or exports nothing.
caf::error load_plugin(const std::string& path);

/// The version of this header's interfaces; a plugin built against another is refused.
constexpr uint32_t extension_abi = 1;

} // namespace weir

/// Defines the entry point of a plugin: `WEIR_PLUGIN(r) { r.add_aggregate(...); }`.
#define WEIR_PLUGIN(registry)                                                                     \
  extern "C" uint32_t weir_plugin_abi() { return ::weir::extension_abi; }                         \
  extern "C" void weir_plugin_register(::weir::extension_registry& registry)
