// Deterministic tests of each actor under CAF's test_coordinator (scheduler.policy = testing).
// Peers are recording fakes with the same typed interfaces; expected values come from small
// brute-force computations here.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <capnp/message.h>

#include "actors/aggregator.hpp"
#include "actors/coordinator.hpp"
#include "actors/frame.hpp"
#include "actors/ingest.hpp"
#include "actors/preprocess.hpp"
#include "actors/updater.hpp"
#include "actors/warehouse.hpp"
#include "schema/batch.capnp.h"
#include "tests/actor_test_support.hpp"

using namespace weir;
namespace fs = std::filesystem;

namespace {

using test_config = weir::test::deterministic_config;

struct fixture {
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
    dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  fs::path dir;
  fixture() {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("weir-actors-" + std::to_string(rd()));
    fs::create_directories(dir);
  }
  ~fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

/// What the fakes saw.
struct log_t {
  std::vector<uint64_t> epochs;                    // ingest: epochs started
  std::vector<uint64_t> committed;                 // ingest: epochs committed
  std::vector<std::pair<uint32_t, uint64_t>> acks; // preprocess: (partition, seq)
  std::vector<uint64_t> chunk_acks;                // ingest: chunk acks
  std::vector<frame> chunks;                       // preprocess: chunks
  std::vector<epoch_marker> markers;               // preprocess: markers
  std::vector<frame> pre_epochs;                   // updater
  std::vector<frame> agg_epochs;                   // updater
  std::vector<std::tuple<uint32_t, uint64_t, marker_kind, uint64_t>> commits; // coordinator
  std::vector<run_stats> stats;         // waiter / coordinator
  std::vector<uint32_t> done;           // coordinator: done_atom
  std::vector<uint32_t> epoch_requests; // coordinator: (epoch, index) from ingest
  std::vector<std::pair<uint32_t, uint64_t>> waiter_commits; // waiter: (pipeline, windows)
  bool waiter_done = false;
  std::string failure;
};

ingest_actor::behavior_type fake_ingest(ingest_actor::pointer self, log_t* log) {
  return {
    [log](ack_atom, uint64_t seq) { log->chunk_acks.push_back(seq); },
    [log](epoch_atom, uint64_t e) { log->epochs.push_back(e); },
    [log](committed_atom, uint64_t e) { log->committed.push_back(e); },
    [](read_atom) {},
    [](stop_atom) {},
  };
}

preprocess_actor::behavior_type fake_preprocess(preprocess_actor::pointer self, log_t* log) {
  return {
    [self, log](chunk_atom, uint64_t seq, const frame& f) {
      log->chunks.push_back(f);
      self->send(caf::actor_cast<ingest_actor>(self->current_sender()), ack_atom::value, seq);
    },
    [log](ack_atom, uint32_t p, uint64_t seq) { log->acks.emplace_back(p, seq); },
    [log](marker_atom, const frame& f) {
      epoch_marker m;
      CHECK_FALSE(decode_marker(f, m, max_marker_offsets));
      log->markers.push_back(std::move(m));
    },
  };
}

updater_actor::behavior_type fake_updater(updater_actor::pointer self, log_t* log) {
  return {
    [log](pre_epoch_atom, uint32_t, const frame& f) { log->pre_epochs.push_back(f); },
    [log](agg_epoch_atom, uint32_t, const frame& f) { log->agg_epochs.push_back(f); },
  };
}

coordinator_actor::behavior_type fake_coordinator(coordinator_actor::pointer self, log_t* log) {
  return {
    [](tick_atom) {},
    [](register_atom, uint32_t, const ingest_actor&) {},
    [log](committed_atom, uint32_t i, uint64_t e, marker_kind k, uint64_t n) {
      log->commits.emplace_back(i, e, k, n);
    },
    [log](stats_atom, uint32_t, const run_stats& s) { log->stats.push_back(s); },
    [](stop_atom) {},
    [log](fail_atom, const std::string& why) { log->failure = why; },
    [log](done_atom, uint32_t i) { log->done.push_back(i); },
    [log](epoch_atom, uint32_t i) { log->epoch_requests.push_back(i); },
  };
}

run_waiter_actor::behavior_type fake_waiter(run_waiter_actor::pointer self, log_t* log) {
  return {
    [log](stats_atom, const run_stats& s) { log->stats.push_back(s); },
    [log](done_atom) { log->waiter_done = true; },
    [log](fail_atom, const std::string& why) { log->failure = why; },
    [log](committed_atom, uint32_t i, uint64_t, uint64_t windows, int64_t) {
      log->waiter_commits.emplace_back(i, windows);
    },
  };
}

pipeline_config tumbling_config(int64_t size, int64_t ooo) {
  pipeline_config p;
  p.name = "t";
  source_config s;
  s.name = "in";
  s.path = "in.csv";
  p.sources.push_back(s);
  p.fields.time = "ts";
  p.fields.time_fmt = time_format::epoch_s;
  p.fields.key = {"k"};
  p.fields.measures = {"x"};
  p.window.kind = window_kind::tumbling;
  p.window.size = size;
  p.window.slide = size;
  p.window.out_of_orderness = ooo;
  aggregate_config c;
  c.fn = agg_fn::count;
  c.name = "count";
  aggregate_config s1;
  s1.fn = agg_fn::sum;
  s1.field = "x";
  s1.name = "sum_x";
  aggregate_config m;
  m.fn = agg_fn::max;
  m.field = "x";
  m.name = "max_x";
  p.aggregates = {c, s1, m};
  p.partitions = 1;
  return p;
}

std::vector<window_result> results_of(const std::vector<frame>& frames) {
  std::vector<window_result> out;
  for (auto& f : frames) {
    auto err = decode_frame<schema::AggregatorEpoch>(f, [&](schema::AggregatorEpoch::Reader root) {
      result_pack pack;
      REQUIRE(pack.assign(as_view(root.getResultPack())));
      for (auto w : pack)
        out.push_back(w);
    });
    REQUIRE(!err);
  }
  return out;
}

} // namespace

TEST_CASE_METHOD(fixture, "coordinator: epochs on the timer, two in flight, final ends the run") {
  log_t log;
  auto ing = sys.spawn(fake_ingest, &log);
  auto waiter = sys.spawn(fake_waiter, &log);
  runtime_config rt;
  rt.commit_interval = 100 * us_per_ms;
  auto coord = sys.spawn(coordinator, std::vector<uint64_t>{5}, rt, waiter);
  caf::anon_send(coord, register_atom::value, uint32_t{0}, ing);
  sched.run();
  CHECK(log.epochs.empty());
  sched.advance_time(std::chrono::milliseconds(100));
  sched.run();
  CHECK(log.epochs == std::vector<uint64_t>{5});
  sched.advance_time(std::chrono::milliseconds(100));
  sched.run();
  CHECK(log.epochs == std::vector<uint64_t>{5, 6}); // the next one overlaps the commit of 5
  sched.advance_time(std::chrono::milliseconds(100));
  sched.run();
  CHECK(log.epochs == std::vector<uint64_t>{5, 6}); // two in flight: no third
  caf::anon_send(coord, committed_atom::value, uint32_t{0}, uint64_t{5}, marker_kind::normal,
                 uint64_t{3});
  sched.run();
  CHECK(log.committed == std::vector<uint64_t>{5});
  // The tick that found two in flight is honoured as soon as 5 is committed.
  CHECK(log.epochs == std::vector<uint64_t>{5, 6, 7});
  caf::anon_send(coord, epoch_atom::value, uint32_t{0}); // commit_events reached
  sched.run();
  CHECK(log.epochs == std::vector<uint64_t>{5, 6, 7}); // remembered, not lost
  caf::anon_send(coord, committed_atom::value, uint32_t{0}, uint64_t{6}, marker_kind::normal,
                 uint64_t{0});
  sched.run();
  CHECK(log.epochs == std::vector<uint64_t>{5, 6, 7, 8});
  run_stats s;
  s.pipeline = "t";
  s.read = 42;
  caf::anon_send(coord, stats_atom::value, uint32_t{0}, s);
  caf::anon_send(coord, committed_atom::value, uint32_t{0}, uint64_t{7}, marker_kind::final,
                 uint64_t{2});
  sched.run();
  CHECK(log.waiter_done);
  REQUIRE(log.stats.size() == 1);
  CHECK(log.stats[0].read == 42);
  CHECK(log.stats[0].windows_committed == 5);
  CHECK(log.stats[0].epochs_committed == 3);
  using wc = std::pair<uint32_t, uint64_t>;
  CHECK(log.waiter_commits == std::vector<wc>{{0, 3}, {0, 0}, {0, 2}});
}

TEST_CASE_METHOD(fixture, "aggregator: batches and markers give the brute-force windows") {
  log_t log;
  const int64_t size = 10 * us_per_s, ooo = 3 * us_per_s;
  auto cfg = tumbling_config(size, ooo);
  auto layout = make_layout(cfg.aggregates);
  auto pre = sys.spawn(fake_preprocess, &log);
  auto upd = sys.spawn(fake_updater, &log);
  auto meter = std::make_shared<state_meter>();
  meter->mailboxes.size_partitions(1);
  auto agg = sys.spawn(aggregator, uint32_t{0}, uint32_t{0}, cfg, std::string{}, pre, upd, meter);
  sched.run();
  std::mt19937_64 rng(7);
  // Events with jitter; W before each is max seen - ooo (the preprocess rule).
  struct ev {
    int64_t t;
    std::string k;
    double x;
    int64_t w;
  };
  std::vector<ev> evs;
  int64_t max_t = min_timestamp;
  for (int i = 0; i < 600; ++i) {
    int64_t t = (1000 + i) * us_per_s / 2 - static_cast<int64_t>(rng() % 6) * us_per_s;
    int64_t w = max_t == min_timestamp ? min_timestamp : max_t - ooo;
    evs.push_back({t, "k" + std::to_string(rng() % 4), static_cast<double>(rng() % 1000), w});
    max_t = std::max(max_t, t);
  }
  // Reference: a record goes to its window unless W >= end; all windows fire at the end.
  std::map<std::tuple<int64_t, std::string>, std::tuple<double, double, double>> ref;
  for (auto& e : evs) {
    int64_t s = e.t - (((e.t % size) + size) % size);
    if (e.w != min_timestamp && e.w >= s + size)
      continue;
    auto& [c, sum, mx] = ref[{s, e.k}];
    if (c == 0)
      mx = -INFINITY;
    c += 1;
    sum += e.x;
    mx = std::max(mx, e.x);
  }
  // Three batches, a normal marker in between, then the final marker.
  size_t cut[] = {0, 200, 450, evs.size()};
  for (int b = 0; b < 3; ++b) {
    event_columns cols;
    for (size_t i = cut[b]; i < cut[b + 1]; ++i) {
      cols.time.push_back(evs[i].t);
      cols.wm_before.push_back(evs[i].w);
      cols.key_hash.push_back(std::hash<std::string>{}(evs[i].k));
      cols.key_bytes += evs[i].k;
      cols.key_end.push_back(static_cast<uint32_t>(cols.key_bytes.size()));
      cols.values.push_back(evs[i].x); // sum
      cols.values.push_back(evs[i].x); // max
    }
    caf::anon_send(agg, batch_atom::value, uint64_t(b + 1),
                   encode_event_batch(0, evs[cut[b + 1] - 1].w, cols, layout));
    if (b == 1) {
      epoch_marker m;
      m.epoch = 1;
      m.watermark = evs[cut[2] - 1].w;
      caf::anon_send(agg, marker_atom::value, encode_marker(m));
    }
  }
  epoch_marker fin;
  fin.epoch = 2;
  fin.kind = marker_kind::final;
  caf::anon_send(agg, marker_atom::value, encode_marker(fin));
  // Five messages wait (three batches, two markers): handling the first, it sees the other four.
  sched.run_once();
  CHECK(meter->mailboxes.partition_depth(0) == 4);
  sched.run();
  CHECK(meter->mailboxes.partition_depth(0) == 0);
  CHECK(log.acks.size() == 3);
  REQUIRE(log.agg_epochs.size() == 2);
  auto got = results_of(log.agg_epochs);
  REQUIRE(got.size() == ref.size());
  for (auto& w : got) {
    auto i = ref.find({w.start, w.key});
    REQUIRE(i != ref.end());
    CHECK(w.end == w.start + size);
    CHECK(w.values[0] == std::get<0>(i->second));
    CHECK(w.values[1] == Approx(std::get<1>(i->second)));
    CHECK(w.values[2] == std::get<2>(i->second));
  }
}

TEST_CASE_METHOD(fixture, "aggregator: a marker frame of an unknown kind or another struct "
                          "ends it with errc::decode, before it fires or contributes") {
  log_t log;
  auto cfg = tumbling_config(10 * us_per_s, 0);
  auto pre = sys.spawn(fake_preprocess, &log);
  auto upd = sys.spawn(fake_updater, &log);
  // A marker of kind 3 (MarkerKind knows 0 to 2), as another build might send it.
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::EpochMarker>();
  m.setEpoch(1);
  m.setKind(static_cast<schema::MarkerKind>(3));
  m.setWatermark(100 * us_per_s);
  m.setCheckpoint(true);
  const auto unknown_kind = to_frame<schema::EpochMarker>(mb);
  // A PreprocessEpoch of epoch 1 (it starts with the epoch too), and an EventBatch.
  capnp::MallocMessageBuilder pb;
  pb.initRoot<schema::PreprocessEpoch>().setEpoch(1);
  const auto pre_epoch = to_frame<schema::PreprocessEpoch>(pb);
  const auto batch = encode_event_batch(0, 0, event_columns{}, make_layout(cfg.aggregates));
  const std::vector<std::pair<frame, std::string>> cases = {
    {unknown_kind, "undecodable EpochMarker frame: a marker kind this build does not know (3)"},
    {pre_epoch, "undecodable EpochMarker frame: it holds PreprocessEpoch, not EpochMarker"},
    {batch, "undecodable EpochMarker frame: it holds EventBatch, not EpochMarker"},
  };
  for (const auto& [bad, want] : cases) {
    INFO(want);
    auto agg =
      sys.spawn(aggregator, uint32_t{0}, uint32_t{0}, cfg, std::string{}, pre, upd, nullptr);
    caf::error reason;
    bool down = false;
    auto watch = sys.spawn([&, agg](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(agg);
      self->set_down_handler([&](caf::down_msg& dm) {
        down = true;
        reason = dm.reason;
      });
      return {[](caf::ok_atom) {}};
    });
    sched.run();
    caf::anon_send(agg, marker_atom::value, bad);
    sched.run();
    REQUIRE(down);
    CHECK(reason.code() == static_cast<uint8_t>(errc::decode));
    CHECK(render(reason) == want);
    CHECK(log.agg_epochs.empty());
    caf::anon_send_exit(watch, caf::exit_reason::user_shutdown);
    sched.run();
  }
  // The same marker with a known kind is taken: a contribution of epoch 1.
  auto agg = sys.spawn(aggregator, uint32_t{0}, uint32_t{0}, cfg, std::string{}, pre, upd, nullptr);
  sched.run();
  m.setKind(schema::MarkerKind::NORMAL);
  caf::anon_send(agg, marker_atom::value, to_frame<schema::EpochMarker>(mb));
  sched.run();
  REQUIRE(log.agg_epochs.size() == 1);
  REQUIRE_FALSE(decode_frame<schema::AggregatorEpoch>(
    log.agg_epochs[0], [](schema::AggregatorEpoch::Reader c) { CHECK(c.getEpoch() == 1); }));
  caf::anon_send_exit(agg, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_CASE_METHOD(fixture,
                 "updater: commits a complete epoch once and a replayed epoch is a no-op") {
  log_t log;
  auto wh = warehouse::open((dir / "warehouse").string());
  REQUIRE(wh);
  auto whp = std::make_shared<warehouse>(std::move(*wh));
  REQUIRE(whp->register_pipeline("t", {"count"}, "tumbling 10s"));
  auto coord = sys.spawn(fake_coordinator, &log);
  auto upd = sys.spawn(updater, std::vector<std::pair<std::string, size_t>>{{"t", 2}}, whp, coord,
                       commit_mode::exactly_once, std::shared_ptr<state_meters>{});
  auto pre_frame = [](uint64_t e) {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::PreprocessEpoch>();
    c.setEpoch(e);
    auto o = c.initOffsets(1);
    o[0].setSource(1);
    o[0].setOffset(100 * e);
    dead_letter_pack d;
    d.add(1, 7, "bad number in field x: 'q'", "");
    c.setDeadLetterPack(
      capnp::Data::Reader(reinterpret_cast<const kj::byte*>(d.bytes().data()), d.bytes().size()));
    return to_frame<schema::PreprocessEpoch>(mb);
  };
  auto agg_frame = [](uint64_t e, uint32_t p, int64_t start) {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::AggregatorEpoch>();
    c.setEpoch(e);
    c.setPartition(p);
    result_pack rs;
    rs.push_back({"k" + std::to_string(p), start, start + 10, 1, {3.0}});
    c.setResultPack(as_data(rs.bytes()));
    c.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("s"), 1));
    return to_frame<schema::AggregatorEpoch>(mb);
  };
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg_frame(1, 0, 0));
  caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre_frame(1));
  sched.run();
  CHECK(log.commits.empty()); // partition 1 is missing
  CHECK(*whp->last_epoch("t") == 0);
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg_frame(1, 1, 0));
  sched.run();
  REQUIRE(log.commits.size() == 1);
  CHECK(std::get<1>(log.commits[0]) == 1);
  CHECK(std::get<3>(log.commits[0]) == 2);
  CHECK(*whp->last_epoch("t") == 1);
  size_t rows = 0;
  REQUIRE(!whp->query(result_query{"t", {}, {}, {}, {}}, [&](const window_result& r) {
    ++rows;
    CHECK(r.values == std::vector<double>{3.0});
    return true;
  }));
  CHECK(rows == 2);
  // The same epoch again (a replay) commits nothing new.
  caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre_frame(1));
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg_frame(1, 0, 20));
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg_frame(1, 1, 20));
  sched.run();
  REQUIRE(log.commits.size() == 2);
  CHECK(std::get<3>(log.commits[1]) == 0);
  rows = 0;
  REQUIRE(!whp->query(result_query{"t", {}, {}, {}, {}}, [&](const window_result&) {
    ++rows;
    return true;
  }));
  CHECK(rows == 2);
  size_t letters = 0;
  REQUIRE(!whp->dead_letters(std::string{"t"}, [&](const dead_letter_row& r) {
    ++letters;
    CHECK(r.letter.offset == 7);
    return true;
  }));
  CHECK(letters == 1);
}

