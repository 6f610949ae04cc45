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
#include "actors/embed.hpp"
#include "actors/frame.hpp"
#include "actors/ingest.hpp"
#include "actors/preprocess.hpp"
#include "actors/recovery.hpp"
#include "actors/redis_stream.hpp"
#include "actors/run_setup.hpp"
#include "actors/sink_driver.hpp"
#include "actors/supervisor.hpp"
#include "actors/updater.hpp"
#include "actors/warehouse.hpp"
#include "schema/batch.capnp.h"
#include "store/lake.hpp"
#include "store/lock.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"

namespace weir {

namespace {

constexpr uint32_t preprocess_partition = warehouse::preprocess_partition;

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
    configure(*this);
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

namespace {

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

/// The sinks of every pipeline for an exactly-once run: each made anew from its config, with
/// its cursor registered in the warehouse (a dry run delivers to no sink). Every pipeline's
/// sinks are registered, so that cursors of sinks no longer configured go.
caf::expected<std::vector<std::pair<uint32_t, sink_driver_config>>>
make_sinks(const weir_config& cfg, const std::shared_ptr<warehouse>& wh) {
  std::vector<std::pair<uint32_t, sink_driver_config>> out;
  if (cfg.runtime.mode != commit_mode::exactly_once) {
    for (const auto& p : cfg.pipelines)
      if (!p.sinks.empty())
        spdlog::info("pipeline {}: a dry run delivers to no sink", p.name);
    return out;
  }
  for (size_t i = 0; i < cfg.pipelines.size(); ++i) {
    const auto& p = cfg.pipelines[i];
    std::vector<std::string> names;
    for (const auto& s : p.sinks)
      names.push_back(s.name);
    auto cursors = wh->register_sinks(p.name, names);
    if (!cursors)
      return cursors.error();
    for (size_t k = 0; k < p.sinks.size(); ++k) {
      sink_driver_config d;
      try {
        d.out = p.sinks[k].make(p.name);
      } catch (const std::exception& e) {
        return make_error(errc::bad_config, cfg.file + ": pipeline " + p.name + ", sink " +
                                              p.sinks[k].name + ": " + e.what());
      }
      if (!d.out)
        return make_error(errc::bad_config, cfg.file + ": pipeline " + p.name + ", sink " +
                                              p.sinks[k].name + ": its kind made no sink");
      d.pipeline = p.name;
      d.name = p.sinks[k].name;
      d.wh = wh;
      d.window = describe_window(p.window);
      d.aggregates = aggregate_names(p);
      d.delivered = (*cursors)[k];
      d.backoff = cfg.runtime.restart_backoff;
      d.backoff_max = cfg.runtime.restart_backoff_max;
      d.lag_warning = p.results.change_retention;
      out.emplace_back(static_cast<uint32_t>(i), std::move(d));
    }
  }
  return out;
}

} // namespace

scratch_dir::~scratch_dir() {
  std::error_code ec;
  if (!path.empty())
    std::filesystem::remove_all(path, ec);
}

caf::expected<std::unique_ptr<run_setup>> prepare_run(const weir_config& cfg_in,
                                                      const run_options& opts) {
  auto setup = std::make_unique<run_setup>();
  weir_config cfg = cfg_in;
  cfg.runtime.mode = opts.mode;
  cfg.runtime.final_flush = opts.final_flush || opts.mode != commit_mode::exactly_once;
  if (cfg.runtime.mode != commit_mode::exactly_once)
    cfg.runtime.durable = false; // no fsync: nothing written is meant to survive a crash
  std::string dir = opts.store.empty() ? cfg.runtime.store : opts.store;
  // A dry run works in a throwaway store that goes when the run ends, however it ends.
  if (opts.mode == commit_mode::none) {
    std::error_code ec;
    auto tmpl = (std::filesystem::temp_directory_path(ec) / "weir-dry-run-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr)
      return make_error(errc::store_io, "cannot create a scratch directory for the dry run");
    setup->scratch.path = tmpl;
    dir = tmpl;
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
      if (!p.sinks.empty() && opts.mode == commit_mode::results_only)
        return make_error(errc::bad_config,
                          cfg.file + ": pipeline " + p.name + ", sink " + p.sinks[0].name +
                            ": a sink is delivered from the change feed of committed epochs, "
                            "which only an exactly-once run keeps (or --dry-run, which "
                            "delivers to no sink)");
      if (src.is_redis() && opts.mode != commit_mode::exactly_once)
        return make_error(errc::bad_config,
                          cfg.file + ": pipeline " + p.name + ", source " + src.name +
                            ": a redis source acknowledges entries once they are landed in the "
                            "lake, which only an exactly-once run does");
    }
  // Ingest on another node checks the inputs there, where they are.
  const bool remote_ingest = opts.cluster && opts.cluster->remote_ingest();
  if (!remote_ingest)
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
  setup->lock.emplace(std::move(*lock));
  std::shared_ptr<lake> lake_ptr; // null when ingest runs on another node, with the lake
  std::shared_ptr<warehouse> wh_ptr;
  if (remote_ingest) {
    auto wh = warehouse::open(dir, cfg.runtime.durable);
    if (!wh)
      return wh.error();
    bool holds_data = false;
    auto id = warehouse_identity(*wh, holds_data);
    if (!id)
      return id.error();
    opts.cluster->bind_store(*id, holds_data);
    wh_ptr = std::make_shared<warehouse>(std::move(*wh));
  } else {
    auto st = open_store(dir, cfg.runtime.durable); // lake and warehouse of one store
    if (!st)
      return st.error();
    lake_ptr = std::make_shared<lake>(std::move(st->lk));
    wh_ptr = std::make_shared<warehouse>(std::move(st->wh));
  }
  if (auto err = check_definitions(cfg, *wh_ptr))
    return err;
  const size_t cores = std::max<size_t>(1, std::thread::hardware_concurrency());
  auto preps = prepare(cfg, lake_ptr.get(), *wh_ptr, cores);
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
  auto tallies = start_tallies(cfg, *preps, *wh_ptr);
  if (!tallies)
    return tallies.error();
  auto sinks = make_sinks(cfg, wh_ptr);
  if (!sinks)
    return sinks.error();
  auto meters = std::make_shared<state_meters>(cfg.pipelines.size());
  for (size_t i = 0; i < tallies->size(); ++i) {
    auto& m = (*meters)[i];
    m.tasks.seed((*tallies)[i].start.read, (*tallies)[i].start.accepted);
    m.task_keep_us = cfg.runtime.task_retention;
    meter_inputs((*preps)[i].inputs, m);
    // Every generation has the partitions prepare() found: the stored states decide them.
    m.mailboxes.size_partitions((*preps)[i].restore.partition_snapshots.size());
  }
  if (opts.probe)
    opts.probe->attach(wh_ptr, lake_ptr, meters);
  auto& deps = setup->deps;
  deps.cfg = cfg;
  deps.lk = lake_ptr;
  deps.wh = wh_ptr;
  deps.meters = meters;
  deps.probe = opts.probe;
  deps.stop = opts.stop;
  deps.first = std::move(*preps);
  deps.tallies = std::move(*tallies);
  deps.sinks = std::move(*sinks);
  deps.spawn = [cfg, lake_ptr, wh_ptr, meters, cluster = opts.cluster](
                 caf::actor_system& sys, run_waiter_actor waiter, std::vector<prepared> ps) {
    return spawn_generation(sys, std::move(waiter), cfg, std::move(ps), lake_ptr, wh_ptr, meters,
                            cluster);
  };
  deps.prepare = [cfg, lake_ptr, wh_ptr, cores] {
    return prepare(cfg, lake_ptr.get(), *wh_ptr, cores);
  };
  if (remote_ingest)
    deps.source_keys = [cluster = opts.cluster](uint32_t i) { return cluster->source_keys(i); };
  setup->cluster = opts.cluster;
  setup->threads = opts.threads ? opts.threads : cores;
  return setup;
}

void configure(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::weir>();
}

caf::expected<std::vector<run_stats>> run_pipelines(const weir_config& cfg,
                                                    const run_options& opts) {
  // One code path with the embedding API: a system of the run's own, started and waited for.
  auto setup = prepare_run(cfg, opts);
  if (!setup)
    return setup.error();
  system_config sys_cfg{(*setup)->threads};
  if (opts.cluster)
    opts.cluster->configure(sys_cfg);
  caf::actor_system sys{sys_cfg};
  auto run = start_prepared(sys, std::move(*setup));
  if (!run)
    return run.error();
  return (*run)->wait();
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
