#include "actors/core/poison.hpp"

#include <algorithm>

namespace weir {

bool quarantine::touches(uint32_t source, uint64_t begin, uint64_t end) const {
  auto hit = [&](const quarantined_span& q) {
    return q.source == source && q.begin < end && begin < q.end;
  };
  return std::any_of(isolate.begin(), isolate.end(), hit)
         || std::any_of(poison.begin(), poison.end(), hit);
}

const quarantined_span* quarantine::poisoned(uint32_t source, uint64_t begin) const {
  for (const auto& q : poison)
    if (q.source == source && q.begin == begin)
      return &q;
  return nullptr;
}

poison_tracker::poison_tracker(uint32_t retries, uint64_t max_poison_records)
  : retries_(retries), max_poison_(max_poison_records) {}

poison_tracker::entry& poison_tracker::find(const record_span& span) {
  // A replay may cut the same bytes into other chunks: a chunk failure counts against any
  // earlier chunk of the same source it overlaps (and widens it). Lines are exact.
  for (auto& e : entries_) {
    if (e.span.pipeline != span.pipeline || e.span.source != span.source
        || e.span.line != span.line)
      continue;
    if (span.line ? e.span.begin == span.begin
                  : (e.span.begin < span.end && span.begin < e.span.end)) {
      e.span.begin = std::min(e.span.begin, span.begin);
      e.span.end = std::max(e.span.end, span.end);
      return e;
    }
  }
  entries_.push_back(entry{span, 0, false, {}});
  return entries_.back();
}

poison_tracker::verdict poison_tracker::failed(const record_span& span, const std::string& what) {
  // Each poison line costs at most (retries + 1) failures as a chunk and as many as a line;
  // more failures than that for the allowed poison lines means something else is wrong.
  const uint64_t bound = 2 * (static_cast<uint64_t>(retries_) + 1) * (max_poison_ + 1);
  if (++failures_ > bound)
    return verdict::too_many;
  auto& e = find(span);
  e.what = what;
  if (e.settled) // failed again although already isolated or poisoned: only a retry helps
    return verdict::retry;
  if (++e.failures <= retries_)
    return verdict::retry;
  e.settled = true;
  if (!span.line)
    return verdict::isolate;
  if (++poisoned_ > max_poison_)
    return verdict::too_many;
  return verdict::poison;
}

quarantine poison_tracker::of(uint32_t pipeline) const {
  quarantine q;
  for (const auto& e : entries_) {
    if (e.span.pipeline != pipeline || !e.settled)
      continue;
    quarantined_span s{e.span.source, e.span.begin, e.span.end, e.what};
    (e.span.line ? q.poison : q.isolate).push_back(std::move(s));
  }
  return q;
}

} // namespace weir
