#pragma once

/// The raw lake: every source's records, landed durably before anything downstream sees them,
/// so that an aborted epoch can be replayed from its committed offsets. Lives in DIR/lake.
///
/// Tables (every value but meta's format_version and kind ends in a seal, lmdb.hpp):
/// - meta:        "format_version" (u32 LE), "kind" = "lake", "store_id" (16 bytes, store.hpp)
/// - source_ids:  source key string -> id (u32 LE)
/// - source_keys: id (BE32) -> source key string
/// - chunks:      (source id BE32, offset BE64) -> landed-at (i64 LE, microseconds wall clock)
///                + the raw bytes of whole lines
///
/// Reads verify the seal of every chunk they hand on; prune deletes committed chunks without
/// hashing them.
///
/// All member functions may be called from several threads (actors) at once on one object;
/// LMDB serializes the writers. Callbacks run inside a read txn and must not write to the lake.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/core/error.hpp"
#include "store/lmdb.hpp"

namespace weir {

class lake {
public:
  /// 2: values are sealed and the meta table records the store identity.
  static constexpr uint32_t format_version = 2;
  /// Bytes before the raw data in a chunk value (the landed-at time).
  static constexpr size_t chunk_header = 8;
  static constexpr size_t default_map_size = size_t{256} << 20;

  /// Opens (creating when missing) the lake in `dir`/lake. `durable = false` trades the last
  /// commits after a machine crash for speed (see lmdb::env_options::durable). `map_size` is
  /// the initial map; it doubles whenever full.
  static caf::expected<lake> open(const std::string& dir, bool durable = true,
                                  size_t map_size = default_map_size);

  /// Source ids: a stable uint32 (from 1) per source key string (e.g.
  /// "pipeline/source:/absolute/path"). Creates it when new.
  caf::expected<uint32_t> source_id(const std::string& source_key);

  /// All known sources: id -> key, by id.
  caf::expected<std::vector<std::pair<uint32_t, std::string>>> sources();

  struct chunk_ref {
    uint32_t source;
    uint64_t offset;
    std::string_view data;
  };

  /// Lands chunks in ONE write transaction (its commit is the fsync when durable): all of them
  /// or none. Every source must be known (from source_id); a chunk replaces one stored at the
  /// same (source, offset).
  caf::error append(const std::vector<chunk_ref>& chunks);

  /// End offset (offset + size of the last chunk) of a source, 0 if none.
  caf::expected<uint64_t> end_offset(uint32_t source);

  /// Calls fn(offset, data) for each chunk of `source` whose end is > `from`, in offset order.
  /// If `from` falls inside a chunk, the chunk is passed whole with its own offset; the caller
  /// skips. fn returns false to stop. `data` is valid only during the call. Long scans run in
  /// several short read txns so that they never hold up map growth for long.
  caf::error scan(uint32_t source, uint64_t from,
                  const std::function<bool(uint64_t, std::string_view)>& fn);

  /// Deletes chunks of `source` that end at or before `below` and were landed before
  /// `landed_before` (microseconds wall clock). Returns how many it deleted.
  caf::expected<size_t> prune(uint32_t source, uint64_t below, int64_t landed_before);

  /// Table name -> entry count, plus "map_size", "map_used" (bytes) and "format_version",
  /// for `weir inspect`.
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> table_counts();

  /// The store identity recorded in the lake (see store.hpp), if any.
  caf::expected<std::optional<std::string>> identity() { return lmdb::read_identity(env_, meta_); }
  caf::error record_identity(std::string_view id) { return lmdb::write_identity(env_, meta_, id); }

  /// The environment and its tables by name, for `weir check` (store/check.hpp).
  lmdb::env& environment() { return env_; }
  std::vector<std::pair<const char*, lmdb::dbi>> tables() const {
    return {{"meta", meta_},
            {"source_ids", source_ids_},
            {"source_keys", source_keys_},
            {"chunks", chunks_}};
  }

  const std::string& dir() const { return env_.dir(); }

private:
  lmdb::env env_;
  lmdb::dbi meta_ = 0;
  lmdb::dbi source_ids_ = 0;
  lmdb::dbi source_keys_ = 0;
  lmdb::dbi chunks_ = 0;
};

} // namespace weir
