// The `weir` command: a thin user of the weir library.

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/fault.hpp"
#include "actors/core/input_check.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/runtime.hpp"
#include "cli/check.hpp"
#include "cli/format.hpp"
#include "cli/output.hpp"
#include "cli/progress.hpp"
#include "cli/serve.hpp"
#include "cluster/node.hpp"
#include "store/lake.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"

namespace {

using namespace weir::cli;

/// Exit codes, documented in `weir --help` and docs/cli.md.
enum exit_code : int {
  exit_ok = 0,
  exit_failed = 1, ///< the pipeline failed while running
  exit_usage = 2,  ///< bad command line or bad config
  exit_input = 3,  ///< a missing or unreadable input
  exit_store = 4,  ///< the store cannot be used (unknown format, I/O error, corrupt)
};

constexpr const char* exit_codes_text =
  "Exit codes: 0 success; 1 the pipeline failed while running; 2 bad command line or config;\n"
  "3 missing or unreadable input; 4 the store cannot be used (unknown format, I/O, corrupt).";

std::atomic<bool> stop_requested{false};
std::atomic<int> stop_signal{0}; ///< the signal that asked for the stop

extern "C" void on_signal(int sig) {
  stop_signal.store(sig);
  stop_requested.store(true);
}

int code_of(const caf::error& err) {
  if (err.category() != caf::atom("weir"))
    return exit_failed;
  switch (static_cast<weir::errc>(err.code())) {
    case weir::errc::bad_config:
      return exit_usage;
    case weir::errc::bad_input:
      return exit_input;
    case weir::errc::store_io:
    case weir::errc::store_format:
    case weir::errc::store_corrupt:
    case weir::errc::store_busy:
      return exit_store;
    default:
      return exit_failed;
  }
}

int fail(const caf::error& err) {
  std::cerr << "weir: " << weir::render(err) << "\n";
  return code_of(err);
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

/// The config of a run, checked before anything runs (with WEIR_FAULT: a bad one refuses to
/// run rather than being ignored, docs/faults.md); SIGINT and SIGTERM then ask for a stop.
caf::expected<weir::weir_config> config_for_run(const std::string& config_path) {
  auto cfg = weir::load_config(config_path);
  if (!cfg)
    return cfg.error();
  if (auto err = weir::fault::check_env())
    return err;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return cfg;
}

/// What each pipeline of a finished run did (`weir run`, the coordinating `weir node`).
void print_summary(const std::vector<weir::run_stats>& res, double secs, int sig, bool dry_run,
                   bool no_exactly_once) {
  for (const auto& s : res) {
    const uint64_t rejected = weir::total_rejected(s.rejected);
    std::cout << "pipeline " << s.pipeline << "\n";
    std::printf("  events read        %12llu\n", static_cast<unsigned long long>(s.read));
    std::printf("  accepted           %12llu\n", static_cast<unsigned long long>(s.accepted));
    std::printf("  rejected           %12llu\n", static_cast<unsigned long long>(rejected));
    for (auto& [why, n] : s.rejected)
      std::printf("    %-24s %8llu\n", why.c_str(), static_cast<unsigned long long>(n));
    std::printf("  filtered           %12llu\n", static_cast<unsigned long long>(s.filtered));
    std::printf("  duplicates         %12llu\n", static_cast<unsigned long long>(s.duplicates));
    std::printf("  late (dead letter) %12llu\n", static_cast<unsigned long long>(s.late));
    std::printf("  late (updated)     %12llu\n", static_cast<unsigned long long>(s.late_updates));
    std::printf("  windows committed  %12llu\n",
                static_cast<unsigned long long>(s.windows_committed));
    if (s.windows_open > 0)
      std::printf(
        "  windows open       %12llu   (kept in the store; weir run --final fires them)\n",
        static_cast<unsigned long long>(s.windows_open));
    std::printf("  epochs committed   %12llu\n",
                static_cast<unsigned long long>(s.epochs_committed));
    std::printf("  epoch latency      p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                s.epoch_p50_us / 1e3, s.epoch_p99_us / 1e3, s.epoch_max_us / 1e3);
    if (s.state_epochs > 0)
      std::printf("  state written      %12llu bytes   (%llu per epoch)\n",
                  static_cast<unsigned long long>(s.state_bytes),
                  static_cast<unsigned long long>(s.state_bytes / s.state_epochs));
    if (s.state_rows > 0)
      std::printf("  state per window   %12.0f bytes   (%llu windows held at most)\n",
                  static_cast<double>(s.state_memory) / static_cast<double>(s.state_rows),
                  static_cast<unsigned long long>(s.state_rows));
    if (s.restarts > 0)
      std::printf("  restarts           %12u\n", s.restarts);
    if (dry_run)
      std::printf("  dry run: nothing was written\n");
    if (no_exactly_once)
      std::printf("  without exactly-once: results written, nothing to resume from\n");
    std::printf("  elapsed            %12.3f s\n", secs);
    std::printf("  events/s           %12.0f\n", secs > 0 ? s.read / secs : 0.0);
    if (sig != 0 && !dry_run && !no_exactly_once) {
      std::printf("  interrupted (%s): the next run resumes from\n", signal_name(sig));
      for (const auto& [key, off] : s.resume_offsets)
        std::printf("    %s offset %llu\n", source_label(key).c_str(),
                    static_cast<unsigned long long>(off));
    }
  }
  std::fflush(stdout);
}

int cmd_run(const std::string& config_path, const std::string& store, size_t threads, bool quiet,
            bool dry_run, bool no_exactly_once, bool final_flush,
            const weir::cli::progress_options& progress_opts) {
  auto cfg = config_for_run(config_path);
  if (!cfg)
    return fail(cfg.error());
  weir::run_options opts;
  // Progress is drawn from the run's live meters, which the probe shows.
  std::optional<weir::cli::progress_reporter> progress;
  if (progress_opts.mode != weir::cli::progress_mode::off) {
    opts.probe = std::make_shared<weir::run_probe>();
    progress.emplace(progress_opts, opts.probe);
  }
  opts.store = store;
  opts.threads = threads;
  opts.stop = &stop_requested;
  opts.final_flush = final_flush;
  if (dry_run)
    opts.mode = weir::commit_mode::none;
  else if (no_exactly_once)
    opts.mode = weir::commit_mode::results_only;
  auto t0 = std::chrono::steady_clock::now();
  auto res = weir::run_pipelines(*cfg, opts);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (progress)
    progress->finish(); // its last line, before the summary or the error
  if (!res)
    return fail(res.error());
  // A followed source runs until stopped: a stop is its normal end. A bounded run that was
  // stopped did not finish: it exits as shells expect of a signalled command (128 + signal).
  const int sig = stop_signal.load();
  bool follows = false;
  for (const auto& p : cfg->pipelines)
    for (const auto& src : p.sources)
      follows = follows || src.follow;
  const int code = sig != 0 && !follows ? 128 + sig : exit_ok;
  // Mostly rejected records fail the run after its summary is printed.
  const auto rejects = weir::check_reject_ratio(*cfg, *res);
  if (quiet)
    return rejects ? fail(rejects) : code;
  print_summary(*res, secs, sig, dry_run, no_exactly_once);
  std::fflush(stdout);
  return rejects ? fail(rejects) : code;
}

int cmd_node(const std::string& cluster_path, const std::string& name, size_t threads, bool quiet,
             bool final_flush) {
  auto c = weir::cluster::load_cluster_config(cluster_path, name);
  if (!c)
    return fail(c.error());
  if (auto err = weir::fault::check_env())
    return fail(err);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  weir::run_options opts;
  opts.threads = threads;
  opts.stop = &stop_requested;
  opts.final_flush = final_flush;
  auto t0 = std::chrono::steady_clock::now();
  auto res = weir::cluster::run_node(*c, opts);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res)
    return fail(res.error());
  if (*c->self != c->coordinator())
    return exit_ok; // a node that serves partitions ends when it is told to
  const auto rejects = weir::check_reject_ratio(c->pipeline, *res);
  if (!quiet)
    print_summary(*res, secs, stop_signal.load(), false, false);
  return rejects ? fail(rejects) : exit_ok;
}

int cmd_cluster_status(const std::string& cluster_path, const std::string& name) {
  auto c = weir::cluster::load_cluster_config(cluster_path, name);
  if (!c)
    return fail(c.error());
  auto nodes = weir::cluster::cluster_status(*c);
  if (!nodes)
    return fail(nodes.error());
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  std::printf("cluster %s: %zu nodes\n", c->name.c_str(), nodes->size());
  size_t up = 0;
  for (const auto& n : *nodes) {
    up += n.up ? 1 : 0;
    std::string parts;
    for (const auto& [pipeline, p] : n.partitions)
      parts += (parts.empty() ? "" : " ") + pipeline + "/" + std::to_string(p);
    std::string held = parts.empty() ? "no partitions" : "partitions " + parts;
    for (const auto& pipeline : n.ingests)
      held += (&pipeline == &n.ingests.front() ? "; ingest " : " ") + pipeline;
    std::printf("  %-12s %-22s %-4s %-34s %s\n", n.name.c_str(), n.address.c_str(),
                n.up ? "up" : "down", n.roles.c_str(), n.up ? held.c_str() : n.error.c_str());
    for (const auto& p : n.pipelines) {
      std::printf("    pipeline %s: last epoch %llu, %llu windows, %u restarts", p.name.c_str(),
                  static_cast<unsigned long long>(p.last_epoch),
                  static_cast<unsigned long long>(p.windows), p.restarts);
      if (p.watermark != weir::min_timestamp)
        std::printf(", watermark %s (lag %.1f s)", weir::format_time(p.watermark).c_str(),
                    static_cast<double>(now - p.watermark) / 1e6);
      std::printf("\n");
    }
  }
  std::fflush(stdout);
  // Exit 0 when every node answers, 1 when one does not (scripts can wait on it).
  return up == nodes->size() ? exit_ok : exit_failed;
}

int cmd_serve(const std::string& config_path, const weir::cli::serve_options& opts) {
  auto cfg = config_for_run(config_path);
  if (!cfg)
    return fail(cfg.error());
  auto res = weir::cli::serve(*cfg, opts, stop_requested, [](const std::string& addr) {
    if (addr.compare(0, 4, "tcp ") == 0)
      std::printf("weir serve: tcp ingest on %s\n", addr.c_str() + 4);
    else
      std::printf("weir serve: listening on http://%s\n", addr.c_str());
    std::fflush(stdout);
  });
  if (!res)
    return fail(res.error());
  std::printf("weir serve: stopped (%s) after a last commit\n", signal_name(stop_signal.load()));
  return exit_ok;
}

/// Refuses to open (and so create) a store that is not there.
caf::error require_store(const std::string& store) {
  std::error_code ec;
  if (!std::filesystem::is_directory(store + "/warehouse", ec))
    return weir::make_error(weir::errc::bad_input, "no Weir store at " + store);
  return caf::none;
}

caf::expected<std::optional<weir::timestamp>> optional_time(const std::string& text) {
  if (text.empty())
    return std::optional<weir::timestamp>{};
  auto t = parse_when(text);
  if (!t)
    return t.error();
  return std::optional<weir::timestamp>{*t};
}

int cmd_query(const std::string& store, const std::string& server, const std::string& pipeline,
              const std::string& key, const std::string& from, const std::string& to,
              const std::string& format, std::optional<uint64_t> since_epoch) {
  if (!server.empty()) {
    result_writer out{format, stdout_sink()};
    uint64_t epoch = 0;
    auto err = weir::cli::query_server(
      server, pipeline, key, from, to, since_epoch,
      [&](const weir::query_answer& page) { out.page(page); }, &epoch);
    if (err)
      return fail(err);
    out.finish();
    if (since_epoch) // where a script follows on
      std::fprintf(stderr, "weir query: up to epoch %llu (follow with --since-epoch %llu)\n",
                   static_cast<unsigned long long>(epoch), static_cast<unsigned long long>(epoch));
    return exit_ok;
  }
  if (since_epoch)
    return fail(weir::make_error(weir::errc::bad_config,
                                 "query: --since-epoch reads the change feed of a running weir "
                                 "serve: give --server"));
  auto t_from = optional_time(from);
  if (!t_from)
    return fail(t_from.error());
  auto t_to = optional_time(to);
  if (!t_to)
    return fail(t_to.error());
  result_writer out{format, stdout_sink()};
  auto err = weir::query_store_pages(store, pipeline, internal_key(key), *t_from, *t_to,
                                     [&](const weir::query_answer& page) {
                                       out.page(page);
                                       return true;
                                     });
  if (err)
    return fail(err);
  out.finish();
  return exit_ok;
}

/// Whether the store holds its lake: the coordinating node of a cluster whose ingest runs on
/// another node holds the warehouse alone, and reading it must not create a lake.
bool has_lake(const std::string& store) {
  std::error_code ec;
  return std::filesystem::is_directory(store + "/lake", ec);
}

/// The source keys of the store's lake by id: from the lake when it is here, else those the
/// warehouse recorded of its lake on another node (none: empty).
caf::expected<std::vector<std::pair<uint32_t, std::string>>>
store_sources(const std::string& store) {
  if (has_lake(store)) {
    auto lk = weir::lake::open(store);
    if (!lk)
      return std::move(lk.error());
    return lk->sources();
  }
  auto wh = weir::warehouse::open(store);
  if (!wh)
    return std::move(wh.error());
  return wh->lake_sources();
}

/// "source #ID", or the label of the key of source `id`.
std::string source_name(const std::vector<std::pair<uint32_t, std::string>>& sources, uint32_t id) {
  for (const auto& [sid, key] : sources)
    if (sid == id)
      return source_label(key);
  return "source #" + std::to_string(id);
}

int print_tables(const char* title,
                 const caf::expected<std::vector<std::pair<std::string, uint64_t>>>& counts) {
  if (!counts)
    return fail(counts.error());
  std::cout << title << "\n";
  for (auto& [name, n] : *counts)
    std::printf("  %-22s %12llu\n", name.c_str(), static_cast<unsigned long long>(n));
  return exit_ok;
}

int print_pipelines(weir::warehouse& wh,
                    const std::vector<std::pair<uint32_t, std::string>>& sources) {
  auto ps = wh.pipelines();
  if (!ps)
    return fail(ps.error());
  for (auto& p : *ps) {
    auto last = wh.last_epoch(p.name);
    if (!last)
      return fail(last.error());
    std::cout << "pipeline " << p.name << " (" << p.window << "; aggregates:";
    for (auto& a : p.aggregates)
      std::cout << " " << a;
    std::cout << ")\n  last committed epoch " << *last << "\n";
    auto offs = wh.offsets(p.name);
    if (!offs)
      return fail(offs.error());
    if (!p.definition.empty()) {
      std::cout << "  definition\n";
      std::istringstream lines{p.definition};
      for (std::string l; std::getline(lines, l);)
        std::cout << "    " << l << "\n";
    }
    for (auto& [id, off] : *offs) {
      const auto name = source_name(sources, id); // "source #ID" when not known
      std::printf("  %s%s: committed offset %llu\n", name.rfind("source #", 0) ? "source " : "",
                  name.c_str(), static_cast<unsigned long long>(off));
    }
  }
  return exit_ok;
}

/// `weir inspect` of a store without its lake: the warehouse, and what it recorded of the lake.
int inspect_warehouse_only(const std::string& store) {
  auto wh = weir::warehouse::open(store);
  if (!wh)
    return fail(wh.error());
  auto sources = wh->lake_sources();
  if (!sources)
    return fail(sources.error());
  std::cout << "store " << store << "\n";
  if (int rc = print_tables("warehouse", wh->table_counts()); rc != exit_ok)
    return rc;
  std::cout << "lake: none here (on another node; its sources: " << sources->size()
            << " recorded)\n";
  for (auto& [id, key] : *sources)
    std::cout << "  source #" << id << " " << source_label(key) << "\n";
  return print_pipelines(*wh, *sources);
}

int cmd_inspect(const std::string& store) {
  if (auto err = require_store(store))
    return fail(err);
  if (!has_lake(store))
    return inspect_warehouse_only(store);
  auto st = weir::open_store(store); // lake and warehouse, checked to be one store
  if (!st)
    return fail(st.error());
  std::cout << "store " << store << "\n";
  if (int rc = print_tables("warehouse", st->wh.table_counts()); rc != exit_ok)
    return rc;
  if (int rc = print_tables("lake", st->lk.table_counts()); rc != exit_ok)
    return rc;
  auto sources = st->lk.sources();
  if (!sources)
    return fail(sources.error());
  return print_pipelines(st->wh, *sources);
}

int cmd_check(const std::string& store) {
  auto clean = weir::cli::run_check(store);
  if (!clean)
    return fail(clean.error());
  if (*clean)
    return exit_ok;
  std::cerr << "weir: store " << store << " is damaged (problems above)\n";
  return exit_store;
}

int cmd_dead_letters(const std::string& store, const std::string& pipeline,
                     const std::string& format, size_t limit) {
  if (auto err = require_store(store))
    return fail(err);
  auto sources = store_sources(store);
  if (!sources)
    return fail(sources.error());
  dead_letter_writer out{format, stdout_sink(),
                         [&](uint32_t id) { return source_name(*sources, id); }};
  auto err = weir::store_dead_letter_pages(store, pipeline, limit, [&](const auto& page) {
    out.page(page);
    return true;
  });
  if (err)
    return fail(err);
  out.finish();
  return exit_ok;
}

} // namespace

int main(int argc, char** argv) {
  // Batches are large (MiB) and short-lived. Kept on the heap instead of being mmap'd and
  // unmapped one by one, they cost no page faults, page zeroing or TLB shootdowns: about 10%
  // of a `weir run` (see the README's benchmark notes).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // Logs go to stderr: stdout carries what the commands print (summaries, query results).
  spdlog::set_default_logger(spdlog::stderr_color_mt("weir"));
  spdlog::set_level(spdlog::level::warn);
  CLI::App app{"weir: an actor-based stream-to-batch runtime.\n"
               "Lands events durably, cleans them, aggregates them in event-time windows and\n"
               "commits the results exactly once to an LMDB store."};
  app.footer(exit_codes_text);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string{"weir "} + WEIR_VERSION);
  // Options of `weir` itself (--log-level) may also follow the command's name.
  app.fallthrough();
  std::string log_format = "text";
  auto* log_format_flag =
    app.add_option("--log-format", log_format, "text, or json: one JSON object a line")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  std::string log_level = "warn";
  auto* log_level_flag =
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();

