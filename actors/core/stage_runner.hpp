#pragma once

/// Runs a pipeline's [[pipeline.stage]]s (actors/core/extension.hpp) over the accepted events
/// of each partition, before they are sent to the window aggregators.
///
/// The event columns carry one value column per aggregate, not per field, so the runner keeps
/// the pipeline's numeric fields (stage_fields: measures, derived fields, stage outputs) in a
/// matrix of its own per partition, next to the columns: the preprocessor appends each accepted
/// record's fields (outputs NaN), the stages read and change them through a stage_batch, and
/// then the runner writes the aggregate columns that read a numeric field from the matrix and
/// compacts away the dropped records. Every buffer keeps its capacity: the steady state
/// allocates nothing per record.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "actors/core/extension.hpp"
#include "actors/core/types.hpp"

namespace weir {

class stage_runner {
public:
  /// Where an aggregate column takes its value after the stages.
  struct aggregate_fill {
    int field = -1;        ///< numeric field column
    bool hash = false;     ///< a distinct's hash column (of the value's text)
    bool presence = false; ///< count of the field: 1 when it is not NaN
    size_t column = 0;     ///< into values (or hashes)
  };

  /// One instance of each stage per partition, made with the stage_context of its place
  /// (the fields up to its own outputs). Throws std::runtime_error naming the stage when a
  /// factory throws or a stage has none.
  /// `value_width` and `hash_width`: the values and hashes of one record in the columns.
  stage_runner(const pipeline_config& cfg, size_t partitions, std::vector<aggregate_fill> fills,
               size_t value_width, size_t hash_width);
  ~stage_runner();
  stage_runner(const stage_runner&) = delete;
  stage_runner& operator=(const stage_runner&) = delete;

  /// A filter on a stage's output ([pipeline.preprocess] filters), applied after the stages:
  /// a record whose field is NaN or outside [min, max] is dropped.
  struct output_filter {
    int field = -1;
    double min = -std::numeric_limits<double>::infinity();
    double max = std::numeric_limits<double>::infinity();
  };
  void add_filter(output_filter f) { filters_.push_back(f); }

  bool empty() const { return kinds_.empty(); }
  /// The number of numeric fields per record.
  size_t width() const { return width_; }

  /// Room for the fields of one more record of partition p (width() values, to be filled).
  double* append(size_t p) {
    auto& f = fields_[p];
    auto& n = used_[p];
    if (n + width_ > f.size()) // grows by doubling; clear() keeps the room
      f.resize(std::max(2 * f.size(), n + 64 * width_));
    n += width_;
    return f.data() + n - width_;
  }

  /// Runs every stage, in order, over the records of partition p from `begin` on, then fills
  /// the aggregate columns of the kept records and removes the dropped ones from `cols`.
  /// Returns the number dropped; `on_drop(time, wm_before)` is called for each. A stage that
  /// throws: std::runtime_error "stage KIND: what".
  template <class F>
  size_t run(size_t p, event_columns& cols, size_t begin, F&& on_drop) {
    run_stages(p, cols, begin);
    size_t dropped = 0;
    for (size_t r = begin; r < cols.size(); ++r)
      if (drop_[r - begin]) {
        on_drop(cols.time[r], cols.wm_before[r]);
        ++dropped;
      }
    finish(p, cols, begin);
    return dropped;
  }

  /// Forgets the fields of every partition (with the columns' clear).
  void clear();

private:
  class batch;
  void run_stages(size_t p, event_columns& cols, size_t begin);
  void finish(size_t p, event_columns& cols, size_t begin);

  std::vector<std::string> kinds_;
  std::vector<size_t> widths_; ///< fields each stage sees (its context's)
  std::vector<std::vector<std::unique_ptr<stage>>> instances_; ///< [partition][stage]
  std::vector<std::vector<double>> fields_; ///< [partition]: width_ per record, then room
  std::vector<size_t> used_;                ///< [partition]: the values of fields_ in use
  std::vector<aggregate_fill> fills_;
  std::vector<output_filter> filters_;
  std::vector<uint8_t> drop_; ///< scratch: dropped flags of the batch
  size_t width_ = 0;
  size_t value_width_ = 0;
  size_t hash_width_ = 0;
};

} // namespace weir
