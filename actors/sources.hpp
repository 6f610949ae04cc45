#pragma once

/// Sources of a pipeline and the identity of the files behind them.
///
/// A file is known by its device and inode plus a fingerprint (XXH3) of its first bytes (up to
/// 1 KiB, taken over what it has, extended once it has 1 KiB). Each time the file at a source's
/// path is replaced (renamed away and created anew, logrotate's default) or truncated
/// (copytruncate), the source starts a new generation: a new lake source key (the path's key,
/// then "#1", "#2", ...) with its own offsets, so that exactly-once per key stays valid. An
/// earlier generation is drained: what the lake holds of it is replayed, and its file, when
/// found (the old file renamed next to the path, e.g. app.log.1), is read to its end.
///
/// The identity of every generation is kept in the lake under the side key PATHKEY#files: the
/// record of generation g is the chunk at offset g (device, inode, fingerprint length and hash,
/// finished flag). It is written before any chunk of the generation is landed.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "actors/core/error.hpp"
#include "actors/core/types.hpp"
#include "store/lake.hpp"

namespace weir {

/// Bytes of a file's start that its fingerprint covers (at most).
constexpr size_t fingerprint_bytes = 1024;

/// Lake keys of a source's own records beside its data: the identities of a file's
/// generations (generation 0's key with this suffix) ...
constexpr const char* files_key_suffix = "#files";
/// ... and the markers of over-long lines (an input's key with this suffix, actors/ingest.cpp).
constexpr const char* long_line_key_suffix = "#long-lines";

/// The configured source of `p` (an index into p.sources) whose data the lake key `key` holds,
/// or nothing: a key of another pipeline, or of a source's own records (the suffixes above).
std::optional<size_t> source_of_key(const pipeline_config& p, const std::string& key);

/// Who a file is: device, inode and the fingerprint of its first fp_len bytes.
struct file_identity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint32_t fp_len = 0;
  uint64_t fp = 0;
  bool finished = false; ///< a generation known to have nothing more to read from a file
};

/// One input of a pipeline: a file (or stdin) with its lake source id and resume point.
struct source_input {
  uint32_t id = 0;
  std::string key;  ///< "pipeline/source:/absolute/path" (generation 0), then "...#G"
  std::string path; ///< "-" for stdin; empty: a drained generation whose file is gone
  source_config cfg;
  uint32_t config_index = 0; ///< index of cfg in the pipeline's sources
  uint64_t committed = 0;    ///< offset of the last committed epoch
  uint64_t lake_end = 0;     ///< end of what the lake holds (>= committed)
  std::string base_key;      ///< the key of generation 0
  uint32_t generation = 0;
  uint32_t files_id = 0; ///< lake id of base_key + "#files", the generation records
  file_identity identity;
  bool drain = false;      ///< an earlier generation: read to its end, never followed
  std::string header_from; ///< no file (path empty): where to read the csv header line
};

/// Committed offsets: lake source id -> offset.
using offset_list = std::vector<std::pair<uint32_t, uint64_t>>;

/// The sources of one pipeline as ingest gets them: the inputs, and what it needs to add a
/// file that newly matches a followed glob while running.
struct pipeline_sources {
  pipeline_sources() = default;
  /// Just these inputs (no glob to watch).
  pipeline_sources(std::vector<source_input> in)
    : inputs(std::move(in)) {} // NOLINT: implicit
  std::vector<source_input> inputs;
  std::string pipeline;               ///< its name, the first part of a source key
  std::vector<source_config> sources; ///< the configured sources, by index
  offset_list committed;              ///< committed offsets when the run began
  bool persist = true;                ///< identities are kept in the lake (exactly-once)
};

/// The lake key of http source `source` of `pipeline`: "pipeline/source:http". Its chunks are
/// landed by the server that takes the records (weir serve) and read back by ingest.
std::string http_source_key(const std::string& pipeline, const std::string& source);

/// The lake key of redis source `source` of `pipeline`: "pipeline/source:redis". Its chunks are
/// landed by ingest as it reads the stream (actors/redis_stream.hpp).
std::string redis_source_key(const std::string& pipeline, const std::string& source);

/// The input of an http or redis source: its lake id, committed offset and the end of what the
/// lake holds.
caf::expected<source_input> resolve_network_source(lake& lk, const offset_list& committed,
                                                const std::string& pipeline,
                                                const source_config& src, uint32_t si);

/// The key of generation g of a source whose generation 0 has key `base`.
std::string generation_key(const std::string& base, uint32_t g);

/// "pipeline/source:/absolute/path" (stdin: "pipeline/source:-").
std::string source_base_key(const std::string& pipeline, const std::string& source,
                            const std::string& path);

/// The identity of the open file `fd` now.
caf::expected<file_identity> identify(int fd);

/// Whether `fd` is the file `known`: same device and inode and the same first fp_len bytes.
bool same_file(const file_identity& known, int fd);

/// Files matching a glob pattern, sorted.
std::vector<std::string> glob_paths(const std::string& pattern);

/// Saves the record of generation g (see above); nothing when files_id is 0 (not kept).
caf::error save_generation(lake& lk, uint32_t files_id, uint32_t g, const file_identity& id);

/// The inputs for the file (or stdin) at `path` of configured source `src` (index si): the
/// current generation, a new one when the file was rotated or truncated since the last run, and
/// earlier generations that still have something to drain. Logs a warning for each rotation
/// found and for data that is gone. Without `persist` (a run without exactly-once: nothing to
/// resume) identities are neither read nor kept: every file is generation 0.
caf::expected<std::vector<source_input>> resolve_source(lake& lk, const offset_list& committed,
                                                        const std::string& pipeline,
                                                        const source_config& src, uint32_t si,
                                                        const std::string& path, bool persist);

/// A new generation of `from` (same path and source) for the file open as `fd`: records its
/// identity in the lake and returns its input, starting at 0.
caf::expected<source_input> next_generation(lake& lk, const source_input& from, int fd);

} // namespace weir
