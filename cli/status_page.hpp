#pragma once

/// The status page of `weir serve` (GET /): cli/status_page.html, built into the program by
/// cmake/embed.cmake. One self-contained page (HTML, CSS and script, nothing fetched but the
/// server's own API) that shows the pipelines live.

#include <string_view>

namespace weir::cli {

/// The page's bytes.
std::string_view status_page();

} // namespace weir::cli
