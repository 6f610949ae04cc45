#pragma once

/// Checks of the input against the config that can be made before anything runs: a csv header
/// (or a configured column list) must hold every field the pipeline reads. A header that lacks
/// one would make every record a dead letter, which must not look like a successful run.

#include <string>
#include <utility>
#include <vector>

#include "actors/core/error.hpp"
#include "actors/core/types.hpp"

#include <cstdint>

namespace weir {

/// The closest of `candidates` to `name`: one equal but for case, else one within an edit
/// distance of 2 (1 for names shorter than 4 characters); empty when none is close.
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

/// Checks that every field of `inputs` is one of `columns`. The errc::bad_config error names
/// `where` (e.g. the file), each missing field with a "did you mean" when one is close, and the
/// columns there are.
caf::error check_columns(const std::vector<std::string>& inputs,
                         const std::vector<std::string>& columns, const std::string& where);

/// Checks the csv header line of `file` (source `source_index` of pipeline `p`) against the
/// fields the pipeline reads. Reads at most the first line (bounded by max_line_bytes); an empty
/// file, or a followed one whose first line is not complete yet, passes. errc::bad_input when
/// the file cannot be read.
caf::error check_csv_header(const pipeline_config& p, size_t source_index, const std::string& file);

/// The number of records rejected, over every reason class.
uint64_t total_rejected(const std::vector<std::pair<std::string, uint64_t>>& rejected);

/// Tells a run whose records are mostly rejected from one with a few bad records, so that a
/// config that does not fit its input (a renamed field, the wrong time format) can never look
/// like success. Counts records since `start` (a generation's restored counters).
class reject_guard {
public:
  reject_guard(std::string pipeline, double max_ratio)
    : pipeline_(std::move(pipeline))
    , max_ratio_(max_ratio) {}

  /// Counts from these (cumulative) counts on.
  void start(uint64_t read, uint64_t rejected);

  /// errc::too_many_rejects when more than max_ratio of the records read since start were
  /// rejected: while running (`at_end` false) only once reject_sample records were read, at the
  /// end of a run for any number. `example` (a dead letter's reason) goes into the message.
  caf::error check(uint64_t read, uint64_t rejected, bool at_end,
                   const std::string& example = {}) const;

private:
  std::string pipeline_;
  double max_ratio_;
  uint64_t read0_ = 0;
  uint64_t rejected0_ = 0;
};

} // namespace weir
