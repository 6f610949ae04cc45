#pragma once

/// What `GET /v1/history` serves and the status page plots: each pipeline's committed progress,
/// sampled once a second and kept for the last 15 minutes, so that a page opened now shows the
/// minutes before it.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "actors/core/types.hpp"
#include "actors/runtime.hpp"

namespace weir::cli {

/// One pipeline at one moment, as committed (the latency is the run's: tasks of this server).
struct progress_sample {
  int64_t at_us = 0; ///< wall clock, microseconds since 1970 (whole milliseconds)
  uint64_t read = 0;
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  uint64_t windows = 0;
  uint64_t dead_letters = 0;
  uint64_t epoch = 0;
  timestamp max_time = min_timestamp;  ///< the largest event time accepted (min: none yet)
  timestamp watermark = min_timestamp; ///< min_timestamp: none yet
  /// The longest start-to-commit latency of the epochs committed since the sample before
  /// (-1: none committed since).
  int64_t latency_us = -1;
};

/// Samples every pipeline of a run through its probe on a thread of its own, once every
/// `interval_us`, keeping the last `keep` samples of each (memory stays bounded however long
/// the service runs). Sampling begins once the run's store is open.
class progress_history {
public:
  static constexpr int64_t interval_us = 1000000;
  static constexpr size_t keep = 900; ///< 15 minutes

  progress_history(const weir_config& cfg, std::shared_ptr<run_probe> probe);
  ~progress_history();
  progress_history(const progress_history&) = delete;
  progress_history& operator=(const progress_history&) = delete;

  /// Starts the sampling thread.
  void start();
  /// Stops it and waits for it (also done by the destructor).
  void stop();

  /// The samples of pipeline `index` (config order) taken after `after_us`, oldest first.
  std::vector<progress_sample> samples(size_t index, int64_t after_us) const;

private:
  void run();
  /// Takes one sample of every pipeline now; false when the store is not open yet or could
  /// not be read (nothing is kept then).
  bool sample();

  const weir_config& cfg_;
  std::shared_ptr<run_probe> probe_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
  std::vector<std::deque<progress_sample>> rings_; ///< per pipeline, oldest first
  std::vector<uint64_t> latency_epoch_;            ///< per pipeline: latencies taken up to it
};

} // namespace weir::cli
