#pragma once

/// Progress of `weir run` on stderr while it goes: on a terminal a bar redrawn in place, else a
/// line per interval (text, or JSON objects like the logs). The figures come from the run's live
/// meters (state_meter: bytes read, their total, records read), read a few times a second by a
/// thread of its own, so the run itself does nothing for it but count per chunk.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <caf/expected.hpp>

#include "actors/runtime.hpp"

namespace weir::cli {

enum class progress_mode { off, bar, lines };

struct progress_options {
  progress_mode mode = progress_mode::off;
  std::chrono::microseconds interval{std::chrono::seconds{10}}; ///< lines mode: between lines
  bool json = false; ///< lines are JSON objects (`--log-format json`)
};

/// The options of `--progress MODE --progress-interval DURATION`. auto draws a bar when stderr
/// is a terminal (`tty`) and writes lines otherwise; with JSON logs it writes JSON lines, and a
/// bar among JSON logs is refused (errc::bad_config), as is an interval that is not a positive
/// duration.
caf::expected<progress_options>
progress_options_of(const std::string& mode, const std::string& interval, bool tty, bool json_logs);

/// What the progress shows at one moment: the meters of every pipeline summed, and rates over
/// the last few seconds.
struct progress_figures {
  uint64_t bytes = 0;      ///< read so far (offsets reached, committed bytes included)
  uint64_t total = 0;      ///< of the bounded inputs (at least `bytes`)
  bool bounded = false;    ///< false: an input without an end, no total or ETA
  uint64_t records = 0;    ///< read in this run
  double events_per_s = 0; ///< records per second, lately (at the end: over the whole run)
  double bytes_per_s = 0;  ///< lately
  double elapsed_s = 0;
  bool done = false; ///< the run has ended: the last figures
  double percent() const;
  /// Seconds until the end at the recent rate (none without a total or a rate).
  std::optional<double> eta_s() const;
};

/// "12.3 MiB"
std::string human_bytes(uint64_t n);
/// "0:07", "12:03", "1:02:03"
std::string human_duration(double s);
/// The bar, at most `columns - 1` wide (a full line would wrap and break the redraw).
std::string bar_text(const progress_figures& f, size_t columns);
/// A line of the lines mode, without its time.
std::string line_text(const progress_figures& f);
/// A line of the lines mode as a JSON object, with the fields of a JSON log line.
std::string json_line_text(const progress_figures& f);

/// The terminal line a bar is drawn on. A log line clears it first and the bar is drawn again
/// under it, so logs and bar never share a line; one mutex orders the two.
class status_line {
public:
  explicit status_line(std::FILE* out)
    : out_(out) {}
  /// Draws `text` over what the line holds.
  void show(const std::string& text);
  /// Runs `f` (which writes whole lines) with the line cleared, then draws it again.
  template <class F>
  void around(F&& f) {
    std::lock_guard<std::mutex> lock{mu_};
    erase();
    f();
    if (!text_.empty())
      draw();
  }
  /// Leaves the line as it is drawn and moves below it; nothing is drawn any more.
  void end();

private:
  void draw();
  void erase();
  std::mutex mu_;
  std::FILE* out_;
  std::string text_;   ///< what is drawn (empty: nothing)
  size_t drawn_ = 0;   ///< characters on the line now
  bool ended_ = false; ///< end() was called
};

/// Shows the progress of a run from its probe (`run_options::probe`) until finish(). Draws
/// nothing until the run's meters are there, and nothing at all when the run ends within the
/// first interval.
class progress_reporter {
public:
  progress_reporter(progress_options opts, std::shared_ptr<run_probe> probe);
  ~progress_reporter();
  progress_reporter(const progress_reporter&) = delete;
  progress_reporter& operator=(const progress_reporter&) = delete;
  /// The run has ended: shows its last figures (when it showed any) and ends the bar on its own
  /// line, before the summary is printed.
  void finish();

private:
  struct sample {
    double t = 0;
    uint64_t bytes = 0;
    uint64_t records = 0;
  };
  void loop();
  /// The figures now; false before the meters are there.
  bool look(progress_figures& f, bool done);
  void show(const progress_figures& f);
  void install_sink();
  void remove_sink();

  progress_options opts_;
  std::shared_ptr<run_probe> probe_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::deque<sample> recent_; ///< the last seconds of samples, for the rates
  std::shared_ptr<status_line> line_;
  bool shown_ = false; ///< something was drawn or written
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace weir::cli
