#include "actors/runtime.hpp"

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include <glob.h>
#include <stdlib.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/system_messages.hpp>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/core/definition.hpp"
#include "actors/core/error.hpp"
#include "actors/core/input_check.hpp"
#include "actors/core/poison.hpp"
#include "actors/core/preprocessor.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/core/window_operator.hpp"
#include "actors/frame.hpp"
#include "actors/ingest.hpp"
#include "actors/preprocess.hpp"
#include "actors/redis_stream.hpp"
#include "actors/updater.hpp"
#include "actors/warehouse.hpp"
#include "schema/batch.capnp.h"
#include "store/lake.hpp"
#include "store/lock.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"

namespace weir {

namespace {

constexpr uint32_t preprocess_partition = 0xFFFFFFFF;

std::string fmt_duration(int64_t us) {
  if (us % (3600 * us_per_s) == 0)
    return std::to_string(us / (3600 * us_per_s)) + "h";
  if (us % (60 * us_per_s) == 0)
    return std::to_string(us / (60 * us_per_s)) + "m";
  if (us % us_per_s == 0)
    return std::to_string(us / us_per_s) + "s";
  if (us % us_per_ms == 0)
    return std::to_string(us / us_per_ms) + "ms";
  return std::to_string(us) + "us";
}

struct system_config : caf::actor_system_config {
  explicit system_config(size_t threads) {
    add_message_types<caf::id_block::weir>();
    set("scheduler.max-threads", threads);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

} // namespace

caf::error check_reject_ratio(const weir_config& cfg, const std::vector<run_stats>& stats) {
  for (const auto& s : stats)
    for (const auto& p : cfg.pipelines)
      if (p.name == s.pipeline) {
        reject_guard guard{p.name, p.preprocess.max_reject_ratio};
        if (auto err = guard.check(s.read, total_rejected(s.rejected), true))
          return err;
      }
  return caf::none;
}

size_t max_threads() {
  return std::max<size_t>(64, 8 * std::max<unsigned>(1, std::thread::hardware_concurrency()));
}

std::string describe_window(const window_config& w) {
  switch (w.kind) {
    case window_kind::tumbling:
      return "tumbling " + fmt_duration(w.size);
    case window_kind::sliding:
      return "sliding " + fmt_duration(w.size) + " every " + fmt_duration(w.slide);
    case window_kind::session:
      return "session gap " + fmt_duration(w.gap);
  }
  return "?";
}

std::vector<std::string> aggregate_names(const pipeline_config& p) {
  std::vector<std::string> out;
  for (auto& a : p.aggregates)
    out.push_back(a.name);
  return out;
}

caf::expected<std::vector<std::string>> expand_source(const source_config& src) {
  if (src.path == "-")
    return std::vector<std::string>{"-"};
  std::vector<std::string> out;
  if (src.path.find_first_of("*?[") == std::string::npos) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(src.path, ec)) {
      if (src.follow && !std::filesystem::exists(src.path, ec))
        return make_error(errc::bad_input, "source " + src.name + ": no such file: " + src.path);
      return make_error(errc::bad_input, "source " + src.name + ": no such file: " + src.path);
    }
    out.push_back(src.path);
    return out;
  }
  glob_t g{};
  int rc = ::glob(src.path.c_str(), GLOB_ERR, nullptr, &g);
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i)
      out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (out.empty())
    return make_error(errc::bad_input, "source " + src.name + ": no file matches " + src.path);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

/// Checks every input before a store is touched: each source names files that exist and can
/// be read (errc::bad_input), and each csv header holds the fields the pipeline reads
/// (errc::bad_config). So a missing input creates no store files, and a header that does not
/// fit the config fails at once instead of rejecting every record.
caf::error check_inputs(const weir_config& cfg) {
  for (const auto& p : cfg.pipelines) {
    for (size_t si = 0; si < p.sources.size(); ++si) {
      if (p.sources[si].http)
        continue; // records come over HTTP: nothing to check before the run
      if (p.sources[si].is_redis()) {
        // The server answers and the key is a stream (or not there yet).
        redis_stream rs{p.sources[si].redis, p.name + "/" + p.sources[si].name};
        if (auto err = rs.check())
          return err;
        continue;
      }
      auto files = expand_source(p.sources[si]);
      if (!files)
        return files.error();
      for (const auto& path : *files) {
        if (path == "-")
          continue;
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
          return make_error(errc::bad_input, "source " + p.sources[si].name + ": " + path +
                                               " is not a regular file");
        if (auto err = check_csv_header(p, si, path))
          return err;
      }
    }
  }
  return caf::none;
}

/// Compares each pipeline's config with the definition stored with its results, before
/// anything is written: a change that would make the stored results and state mean something
/// else is refused (errc::bad_config, naming every difference); others are logged.
caf::error check_definitions(const weir_config& cfg, warehouse& wh) {
  for (const auto& p : cfg.pipelines) {
    auto info = wh.pipeline(p.name);
    if (!info)
      return info.error();
    if (!*info)
      continue;
    // A pipeline that never committed anything holds nothing a change could contradict.
    auto last = wh.last_epoch(p.name);
    auto rows = wh.windows_committed(p.name);
    if (!last || !rows)
      return last ? rows.error() : last.error();
    if (*last == 0 && *rows == 0)
      continue;
    std::vector<definition_change> changes;
    if (!(*info)->definition.empty()) {
      changes = compare_definition((*info)->definition, p);
    } else {
      // A store written before definitions were kept: its window text and aggregate names
      // say what it holds.
      if ((*info)->window != describe_window(p.window))
        changes.push_back({"window", (*info)->window, describe_window(p.window), false});
      auto names = [](const std::vector<std::string>& xs) {
        std::string out;
        for (const auto& x : xs)
          out += (out.empty() ? "" : ", ") + x;
        return out;
      };
      if ((*info)->aggregates != aggregate_names(p))
        changes.push_back(
          {"aggregates", names((*info)->aggregates), names(aggregate_names(p)), false});
    }
    std::string refused;
    for (const auto& c : changes) {
      if (!c.compatible) {
        refused +=
          "\n  " + c.setting + ": the store has " + c.stored + ", the config says " + c.configured;
        continue;
      }
      spdlog::warn("pipeline {}: {} changed from {} to {} since the store was written; it "
                   "applies from now on",
                   p.name, c.setting, c.stored, c.configured);
    }
    if (!refused.empty())
      return make_error(errc::bad_config,
                        cfg.file + ": pipeline " + p.name + " does not match what store " +
                          wh.dir() + " holds for it:" + refused +
                          "\nIts results and state were made with the stored settings. A "
                          "different window, key, time field or set of aggregates needs a new "
                          "pipeline name (or another store); nothing was changed.");
  }
  return caf::none;
}

/// A failure that restarting cannot cure: the input or the config is wrong, the store is
/// unusable, or too many records are rejected. The run ends with it at once.
bool is_fatal(const caf::error& err) {
  if (err.category() != caf::atom("weir"))
    return false;
  switch (static_cast<errc>(err.code())) {
    case errc::bad_config:
    case errc::bad_input:
    case errc::store_format:
    case errc::store_corrupt:
    case errc::store_busy:
    case errc::too_many_rejects:
      return true;
    default:
      return false;
  }
}

/// What one pipeline starts from: its inputs with their resume points and the operator state of
/// the last committed epoch.
struct prepared {
  pipeline_sources inputs;
  preprocess_restore restore;
  uint64_t first_epoch = 1;
};

/// Reads where every pipeline stands in the store. Everything that can fail before processing
/// (store, inputs) fails here, before any actor runs.
caf::expected<std::vector<prepared>> prepare(const weir_config& cfg, lake& lk, warehouse& wh,
                                             size_t cores) {
  std::vector<prepared> preps;
  std::error_code ec;
  for (const auto& p : cfg.pipelines) {
    prepared pr;
    auto info = wh.register_pipeline(p.name, aggregate_names(p), describe_window(p.window),
                                     encode_definition(p));
    if (!info)
      return info.error();
    result_indexes ix;
    ix.by_key = p.results.key_index;
    ix.change_keep_us = p.results.change_feed ? p.results.change_retention : 0;
    if (auto err = wh.set_indexes(p.name, ix))
      return err;
    auto last = wh.last_epoch(p.name);
    if (!last)
      return last.error();
    pr.first_epoch = *last + 1;
    auto offsets = wh.offsets(p.name);
    if (!offsets)
      return offsets.error();
    auto states = wh.states(p.name);
    if (!states)
      return states.error();
    size_t parts = p.partitions ? p.partitions : cores;
    std::vector<std::pair<uint32_t, std::string>> part_states;
    for (auto& [part, blob] : *states) {
      if (part == preprocess_partition)
        pr.restore.snapshot = blob;
      else
        part_states.emplace_back(part, blob);
    }
    if (!part_states.empty() && part_states.size() != parts) {
      spdlog::warn("pipeline {}: the store holds state of {} partitions; using {} instead of {}",
                   p.name, part_states.size(), part_states.size(), parts);
      parts = part_states.size();
    }
    pr.restore.partition_snapshots.resize(parts);
    for (auto& [part, meta] : part_states) {
      if (part >= parts)
        continue;
      auto snap = partition_snapshot(wh, p.name, part, meta);
      if (!snap)
        return snap.error();
      pr.restore.partition_snapshots[part] = std::move(*snap);
    }
    if (p.preprocess.dedupe) {
      auto ids = wh.dedupe(p.name);
      if (!ids)
        return ids.error();
      pr.restore.dedupe = std::move(*ids);
    }
    for (size_t si = 0; si < p.sources.size(); ++si) {
      const auto& src = p.sources[si];
      if (src.http || src.is_redis()) {
        auto in = resolve_network_source(lk, *offsets, p.name, src, static_cast<uint32_t>(si));
        if (!in)
          return in.error();
        pr.restore.bindings.emplace_back(in->id, si);
        pr.inputs.inputs.push_back(std::move(*in));
        continue;
      }
      auto files = expand_source(src);
      if (!files)
        return files.error();
      for (const auto& path : *files) {
        // The file's identity decides its generation: rotated or truncated files start anew
        // (actors/sources.hpp).
        auto ins = resolve_source(lk, *offsets, p.name, src, static_cast<uint32_t>(si), path,
                                  cfg.runtime.mode == commit_mode::exactly_once);
        if (!ins)
          return ins.error();
        for (auto& in : *ins) {
          pr.restore.bindings.emplace_back(in.id, si);
          pr.inputs.inputs.push_back(std::move(in));
        }
      }
    }
    pr.inputs.pipeline = p.name;
    pr.inputs.sources = p.sources;
    pr.inputs.committed = *offsets;
    pr.inputs.persist = cfg.runtime.mode == commit_mode::exactly_once;
    preps.push_back(std::move(pr));
  }
  return preps;
}

/// Sets where pipeline `p` starts into its inputs on its meter (see state_meter::bytes_read):
/// the committed offsets count as read, and the total is the inputs' sizes now.
void meter_inputs(const pipeline_sources& p, state_meter& m) {
  uint64_t read = 0;
  uint64_t total = 0;
  bool bounded = true;
  for (const auto& in : p.inputs) {
    read += in.committed;
    uint64_t size = std::max(in.committed, in.lake_end);
    if (in.path == "-" || in.cfg.follow || in.cfg.http) {
      bounded = false;
    } else if (!in.path.empty()) {
      std::error_code ec;
      auto n = std::filesystem::file_size(in.path, ec);
      if (!ec)
        size = std::max<uint64_t>(size, n);
    }
    total += size;
  }
  m.bytes_total = total;
  m.bounded = bounded;
  m.bytes_read = read;
}

/// The actors of one attempt at running the pipelines.
struct generation {
  caf::actor coordinator;
  caf::actor updater;
  std::vector<caf::actor> members; ///< coordinator, updater, every preprocess and ingest
};

/// Spawns the pipeline actors from what `prepare` found; the supervisor monitors them all.
generation spawn_generation(caf::actor_system& sys, caf::scoped_actor& supervisor,
                            const weir_config& cfg, std::vector<prepared> preps,
                            const std::shared_ptr<lake>& lk, const std::shared_ptr<warehouse>& wh,
                            const std::shared_ptr<state_meters>& meters) {
  generation g;
  std::vector<uint64_t> first_epochs;
  std::vector<std::pair<std::string, size_t>> slots;
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    first_epochs.push_back(preps[i].first_epoch);
    slots.emplace_back(cfg.pipelines[i].name, preps[i].restore.partition_snapshots.size());
  }
  auto coord = sys.spawn(coordinator, first_epochs, cfg.runtime, caf::actor{supervisor});
  auto upd = sys.spawn<caf::detached>(updater, slots, wh, coord, cfg.runtime.mode, meters);
  g.coordinator = caf::actor_cast<caf::actor>(coord);
  g.updater = caf::actor_cast<caf::actor>(upd);
  g.members = {g.coordinator, g.updater};
  supervisor->send(coord, register_atom::value, uint32_t{0xFFFFFFFF}, g.updater);
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    auto idx = static_cast<uint32_t>(i);
    // One pipeline's meter, sharing the ownership of them all.
    std::shared_ptr<state_meter> meter{meters, &(*meters)[i]};
    auto pre =
      sys.spawn(preprocess, idx, cfg.pipelines[i], std::move(preps[i].restore), upd, coord, meter);
    auto ing = sys.spawn<caf::detached>(ingest, idx, std::move(preps[i].inputs), cfg.runtime, lk,
                                        pre, coord, meter);
    supervisor->send(coord, register_atom::value, idx, caf::actor_cast<caf::actor>(ing));
    supervisor->send(coord, register_atom::value, uint32_t{0xFFFFFFFE},
                     caf::actor_cast<caf::actor>(pre));
    g.members.push_back(caf::actor_cast<caf::actor>(pre));
    g.members.push_back(caf::actor_cast<caf::actor>(ing));
  }
  for (auto& m : g.members)
    supervisor->monitor(m);
  return g;
}

