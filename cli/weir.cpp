// The `weir` command: a thin user of the weir library.

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/fault.hpp"
#include "actors/core/timeparse.hpp"
#include "actors/runtime.hpp"
#include "cli/check.hpp"
#include "store/lake.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"

namespace {

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

extern "C" void on_signal(int) {
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
      return exit_store;
    default:
      return exit_failed;
  }
}

int fail(const caf::error& err) {
  std::cerr << "weir: " << weir::render(err) << "\n";
  return code_of(err);
}

std::string show_key(std::string k) {
  for (auto& c : k)
    if (c == weir::key_separator)
      c = '|';
  return k;
}

std::string internal_key(std::string k) {
  for (auto& c : k)
    if (c == '|')
      c = weir::key_separator;
  return k;
}

/// A number for people (table: at most 4 decimals) or for programs (csv, json: 15 digits).
std::string fmt_number(double v, bool precise = false) {
  if (std::isnan(v))
    return "";
  if (precise && !(v == std::floor(v) && std::fabs(v) < 1e15)) {
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%.15g", v);
    return buf;
  }
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  std::string s = buf;
  if (s.find('e') == std::string::npos && std::fabs(v) >= 1e-4) {
    std::snprintf(buf, sizeof(buf), "%.4f", v);
    s = buf;
    while (!s.empty() && s.back() == '0')
      s.pop_back();
    if (!s.empty() && s.back() == '.')
      s.pop_back();
  }
  return s;
}

/// A number as JSON: integers without a fraction, others with full precision.
std::string json_number(double v) {
  return fmt_number(v, true);
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos)
    return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"')
      out += '"';
    out += c;
  }
  return out + "\"";
}

void print_table(const std::vector<std::string>& head,
                 const std::vector<std::vector<std::string>>& rows, bool right_from = 3) {
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i)
    w[i] = head[i].size();
  for (auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i)
      w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (size_t i = 0; i < r.size(); ++i) {
      std::string cell = r[i];
      std::string pad(w[i] - cell.size(), ' ');
      out += (i >= right_from) ? pad + cell : cell + pad;
      if (i + 1 < r.size())
        out += "  ";
    }
    while (!out.empty() && out.back() == ' ')
      out.pop_back();
    std::cout << out << "\n";
  };
  line(head);
  std::vector<std::string> sep;
  for (auto x : w)
    sep.push_back(std::string(x, '-'));
  line(sep);
  for (auto& r : rows)
    line(r);
}

caf::expected<weir::timestamp> parse_when(const std::string& s) {
  weir::timestamp t = 0;
  if (weir::parse_time(s, weir::time_format::iso8601, t))
    return t;
  if (weir::parse_time(s, weir::time_format::epoch_s, t))
    return t;
  return weir::make_error(weir::errc::bad_config,
                          "bad time '" + s + "': use ISO-8601 with a zone or epoch seconds");
}

int cmd_run(const std::string& config_path, const std::string& store, size_t threads, bool quiet,
            bool dry_run, bool no_exactly_once) {
  auto cfg = weir::load_config(config_path);
  if (!cfg)
    return fail(cfg.error());
  // A bad WEIR_FAULT (docs/faults.md) refuses to run rather than being ignored.
  if (auto err = weir::fault::check_env())
    return fail(err);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  weir::run_options opts;
  opts.store = store;
  opts.threads = threads;
  opts.stop = &stop_requested;
  if (dry_run)
    opts.mode = weir::commit_mode::none;
  else if (no_exactly_once)
    opts.mode = weir::commit_mode::results_only;
  auto t0 = std::chrono::steady_clock::now();
  auto res = weir::run_pipelines(*cfg, opts);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res)
    return fail(res.error());
  if (quiet)
    return exit_ok;
  for (const auto& s : *res) {
    uint64_t rejected = 0;
    for (auto& [_, n] : s.rejected)
      rejected += n;
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
    std::printf("  epochs committed   %12llu\n",
                static_cast<unsigned long long>(s.epochs_committed));
    std::printf("  epoch latency      p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                s.epoch_p50_us / 1e3, s.epoch_p99_us / 1e3, s.epoch_max_us / 1e3);
    if (s.restarts > 0)
      std::printf("  restarts           %12u\n", s.restarts);
    if (dry_run)
      std::printf("  dry run: nothing was written\n");
    if (no_exactly_once)
      std::printf("  without exactly-once: results written, nothing to resume from\n");
    std::printf("  elapsed            %12.3f s\n", secs);
    std::printf("  events/s           %12.0f\n", secs > 0 ? s.read / secs : 0.0);
  }
  std::fflush(stdout);
  return exit_ok;
}

