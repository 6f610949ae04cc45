#include "cli/progress.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <sys/ioctl.h>
#include <unistd.h>

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include "actors/core/error.hpp"
#include "actors/core/timeparse.hpp"
#include "cli/format.hpp"

namespace weir::cli {

namespace {

/// The rates are over this many seconds of samples.
constexpr double rate_window_s = 5;
/// A bar is drawn again this often.
constexpr std::chrono::milliseconds bar_tick{250};

/// Log lines through the sink of the logger, around a status line: the bar is cleared before a
/// line is written and drawn again after it.
class status_line_sink final : public spdlog::sinks::sink {
public:
  status_line_sink(std::shared_ptr<spdlog::sinks::sink> inner, std::shared_ptr<status_line> line)
    : inner_(std::move(inner))
    , line_(std::move(line)) {}
  void log(const spdlog::details::log_msg& msg) override {
    if (!inner_->should_log(msg.level))
      return;
    line_->around([&] {
      inner_->log(msg);
      inner_->flush();
    });
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    inner_->set_formatter(std::move(f));
  }
  const std::shared_ptr<spdlog::sinks::sink>& inner() const { return inner_; }

private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
  std::shared_ptr<status_line> line_;
};

/// The width of the terminal on stderr (80 when it does not say).
size_t terminal_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 80;
}

/// "45.7k", "1.2M"
std::string human_rate(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.1fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else if (v >= 1e4)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

/// The time now as the logs write it: "[2024-06-01 12:00:00.123]" local (text logs), or
/// "2024-06-01T12:00:00.123456Z" (JSON logs).
std::string now_text(bool json) {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  char day[32];
  char out[64];
  if (json) {
    gmtime_r(&secs, &tm);
    std::strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(out, sizeof out, "%s.%06lldZ", day, static_cast<long long>(us % 1000000));
  } else {
    localtime_r(&secs, &tm);
    std::strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S", &tm);
    std::snprintf(out, sizeof out, "[%s.%03lld]", day, static_cast<long long>(us % 1000000 / 1000));
  }
  return out;
}

void write_all(std::FILE* out, const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

} // namespace

caf::expected<progress_options> progress_options_of(const std::string& mode,
                                                    const std::string& interval, bool tty,
                                                    bool json_logs) {
  progress_options out;
  out.json = json_logs;
  if (mode == "auto")
    out.mode = tty && !json_logs ? progress_mode::bar : progress_mode::lines;
  else if (mode == "bar")
    out.mode = progress_mode::bar;
  else if (mode == "lines")
    out.mode = progress_mode::lines;
  else if (mode == "off")
    out.mode = progress_mode::off;
  else
    return make_error(errc::bad_config, "--progress " + mode + ": give auto, bar, lines or off");
  if (out.mode == progress_mode::bar && json_logs)
    return make_error(errc::bad_config, "--progress bar draws on a terminal, which JSON logs do "
                                        "not share: use --progress lines (JSON objects) or off");
  int64_t us = 0;
  if (!parse_duration(interval, us) || us <= 0)
    return make_error(errc::bad_config, "--progress-interval " + interval +
                                          ": give a positive duration such as 10s or 500ms");
  out.interval = std::chrono::microseconds{us};
  return out;
}

double progress_figures::percent() const {
  if (total == 0)
    return done ? 100 : 0;
  return std::min(100.0, 100.0 * static_cast<double>(bytes) / static_cast<double>(total));
}

std::optional<double> progress_figures::eta_s() const {
  if (!bounded || done)
    return std::nullopt;
  if (bytes >= total)
    return 0.0;
  if (bytes_per_s <= 0)
    return std::nullopt;
  return static_cast<double>(total - bytes) / bytes_per_s;
}

std::string human_bytes(uint64_t n) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024)
    return std::to_string(n) + " B";
  double v = static_cast<double>(n);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string human_duration(double s) {
  auto t = static_cast<long long>(std::llround(std::max(0.0, s)));
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  return buf;
}

std::string bar_text(const progress_figures& f, size_t columns) {
  const size_t width = columns > 1 ? columns - 1 : 0;
  std::string tail;
  if (f.bounded)
    tail = human_bytes(f.bytes) + " / " + human_bytes(f.total);
  else
    tail = human_bytes(f.bytes) + " read";
  tail += "  " + human_rate(f.events_per_s) + " events/s";
  if (f.done)
    tail += "  took " + human_duration(f.elapsed_s);
  else if (auto eta = f.eta_s())
    tail += "  ETA " + human_duration(*eta);
  else if (f.bounded)
    tail += "  ETA --:--";
  else
    tail += "  " + human_duration(f.elapsed_s);
  std::string out;
  if (f.bounded) {
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3.0f%% ", std::floor(f.percent()));
    out = pct;
    // The bar takes what is left of the line, when that is enough to mean something.
    const size_t used = out.size() + 3 + tail.size();
    if (width >= used + 10) {
      const size_t cells = width - used;
      auto full = static_cast<size_t>(static_cast<double>(cells) * f.percent() / 100);
      out += '[';
      out.append(full, '=');
      if (full < cells) {
        out += '>';
        out.append(cells - full - 1, ' ');
      }
      out += "] ";
    }
  }
  out += tail;
  if (out.size() > width)
    out.resize(width);
  return out;
}

std::string line_text(const progress_figures& f) {
  char buf[256];
  std::string out;
  if (f.bounded) {
    std::snprintf(buf, sizeof buf, "%.1f%%, %s of %s (%llu of %llu bytes)", f.percent(),
                  human_bytes(f.bytes).c_str(), human_bytes(f.total).c_str(),
                  static_cast<unsigned long long>(f.bytes),
                  static_cast<unsigned long long>(f.total));
  } else {
    std::snprintf(buf, sizeof buf, "%s read (%llu bytes)", human_bytes(f.bytes).c_str(),
                  static_cast<unsigned long long>(f.bytes));
  }
  out = buf;
  std::snprintf(buf, sizeof buf, ", %llu records, %.0f events/s",
                static_cast<unsigned long long>(f.records), f.events_per_s);
  out += buf;
  if (f.done)
    out += ", took " + human_duration(f.elapsed_s);
  else if (auto eta = f.eta_s())
    out += ", ETA " + human_duration(*eta);
  return out;
}

std::string json_line_text(const progress_figures& f) {
  auto opt = [](std::optional<double> v) { return v ? json_number(std::round(*v)) : "null"; };
  std::string out =
    "{\"time\": \"" + now_text(true) +
    "\", \"level\": \"info\", \"msg\": \"progress\", \"bytes_read\": " + std::to_string(f.bytes) +
    ", \"bytes_total\": " + (f.bounded ? std::to_string(f.total) : "null") +
    ", \"percent\": " + (f.bounded ? json_number(std::round(f.percent() * 10) / 10) : "null") +
    ", \"records\": " + std::to_string(f.records) +
    ", \"events_per_s\": " + json_number(std::round(f.events_per_s)) +
    ", \"eta_s\": " + opt(f.eta_s()) +
    ", \"elapsed_s\": " + json_number(std::round(f.elapsed_s * 1000) / 1000) +
    ", \"done\": " + (f.done ? "true" : "false") + "}";
  return out;
}

void status_line::show(const std::string& text) {
  std::lock_guard<std::mutex> lock{mu_};
  if (ended_)
    return;
  text_ = text;
  draw();
}

void status_line::end() {
  std::lock_guard<std::mutex> lock{mu_};
  if (!ended_ && drawn_ > 0)
    write_all(out_, "\n");
  ended_ = true;
  text_.clear();
  drawn_ = 0;
}

void status_line::draw() {
  // Spaces, not an escape code, wipe what a longer line left: any terminal understands them.
  std::string s = "\r" + text_;
  if (drawn_ > text_.size())
    s.append(drawn_ - text_.size(), ' ');
  drawn_ = std::max(drawn_, text_.size());
  write_all(out_, s);
}

void status_line::erase() {
  if (drawn_ == 0)
    return;
  write_all(out_, "\r" + std::string(drawn_, ' ') + "\r");
  drawn_ = 0;
}

progress_reporter::progress_reporter(progress_options opts, std::shared_ptr<run_probe> probe)
  : opts_(opts)
  , probe_(std::move(probe)) {
  if (opts_.mode == progress_mode::off)
    return;
  if (opts_.mode == progress_mode::bar) {
    line_ = std::make_shared<status_line>(stderr);
    install_sink();
  }
  thread_ = std::thread{[this] { loop(); }};
}

progress_reporter::~progress_reporter() {
  finish();
}

void progress_reporter::finish() {
  if (!thread_.joinable())
    return;
  {
    std::lock_guard<std::mutex> lock{mu_};
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  progress_figures f;
  if (shown_ && look(f, true))
    show(f);
  if (line_) {
    line_->end();
    remove_sink();
  }
}

void progress_reporter::loop() {
  using clock = std::chrono::steady_clock;
  // Lines are written less often than they are looked at: the rates need samples between.
  const auto tick =
    opts_.mode == progress_mode::bar
      ? std::chrono::duration_cast<clock::duration>(bar_tick)
      : std::chrono::duration_cast<clock::duration>(std::clamp<std::chrono::microseconds>(
          opts_.interval / 4, std::chrono::milliseconds{10}, bar_tick));
  auto next_line = start_ + opts_.interval;
  std::unique_lock<std::mutex> lock{mu_};
  for (;;) {
    if (wake_.wait_for(lock, tick, [this] { return stop_; }))
      return;
    lock.unlock();
    progress_figures f;
    const auto now = clock::now();
    if (look(f, false) && (opts_.mode == progress_mode::bar || now >= next_line)) {
      show(f);
      while (next_line <= now)
        next_line += opts_.interval;
    }
    lock.lock();
  }
}

bool progress_reporter::look(progress_figures& f, bool done) {
  auto meters = probe_->meters();
  if (!meters)
    return false;
  f.bounded = true;
  for (const auto& m : *meters) {
    f.bytes += m.bytes_read.load(std::memory_order_relaxed);
    f.total += m.bytes_total.load(std::memory_order_relaxed);
    f.records += m.records_read.load(std::memory_order_relaxed);
    f.bounded = f.bounded && m.bounded.load(std::memory_order_relaxed);
  }
  f.total = std::max(f.total, f.bytes); // a file that grew while it was read
  f.done = done;
  f.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  recent_.push_back({f.elapsed_s, f.bytes, f.records});
  while (recent_.size() > 2 && recent_[1].t <= f.elapsed_s - rate_window_s)
    recent_.pop_front();
  const auto& a = recent_.front();
  const double dt = f.elapsed_s - a.t;
  if (dt > 0) {
    // After a restart the offsets go back to the last commit: no negative rate.
    f.bytes_per_s = f.bytes > a.bytes ? static_cast<double>(f.bytes - a.bytes) / dt : 0;
    f.events_per_s = static_cast<double>(f.records - std::min(f.records, a.records)) / dt;
  }
  if (done && f.elapsed_s > 0)
    f.events_per_s = static_cast<double>(f.records) / f.elapsed_s;
  return true;
}

void progress_reporter::show(const progress_figures& f) {
  shown_ = true;
  if (opts_.mode == progress_mode::bar)
    line_->show(bar_text(f, terminal_columns()));
  else if (opts_.json)
    write_all(stderr, json_line_text(f) + "\n");
  else
    write_all(stderr, now_text(false) + " [weir] [progress] " + line_text(f) + "\n");
}

void progress_reporter::install_sink() {
  auto logger = spdlog::default_logger();
  for (auto& s : logger->sinks())
    s = std::make_shared<status_line_sink>(s, line_);
}

void progress_reporter::remove_sink() {
  auto logger = spdlog::default_logger();
  for (auto& s : logger->sinks())
    if (auto* w = dynamic_cast<status_line_sink*>(s.get()))
      s = w->inner();
}

} // namespace weir::cli