/// What the supervisor counts of one pipeline over every generation of a run.
struct tally {
  preprocess_counters start;      ///< the committed counters when the run began
  uint64_t start_epoch = 0;       ///< last committed epoch when the run began
  uint64_t start_windows = 0;     ///< result rows committed when the run began
  std::vector<int64_t> latencies; ///< start to commit of every epoch seen committed, microseconds
};

/// The committed counters in a stored preprocess state (zero when there is none or it does not
/// decode: the preprocess actor then reports the error itself).
preprocess_counters committed_counters(const std::string& blob) {
  auto c = unwrap_counters(blob);
  return c ? std::move(*c) : preprocess_counters{};
}

/// Windows of pipeline `p` that the committed partition states hold open.
uint64_t open_windows(const pipeline_config& p, warehouse& wh) {
  auto states = wh.states(p.name);
  if (!states)
    return 0;
  uint64_t n = 0;
  for (const auto& [part, meta] : *states) {
    if (part == preprocess_partition || meta.empty())
      continue;
    window_operator op{p};
    auto snap = partition_snapshot(wh, p.name, part, meta);
    if (snap && !op.restore(*snap))
      n += op.open_windows();
  }
  return n;
}

/// Warns about an epoch that took longer than slow_epoch from its start to its commit, with
/// what it held and which setting to turn (docs/serve.md, "Tasks").
void warn_slow(const std::string& pipeline, uint64_t e, int64_t latency_us,
               const runtime_config& rt, const std::optional<epoch_task>& t) {
  if (!t) {
    spdlog::warn("pipeline {} epoch {} took {:.1f} s from its start to its commit", pipeline, e,
                 latency_us / 1e6);
    return;
  }
  const double commit_s = t->commit_ms / 1e3;
  const double total_s = latency_us / 1e6;
  std::string why;
  if (commit_s > total_s / 2)
    why = "most of it was the commit of " + std::to_string(t->windows) +
          " results and " + std::to_string(t->state_bytes) +
          " bytes of state: windows that fire together (a large key space on one window end) "
          "commit together; a shorter commit_interval or max_epoch_bytes makes epochs smaller";
  else
    why = "most of it was processing " + std::to_string(t->events) +
          " records: the pipeline is behind its input; lower max_epoch_bytes (now " +
          std::to_string(rt.max_epoch_bytes) + ") or commit_interval for shorter epochs, or "
          "give it more partitions and threads";
  spdlog::warn("pipeline {} epoch {} took {:.2f} s (slow_epoch {:.2f} s): {} records, {} "
               "windows, {} dead letters, commit {:.1f} ms; {}",
               pipeline, e, total_s, rt.slow_epoch / 1e6, t->events, t->windows,
               t->dead_letters, t->commit_ms, why);
}

