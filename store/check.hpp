#pragma once

/// `weir check`: walks every table of a store's lake and warehouse and reports what it checked
/// and every problem found. Reads only what is there: it creates no store.
///
/// Per table: every entry in strictly increasing key order, the entry count equal to what LMDB
/// records for the table, every value's seal (lmdb.hpp), the shape of every key and value. Across
/// tables and stores: the identities of lake and warehouse (store.hpp), every pipeline id used
/// by a warehouse row known in `pipelines`, every source id of the lake's chunks and of the
/// warehouse's offsets known in the lake's `source_keys`, `source_ids` and `source_keys` one
/// mapping.
///
/// A store without its lake (the coordinating node of a cluster whose ingest runs on another
/// node) has its warehouse checked alone: the missing lake is no problem, and the offsets' source
/// ids must be among the lake sources the warehouse recorded (warehouse::record_lake_sources);
/// with none recorded, the lake was lost and every committed offset is a problem.
///
/// A page damaged so that LMDB itself fails (an assertion, a read outside the map) ends the
/// process with exit code 4 (lmdb.hpp); the lines reported until then have been printed.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "actors/core/error.hpp"

namespace weir {

struct check_report {
  std::vector<std::string> problems;
  uint64_t entries = 0; ///< entries walked in all
  bool clean() const { return problems.empty(); }
};

/// Walks the store in `dir`; `line` receives each report line as soon as it is known (tables
/// walked with their counts, then problems). An error only when there is no store at all
/// (errc::bad_input).
caf::expected<check_report> check_store(const std::string& dir,
                                        const std::function<void(const std::string&)>& line);

} // namespace weir
