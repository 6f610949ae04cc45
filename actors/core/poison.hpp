#pragma once

/// Poison records: what the supervisor does when processing records fails.
///
/// An actor whose processing of records throws quits with make_record_error(span, what): the
/// span is a whole chunk (a source's bytes [begin, end)) or, while the preprocess actor isolates
/// a suspect chunk line by line, one line. The supervisor feeds every such failure to a
/// poison_tracker and restarts the run from the last committed epoch; the tracker's quarantine
/// tells the next generation what to do differently:
///   1. a chunk that failed more than `retries` times becomes suspect: its lines are processed
///      (and sent to the aggregators) one at a time, so that a failure names one line;
///   2. a line that failed more than `retries` times is poison: it is not processed any more but
///      goes to dead letters with the error, and the run goes on.
/// Failures that carry no span (an actor that fails outside of record processing) are not the
/// tracker's business: the restart budget covers them.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "actors/core/error.hpp"

namespace weir {

/// One range of a source's bytes, with the error its records failed with (for poison lines).
struct quarantined_span {
  uint32_t source = 0;
  uint64_t begin = 0;
  uint64_t end = 0;
  std::string what;
};

/// What a pipeline's preprocess actor is told at spawn.
struct quarantine {
  std::vector<quarantined_span> isolate; ///< chunks overlapping these go line by line
  std::vector<quarantined_span> poison;  ///< lines that go to dead letters unprocessed

  bool empty() const { return isolate.empty() && poison.empty(); }
  /// True when [begin, end) of `source` overlaps a span to isolate or a poison line.
  bool touches(uint32_t source, uint64_t begin, uint64_t end) const;
  /// The poison line starting at `begin` of `source`, or nullptr.
  const quarantined_span* poisoned(uint32_t source, uint64_t begin) const;
};

class poison_tracker {
public:
  enum class verdict {
    retry,    ///< run the span again as it was
    isolate,  ///< the chunk failed every retry: its lines go one at a time from now on
    poison,   ///< the line failed every retry: it goes to dead letters from now on
    too_many, ///< more than max_poison_records poison lines (or failures past any bound): give up
  };

  poison_tracker(uint32_t retries, uint64_t max_poison_records);

  /// Counts one failure of `span` (the error text is `what`) and says what to do next.
  verdict failed(const record_span& span, const std::string& what);

  /// The quarantine of pipeline `pipeline` for the next generation.
  quarantine of(uint32_t pipeline) const;

  uint64_t poisoned() const { return poisoned_; }

private:
  struct entry {
    record_span span;
    uint32_t failures = 0;
    bool settled = false; ///< isolated (chunks) or poisoned (lines)
    std::string what;
  };
  entry& find(const record_span& span);

  uint32_t retries_;
  uint64_t max_poison_;
  uint64_t poisoned_ = 0;
  uint64_t failures_ = 0;
  std::vector<entry> entries_;
};

} // namespace weir
