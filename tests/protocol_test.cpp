// Deterministic tests of the exactly-once epoch protocol (docs/architecture.md, "Epochs and
// exactly-once") under CAF's test_coordinator (scheduler.policy = testing): the updater aligns
// the contributions of an epoch, an epoch dies with any actor of its pipeline, a re-commit is a
// no-op, and a pipeline restored from the store after failures at random moments commits what a
// failure-free run would, once. Inputs, arrival orders and failure schedules come from
// rapidcheck; expected values from brute-force models in this file, never from the code under
// test. The test plays the roles of ingest, coordinator and supervisor.

#include <catch2/catch.hpp>
#include <rapidcheck.h>
#include <rapidcheck/catch.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>
#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "actors/core/preprocessor.hpp"
#include "actors/frame.hpp"
#include "actors/preprocess.hpp"
#include "actors/recovery.hpp"
#include "actors/runtime.hpp"
#include "actors/updater.hpp"
#include "schema/batch.capnp.h"
#include "store/warehouse.hpp"
#include "tests/actor_test_support.hpp"
#include "tests/test_support.hpp"

using namespace weir;

namespace {

// -- the deterministic actor system ---------------------------------------------------------

using test_config = weir::test::deterministic_config;

/// One actor system on the deterministic scheduler per property case. Every actor the test
/// spawns is tracked; at the end (also when an assertion throws) they are told to exit and the
/// scheduler is drained, so that no actor outlives the system or the store its updater holds.
struct world {
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
    dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::vector<caf::actor> tracked;

  template <class Handle>
  Handle track(Handle h) {
    tracked.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  /// Runs at most n jobs (one message each); fewer when the queue runs dry.
  void run_some(int n) {
    for (int i = 0; i < n && sched.has_job(); ++i)
      sched.run_once();
  }

  /// Stops every tracked actor and waits until they are gone (what the supervisor does).
  void stop_all() {
    for (auto& a : tracked)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    tracked.clear();
    sched.run();
  }

  ~world() { stop_all(); }
};

/// A real warehouse in a fresh temporary directory (not durable: the tests never crash the
/// process, and fsync per epoch would only slow them down).
struct store {
  weir::test::temp_dir dir{"weir_protocol_"};
  std::shared_ptr<warehouse> wh;

  store() {
    auto w = warehouse::open((dir.path / "warehouse").string(), false);
    if (!w)
      throw std::runtime_error("cannot open the warehouse: " + render(w.error()));
    wh = std::make_shared<warehouse>(std::move(*w));
  }
};

/// The updater of the exactly-once mode (the only one these tests are about).
updater_actor spawn_updater(world& w, std::vector<std::pair<std::string, size_t>> slots,
                            std::shared_ptr<warehouse> wh, coordinator_actor coord) {
  return w.track(w.sys.spawn(updater, std::move(slots), std::move(wh), std::move(coord),
                             commit_mode::exactly_once, std::shared_ptr<state_meters>{}));
}

/// The commit logs at info level: hundreds of property cases would drown the report.
void quiet_logs() {
  spdlog::set_level(spdlog::level::warn);
}

/// Sends an exit message with `reason` to `h`, as a linked or supervising actor would.
template <class Handle>
void kill(const Handle& h, caf::error reason) {
  caf::anon_send(caf::actor_cast<caf::actor>(h),
                 caf::exit_msg{caf::actor_addr{}, std::move(reason)});
}

/// A value in [a, b), uniform whatever the size of the case: rc::gen::inRange narrows its range
/// for small sizes, which would, e.g., make every event of the first cases a duplicate. Counts
/// that should grow with the size use rc::gen::inRange itself.
template <class T>
T pick(T a, T b) {
  return *rc::gen::resize(100, rc::gen::inRange<T>(a, b));
}

/// The state of a stateful actor of the deterministic system (only read between run calls).
template <class State, class Handle>
State& state_of(const Handle& h) {
  using impl = typename Handle::template stateful_pointer<State>;
  auto* ptr = dynamic_cast<impl>(caf::actor_cast<caf::abstract_actor*>(h));
  if (ptr == nullptr)
    throw std::logic_error("not the actor type the test expects");
  return ptr->state;
}

// -- recording fakes --------------------------------------------------------------------------

/// What the fakes saw.
struct proto_log {
  std::vector<std::tuple<uint64_t, marker_kind, uint64_t>> commits; ///< coordinator: (e, kind, n)
  std::vector<std::string> failures;                                ///< coordinator: fail_atom
  std::vector<uint64_t> chunk_acks;                                 ///< ingest: acks of chunks
};

coordinator_actor::behavior_type recording_coordinator(coordinator_actor::pointer self,
                                                       proto_log* log) {
  return {
    [](tick_atom) {},
    [](register_atom, uint32_t, const ingest_actor&) {},
    [log](committed_atom, uint32_t, uint64_t e, marker_kind kind, uint64_t windows) {
      log->commits.emplace_back(e, kind, windows);
    },
    [](stats_atom, uint32_t, const run_stats&) {},
    [](stop_atom) {},
    [log](fail_atom, const std::string& why) { log->failures.push_back(why); },
    [](done_atom, uint32_t) {},
    [](epoch_atom, uint32_t) {},
  };
}

ingest_actor::behavior_type recording_ingest(ingest_actor::pointer self, proto_log* log) {
  return {
    [log](ack_atom, uint64_t seq) { log->chunk_acks.push_back(seq); },
    [](epoch_atom, uint64_t) {},
    [](committed_atom, uint64_t) {},
    [](read_atom) {},
    [](stop_atom) {},
  };
}

/// Monitors `targets` and keeps why each went down.
using downs_t = std::map<caf::actor_addr, caf::error>;

caf::behavior watcher(caf::event_based_actor* self, std::vector<caf::actor> targets,
                      downs_t* downs) {
  for (auto& t : targets)
    self->monitor(t);
  self->set_down_handler([downs](caf::down_msg& dm) { (*downs)[dm.source] = dm.reason; });
  return {[](caf::ok_atom) {}};
}

bool same_error(const caf::error& x, const caf::error& y) {
  if (!x || !y) // CAF 0.17: code() of an empty error (a normal exit) is undefined
    return !x && !y;
  return x.code() == y.code() && x.category() == y.category() && render(x) == render(y);
}

// -- hand-made contributions (updater tests) ---------------------------------------------------

/// One epoch as the updater receives it: the PreprocessEpoch and one AggregatorEpoch per
/// partition.
struct epoch_spec {
  uint64_t epoch = 0;
  std::vector<std::pair<uint32_t, uint64_t>> offsets;
  std::vector<dead_letter> letters;
  std::vector<std::pair<uint64_t, int64_t>> dedupe;
  timestamp expire_before = min_timestamp;
  std::string pre_state;
  std::vector<std::vector<window_result>> results; ///< per partition
  std::vector<std::string> states;                 ///< per partition

  size_t rows() const {
    size_t n = 0;
    for (auto& r : results)
      n += r.size();
    return n;
  }
};

capnp::Data::Reader data_of(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

frame pre_frame(const epoch_spec& x) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::PreprocessEpoch>();
  c.setEpoch(x.epoch);
  c.setMarkerKind(schema::MarkerKind::NORMAL);
  auto offs = c.initOffsets(static_cast<unsigned>(x.offsets.size()));
  for (unsigned i = 0; i < x.offsets.size(); ++i) {
    offs[i].setSource(x.offsets[i].first);
    offs[i].setOffset(x.offsets[i].second);
  }
  dead_letter_pack letters;
  for (const auto& d : x.letters)
    letters.push_back(d);
  const std::string packed{letters.bytes()};
  c.setDeadLetterPack(data_of(packed));
  auto ids = c.initDedupeAdded(static_cast<unsigned>(x.dedupe.size()));
  for (unsigned i = 0; i < x.dedupe.size(); ++i) {
    ids[i].setId(x.dedupe[i].first);
    ids[i].setTime(x.dedupe[i].second);
  }
  c.setDedupeExpireBefore(x.expire_before);
  c.setState(data_of(x.pre_state));
  return to_frame<schema::PreprocessEpoch>(mb);
}

frame agg_frame(const epoch_spec& x, uint32_t p) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::AggregatorEpoch>();
  c.setEpoch(x.epoch);
  c.setPartition(p);
  result_pack rs;
  for (const auto& r : x.results[p])
    rs.push_back(r);
  c.setResultPack(as_data(rs.bytes()));
  c.setState(data_of(x.states[p]));
  return to_frame<schema::AggregatorEpoch>(mb);
}

/// Sends contribution `who` of epoch x to the updater: the PreprocessEpoch when who is the
/// number of partitions, else the AggregatorEpoch of partition `who`.
void deliver(const updater_actor& upd, const epoch_spec& x, size_t who) {
  if (who == x.results.size())
    caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre_frame(x));
  else
    caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0},
                   agg_frame(x, static_cast<uint32_t>(who)));
}

