#pragma once

/// Recovery: what a run starts from and restarts from. Everything here reads the stores; the
/// supervisor (actors/supervisor.hpp) calls it before the first generation of actors and after
/// every failure, and the protocol tests call the same functions rather than copies of them.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"
#include "actors/preprocess.hpp"
#include "actors/sources.hpp"
#include "store/lake.hpp"
#include "store/warehouse.hpp"

namespace weir {

/// A failure that restarting cannot cure: the input or the config is wrong, the store is
/// unusable, or too many records are rejected. The run ends with it at once.
bool is_fatal(const caf::error& err);

/// What one pipeline starts from: its inputs with their resume points and the operator state of
/// the last committed epoch.
struct prepared {
  pipeline_sources inputs;
  preprocess_restore restore;
  uint64_t first_epoch = 1;
};

/// The operator state pipeline `p` restarts from: registers it in the store (its definition and
/// indexes), then reads its last committed epoch, the preprocess snapshot, every partition's
/// snapshot and the remembered event ids into `out`. `partitions` is the count a fresh pipeline
/// gets (the config's, or the cores); a store holding state of another count decides instead.
caf::error restore_pipeline(const pipeline_config& p, warehouse& wh, size_t partitions,
                            prepared& out);

/// The inputs of pipeline `p` from its committed offsets (lake source id -> offset) and the lake
/// `lk`: every source's files (or network source) with where each resumes, into `out`, and each
/// lake id's configured source into `bindings`. Done where the lake is: in the run, or on the
/// ingest node of a cluster.
caf::error prepare_inputs(const weir_config& cfg, const pipeline_config& p,
                          const offset_list& committed, lake& lk, pipeline_sources& out,
                          std::vector<std::pair<uint32_t, size_t>>& bindings);

/// Reads where every pipeline stands in the store: restore_pipeline, the committed offsets, and
/// with a lake (`lk`; null when ingest runs on another node) each source's inputs. Everything
/// that can fail before processing (store, inputs) fails here, before any actor runs.
caf::expected<std::vector<prepared>> prepare(const weir_config& cfg, lake* lk, warehouse& wh,
                                             size_t cores);

/// Sets where pipeline `p` starts into its inputs on its meter (see state_meter::bytes_read):
/// the committed offsets count as read, and the total is the inputs' sizes now.
void meter_inputs(const pipeline_sources& p, state_meter& m);

/// The committed state of one window-aggregator partition as window_operator::snapshot() bytes:
/// its meta value (from the `state` table) and its rows of the `windows` table; empty when the
/// meta value is.
caf::expected<std::string> partition_snapshot(warehouse& wh, const std::string& pipeline,
                                              uint32_t part, std::string_view meta);

/// What the supervisor counts of one pipeline over every generation of a run.
struct tally {
  preprocess_counters start;      ///< the committed counters when the run began
  uint64_t start_epoch = 0;       ///< last committed epoch when the run began
  uint64_t start_windows = 0;     ///< result rows committed when the run began
  std::vector<int64_t> latencies; ///< start to commit of every epoch seen committed, microseconds
};

/// The tallies of every pipeline at the start of a run, from what `prepare` found.
caf::expected<std::vector<tally>> start_tallies(const weir_config& cfg,
                                                const std::vector<prepared>& preps, warehouse& wh);

/// Windows of pipeline `p` that the committed partition states hold open.
uint64_t open_windows(const pipeline_config& p, warehouse& wh);

/// The summary of pipeline `name`: its counters at the end (`last`, cumulative as committed)
/// less those at the start, so that records replayed after a restart count once.
run_stats summarize(const std::string& name, const std::vector<run_stats>& last, const tally& t,
                    uint32_t restarts, warehouse& wh, commit_mode mode);

/// Where pipeline `name` resumes: its sources' lake keys (`sources`: lake id -> key, as
/// lake::sources() gives them) with their committed offsets.
std::vector<std::pair<std::string, uint64_t>>
resume_points(const std::string& name, const std::vector<std::pair<uint32_t, std::string>>& sources,
              warehouse& wh);

/// "last good commits: p1 epoch 4 p2 epoch 9", for the messages of a failed run.
std::string last_commits(const weir_config& cfg, warehouse& wh);

} // namespace weir