TEST_CASE_METHOD(fixture, "updater: epochs commit in order, each partition counted once") {
  log_t log;
  auto wh = warehouse::open((dir / "warehouse").string());
  REQUIRE(wh);
  auto whp = std::make_shared<warehouse>(std::move(*wh));
  REQUIRE(whp->register_pipeline("t", {"count"}, "tumbling 10s"));
  auto coord = sys.spawn(fake_coordinator, &log);
  auto upd = sys.spawn(updater, std::vector<std::pair<std::string, size_t>>{{"t", 2}}, whp, coord,
                       commit_mode::exactly_once, std::shared_ptr<state_meters>{});
  auto pre = [](uint64_t e) {
    capnp::MallocMessageBuilder mb;
    mb.initRoot<schema::PreprocessEpoch>().setEpoch(e);
    return to_frame<schema::PreprocessEpoch>(mb);
  };
  auto agg = [](uint64_t e, uint32_t p) {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::AggregatorEpoch>();
    c.setEpoch(e);
    c.setPartition(p);
    result_pack rs;
    rs.push_back({"e" + std::to_string(e) + "p" + std::to_string(p), 0, 10, 1, {1.0}});
    c.setResultPack(as_data(rs.bytes()));
    return to_frame<schema::AggregatorEpoch>(mb);
  };
  // Epoch 2 is complete before epoch 1: it waits, then both commit, 1 first.
  caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre(2));
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg(2, 0));
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg(2, 1));
  caf::anon_send(upd, pre_epoch_atom::value, uint32_t{0}, pre(1));
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg(1, 0));
  // A second contribution of partition 0 does not stand in for partition 1.
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg(1, 0));
  sched.run();
  CHECK(log.commits.empty());
  CHECK(*whp->last_epoch("t") == 0);
  caf::anon_send(upd, agg_epoch_atom::value, uint32_t{0}, agg(1, 1));
  sched.run();
  REQUIRE(log.commits.size() == 2);
  CHECK(std::get<1>(log.commits[0]) == 1);
  CHECK(std::get<3>(log.commits[0]) == 2);
  CHECK(std::get<1>(log.commits[1]) == 2);
  CHECK(std::get<3>(log.commits[1]) == 2);
  CHECK(*whp->last_epoch("t") == 2);
  std::set<std::string> keys;
  REQUIRE(!whp->query(result_query{"t", {}, {}, {}, {}}, [&](const window_result& r) {
    keys.insert(r.key);
    return true;
  }));
  CHECK(keys == std::set<std::string>{"e1p0", "e1p1", "e2p0", "e2p1"});
}