/// The summary of pipeline `name`: its counters at the end (`last`, cumulative as committed)
/// less those at the start, so that records replayed after a restart count once.
run_stats summarize(const std::string& name, const std::vector<run_stats>& last, const tally& t,
                    uint32_t restarts, warehouse& wh, commit_mode mode) {
  run_stats out;
  out.pipeline = name;
  const preprocess_counters& a = t.start;
  auto i = std::find_if(last.begin(), last.end(), [&](auto& s) { return s.pipeline == name; });
  if (i != last.end()) {
    auto less = [](uint64_t x, uint64_t y) { return x > y ? x - y : 0; };
    out.read = less(i->read, a.read);
    out.accepted = less(i->accepted, a.accepted);
    out.filtered = less(i->filtered, a.filtered);
    out.late = less(i->late, a.late);
    out.late_updates = less(i->late_updates, a.late_updates);
    out.duplicates = less(i->duplicates, a.duplicates);
    out.bytes_read = less(i->bytes_read, a.bytes);
    for (const auto& [why, n] : i->rejected) {
      uint64_t before = 0;
      for (const auto& [w, m] : a.rejected)
        if (w == why)
          before = m;
      if (n > before)
        out.rejected.emplace_back(why, n - before);
    }
  }
  // Epochs and windows come from the store: a commit whose report was lost with a failing actor
  // (after the commit, before the report) still counts.
  auto epoch = wh.last_epoch(name);
  auto windows = wh.windows_committed(name);
  out.epochs_committed = epoch && *epoch > t.start_epoch ? *epoch - t.start_epoch : 0;
  out.windows_committed = windows && *windows > t.start_windows ? *windows - t.start_windows : 0;
  if (mode != commit_mode::exactly_once && i != last.end()) {
    // No epochs in the store: what the last generation committed.
    out.epochs_committed = i->epochs_committed;
    out.windows_committed = i->windows_committed;
  }
  out.restarts = restarts;
  auto l = t.latencies;
  if (!l.empty()) {
    std::sort(l.begin(), l.end());
    out.epoch_p50_us = l[(l.size() - 1) / 2];
    out.epoch_p99_us = l[std::min(l.size() - 1, (l.size() * 99) / 100)];
    out.epoch_max_us = l.back();
  }
  return out;
}