using row_t = std::tuple<std::string, int64_t, int64_t, uint32_t, std::vector<double>>;

row_t row_of(const window_result& r) {
  return {r.key, r.start, r.end, r.version, r.values};
}

std::set<row_t> stored_rows(warehouse& wh, const std::string& pipeline) {
  std::set<row_t> out;
  auto err = wh.query(result_query{pipeline, {}, {}, {}, {}}, [&](const window_result& r) {
    out.insert(row_of(r));
    return true;
  });
  RC_ASSERT(!err);
  return out;
}

using letter_t = std::tuple<uint32_t, uint64_t, std::string, std::string>;

std::vector<letter_t> stored_letters(warehouse& wh, const std::string& pipeline) {
  std::vector<letter_t> out;
  auto err = wh.dead_letters(pipeline, [&](const dead_letter_row& r) {
    out.emplace_back(r.letter.source, r.letter.offset, r.letter.raw, r.letter.reason);
    return true;
  });
  RC_ASSERT(!err);
  return out;
}

template <class T>
T value_of(caf::expected<T> x) {
  RC_ASSERT(static_cast<bool>(x));
  return std::move(*x);
}

/// A window result with random values.
window_result random_row(std::string key, int64_t start, uint32_t version) {
  window_result r;
  r.key = std::move(key);
  r.start = start;
  r.end = start + 10 * us_per_s;
  r.version = version;
  r.values = {static_cast<double>(pick(0, 100)), static_cast<double>(pick(-500, 500))};
  return r;
}

std::string random_blob(const char* prefix) {
  return std::string(prefix) + std::to_string(pick(0, 1'000'000));
}

// -- a pipeline over csv input (preprocess and recovery tests) ----------------------------------

constexpr uint32_t source_id = 1;
constexpr int64_t window_s = 10;
constexpr int64_t out_of_orderness_s = 5;
constexpr int64_t in_order_s = 4; ///< a disorder below out_of_orderness: no record is late
constexpr int64_t first_time_s = 1'000;

/// What a recovery test varies besides the input and the failures.
struct scenario {
  int64_t max_disorder = in_order_s;             ///< seconds an event may lag behind
  bool append = false;                           ///< a first run reads a prefix of the input
  std::optional<int64_t> update_horizon;         ///< late = "update", with this horizon
  int64_t dedupe_horizon = 1'000'000 * us_per_s; ///< event-time span an id is remembered for
};

/// Tumbling 10 s windows, count and sum of x per key, dedupe by id (by default with a horizon
/// longer than any input), out-of-orderness larger than the disorder of the generated input by
/// default. With an update horizon, late = "update": late records update fired windows.
pipeline_config make_config(size_t partitions, const scenario& sc = {}) {
  pipeline_config p;
  p.name = "p";
  source_config s;
  s.name = "in";
  s.path = "in.csv";
  p.sources.push_back(s);
  p.fields.event_id = "id";
  p.fields.time = "ts";
  p.fields.time_fmt = time_format::epoch_s;
  p.fields.key = {"k"};
  p.fields.measures = {"x"};
  p.preprocess.dedupe = true;
  p.preprocess.dedupe_horizon = sc.dedupe_horizon;
  p.window.kind = window_kind::tumbling;
  p.window.size = window_s * us_per_s;
  p.window.slide = window_s * us_per_s;
  p.window.out_of_orderness = out_of_orderness_s * us_per_s;
  if (sc.update_horizon) {
    p.window.late = late_policy::update;
    p.window.update_horizon = *sc.update_horizon;
  }
  aggregate_config c;
  c.fn = agg_fn::count;
  c.name = "count";
  aggregate_config sum;
  sum.fn = agg_fn::sum;
  sum.field = "x";
  sum.name = "sum_x";
  p.aggregates = {c, sum};
  p.partitions = partitions;
  return p;
}

struct event {
  std::string id;
  int64_t ts = 0; ///< seconds
  std::string key;
  int x = 0;
};

/// Random events: time goes up by 0..2 s per event and each event lags by up to
/// `max_disorder` seconds; some events repeat the id of an earlier one.
std::vector<event> random_events(int max_events, int keys, int64_t max_disorder) {
  auto n = *rc::gen::inRange(1, max_events + 1);
  std::vector<event> out;
  int64_t base = first_time_s;
  for (int i = 0; i < n; ++i) {
    event e;
    base += pick(0, 3);
    e.ts = base - pick<int64_t>(0, max_disorder + 1);
    e.key = "k" + std::to_string(pick(0, keys));
    e.x = pick(0, 100);
    if (i > 0 && pick(0, 6) == 0)
      e.id = out[static_cast<size_t>(pick(0, i))].id; // a duplicate
    else
      e.id = "e" + std::to_string(i);
    out.push_back(std::move(e));
  }
  return out;
}

const std::string header = "id,ts,k,x";

/// The source text (a header line, then one line per event) and where each line starts.
struct input_text {
  std::string text;
  std::vector<uint64_t> starts; ///< starts[i]: line i (0 is the header); back() = text.size()

  size_t lines() const { return starts.size() - 1; }
};

input_text make_input(const std::vector<event>& evs) {
  input_text in;
  in.starts.push_back(0);
  in.text = header + "\n";
  for (auto& e : evs) {
    in.starts.push_back(in.text.size());
    in.text += e.id + "," + std::to_string(e.ts) + "," + e.key + "," + std::to_string(e.x) + "\n";
  }
  in.starts.push_back(in.text.size());
  return in;
}

/// The brute-force answer over the whole input, record by record in input order, as
/// docs/architecture.md and actors/core/preprocessor.hpp describe it. W, the watermark, is the
/// largest accepted time so far - out_of_orderness. A record is a duplicate when an accepted
/// record had its id, at an event time >= W - dedupe_horizon; else it is late when W >= the end
/// of its window [floor(t / 10 s) * 10 s, + 10 s); else it is accepted and counts in its window.
/// Duplicates and late records are dead letters. With a disorder below out_of_orderness no
/// record is late. When a first run ended (a final epoch) before record `appended_at`, every
/// window had fired and W moved to the end of the window of the largest accepted time: the
/// appended records of those windows are late. With late = "update", a late record with
/// W < end + update_horizon is accepted all the same (it updates its window) and leaves W as is.
struct reference {
  std::map<std::pair<std::string, int64_t>, std::pair<double, double>> windows; ///< count, sum
  std::vector<uint64_t> duplicate_offsets;
  std::vector<uint64_t> late_offsets;
  uint64_t accepted = 0;
  uint64_t late_updates = 0;
  timestamp max_accepted_time = min_timestamp;
};