TEST_CASE_METHOD(fixture, "ingest: lands every chunk in the lake before sending it, in order") {
  log_t log;
  std::string text = "ts,k,x\n";
  for (int i = 0; i < 3000; ++i)
    text +=
      std::to_string(1000 + i) + ",k" + std::to_string(i % 5) + "," + std::to_string(i) + "\n";
  text += "1,k,last-line-without-newline";
  auto path = (dir / "in.csv").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << text;
  }
  auto lk = lake::open((dir / "lake").string());
  REQUIRE(lk);
  auto lkp = std::make_shared<lake>(std::move(*lk));
  source_input in;
  in.key = "t/in/" + path;
  in.id = *lkp->source_id(in.key);
  in.path = path;
  in.cfg.name = "in";
  runtime_config rt;
  rt.batch_bytes = 1000;
  rt.max_inflight_batches = 2;
  rt.commit_events = 500; // about 6 batches of lines: ingest asks for an epoch once
  auto pre = sys.spawn(fake_preprocess, &log);
  auto coord = sys.spawn(fake_coordinator, &log);
  auto meters = std::make_shared<state_meters>(1);
  std::shared_ptr<state_meter> meter{meters, &(*meters)[0]};
  auto ing =
    sys.spawn(ingest, uint32_t{0}, std::vector<source_input>{in}, rt, lkp, pre, coord, meter);
  sched.run();
  // Everything was sent, in order, as whole lines, and each chunk is in the lake.
  std::string seen;
  uint64_t expect_offset = 0;
  for (auto& f : log.chunks) {
    REQUIRE(!decode_frame<schema::RawChunk>(f, [&](schema::RawChunk::Reader c) {
      CHECK(c.getSource() == in.id);
      CHECK(c.getOffset() == expect_offset);
      auto data = as_view(c.getData());
      seen += data;
      expect_offset += data.size();
    }));
  }
  CHECK(seen == text);
  CHECK((*meters)[0].bytes_read == text.size()); // counted per chunk, as sent
  CHECK(log.chunks.size() > 10);
  CHECK(log.done == std::vector<uint32_t>{0});
  // 3001 lines with commit_events = 500: one request until the next marker resets the count.
  CHECK(log.epoch_requests == std::vector<uint32_t>{0});
  std::string landed;
  REQUIRE(!lkp->scan(in.id, 0, [&](uint64_t, std::string_view d) {
    landed += d;
    return true;
  }));
  CHECK(landed == text);
  // The next epoch is the last one and carries the end offset. Without final_flush (weir run
  // --final) the end of the input is a stop: open windows stay open in the store.
  caf::anon_send(ing, epoch_atom::value, uint64_t{1});
  sched.run();
  REQUIRE(log.markers.size() == 1);
  CHECK(log.markers[0].kind == marker_kind::stop);
  REQUIRE(log.markers[0].offsets.size() == 1);
  CHECK(log.markers[0].offsets[0].second == text.size());
  // Committing it prunes the lake (retention 0).
  caf::anon_send(ing, committed_atom::value, uint64_t{1});
  sched.run();
  CHECK(*lkp->end_offset(in.id) == 0);
}

