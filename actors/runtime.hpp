#pragma once

/// The library entry point that `weir run` uses: runs every pipeline of a config on this machine,
/// from its sources to committed window results, and returns what each pipeline did.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/core/preprocessor.hpp"
#include "actors/core/types.hpp"
#include "actors/sources.hpp"
#include "store/lake.hpp"
#include "store/warehouse.hpp"

namespace weir {

/// What a run in progress shows to a server in the same process (`weir serve`): its stores,
/// once open, and its live meters. Filled by run_pipelines; read from any thread.
class run_probe {
public:
  /// Called by run_pipelines once the stores are open and every pipeline is restored.
  void attach(std::shared_ptr<warehouse> wh, std::shared_ptr<lake> lk,
              std::shared_ptr<state_meters> meters) {
    std::lock_guard<std::mutex> lock{mu_};
    wh_ = std::move(wh);
    lk_ = std::move(lk);
    meters_ = std::move(meters);
  }
  /// The warehouse of the run (null before attach; kept after the run ends).
  std::shared_ptr<warehouse> store() const {
    std::lock_guard<std::mutex> lock{mu_};
    return wh_;
  }
  /// The lake of the run (null before attach).
  std::shared_ptr<lake> lake_store() const {
    std::lock_guard<std::mutex> lock{mu_};
    return lk_;
  }
  /// Live meters per pipeline, in config order (null before attach).
  std::shared_ptr<state_meters> meters() const {
    std::lock_guard<std::mutex> lock{mu_};
    return meters_;
  }
  std::atomic<uint32_t> restarts{0};

private:
  mutable std::mutex mu_;
  std::shared_ptr<warehouse> wh_;
  std::shared_ptr<lake> lk_;
  std::shared_ptr<state_meters> meters_;
};

/// How a run takes part in a cluster (cluster/node.hpp implements it); a run without one keeps
/// every actor in this process.
class run_cluster {
public:
  virtual ~run_cluster() = default;
  /// Prepares the run's actor system config before the system starts (the io module, TLS).
  virtual void configure(caf::actor_system_config& cfg) = 0;
  /// The system runs and `sup` supervises the run: publish this node. (A node that goes away
  /// takes its partitions with it, and the supervisor sees them go.)
  virtual caf::error start(caf::actor_system& sys, supervisor_actor sup) = 0;
  /// Spawns the window-aggregator partitions of pipeline `pipeline` of one generation on their
  /// nodes, one per snapshot (its restored state), sending contributions to `updater`.
  /// errc::node_lost when a node that should hold one cannot be reached.
  virtual caf::expected<std::vector<aggregator_actor>>
  spawn_partitions(caf::actor_system& sys, uint32_t pipeline, std::vector<std::string> snapshots,
                   updater_actor updater) = 0;
  /// The run is over: stop watching, close what start opened.
  virtual void stop(caf::actor_system& sys) = 0;