  auto* run = app.add_subcommand("run", "Run the pipelines of a config until their input ends "
                                        "(or SIGINT/SIGTERM in follow mode) and print a summary");
  std::string config_path;
  std::string store;
  size_t threads = 0;
  bool quiet = false;
  run->add_option("PIPELINE.toml", config_path, "pipeline config")->required();
  run->add_option("--store", store, "store directory (default: the config's `store`)");
  run->add_option("--threads", threads, "scheduler threads (default: number of cores)");
  run->add_flag("--quiet", quiet, "print no summary");
  bool dry_run = false;
  run->add_flag("--dry-run", dry_run,
                "process the inputs from the start and write nothing (no store is used); "
                "the summary says what a run would commit");
  bool no_exactly_once = false;
  run
    ->add_flag("--no-exactly-once", no_exactly_once,
               "write results and dead letters only: no lake, offsets, state or fsync, so "
               "nothing to resume from (for one-off backfills; refused on a store with "
               "committed epochs)")
    ->excludes("--dry-run");
  bool final_flush = false;
  std::string progress_mode = "auto";
  run
    ->add_option("--progress", progress_mode,
                 "progress on stderr while the run goes: bar (redrawn in place), lines (one "
                 "per --progress-interval; JSON objects with --log-format json), off, or auto: "
                 "a bar on a terminal, lines otherwise")
    ->check(CLI::IsMember({"auto", "bar", "lines", "off"}))
    ->capture_default_str();
  std::string progress_interval = "10s";
  run
    ->add_option("--progress-interval", progress_interval,
                 "time between two lines of --progress lines (e.g. 10s, 500ms)")
    ->capture_default_str();
  run->add_flag("--final", final_flush,
                "the input ends here for good: fire every open window at the end (later records "
                "for them are late); without it, windows the watermark has not closed stay open "
                "in the store for the next run");
  run->footer(exit_codes_text);

