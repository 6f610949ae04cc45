#pragma once

/// Every typed actor interface of Weir, the atoms they use and the few message types that are
/// not Cap'n Proto frames. One comment per handler says what it is for.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/deserializer.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/sec.hpp>
#include <caf/serializer.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "actors/core/extension.hpp"

namespace weir {

/// An owning buffer holding one serialized Cap'n Proto message (see schema/). Readers and
/// builders never cross an actor boundary; frames do. Local sends share the buffer (CAF messages
/// are copy-on-write), so a frame is not copied between actors of one process. `type` names the
/// schema struct at its root (capnp::typeId), so that a frame of another struct is refused when
/// decoded instead of being misread (actors/frame.hpp makes and reads frames).
struct frame {
  uint64_t type = 0;
  std::vector<uint64_t> words;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, frame& x) {
  return f(caf::meta::type_name("weir.frame"), x.type, x.words);
}

/// Frames between nodes: the words go as one block of bytes (the message as Cap'n Proto lays it
/// out, little-endian), not word by word, which made CAF's (de)serialization of chunks and
/// batches a quarter of a node's time. CAF serializes messages through these two base types.
inline caf::error inspect(caf::serializer& f, frame& x) {
  size_t n = x.words.size();
  return caf::error::eval([&] { return f(x.type); }, [&] { return f.begin_sequence(n); },
                          [&] { return n > 0 ? f.apply_raw(n * 8, x.words.data()) : caf::none; },
                          [&] { return f.end_sequence(); });
}

inline caf::error inspect(caf::deserializer& f, frame& x) {
  /// The largest frame taken from the network: decode_limits' 1 GiB, refused before allocating.
  constexpr size_t max_frame_words = size_t{1} << 27;
  size_t n = 0;
  return caf::error::eval([&] { return f(x.type); }, [&] { return f.begin_sequence(n); },
                          [&]() -> caf::error {
                            if (n > max_frame_words)
                              return caf::make_error(caf::sec::invalid_argument,
                                                     "a frame of more than 1 GiB");
                            x.words.resize(n);
                            return n > 0 ? f.apply_raw(n * 8, x.words.data()) : caf::none;
                          },
                          [&] { return f.end_sequence(); });
}

/// How an epoch ends.
enum class marker_kind : uint8_t {
  normal = 0, ///< commit and go on
  stop = 1,   ///< commit and stop (SIGINT/SIGTERM, or bounded inputs read to their end):
              ///< windows the watermark has not closed stay open in the store
  final = 2,  ///< the end of the data (weir run --final): fire every open window, commit, stop
};

/// The marker of epoch `epoch` that flows ingest -> preprocess -> every aggregator partition.
/// Everything sent before it on a channel belongs to the epoch. This is its form in memory: on
/// both hops it travels as an EpochMarker frame (encode_marker, decode_marker), since ingest,
/// preprocess and the partitions may each run on another node.
struct epoch_marker {
  uint64_t epoch = 0;
  marker_kind kind = marker_kind::normal;
  int64_t watermark = 0; ///< set by preprocess
  /// Set by ingest: source -> offset reached; preprocess sends its partitions none.
  std::vector<std::pair<uint32_t, uint64_t>> offsets;
  bool checkpoint = true; ///< false in a dry run: contributions carry no operator state
};

/// One page of committed results: rows of `pipeline` (`key` empty: every key) with
/// start >= from and end <= to, in (start, end, key) order, after the row (after_start,
/// after_end, after_key) when `has_after`, at most `limit` of them (0: all). A reader pages
/// through a large result by asking again after the last row it got, so no side holds it all.
struct query_request {
  std::string pipeline;
  std::string key;
  int64_t from = std::numeric_limits<int64_t>::min();
  int64_t to = std::numeric_limits<int64_t>::max();
  bool has_after = false;
  int64_t after_start = 0;
  int64_t after_end = 0;
  std::string after_key;
  uint64_t limit = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, query_request& x) {
  return f(caf::meta::type_name("weir.query_request"), x.pipeline, x.key, x.from, x.to, x.has_after,
           x.after_start, x.after_end, x.after_key, x.limit);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, window_result& x) {
  return f(caf::meta::type_name("weir.window_result"), x.key, x.start, x.end, x.version, x.values);
}

/// What a subscribed actor receives per committed epoch (actors/embed.hpp).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, committed_epoch& x) {
  return f(caf::meta::type_name("weir.committed_epoch"), x.pipeline, x.epoch, x.window,
           x.aggregates, x.rows);
}

