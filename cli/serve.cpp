#include "cli/serve.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "actors/core/codec.hpp"
#include "actors/core/error.hpp"
#include "actors/core/input_check.hpp"
#include "actors/runtime.hpp"
#include "actors/sources.hpp"
#include "cli/history.hpp"
#include "cli/output.hpp"
#include "cli/status_page.hpp"

namespace weir::cli {

namespace {

/// How the run of the pipelines stands: running, finished (bounded inputs ended) or failed.
class run_state {
public:
  void set(std::string outcome) {
    std::lock_guard<std::mutex> lock{mu_};
    outcome_ = std::move(outcome);
  }
  std::string get() const {
    std::lock_guard<std::mutex> lock{mu_};
    return outcome_;
  }

private:
  mutable std::mutex mu_;
  std::string outcome_ = "running";
};

/// HOST:PORT, with the port a number in [0, 65535].
bool parse_listen(const std::string& s, std::string& host, int& port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return false;
  host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const char* b = s.data() + colon + 1;
  const char* e = s.data() + s.size();
  auto r = std::from_chars(b, e, port);
  return r.ec == std::errc{} && r.ptr == e && b != e && port >= 0 && port <= 65535;
}

std::string to_hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

bool from_hex(std::string_view s, std::string& out) {
  if (s.size() % 2 != 0)
    return false;
  out.clear();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    int hi = nibble(s[i]);
    int lo = nibble(s[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out += static_cast<char>(hi * 16 + lo);
  }
  return true;
}

/// A results cursor: where a page ended, as hex of start (BE64), end (BE64) and the key.
std::string results_cursor(const window_result& r) {
  std::string raw(16, '\0');
  codec::put_be64_signed(raw.data(), r.start);
  codec::put_be64_signed(raw.data() + 8, r.end);
  raw += r.key;
  return to_hex(raw);
}

bool parse_results_cursor(const std::string& text, window_result& after) {
  std::string raw;
  if (!from_hex(text, raw) || raw.size() < 16)
    return false;
  after.start = codec::get_be64_signed(raw.data());
  after.end = codec::get_be64_signed(raw.data() + 8);
  after.key = raw.substr(16);
  return true;
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content("{\"error\": \"" + json_escape(message) + "\"}\n", "application/json");
}

/// A positive integer parameter no larger than `max` (default when absent); false when bad.
bool count_param(const httplib::Request& req, const char* name, size_t dflt, size_t max,
                 size_t& out) {
  if (!req.has_param(name)) {
    out = dflt;
    return true;
  }
  const auto v = req.get_param_value(name);
  auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  return r.ec == std::errc{} && r.ptr == v.data() + v.size() && out >= 1 && out <= max;
}

/// Resident memory of this process in bytes (0 when /proc says nothing).
uint64_t resident_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  uint64_t pages = 0;
  uint64_t resident = 0;
  if (!(statm >> pages >> resident))
    return 0;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

/// Prometheus text exposition, one family at a time.
class exposition {
public:
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    out_ += name;
    if (!labels.empty())
      out_ += "{" + labels + "}";
    out_ += ' ';
    if (std::isnan(v)) {
      out_ += "NaN";
    } else if (std::isinf(v)) {
      out_ += v > 0 ? "+Inf" : "-Inf";
    } else {
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, v);
      out_.append(buf, r.ptr);
    }
    out_ += '\n';
  }
  /// A label value: backslash, quote and newline escaped.
  static std::string label(const std::string& v) {
    std::string out;
    for (char c : v) {
      if (c == '\\' || c == '"')
        out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  }
  std::string& text() { return out_; }

private:
  std::string out_;
};

/// Seconds since 1970 of a wall-clock time in microseconds, as JSON (3 decimals).
std::string json_seconds(int64_t us) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(us) / 1e6);
  return buf;
}

/// Seconds from event time `t` to wall time `now_us` as JSON; null when there is no such time.
std::string json_lag(int64_t now_us, timestamp t) {
  return t == min_timestamp ? "null" : json_seconds(now_us - t);
}

int64_t wall_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Per configured source of a pipeline: its committed offset and the bytes landed in the lake
/// beyond it, summed over the source's inputs (a glob's files, a file's generations).
struct source_position {
  uint64_t committed = 0;
  uint64_t pending = 0;
};

/// The positions of every source of `p`, by config index; `keys` are the lake's sources.
caf::expected<std::vector<source_position>>
source_positions(const pipeline_config& p,
                 const std::vector<std::pair<uint32_t, std::string>>& keys, lake& lk,
                 warehouse& wh) {
  std::vector<source_position> out(p.sources.size());
  auto offsets = wh.offsets(p.name);
  if (!offsets)
    return offsets.error();
  for (const auto& [id, key] : keys) {
    auto si = source_of_key(p, key);
    if (!si)
      continue;
    uint64_t committed = 0;
    for (const auto& [sid, off] : *offsets)
      if (sid == id)
        committed = off;
    auto end = lk.end_offset(id);
    if (!end)
      return end.error();
    // Chunks below the committed offset may be pruned: the lake's end is then behind it.
    out[*si].committed += committed;
    out[*si].pending += std::max(*end, committed) - committed;
  }
  return out;
}

class api {
public:
  api(const weir_config& cfg, const serve_options& opts, std::shared_ptr<run_probe> probe,
      std::shared_ptr<run_state> state, const progress_history& history)
    : cfg_(cfg)
    , opts_(opts)
    , probe_(std::move(probe))
    , state_(std::move(state))
    , history_(history) {}

  void install(httplib::Server& srv) {
    srv.Get("/", [](const httplib::Request&, httplib::Response& res) { page(res); });
    srv.Get("/v1/history",
            [this](const httplib::Request& req, httplib::Response& res) { history(req, res); });
    srv.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\": \"ok\"}\n", "application/json");
    });
    srv.Get("/ready", [this](const httplib::Request&, httplib::Response& res) {
      if (!probe_->store()) {
        send_error(res, 503, "the store is not open yet");
        return;
      }
      res.set_content("{\"ready\": true}\n", "application/json");
    });
    srv.Get("/v1/pipelines",
            [this](const httplib::Request&, httplib::Response& res) { pipelines(res); });
    srv.Get(R"(/v1/pipelines/([^/]+)/results)",
            [this](const httplib::Request& req, httplib::Response& res) { results(req, res); });
    srv.Get(R"(/v1/pipelines/([^/]+)/dead-letters)",
            [this](const httplib::Request& req, httplib::Response& res) {
              dead_letters(req, res);
            });
    srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { metrics(res); });
    srv.Get("/v1/tasks",
            [this](const httplib::Request& req, httplib::Response& res) { tasks(req, res); });
    srv.Post(R"(/v1/pipelines/([^/]+)/events)",
             [this](const httplib::Request& req, httplib::Response& res) { events(req, res); });
    srv.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty())
        return;
      switch (res.status) {
        case 404:
          send_error(res, 404, "no such resource");
          break;
        case 411:
          send_error(res, 411, "a body needs its Content-Length");
          break;
        case 413:
          send_error(res, 413, "the body is over " + std::to_string(opts_.max_body_bytes) +
                                 " bytes (--max-body-bytes); send it in smaller parts");
          break;
        case 414:
          send_error(res, 414, "the request line is too long");
          break;
        default:
          send_error(res, res.status, "bad request");
      }
    });
    srv.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("serve: {}", what);
        send_error(res, 500, what);
      });
  }