TEST_CASE_METHOD(fixture, "preprocess: partitions, dead letters and markers reach their peers") {
  log_t log;
  auto cfg = tumbling_config(10 * us_per_s, 0);
  cfg.partitions = 2;
  auto upd = sys.spawn(fake_updater, &log);
  auto coord = sys.spawn(fake_coordinator, &log);
  preprocess_restore restore;
  restore.partition_snapshots.resize(2);
  auto meters = std::make_shared<state_meters>(1);
  std::shared_ptr<state_meter> meter{meters, &(*meters)[0]};
  auto pre = sys.spawn(preprocess, uint32_t{0}, cfg, restore, upd, coord, meter);
  auto ing = sys.spawn(fake_ingest, &log);
  // Lines: header, good rows with several keys, one bad number.
  std::string data = "ts,k,x\n";
  std::map<std::pair<int64_t, std::string>, std::pair<double, double>> ref; // count, sum
  for (int i = 0; i < 100; ++i) {
    int64_t t = 100 + i;
    std::string k = "k" + std::to_string(i % 7);
    data += std::to_string(t) + "," + k + "," + std::to_string(i) + "\n";
    auto& r = ref[{t - t % 10, k}];
    r.first += 1;
    r.second += i;
  }
  data += "150,k1,oops\n";
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::RawChunk>();
  c.setSource(1);
  c.setOffset(0);
  c.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  // Sent as if by the ingest actor, so the ack goes back to it.
  caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
               chunk_atom::value, uint64_t{1}, to_frame<schema::RawChunk>(mb));
  sched.run();
  CHECK(log.chunk_acks == std::vector<uint64_t>{1});
  CHECK((*meters)[0].records_read == 101); // the records after the header, the bad one too
  epoch_marker m;
  m.epoch = 1;
  m.kind = marker_kind::final;
  m.offsets = {{1, data.size()}};
  caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
               marker_atom::value, encode_marker(m));
  sched.run();
  REQUIRE(log.pre_epochs.size() == 1);
  REQUIRE(log.agg_epochs.size() == 2);
  size_t letters = 0;
  REQUIRE(!decode_frame<schema::PreprocessEpoch>(
    log.pre_epochs[0], [&](schema::PreprocessEpoch::Reader p) {
      CHECK(p.getFinal());
      CHECK(p.getOffsets()[0].getOffset() == data.size());
      dead_letter_pack pack;
      REQUIRE(pack.assign(as_view(p.getDeadLetterPack())));
      for (auto d : pack) {
        ++letters;
        CHECK(d.raw.find("oops") != std::string_view::npos);
      }
    }));
  CHECK(letters == 1);
  auto got = results_of(log.agg_epochs);
  REQUIRE(got.size() == ref.size());
  for (auto& w : got) {
    auto i = ref.find({w.start / us_per_s, w.key});
    REQUIRE(i != ref.end());
    CHECK(w.values[0] == i->second.first);
    CHECK(w.values[1] == Approx(i->second.second));
  }
  REQUIRE(log.stats.size() == 1);
  CHECK(log.stats[0].read == 101);
  CHECK(log.stats[0].accepted == 100);
}