/// What one run of a pipeline did, for the summary `weir run` prints.
/// What the window state of one pipeline cost over a run, as the updater saw it (for the
/// summary and the benchmarks).
/// One committed epoch of a pipeline, as a batch task (`GET /v1/tasks`, `weir status`).
struct epoch_task {
  uint64_t epoch = 0;
  int64_t committed_at = 0; ///< wall clock, microseconds since 1970
  int64_t latency_us = -1;  ///< from the epoch's start to its commit (-1: not known yet)
  uint64_t events = 0;      ///< records read in it
  uint64_t accepted = 0;    ///< of them, accepted into windows
  uint64_t windows = 0;     ///< result rows committed
  uint64_t dead_letters = 0;
  uint64_t state_bytes = 0; ///< window-state bytes written
  double commit_ms = 0;     ///< its LMDB write transaction
  uint32_t restarts = 0;    ///< restarts of the run before it
};

/// The recent committed epochs of a pipeline, oldest first: kept for a retention time, at most
/// max_tasks of them. Written by the updater and the supervisor, read by the server.
class task_log {
public:
  static constexpr size_t max_tasks = 100000;

  /// The committed counters the next task's events are counted from.
  void seed(uint64_t read, uint64_t accepted) {
    std::lock_guard<std::mutex> lock{mu_};
    read_ = read;
    accepted_ = accepted;
  }
  /// Adds a task from the cumulative counters its commit holds; drops those older than
  /// keep_us. Returns the records it read.
  uint64_t add(epoch_task t, uint64_t read, uint64_t accepted, int64_t keep_us) {
    std::lock_guard<std::mutex> lock{mu_};
    t.events = read >= read_ ? read - read_ : 0;
    t.accepted = accepted >= accepted_ ? accepted - accepted_ : 0;
    read_ = read;
    accepted_ = accepted;
    tasks_.push_back(t);
    while (!tasks_.empty() &&
           (tasks_.size() > max_tasks || tasks_.front().committed_at < t.committed_at - keep_us))
      tasks_.pop_front();
    return t.events;
  }
  /// Sets the latency of epoch e (reported after its commit).
  void set_latency(uint64_t e, int64_t us) {
    std::lock_guard<std::mutex> lock{mu_};
    for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it)
      if (it->epoch == e) {
        it->latency_us = us;
        return;
      }
  }
  /// The newest `limit` tasks, oldest first.
  std::vector<epoch_task> recent(size_t limit) const {
    std::lock_guard<std::mutex> lock{mu_};
    const size_t n = std::min(limit, tasks_.size());
    return {tasks_.end() - static_cast<std::ptrdiff_t>(n), tasks_.end()};
  }
  /// The task of epoch e, if it is kept.
  std::optional<epoch_task> find(uint64_t e) const {
    std::lock_guard<std::mutex> lock{mu_};
    for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it)
      if (it->epoch == e)
        return *it;
    return std::nullopt;
  }

private:
  mutable std::mutex mu_;
  std::deque<epoch_task> tasks_;
  uint64_t read_ = 0;
  uint64_t accepted_ = 0;
};

/// The mailbox depths of a pipeline's actors (`GET /metrics`): messages waiting, as each actor
/// last saw its own mailbox when it handled a message (CAF lets only the owner read it). Once
/// per message (a chunk, a batch, a marker), never per record.
class mailbox_depths {
public:
  std::atomic<uint64_t> ingest{0};
  std::atomic<uint64_t> preprocess{0};
  /// The updater serves every pipeline: its depth as it handled this pipeline's contributions.
  std::atomic<uint64_t> updater{0};

  /// Room for `n` window-aggregator partitions; called before the meter is shared.
  void size_partitions(size_t n) {
    partitions_ = std::make_unique<std::atomic<uint64_t>[]>(n);
    partition_count_ = n;
  }
  size_t partitions() const { return partition_count_; }
  /// The slot of partition p (nullptr past the room made).
  std::atomic<uint64_t>* partition(size_t p) {
    return p < partition_count_ ? &partitions_[p] : nullptr;
  }
  uint64_t partition_depth(size_t p) const {
    return p < partition_count_ ? partitions_[p].load(std::memory_order_relaxed) : 0;
  }

  /// Stores the mailbox size of `self` (an actor, from inside one of its handlers) in `slot`.
  template <class Self>
  static void note(Self* self, std::atomic<uint64_t>* slot) {
    if (slot)
      slot->store(self->mailbox().size(), std::memory_order_relaxed);
  }

private:
  std::unique_ptr<std::atomic<uint64_t>[]> partitions_;
  size_t partition_count_ = 0;
};