  auto* serve = app.add_subcommand("serve", "Run the pipelines of a config until SIGINT/SIGTERM "
                                            "and answer over HTTP: results, dead letters, "
                                            "metrics, health (docs/serve.md)");
  weir::cli::serve_options serve_opts;
  serve->add_option("PIPELINE.toml", config_path, "pipeline config")->required();
  serve->add_option("--listen", serve_opts.listen, "HOST:PORT to answer on (port 0: any free one)")
    ->capture_default_str();
  serve->add_option(
    "--tcp", serve_opts.tcp_listen,
    "HOST:PORT of a plain TCP ingest as well (docs/serve.md; port 0: any free one)");
  serve->add_option("--store", serve_opts.store, "store directory (default: the config's `store`)");
  serve->add_option("--threads", serve_opts.threads,
                    "scheduler threads (default: number of cores)");
  serve
    ->add_option("--max-body-bytes", serve_opts.max_body_bytes,
                 "POST bodies larger than this are refused (413)")
    ->capture_default_str()
    ->check(CLI::PositiveNumber);
  serve
    ->add_option("--max-pending-bytes", serve_opts.max_pending_bytes,
                 "bytes landed but not yet committed per http source above which clients "
                 "get 429 with Retry-After")
    ->capture_default_str()
    ->check(CLI::PositiveNumber);
  serve->footer(exit_codes_text);

