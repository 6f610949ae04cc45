#pragma once

/// Running pipelines inside a program's own CAF actor system, next to its own actors:
///
///     weir::actor_system_config cfg;          // or weir::configure(your_cfg)
///     caf::actor_system sys{cfg};
///     auto run = weir::start_pipelines(sys, *weir::load_config("weir.toml"));
///     (*run)->subscribe("p", my_actor);       // committed epochs from now on
///     ...
///     (*run)->stop();                         // a last commit, then the run ends
///     auto stats = (*run)->wait();
///
/// `weir run` is start_pipelines in a system of its own, then wait().

#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/core/extension.hpp"
#include "actors/runtime.hpp"

namespace weir {

/// Adds Weir's message types to a CAF system config; call it before the system is made.
void configure(caf::actor_system_config& cfg);

/// A CAF system config with Weir's message types.
struct actor_system_config : caf::actor_system_config {
  actor_system_config() { configure(*this); }
};

/// Where one pipeline of a run stands: what the store holds of its last committed epoch, and
/// the run's live meters.
struct pipeline_status {
  std::string pipeline;
  committed_status committed; ///< epoch (0: none yet), counters, watermark, rows written
  uint64_t records_read = 0;  ///< records preprocess read in this run
  uint64_t bytes_read = 0;    ///< bytes of the inputs read, committed offsets included
  uint64_t bytes_total = 0;   ///< the inputs' sizes (meaningless when !bounded)
  bool bounded = false;       ///< every input has an end
  uint32_t restarts = 0;      ///< restarts of the run so far
};

struct run_setup;

/// A run of pipelines started by start_pipelines. Its member functions may be called from any
/// thread but not from inside an actor of the same system while it blocks (wait).
class pipeline_run {
public:
  pipeline_run(caf::actor_system& sys, std::unique_ptr<run_setup> setup);
  /// Stops the run (as stop()) and waits for its end.
  ~pipeline_run();
  pipeline_run(const pipeline_run&) = delete;
  pipeline_run& operator=(const pipeline_run&) = delete;

  /// Asks for a clean stop: every pipeline commits a last epoch, the sinks get it, the run
  /// ends. Returns at once.
  void stop();
  /// Blocks until the run ends: what each pipeline did, or why the run failed. The same answer
  /// for every call.
  caf::expected<std::vector<run_stats>> wait();
  /// Per pipeline, in config order: its last committed epoch and counters, and live meters.
  caf::expected<std::vector<pipeline_status>> status() const;
  /// Delivers the committed epochs of `pipeline` from now on (after the last committed one) to
  /// `s`, as a configured sink is delivered (in order, retried when deliver throws), but
  /// without a cursor in the store. With `after`, delivery starts after that epoch instead (0:
  /// every epoch the change feed still holds, which for a new store is every epoch of the run,
  /// however soon it commits). errc::bad_input for an unknown pipeline, or one that keeps no
  /// change feed ([pipeline.results] change_feed = true, or a [[pipeline.sink]]) or a run
  /// without exactly-once.
  caf::error subscribe(const std::string& pipeline, std::shared_ptr<sink> s,
                       std::optional<uint64_t> after = std::nullopt);
  /// The same, each epoch sent to `a` as a weir::committed_epoch message.
  caf::error subscribe(const std::string& pipeline, caf::actor a,
                       std::optional<uint64_t> after = std::nullopt);

private:
  friend caf::expected<std::unique_ptr<pipeline_run>>
  start_prepared(caf::actor_system& sys, std::unique_ptr<run_setup> setup);

  caf::actor_system& sys_;
  std::unique_ptr<run_setup> setup_;
  weir_config cfg_; ///< with the run's mode applied
  std::shared_ptr<warehouse> wh_;
  std::shared_ptr<state_meters> meters_;
  supervisor_actor sup_;
  std::shared_ptr<std::promise<caf::expected<std::vector<run_stats>>>> promise_;
  std::shared_future<caf::expected<std::vector<run_stats>>> answer_;
  bool cluster_stopped_ = false;
};

/// Starts the pipelines of `cfg` in `sys` (made from a config that went through configure):
/// the same run as run_pipelines, with the same checks before anything runs. opts.threads is
/// the system's business here and ignored.
caf::expected<std::unique_ptr<pipeline_run>>
start_pipelines(caf::actor_system& sys, const weir_config& cfg, const run_options& opts = {});

/// Starts a prepared run in `sys` (run_pipelines and start_pipelines).
caf::expected<std::unique_ptr<pipeline_run>> start_prepared(caf::actor_system& sys,
                                                            std::unique_ptr<run_setup> setup);

} // namespace weir