/// Where pipeline `name` resumes: its sources' store keys with their committed offsets.
std::vector<std::pair<std::string, uint64_t>> resume_points(const std::string& name, lake& lk,
                                                            warehouse& wh) {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto offsets = wh.offsets(name);
  auto sources = lk.sources();
  if (!offsets || !sources)
    return out;
  for (const auto& [id, off] : *offsets)
    for (const auto& [sid, key] : *sources)
      if (sid == id)
        out.emplace_back(key, off);
  return out;
}

} // namespace

caf::expected<std::string> partition_snapshot(warehouse& wh, const std::string& pipeline,
                                              uint32_t part, std::string_view meta) {
  if (meta.empty())
    return std::string{};
  std::string snap = window_operator::snapshot_of(meta);
  auto err = wh.window_rows(pipeline, part, [&](std::string_view k, std::string_view v) {
    window_operator::append_row(snap, k, v);
  });
  if (err)
    return err;
  return snap;
}

caf::expected<std::vector<run_stats>> run_pipelines(const weir_config& cfg_in,
                                                    const run_options& opts) {
  weir_config cfg = cfg_in;
  cfg.runtime.mode = opts.mode;
  cfg.runtime.final_flush = opts.final_flush || opts.mode != commit_mode::exactly_once;
  if (cfg.runtime.mode != commit_mode::exactly_once)
    cfg.runtime.durable = false; // no fsync: nothing written is meant to survive a crash
  std::string dir = opts.store.empty() ? cfg.runtime.store : opts.store;
  // A dry run works in a throwaway store that goes when the run ends, however it ends.
  std::string scratch;
  struct remove_dir {
    std::string* path;
    ~remove_dir() {
      std::error_code ec;
      if (!path->empty())
        std::filesystem::remove_all(*path, ec);
    }
  } remove_scratch{&scratch};
  if (opts.mode == commit_mode::none) {
    std::error_code ec;
    auto tmpl = (std::filesystem::temp_directory_path(ec) / "weir-dry-run-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr)
      return make_error(errc::store_io, "cannot create a scratch directory for the dry run");
    scratch = tmpl;
    dir = scratch;
  }
  if (dir.empty())
    return make_error(errc::bad_config, "no store directory: give --store or set store");
  if (opts.threads > max_threads())
    return make_error(errc::bad_config, "--threads " + std::to_string(opts.threads) +
                                          " is more than this machine can use (at most " +
                                          std::to_string(max_threads()) +
                                          ": 8 per core, at least 64)");
  for (const auto& p : cfg.pipelines)
    for (const auto& src : p.sources) {
      if (src.http && !opts.http_sources)
        return make_error(errc::bad_config,
                          cfg.file + ": pipeline " + p.name + ", source " + src.name +
                            ": an http source takes records through weir serve, not weir run");
      if (src.is_redis() && opts.mode != commit_mode::exactly_once)
        return make_error(errc::bad_config,
                          cfg.file + ": pipeline " + p.name + ", source " + src.name +
                            ": a redis source acknowledges entries once they are landed in the "
                            "lake, which only an exactly-once run does");
    }
  if (auto err = check_inputs(cfg))
    return err;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::store_io, "cannot create store directory " + dir + ": " + ec.message());
  // One writer per store, before anything is read from it; held until the run returns.
  auto lock = store_lock::acquire(dir);
  if (!lock)
    return lock.error();
  auto st = open_store(dir, cfg.runtime.durable); // lake and warehouse of one store
  if (!st)
    return st.error();
  if (auto err = check_definitions(cfg, st->wh))
    return err;
  auto lake_ptr = std::make_shared<lake>(std::move(st->lk));
  auto wh_ptr = std::make_shared<warehouse>(std::move(st->wh));
  const size_t cores = std::max<size_t>(1, std::thread::hardware_concurrency());
  auto preps = prepare(cfg, *lake_ptr, *wh_ptr, cores);
  if (!preps)
    return preps.error();
  if (cfg.runtime.mode == commit_mode::results_only)
    for (size_t i = 0; i < preps->size(); ++i)
      if ((*preps)[i].first_epoch > 1)
        return make_error(errc::bad_input,
                          "store " + dir + " holds committed epochs of pipeline " +
                            cfg.pipelines[i].name + " (up to " +
                            std::to_string((*preps)[i].first_epoch - 1) +
                            "): a run without exactly-once cannot go on from them; use another "
                            "store");
  system_config sys_cfg{opts.threads ? opts.threads : cores};
  caf::actor_system sys{sys_cfg};
  // The supervisor: it runs generations of the pipeline actors. When one of them fails, it
  // stops them all, waits until every one is gone (so no old actor writes to the stores any
  // more), then restarts them from the last committed epoch after a backoff that doubles with
  // each restart, until the restart budget is spent.
  caf::scoped_actor supervisor{sys};
  auto meters = std::make_shared<state_meters>(cfg.pipelines.size());
  std::vector<tally> tallies(cfg.pipelines.size());
  for (size_t i = 0; i < tallies.size(); ++i) {
    const auto& name = cfg.pipelines[i].name;
    tallies[i].start = committed_counters((*preps)[i].restore.snapshot);
    tallies[i].start_epoch = (*preps)[i].first_epoch - 1;
    auto w = wh_ptr->windows_committed(name);
    if (!w)
      return w.error();
    tallies[i].start_windows = *w;
  }
  for (size_t i = 0; i < tallies.size(); ++i) {
    (*meters)[i].tasks.seed(tallies[i].start.read, tallies[i].start.accepted);
    (*meters)[i].task_keep_us = cfg.runtime.task_retention;
    meter_inputs((*preps)[i].inputs, (*meters)[i]);
    // Every generation has the partitions prepare() found: the stored states decide them.
    (*meters)[i].mailboxes.size_partitions((*preps)[i].restore.partition_snapshots.size());
  }
  auto on_commit = [&](uint32_t i, uint64_t e, int64_t latency) {
    if (i < tallies.size() && latency >= 0) {
      (*meters)[i].tasks.set_latency(e, latency);
      if (latency > cfg.runtime.slow_epoch)
        warn_slow(cfg.pipelines[i].name, e, latency, cfg.runtime, (*meters)[i].tasks.find(e));
      // A service runs for months: the summary's percentiles keep the latest million epochs.
      auto& l = tallies[i].latencies;
      if (l.size() >= (size_t{1} << 20))
        l.erase(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(l.size() / 2));
      l.push_back(latency);
      (*meters)[i].add_latency(latency);
    }
  };
  if (opts.probe)
    opts.probe->attach(wh_ptr, lake_ptr, meters);
  uint32_t restarts = 0;     ///< every restart
  uint32_t budget_spent = 0; ///< restarts after failures that name no records
  int64_t backoff = std::max<int64_t>(cfg.runtime.restart_backoff, 0);
  bool stop_sent = false;
  auto stop_wanted = [&] { return opts.stop && opts.stop->load(); };
  // Failures of record processing name their records: the tracker turns repeated ones into
  // line-by-line isolation and then into dead-lettered poison records (actors/core/poison.hpp).
  poison_tracker tracker{cfg.runtime.record_retries, cfg.runtime.max_poison_records};
  for (;;) {
    for (size_t i = 0; i < preps->size(); ++i)
      (*preps)[i].restore.quarantined = tracker.of(static_cast<uint32_t>(i));
    auto gen = spawn_generation(sys, supervisor, cfg, std::move(*preps), lake_ptr, wh_ptr, meters);
    std::vector<run_stats> stats;
    std::string failure;
    /// The first failure that a restart would only meet again (a damaged store, bad input, too
    /// many rejects), also when it comes while the generation is taken down: it ends the run.
    caf::error fatal;
    std::optional<record_span> span; ///< the records the failure happened on, if it names them
    std::string span_what;
    auto note_span = [&](const caf::error& reason) {
      if (!fatal && reason && is_fatal(reason))
        fatal = reason;
      if (span)
        return;
      span = record_span_of(reason);
      if (span)
        span_what = render(reason);
    };
    bool done = false;
    size_t alive = gen.members.size();
    while (!done) {
      supervisor->receive(
        [&](stats_atom, run_stats& s) { stats.push_back(std::move(s)); },
        [&](committed_atom, uint32_t i, uint64_t e, uint64_t, int64_t latency) {
          on_commit(i, e, latency);
        },
        [&](done_atom) { done = true; },
        [&](fail_atom, std::string& why) {
          failure = std::move(why);
          done = true;
        },
        [&](caf::down_msg& dm) {
          --alive;
          spdlog::debug("supervisor: {} is down: {}", caf::to_string(dm.source), render(dm.reason));
          note_span(dm.reason);
          if (dm.reason && dm.reason != caf::exit_reason::user_shutdown && failure.empty()) {
            failure = "a pipeline actor failed: " + render(dm.reason);
            done = true;
          }
        },
        caf::after(std::chrono::milliseconds(50)) >> [] {});
      // Checked after every message too: the timeout restarts with each one, and commits may
      // come more often than it.
      if (stop_wanted() && !stop_sent) {
        stop_sent = true;
        supervisor->send(gen.coordinator, stop_atom::value);
      }
    }
    // Every actor of this generation goes before anything else happens.
    for (auto& m : gen.members)
      supervisor->send_exit(m, caf::exit_reason::user_shutdown);
    while (alive > 0)
      supervisor->receive(
        [&](caf::down_msg& dm) {
          --alive;
          note_span(dm.reason);
        },
        [&](committed_atom, uint32_t i, uint64_t e, uint64_t, int64_t latency) {
          on_commit(i, e, latency);
        },
        [&](stats_atom, run_stats&) {}, [&](done_atom) {}, [&](fail_atom, std::string&) {});
    if (failure.empty()) {
      std::vector<run_stats> total;
      for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
        total.push_back(
          summarize(cfg.pipelines[i].name, stats, tallies[i], restarts, *wh_ptr, cfg.runtime.mode));
        total.back().windows_open = open_windows(cfg.pipelines[i], *wh_ptr);
        const auto& m = (*meters)[i];
        total.back().state_bytes = m.bytes;
        total.back().state_epochs = m.epochs;
        total.back().state_memory = m.peak_memory;
        total.back().state_rows = m.rows_at_peak;
        total.back().resume_offsets = resume_points(cfg.pipelines[i].name, *lake_ptr, *wh_ptr);
      }
      return total;
    }
    if (fatal)
      return fatal;
    std::string where = "last good commits:";
    for (const auto& p : cfg.pipelines) {
      auto last = wh_ptr->last_epoch(p.name);
      where += " " + p.name + " epoch " + (last ? std::to_string(*last) : "?");
    }
    if (stop_wanted())
      return make_error(errc::internal, failure + "; stopped; " + where);
    bool budgeted = true;
    if (span) {
      // A failure that names its records restarts outside the budget: each such restart
      // narrows the failure down (retry, isolate the chunk, dead-letter the line), and the
      // tracker bounds how many there can be.
      budgeted = false;
      switch (tracker.failed(*span, span_what)) {
        case poison_tracker::verdict::retry:
          spdlog::warn("pipeline {}: records at source {} bytes {}..{} failed; retrying them",
                       cfg.pipelines[span->pipeline].name, span->source, span->begin, span->end);
          break;
        case poison_tracker::verdict::isolate:
          spdlog::warn("pipeline {}: records at source {} bytes {}..{} failed on every retry; "
                       "processing them one line at a time",
                       cfg.pipelines[span->pipeline].name, span->source, span->begin, span->end);
          break;
        case poison_tracker::verdict::poison:
          spdlog::warn("pipeline {}: the record at source {} offset {} failed on every retry; "
                       "it goes to dead letters as a poison record",
                       cfg.pipelines[span->pipeline].name, span->source, span->begin);
          break;
        case poison_tracker::verdict::too_many:
          return make_error(errc::internal, failure + "; more than " +
                                              std::to_string(cfg.runtime.max_poison_records) +
                                              " poison records (max_poison_records): giving up; " +
                                              where);
      }
    }
    if (budgeted && budget_spent >= cfg.runtime.restart_budget)
      return make_error(errc::internal, failure + "; gave up after " + std::to_string(restarts) +
                                          " restart(s); " + where);
    ++restarts;
    if (opts.probe)
      opts.probe->restarts += 1;
    for (auto& m : *meters)
      m.restarts += 1;
    int64_t wait = std::max<int64_t>(cfg.runtime.restart_backoff, 0);
    if (budgeted) {
      ++budget_spent;
      wait = backoff;
      spdlog::warn("{}; restart {} of {} in {} ms from the last commit ({})", failure, budget_spent,
                   cfg.runtime.restart_budget, wait / us_per_ms, where);
      backoff = std::min(backoff * 2, std::max(cfg.runtime.restart_backoff_max, backoff));
    }
    // Wait out the backoff, but not past a stop request.
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(wait);
    while (std::chrono::steady_clock::now() < until && !stop_wanted())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    preps = prepare(cfg, *lake_ptr, *wh_ptr, cores);
    if (!preps)
      return preps.error();
    for (size_t i = 0; i < preps->size(); ++i)
      meter_inputs((*preps)[i].inputs, (*meters)[i]); // the restart reads on from its commits
  }
}

