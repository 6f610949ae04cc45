#pragma once

/// `weir serve`: the pipelines of a config run as by `weir run` (until stopped), and an HTTP
/// server answers about them from the same process: health and readiness, the pipelines and
/// their committed progress, committed window results and dead letters a page at a time, and
/// Prometheus metrics. docs/serve.md describes the API.

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/runtime.hpp"
#include "actors/core/types.hpp"

namespace weir::cli {

struct serve_options {
  std::string listen = "127.0.0.1:8080"; ///< HOST:PORT; port 0 takes a free one
  std::string tcp_listen;                ///< HOST:PORT of the plain TCP ingest (empty: none)
  std::string store;                     ///< store directory (empty: the config's)
  size_t threads = 0;                    ///< scheduler threads (0: number of cores)
  /// POST bodies larger than this are refused (413).
  size_t max_body_bytes = size_t{16} << 20;
  /// An http source with this many bytes landed but not yet committed slows its clients down
  /// (429 with Retry-After) instead of landing more.
  size_t max_pending_bytes = size_t{256} << 20;
};

/// Rows of a results page at most (the `limit` parameter), and by default.
constexpr size_t max_page_rows = 100000;
constexpr size_t default_page_rows = 10000;

/// Runs the pipelines and the server until `stop` is set (then the pipelines commit a last
/// epoch and the server closes), or until the pipelines fail (their error). `on_listen` gets
/// the address the server listens on ("HOST:PORT") once it does, after "tcp HOST:PORT" for the
/// TCP ingest when there is one. A run whose bounded inputs
/// end keeps serving its results until stopped.
caf::expected<std::vector<run_stats>> serve(const weir_config& cfg, const serve_options& opts,
                                            const std::atomic<bool>& stop,
                                            const std::function<void(const std::string&)>& on_listen);

/// `weir status --server URL`: the recent committed epochs (tasks) of a running `weir serve`,
/// as a table.
caf::error print_status(const std::string& url, const std::string& pipeline, size_t limit);

/// `weir query --server URL`: the committed results of `pipeline` from a running `weir serve`
/// at URL (http://HOST:PORT), a page at a time, as query_store_pages gives them from a store.
/// Key, from and to as for `weir query` (empty: none). With `since_epoch`, the change feed: the
/// rows later epochs committed, each with its epoch; `epoch` (when given) gets the last epoch
/// the answer covers, where the next call follows on.
caf::error query_server(const std::string& url, const std::string& pipeline,
                        const std::string& key, const std::string& from, const std::string& to,
                        const std::optional<uint64_t>& since_epoch,
                        const std::function<void(const query_answer&)>& on_page,
                        uint64_t* epoch = nullptr);

} // namespace weir::cli
