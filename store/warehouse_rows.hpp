#pragma once

/// The decoders of the warehouse's row values (store/warehouse.hpp lists the layouts), for the
/// warehouse itself and for `weir check`, which walks the tables and must read rows exactly as
/// the warehouse does. A row that does not decode is errc::store_corrupt.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/core/error.hpp"
#include "actors/core/types.hpp"
#include "store/warehouse.hpp"

namespace weir {

/// A `pipelines` row of pipeline `name` (its key).
caf::error decode_pipeline(std::string_view name, std::string_view v, pipeline_info& out);

/// A `results` row with its key `k` into `row` (reusing its buffers); `max_key` is the
/// environment's longest key (a key that long carries the whole key in the value).
caf::error decode_result(std::string_view k, std::string_view v, size_t max_key,
                         window_result& row);

/// A `by_key` entry (key `k`, value `v`) into `row`; false when it does not decode.
bool decode_by_key(std::string_view k, std::string_view v, window_result& row);

/// A row of `changes` (not an epoch's header row 0) into `row`.
caf::error decode_change(std::string_view v, size_t max_key, window_result& row);

/// The "lake_sources" value of `meta` (record_lake_sources): ids from 1, increasing, keys not
/// empty.
caf::error decode_lake_sources(std::string_view v,
                               std::vector<std::pair<uint32_t, std::string>>& out);

/// A `dead_letters` value.
caf::error decode_dead_letter(std::string_view v, dead_letter& d);

} // namespace weir
