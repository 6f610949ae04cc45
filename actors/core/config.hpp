#pragma once

/// Reading the pipeline configuration (TOML, see docs/config.md) into weir_config. Everything
/// is checked here, once, so that the rest of Weir can trust the struct: unknown keys, types,
/// ranges, field references and the consistency of window settings. Every error names the
/// place as `FILE:LINE: KEY: message`.

#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "actors/core/types.hpp"

namespace weir {

/// Reads and checks the config file at `path`. A file that cannot be read is errc::bad_input;
/// anything wrong inside it is errc::bad_config. Relative paths in it (store, sources) are
/// resolved against the directory of `path`.
caf::expected<weir_config> load_config(const std::string& path);

/// Checks config text that was read from `path` (used for messages and to resolve relative
/// paths against its directory).
caf::expected<weir_config> parse_config(std::string_view text, const std::string& path);

/// The names used in the config file for the enums, e.g. "quantile", "sliding", "epoch_ms".
const char* to_string(agg_fn x);
/// The function's name as the config writes it: the registered name of a custom aggregate.
std::string to_string(const aggregate_config& a);
const char* to_string(window_kind x);
const char* to_string(time_format x);
const char* to_string(value_type x);
const char* to_string(source_format x);
const char* to_string(late_policy x);

} // namespace weir