  auto* node = app.add_subcommand("node", "Run one node of a cluster (docs/cluster.md): the "
                                          "coordinating node runs the pipelines and prints a "
                                          "summary, the others hold partitions (and the "
                                          "ingest node its ingest) until SIGINT/SIGTERM");
  std::string cluster_path;
  std::string node_name;
  node->add_option("--cluster", cluster_path, "cluster config (CLUSTER.toml)")->required();
  node->add_option("--name", node_name, "the node of the cluster config to run as")->required();
  node->add_option("--threads", threads, "scheduler threads (default: number of cores)");
  node->add_flag("--quiet", quiet, "print no summary");
  node->add_flag("--final", final_flush,
                 "the input ends here for good: fire every open window at the end");
  node->footer(exit_codes_text);

  auto* query = app.add_subcommand("query", "Print committed window results");
  std::string q_pipeline;
  std::string q_key;
  std::string q_from;
  std::string q_to;
  std::string q_format = "table";
  std::string q_server;
  auto* q_store = query->add_option("--store", store, "store directory");
  query
    ->add_option("--server", q_server,
                 "ask a running weir serve instead (http://HOST:PORT): its committed results")
    ->excludes(q_store);
  query->add_option("--pipeline", q_pipeline, "pipeline name")->required();
  query->add_option("--key", q_key, "only this key (multi-field keys joined with '|')");
  query->add_option("--from", q_from, "only windows starting at or after (ISO-8601 or epoch s)");
  query->add_option("--to", q_to, "only windows ending at or before (ISO-8601 or epoch s)");
  query->add_option("--format", q_format, "table, csv or json")
    ->check(CLI::IsMember({"table", "csv", "json"}))
    ->capture_default_str();
  std::optional<uint64_t> q_since;
  query->add_option("--since-epoch", q_since,
                    "with --server: the change feed, rows committed by epochs after this one "
                    "(needs [pipeline.results] change_feed = true)");
  query->footer(exit_codes_text);