namespace {

/// Opens an existing warehouse (never creates one) and runs fn(handle, scoped actor).
template <class F>
caf::error with_warehouse(const std::string& dir, F fn) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir + "/warehouse", ec))
    return make_error(errc::bad_input, "no Weir store at " + dir);
  auto wh = warehouse::open(dir);
  if (!wh)
    return wh.error();
  auto store = std::make_shared<warehouse>(std::move(*wh));
  system_config cfg{1};
  caf::actor_system sys{cfg};
  auto server = sys.spawn(warehouse_service, store);
  caf::scoped_actor self{sys};
  auto err = fn(server, self);
  self->send_exit(server, caf::exit_reason::user_shutdown);
  return err;
}

} // namespace

caf::expected<committed_status> committed_status_of(warehouse& wh, const std::string& pipeline) {
  committed_status out;
  auto epoch = wh.last_epoch(pipeline);
  if (!epoch)
    return epoch.error();
  out.epoch = *epoch;
  auto windows = wh.windows_committed(pipeline);
  if (!windows)
    return windows.error();
  out.windows = *windows;
  auto letters = wh.dead_letters_committed(pipeline);
  if (!letters)
    return letters.error();
  out.dead_letters = *letters;
  auto states = wh.states(pipeline);
  if (!states)
    return states.error();
  for (const auto& [part, blob] : *states) {
    if (part != preprocess_partition)
      continue;
    auto c = unwrap_summary(blob, &out.max_time);
    if (!c)
      return c.error();
    out.counters = std::move(c->counters);
    out.watermark = c->watermark;
    out.source_times = std::move(c->sources);
  }
  return out;
}

