#pragma once

/// Plain types shared by every part of Weir: the pipeline configuration, the columnar event
/// batch that flows from preprocess to the window aggregators, window results and dead letters.
/// Nothing here depends on CAF, Cap'n Proto or LMDB so that the logic built on it can be tested
/// on its own.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace weir {

class stage;
struct stage_context;

/// Event time and durations are microseconds since the Unix epoch (UTC).
using timestamp = int64_t;
constexpr timestamp min_timestamp = std::numeric_limits<int64_t>::min();
constexpr timestamp max_timestamp = std::numeric_limits<int64_t>::max();
constexpr int64_t us_per_ms = 1'000;
constexpr int64_t us_per_s = 1'000'000;

/// Multi-field keys are joined with this byte internally; shown to users as '|'.
constexpr char key_separator = '\x1f';

// -- configuration -------------------------------------------------------------

enum class source_format : uint8_t { csv, ndjson };
enum class time_format : uint8_t { iso8601, epoch_s, epoch_ms, epoch_us };
enum class value_type : uint8_t { string, int64, float64, time };
enum class window_kind : uint8_t { tumbling, sliding, session };
enum class late_policy : uint8_t { dead_letter, update };
/// custom: a registered aggregate_function (actors/core/extension.hpp), named in the config.
enum class agg_fn : uint8_t { count, sum, avg, min, max, distinct, quantile, custom };

class aggregate_function;

struct source_config {
  std::string name; ///< unique within its pipeline
  std::string path; ///< a file, a glob, or "-" for stdin
  source_format format = source_format::csv;
  bool follow = false; ///< tail the file(s) until SIGINT/SIGTERM
  /// Records come over HTTP (weir serve, POST /v1/pipelines/NAME/events), landed in the lake by
  /// the server; no path. Always followed.
  bool http = false;
  /// Records come from a Redis stream, read with a consumer group (actors/redis_stream.hpp);
  /// empty host: not a Redis source. Always followed.
  struct redis_stream_config {
    std::string host;        ///< address of the Redis server
    uint16_t port = 6379;
    std::string stream;      ///< the stream's key
    std::string group;       ///< consumer group (created when missing)
    std::string consumer;    ///< this reader's name in the group
    std::string field;       ///< the entry field holding the record's line
    std::string start;       ///< where a new group starts: "0" (the whole stream), "$" or an id
    std::string password_env; ///< environment variable holding the password (AUTH), if any
  } redis;
  bool is_redis() const { return !redis.host.empty(); }
  /// Nothing new from this source for this long (wall clock): it stops holding the pipeline's
  /// watermark back until it moves again. 0: never (the default of bounded sources; 30 s when
  /// follow = true).
  int64_t idle_timeout = 0;
  bool header = true;               ///< csv: the first line of each file names the columns
  char delimiter = ',';             ///< csv
  char quote = '"';                 ///< csv
  std::vector<std::string> columns; ///< csv without header: the column names, in order
  size_t max_line_bytes = 1 << 20;  ///< longer lines are dead-lettered
};

struct field_mapping {
  std::string event_id; ///< empty: the event id is source + offset (no dedupe possible)
  std::string time;     ///< the event-time field
  time_format time_fmt = time_format::iso8601;
  std::vector<std::string> key;        ///< one or more fields; joined with key_separator
  std::vector<std::string> measures;   ///< numeric fields
  std::vector<std::string> attributes; ///< kept non-key fields (usable by distinct and filters)
};

/// Keeps a record when every condition given holds. Numeric conditions parse the field.
struct filter_config {
  std::string field;
  std::optional<double> min;     ///< inclusive
  std::optional<double> max;     ///< inclusive
  std::optional<std::string> eq; ///< text equality
  std::optional<std::string> ne; ///< text inequality
  std::vector<std::string> in;   ///< text is one of these (when not empty)
};

/// A derived numeric field: `expr` is arithmetic (+ - * / parentheses, numbers, field names).
struct derive_config {
  std::string name;
  std::string expr;
};

struct preprocess_config {
  std::vector<std::string> required;                     ///< must be present and non-empty
  std::vector<std::pair<std::string, value_type>> types; ///< must parse as this type
  std::vector<filter_config> filters;
  std::vector<std::pair<std::string, std::string>> rename; ///< input name -> new name
  std::vector<derive_config> derive;
  bool dedupe = false;        ///< by event id (needs fields.event_id)
  int64_t dedupe_horizon = 0; ///< event-time span an id is remembered for
  /// A run stops (exit 1) when more than this share of its records is rejected: checked once
  /// reject_sample records are read, and at the end of the input.
  double max_reject_ratio = 0.5;
};

/// Records read before max_reject_ratio is checked while a run goes on.
constexpr uint64_t reject_sample = 1000;
/// The most window-aggregator partitions a pipeline may have (each is an actor with state).
constexpr size_t max_partitions = 1024;