  auto* status = app.add_subcommand("status", "Show the recent committed epochs (batch tasks) "
                                              "of a running weir serve, or the nodes of a "
                                              "cluster");
  std::string s_server;
  std::string s_pipeline;
  size_t s_limit = 20;
  std::string s_cluster;
  auto* s_server_opt = status->add_option("--server", s_server, "the server (http://HOST:PORT)");
  status
    ->add_option("--cluster", s_cluster,
                 "a cluster config (CLUSTER.toml): every node's state, partitions, and how far "
                 "the pipelines are")
    ->excludes(s_server_opt);
  status->add_option("--name", node_name,
                     "with --cluster and TLS: the node whose certificate this machine holds");
  status->add_option("--pipeline", s_pipeline, "one pipeline only");
  status->add_option("--limit", s_limit, "epochs per pipeline, newest")
    ->capture_default_str()
    ->check(CLI::Range(size_t{1}, size_t{100000}));
  status->footer(exit_codes_text);

  auto* inspect = app.add_subcommand("inspect", "Show the store's tables, counts, format "
                                                "version and committed offsets");
  inspect->add_option("--store", store, "store directory")->required();
  inspect->footer(exit_codes_text);

  auto* dead = app.add_subcommand("dead-letters", "List rejected records with source, offset, "
                                                  "reason and raw text");
  std::string d_pipeline;
  std::string d_format = "table";
  size_t d_limit = 0;
  dead->add_option("--store", store, "store directory")->required();
  dead->add_option("--pipeline", d_pipeline, "only this pipeline");
  dead->add_option("--format", d_format, "table, csv or json")
    ->check(CLI::IsMember({"table", "csv", "json"}))
    ->capture_default_str();
  dead->add_option("--limit", d_limit, "at most this many (0: all)")->capture_default_str();
  dead->footer(exit_codes_text);

