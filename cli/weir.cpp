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

/// A number for people: integers as such, others with at most 4 decimals (or 6 significant
/// digits in exponent form when very large or small).
std::string fmt_number(double v) {
  if (std::isnan(v))
    return "";
  if (std::isinf(v))
    return v > 0 ? "inf" : "-inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
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

/// The length of the valid UTF-8 sequence at s[i], or 0 when there is none.
size_t utf8_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2)
      return 0;
  // No overlong forms, surrogates or code points past U+10FFFF.
  auto c1 = n > 1 ? static_cast<unsigned char>(s[i + 1]) : 0;
  if ((n == 2 && c < 0xC2) || (n == 3 && c == 0xE0 && c1 < 0xA0) ||
      (n == 3 && c == 0xED && c1 >= 0xA0) || (n == 4 && c == 0xF0 && c1 < 0x90) ||
      (n == 4 && (c > 0xF4 || (c == 0xF4 && c1 >= 0x90))))
    return 0;
  return n;
}

/// A JSON string body: quotes, backslashes and control characters escaped, and any byte that
/// is not valid UTF-8 (a dead letter's raw text may hold such) replaced by U+FFFD.
std::string json_escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    ++i;
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

/// A source as users name it, from its store key "pipeline/source:path": "source (path)", or
/// "source (stdin)".
std::string source_label(const std::string& key) {
  auto slash = key.find('/');
  auto colon = key.find(':', slash == std::string::npos ? 0 : slash + 1);
  if (slash == std::string::npos || colon == std::string::npos)
    return key;
  auto name = key.substr(slash + 1, colon - slash - 1);
  auto path = key.substr(colon + 1);
  return name + " (" + (path == "-" ? std::string{"stdin"} : path) + ")";
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

/// Prints a table a page of rows at a time: column widths come from the header and the first
/// page (a later, wider cell makes its row longer rather than holding every row in memory).
/// Text is left-aligned, numbers right-aligned.
class table_printer {
public:
  table_printer(std::vector<std::string> head, std::vector<bool> numeric)
    : head_(std::move(head))
    , numeric_(std::move(numeric)) {}

  void add(const std::vector<std::vector<std::string>>& rows) {
    if (!started_) {
      started_ = true;
      width_.resize(head_.size());
      for (size_t i = 0; i < head_.size(); ++i)
        width_[i] = head_[i].size();
      for (const auto& r : rows)
        for (size_t i = 0; i < r.size() && i < width_.size(); ++i)
          width_[i] = std::max(width_[i], r[i].size());
      line(head_);
      std::vector<std::string> sep;
      for (auto w : width_)
        sep.emplace_back(w, '-');
      line(sep);
    }
    for (const auto& r : rows)
      line(r);
  }

  /// Prints the header of an empty table.
  void finish() {
    if (!started_)
      add({});
  }

private:
  void line(const std::vector<std::string>& r) {
    out_.clear();
    for (size_t i = 0; i < r.size(); ++i) {
      const auto& cell = r[i];
      size_t w = i < width_.size() ? width_[i] : 0;
      std::string pad(w > cell.size() ? w - cell.size() : 0, ' ');
      bool right = i < numeric_.size() && numeric_[i];
      out_ += right ? pad + cell : cell + pad;
      if (i + 1 < r.size())
        out_ += "  ";
    }
    while (!out_.empty() && out_.back() == ' ')
      out_.pop_back();
    out_ += '\n';
    std::fwrite(out_.data(), 1, out_.size(), stdout);
  }

  std::vector<std::string> head_;
  std::vector<bool> numeric_;
  std::vector<size_t> width_;
  std::string out_;
  bool started_ = false;
};

caf::expected<weir::timestamp> parse_when(const std::string& s) {
  weir::timestamp t = 0;
  if (weir::parse_time(s, weir::time_format::iso8601, t))
    return t;
  const char* why = nullptr;
  if (weir::parse_time(s, weir::time_format::epoch_s, t, why))
    return t;
  // A number that parses but is out of range says so; anything else gets the usage hint.
  const bool number = s.find_first_not_of("+-.0123456789") == std::string::npos;
  return weir::make_error(
    weir::errc::bad_config,
    "bad time '" + s +
      "': " + (number ? std::string{why} : "use ISO-8601 with a zone or epoch seconds"));
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

int cmd_run(const std::string& config_path, const std::string& store, size_t threads, bool quiet,
            bool dry_run, bool no_exactly_once, bool final_flush) {
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
  opts.final_flush = final_flush;
  if (dry_run)
    opts.mode = weir::commit_mode::none;
  else if (no_exactly_once)
    opts.mode = weir::commit_mode::results_only;
  auto t0 = std::chrono::steady_clock::now();
  auto res = weir::run_pipelines(*cfg, opts);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
  for (const auto& s : *res) {
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
  return rejects ? fail(rejects) : code;
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

/// Writes a query's rows as they come, a page at a time (table, csv or json). csv and json
/// rows are formatted straight into one buffer per page: no allocation per row.
class result_writer {
public:
  explicit result_writer(std::string format)
    : format_(std::move(format)) {}

  void page(const weir::query_answer& a) {
    if (!started_)
      start(a.aggregates);
    if (table_) {
      table_rows(a);
      return;
    }
    buf_.clear();
    for (const auto& r : a.rows) {
      if (format_ == "json")
        json_row(r, a.aggregates);
      else
        csv_row(r);
    }
    std::fwrite(buf_.data(), 1, buf_.size(), stdout);
  }

  void finish() {
    if (format_ == "json")
      std::fputs(first_ ? "[]\n" : "\n]\n", stdout);
    else if (table_)
      table_->finish();
  }

private:
  void start(const std::vector<std::string>& aggs) {
    started_ = true;
    std::vector<std::string> head{"window_start", "window_end", "key"};
    head.insert(head.end(), aggs.begin(), aggs.end());
    head.push_back("version");
    if (format_ == "csv") {
      std::string line;
      for (size_t i = 0; i < head.size(); ++i)
        line += (i ? "," : "") + csv_escape(head[i]);
      std::puts(line.c_str());
    } else if (format_ == "table") {
      std::vector<bool> numeric(head.size(), true);
      numeric[0] = numeric[1] = numeric[2] = false;
      table_.emplace(head, numeric);
    }
    for (const auto& a : aggs)
      json_names_.push_back(", \"" + json_escape(a) + "\": ");
  }

  void table_rows(const weir::query_answer& a) {
    rows_.clear();
    for (const auto& r : a.rows) {
      std::vector<std::string> row{weir::format_time(r.start), weir::format_time(r.end),
                                   show_key(r.key)};
      for (auto v : r.values)
        row.push_back(fmt_number(v));
      row.push_back(std::to_string(r.version));
      rows_.push_back(std::move(row));
    }
    table_->add(rows_);
  }

  /// The text of a time; rows come in start order, so most repeat the one before.
  const std::string& time_text(weir::timestamp t, int which) {
    if (!time_valid_[which] || time_of_[which] != t) {
      time_of_[which] = t;
      time_text_[which] = weir::format_time(t);
      time_valid_[which] = true;
    }
    return time_text_[which];
  }

  void number(double v) {
    char tmp[32];
    auto r = std::to_chars(tmp, tmp + sizeof(tmp), v);
    buf_.append(tmp, r.ptr);
  }

  void csv_row(const weir::window_result& r) {
    buf_ += time_text(r.start, 0);
    buf_ += ',';
    buf_ += time_text(r.end, 1);
    buf_ += ',';
    bool plain = true;
    for (char c : r.key)
      plain = plain && c != ',' && c != '"' && c != '\n' && c != '\r';
    if (plain) {
      for (char c : r.key)
        buf_ += c == weir::key_separator ? '|' : c;
    } else {
      buf_ += csv_escape(show_key(r.key));
    }
    for (auto v : r.values) {
      buf_ += ',';
      if (!std::isnan(v))
        number(v);
    }
    buf_ += ',';
    buf_ += std::to_string(r.version);
    buf_ += '\n';
  }

  void json_row(const weir::window_result& r, const std::vector<std::string>& aggs) {
    buf_ += first_ ? "[\n  " : ",\n  ";
    first_ = false;
    buf_ += "{\"window_start\": \"";
    buf_ += time_text(r.start, 0);
    buf_ += "\", \"window_end\": \"";
    buf_ += time_text(r.end, 1);
    buf_ += "\", \"key\": \"";
    buf_ += json_escape(show_key(r.key));
    buf_ += '"';
    for (size_t i = 0; i < aggs.size() && i < r.values.size(); ++i) {
      buf_ += json_names_[i];
      if (std::isfinite(r.values[i]))
        number(r.values[i]);
      else
        buf_ += weir::json_number(r.values[i]); // null, or "inf" as a string
    }
    buf_ += ", \"version\": ";
    buf_ += std::to_string(r.version);
    buf_ += '}';
  }

  std::string format_;
  bool started_ = false;
  bool first_ = true;
  std::optional<table_printer> table_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::string> json_names_;
  std::string buf_;
  weir::timestamp time_of_[2] = {0, 0};
  bool time_valid_[2] = {false, false};
  std::string time_text_[2];
};

int cmd_query(const std::string& store, const std::string& pipeline, const std::string& key,
              const std::string& from, const std::string& to, const std::string& format) {
  auto t_from = optional_time(from);
  if (!t_from)
    return fail(t_from.error());
  auto t_to = optional_time(to);
  if (!t_to)
    return fail(t_to.error());
  result_writer out{format};
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
    if (!p.definition.empty()) {
      std::cout << "  definition\n";
      std::istringstream lines{p.definition};
      for (std::string l; std::getline(lines, l);)
        std::cout << "    " << l << "\n";
    }
    for (auto& [id, off] : *offs) {
      std::string name = "source #" + std::to_string(id);
      for (auto& [sid, key] : *sources)
        if (sid == id)
          name = source_label(key);
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
  if (auto err = require_store(store))
    return fail(err);
  auto lk = weir::lake::open(store);
  if (!lk)
    return fail(lk.error());
  auto sources = lk->sources();
  if (!sources)
    return fail(sources.error());
  auto source_name = [&](uint32_t id) {
    for (auto& [sid, key] : *sources)
      if (sid == id)
        return source_label(key);
    return "source #" + std::to_string(id);
  };
  std::optional<table_printer> table;
  if (format == "csv")
    std::fputs("pipeline,source,offset,reason,raw\n", stdout);
  else if (format == "table")
    table.emplace(std::vector<std::string>{"pipeline", "source", "offset", "reason", "raw"},
                  std::vector<bool>{false, false, true, false, false});
  bool first = true;
  std::string line;
  std::vector<std::vector<std::string>> rows;
  auto err = weir::store_dead_letter_pages(store, pipeline, limit, [&](const auto& page) {
    rows.clear();
    for (const auto& r : page) {
      std::vector<std::string> row{r.pipeline, source_name(r.letter.source),
                                   std::to_string(r.letter.offset), r.letter.reason, r.letter.raw};
      line.clear();
      if (format == "csv") {
        for (size_t i = 0; i < row.size(); ++i)
          line += (i ? "," : "") + csv_escape(row[i]);
        line += '\n';
      } else if (format == "json") {
        line = first ? "[\n  " : ",\n  ";
        line += "{\"pipeline\": \"" + json_escape(row[0]) + "\", \"source\": \"" +
                json_escape(row[1]) + "\", \"offset\": " + row[2] + ", \"reason\": \"" +
                json_escape(row[3]) + "\", \"raw\": \"" + json_escape(row[4]) + "\"}";
      } else {
        auto& raw = row[4];
        for (auto& c : raw)
          if (static_cast<unsigned char>(c) < 0x20)
            c = ' ';
        if (raw.size() > 80)
          raw = raw.substr(0, 77) + "...";
        rows.push_back(std::move(row));
      }
      first = false;
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    if (table)
      table->add(rows);
    return true;
  });
  if (err)
    return fail(err);
  if (format == "json")
    std::fputs(first ? "[]\n" : "\n]\n", stdout);
  if (table)
    table->finish();
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
  run
    ->add_flag("--no-exactly-once", no_exactly_once,
               "write results and dead letters only: no lake, offsets, state or fsync, so "
               "nothing to resume from (for one-off backfills; refused on a store with "
               "committed epochs)")
    ->excludes("--dry-run");
  bool final_flush = false;
  run->add_flag("--final", final_flush,
                "the input ends here for good: fire every open window at the end (later records "
                "for them are late); without it, windows the watermark has not closed stay open "
                "in the store for the next run");
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
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (*run)
    return cmd_run(config_path, store, threads, quiet, dry_run, no_exactly_once, final_flush);
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