reference brute_force(const std::vector<event>& evs, const input_text& in, size_t appended_at,
                      const scenario& sc) {
  reference ref;
  std::map<std::string, int64_t> seen; // id -> greatest accepted time
  auto window_start = [](int64_t ts) { return ts - (((ts % window_s) + window_s) % window_s); };
  timestamp wm = min_timestamp;
  for (size_t i = 0; i < evs.size(); ++i) {
    const auto& e = evs[i];
    if (i == appended_at && ref.max_accepted_time != min_timestamp)
      wm = std::max(wm, (window_start(ref.max_accepted_time / us_per_s) + window_s) * us_per_s);
    const int64_t t = e.ts * us_per_s;
    auto id = seen.find(e.id);
    if (id != seen.end() && (wm == min_timestamp || id->second >= wm - sc.dedupe_horizon)) {
      ref.duplicate_offsets.push_back(in.starts[i + 1]);
      continue;
    }
    const int64_t start = window_start(e.ts) * us_per_s;
    const int64_t end = start + window_s * us_per_s;
    const bool late = wm != min_timestamp && wm >= end;
    if (late && !(sc.update_horizon && wm < end + *sc.update_horizon)) {
      ref.late_offsets.push_back(in.starts[i + 1]);
      continue;
    }
    seen[e.id] = id == seen.end() ? t : std::max(id->second, t);
    ++ref.accepted;
    ref.max_accepted_time = std::max(ref.max_accepted_time, t);
    if (late)
      ++ref.late_updates;
    else
      wm = std::max(wm, t - out_of_orderness_s * us_per_s);
    auto& w = ref.windows[{e.key, start}];
    w.first += 1;
    w.second += e.x;
  }
  return ref;
}

/// Committed rows as the reference has them: (key, start) -> (count, sum).
std::map<std::pair<std::string, int64_t>, std::pair<double, double>>
windows_of(const std::set<row_t>& rows) {
  std::map<std::pair<std::string, int64_t>, std::pair<double, double>> out;
  for (auto& [key, start, end, version, values] : rows) {
    RC_ASSERT(end == start + window_s * us_per_s);
    RC_ASSERT(values.size() == 2u);
    out[{key, start}] = {values[0], values[1]};
  }
  return out;
}

/// A RawChunk of lines [from, to) of the input, as ingest sends it: the header line of the
/// source goes with the first chunk of a run.
frame chunk_frame(const input_text& in, size_t from, size_t to, bool with_header) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::RawChunk>();
  c.setSource(source_id);
  c.setOffset(in.starts[from]);
  auto data = in.text.substr(in.starts[from], in.starts[to] - in.starts[from]);
  c.setData(data_of(data));
  if (with_header)
    c.setHeader(header);
  return to_frame<schema::RawChunk>(mb);
}

/// What a generation of this pipeline starts from: recovery's restore_pipeline (the code a run
/// restarts with), and the committed offset of the one source.
struct restored {
  preprocess_restore restore;
  uint64_t first_epoch = 1;
  uint64_t offset = 0; ///< committed offset of the source
};

restored prepare_like(warehouse& wh, const pipeline_config& cfg) {
  prepared p;
  RC_ASSERT(!restore_pipeline(cfg, wh, cfg.partitions, p));
  // The partition count never changes here: a store holding another count is a test bug.
  RC_ASSERT(p.restore.partition_snapshots.size() == cfg.partitions);
  restored r;
  r.restore = std::move(p.restore);
  r.first_epoch = p.first_epoch;
  for (auto& [s, off] : value_of(wh.offsets(cfg.name)))
    if (s == source_id)
      r.offset = off;
  r.restore.bindings.emplace_back(source_id, 0);
  return r;
}

/// What ingest sends in one generation: chunks of lines and epoch markers.
struct action {
  bool is_marker = false;
  size_t from = 0, to = 0; ///< chunk: lines [from, to)
  bool with_header = false;
  epoch_marker marker;
};

/// How one generation cuts its input: chunk sizes in lines (cycled), chunks per epoch, and how
/// many messages the scheduler runs after each send (0: they pile up, so that epochs overlap).
struct pacing {
  std::vector<int> chunk_lines;
  int chunks_per_epoch = 1;
  int steps_per_send = 0;
};

pacing random_pacing() {
  pacing p;
  for (int n = pick(1, 4); n > 0; --n)
    p.chunk_lines.push_back(pick(1, 9));
  p.chunks_per_epoch = pick(1, 5);
  p.steps_per_send = pick(0, 6);
  return p;
}

/// Replays the input from line `first_line`: chunks, a normal marker after every
/// `chunks_per_epoch` chunks, and the final marker.
std::vector<action> plan(const input_text& in, size_t first_line, uint64_t first_epoch,
                         const pacing& p) {
  std::vector<action> out;
  uint64_t epoch = first_epoch;
  auto marker = [&](marker_kind kind, uint64_t offset) {
    action a;
    a.is_marker = true;
    a.marker.epoch = epoch++;
    a.marker.kind = kind;
    a.marker.offsets = {{source_id, offset}};
    out.push_back(a);
  };
  size_t line = first_line;
  size_t i = 0;
  int in_epoch = 0;
  while (line < in.lines()) {
    auto n = static_cast<size_t>(p.chunk_lines[i++ % p.chunk_lines.size()]);
    action a;
    a.from = line;
    a.to = std::min(in.lines(), line + n);
    a.with_header = line == first_line;
    out.push_back(a);
    line = a.to;
    if (++in_epoch == p.chunks_per_epoch && line < in.lines()) {
      marker(marker_kind::normal, in.starts[line]);
      in_epoch = 0;
    }
  }
  marker(marker_kind::final, in.text.size());
  return out;
}

/// How a generation ends early.
enum class ending : uint8_t {
  kill_preprocess, ///< preprocess fails (its partitions go with it: linked)
  kill_partition,  ///< one window-aggregator partition fails (and takes preprocess down)
  kill_updater,    ///< the updater fails
  stop,            ///< no failure: a stop marker (SIGINT), committed, then the generation ends
};

/// Where a generation ends: after `at_permille` of its actions were sent, and `steps` more
/// messages ran; `code` picks the error (and the partition) of a failure.
struct failure {
  ending how = ending::kill_preprocess;
  int at_permille = 0;
  int steps = 0;
  int code = 0;
};

failure random_failure() {
  failure f;
  f.how = static_cast<ending>(pick(0, 4));
  f.at_permille = pick(0, 1001);
  f.steps = pick(0, 40);
  f.code = pick(0, 12);
  return f;
}

caf::error failure_reason(int code) {
  switch (code % 3) {
    case 0:
      return make_error(errc::internal, "injected by protocol_test");
    case 1:
      return make_error(errc::store_io, "disk on fire (protocol_test)");
    default:
      return make_error(errc::record_failed, "a record broke the operator (protocol_test)");
  }
}

/// What all generations of one run committed.
struct run_totals {
  uint64_t windows_reported = 0; ///< sum of n over (committed, e, kind, n)
  std::vector<uint64_t> epochs;  ///< every epoch reported committed, in order
  bool final_committed = false;
};