struct window_config {
  window_kind kind = window_kind::tumbling;
  int64_t size = 0;             ///< tumbling and sliding
  int64_t slide = 0;            ///< sliding (hop); tumbling: equals size
  int64_t gap = 0;              ///< session
  int64_t offset = 0;           ///< alignment of tumbling/sliding windows
  int64_t out_of_orderness = 0; ///< watermark = max event time seen - out_of_orderness
  int64_t allowed_lateness = 0; ///< a window fires when watermark >= end + allowed_lateness
  late_policy late = late_policy::dead_letter;
  int64_t update_horizon = 0; ///< late=update: how long after firing a window stays open
};

struct aggregate_config {
  aggregate_config() = default;
  aggregate_config(agg_fn f, std::string fld, std::string n, double quantile = 0.5)
    : fn(f)
    , field(std::move(fld))
    , name(std::move(n))
    , q(quantile) {}

  agg_fn fn = agg_fn::count;
  std::string field; ///< empty for count of records
  std::string name;  ///< output column name
  double q = 0.5;    ///< quantile: which one, in [0, 1]
  /// custom: the registered name, the `options` table (key -> value text, as in
  /// extension_options) and the instance its factory made, shared by every partition.
  std::string custom_name;
  std::vector<std::pair<std::string, std::string>> options;
  std::shared_ptr<const aggregate_function> custom;
};

/// A [[pipeline.stage]]: user code (actors/core/extension.hpp) that sees each partition's batch
/// of accepted events before the window aggregators.
struct stage_config {
  std::string kind;                                         ///< its registered name
  std::vector<std::pair<std::string, std::string>> options; ///< as extension_options holds them
  std::vector<std::string> outputs; ///< numeric fields it fills (NaN until it sets them)
  /// Makes one instance (one per partition); the factory and options are bound in. Throws
  /// what the factory throws.
  std::function<std::unique_ptr<stage>(const stage_context&)> make;
};

class sink;

/// [[pipeline.sink]]: a registered sink kind (actors/core/extension.hpp) that receives the
/// pipeline's committed epochs.
struct sink_config {
  std::string name; ///< unique within the pipeline: its delivery cursor in the store
  std::string kind; ///< the registered sink kind
  /// Makes a fresh sink for `pipeline` from the options of the config (the registered factory
  /// with them bound): one per run. The config made one at load to check the options.
  std::function<std::unique_ptr<sink>(const std::string& pipeline)> make;
};

struct pipeline_config {
  std::string name;
  std::vector<source_config> sources;
  field_mapping fields;
  preprocess_config preprocess;
  window_config window;
  std::vector<aggregate_config> aggregates;
  std::vector<stage_config> stages; ///< in config order
  size_t partitions = 0; ///< window-aggregator partitions; 0 = number of cores
  /// [pipeline.results]: indexes the store keeps of the results.
  struct results_config {
    bool key_index = false;   ///< lookups by key read only that key's rows
    bool change_feed = false; ///< what each epoch committed, for `since_epoch`
    int64_t change_retention = int64_t{3600} * 1000000; ///< how long the feed keeps an epoch
  } results;
  /// [[pipeline.sink]], in config order; a pipeline with one keeps the change feed.
  std::vector<sink_config> sinks;
};

/// What an epoch writes (docs/architecture.md, "Commit modes").
enum class commit_mode : uint8_t {
  /// The default: input landed in the lake, results with offsets and operator state in one
  /// durable transaction per epoch.
  exactly_once,
  /// `weir run --no-exactly-once`: results and dead letters only, without fsync; no lake, no
  /// offsets, no state: nothing to resume from.
  results_only,
  /// `weir run --dry-run`: nothing is written.
  none,
};

struct runtime_config {
  std::string store; ///< default store directory (relative to the config file)
  /// Logging of the `weir` command when its --log-level / --log-format are not given (empty:
  /// the command's defaults, warn and text).
  std::string log_level;
  std::string log_format;
  int64_t commit_interval = 100 * us_per_ms;
  uint64_t commit_events = 0; ///< also start an epoch after this many events (0: off)
  /// Ingest reads at most this many raw bytes into one epoch and then waits for the next one:
  /// when commits fall behind (a backfill), epochs stay this size instead of growing with the
  /// commit time, which bounds memory and epoch latency (0: off).
  uint64_t max_epoch_bytes = 8 << 20;
  size_t batch_bytes = 1 << 20;    ///< raw bytes per ingest batch
  size_t max_inflight_batches = 4; ///< flow control: batches in flight per pipeline
  int64_t lake_retention = 0;      ///< keep committed raw chunks this long (0: prune at once)
  int64_t task_retention = 3600 * int64_t{1000000}; ///< keep the record of committed epochs this long
  int64_t slow_epoch = 5 * int64_t{1000000}; ///< an epoch slower than this is warned about
  bool durable = true;             ///< fsync every commit (false: risk of losing last commits)
  uint32_t restart_budget = 3;     ///< restarts of a failed run before it gives up
  int64_t restart_backoff = 100 * us_per_ms;   ///< wait before the first restart; doubles
  int64_t restart_backoff_max = 10 * us_per_s; ///< longest wait between restarts
  /// A chunk, then a line, whose processing throws is retried this many times; a line that
  /// still fails is a poison record: it goes to dead letters (docs/architecture.md).
  uint32_t record_retries = 1;
  uint64_t max_poison_records = 100; ///< more poison records than this in one run fail the run
  commit_mode mode = commit_mode::exactly_once; ///< set by `weir run` flags, not a config key
  /// The end of the run is the end of the data (`weir run --final`): every open window fires
  /// and the watermark moves past it. Otherwise windows the watermark has not closed stay open
  /// in the store. Set by `weir run`, not a config key.
  bool final_flush = false;
};