private:
  const pipeline_config* find(const std::string& name) const {
    for (const auto& p : cfg_.pipelines)
      if (p.name == name)
        return &p;
    return nullptr;
  }

  /// The pipeline the path names and the open store; nullptr after answering with an error.
  const pipeline_config* target(const httplib::Request& req, httplib::Response& res,
                                std::shared_ptr<warehouse>& wh) const {
    const auto* p = find(req.matches[1]);
    if (!p) {
      send_error(res, 404, "no pipeline named '" + std::string(req.matches[1]) + "'");
      return nullptr;
    }
    wh = probe_->store();
    if (!wh) {
      send_error(res, 503, "the store is not open yet");
      return nullptr;
    }
    return p;
  }

  void pipelines(httplib::Response& res) {
    auto wh = probe_->store();
    const std::string outcome = state_->get();
    std::string body = "[";
    bool first = true;
    for (const auto& p : cfg_.pipelines) {
      body += first ? "\n  " : ",\n  ";
      first = false;
      body += "{\"name\": \"" + json_escape(p.name) + "\", \"window\": \"" +
              json_escape(describe_window(p.window)) + "\", \"aggregates\": [";
      auto names = aggregate_names(p);
      for (size_t i = 0; i < names.size(); ++i)
        body += (i ? ", \"" : "\"") + json_escape(names[i]) + "\"";
      body += "], \"run\": \"" + json_escape(outcome) + "\"";
      if (wh) {
        auto st = committed_status_of(*wh, p.name);
        if (!st) {
          send_error(res, 500, render(st.error()));
          return;
        }
        body += ", \"last_epoch\": " + std::to_string(st->epoch) +
                ", \"windows_committed\": " + std::to_string(st->windows) +
                ", \"events_read\": " + std::to_string(st->counters.read) +
                ", \"events_accepted\": " + std::to_string(st->counters.accepted) +
                ", \"events_rejected\": " + std::to_string(total_rejected(st->counters.rejected)) +
                ", \"dead_letters\": " + std::to_string(st->dead_letters);
        if (st->max_time != min_timestamp)
          body += ", \"max_event_time\": \"" + format_time(st->max_time) + "\"";
        if (st->watermark != min_timestamp)
          body += ", \"watermark\": \"" + format_time(st->watermark) + "\"";
      }
      body += "}";
    }
    body += first ? "]\n" : "\n]\n";
    res.set_content(body, "application/json");
  }

  /// The `format` and `limit` of a page; false after answering 400.
  static bool page_params(const httplib::Request& req, httplib::Response& res,
                          size_t default_limit, std::string& format, size_t& limit) {
    format = req.has_param("format") ? req.get_param_value("format") : "json";
    if (format != "json" && format != "csv") {
      send_error(res, 400, "format: json or csv, not '" + format + "'");
      return false;
    }
    if (!count_param(req, "limit", default_limit, max_page_rows, limit)) {
      send_error(res, 400, "limit: a number from 1 to " + std::to_string(max_page_rows));
      return false;
    }
    return true;
  }

  void results(const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<warehouse> wh;
    const auto* p = target(req, res, wh);
    std::string format;
    size_t limit = 0;
    if (!p || !page_params(req, res, default_page_rows, format, limit))
      return;
    result_query q;
    q.pipeline = p->name;
    if (req.has_param("key"))
      q.key = internal_key(req.get_param_value("key"));
    for (const char* bound : {"from", "to"}) {
      if (!req.has_param(bound))
        continue;
      auto t = parse_when(req.get_param_value(bound));
      if (!t) {
        send_error(res, 400, std::string{bound} + ": " + render(t.error()));
        return;
      }
      (bound[0] == 'f' ? q.from : q.to) = *t;
    }
    if (req.has_param("since_epoch")) {
      changes(req, res, *wh, *p, q, format, limit);
      return;
    }
    if (req.has_param("after")) {
      window_result after;
      if (!parse_results_cursor(req.get_param_value("after"), after)) {
        send_error(res, 400, "after: not a cursor this server gave");
        return;
      }
      q.after = std::move(after);
    }
    // Rows are formatted as the store gives them; one more row than the page tells whether
    // there is a next page.
    std::string body;
    result_writer out{format, [&body](std::string_view s) { body.append(s.data(), s.size()); }};
    const auto aggregates = aggregate_names(*p);
    out.begin(aggregates, false);
    size_t rows = 0;
    bool more = false;
    window_result last;
    auto err = wh->query(q, [&](const window_result& r) {
      if (rows == limit) {
        more = true;
        return false;
      }
      out.row(r, aggregates);
      last.start = r.start;
      last.end = r.end;
      last.key = r.key;
      ++rows;
      return true;
    });
    if (err) {
      send_error(res, 500, render(err));
      return;
    }
    if (more)
      res.set_header("Weir-Next-Cursor", results_cursor(last));
    out.finish();
    res.set_content(std::move(body), format == "csv" ? "text/csv" : "application/json");
  }

  /// The change feed: rows committed by epochs after since_epoch (q's key and time range
  /// filter them), each with its epoch; the cursor is "EPOCH.ROW".
  void changes(const httplib::Request& req, httplib::Response& res, warehouse& wh,
               const pipeline_config& p, const result_query& q, const std::string& format,
               size_t limit) {
    uint64_t since = 0;
    const auto text = req.get_param_value("since_epoch");
    auto r = std::from_chars(text.data(), text.data() + text.size(), since);
    if (r.ec != std::errc{} || r.ptr != text.data() + text.size()) {
      send_error(res, 400, "since_epoch: an epoch number");
      return;
    }
    std::optional<std::pair<uint64_t, uint32_t>> after;
    if (req.has_param("after")) {
      const auto a = req.get_param_value("after");
      auto dot = a.find('.');
      uint64_t e = 0;
      uint32_t i = 0;
      auto r1 = std::from_chars(a.data(), a.data() + std::min(dot, a.size()), e);
      auto r2 = dot == std::string::npos
                  ? r1
                  : std::from_chars(a.data() + dot + 1, a.data() + a.size(), i);
      if (dot == std::string::npos || r1.ec != std::errc{} || r2.ec != std::errc{} ||
          r2.ptr != a.data() + a.size()) {
        send_error(res, 400, "after: not a cursor this server gave");
        return;
      }
      after.emplace(e, i);
    }
    std::string body;
    result_writer out{format, [&body](std::string_view s) { body.append(s.data(), s.size()); }};
    const auto aggregates = aggregate_names(p);
    out.begin(aggregates, true);
    std::pair<uint64_t, uint32_t> last_at{0, 0};
    size_t rows = 0;
    bool more = false;
    auto st = wh.changes(p.name, since, after, [&](const change_row& c) {
      const auto& w = c.row;
      if ((q.key && w.key != *q.key) || (q.from && w.start < *q.from) || (q.to && w.end > *q.to))
        return true;
      if (rows == limit) {
        more = true;
        return false;
      }
      out.row(w, aggregates, c.epoch);
      last_at = {c.epoch, c.index};
      ++rows;
      return true;
    });
    if (!st) {
      send_error(res, 500, render(st.error()));
      return;
    }
    if (!st->enabled) {
      send_error(res, 400, "pipeline '" + p.name + "' keeps no change feed: set change_feed = "
                           "true in its [pipeline.results]");
      return;
    }
    res.set_header("Weir-Epoch", std::to_string(st->last_epoch));
    if (since + 1 < st->oldest) {
      send_error(res, 410, "the change feed keeps epochs from " + std::to_string(st->oldest) +
                             " on (change_retention): read the results in full, then follow "
                             "with since_epoch=" + std::to_string(st->last_epoch));
      return;
    }
    if (more)
      res.set_header("Weir-Next-Cursor",
                     std::to_string(last_at.first) + "." + std::to_string(last_at.second));
    out.finish();
    res.set_content(std::move(body), format == "csv" ? "text/csv" : "application/json");
  }

  void dead_letters(const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<warehouse> wh;
    const auto* p = target(req, res, wh);
    std::string format;
    size_t limit = 0;
    if (!p || !page_params(req, res, 1000, format, limit))
      return;
    uint64_t after = 0;
    if (req.has_param("after")) {
      const auto v = req.get_param_value("after");
      auto r = std::from_chars(v.data(), v.data() + v.size(), after);
      if (r.ec != std::errc{} || r.ptr != v.data() + v.size()) {
        send_error(res, 400, "after: a dead-letter sequence number");
        return;
      }
    }
    std::vector<dead_letter_row> rows;
    auto err = wh->dead_letters(
      p->name,
      [&](const dead_letter_row& r) {
        rows.push_back(r);
        return rows.size() <= limit;
      },
      after);
    if (err) {
      send_error(res, 500, render(err));
      return;
    }
    if (rows.size() > limit) {
      rows.pop_back();
      res.set_header("Weir-Next-Cursor", std::to_string(rows.back().seq));
    }
    std::vector<std::pair<uint32_t, std::string>> sources;
    if (auto lk = probe_->lake_store())
      if (auto s = lk->sources())
        sources = std::move(*s);
    auto source_name = [&](uint32_t id) {
      for (const auto& [sid, key] : sources)
        if (sid == id)
          return source_label(key);
      return "source #" + std::to_string(id);
    };
    std::string body;
    dead_letter_writer out{format,
                           [&body](std::string_view s) { body.append(s.data(), s.size()); },
                           source_name};
    out.page(rows);
    out.finish();
    res.set_content(std::move(body), format == "csv" ? "text/csv" : "application/json");
  }

  /// GET /v1/tasks[?pipeline=NAME][&limit=N][&format=json|csv]: the recent committed epochs
  /// of each pipeline (or one), oldest first.
  void tasks(const httplib::Request& req, httplib::Response& res) {
    std::string format;
    size_t limit = 0;
    if (!page_params(req, res, 100, format, limit))
      return;
    const std::string only = req.has_param("pipeline") ? req.get_param_value("pipeline") : "";
    if (!only.empty() && !find(only)) {
      send_error(res, 404, "no pipeline named '" + only + "'");
      return;
    }
    auto meters = probe_->meters();
    std::string body = format == "csv" ? "pipeline,epoch,committed_at,latency_ms,events,accepted,"
                                         "windows,dead_letters,state_bytes,commit_ms,restarts\n"
                                       : "[";
    bool first = true;
    auto ms = [](double v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3f", v);
      return std::string{buf};
    };
    for (size_t i = 0; meters && i < meters->size() && i < cfg_.pipelines.size(); ++i) {
      const auto& name = cfg_.pipelines[i].name;
      if (!only.empty() && name != only)
        continue;
      for (const auto& t : (*meters)[i].tasks.recent(limit)) {
        const std::string at = format_time(t.committed_at);
        const std::string latency = t.latency_us < 0 ? "" : ms(t.latency_us / 1e3);
        if (format == "csv") {
          body += csv_escape(name) + "," + std::to_string(t.epoch) + "," + at + "," + latency +
                  "," + std::to_string(t.events) + "," + std::to_string(t.accepted) + "," +
                  std::to_string(t.windows) + "," + std::to_string(t.dead_letters) + "," +
                  std::to_string(t.state_bytes) + "," + ms(t.commit_ms) + "," +
                  std::to_string(t.restarts) + "\n";
          continue;
        }
        body += first ? "\n  " : ",\n  ";
        first = false;
        body += "{\"pipeline\": \"" + json_escape(name) + "\", \"epoch\": " +
                std::to_string(t.epoch) + ", \"committed_at\": \"" + at +
                "\", \"latency_ms\": " + (latency.empty() ? "null" : latency) +
                ", \"events\": " + std::to_string(t.events) +
                ", \"accepted\": " + std::to_string(t.accepted) +
                ", \"windows\": " + std::to_string(t.windows) +
                ", \"dead_letters\": " + std::to_string(t.dead_letters) +
                ", \"state_bytes\": " + std::to_string(t.state_bytes) +
                ", \"commit_ms\": " + ms(t.commit_ms) +
                ", \"restarts\": " + std::to_string(t.restarts) +
                ", \"outcome\": \"committed\"}";
      }
    }
    if (format == "json")
      body += first ? "]\n" : "\n]\n";
    res.set_content(std::move(body), format == "csv" ? "text/csv" : "application/json");
  }

  /// GET /: the status page. It fetches nothing but this server's API, which the policy says
  /// to the browser too.
  static void page(httplib::Response& res) {
    const auto html = status_page();
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                   "frame-ancestors 'none'");
    res.set_content(html.data(), html.size(), "text/html; charset=utf-8");
  }

  /// GET /v1/history[?pipeline=NAME][&since=SECONDS]: each pipeline's samples (one a second,
  /// the last 15 minutes), oldest first; with `since` (Unix seconds), those taken after it.
  void history(const httplib::Request& req, httplib::Response& res) {
    const std::string only = req.has_param("pipeline") ? req.get_param_value("pipeline") : "";
    if (!only.empty() && !find(only)) {
      send_error(res, 404, "no pipeline named '" + only + "'");
      return;
    }
    int64_t after_us = std::numeric_limits<int64_t>::min();
    if (req.has_param("since")) {
      const auto v = req.get_param_value("since");
      double s = 0;
      auto r = std::from_chars(v.data(), v.data() + v.size(), s);
      if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || !std::isfinite(s) ||
          std::fabs(s) > 1e12) {
        send_error(res, 400, "since: Unix seconds, e.g. 1717200000.5");
        return;
      }
      after_us = static_cast<int64_t>(std::llround(s * 1e3)) * 1000; // samples are in ms
    }
    std::string body =
      "{\"interval_s\": " + std::to_string(progress_history::interval_us / 1000000) +
      ", \"retention_s\": " +
      std::to_string(progress_history::keep * progress_history::interval_us / 1000000) +
      ", \"now\": " + json_seconds(wall_now_us()) + ", \"pipelines\": [";
    bool first = true;
    for (size_t i = 0; i < cfg_.pipelines.size(); ++i) {
      const auto& name = cfg_.pipelines[i].name;
      if (!only.empty() && name != only)
        continue;
      body += first ? "\n  " : ",\n  ";
      first = false;
      body += "{\"name\": \"" + json_escape(name) + "\", \"samples\": [";
      bool first_sample = true;
      for (const auto& s : history_.samples(i, after_us)) {
        body += first_sample ? "\n    " : ",\n    ";
        first_sample = false;
        char latency[40] = "null";
        if (s.latency_us >= 0)
          std::snprintf(latency, sizeof latency, "%.3f", static_cast<double>(s.latency_us) / 1e3);
        body += "{\"t\": " + json_seconds(s.at_us) +
                ", \"events_read\": " + std::to_string(s.read) +
                ", \"events_accepted\": " + std::to_string(s.accepted) +
                ", \"events_rejected\": " + std::to_string(s.rejected) +
                ", \"windows_committed\": " + std::to_string(s.windows) +
                ", \"dead_letters\": " + std::to_string(s.dead_letters) +
                ", \"last_epoch\": " + std::to_string(s.epoch) +
                ", \"event_time_lag_s\": " + json_lag(s.at_us, s.max_time) +
                ", \"watermark_lag_s\": " + json_lag(s.at_us, s.watermark) +
                ", \"epoch_latency_ms\": " + latency + "}";
      }
      body += first_sample ? "]}" : "\n  ]}";
    }
    body += first ? "]}\n" : "\n]}\n";
    res.set_content(std::move(body), "application/json");
  }

  void metrics(httplib::Response& res) {
    exposition x;
    auto wh = probe_->store();
    auto meters = probe_->meters();
    x.family("weir_up", "gauge", "1 while the server runs.");
    x.sample("weir_up", "", 1);
    x.family("weir_ready", "gauge", "1 once the store is open and the pipelines restored.");
    x.sample("weir_ready", "", wh ? 1 : 0);
    x.family("weir_restarts_total", "counter", "Restarts of the pipelines' actors in this run.");
    x.sample("weir_restarts_total", "", probe_->restarts.load());
    x.family("process_resident_memory_bytes", "gauge", "Resident memory of the weir process.");
    x.sample("process_resident_memory_bytes", "", static_cast<double>(resident_bytes()));
    if (wh) {
      std::vector<committed_status> st;
      for (const auto& p : cfg_.pipelines) {
        auto s = committed_status_of(*wh, p.name);
        if (!s) {
          send_error(res, 500, render(s.error()));
          return;
        }
        st.push_back(std::move(*s));
      }
      auto each = [&](const char* name, const char* type, const char* help, auto value) {
        x.family(name, type, help);
        for (size_t i = 0; i < st.size(); ++i)
          x.sample(name, "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                   static_cast<double>(value(st[i])));
      };
      each("weir_events_read_total", "counter", "Records read by preprocess, as committed.",
           [](const committed_status& s) { return s.counters.read; });
      each("weir_events_accepted_total", "counter", "Records accepted into windows, as committed.",
           [](const committed_status& s) { return s.counters.accepted; });
      each("weir_events_filtered_total", "counter",
           "Records dropped by the pipeline's filters or stages.",
           [](const committed_status& s) { return s.counters.filtered; });
      each("weir_events_duplicate_total", "counter", "Records dropped as duplicates.",
           [](const committed_status& s) { return s.counters.duplicates; });
      each("weir_events_late_total", "counter", "Late records dead-lettered, as committed.",
           [](const committed_status& s) { return s.counters.late; });
      each("weir_events_late_updated_total", "counter", "Late records that updated a window.",
           [](const committed_status& s) { return s.counters.late_updates; });
      each("weir_bytes_read_total", "counter", "Bytes of lines processed, as committed.",
           [](const committed_status& s) { return s.counters.bytes; });
      each("weir_windows_committed_total", "counter", "Window result rows committed.",
           [](const committed_status& s) { return s.windows; });
      each("weir_last_epoch", "gauge", "The last committed epoch.",
           [](const committed_status& s) { return s.epoch; });
      x.family("weir_events_rejected_total", "counter",
               "Records that became dead letters, by reason (late included), as committed.");
      for (size_t i = 0; i < st.size(); ++i)
        for (const auto& [why, n] : st[i].counters.rejected)
          x.sample("weir_events_rejected_total",
                   "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\",reason=\"" +
                     exposition::label(why) + "\"",
                   static_cast<double>(n));
      const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count();
      x.family("weir_event_time_max_seconds", "gauge",
               "The largest event time accepted, as committed (Unix seconds).");
      for (size_t i = 0; i < st.size(); ++i)
        if (st[i].max_time != min_timestamp)
          x.sample("weir_event_time_max_seconds",
                   "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                   static_cast<double>(st[i].max_time) / 1e6);
      x.family("weir_event_time_lag_seconds", "gauge",
               "Wall time less the largest event time committed.");
      for (size_t i = 0; i < st.size(); ++i)
        if (st[i].max_time != min_timestamp)
          x.sample("weir_event_time_lag_seconds",
                   "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                   now - static_cast<double>(st[i].max_time) / 1e6);
      watermarks(x, st, now);
      if (auto lk = probe_->lake_store())
        if (!source_metrics(x, st, *lk, *wh, res))
          return;
    }
    if (meters && meters->size() == cfg_.pipelines.size()) {
      auto each = [&](const char* name, const char* type, const char* help, auto value) {
        x.family(name, type, help);
        for (size_t i = 0; i < meters->size(); ++i)
          x.sample(name, "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                   static_cast<double>(value((*meters)[i])));
      };
      each("weir_state_rows", "gauge", "Window slices and sessions held at the last commit.",
           [](const state_meter& m) { return m.rows_now.load(); });
      each("weir_state_memory_bytes", "gauge", "Window-operator memory at the last commit.",
           [](const state_meter& m) { return m.memory_now.load(); });
      each("weir_state_written_bytes_total", "counter", "Window-state bytes written this run.",
           [](const state_meter& m) { return m.bytes.load(); });
      mailboxes(x, *meters);
      // A histogram per pipeline: cumulative bucket counts, then sum and count.
      auto histogram = [&](const char* name, const char* help, const auto& bounds,
                           auto counts, auto sum, auto count) {
        x.family(name, "histogram", help);
        const std::string n = name;
        for (size_t i = 0; i < meters->size(); ++i) {
          const auto& m = (*meters)[i];
          const std::string pl = "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"";
          uint64_t cumulative = 0;
          for (size_t b = 0; b <= std::size(bounds); ++b) {
            cumulative += counts(m)[b].load();
            std::string le = "+Inf";
            if (b < std::size(bounds)) {
              char buf[32];
              auto r = std::to_chars(buf, buf + sizeof buf, bounds[b]);
              le.assign(buf, r.ptr);
            }
            x.sample(n + "_bucket", pl + ",le=\"" + le + "\"", static_cast<double>(cumulative));
          }
          x.sample(n + "_sum", pl, sum(m));
          x.sample(n + "_count", pl, static_cast<double>(count(m)));
        }
      };
      histogram(
        "weir_epoch_latency_seconds", "From an epoch's start to its commit, epochs of this run.",
        state_meter::latency_bounds_s, [](const state_meter& m) { return m.latency_count; },
        [](const state_meter& m) { return static_cast<double>(m.latency_sum_us.load()) / 1e6; },
        [](const state_meter& m) { return m.latencies.load(); });
      histogram(
        "weir_epoch_records",
        "Records read per committed epoch (the batch size of each task), this run.",
        state_meter::epoch_size_bounds, [](const state_meter& m) { return m.epoch_size_count; },
        [](const state_meter& m) { return static_cast<double>(m.epoch_size_sum.load()); },
        [](const state_meter& m) { return m.epoch_sizes.load(); });
    }
    if (auto lk = probe_->lake_store()) {
      if (auto counts = lk->table_counts())
        for (const auto& [name, n] : *counts)
          if (name == "map_used") {
            x.family("weir_lake_bytes", "gauge", "Bytes the lake's LMDB file uses.");
            x.sample("weir_lake_bytes", "", static_cast<double>(n));
          }
    }
    if (wh) {
      if (auto counts = wh->table_counts())
        for (const auto& [name, n] : *counts)
          if (name == "map_used") {
            x.family("weir_warehouse_bytes", "gauge", "Bytes the warehouse's LMDB file uses.");
            x.sample("weir_warehouse_bytes", "", static_cast<double>(n));
          }
    }
    res.set_content(std::move(x.text()), "text/plain; version=0.0.4");
  }

  /// The committed watermark of each pipeline and how far it is behind the wall clock `now`
  /// (Unix seconds); nothing for a pipeline without one yet.
  void watermarks(exposition& x, const std::vector<committed_status>& st, double now) const {
    x.family("weir_watermark_seconds", "gauge",
             "The watermark of the last committed epoch (Unix seconds).");
    for (size_t i = 0; i < st.size(); ++i)
      if (st[i].watermark != min_timestamp)
        x.sample("weir_watermark_seconds",
                 "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                 static_cast<double>(st[i].watermark) / 1e6);
    x.family("weir_watermark_lag_seconds", "gauge", "Wall time less the committed watermark.");
    for (size_t i = 0; i < st.size(); ++i)
      if (st[i].watermark != min_timestamp)
        x.sample("weir_watermark_lag_seconds",
                 "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"",
                 now - static_cast<double>(st[i].watermark) / 1e6);
  }

  /// Per source: its largest accepted event time (what holds the watermark back), the
  /// committed offset and the bytes landed beyond it. False after answering 500.
  bool source_metrics(exposition& x, const std::vector<committed_status>& st, lake& lk,
                      warehouse& wh, httplib::Response& res) const {
    auto labels = [this](size_t i, const std::string& source) {
      return "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\",source=\"" +
             exposition::label(source) + "\"";
    };
    x.family("weir_source_event_time_max_seconds", "gauge",
             "The largest event time accepted from a source, as committed (Unix seconds).");
    for (size_t i = 0; i < st.size(); ++i)
      for (const auto& [source, t] : st[i].source_times)
        if (t != min_timestamp)
          x.sample("weir_source_event_time_max_seconds", labels(i, source),
                   static_cast<double>(t) / 1e6);
    auto keys = lk.sources();
    if (!keys) {
      send_error(res, 500, render(keys.error()));
      return false;
    }
    std::vector<std::vector<source_position>> positions;
    for (const auto& p : cfg_.pipelines) {
      auto pos = source_positions(p, *keys, lk, wh);
      if (!pos) {
        send_error(res, 500, render(pos.error()));
        return false;
      }
      positions.push_back(std::move(*pos));
    }
    x.family("weir_source_offset_bytes", "gauge",
             "A source's committed offset: the bytes of it that committed epochs hold.");
    for (size_t i = 0; i < positions.size(); ++i)
      for (size_t s = 0; s < positions[i].size(); ++s)
        x.sample("weir_source_offset_bytes", labels(i, cfg_.pipelines[i].sources[s].name),
                 static_cast<double>(positions[i][s].committed));
    x.family("weir_source_pending_bytes", "gauge",
             "Bytes of a source landed in the lake and not yet committed.");
    for (size_t i = 0; i < positions.size(); ++i)
      for (size_t s = 0; s < positions[i].size(); ++s)
        x.sample("weir_source_pending_bytes", labels(i, cfg_.pipelines[i].sources[s].name),
                 static_cast<double>(positions[i][s].pending));
    return true;
  }

  /// Messages waiting in each actor's mailbox, as it last saw it.
  void mailboxes(exposition& x, const state_meters& meters) const {
    x.family("weir_mailbox_depth", "gauge",
             "Messages waiting in a pipeline actor's mailbox when it last handled one.");
    for (size_t i = 0; i < meters.size(); ++i) {
      const auto& m = meters[i].mailboxes;
      const std::string pl = "pipeline=\"" + exposition::label(cfg_.pipelines[i].name) + "\"";
      auto one = [&](const std::string& actor, uint64_t depth) {
        x.sample("weir_mailbox_depth", pl + ",actor=\"" + actor + "\"", static_cast<double>(depth));
      };
      one("ingest", m.ingest.load(std::memory_order_relaxed));
      one("preprocess", m.preprocess.load(std::memory_order_relaxed));
      for (size_t p = 0; p < m.partitions(); ++p)
        one("window-aggregator-" + std::to_string(p), m.partition_depth(p));
      one("updater", m.updater.load(std::memory_order_relaxed));
    }
  }

  /// POST /v1/pipelines/NAME/events[?source=S]: lands the body's records in the lake (one
  /// durable transaction) and only then answers, with the offsets they took.
  void events(const httplib::Request& req, httplib::Response& res) {
    auto r = land(req.matches[1], req.has_param("source") ? req.get_param_value("source") : "",
                  req.body, false);
    if (r.status != 200) {
      if (r.status == 429)
        res.set_header("Retry-After", "1");
      send_error(res, r.status, r.error);
      return;
    }
    res.set_content("{\"pipeline\": \"" + json_escape(r.pipeline) + "\", \"source\": \"" +
                      json_escape(r.source) + "\", \"records\": " + std::to_string(r.records) +
                      ", \"first_offset\": " + std::to_string(r.first) +
                      ", \"end_offset\": " + std::to_string(r.end) + "}\n",
                    "application/json");
  }

public:
  /// What became of a body of records: landed (status 200, its offsets) or refused (an HTTP
  /// status and why; nothing of it was landed).
  struct landed {
    int status = 200;
    std::string error;
    std::string pipeline;
    std::string source;
    uint64_t records = 0;
    uint64_t first = 0;
    uint64_t end = 0;
  };

  /// The http source `wanted` of `pipeline` (empty: its only one); nullptr when there is no
  /// such source, with why in r (status 404 or 400).
  const source_config* http_source(const std::string& pipeline, const std::string& wanted,
                                   landed& r) const {
    const auto* p = find(pipeline);
    r.status = 404;
    if (!p) {
      r.error = "no pipeline named '" + pipeline + "'";
      return nullptr;
    }
    const source_config* src = nullptr;
    size_t http_sources = 0;
    for (const auto& s : p->sources) {
      if (!s.http)
        continue;
      ++http_sources;
      if (wanted.empty() || s.name == wanted)
        src = src ? src : &s;
    }
    if (!wanted.empty() && (!src || src->name != wanted)) {
      r.error = "pipeline " + p->name + " has no http source named '" + wanted + "'";
      return nullptr;
    }
    if (http_sources == 0) {
      r.error =
        "pipeline " + p->name + " has no http source (a source with http = true takes records)";
      return nullptr;
    }
    if (http_sources > 1 && wanted.empty()) {
      r.status = 400;
      r.error = "pipeline " + p->name + " has several http sources: say which (?source=NAME)";
      return nullptr;
    }
    r.status = 200;
    r.pipeline = p->name;
    r.source = src->name;
    return src;
  }

  /// Lands `body` (lines of records) for http source `source` of `pipeline` (empty: its only
  /// one) in the lake, in one durable transaction. A source with too much landed and not yet
  /// committed refuses it (429), or with `wait`, holds it until the pipeline catches up, up to
  /// 30 s: a delayed acknowledgement.
  landed land(const std::string& pipeline, const std::string& wanted, std::string_view body,
              bool wait, const std::atomic<bool>* give_up = nullptr) {
    landed r;
    auto refuse = [&r](int status, std::string why) {
      r.status = status;
      r.error = std::move(why);
      return r;
    };
    const auto* p = find(pipeline);
    const source_config* src = http_source(pipeline, wanted, r);
    if (!src)
      return r;
    if (closing_.load())
      return refuse(503, "the server is stopping: send this again once it is back");
    auto lk = probe_->lake_store();
    auto wh = probe_->store();
    if (!lk || !wh)
      return refuse(503, "the store is not open yet");
    if (body.empty())
      return refuse(400, "an empty body: send records, one per line");
    if (body.size() > opts_.max_body_bytes)
      return refuse(413, "the body is over " + std::to_string(opts_.max_body_bytes) +
                           " bytes (--max-body-bytes); send it in smaller parts");
    // Every line within the source's limit; chunks end at line ends, at most batch_bytes long.
    std::vector<size_t> cuts; // chunk ends
    size_t line_start = 0;
    size_t chunk_start = 0;
    size_t line_no = 0;
    while (line_start < body.size()) {
      size_t nl = body.find('\n', line_start);
      const size_t line_end = nl == std::string::npos ? body.size() : nl;
      ++line_no;
      size_t len = line_end - line_start;
      if (len > 0 && body[line_end - 1] == '\r')
        --len;
      if (len > src->max_line_bytes)
        return refuse(413, "line " + std::to_string(line_no) + " is " + std::to_string(len) +
                             " bytes, over max_line_bytes " + std::to_string(src->max_line_bytes) +
                             " of source " + src->name + "; nothing of this body was taken");
      r.records += len > 0 ? 1 : 0;
      const size_t next = nl == std::string::npos ? body.size() : nl + 1;
      if (next - chunk_start > cfg_.runtime.batch_bytes && line_start > chunk_start) {
        cuts.push_back(line_start);
        chunk_start = line_start;
      }
      line_start = next;
    }
    cuts.push_back(body.size());
    const bool ends_line = body.back() == '\n';
    auto id = lk->source_id(http_source_key(p->name, src->name));
    if (!id)
      return refuse(500, render(id.error()));
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      // One writer at a time per process: the offsets a body takes follow the lake's end, or
      // the committed offset when committed chunks were pruned from the lake. The end is read
      // first: chunks are pruned only after the epoch that passed them is committed, so a
      // committed offset read after it covers whatever was pruned meanwhile.
      std::unique_lock<std::mutex> lock{land_};
      auto end = lk->end_offset(*id);
      if (!end)
        return refuse(500, render(end.error()));
      auto offs = wh->offsets(p->name);
      if (!offs)
        return refuse(500, render(offs.error()));
      uint64_t committed = 0;
      for (const auto& [sid, off] : *offs)
        if (sid == *id)
          committed = off;
      *end = std::max(*end, committed);
      if (*end - committed > opts_.max_pending_bytes) {
        if (wait && std::chrono::steady_clock::now() < until && !(give_up && give_up->load())) {
          lock.unlock();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        return refuse(429, "source " + src->name + " has " + std::to_string(*end - committed) +
                             " bytes landed but not yet committed (max_pending_bytes " +
                             std::to_string(opts_.max_pending_bytes) + "): retry later");
      }
      std::string last; // the last chunk with its line end, when the body lacks one
      std::vector<lake::chunk_ref> chunks;
      uint64_t offset = *end;
      size_t from = 0;
      for (size_t i = 0; i < cuts.size(); ++i) {
        std::string_view part{body.data() + from, cuts[i] - from};
        if (i + 1 == cuts.size() && !ends_line) {
          last.assign(part.data(), part.size());
          last += '\n';
          part = last;
        }
        chunks.push_back({*id, offset, part});
        offset += part.size();
        from = cuts[i];
      }
      if (auto err = lk->append(chunks))
        return refuse(500, render(err));
      r.first = *end;
      r.end = offset;
      return r;
    }
  }

private:
public:
  /// Set when the service stops: bodies sent from then on are refused (503). What was
  /// acknowledged before and not read by the last epoch stays in the lake for the next run.
  std::atomic<bool> closing_{false};

private:
  const weir_config& cfg_;
  const serve_options& opts_;
  std::shared_ptr<run_probe> probe_;
  std::shared_ptr<run_state> state_;
  const progress_history& history_;
  std::mutex land_;
};

/// Plain TCP ingest (docs/serve.md): newline-delimited records, a batch ended by an empty line
/// and acknowledged once landed. One thread accepts; each connection has its own thread.
class tcp_ingest {
public:
  static constexpr int max_connections = 64;
  static constexpr int idle_seconds = 30;

  tcp_ingest(api& handlers, const serve_options& opts)
    : api_(handlers)
    , opts_(opts) {}
  ~tcp_ingest() { stop(); }

  /// Binds and listens on host:port (0: a free port, written back); false when it cannot.
  bool listen(const std::string& host, int& port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0)
      return false;
    for (auto* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0)
        continue;
      int yes = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 64) == 0)
        fd_ = fd;
      else
        ::close(fd);
    }
    ::freeaddrinfo(res);
    if (fd_ < 0)
      return false;
    sockaddr_storage at{};
    socklen_t len = sizeof at;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&at), &len);
    port = ntohs(at.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&at)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&at)->sin_port);
    acceptor_ = std::thread{[this] { accept_loop(); }};
    return true;
  }

  void stop() {
    if (stopping_.exchange(true))
      return;
    if (fd_ >= 0)
      ::shutdown(fd_, SHUT_RDWR);
    if (acceptor_.joinable())
      acceptor_.join();
    if (fd_ >= 0)
      ::close(fd_);
    std::unique_lock<std::mutex> lock{mu_};
    for (int c : conns_)
      ::shutdown(c, SHUT_RDWR);
    gone_.wait(lock, [this] { return conns_.empty(); });
  }