TEST_CASE_METHOD(fixture, "warehouse: answers queries and dead-letter listings from the store") {
  auto wh = warehouse::open((dir / "warehouse").string());
  REQUIRE(wh);
  auto whp = std::make_shared<warehouse>(std::move(*wh));
  REQUIRE(whp->register_pipeline("t", {"count", "sum_x"}, "tumbling 10s"));
  // Random committed rows; the expected answer is filtered here by brute force.
  std::mt19937_64 rng(3);
  std::vector<window_result> all;
  epoch_commit c;
  c.pipeline = "t";
  c.epoch = 1;
  for (int i = 0; i < 200; ++i) {
    window_result r;
    r.key = "k" + std::to_string(rng() % 5);
    r.start = static_cast<int64_t>(rng() % 50) * 10;
    r.end = r.start + 10;
    r.values = {static_cast<double>(rng() % 9), static_cast<double>(rng() % 100)};
    bool dup = false;
    for (auto& x : all)
      dup = dup || (x.key == r.key && x.start == r.start);
    if (dup)
      continue;
    all.push_back(r);
    c.results.push_back(r);
  }
  dead_letter d;
  d.source = 2;
  d.offset = 99;
  d.raw = "x";
  d.reason = "missing field k";
  c.dead_letters.push_back(d);
  REQUIRE(*whp->commit(c));
  auto server = sys.spawn(warehouse_service, whp);
  // A client actor asks and keeps the answers (a blocking actor would stall the test scheduler).
  std::vector<frame> answers;
  std::vector<caf::error> errors;
  auto ask = [&](auto... xs) {
    sys.spawn([&, server](caf::event_based_actor* self) {
      self->request(server, caf::infinite, xs...)
        .then([&](frame& f) { answers.push_back(std::move(f)); },
              [&](caf::error& err) { errors.push_back(std::move(err)); });
    });
    sched.run();
  };
  auto request = [](std::string p, std::string k, int64_t from, int64_t to) {
    query_request q;
    q.pipeline = std::move(p);
    q.key = std::move(k);
    q.from = from;
    q.to = to;
    return q;
  };
  ask(query_atom::value, request("t", "k3", 100, 300));
  REQUIRE(answers.size() == 1);
  std::vector<window_result> got;
  REQUIRE(!decode_frame<schema::QueryResult>(answers[0], [&](schema::QueryResult::Reader q) {
    CHECK(q.getAggregates().size() == 2);
    for (auto w : q.getRows())
      got.push_back(decode_result(w));
  }));
  std::vector<window_result> want;
  for (auto& x : all)
    if (x.key == "k3" && x.start >= 100 && x.end <= 300)
      want.push_back(x);
  std::sort(want.begin(), want.end(), [](auto& a, auto& b) { return a.start < b.start; });
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].start == want[i].start);
    CHECK(got[i].values == want[i].values);
  }
  ask(letters_atom::value, std::string{}, uint64_t{0}, uint64_t{0});
  REQUIRE(answers.size() == 2);
  REQUIRE(!decode_frame<schema::DeadLetters>(answers[1], [&](schema::DeadLetters::Reader root) {
    auto ls = root.getLetters();
    REQUIRE(ls.size() == 1);
    CHECK(ls[0].getLetter().getOffset() == 99);
    CHECK(std::string(ls[0].getLetter().getReason().cStr()) == "missing field k");
  }));
  // An unknown pipeline is an error, not an empty answer.
  ask(query_atom::value, request("nope", "", min_timestamp, max_timestamp));
  CHECK(answers.size() == 2);
  CHECK(errors.size() == 1);
  ask(letters_atom::value, std::string{"nope"}, uint64_t{0}, uint64_t{0});
  CHECK(errors.size() == 2);
  // Pages of 7 rows, each asked for after the last row of the one before, add up to the
  // whole result in (start, end, key) order: nothing skipped, nothing twice.
  auto q = request("t", "", min_timestamp, max_timestamp);
  q.limit = 7;
  std::vector<window_result> paged;
  for (int pages = 0; pages < 100; ++pages) {
    ask(query_atom::value, q);
    std::vector<window_result> page;
    REQUIRE(
      !decode_frame<schema::QueryResult>(answers.back(), [&](schema::QueryResult::Reader root) {
        for (auto w : root.getRows())
          page.push_back(decode_result(w));
      }));
    paged.insert(paged.end(), page.begin(), page.end());
    if (page.size() < q.limit)
      break;
    q.has_after = true;
    q.after_start = page.back().start;
    q.after_end = page.back().end;
    q.after_key = page.back().key;
  }
  auto sorted = all;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) {
    return std::tie(a.start, a.end, a.key) < std::tie(b.start, b.end, b.key);
  });
  REQUIRE(paged.size() == sorted.size());
  for (size_t i = 0; i < paged.size(); ++i) {
    CHECK(paged[i].key == sorted[i].key);
    CHECK(paged[i].start == sorted[i].start);
    CHECK(paged[i].values == sorted[i].values);
  }
}

