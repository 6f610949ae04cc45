#pragma once

#include <string>

#include "actors/core/error.hpp"

namespace weir::cli {

/// Runs `weir check` on the store in `store`, printing its report: true when clean, false when
/// damaged, an error when there is no store.
caf::expected<bool> run_check(const std::string& store);

} // namespace weir::cli