private:
  void accept_loop() {
    while (!stopping_.load()) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED)
          continue;
        return; // shut down
      }
      std::lock_guard<std::mutex> lock{mu_};
      if (stopping_.load() || static_cast<int>(conns_.size()) >= max_connections) {
        say(c, "error 503 too many connections (at most " + std::to_string(max_connections) +
                 ")\n");
        ::close(c);
        continue;
      }
      timeval tv{idle_seconds, 0};
      int one = 1; // acknowledgements go out at once, not held back for more data
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      conns_.push_back(c);
      // Detached: a connection's thread ends with it; stop() waits until every one is gone.
      std::thread{[this, c] {
        serve_connection(c);
        std::lock_guard<std::mutex> l{mu_};
        conns_.erase(std::find(conns_.begin(), conns_.end(), c));
        ::close(c);
        gone_.notify_all();
      }}.detach();
    }
  }

  static bool say(int fd, const std::string& line) {
    size_t done = 0;
    while (done < line.size()) {
      ssize_t n = ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  /// One client: `weir-ingest 1 PIPELINE [SOURCE]`, then batches of lines, each ended by an
  /// empty line and answered `ok RECORDS FIRST_OFFSET END_OFFSET` or `error STATUS WHY`.
  void serve_connection(int fd) {
    std::string buf;
    size_t scan = 0;       // where to look for the next line end
    size_t batch_from = 0; // where the current batch begins
    bool greeted = false;
    std::string pipeline;
    std::string source;
    char chunk[64 << 10];
    for (;;) {
      size_t nl;
      while ((nl = buf.find('\n', scan)) != std::string::npos) {
        const size_t line_start = scan;
        scan = nl + 1;
        size_t len = nl - line_start;
        if (len > 0 && buf[nl - 1] == '\r')
          --len;
        if (!greeted) {
          std::istringstream hello{buf.substr(line_start, len)};
          std::string magic;
          std::string version;
          hello >> magic >> version >> pipeline >> source;
          if (magic != "weir-ingest" || version != "1" || pipeline.empty()) {
            say(fd, "error 400 begin with: weir-ingest 1 PIPELINE [SOURCE]\n");
            return;
          }
          api::landed r;
          if (!api_.http_source(pipeline, source, r)) {
            say(fd, "error " + std::to_string(r.status) + " " + r.error + "\n");
            return;
          }
          greeted = true;
          if (!say(fd, "ok weir-ingest 1\n"))
            return;
          batch_from = scan;
          continue;
        }
        if (len > 0)
          continue;
        // An empty line ends the batch: what lies before it.
        std::string_view batch{buf.data() + batch_from, line_start - batch_from};
        auto r = api_.land(pipeline, source, batch, true, &stopping_);
        const std::string answer =
          r.status == 200 ? "ok " + std::to_string(r.records) + " " + std::to_string(r.first) +
                              " " + std::to_string(r.end) + "\n"
                          : "error " + std::to_string(r.status) + " " + r.error + "\n";
        if (!say(fd, answer) || r.status == 404 || r.status == 503)
          return;
        buf.erase(0, scan);
        scan = 0;
        batch_from = 0;
      }
      if (buf.size() - batch_from > opts_.max_body_bytes) {
        say(fd, "error 413 a batch over " + std::to_string(opts_.max_body_bytes) +
                  " bytes (--max-body-bytes); end batches with an empty line sooner\n");
        return;
      }
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0)
        return; // closed, timed out or shut down: an unended batch is not landed
      buf.append(chunk, static_cast<size_t>(n));
    }
  }

  api& api_;
  const serve_options& opts_;
  int fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable gone_;
  std::vector<int> conns_; ///< open connections, each served by a detached thread
};

} // namespace

