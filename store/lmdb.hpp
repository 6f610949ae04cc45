#pragma once

/// A thin RAII layer over LMDB, the only place (with lmdb.cpp) that sees raw MDB_* calls besides
/// the stores built on it. lmdb.h's rules are this layer's rules:
/// - one environment per directory and process; every handle comes from `env`;
/// - a transaction never outlives one function call: `with_write` / `with_read` scope it;
/// - the environment is opened with MDB_NOTLS so a read txn may run on any thread (CAF actors
///   migrate between threads) and many read txns may be open at once;
/// - the map grows on MDB_MAP_FULL: `with_write` aborts, doubles the map, and runs the whole
///   function again. mdb_env_set_mapsize needs no txn active in this process, so every txn holds
///   a shared lock on the environment and growth takes it exclusively. A callback that runs
///   inside a txn must therefore never start a write on the same environment (it could wait on
///   its own read txn forever).
///
/// Keys are big-endian so that LMDB's bytewise order is numeric order (actors/core/codec.hpp).
///
/// Damage is refused, never half-read:
/// - before an environment is mapped, its data.mdb is checked against its two meta pages (magic,
///   version, page size, roots within the last page, and the file holds every page up to the
///   last one): a file cut short is refused instead of killing the process with SIGBUS;
/// - "sealed" values (put_sealed, get_sealed, cursor::sealed_value) end in an XXH3-64 of the
///   value seeded with the XXH3-64 of its key seeded with that of the table's name: a damaged
///   value, or a value that moved to another key or table, is errc::store_corrupt naming the
///   directory, table and key;
/// - LMDB trusts its pages: a damaged B-tree page makes it trip an assertion (SIGABRT) or read
///   outside the map (SIGSEGV, SIGBUS). Both are caught: an assertion callback, and a SIGSEGV/
///   SIGBUS handler (installed once per process, chaining to the one before) that acts only
///   while the faulting thread is inside an LMDB call of this layer. They print a message naming
///   the directory and end the process with exit code 4 (store unusable): the txn that met the
///   page cannot be finished, so this is the one exit from inside the store layer; the files on
///   disk stay as their last commit left them.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include <lmdb.h>

#include "actors/core/codec.hpp"
#include "actors/core/error.hpp"

namespace weir::lmdb {

// -- values and errors ----------------------------------------------------------------------------

inline MDB_val to_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

inline std::string_view to_view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

/// Maps an MDB return code to a weir error: corruption to errc::store_corrupt, a file that is
/// not LMDB (or of another LMDB version) to errc::store_format, everything else to
/// errc::store_io. The text names the operation and carries mdb_strerror's text.
caf::error make_mdb_error(int rc, std::string_view what);

using dbi = MDB_dbi;

/// Bytes a sealed value carries after its body.
constexpr size_t seal_size = 8;

/// The seed of a table's seals: XXH3-64 of its name, so that a value (or a whole subtree) that
/// turns up in another table does not verify there.
uint64_t table_seed(std::string_view table);

/// The checksum of a sealed value: XXH3-64 of the body, seeded with XXH3-64 of the key, seeded
/// with the table's seed.
uint64_t seal_hash(uint64_t seed, std::string_view key, std::string_view body);

/// Writes the checksum of (seed, key, body[0..n)) at body + n.
void seal_at(uint64_t seed, std::string_view key, char* body, size_t n);

/// The body of a sealed value when its checksum matches, nullopt when not.
std::optional<std::string_view> unseal(uint64_t seed, std::string_view key, std::string_view value);

/// A key for a message: as text when printable, as hex otherwise (cut after 64 bytes).
std::string show_key(std::string_view key);

/// Checks DIR/data.mdb against its meta pages before it is mapped (see the top of this file).
/// A missing or empty file is fine (a new environment).
caf::error check_data_file(const std::string& dir);

class env;
class cursor;

/// A transaction. Aborts in its destructor unless committed. Move-only; obtained from `env`.
/// Every failing call records its MDB code so `with_write` can tell MDB_MAP_FULL from the
/// rest, whatever the calling code did with the returned error.
class txn {
public:
  txn() = default;
  txn(txn&& other) noexcept;
  txn& operator=(txn&& other) noexcept;
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;
  ~txn();