/// One generation: restores from the store like `prepare`, spawns preprocess (with its
/// partitions) and an updater, and plays ingest. Without a failure it runs to the end and its
/// final epoch must be committed. With one, it kills the victim at the failure point, lets what
/// was sent play out, then stops everything like the supervisor and waits until every actor is
/// gone; or it ends the generation with a stop marker, which must be committed.
void run_generation(store& s, const pipeline_config& cfg, const input_text& in, const pacing& p,
                    const std::optional<failure>& fail, run_totals& totals) {
  world w;
  auto r = prepare_like(*s.wh, cfg);
  auto at = std::find(in.starts.begin(), in.starts.end(), r.offset);
  RC_ASSERT(at != in.starts.end()); // committed offsets are line (even chunk) boundaries
  auto first_line = static_cast<size_t>(at - in.starts.begin());
  auto actions = plan(in, first_line, r.first_epoch, p);
  proto_log log;
  auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
  auto ing = w.track(w.sys.spawn(recording_ingest, &log));
  std::vector<std::pair<std::string, size_t>> slots{{cfg.name, cfg.partitions}};
  auto upd = spawn_updater(w, slots, s.wh, coord);
  auto pre =
    w.track(w.sys.spawn(preprocess, uint32_t{0}, cfg, r.restore, upd, coord, test::no_meter));
  w.sched.run(); // preprocess spawns its partitions
  const auto partitions = state_of<preprocess_state>(pre).partitions;
  RC_ASSERT(partitions.size() == cfg.partitions);
  std::vector<caf::actor> watched{caf::actor_cast<caf::actor>(pre),
                                  caf::actor_cast<caf::actor>(upd)};
  for (auto& a : partitions)
    watched.push_back(caf::actor_cast<caf::actor>(a));
  downs_t downs;
  w.track(w.sys.spawn(watcher, watched, &downs));
  w.sched.run();
  size_t stop_at = actions.size();
  if (fail)
    stop_at = static_cast<size_t>(fail->at_permille) * (actions.size() + 1) / 1001;
  uint64_t seq = 0;
  uint64_t next_epoch = r.first_epoch;
  size_t line = first_line;
  bool last_marker_sent = false;
  auto send = [&](auto&&... xs) {
    caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                 std::forward<decltype(xs)>(xs)...);
  };
  for (size_t i = 0; i < stop_at; ++i) {
    auto& a = actions[i];
    if (a.is_marker) {
      send(marker_atom::value, encode_marker(a.marker));
      next_epoch = a.marker.epoch + 1;
      last_marker_sent = a.marker.kind != marker_kind::normal;
    } else {
      send(chunk_atom::value, ++seq, chunk_frame(in, a.from, a.to, a.with_header));
      line = a.to;
    }
    w.run_some(p.steps_per_send);
  }
  if (!fail) {
    w.sched.run();
    RC_ASSERT(!log.commits.empty());
    RC_ASSERT(std::get<1>(log.commits.back()) == marker_kind::final);
    // Flow control: every chunk was acknowledged to its sender, once.
    auto acks = log.chunk_acks;
    std::sort(acks.begin(), acks.end());
    for (size_t i = 0; i < acks.size(); ++i)
      RC_ASSERT(acks[i] == i + 1);
    RC_ASSERT(acks.size() == seq);
    // Partitions end after the final marker; preprocess and the updater stay until the
    // supervisor ends them.
    for (auto& a : partitions)
      RC_ASSERT(downs.count(a.address()) == 1u && !downs[a.address()]);
    RC_ASSERT(downs.count(pre.address()) == 0u);
    RC_ASSERT(downs.count(upd.address()) == 0u);
  } else if (fail->how == ending::stop) {
    // SIGINT: ingest ends the epoch with a stop marker at the offset it reached.
    if (!last_marker_sent) {
      epoch_marker m;
      m.epoch = next_epoch;
      m.kind = marker_kind::stop;
      m.offsets = {{source_id, in.starts[line]}};
      send(marker_atom::value, encode_marker(m));
    }
    w.sched.run();
    RC_ASSERT(!log.commits.empty());
    RC_ASSERT(std::get<1>(log.commits.back()) != marker_kind::normal);
    for (auto& a : partitions)
      RC_ASSERT(downs.count(a.address()) == 1u && !downs[a.address()]);
    RC_ASSERT(downs.count(pre.address()) == 0u);
    RC_ASSERT(downs.count(upd.address()) == 0u);
  } else {
    w.run_some(fail->steps);
    auto why = failure_reason(fail->code);
    caf::actor victim;
    switch (fail->how) {
      case ending::kill_partition:
        // A partition ends by itself after a final or stop marker: once one is on its way, a
        // failure of preprocess stands in for it.
        if (!last_marker_sent) {
          victim = caf::actor_cast<caf::actor>(
            partitions[static_cast<size_t>(fail->code) % partitions.size()]);
          break;
        }
        victim = caf::actor_cast<caf::actor>(pre);
        break;
      case ending::kill_updater:
        victim = caf::actor_cast<caf::actor>(upd);
        break;
      default:
        victim = caf::actor_cast<caf::actor>(pre);
        break;
    }
    kill(victim, why);
    w.sched.run();
    // The victim went down with its error; a partition takes preprocess down with it.
    RC_ASSERT(downs.count(victim.address()) == 1u);
    RC_ASSERT(same_error(downs[victim.address()], why));
    if (fail->how != ending::kill_updater) {
      RC_ASSERT(downs.count(pre.address()) == 1u);
      RC_ASSERT(same_error(downs[pre.address()], why));
    }
  }
  RC_ASSERT(log.failures.empty());
  // Epochs commit once each, in order, from where the store stood.
  uint64_t next = r.first_epoch;
  for (auto& [e, kind, n] : log.commits) {
    RC_ASSERT(e == next);
    ++next;
    totals.epochs.push_back(e);
    totals.windows_reported += n;
    if (kind == marker_kind::final)
      totals.final_committed = true;
  }
  RC_ASSERT(value_of(s.wh->last_epoch(cfg.name)) == next - 1);
  w.stop_all();
}

} // namespace

// -- 1. alignment ------------------------------------------------------------------------------

TEST_CASE("updater: an epoch commits once, when the preprocess and every partition contributed") {
  quiet_logs();
  rc::prop("any arrival order that keeps each sender's order", [] {
    const auto parts = static_cast<size_t>(pick(1, 5));
    const auto epochs = *rc::gen::inRange(1, 7);
    store s;
    world w;
    RC_ASSERT(static_cast<bool>(s.wh->register_pipeline("p", {"count", "sum"}, "tumbling 10s")));
    // Random contributions; window keys are unique, so the store must hold their union.
    std::vector<epoch_spec> specs;
    std::set<row_t> all_rows;
    for (int e = 1; e <= epochs; ++e) {
      epoch_spec x;
      x.epoch = static_cast<uint64_t>(e);
      x.offsets = {{source_id, static_cast<uint64_t>(100 * e)}};
      x.pre_state = random_blob("pre");
      if (pick(0, 2) == 0)
        x.letters.push_back({source_id, static_cast<uint64_t>(e), "raw", "bad"});
      x.results.resize(parts);
      for (size_t p = 0; p < parts; ++p) {
        x.states.push_back(random_blob("agg"));
        auto n = pick(0, 4);
        for (int j = 0; j < n; ++j) {
          auto start = pick<int64_t>(0, 1000) * 10 * us_per_s;
          auto key = "p" + std::to_string(p) + "e" + std::to_string(e) + "r" + std::to_string(j);
          x.results[p].push_back(random_row(key, start, 1));
          all_rows.insert(row_of(x.results[p].back()));
        }
      }
      specs.push_back(std::move(x));
    }
    // A random merge of the senders' sequences: sender `parts` is preprocess, the others are
    // partitions; each sends its contributions of epochs 1, 2, ... in order (CAF keeps the
    // order of one sender's messages), so contributions of e + 1 mix with those of e.
    std::vector<size_t> next(parts + 1, 0);
    std::vector<std::pair<size_t, size_t>> order; // (sender, epoch index)
    for (size_t left = (parts + 1) * specs.size(); left > 0; --left) {
      std::vector<size_t> open;
      for (size_t k = 0; k <= parts; ++k)
        if (next[k] < specs.size())
          open.push_back(k);
      auto k = open[static_cast<size_t>(pick<size_t>(0, open.size()))];
      order.emplace_back(k, next[k]++);
    }
    proto_log log;
    auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
    std::vector<std::pair<std::string, size_t>> slots{{"p", parts}};
    auto upd = spawn_updater(w, slots, s.wh, coord);
    w.sched.run();
    // The model: an epoch is complete when all parts + 1 contributions are in.
    std::vector<size_t> arrived(specs.size(), 0);
    std::vector<std::tuple<uint64_t, marker_kind, uint64_t>> expected_commits;
    uint64_t last = 0;
    for (auto [k, i] : order) {
      deliver(upd, specs[i], k);
      w.sched.run();
      if (++arrived[i] == parts + 1) {
        expected_commits.emplace_back(specs[i].epoch, marker_kind::normal, specs[i].rows());
        last = specs[i].epoch;
      }
      RC_ASSERT(log.commits == expected_commits);
      RC_ASSERT(value_of(s.wh->last_epoch("p")) == last);
    }
    RC_ASSERT(log.failures.empty());
    RC_ASSERT(last == static_cast<uint64_t>(epochs));
    RC_ASSERT(stored_rows(*s.wh, "p") == all_rows);
    RC_ASSERT(value_of(s.wh->windows_committed("p")) == all_rows.size());
    // Offsets and states are the last epoch's; dead letters those of every epoch.
    const auto& z = specs.back();
    RC_ASSERT(value_of(s.wh->offsets("p")) == z.offsets);
    std::map<uint32_t, std::string> want_states{{warehouse::preprocess_partition, z.pre_state}};
    for (size_t p = 0; p < parts; ++p)
      want_states[static_cast<uint32_t>(p)] = z.states[p];
    auto got_states = value_of(s.wh->states("p"));
    RC_ASSERT(
      (std::map<uint32_t, std::string>(got_states.begin(), got_states.end()) == want_states));
    std::vector<letter_t> want_letters;
    for (auto& x : specs)
      for (auto& d : x.letters)
        want_letters.emplace_back(d.source, d.offset, d.raw, d.reason);
    RC_ASSERT(stored_letters(*s.wh, "p") == want_letters);
  });
}

