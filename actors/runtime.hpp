#pragma once

/// The library entry point that `weir run` uses: runs every pipeline of a config on this machine,
/// from its sources to committed window results, and returns what each pipeline did.

#include <atomic>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"

namespace weir {

struct run_options {
  std::string store;                         ///< store directory (empty: the config's)
  size_t threads = 0;                        ///< scheduler threads (0: number of cores)
  const std::atomic<bool>* stop = nullptr;   ///< set to stop cleanly after a final commit
};

/// Runs the pipelines until their bounded inputs are exhausted (or `stop` is set) and the last
/// epoch is committed. Fails before anything runs on a bad store or missing input.
caf::expected<std::vector<run_stats>> run_pipelines(const weir_config& cfg,
                                                    const run_options& opts);

/// Expands a source path (a file, a glob, or "-") into the files it names, sorted.
caf::expected<std::vector<std::string>> expand_source(const source_config& src);

/// The description of a pipeline's windows stored with its results, e.g. "tumbling 1h".
std::string describe_window(const window_config& w);

/// The names of a pipeline's aggregates, in order.
std::vector<std::string> aggregate_names(const pipeline_config& p);

} // namespace weir
