#pragma once

/// The benchmark matrix of weir-bench (--matrix): six workloads that each stress another part
/// of `weir run` (many keys, many windows per event, sketches, sessions, late records), each run
/// durable and exactly-once with `--final` on a fresh store, checked against what the generated
/// data must give and reported as one table with a target per row.

#include <cstdint>
#include <string>
#include <vector>

namespace weir::bench {

struct matrix_options {
  std::string weir_bin;          ///< the weir binary
  std::string dir;               ///< work directory; a row works in DIR/ROW
  std::vector<std::string> rows; ///< rows to run; empty: all
  uint64_t events = 3'000'000;   ///< events per row
  int runs = 1;                  ///< timed runs per row; the median (by wall time) is reported
  bool perf = false;             ///< one more run per row under `perf record -g`
  bool keep = false;             ///< keep the rows' inputs and stores
};

/// The names of the matrix rows, in table order.
std::vector<std::string> matrix_row_names();

/// Runs the matrix rows and prints the table. 0 when every row ran and its counts were the
/// expected ones (a target not met is reported, not an error), 1 when a run failed or its
/// counts were implausible, 2 for an unknown row name.
int run_matrix(const matrix_options& opts);

} // namespace weir::bench