/// Refuses to open (and so create) a store that is not there.
caf::error require_store(const std::string& store) {
  std::error_code ec;
  if (!std::filesystem::is_directory(store + "/warehouse", ec))
    return weir::make_error(weir::errc::bad_input, "no Weir store at " + store);
  return caf::none;
}

int cmd_query(const std::string& store, const std::string& pipeline, const std::string& key,
              const std::string& from, const std::string& to, const std::string& format) {
  std::optional<weir::timestamp> t_from;
  std::optional<weir::timestamp> t_to;
  if (!from.empty()) {
    auto t = parse_when(from);
    if (!t)
      return fail(t.error());
    t_from = *t;
  }
  if (!to.empty()) {
    auto t = parse_when(to);
    if (!t)
      return fail(t.error());
    t_to = *t;
  }
  auto answer = weir::query_store(store, pipeline, internal_key(key), t_from, t_to);
  if (!answer)
    return fail(answer.error());
  const auto& aggs = answer->aggregates;
  std::vector<std::string> head{"window_start", "window_end", "key"};
  for (auto& a : aggs)
    head.push_back(a);
  head.push_back("version");
  std::vector<std::vector<std::string>> rows;
  if (format == "csv") {
    std::string h;
    for (size_t i = 0; i < head.size(); ++i)
      h += (i ? "," : "") + csv_escape(head[i]);
    std::cout << h << "\n";
  } else if (format == "json") {
    std::cout << "[";
  }
  bool first = true;
  for (const auto& r : answer->rows) {
    std::vector<std::string> row{weir::format_time(r.start), weir::format_time(r.end),
                                 show_key(r.key)};
    for (auto v : r.values)
      row.push_back(fmt_number(v, format != "table"));
    row.push_back(std::to_string(r.version));
    if (format == "csv") {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i)
        line += (i ? "," : "") + csv_escape(row[i]);
      std::cout << line << "\n";
    } else if (format == "json") {
      std::cout << (first ? "\n" : ",\n") << "  {\"window_start\": \"" << json_escape(row[0])
                << "\", \"window_end\": \"" << json_escape(row[1]) << "\", \"key\": \""
                << json_escape(row[2]) << "\"";
      for (size_t i = 0; i < aggs.size() && i < r.values.size(); ++i) {
        std::cout << ", \"" << json_escape(aggs[i]) << "\": ";
        if (std::isnan(r.values[i]))
          std::cout << "null";
        else
          std::cout << json_number(r.values[i]);
      }
      std::cout << ", \"version\": " << r.version << "}";
      first = false;
    } else {
      rows.push_back(std::move(row));
    }
  }
  if (format == "json")
    std::cout << (first ? "]\n" : "\n]\n");
  else if (format == "table")
    print_table(head, rows);
  return exit_ok;
}