// -- 2. abort ----------------------------------------------------------------------------------

TEST_CASE(
  "preprocess: a partition that dies mid-epoch aborts the epoch and takes preprocess down") {
  quiet_logs();
  rc::prop("the epoch is never committed, preprocess ends with the partition's error", [] {
    const auto parts = static_cast<size_t>(pick(2, 5));
    const auto victim = static_cast<size_t>(pick<size_t>(0, parts));
    const auto variant = pick(0, 3);
    const auto batches = pick(1, 5); // chunks of epoch 2 before the failure
    const auto why = failure_reason(pick(0, 3));
    // Epoch 1: 40 events; epoch 2: `batches` chunks of 10; then (variant 2) 20 more and a
    // final marker. 24 keys, so that every partition has work.
    std::vector<event> evs;
    for (int i = 0; i < 40 + 10 * batches + 20; ++i)
      evs.push_back(
        {"e" + std::to_string(i), first_time_s + i / 2, "k" + std::to_string(i % 24), i % 7});
    auto in = make_input(evs);
    auto cfg = make_config(parts);
    store s;
    world w;
    auto r = prepare_like(*s.wh, cfg);
    proto_log log;
    auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
    auto ing = w.track(w.sys.spawn(recording_ingest, &log));
    std::vector<std::pair<std::string, size_t>> slots{{cfg.name, parts}};
    auto upd = spawn_updater(w, slots, s.wh, coord);
    auto pre =
      w.track(w.sys.spawn(preprocess, uint32_t{0}, cfg, r.restore, upd, coord, test::no_meter));
    w.sched.run();
    auto partitions = state_of<preprocess_state>(pre).partitions;
    RC_ASSERT(partitions.size() == parts);
    std::vector<caf::actor> watched{caf::actor_cast<caf::actor>(pre),
                                    caf::actor_cast<caf::actor>(upd)};
    for (auto& a : partitions)
      watched.push_back(caf::actor_cast<caf::actor>(a));
    downs_t downs;
    w.track(w.sys.spawn(watcher, watched, &downs));
    w.sched.run();
    auto send_chunk = [&](size_t from, size_t to, uint64_t seq) {
      caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                   chunk_atom::value, seq, chunk_frame(in, from, to, from == 0));
    };
    auto send_marker = [&](uint64_t e, marker_kind kind, size_t line) {
      epoch_marker m;
      m.epoch = e;
      m.kind = kind;
      m.offsets = {{source_id, in.starts[line]}};
      caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                   marker_atom::value, encode_marker(m));
    };
    // Epoch 1 commits normally.
    send_chunk(0, 41, 1);
    send_marker(1, marker_kind::normal, 41);
    w.sched.run();
    RC_ASSERT(log.commits.size() == 1u);
    RC_ASSERT(std::get<0>(log.commits[0]) == 1u);
    const auto rows_after_1 = stored_rows(*s.wh, cfg.name);
    const auto offsets_after_1 = value_of(s.wh->offsets(cfg.name));
    // Epoch 2: some batches, then the victim dies.
    size_t line = 41;
    uint64_t seq = 1;
    for (int b = 0; b < batches; ++b, line += 10)
      send_chunk(line, line + 10, ++seq);
    switch (variant) {
      case 0: // the batches were aggregated, the marker never comes
        w.sched.run();
        kill(partitions[victim], why);
        break;
      case 1: // the batches were aggregated; the marker reaches preprocess and the other
              // partitions, but the victim dies before it sees the marker
        w.sched.run();
        kill(partitions[victim], why);
        send_marker(2, marker_kind::normal, line);
        break;
      default: // the victim dies with batches still on their way; more input and markers follow
        w.run_some(pick(0, 4 * batches));
        kill(partitions[victim], why);
        send_marker(2, marker_kind::normal, line);
        send_chunk(line, line + 20, ++seq);
        line += 20;
        send_marker(3, marker_kind::final, line);
        break;
    }
    w.sched.run();
    // Nothing of epoch 2 (or later) is committed, and the store is as epoch 1 left it.
    RC_ASSERT(log.commits.size() == 1u);
    RC_ASSERT(log.failures.empty());
    RC_ASSERT(value_of(s.wh->last_epoch(cfg.name)) == 1u);
    RC_ASSERT(value_of(s.wh->offsets(cfg.name)) == offsets_after_1);
    RC_ASSERT(stored_rows(*s.wh, cfg.name) == rows_after_1);
    // Whatever of epoch 2 reached the updater stays incomplete: the victim's part is missing.
    auto& pending = state_of<updater_state>(upd).pipelines.at(0).epochs;
    for (auto& [e, contribution] : pending)
      RC_ASSERT(contribution.aggs.size() < parts);
    // Preprocess went down with the victim's error, and so did every partition (linked); the
    // updater lives on (the supervisor ends it).
    auto d = downs.find(pre.address());
    RC_ASSERT(d != downs.end());
    RC_ASSERT(same_error(d->second, why));
    for (auto& a : partitions)
      RC_ASSERT(downs.count(a.address()) == 1u);
    RC_ASSERT(same_error(downs[partitions[victim].address()], why));
    RC_ASSERT(downs.count(upd.address()) == 0u);
    // The supervisor stops the generation; the next one, restored from the store, redoes
    // epoch 2 and the rest: every window is committed once.
    w.stop_all();
    run_totals totals;
    run_generation(s, cfg, in, random_pacing(), std::nullopt, totals);
    RC_ASSERT(totals.epochs.front() == 2u);
    auto ref = brute_force(evs, in, evs.size(), scenario{});
    RC_ASSERT(windows_of(stored_rows(*s.wh, cfg.name)) == ref.windows);
    RC_ASSERT(value_of(s.wh->windows_committed(cfg.name)) == ref.windows.size());
  });
}

// -- 3. idempotent re-commit ---------------------------------------------------------------------

namespace {

/// The store as the documented commit rules make it: an epoch applies only when it is above the
/// last committed one; results upsert unless their version is lower than the stored one;
/// offsets and states replace; dedupe keeps per id the greatest time and leaves out ids below
/// the highest expiry cutoff seen; dead letters append.
struct model_store {
  uint64_t last = 0;
  std::map<std::tuple<int64_t, int64_t, std::string>, window_result> rows;
  std::map<uint32_t, uint64_t> offsets;
  std::map<uint32_t, std::string> states;
  std::map<uint64_t, int64_t> ids;
  timestamp cutoff = min_timestamp;
  std::vector<letter_t> letters;