struct weir_config {
  std::string file; ///< the config file it was read from
  /// Plugins loaded before the pipelines were read (paths resolved), in config order.
  std::vector<std::string> plugins;
  runtime_config runtime;
  std::vector<pipeline_config> pipelines;
};

/// The numeric fields a batch carries for the stages, in column order (stage_context::fields):
/// the measures, the derived fields, then the outputs of stages 0 .. `upto` (all by default).
inline std::vector<std::string> stage_fields(const pipeline_config& p, size_t upto = SIZE_MAX) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& n) {
    for (const auto& x : out)
      if (x == n)
        return;
    out.push_back(n);
  };
  for (const auto& m : p.fields.measures)
    add(m);
  for (const auto& d : p.preprocess.derive)
    add(d.name);
  for (size_t i = 0; i < p.stages.size() && i <= upto; ++i)
    for (const auto& o : p.stages[i].outputs)
      add(o);
  return out;
}

// -- aggregate inputs ------------------------------------------------------------

/// Where each aggregate finds its input in an event batch: numeric aggregates read a column of
/// `values`, distinct reads a column of `hashes`, count of records reads nothing (-1).
struct aggregate_layout {
  std::vector<int> value_col;
  std::vector<int> hash_col;
  size_t value_width = 0;
  size_t hash_width = 0;
};

inline aggregate_layout make_layout(const std::vector<aggregate_config>& aggs) {
  aggregate_layout l;
  for (const auto& a : aggs) {
    int v = -1;
    int h = -1;
    if (a.fn == agg_fn::distinct)
      h = static_cast<int>(l.hash_width++);
    else if (!(a.fn == agg_fn::count && a.field.empty()))
      v = static_cast<int>(l.value_width++);
    l.value_col.push_back(v);
    l.hash_col.push_back(h);
  }
  return l;
}

// -- events ------------------------------------------------------------------------

/// The accepted events of one partition, in source order, as columns. Value i of record r is
/// `values[r * value_width + i]` (NaN when the record lacks it); likewise `hashes`.
struct event_columns {
  std::vector<int64_t> time;
  std::vector<int64_t> wm_before; ///< the watermark just before this record was seen
  std::vector<uint64_t> key_hash;
  std::vector<uint32_t> key_end; ///< key r is key_bytes[key_end[r-1] (0 for r=0), key_end[r])
  std::string key_bytes;
  std::vector<double> values;
  std::vector<uint64_t> hashes;

  size_t size() const { return time.size(); }
  void clear() {
    time.clear();
    wm_before.clear();
    key_hash.clear();
    key_end.clear();
    key_bytes.clear();
    values.clear();
    hashes.clear();
  }
};

/// A read-only view of the same columns, e.g. over a decoded Cap'n Proto batch.
struct event_view {
  size_t n = 0;
  const int64_t* time = nullptr;
  const int64_t* wm_before = nullptr;
  const uint64_t* key_hash = nullptr;
  const uint32_t* key_end = nullptr;
  const char* key_bytes = nullptr;
  const double* values = nullptr;
  size_t value_width = 0;
  const uint64_t* hashes = nullptr;
  size_t hash_width = 0;

  std::string_view key(size_t r) const {
    uint32_t b = r == 0 ? 0 : key_end[r - 1];
    return {key_bytes + b, key_end[r] - b};
  }
};

inline event_view view_of(const event_columns& c, size_t value_width, size_t hash_width) {
  event_view v;
  v.n = c.size();
  v.time = c.time.data();
  v.wm_before = c.wm_before.data();
  v.key_hash = c.key_hash.data();
  v.key_end = c.key_end.data();
  v.key_bytes = c.key_bytes.data();
  v.values = c.values.data();
  v.value_width = value_width;
  v.hashes = c.hashes.data();
  v.hash_width = hash_width;
  return v;
}

// -- results -------------------------------------------------------------------------

/// One committed result of one window of one key. A re-committed window (late = update)
/// carries a higher version; readers show the highest.
struct window_result {
  std::string key;
  timestamp start = 0;
  timestamp end = 0;
  uint32_t version = 1;
  std::vector<double> values; ///< one per aggregate, in config order
};

/// A record that was not accepted, with why.
struct dead_letter {
  uint32_t source = 0; ///< source id (from the lake's source table)
  uint64_t offset = 0; ///< byte offset of the record in its source
  std::string raw;     ///< the record's text (cut to a bounded length)
  std::string reason;
};

} // namespace weir