int cmd_inspect(const std::string& store) {
  if (auto err = require_store(store))
    return fail(err);
  auto st = weir::open_store(store); // lake and warehouse, checked to be one store
  if (!st)
    return fail(st.error());
  auto* wh = &st->wh;
  auto* lk = &st->lk;
  std::cout << "store " << store << "\n";
  auto wt = wh->table_counts();
  if (!wt)
    return fail(wt.error());
  std::cout << "warehouse\n";
  for (auto& [name, n] : *wt)
    std::printf("  %-22s %12llu\n", name.c_str(), static_cast<unsigned long long>(n));
  auto lt = lk->table_counts();
  if (!lt)
    return fail(lt.error());
  std::cout << "lake\n";
  for (auto& [name, n] : *lt)
    std::printf("  %-22s %12llu\n", name.c_str(), static_cast<unsigned long long>(n));
  auto sources = lk->sources();
  if (!sources)
    return fail(sources.error());
  auto ps = wh->pipelines();
  if (!ps)
    return fail(ps.error());
  for (auto& p : *ps) {
    auto last = wh->last_epoch(p.name);
    if (!last)
      return fail(last.error());
    std::cout << "pipeline " << p.name << " (" << p.window << "; aggregates:";
    for (auto& a : p.aggregates)
      std::cout << " " << a;
    std::cout << ")\n  last committed epoch " << *last << "\n";
    auto offs = wh->offsets(p.name);
    if (!offs)
      return fail(offs.error());
    for (auto& [id, off] : *offs) {
      std::string name = "#" + std::to_string(id);
      for (auto& [sid, key] : *sources)
        if (sid == id)
          name = key;
      std::printf("  source %s: committed offset %llu\n", name.c_str(),
                  static_cast<unsigned long long>(off));
    }
  }
  return exit_ok;
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
  auto letters = weir::store_dead_letters(store, pipeline, limit);
  if (!letters)
    return fail(letters.error());
  auto lk = weir::lake::open(store);
  if (!lk)
    return fail(lk.error());
  auto sources = lk->sources();
  if (!sources)
    return fail(sources.error());
  auto source_name = [&](uint32_t id) {
    for (auto& [sid, key] : *sources)
      if (sid == id)
        return key;
    return "#" + std::to_string(id);
  };
  std::vector<std::vector<std::string>> rows;
  if (format == "csv")
    std::cout << "pipeline,source,offset,reason,raw\n";
  for (const auto& r : *letters) {
    std::vector<std::string> row{r.pipeline, source_name(r.letter.source),
                                 std::to_string(r.letter.offset), r.letter.reason, r.letter.raw};
    if (format == "csv") {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i)
        line += (i ? "," : "") + csv_escape(row[i]);
      std::cout << line << "\n";
    } else {
      std::string raw = row[4];
      for (auto& c : raw)
        if (static_cast<unsigned char>(c) < 0x20)
          c = ' ';
      if (raw.size() > 80)
        raw = raw.substr(0, 77) + "...";
      row[4] = raw;
      rows.push_back(std::move(row));
    }
  }
  if (format != "csv")
    print_table({"pipeline", "source", "offset", "reason", "raw"}, rows, 99);
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
  std::string log_level = "warn";
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
  run->add_flag("--no-exactly-once", no_exactly_once,
                "write results and dead letters only: no lake, offsets, state or fsync, so "
                "nothing to resume from (for one-off backfills; refused on a store with "
                "committed epochs)")
    ->excludes("--dry-run");
  run->footer(exit_codes_text);

  auto* query = app.add_subcommand("query", "Print committed window results");
  std::string q_pipeline;
  std::string q_key;
  std::string q_from;
  std::string q_to;
  std::string q_format = "table";
  query->add_option("--store", store, "store directory")->required();
  query->add_option("--pipeline", q_pipeline, "pipeline name")->required();
  query->add_option("--key", q_key, "only this key (multi-field keys joined with '|')");
  query->add_option("--from", q_from, "only windows starting at or after (ISO-8601 or epoch s)");
  query->add_option("--to", q_to, "only windows ending at or before (ISO-8601 or epoch s)");
  query->add_option("--format", q_format, "table, csv or json")
    ->check(CLI::IsMember({"table", "csv", "json"}))
    ->capture_default_str();
  query->footer(exit_codes_text);

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
  dead->add_option("--format", d_format, "table or csv")
    ->check(CLI::IsMember({"table", "csv"}))
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
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (*run)
    return cmd_run(config_path, store, threads, quiet, dry_run, no_exactly_once);
  if (*query)
    return cmd_query(store, q_pipeline, q_key, q_from, q_to, q_format);
  if (*inspect)
    return cmd_inspect(store);
  if (*dead)
    return cmd_dead_letters(store, d_pipeline, d_format, d_limit);
  if (*check)
    return cmd_check(store);
  return exit_usage;
}
