#pragma once

/// What a run prepares before any actor runs (actors/runtime.cpp): its stores open and locked,
/// every pipeline restored, its sinks made; then start_prepared (actors/embed.cpp) starts it in
/// an actor system. Internal to the library: run_pipelines and start_pipelines share it.

#include <memory>
#include <optional>
#include <string>

#include <caf/expected.hpp>

#include "actors/runtime.hpp"
#include "actors/supervisor.hpp"
#include "store/lock.hpp"

namespace weir {

/// A directory removed with everything in it when the object goes (a dry run's store).
struct scratch_dir {
  std::string path; ///< empty: none
  scratch_dir() = default;
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir();
};

struct run_setup {
  scratch_dir scratch;            ///< goes last, after the stores and the lock
  std::optional<store_lock> lock; ///< one writer per store, held until the run is over
  supervisor_deps deps;
  std::shared_ptr<run_cluster> cluster;
  size_t threads = 1; ///< scheduler threads for a system of the run's own
};

/// Everything run_pipelines does before the actor system starts: checks, stores, restore,
/// sinks. Fails before anything runs on a bad store or missing input.
caf::expected<std::unique_ptr<run_setup>> prepare_run(const weir_config& cfg,
                                                      const run_options& opts);

} // namespace weir