  bool apply(const epoch_spec& x) {
    if (x.epoch <= last)
      return false;
    last = x.epoch;
    for (auto& [s, o] : x.offsets)
      offsets[s] = o;
    for (auto& d : x.letters)
      letters.emplace_back(d.source, d.offset, d.raw, d.reason);
    for (auto& part : x.results)
      for (auto& r : part) {
        auto k = std::make_tuple(r.start, r.end, r.key);
        auto i = rows.find(k);
        if (i == rows.end() || r.version >= i->second.version)
          rows[k] = r;
      }
    states[warehouse::preprocess_partition] = x.pre_state;
    for (size_t p = 0; p < x.states.size(); ++p)
      states[static_cast<uint32_t>(p)] = x.states[p];
    for (auto& [id, t] : x.dedupe) {
      auto i = ids.find(id);
      if (i == ids.end() || t > i->second)
        ids[id] = t;
    }
    cutoff = std::max(cutoff, x.expire_before);
    return true;
  }

  std::set<row_t> result_rows() const {
    std::set<row_t> out;
    for (auto& [k, r] : rows)
      out.insert(row_of(r));
    return out;
  }

  std::map<uint64_t, int64_t> live_ids() const {
    std::map<uint64_t, int64_t> out;
    for (auto& [id, t] : ids)
      if (t >= cutoff)
        out[id] = t;
    return out;
  }
};

/// A random epoch: windows from a small key and time space (so epochs update each other's
/// windows, with versions up and down), offsets, states, dedupe ids and dead letters.
epoch_spec random_epoch(uint64_t e, size_t parts) {
  epoch_spec x;
  x.epoch = e;
  for (uint32_t src = 1; src <= 2; ++src)
    if (pick(0, 3) != 0)
      x.offsets.emplace_back(src, static_cast<uint64_t>(pick(0, 100000)));
  for (int n = pick(0, 3); n > 0; --n)
    x.letters.push_back({static_cast<uint32_t>(pick(1, 3)), static_cast<uint64_t>(pick(0, 1000)),
                         random_blob("raw"), random_blob("reason")});
  for (int n = pick(0, 4); n > 0; --n)
    x.dedupe.emplace_back(static_cast<uint64_t>(pick(1, 30)), pick<int64_t>(0, 100));
  if (pick(0, 2) == 0)
    x.expire_before = pick<int64_t>(0, 60);
  x.pre_state = random_blob("pre");
  x.results.resize(parts);
  std::set<std::pair<std::string, int64_t>> used; // one row per window in a commit
  for (size_t p = 0; p < parts; ++p) {
    x.states.push_back(random_blob("agg"));
    for (int n = pick(0, 4); n > 0; --n) {
      auto key = "k" + std::to_string(pick(0, 3));
      auto start = pick<int64_t>(0, 4) * 10 * us_per_s;
      if (!used.emplace(key, start).second)
        continue;
      x.results[p].push_back(random_row(key, start, static_cast<uint32_t>(pick(1, 4))));
    }
  }
  return x;
}

} // namespace

TEST_CASE("updater: replays of committed epochs change nothing, whatever they carry") {
  quiet_logs();
  rc::prop("the store equals applying each epoch number once, the first time", [] {
    const auto parts = static_cast<size_t>(pick(1, 4));
    const auto steps = *rc::gen::inRange(1, 16);
    store s;
    world w;
    RC_ASSERT(static_cast<bool>(s.wh->register_pipeline("p", {"count", "sum"}, "tumbling 10s")));
    proto_log log;
    auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
    std::vector<std::pair<std::string, size_t>> slots{{"p", parts}};
    auto upd = spawn_updater(w, slots, s.wh, coord);
    w.sched.run();
    model_store model;
    std::vector<uint64_t> committed; // epoch numbers seen committed
    uint64_t next = 1;
    for (int i = 0; i < steps; ++i) {
      // The next epoch (one updater sees epochs in sequence: numbers are skipped only across
      // generations, and a new updater starts after the store's last epoch) or a replay of a
      // committed one with other contents (a generation that redid an epoch the store has).
      uint64_t e = 0;
      if (committed.empty() || pick(0, 3) != 0) {
        e = next;
        next = e + 1;
        committed.push_back(e);
      } else {
        e = committed[static_cast<size_t>(pick<size_t>(0, committed.size()))];
      }
      auto x = random_epoch(e, parts);
      // Contributions in a random order: each epoch is complete before the next one starts.
      std::vector<size_t> who(parts + 1);
      for (size_t k = 0; k <= parts; ++k)
        who[k] = k;
      for (size_t k = who.size(); k > 1; --k)
        std::swap(who[k - 1], who[static_cast<size_t>(pick<size_t>(0, k))]);
      for (auto k : who)
        deliver(upd, x, k);
      w.sched.run();
      const bool applies = model.apply(x);
      RC_ASSERT(log.commits.size() == static_cast<size_t>(i + 1));
      RC_ASSERT(std::get<0>(log.commits.back()) == e);
      RC_ASSERT(std::get<2>(log.commits.back()) == (applies ? x.rows() : 0u));
      RC_ASSERT(value_of(s.wh->last_epoch("p")) == model.last);
      RC_ASSERT(stored_rows(*s.wh, "p") == model.result_rows());
      auto offs = value_of(s.wh->offsets("p"));
      RC_ASSERT((std::map<uint32_t, uint64_t>(offs.begin(), offs.end()) == model.offsets));
      auto sts = value_of(s.wh->states("p"));
      RC_ASSERT((std::map<uint32_t, std::string>(sts.begin(), sts.end()) == model.states));
      auto ids = value_of(s.wh->dedupe("p"));
      RC_ASSERT((std::map<uint64_t, int64_t>(ids.begin(), ids.end()) == model.live_ids()));
      RC_ASSERT(stored_letters(*s.wh, "p") == model.letters);
    }
    RC_ASSERT(log.failures.empty());
  });
}

// -- 4. recovery ----------------------------------------------------------------------------------

