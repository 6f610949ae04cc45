#include "actors/core/fault.hpp"

#include <csignal>
#include <cstdlib>
#include <mutex>

#include <unistd.h>

namespace weir::fault {

namespace {

/// Index of a known point, or npos.
constexpr size_t npos = static_cast<size_t>(-1);

size_t index_of(std::string_view point) {
  const auto& ps = points();
  for (size_t i = 0; i < ps.size(); ++i)
    if (ps[i] == point)
      return i;
  return npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

caf::error bad(std::string_view item, const std::string& why) {
  return make_error(errc::bad_config,
                    "WEIR_FAULT: '" + std::string(item) + "': " + why +
                      " (syntax: POINT[@N[+]][:crash|:fail], comma-separated; see docs/faults.md)");
}

/// Writes a line to stderr without locks or allocation beyond the string: the process may be
/// about to die.
void say(const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    auto n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

[[noreturn]] void crash_at(std::string_view point) {
  say("weir: injected fault at " + std::string(point) + " (crash)\n");
  std::raise(SIGKILL);
  std::_Exit(137); // not reached: SIGKILL cannot be caught
}

} // namespace

const std::vector<std::string_view>& points() {
  static const std::vector<std::string_view> all{
    "lake.before_commit",  "lake.during_commit", "lake.after_commit",    "epoch.before_commit",
    "epoch.during_commit", "epoch.after_commit", "aggregator.mid_batch", "send.chunk",
    "send.batch",          "send.contribution",  "preprocess.record",    "aggregator.record",
    "redis.before_ack",    "cluster.placed",     "sink.delivered",
  };
  return all;
}

plan::plan()
  : counters_(new std::atomic<uint64_t>[points().size()]) {
  for (size_t i = 0; i < points().size(); ++i)
    counters_[i].store(0, std::memory_order_relaxed);
}

namespace {

void zero(std::unique_ptr<std::atomic<uint64_t>[]>& a, size_t n) {
  a.reset(new std::atomic<uint64_t>[n]);
  for (size_t i = 0; i < n; ++i)
    a[i].store(0, std::memory_order_relaxed);
}

} // namespace

plan::plan(plan&&) noexcept = default;
plan& plan::operator=(plan&&) noexcept = default;
plan::~plan() = default;

caf::expected<plan> plan::parse(std::string_view text) {
  plan out;
  if (trim(text).empty())
    return out;
  size_t pos = 0;
  for (;;) {
    auto comma = text.find(',', pos);
    auto item = trim(text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos));
    if (item.empty())
      return bad(item, "empty item");
    rule r;
    auto rest = item;
    if (auto colon = rest.find(':'); colon != rest.npos) {
      auto act = rest.substr(colon + 1);
      if (act == "crash")
        r.what = action::crash;
      else if (act == "fail")
        r.what = action::fail;
      else
        return bad(item, "unknown action '" + std::string(act) + "': use crash or fail");
      rest = rest.substr(0, colon);
    }
    if (auto at = rest.find('@'); at != rest.npos) {
      auto count = rest.substr(at + 1);
      rest = rest.substr(0, at);
      if (!count.empty() && count.back() == '+') {
        r.onwards = true;
        count.remove_suffix(1);
      }
      if (count.empty() || count.size() > 18 || count.find_first_not_of("0123456789") != count.npos)
        return bad(item, "the count after @ must be a whole number from 1");
      r.nth = std::stoull(std::string(count));
      if (r.nth == 0)
        return bad(item, "the count after @ must be a whole number from 1");
    }
    if (auto tilde = rest.find('~'); tilde != rest.npos) {
      r.match = std::string(rest.substr(tilde + 1));
      rest = rest.substr(0, tilde);
      if (r.match.empty())
        return bad(item, "the text after ~ is empty");
      if (rest != "preprocess.record" && rest != "aggregator.record")
        return bad(item, "~TEXT applies to the record points only "
                         "(preprocess.record, aggregator.record)");
    }
    if (index_of(rest) == npos) {
      std::string known;
      for (auto p : points())
        known += (known.empty() ? "" : ", ") + std::string(p);
      return bad(item, "unknown fault point '" + std::string(rest) + "' (known: " + known + ")");
    }
    r.point = std::string(rest);
    out.rules_.push_back(std::move(r));
    if (comma == std::string_view::npos)
      break;
    pos = comma + 1;
  }
  zero(out.matched_, out.rules_.size());
  return out;
}

std::optional<action> plan::reach(std::string_view point, std::string_view subject) {
  auto i = index_of(point);
  if (i == npos) {
    say("weir: bug: fault point '" + std::string(point) + "' is not in fault::points()\n");
    std::abort();
  }
  const uint64_t n = counters_[i].fetch_add(1, std::memory_order_relaxed) + 1;
  for (size_t k = 0; k < rules_.size(); ++k) {
    const auto& r = rules_[k];
    if (r.point != point)
      continue;
    uint64_t m = n;
    if (!r.match.empty()) {
      if (subject.find(r.match) == std::string_view::npos)
        continue;
      m = matched_[k].fetch_add(1, std::memory_order_relaxed) + 1;
    }
    if (m == r.nth || (r.onwards && m > r.nth))
      return r.what;
  }
  return std::nullopt;
}

bool plan::hit(std::string_view point, std::string_view subject) {
  auto due = reach(point, subject);
  if (!due)
    return false;
  if (*due == action::crash)
    crash_at(point);
  return true;
}

uint64_t plan::hits(std::string_view point) const {
  auto i = index_of(point);
  return i == npos ? 0 : counters_[i].load(std::memory_order_relaxed);
}

caf::error injected(std::string_view point) {
  return make_error(errc::internal, "injected fault at " + std::string(point));
}

namespace detail {

std::atomic<uint8_t> state{unknown};

namespace {

/// WEIR_FAULT as read at first use. A function-local static: its initialization runs once and
/// every thread that gets here waits for it, so the plan is complete before anyone uses it.
struct env_reading {
  plan rules;
  caf::error err;
};

env_reading& env() {
  static env_reading r = [] {
    env_reading x;
    const char* v = std::getenv("WEIR_FAULT");
    if (v != nullptr) {
      auto p = plan::parse(v);
      if (p)
        x.rules = std::move(*p);
      else
        x.err = std::move(p.error());
    }
    state.store(x.rules.empty() ? off : on, std::memory_order_relaxed);
    return x;
  }();
  return r;
}

} // namespace

bool hit_slow(std::string_view point, std::string_view subject) {
  auto& e = env();
  if (e.err) {
    static std::once_flag once;
    std::call_once(once, [&e] { say("weir: WEIR_FAULT ignored: " + render(e.err) + "\n"); });
    return false;
  }
  if (e.rules.empty())
    return false;
  return e.rules.hit(point, subject);
}

} // namespace detail

caf::error check_env() {
  return detail::env().err;
}

} // namespace weir::fault