caf::error query_store_pages(const std::string& dir, const std::string& pipeline,
                             const std::string& key, std::optional<timestamp> from,
                             std::optional<timestamp> to,
                             const std::function<bool(const query_answer&)>& on_page,
                             uint64_t page_rows) {
  return with_warehouse(dir, [&](warehouse_actor server, caf::scoped_actor& self) {
    query_request req;
    req.pipeline = pipeline;
    req.key = key;
    req.from = from.value_or(min_timestamp);
    req.to = to.value_or(max_timestamp);
    req.limit = std::max<uint64_t>(page_rows, 1);
    query_answer page;
    using handle = decltype(self->request(server, caf::infinite, query_atom::value, req));
    std::optional<handle> pending;
    pending.emplace(self->request(server, caf::infinite, query_atom::value, req));
    for (;;) {
      caf::error err;
      pending->receive([&](frame& f) { err = decode_query_page(f, req, page); },
                       [&](caf::error& e) { err = std::move(e); });
      if (err)
        return err;
      bool more = page.rows.size() == req.limit;
      if (more) {
        // The next page is read while this one is handed on.
        const auto& last = page.rows.back();
        req.has_after = true;
        req.after_start = last.start;
        req.after_end = last.end;
        req.after_key = last.key;
        pending.emplace(self->request(server, caf::infinite, query_atom::value, req));
      }
      if (!on_page(page) || !more)
        return caf::error{};
    }
  });
}