struct state_meter {
  std::atomic<uint64_t> bytes{0};        ///< window-state bytes written: rows, deleted keys, metas
  std::atomic<uint64_t> epochs{0};       ///< epochs that wrote state
  std::atomic<uint64_t> rows_at_peak{0}; ///< the most slices and sessions held at an epoch's end
  std::atomic<uint64_t> peak_memory{0};  ///< the operators' memory then
  std::atomic<uint64_t> rows_now{0};     ///< slices and sessions held at the last commit
  std::atomic<uint64_t> memory_now{0};   ///< the operators' memory then

  /// Epoch latency (an epoch's start to its commit) of this run, for `GET /metrics`: counts per
  /// bucket (upper bounds in latency_bounds_s, then +Inf), their sum and count.
  static constexpr double latency_bounds_s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,    2.5,   5,    10,  30};
  static constexpr size_t latency_buckets = std::size(latency_bounds_s) + 1;
  std::atomic<uint64_t> latency_count[latency_buckets] = {};
  std::atomic<uint64_t> latency_sum_us{0};
  std::atomic<uint64_t> latencies{0};
  /// Records per committed epoch (the batch size of each batch task), as a histogram: counts
  /// per bucket (upper bounds in epoch_size_bounds, then +Inf), their sum and count.
  static constexpr double epoch_size_bounds[] = {0, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
  static constexpr size_t epoch_size_buckets = std::size(epoch_size_bounds) + 1;
  std::atomic<uint64_t> epoch_size_count[epoch_size_buckets] = {};
  std::atomic<uint64_t> epoch_size_sum{0};
  std::atomic<uint64_t> epoch_sizes{0};
  task_log tasks;                                             ///< the recent committed epochs
  std::atomic<int64_t> task_keep_us{int64_t{3600} * 1000000}; ///< runtime task_retention
  std::atomic<uint32_t> restarts{0};                          ///< restarts of the run so far

  /// How far the run is into its inputs, for progress on the terminal (`weir run --progress`).
  /// Updated once per chunk (ingest) or batch (preprocess), never per record.
  /// Bytes of the inputs read, as the sum of every input's offset: a run (or a restart) begins
  /// at the committed offsets, so the bytes done before count as read.
  std::atomic<uint64_t> bytes_read{0};
  /// The inputs' sizes when the run (or its latest restart) began: the files, or what the lake
  /// holds of a drained file that is gone. A bounded file that grows meanwhile reads past it.
  std::atomic<uint64_t> bytes_total{0};
  /// False when an input has no end (a followed file, stdin, http): bytes_total means nothing.
  std::atomic<bool> bounded{false};
  /// Records preprocess read in this run (those replayed after a restart count again).
  std::atomic<uint64_t> records_read{0};
  mailbox_depths mailboxes;
  void add_epoch_size(uint64_t records) {
    size_t b = 0;
    while (b + 1 < epoch_size_buckets && static_cast<double>(records) > epoch_size_bounds[b])
      ++b;
    epoch_size_count[b] += 1;
    epoch_size_sum += records;
    epoch_sizes += 1;
  }
  void add_latency(int64_t us) {
    size_t b = 0;
    while (b + 1 < latency_buckets && static_cast<double>(us) > latency_bounds_s[b] * 1e6)
      ++b;
    latency_count[b] += 1;
    latency_sum_us += static_cast<uint64_t>(us > 0 ? us : 0);
    latencies += 1;
  }
};
using state_meters = std::vector<state_meter>;

struct run_stats {
  std::string pipeline;
  uint64_t read = 0;
  uint64_t accepted = 0;
  uint64_t filtered = 0;
  uint64_t late = 0;
  uint64_t late_updates = 0;
  uint64_t duplicates = 0;
  std::vector<std::pair<std::string, uint64_t>> rejected; ///< reason -> count
  uint64_t windows_committed = 0;
  uint64_t windows_open = 0; ///< windows left open in the store at the end (without --final)
  uint64_t epochs_committed = 0;
  uint64_t bytes_read = 0;
  uint32_t restarts = 0;    ///< times the supervisor restarted the run after a failure
  int64_t epoch_p50_us = 0; ///< epoch latency (start to commit), median
  int64_t epoch_p99_us = 0; ///< epoch latency, 99th percentile
  int64_t epoch_max_us = 0; ///< epoch latency, longest
  uint64_t state_bytes = 0; ///< window-state bytes written (see state_meter)
  uint64_t state_epochs = 0;
  uint64_t state_memory = 0; ///< peak operator memory
  uint64_t state_rows = 0;   ///< slices and sessions held at that peak
  /// Where the next run resumes: source (name:path) -> committed offset, at the end of the run.
  std::vector<std::pair<std::string, uint64_t>> resume_offsets;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_stats& x) {
  return f(caf::meta::type_name("weir.run_stats"), x.pipeline, x.read, x.accepted, x.filtered,
           x.late, x.late_updates, x.duplicates, x.rejected, x.windows_committed, x.windows_open,
           x.epochs_committed, x.bytes_read, x.restarts, x.epoch_p50_us, x.epoch_p99_us,
           x.epoch_max_us, x.state_bytes, x.state_epochs, x.state_memory, x.state_rows,
           x.resume_offsets);
}