caf::expected<std::vector<run_stats>> serve(const weir_config& cfg, const serve_options& opts,
                                            const std::atomic<bool>& stop,
                                            const std::function<void(const std::string&)>& on_listen) {
  std::string host;
  int port = 0;
  if (!parse_listen(opts.listen, host, port))
    return make_error(errc::bad_config,
                      "--listen '" + opts.listen + "': give HOST:PORT, e.g. 127.0.0.1:8080");
  auto probe = std::make_shared<run_probe>();
  auto state = std::make_shared<run_state>();
  httplib::Server srv;
  // Slow or half-open clients are cut off; the server keeps serving the others.
  srv.set_read_timeout(5, 0);
  srv.set_write_timeout(5, 0);
  srv.set_keep_alive_max_count(100);
  srv.set_keep_alive_timeout(5);
  srv.set_payload_max_length(opts.max_body_bytes);
  progress_history history{cfg, probe};
  api handlers{cfg, opts, probe, state, history};
  handlers.install(srv);
  if (port == 0)
    port = srv.bind_to_any_port(host);
  else if (!srv.bind_to_port(host, port))
    port = -1;
  if (port <= 0)
    return make_error(errc::bad_config, "--listen " + opts.listen +
                                          ": cannot listen there (address in use or not "
                                          "this machine's)");
  std::thread server{[&srv] { srv.listen_after_bind(); }};
  tcp_ingest tcp{handlers, opts};
  if (!opts.tcp_listen.empty()) {
    std::string tcp_host;
    int tcp_port = 0;
    if (!parse_listen(opts.tcp_listen, tcp_host, tcp_port) || !tcp.listen(tcp_host, tcp_port)) {
      srv.stop();
      server.join();
      return make_error(errc::bad_config, "--tcp " + opts.tcp_listen +
                                            ": cannot listen there (give HOST:PORT of this "
                                            "machine, not in use)");
    }
    on_listen("tcp " + tcp_host + ":" + std::to_string(tcp_port));
  }
  on_listen(host + ":" + std::to_string(port));
  history.start();

  run_options ro;
  ro.store = opts.store;
  ro.threads = opts.threads;
  ro.stop = &stop;
  ro.probe = probe;
  ro.http_sources = true;
  std::atomic<bool> run_done{false};
  caf::expected<std::vector<run_stats>> result{std::vector<run_stats>{}};
  std::thread run{[&] {
    result = run_pipelines(cfg, ro);
    state->set(result ? "finished" : "failed: " + render(result.error()));
    run_done = true;
  }};
  // Serve until stopped; a failed run ends the service with its error.
  while (!stop.load()) {
    if (run_done.load() && !result)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  handlers.closing_ = true;
  tcp.stop(); // nothing more is landed: what was acknowledged is in the lake
  run.join(); // a stop makes the pipelines commit a last epoch first
  srv.stop();
  server.join();
  return result;
}

namespace {

/// The fields of one csv line (quotes as csv_escape writes them).
std::vector<std::string> csv_fields(std::string_view line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

/// A csv page of results as rows; false when a row does not read back.
bool parse_page(const std::string& body, query_answer& page) {
  page.rows.clear();
  page.epochs.clear();
  size_t at = 0;
  bool header = true;
  // Columns after the aggregates: version, and epoch in the change feed.
  const size_t tail = page.change_feed ? 2 : 1;
  while (at < body.size()) {
    size_t nl = body.find('\n', at);
    std::string_view line{body.data() + at, (nl == std::string::npos ? body.size() : nl) - at};
    at = nl == std::string::npos ? body.size() : nl + 1;
    if (line.empty())
      continue;
    auto f = csv_fields(line);
    if (f.size() < 3 + tail)
      return false;
    if (header) {
      header = false;
      page.aggregates.assign(f.begin() + 3, f.end() - static_cast<std::ptrdiff_t>(tail));
      continue;
    }
    if (f.size() != page.aggregates.size() + 3 + tail)
      return false;
    window_result r;
    if (!parse_time(f[0], time_format::iso8601, r.start) ||
        !parse_time(f[1], time_format::iso8601, r.end))
      return false;
    r.key = internal_key(f[2]);
    for (size_t i = 3; i + tail < f.size(); ++i)
      r.values.push_back(f[i].empty() ? std::nan("") : std::strtod(f[i].c_str(), nullptr));
    r.version = static_cast<uint32_t>(std::strtoul(f[f.size() - tail].c_str(), nullptr, 10));
    if (page.change_feed)
      page.epochs.push_back(std::strtoull(f.back().c_str(), nullptr, 10));
    page.rows.push_back(std::move(r));
  }
  return true;
}

} // namespace

caf::error print_status(const std::string& url, const std::string& pipeline, size_t limit) {
  httplib::Client http{url};
  if (!http.is_valid())
    return make_error(errc::bad_config, "--server " + url + ": give http://HOST:PORT");
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(30, 0);
  httplib::Params params{{"format", "csv"}, {"limit", std::to_string(limit)}};
  if (!pipeline.empty())
    params.emplace("pipeline", pipeline);
  auto r = http.Get("/v1/tasks", params, httplib::Headers{});
  if (!r)
    return make_error(errc::bad_input, "--server " + url + ": no answer (" +
                                         httplib::to_string(r.error()) + ")");
  if (r->status != 200)
    return make_error(r->status == 400 ? errc::bad_config : errc::bad_input,
                      "--server " + url + ": " + std::to_string(r->status) + " " + r->body);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head;
  std::istringstream in{r->body};
  for (std::string line; std::getline(in, line);) {
    if (head.empty())
      head = csv_fields(line);
    else
      rows.push_back(csv_fields(line));
  }
  std::vector<bool> numeric(head.size(), true);
  if (numeric.size() > 2)
    numeric[0] = numeric[2] = false;
  table_printer table{head, numeric, stdout_sink()};
  table.add(rows);
  table.finish();
  return caf::none;
}

caf::error query_server(const std::string& url, const std::string& pipeline,
                        const std::string& key, const std::string& from, const std::string& to,
                        const std::optional<uint64_t>& since_epoch,
                        const std::function<void(const query_answer&)>& on_page,
                        uint64_t* epoch) {
  httplib::Client http{url};
  if (!http.is_valid())
    return make_error(errc::bad_config, "--server " + url + ": give http://HOST:PORT");
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(60, 0);
  httplib::Params params{{"format", "csv"}, {"limit", std::to_string(default_page_rows)}};
  if (!key.empty())
    params.emplace("key", key);
  if (!from.empty())
    params.emplace("from", from);
  if (!to.empty())
    params.emplace("to", to);
  if (since_epoch)
    params.emplace("since_epoch", std::to_string(*since_epoch));
  const std::string path =
    "/v1/pipelines/" + httplib::detail::encode_query_param(pipeline) + "/results";
  query_answer page;
  page.change_feed = since_epoch.has_value();
  for (;;) {
    auto r = http.Get(path, params, httplib::Headers{});
    if (!r)
      return make_error(errc::bad_input, "--server " + url + ": no answer (" +
                                           httplib::to_string(r.error()) + ")");
    if (r->status != 200) {
      std::string why = r->body;
      auto at = why.find("\"error\": \"");
      if (at != std::string::npos)
        why = why.substr(at + 10, why.rfind('"') - at - 10);
      return make_error(r->status == 400 ? errc::bad_config : errc::bad_input,
                        "--server " + url + ": " + std::to_string(r->status) + " " + why);
    }
    if (!parse_page(r->body, page))
      return make_error(errc::bad_input, "--server " + url + ": an answer that is not results");
    on_page(page);
    if (epoch != nullptr && r->has_header("Weir-Epoch"))
      *epoch = std::strtoull(r->get_header_value("Weir-Epoch").c_str(), nullptr, 10);
    if (!r->has_header("Weir-Next-Cursor"))
      return caf::none;
    params.erase("after");
    params.emplace("after", r->get_header_value("Weir-Next-Cursor"));
  }
}

} // namespace weir::cli