caf::expected<query_answer> query_store(const std::string& dir, const std::string& pipeline,
                                        const std::string& key, std::optional<timestamp> from,
                                        std::optional<timestamp> to) {
  query_answer all;
  auto err = query_store_pages(dir, pipeline, key, from, to, [&](const query_answer& page) {
    all.window = page.window;
    all.aggregates = page.aggregates;
    all.rows.insert(all.rows.end(), page.rows.begin(), page.rows.end());
    return true;
  });
  if (err)
    return err;
  return all;
}

caf::error
store_dead_letter_pages(const std::string& dir, const std::string& pipeline, uint64_t limit,
                        const std::function<bool(const std::vector<dead_letter_row>&)>& on_page,
                        uint64_t page_rows) {
  // Pages go one pipeline at a time: sequence numbers are per pipeline.
  std::vector<std::string> names{pipeline};
  std::error_code ec;
  if (!std::filesystem::is_directory(dir + "/warehouse", ec))
    return make_error(errc::bad_input, "no Weir store at " + dir);
  if (pipeline.empty()) {
    auto wh = warehouse::open(dir);
    if (!wh)
      return wh.error();
    auto ps = wh->pipelines();
    if (!ps)
      return ps.error();
    names.clear();
    for (auto& p : *ps)
      names.push_back(p.name);
  }
  return with_warehouse(dir, [&](warehouse_actor server, caf::scoped_actor& self) {
    uint64_t left = limit;
    std::vector<dead_letter_row> rows;
    for (const auto& name : names) {
      uint64_t after = 0;
      for (;;) {
        uint64_t want = left == 0 && limit == 0 ? page_rows : std::min(left, page_rows);
        if (want == 0)
          return caf::error{};
        caf::error err;
        rows.clear();
        self->request(server, caf::infinite, letters_atom::value, name, after, want)
          .receive([&](frame& f) { err = decode_letters_page(f, name, after, want, rows); },
                   [&](caf::error& e) { err = std::move(e); });
        if (err)
          return err;
        if (limit != 0)
          left -= std::min<uint64_t>(left, rows.size());
        if (!rows.empty() && !on_page(rows))
          return caf::error{};
        if (rows.size() < want)
          break;
        after = rows.back().seq;
      }
    }
    return caf::error{};
  });
}

caf::expected<std::vector<dead_letter_row>>
store_dead_letters(const std::string& dir, const std::string& pipeline, uint64_t limit) {
  std::vector<dead_letter_row> all;
  auto err = store_dead_letter_pages(dir, pipeline, limit, [&](const auto& page) {
    all.insert(all.end(), page.begin(), page.end());
    return true;
  });
  if (err)
    return err;
  return all;
}

} // namespace weir