using chunk_atom = caf::atom_constant<caf::atom("chunk")>;
using batch_atom = caf::atom_constant<caf::atom("batch")>;
using marker_atom = caf::atom_constant<caf::atom("marker")>;
using ack_atom = caf::atom_constant<caf::atom("ack")>;
using epoch_atom = caf::atom_constant<caf::atom("epoch")>;
using committed_atom = caf::atom_constant<caf::atom("committed")>;
using read_atom = caf::atom_constant<caf::atom("read")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using pre_epoch_atom = caf::atom_constant<caf::atom("pre_epoch")>;
using agg_epoch_atom = caf::atom_constant<caf::atom("agg_epoch")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using query_atom = caf::atom_constant<caf::atom("query")>;
using letters_atom = caf::atom_constant<caf::atom("letters")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using rebalance_atom = caf::atom_constant<caf::atom("rebalance")>;

/// The window-aggregator partition: event-time windows over one key partition.
using aggregator_actor = caf::typed_actor<
  /// An EventBatch frame (sequence number for the ack); acks with (ack, partition, seq).
  caf::reacts_to<batch_atom, uint64_t, frame>,
  /// An EpochMarker frame: fire what the watermark allows (or everything when final), send the
  /// AggregatorEpoch contribution to the updater.
  caf::reacts_to<marker_atom, frame>>;

/// Preprocess: validate, clean, dedupe, judge lateness, partition.
using preprocess_actor = caf::typed_actor<
  /// A RawChunk frame of landed lines (sequence number for the ack to ingest).
  caf::reacts_to<chunk_atom, uint64_t, frame>,
  /// A partition finished batch `seq`.
  caf::reacts_to<ack_atom, uint32_t, uint64_t>,
  /// An EpochMarker frame from ingest (which may run on another node) with the offsets it
  /// reached: forward the marker, without offsets, as an EpochMarker frame to every partition,
  /// contribute PreprocessEpoch with the offsets.
  caf::reacts_to<marker_atom, frame>>;

/// Ingest: reads the sources, lands raw chunks in the lake, sends them on under flow control.
using ingest_actor = caf::typed_actor<
  /// Preprocess finished chunk `seq`: one more credit.
  caf::reacts_to<ack_atom, uint64_t>,
  /// The coordinator starts epoch e: close the current batch and send the marker.
  caf::reacts_to<epoch_atom, uint64_t>,
  /// Epoch e is committed: prune the lake below the committed offsets.
  caf::reacts_to<committed_atom, uint64_t>,
  /// Read on (sent to itself).
  caf::reacts_to<read_atom>,
  /// Stop at the next epoch (SIGINT/SIGTERM).
  caf::reacts_to<stop_atom>>;

/// Updater: collects every contribution of an epoch and commits them in one LMDB transaction.
using updater_actor = caf::typed_actor<
  /// A PreprocessEpoch frame of pipeline `index`.
  caf::reacts_to<pre_epoch_atom, uint32_t, frame>,
  /// An AggregatorEpoch frame of pipeline `index`.
  caf::reacts_to<agg_epoch_atom, uint32_t, frame>>;

/// Coordinator: starts epochs, learns of commits, reports when every pipeline is done.
using coordinator_actor = caf::typed_actor<
  /// Timer: start the next epoch of each pipeline that has none in flight.
  caf::reacts_to<tick_atom>,
  /// The ingest actor of pipeline `index`, given once after it is spawned. The coordinator
  /// does not watch it: the supervisor watches every actor of a run.
  caf::reacts_to<register_atom, uint32_t, ingest_actor>,
  /// The updater committed epoch e of pipeline `index` (kind: a marker_kind) with n windows.
  caf::reacts_to<committed_atom, uint32_t, uint64_t, marker_kind, uint64_t>,
  /// Preprocess of pipeline `index` reports its counters (at every marker).
  caf::reacts_to<stats_atom, uint32_t, run_stats>,
  /// Stop every pipeline at its next epoch.
  caf::reacts_to<stop_atom>,
  /// A pipeline failed (the updater could not commit): report it to the supervisor.
  caf::reacts_to<fail_atom, std::string>,
  /// Ingest of pipeline `index` has nothing more to read: end with a last epoch.
  caf::reacts_to<done_atom, uint32_t>,
  /// Ingest of pipeline `index` has sent `commit_events` lines since its last marker: start
  /// its next epoch now rather than at the next tick.
  caf::reacts_to<epoch_atom, uint32_t>>;