  MDB_txn* get() const { return txn_; }
  bool read_only() const { return read_only_; }
  /// True once any call in this txn failed with MDB_MAP_FULL.
  bool map_full() const { return map_full_; }

  /// Opens (and with `create` makes) a named table. Only during `env`'s setup: lmdb.h allows
  /// one txn at a time to open tables.
  caf::expected<dbi> open_dbi(const char* name, bool create);

  /// The value stored under `key`, valid until the txn ends or writes to that table.
  caf::expected<std::optional<std::string_view>> get(dbi d, std::string_view key);
  caf::error put(dbi d, std::string_view key, std::string_view value, unsigned flags = 0);
  /// Reserves `size` bytes for the value of `key` and returns where to write them: saves a
  /// copy for big values.
  caf::expected<char*> reserve(dbi d, std::string_view key, size_t size, unsigned flags = 0);

  /// Writes `body` and its seal under `key`.
  caf::error put_sealed(dbi d, std::string_view key, std::string_view body, unsigned flags = 0);
  /// Reserves `size` bytes of body for `key`, lets fill(char*) write them, then seals them.
  template <class Fill>
  caf::error put_sealed_with(dbi d, std::string_view key, size_t size, Fill&& fill,
                             unsigned flags = 0) {
    auto dst = reserve(d, key, size + seal_size, flags);
    if (!dst)
      return std::move(dst.error());
    fill(*dst);
    seal_at(table_seed(d), key, *dst, size);
    return caf::none;
  }
  /// The verified body of the sealed value under `key`; errc::store_corrupt when its checksum
  /// does not match.
  caf::expected<std::optional<std::string_view>> get_sealed(dbi d, std::string_view key);
  /// The body of a sealed `value` stored under `key` in table d, or errc::store_corrupt.
  caf::expected<std::string_view> unsealed(dbi d, std::string_view key, std::string_view value);

  /// errc::store_corrupt naming the directory, the table and the key: "`what`".
  caf::error corrupt(dbi d, std::string_view key, std::string_view what) const;
  /// The name a table was opened with.
  std::string table_name(dbi d) const;
  /// The environment's directory.
  const char* store_dir() const;
  /// The seal seed of a table (lmdb::table_seed of its name; 0 when opened without a name).
  uint64_t table_seed(dbi d) const;
  /// Deletes `key`; false if it was not there.
  caf::expected<bool> del(dbi d, std::string_view key);
  /// The number of entries of a table.
  caf::expected<uint64_t> count(dbi d);

  caf::error commit();
  void abort();

  /// Records the code and turns it into an error (no error for MDB_SUCCESS).
  caf::error check(int rc, std::string_view what);

private:
  friend class env;
  struct names;
  txn(MDB_txn* t, bool read_only, std::shared_lock<std::shared_mutex> lock, names* n);

  MDB_txn* txn_ = nullptr;
  names* names_ = nullptr; ///< the environment's directory and table names, for messages
  bool read_only_ = false;
  bool map_full_ = false;
  std::shared_lock<std::shared_mutex> lock_; ///< keeps the map from being resized under us
};

/// A cursor over one table of a txn; closed in its destructor. The txn must outlive it.
class cursor {
public:
  static caf::expected<cursor> open(txn& t, dbi d);

  cursor() = default;
  cursor(cursor&& other) noexcept;
  cursor& operator=(cursor&& other) noexcept;
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;
  ~cursor();

  /// Positions on the first key >= `key`; false when there is none.
  caf::expected<bool> seek(std::string_view key);
  caf::expected<bool> first();
  caf::expected<bool> last();
  caf::expected<bool> next();
  caf::expected<bool> prev();
  /// Deletes the entry under the cursor; a following next() moves to the entry after it.
  caf::error del();
  /// Positions on `key` exactly; false when it is not there. From a positioned cursor, a key on
  /// the same page is found without a search from the root: in key order, one page at a time.
  caf::expected<bool> find(std::string_view key);
  /// Writes `body` and its seal under `key` through the cursor (cheap in key order, as find();
  /// with MDB_APPEND, for keys past the table's end, without a search).
  caf::error put_sealed(std::string_view key, std::string_view body, unsigned flags = 0);