  /// Whether the pipelines' ingest runs on another node, next to its sources and with its lake
  /// there: the run then opens only its warehouse, and spawn_ingest places each generation's
  /// ingest actors.
  virtual bool remote_ingest() const = 0;
  /// The identity of the run's warehouse (store/store.hpp) and whether it holds committed
  /// epochs, before the first generation: the ingest node binds its lake to it.
  virtual void bind_store(std::string identity, bool holds_data) = 0;
  /// Spawns the ingest of pipeline `pipeline` on its node (remote_ingest), resuming from the
  /// `committed` offsets (lake source id -> offset), sending to `next` and `coordinator`; a
  /// final run (`final_flush`) ends with a final marker. errc::node_lost when the node cannot be
  /// reached; what the node refuses (its store, its inputs) comes back as the node's error.
  virtual caf::expected<ingest_actor> spawn_ingest(caf::actor_system& sys, uint32_t pipeline,
                                                   const offset_list& committed, bool final_flush,
                                                   preprocess_actor next,
                                                   coordinator_actor coordinator) = 0;
  /// The sources of pipeline `pipeline` in the remote lake (id -> key), as its ingest node told
  /// them when it last started it (empty before).
  virtual std::vector<std::pair<uint32_t, std::string>> source_keys(uint32_t pipeline) = 0;
};

struct run_options {
  std::string store;                       ///< store directory (empty: the config's)
  size_t threads = 0;                      ///< scheduler threads (0: number of cores)
  const std::atomic<bool>* stop = nullptr; ///< set to stop cleanly after a final commit
  /// exactly_once (the default); results_only: results and dead letters without lake, offsets,
  /// state or fsync, always from the start of the inputs, refused on a store that holds
  /// committed epochs of a pipeline; none (dry run): process everything and write nothing, in a
  /// throwaway store that is removed at the end (`store` is not touched).
  commit_mode mode = commit_mode::exactly_once;
  /// The end of this run is the end of the data: every open window fires (runtime_config::
  /// final_flush). Always so without exactly-once: those runs keep no state to leave them in.
  bool final_flush = false;
  /// When set, the run shows its stores and meters there (`weir serve`, progress of `weir run`).
  std::shared_ptr<run_probe> probe;
  /// Records of http sources come in through this process (`weir serve`); without it a config
  /// with an http source is refused, since nothing would ever feed it.
  bool http_sources = false;
  /// When set, the run is the coordinating node of a cluster and its partitions run where the
  /// cluster places them.
  std::shared_ptr<run_cluster> cluster;
};

/// errc::too_many_rejects when a pipeline of a finished run rejected more of the records it
/// read than its preprocess.max_reject_ratio allows (the run committed them as dead letters,
/// but must not look like a success).
caf::error check_reject_ratio(const weir_config& cfg, const std::vector<run_stats>& stats);

/// Checks every input of `cfg` before a store is touched: each source names files that exist
/// and can be read (errc::bad_input), and each csv header holds the fields the pipeline reads
/// (errc::bad_config). Done by run_pipelines, and by the ingest node of a cluster at its start.
caf::error check_inputs(const weir_config& cfg);

/// The most scheduler threads a run may ask for: 8 per core, at least 64.
size_t max_threads();

/// Runs the pipelines until their bounded inputs are exhausted (or `stop` is set) and the last
/// epoch is committed. Fails before anything runs on a bad store or missing input.
caf::expected<std::vector<run_stats>> run_pipelines(const weir_config& cfg,
                                                    const run_options& opts);

/// What the warehouse actor answers to a query.
struct query_answer {
  std::string window;                  ///< e.g. "tumbling 1h"
  std::vector<std::string> aggregates; ///< column names, in order
  std::vector<window_result> rows;     ///< ordered by (start, end, key)
  /// The change feed (since_epoch): rows carry the epoch that committed them, in `epochs`.
  bool change_feed = false;
  std::vector<uint64_t> epochs;
};

/// Asks the warehouse actor of the store in `dir` for committed results (key: internal form,
/// empty for all). Fails with errc::bad_input when the store or pipeline does not exist.
caf::expected<query_answer> query_store(const std::string& dir, const std::string& pipeline,
                                        const std::string& key, std::optional<timestamp> from,
                                        std::optional<timestamp> to);

/// The same, a page of at most `page_rows` rows at a time: `on_page` gets each page (window and
/// aggregates set in every one) and returns false to stop. Memory stays bounded by one page
/// whatever the size of the result. Each page is read in one read transaction, so it holds
/// whole epochs; a run committing meanwhile may add rows to later pages.
caf::error query_store_pages(const std::string& dir, const std::string& pipeline,
                             const std::string& key, std::optional<timestamp> from,
                             std::optional<timestamp> to,
                             const std::function<bool(const query_answer&)>& on_page,
                             uint64_t page_rows = 8192);

/// Asks the warehouse actor of the store in `dir` for dead letters (pipeline empty: all), at
/// most `limit` (0: all). errc::bad_input when the store or the pipeline does not exist.
caf::expected<std::vector<dead_letter_row>>
store_dead_letters(const std::string& dir, const std::string& pipeline, uint64_t limit);

/// The same, a page of at most `page_rows` at a time, in (pipeline, sequence) order; `on_page`
/// returns false to stop.
caf::error
store_dead_letter_pages(const std::string& dir, const std::string& pipeline, uint64_t limit,
                        const std::function<bool(const std::vector<dead_letter_row>&)>& on_page,
                        uint64_t page_rows = 4096);

/// What the store holds of a pipeline's last committed epoch: the epoch, the preprocess
/// counters as committed, the largest event time accepted so far, the watermark, the result
/// rows and dead letters written.
struct committed_status {
  uint64_t epoch = 0; ///< 0: nothing committed yet
  preprocess_counters counters;
  timestamp max_time = min_timestamp;  ///< min_timestamp: no event yet
  timestamp watermark = min_timestamp; ///< min_timestamp: none yet
  /// Configured source name -> its largest accepted event time (min_timestamp: none yet).
  std::vector<std::pair<std::string, timestamp>> source_times;
  uint64_t windows = 0;
  uint64_t dead_letters = 0;
};
caf::expected<committed_status> committed_status_of(warehouse& wh, const std::string& pipeline);

/// Expands a source path (a file, a glob, or "-") into the files it names, sorted.
caf::expected<std::vector<std::string>> expand_source(const source_config& src);

/// The description of a pipeline's windows stored with its results, e.g. "tumbling 1h".
std::string describe_window(const window_config& w);

/// The names of a pipeline's aggregates, in order.
std::vector<std::string> aggregate_names(const pipeline_config& p);

} // namespace weir
