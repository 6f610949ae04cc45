#pragma once

/// Fault injection for tests and the crash harness (docs/faults.md).
///
/// The environment variable WEIR_FAULT names points in the code where the process crashes or a
/// call fails, e.g. `WEIR_FAULT=epoch.during_commit` or `WEIR_FAULT=lake.after_commit@3,
/// aggregator.mid_batch@2:fail`. Each point is a call `weir::fault::hit("name")` placed where
/// a failure is interesting (around the lake and warehouse commits, in the middle of an
/// aggregator batch, before a send between actors). WEIR_FAULT is read once per process.
///
/// Without WEIR_FAULT a hit costs one relaxed atomic load and a branch, so the points stay in
/// release builds: the harness tests the binary that is shipped.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "actors/core/error.hpp"

namespace weir::fault {

/// What happens when a rule fires.
enum class action : uint8_t {
  crash, ///< the process dies at once, as by SIGKILL (no destructors, no flush, no commit)
  fail,  ///< the call site turns the hit into an errc::internal error "injected fault at POINT"
};

/// Every point name the code knows, in the order of docs/faults.md.
const std::vector<std::string_view>& points();

/// One item of WEIR_FAULT: `point[~TEXT][@N[+]][:crash|:fail]`.
struct rule {
  std::string point;
  /// With `~TEXT`: only hits whose subject (the record's line or key, at the record points)
  /// contains TEXT count and fire; a rule with a match fires at every such hit from the nth on
  /// when `+` is given, so that a record fails on every retry (a poison record).
  std::string match;
  uint64_t nth = 1;     ///< fires at the nth hit of the point (counted from 1) ...
  bool onwards = false; ///< ... or, with `@N+`, at every hit from the nth on
  action what = action::crash;
};

/// A parsed WEIR_FAULT with its hit counters (one per known point, atomic: hits come from any
/// thread).
class plan {
public:
  /// Parses a comma-separated list of rules; an empty text is an empty plan. Errors
  /// (errc::bad_config) name the offending item and, for an unknown point, the known ones.
  static caf::expected<plan> parse(std::string_view text);

  plan();
  plan(plan&&) noexcept;
  plan& operator=(plan&&) noexcept;
  ~plan();

  const std::vector<rule>& rules() const { return rules_; }
  bool empty() const { return rules_.empty(); }

  /// Counts one hit of `point` and returns the action due at this hit, if any; does not act.
  /// A point name the code does not know is a bug: the process aborts with a message.
  std::optional<action> reach(std::string_view point, std::string_view subject = {});

  /// reach() and act: a due crash kills the process (SIGKILL); true when a fail is due.
  bool hit(std::string_view point, std::string_view subject = {});

  /// How often `point` was hit so far.
  uint64_t hits(std::string_view point) const;

private:
  std::vector<rule> rules_;
  std::unique_ptr<std::atomic<uint64_t>[]> counters_;
  std::unique_ptr<std::atomic<uint64_t>[]> matched_; ///< per rule: hits whose subject matched
};

/// The error a call site returns for a `fail` at `point`: errc::internal,
/// "injected fault at POINT".
caf::error injected(std::string_view point);

/// Parses WEIR_FAULT (once per process, on first use) and returns its error, if any. `weir run`
/// calls it before starting so that a bad WEIR_FAULT refuses to run instead of being ignored.
caf::error check_env();

namespace detail {

/// 0: WEIR_FAULT not read yet; 1: read, no rules (a hit returns false); 2: rules to check.
enum : uint8_t { unknown = 0, off = 1, on = 2 };
extern std::atomic<uint8_t> state;

bool hit_slow(std::string_view point, std::string_view subject);

} // namespace detail

/// A point in the code. Returns true when the action due here is `fail` (the caller then fails
/// with injected(point)); a due `crash` does not return. With WEIR_FAULT unset or empty: false.
/// A bad WEIR_FAULT (which check_env reports) disables every point, with one message on stderr.
inline bool hit(std::string_view point) {
  if (detail::state.load(std::memory_order_relaxed) == detail::off)
    return false;
  return detail::hit_slow(point, {});
}

/// A point reached by one record (`preprocess.record` with the line, `aggregator.record` with
/// the key): rules with `~TEXT` fire only when the subject contains TEXT.
inline bool hit(std::string_view point, std::string_view subject) {
  if (detail::state.load(std::memory_order_relaxed) == detail::off)
    return false;
  return detail::hit_slow(point, subject);
}

/// The exception a record point throws for a due `fail`: it stands for any failure of the code
/// that processes a record (a bug, an exhausted resource), which the actor reports with the
/// record's place so that the supervisor can isolate it (docs/faults.md).
struct injected_failure : std::runtime_error {
  explicit injected_failure(std::string_view point)
    : std::runtime_error("injected fault at " + std::string(point)) {}
};

/// True when WEIR_FAULT holds rules: a call site may then take a slower path that makes a point
/// reachable (the aggregator splits a batch in two halves around `aggregator.mid_batch`).
inline bool armed() {
  auto s = detail::state.load(std::memory_order_relaxed);
  if (s == detail::off)
    return false;
  if (s == detail::on)
    return true;
  check_env();
  return detail::state.load(std::memory_order_relaxed) == detail::on;
}

} // namespace weir::fault