  auto* check = app.add_subcommand("check", "Walk every table of the store, verify checksums, "
                                            "key shapes, cross-references and identity, and "
                                            "report (exit 4 when damaged)");
  check->add_option("--store", store, "store directory")->required();
  check->footer(exit_codes_text);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? exit_ok : exit_usage;
  }
  // A run's config may set them too; the flags win.
  if ((*run || *serve) && (log_level_flag->count() == 0 || log_format_flag->count() == 0)) {
    if (auto cfg = weir::load_config(config_path)) {
      if (log_level_flag->count() == 0 && !cfg->runtime.log_level.empty())
        log_level = cfg->runtime.log_level;
      if (log_format_flag->count() == 0 && !cfg->runtime.log_format.empty())
        log_format = cfg->runtime.log_format;
    } // a bad config is reported by the command itself
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (log_format == "json")
    weir::cli::use_json_logs();
  if (*run) {
    auto progress = weir::cli::progress_options_of(
      progress_mode, progress_interval, ::isatty(STDERR_FILENO) == 1, log_format == "json");
    if (!progress)
      return fail(progress.error());
    return cmd_run(config_path, store, threads, quiet, dry_run, no_exactly_once, final_flush,
                   *progress);
  }
  if (*serve)
    return cmd_serve(config_path, serve_opts);
  if (*node)
    return cmd_node(cluster_path, node_name, threads, quiet, final_flush);
  if (*query)
    return q_server.empty() && store.empty()
             ? fail(weir::make_error(weir::errc::bad_config, "query: give --store or --server"))
             : cmd_query(store, q_server, q_pipeline, q_key, q_from, q_to, q_format, q_since);
  if (*status) {
    if (!s_cluster.empty())
      return cmd_cluster_status(s_cluster, node_name);
    if (s_server.empty())
      return fail(weir::make_error(weir::errc::bad_config, "status: give --server or --cluster"));
    if (auto err = weir::cli::print_status(s_server, s_pipeline, s_limit))
      return fail(err);
    return exit_ok;
  }
  if (*inspect)
    return cmd_inspect(store);
  if (*dead)
    return cmd_dead_letters(store, d_pipeline, d_format, d_limit);
  if (*check)
    return cmd_check(store);
  return exit_usage;
}