/// Sink driver: delivers the committed epochs of one pipeline to one sink, in epoch order
/// (actors/sink_driver.hpp).
using sink_driver_actor = caf::typed_actor<
  /// Epoch e of the pipeline is committed: deliver every epoch up to it.
  caf::reacts_to<committed_atom, uint64_t>,
  /// Deliver the next epoch (sent to itself, at once or after a failure's backoff).
  caf::reacts_to<tick_atom>,
  /// The run is over: the answer (the last epoch delivered) comes once every epoch the store
  /// holds as committed is delivered.
  caf::replies_to<done_atom>::with<uint64_t>>;

/// What the coordinator reports to the actor that runs it (the supervisor).
using run_waiter_actor = caf::typed_actor<
  /// Epoch e of pipeline `index` is committed with n result rows, `latency` microseconds after
  /// its start (-1: not known).
  caf::reacts_to<committed_atom, uint32_t, uint64_t, uint64_t, int64_t>,
  /// The counters of one pipeline at the end of the run (one per pipeline, before done).
  caf::reacts_to<stats_atom, run_stats>,
  /// Every pipeline committed its last epoch: the run is over.
  caf::reacts_to<done_atom>,
  /// A pipeline failed: its epochs in flight are lost, the generation must go.
  caf::reacts_to<fail_atom, std::string>>;

/// Supervisor: runs generations of the pipeline actors and restarts them from the last commit
/// after a failure (actors/supervisor.hpp).
using supervisor_actor = run_waiter_actor::extend<
  /// Runs the pipelines; the answer comes when the run ends: what each pipeline did, or why the
  /// run failed.
  caf::replies_to<run_atom>::with<std::vector<run_stats>>,
  /// Stop cleanly: the pipelines commit a last epoch and the run ends.
  caf::reacts_to<stop_atom>,
  /// Timer: look at the stop flag of the run.
  caf::reacts_to<tick_atom>,
  /// Timer: the backoff after failure `n` of the run is over; start the next generation.
  caf::reacts_to<restart_atom, uint32_t>,
  /// A node of the cluster that the running generation could not use is back (`why` says
  /// which): after the next commit, the generation ends and the next one is placed on every
  /// node there is, at once and outside the restart budget.
  caf::reacts_to<rebalance_atom, std::string>,
  /// A sink driver of pipeline `index` (a subscriber of the embedding API): tell it of every
  /// commit of the pipeline; the run waits for it at its end like for a configured sink.
  caf::reacts_to<register_atom, uint32_t, sink_driver_actor>>;

/// Warehouse: answers queries on the committed results and dead letters of its store.
using warehouse_actor = caf::typed_actor<
  /// One page of results as a QueryResult frame; errc::bad_input for an unknown pipeline.
  caf::replies_to<query_atom, query_request>::with<frame>,
  /// Dead letters of a pipeline ("" for all) with a sequence number above `after` (per
  /// pipeline; 0: from the first), at most `limit` (0: all), as a DeadLetters frame;
  /// errc::bad_input for an unknown pipeline.
  caf::replies_to<letters_atom, std::string, uint64_t, uint64_t>::with<frame>>;

} // namespace weir

CAF_BEGIN_TYPE_ID_BLOCK(weir, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(weir, (weir::frame))
CAF_ADD_TYPE_ID(weir, (weir::run_stats))
CAF_ADD_TYPE_ID(weir, (weir::query_request))
CAF_ADD_TYPE_ID(weir, (weir::marker_kind))
CAF_ADD_TYPE_ID(weir, (std::vector<weir::run_stats>))
CAF_ADD_TYPE_ID(weir, (weir::ingest_actor))
CAF_ADD_TYPE_ID(weir, (weir::aggregator_actor))
CAF_ADD_TYPE_ID(weir, (weir::preprocess_actor))
CAF_ADD_TYPE_ID(weir, (weir::updater_actor))
CAF_ADD_TYPE_ID(weir, (weir::coordinator_actor))
CAF_ADD_TYPE_ID(weir, (weir::sink_driver_actor))
CAF_ADD_TYPE_ID(weir, (weir::committed_epoch))
CAF_END_TYPE_ID_BLOCK(weir)