  /// The current entry; valid until the cursor moves or the txn writes.
  std::string_view key() const { return to_view(key_); }
  std::string_view value() const { return to_view(value_); }
  /// The verified body of a sealed current value, or errc::store_corrupt.
  caf::expected<std::string_view> sealed_value() const;

private:
  caf::expected<bool> move(MDB_cursor_op op, const char* what);

  txn* txn_ = nullptr;
  dbi dbi_ = 0;
  MDB_cursor* cur_ = nullptr;
  MDB_val key_{0, nullptr};
  MDB_val value_{0, nullptr};
};

/// Options of an environment beyond directory and size.
struct env_options {
  unsigned max_dbs = 16;
  size_t map_size = size_t{256} << 20; ///< initial; grows by doubling when full
  /// false opens with MDB_NOSYNC: a commit returns before the OS has written it. A crash of the
  /// process loses nothing (the pages are in the OS cache), but a crash of the machine or a power
  /// loss can lose the last commits and, on a file system that reorders writes, corrupt the
  /// environment. Network acks then no longer mean "on disk".
  bool durable = true;
};

/// An LMDB environment in one directory (created when missing). Move-only; closed in the
/// destructor. All member functions may be called from several threads at once.
class env {
public:
  static caf::expected<env> open(const std::string& dir, const env_options& opts);
  static caf::expected<env> open(const std::string& dir, unsigned max_dbs, size_t map_size,
                                 bool durable = true);

  env();
  env(env&&) noexcept;
  env& operator=(env&&) noexcept;
  ~env();

  const std::string& dir() const;
  /// The current map size in bytes.
  size_t map_size() const;
  /// Bytes of the map in use (last page * page size).
  caf::expected<size_t> used_size() const;
  /// The largest key this LMDB build accepts (511 bytes unless built otherwise).
  size_t max_key_size() const;

  /// Starts a read txn. Keep it short: while it is open the map cannot grow.
  caf::expected<txn> begin_read();

  /// Runs fn inside a write txn and commits it when fn returns no error. On MDB_MAP_FULL (in fn
  /// or in the commit) the txn is aborted, the map doubled, and fn run again from scratch, so fn
  /// must have no effects outside the txn that a second run would repeat wrongly.
  caf::error with_write(const std::function<caf::error(txn&)>& fn);

  /// Runs fn inside a read txn.
  caf::error with_read(const std::function<caf::error(txn&)>& fn);

  /// Entry counts of the given tables (one read txn), then map size, map use and the format
  /// version: what `weir inspect` shows of an environment.
  caf::expected<std::vector<std::pair<std::string, uint64_t>>>
  table_report(const std::vector<std::pair<const char*, dbi>>& tables, uint32_t version);

  /// Flushes to disk; useful with durable = false.
  caf::error sync();

private:
  struct state;
  caf::expected<txn> begin(bool read_only, size_t* map_size_seen);
  caf::error grow(size_t seen);

  std::unique_ptr<state> state_;
};

/// Checks the format version recorded under "format_version" in table `meta`, or records
/// `version` when the environment is new (no table but `meta` in it). A recorded version that
/// differs is refused with errc::store_format naming the directory and both versions. `kind`
/// ("lake", "warehouse") is recorded too so that one store is not opened as another.
caf::error check_format(txn& t, dbi meta, const std::string& dir, std::string_view kind,
                        uint32_t version);

/// The store identity recorded under "store_id" in table `meta` (sealed), if any.
caf::expected<std::optional<std::string>> read_identity(env& e, dbi meta);
/// Records the store identity under "store_id" in table `meta`.
caf::error write_identity(env& e, dbi meta, std::string_view id);

} // namespace weir::lmdb