namespace {

/// Zero to three generations that fail (preprocess, a partition or the updater dies) or stop
/// (SIGINT) at a random moment, then one that runs to the end, then a rerun on the finished
/// store, which must add nothing; the store must then hold the brute-force answer. With
/// `append`, a first such run reads a prefix of the input, and a second one (with failures
/// again) the whole input, as when a bounded source grew between two `weir run`. With an
/// update horizon, late records update fired windows (late = "update").
void check_recovery(const scenario& sc) {
  const auto parts = static_cast<size_t>(pick(1, 4));
  auto evs = random_events(300, 6, sc.max_disorder);
  auto in = make_input(evs);
  auto cfg = make_config(parts, sc);
  store s;
  run_totals totals;
  auto run_to_end = [&](const input_text& text) {
    for (auto fails = pick(0, 4); fails > 0; --fails)
      run_generation(s, cfg, text, random_pacing(), random_failure(), totals);
    totals.final_committed = false;
    run_generation(s, cfg, text, random_pacing(), std::nullopt, totals);
    RC_ASSERT(totals.final_committed);
  };
  size_t appended_at = evs.size();
  if (sc.append) {
    appended_at = pick<size_t>(1, evs.size() + 1);
    run_to_end(make_input({evs.begin(), evs.begin() + static_cast<ptrdiff_t>(appended_at)}));
  }
  auto ref = brute_force(evs, in, appended_at, sc);
  run_to_end(in);
  const auto rows = stored_rows(*s.wh, cfg.name);
  const auto windows = totals.windows_reported;
  run_generation(s, cfg, in, random_pacing(), std::nullopt, totals);
  RC_ASSERT(totals.windows_reported == windows);
  RC_ASSERT(stored_rows(*s.wh, cfg.name) == rows);
  // Every epoch number was committed once over all generations.
  for (size_t i = 0; i < totals.epochs.size(); ++i)
    RC_ASSERT(totals.epochs[i] == i + 1);
  // The results are the reference: each window with the right count and sum, committed once
  // (version 1), or, with late updates, once per version.
  RC_ASSERT(windows_of(rows) == ref.windows);
  for (auto& row : rows)
    RC_ASSERT((sc.update_horizon.has_value() ? std::get<3>(row) >= 1u : std::get<3>(row) == 1u));
  if (!sc.update_horizon) {
    RC_ASSERT(value_of(s.wh->windows_committed(cfg.name)) == ref.windows.size());
    RC_ASSERT(totals.windows_reported == ref.windows.size());
  } else {
    RC_ASSERT(value_of(s.wh->windows_committed(cfg.name)) >= ref.windows.size());
  }
  // Every duplicate and every late record was dead-lettered once, and the committed counters
  // count every record once, however often it was replayed.
  std::vector<uint64_t> duplicates, late;
  for (auto& [source, offset, raw, reason] : stored_letters(*s.wh, cfg.name)) {
    RC_ASSERT(source == source_id);
    if (reason.rfind("duplicate event id", 0) == 0)
      duplicates.push_back(offset);
    else if (reason.rfind(sc.update_horizon ? "too late: " : "late: ", 0) == 0)
      late.push_back(offset);
    else
      RC_FAIL("a dead letter for another reason: " + reason);
  }
  std::sort(duplicates.begin(), duplicates.end());
  std::sort(late.begin(), late.end());
  RC_ASSERT(duplicates == ref.duplicate_offsets);
  RC_ASSERT(late == ref.late_offsets);
  std::string pre_state;
  for (auto& [part, blob] : value_of(s.wh->states(cfg.name)))
    if (part == warehouse::preprocess_partition)
      pre_state = blob;
  timestamp max_time = min_timestamp;
  std::string_view inner;
  RC_ASSERT(!unwrap_state(pre_state, max_time, inner));
  auto counters = value_of(preprocessor::counters_of(inner));
  RC_ASSERT(counters.accepted == ref.accepted);
  RC_ASSERT(counters.duplicates == ref.duplicate_offsets.size());
  RC_ASSERT(counters.late == ref.late_offsets.size());
  RC_ASSERT(counters.late_updates == ref.late_updates);
  RC_ASSERT(max_time == ref.max_accepted_time);
}

} // namespace

TEST_CASE("pipeline: generations restored from the store after failures commit every window once") {
  quiet_logs();
  rc::prop("the committed results equal the brute-force windows of the whole input",
           [] { check_recovery(scenario{}); });
}

TEST_CASE("pipeline: late records are judged the same across restarts") {
  quiet_logs();
  rc::prop("with a disorder beyond out_of_orderness, late records are dead-lettered once", [] {
    scenario sc;
    sc.max_disorder = 3 * out_of_orderness_s;
    check_recovery(sc);
  });
}

TEST_CASE("pipeline: late updates of fired windows survive restarts") {
  quiet_logs();
  rc::prop("with late = update, every accepted record counts once in its window", [] {
    scenario sc;
    sc.max_disorder = 3 * out_of_orderness_s;
    sc.update_horizon = 4 * us_per_s;
    check_recovery(sc);
  });
}

TEST_CASE("pipeline: input appended after a finished run does not reopen fired windows") {
  quiet_logs();
  rc::prop("appended records of fired windows are late, the others commit once", [] {
    scenario sc;
    sc.append = true;
    check_recovery(sc);
  });
}

TEST_CASE("pipeline: event ids expire by event time the same across restarts") {
  quiet_logs();
  rc::prop("with a short dedupe horizon, a repeated id counts again once it expired", [] {
    scenario sc;
    sc.dedupe_horizon = 20 * us_per_s;
    check_recovery(sc);
  });
}

TEST_CASE("updater: an epoch marker kind the build does not know is refused and not guessed") {
  for (uint16_t raw : {0, 1, 2, 3, 7, 65535}) {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::PreprocessEpoch>();
    c.setEpoch(1);
    c.setMarkerKind(static_cast<schema::MarkerKind>(raw));
    marker_kind kind = marker_kind::normal;
    auto got = assemble_commit("p", to_frame<schema::PreprocessEpoch>(mb), {}, kind);
    INFO("raw kind " << raw);
    if (raw <= 2) {
      REQUIRE(got);
      CHECK(static_cast<uint16_t>(kind) == raw);
    } else {
      REQUIRE_FALSE(got);
      CHECK(render(got.error()).find("marker kind") != std::string::npos);
    }
  }
}

TEST_CASE("updater and preprocess: a frame of another struct fails the decode, not misread") {
  quiet_logs();
  // Epoch 1 of a pipeline of one partition: each contribution also goes to the slot of the
  // other struct. An AggregatorEpoch read as a PreprocessEpoch would give the same epoch number
  // (both start with it) and empty offsets, so misread it would commit.
  epoch_spec x;
  x.epoch = 1;
  x.offsets = {{source_id, 100}};
  x.pre_state = "pre";
  x.results = {{window_result{"k", 0, 10 * us_per_s, 1, {1.0, 2.0}}}};
  x.states = {"agg"};
  const std::string wrong_struct =
    "undecodable PreprocessEpoch frame: it holds AggregatorEpoch, not PreprocessEpoch";
  for (bool pre_slot : {true, false}) {
    INFO("the wrong frame goes to the " << (pre_slot ? "PreprocessEpoch" : "AggregatorEpoch")
                                        << " slot");
    store s;
    world w;
    REQUIRE(static_cast<bool>(s.wh->register_pipeline("p", {"count", "sum"}, "tumbling 10s")));
    proto_log log;
    auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
    auto upd = spawn_updater(w, {{"p", 1}}, s.wh, coord);
    downs_t downs;
    w.track(
      w.sys.spawn(watcher, std::vector<caf::actor>{caf::actor_cast<caf::actor>(upd)}, &downs));
    w.sched.run();
    if (pre_slot) {
      caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg_frame(x, 0));
      caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, agg_frame(x, 0));
    } else {
      caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre_frame(x));
      caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, pre_frame(x));
    }
    w.sched.run();
    CHECK(log.commits.empty());
    CHECK(*s.wh->last_epoch("p") == 0);
    REQUIRE(log.failures.size() == 1);
    const std::string want =
      pre_slot ? wrong_struct
               : "undecodable AggregatorEpoch frame: it holds PreprocessEpoch, not AggregatorEpoch";
    CHECK(log.failures[0] == want);
    REQUIRE(downs.size() == 1);
    auto reason = downs.begin()->second;
    CHECK(reason.code() == static_cast<uint8_t>(errc::decode));
    CHECK(render(reason) == want);
    w.stop_all();
  }
  // Preprocess given an EventBatch where a RawChunk belongs: the generation fails, nothing is
  // processed or acknowledged.
  store s;
  world w;
  const auto cfg = make_config(2);
  proto_log log;
  auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
  auto ing = w.track(w.sys.spawn(recording_ingest, &log));
  auto upd = spawn_updater(w, {{cfg.name, cfg.partitions}}, s.wh, coord);
  auto r = prepare_like(*s.wh, cfg);
  auto pre =
    w.track(w.sys.spawn(preprocess, uint32_t{0}, cfg, r.restore, upd, coord, test::no_meter));
  downs_t downs;
  w.track(w.sys.spawn(watcher, std::vector<caf::actor>{caf::actor_cast<caf::actor>(pre)}, &downs));
  w.sched.run();
  event_columns cols;
  caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
               chunk_atom::value, uint64_t{1},
               encode_event_batch(0, 0, cols, make_layout(cfg.aggregates)));
  w.sched.run();
  CHECK(log.chunk_acks.empty());
  REQUIRE(downs.size() == 1);
  CHECK(downs.begin()->second.code() == static_cast<uint8_t>(errc::decode));
  CHECK(render(downs.begin()->second) ==
        "undecodable RawChunk frame: it holds EventBatch, not RawChunk");
  w.stop_all();
}