TEST_CASE_METHOD(fixture,
                 "preprocess: a source idle on the actor clock stops holding the watermark") {
  log_t log;
  auto cfg = tumbling_config(10 * us_per_s, 0);
  auto b = cfg.sources[0];
  b.name = "b";
  b.idle_timeout = 30 * us_per_s;
  cfg.sources.push_back(b);
  auto upd = sys.spawn(fake_updater, &log);
  auto coord = sys.spawn(fake_coordinator, &log);
  preprocess_restore restore;
  restore.partition_snapshots.resize(1);
  restore.bindings = {{1, 0}, {2, 1}};
  auto pre = sys.spawn(preprocess, uint32_t{0}, cfg, restore, upd, coord, test::no_meter);
  auto ing = sys.spawn(fake_ingest, &log);
  // Source a (csv with header) has 100 s of records; source b has none.
  std::string data = "ts,k,x\n";
  for (int t = 100; t < 200; ++t)
    data += std::to_string(t) + ",k,1\n";
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::RawChunk>();
  c.setSource(1);
  c.setOffset(0);
  c.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
               chunk_atom::value, uint64_t{1}, to_frame<schema::RawChunk>(mb));
  auto marker = [&](uint64_t e, marker_kind kind = marker_kind::normal) {
    epoch_marker m;
    m.epoch = e;
    m.kind = kind;
    m.offsets = {{1, data.size()}, {2, 0}};
    caf::send_as(caf::actor_cast<caf::actor>(ing), caf::actor_cast<caf::actor>(pre),
                 marker_atom::value, encode_marker(m));
    sched.run();
  };
  sched.run();
  marker(1);
  CHECK(results_of(log.agg_epochs).empty()); // b holds the watermark: it has had nothing
  sched.advance_time(std::chrono::seconds(29));
  marker(2);
  CHECK(results_of(log.agg_epochs).empty()); // not idle for 30 s yet
  sched.advance_time(std::chrono::seconds(1));
  marker(3);
  // b is idle: W = 199 s (a's largest event time, out_of_orderness 0); [100, 190) fire.
  auto got = results_of(log.agg_epochs);
  REQUIRE(got.size() == 9);
  for (auto& w : got)
    CHECK(w.values[0] == 10);
  // A stop ends the partitions (they hold the windows still open).
  marker(4, marker_kind::stop);
  CHECK(results_of(log.agg_epochs).size() == 9);
}