TEST_CASE("preprocess: a partition given a marker frame it cannot decode fails the generation") {
  quiet_logs();
  // Epoch 1 commits. In epoch 2 partition 0 gets, before the real marker, a marker of a kind
  // this build does not know (as from another build on another node): it must fail with
  // errc::decode and take preprocess down, and nothing of epoch 2 may be committed.
  std::vector<event> evs;
  for (int i = 0; i < 60; ++i)
    evs.push_back(
      {"e" + std::to_string(i), first_time_s + i / 2, "k" + std::to_string(i % 24), i % 7});
  auto in = make_input(evs);
  const auto cfg = make_config(2);
  store s;
  world w;
  auto r = prepare_like(*s.wh, cfg);
  proto_log log;
  auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
  auto ing = w.track(w.sys.spawn(recording_ingest, &log));
  auto upd = spawn_updater(w, {{cfg.name, cfg.partitions}}, s.wh, coord);
  auto pre =
    w.track(w.sys.spawn(preprocess, uint32_t{0}, cfg, r.restore, upd, coord, test::no_meter));
  w.sched.run();
  const auto partitions = state_of<preprocess_state>(pre).partitions;
  REQUIRE(partitions.size() == 2);
  downs_t downs;
  w.track(w.sys.spawn(watcher,
                      std::vector<caf::actor>{caf::actor_cast<caf::actor>(pre),
                                              caf::actor_cast<caf::actor>(partitions[0])},
                      &downs));
  w.sched.run();
  auto as_ingest = [&](auto&&... xs) {
    caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                 std::forward<decltype(xs)>(xs)...);
  };
  auto marker = [&](uint64_t e, marker_kind kind, size_t line) {
    epoch_marker m;
    m.epoch = e;
    m.kind = kind;
    m.offsets = {{source_id, in.starts[line]}};
    return encode_marker(m);
  };
  as_ingest(chunk_atom::value, uint64_t{1}, chunk_frame(in, 0, 30, true));
  as_ingest(marker_atom::value, marker(1, marker_kind::normal, 30));
  w.sched.run();
  REQUIRE(log.commits.size() == 1);
  REQUIRE(downs.empty());
  const auto offsets_after_1 = value_of(s.wh->offsets(cfg.name));
  as_ingest(chunk_atom::value, uint64_t{2}, chunk_frame(in, 30, 60, false));
  w.sched.run();
  capnp::MallocMessageBuilder mb;
  auto bad = mb.initRoot<schema::EpochMarker>();
  bad.setEpoch(2);
  bad.setKind(static_cast<schema::MarkerKind>(7));
  bad.setWatermark(max_timestamp);
  bad.setCheckpoint(true);
  caf::send_as(caf::actor_cast<caf::actor>(pre), partitions[0], marker_atom::value,
               to_frame<schema::EpochMarker>(mb));
  as_ingest(marker_atom::value, marker(2, marker_kind::final, 60));
  w.sched.run();
  const std::string want =
    "undecodable EpochMarker frame: a marker kind this build does not know (7)";
  REQUIRE(downs.count(partitions[0].address()) == 1);
  CHECK(downs[partitions[0].address()].code() == static_cast<uint8_t>(errc::decode));
  CHECK(render(downs[partitions[0].address()]) == want);
  REQUIRE(downs.count(pre.address()) == 1); // linked: the generation ends
  CHECK(render(downs[pre.address()]) == want);
  CHECK(log.commits.size() == 1);
  CHECK(value_of(s.wh->last_epoch(cfg.name)) == 1u);
  CHECK(value_of(s.wh->offsets(cfg.name)) == offsets_after_1);
  w.stop_all();
}

TEST_CASE("preprocess: a marker frame from ingest it cannot decode fails the generation") {
  quiet_logs();
  // Epoch 1 commits with the offset its marker frame carried. In epoch 2 ingest (on another
  // node, say) sends a marker frame preprocess cannot take: preprocess must fail with
  // errc::decode, its partitions with it, and nothing of epoch 2 may be committed.
  struct bad_marker {
    const char* what;
    frame f;
    std::string want;
  };
  std::vector<bad_marker> cases;
  {
    capnp::MallocMessageBuilder mb;
    auto m = mb.initRoot<schema::EpochMarker>();
    m.setEpoch(2);
    m.setKind(static_cast<schema::MarkerKind>(9));
    cases.push_back({"unknown kind", to_frame<schema::EpochMarker>(mb),
                     "undecodable EpochMarker frame: a marker kind this build does not know (9)"});
  }
  {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::RawChunk>();
    c.setSource(source_id);
    cases.push_back({"another struct", to_frame<schema::RawChunk>(mb),
                     "undecodable EpochMarker frame: it holds RawChunk, not EpochMarker"});
  }
  {
    epoch_marker m;
    m.epoch = 2;
    m.kind = marker_kind::final;
    m.offsets.assign((size_t{1} << 20) + 1, {source_id, 0});
    cases.push_back({"too many offsets", encode_marker(m),
                     "undecodable EpochMarker frame: 1048577 offsets, more than the 1048576 "
                     "allowed"});
  }
  std::vector<event> evs;
  for (int i = 0; i < 60; ++i)
    evs.push_back(
      {"e" + std::to_string(i), first_time_s + i / 2, "k" + std::to_string(i % 24), i % 7});
  auto in = make_input(evs);
  const auto cfg = make_config(2);
  for (auto& bad : cases) {
    INFO(bad.what);
    store s;
    world w;
    auto r = prepare_like(*s.wh, cfg);
    proto_log log;
    auto coord = w.track(w.sys.spawn(recording_coordinator, &log));
    auto ing = w.track(w.sys.spawn(recording_ingest, &log));
    auto upd = spawn_updater(w, {{cfg.name, cfg.partitions}}, s.wh, coord);
    auto pre =
      w.track(w.sys.spawn(preprocess, uint32_t{0}, cfg, r.restore, upd, coord, test::no_meter));
    w.sched.run();
    const auto partitions = state_of<preprocess_state>(pre).partitions;
    REQUIRE(partitions.size() == 2);
    downs_t downs;
    w.track(w.sys.spawn(watcher,
                        std::vector<caf::actor>{caf::actor_cast<caf::actor>(pre),
                                                caf::actor_cast<caf::actor>(partitions[0])},
                        &downs));
    w.sched.run();
    auto as_ingest = [&](auto&&... xs) {
      caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                   std::forward<decltype(xs)>(xs)...);
    };
    epoch_marker m1;
    m1.epoch = 1;
    m1.offsets = {{source_id, in.starts[30]}};
    as_ingest(chunk_atom::value, uint64_t{1}, chunk_frame(in, 0, 30, true));
    as_ingest(marker_atom::value, encode_marker(m1));
    w.sched.run();
    REQUIRE(log.commits.size() == 1);
    REQUIRE(downs.empty());
    const auto offsets_after_1 = value_of(s.wh->offsets(cfg.name));
    const std::vector<std::pair<uint32_t, uint64_t>> want_offsets{{source_id, in.starts[30]}};
    CHECK(offsets_after_1 == want_offsets); // the offset came through the marker frame
    as_ingest(chunk_atom::value, uint64_t{2}, chunk_frame(in, 30, 60, false));
    as_ingest(marker_atom::value, bad.f);
    w.sched.run();
    REQUIRE(downs.count(pre.address()) == 1);
    CHECK(downs[pre.address()].code() == static_cast<uint8_t>(errc::decode));
    CHECK(render(downs[pre.address()]) == bad.want);
    CHECK(downs.count(partitions[0].address()) == 1); // linked: the generation ends
    CHECK(log.commits.size() == 1);
    CHECK(value_of(s.wh->last_epoch(cfg.name)) == 1u);
    CHECK(value_of(s.wh->offsets(cfg.name)) == offsets_after_1);
    w.stop_all();
  }
}
