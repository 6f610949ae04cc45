#include "store/lmdb.hpp"

#include <filesystem>
#include <limits>
#include <mutex>
#include <system_error>

#include "store/codec.hpp"

namespace weir::lmdb {

caf::error make_mdb_error(int rc, std::string_view what) {
  auto code = errc::store_io;
  if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND)
    code = errc::store_corrupt;
  else if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
    code = errc::store_format;
  std::string text{what};
  text += ": ";
  text += mdb_strerror(rc);
  return make_error(code, std::move(text));
}

// -- txn ------------------------------------------------------------------------------------------

txn::txn(MDB_txn* t, bool read_only, std::shared_lock<std::shared_mutex> lock)
  : txn_(t)
  , read_only_(read_only)
  , lock_(std::move(lock)) {}

txn::txn(txn&& other) noexcept
  : txn_(other.txn_)
  , read_only_(other.read_only_)
  , map_full_(other.map_full_)
  , lock_(std::move(other.lock_)) {
  other.txn_ = nullptr;
}

txn& txn::operator=(txn&& other) noexcept {
  if (this != &other) {
    abort();
    txn_ = other.txn_;
    read_only_ = other.read_only_;
    map_full_ = other.map_full_;
    lock_ = std::move(other.lock_);
    other.txn_ = nullptr;
  }
  return *this;
}

txn::~txn() {
  abort();
}

caf::error txn::check(int rc, std::string_view what) {
  if (rc == MDB_SUCCESS)
    return caf::none;
  if (rc == MDB_MAP_FULL)
    map_full_ = true;
  return make_mdb_error(rc, what);
}

caf::expected<dbi> txn::open_dbi(const char* name, bool create) {
  MDB_dbi d = 0;
  int rc = mdb_dbi_open(txn_, name, create ? MDB_CREATE : 0, &d);
  if (rc != MDB_SUCCESS)
    return check(rc, std::string("opening table ") + (name ? name : "(main)"));
  return d;
}

caf::expected<std::optional<std::string_view>> txn::get(dbi d, std::string_view key) {
  MDB_val k = to_val(key);
  MDB_val v{0, nullptr};
  int rc = mdb_get(txn_, d, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<std::string_view>{};
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_get");
  return std::optional<std::string_view>{to_view(v)};
}

caf::error txn::put(dbi d, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  return check(mdb_put(txn_, d, &k, &v, flags), "mdb_put");
}

caf::expected<char*> txn::reserve(dbi d, std::string_view key, size_t size) {
  MDB_val k = to_val(key);
  MDB_val v{size, nullptr};
  int rc = mdb_put(txn_, d, &k, &v, MDB_RESERVE);
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_put (reserve)");
  return static_cast<char*>(v.mv_data);
}

caf::expected<bool> txn::del(dbi d, std::string_view key) {
  MDB_val k = to_val(key);
  int rc = mdb_del(txn_, d, &k, nullptr);
  if (rc == MDB_NOTFOUND)
    return false;
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_del");
  return true;
}

caf::expected<uint64_t> txn::count(dbi d) {
  MDB_stat st;
  if (auto err = check(mdb_stat(txn_, d, &st), "mdb_stat"))
    return err;
  return static_cast<uint64_t>(st.ms_entries);
}

caf::error txn::commit() {
  if (txn_ == nullptr)
    return make_error(errc::internal, "commit of a finished LMDB transaction");
  // mdb_txn_commit frees the txn whether it succeeds or not.
  auto t = txn_;
  txn_ = nullptr;
  auto err = check(mdb_txn_commit(t), "mdb_txn_commit");
  if (lock_.owns_lock())
    lock_.unlock();
  return err;
}

void txn::abort() {
  if (txn_ != nullptr) {
    mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
  if (lock_.owns_lock())
    lock_.unlock();
}

// -- cursor ---------------------------------------------------------------------------------------

caf::expected<cursor> cursor::open(txn& t, dbi d) {
  cursor c;
  MDB_cursor* raw = nullptr;
  if (auto err = t.check(mdb_cursor_open(t.get(), d, &raw), "mdb_cursor_open"))
    return err;
  c.txn_ = &t;
  c.cur_ = raw;
  return c;
}

cursor::cursor(cursor&& other) noexcept
  : txn_(other.txn_)
  , cur_(other.cur_)
  , key_(other.key_)
  , value_(other.value_) {
  other.cur_ = nullptr;
}

cursor& cursor::operator=(cursor&& other) noexcept {
  if (this != &other) {
    if (cur_ != nullptr)
      mdb_cursor_close(cur_);
    txn_ = other.txn_;
    cur_ = other.cur_;
    key_ = other.key_;
    value_ = other.value_;
    other.cur_ = nullptr;
  }
  return *this;
}

cursor::~cursor() {
  if (cur_ != nullptr)
    mdb_cursor_close(cur_);
}

caf::expected<bool> cursor::move(MDB_cursor_op op, const char* what) {
  int rc = mdb_cursor_get(cur_, &key_, &value_, op);
  if (rc == MDB_NOTFOUND)
    return false;
  if (rc != MDB_SUCCESS)
    return txn_->check(rc, what);
  return true;
}

caf::expected<bool> cursor::seek(std::string_view key) {
  key_ = to_val(key);
  return move(MDB_SET_RANGE, "cursor seek");
}

caf::expected<bool> cursor::first() {
  return move(MDB_FIRST, "cursor first");
}

caf::expected<bool> cursor::last() {
  return move(MDB_LAST, "cursor last");
}

caf::expected<bool> cursor::next() {
  return move(MDB_NEXT, "cursor next");
}

caf::expected<bool> cursor::prev() {
  return move(MDB_PREV, "cursor prev");
}

caf::error cursor::del() {
  return txn_->check(mdb_cursor_del(cur_, 0), "mdb_cursor_del");
}

// -- env ------------------------------------------------------------------------------------------

struct env::state {
  MDB_env* handle = nullptr;
  std::string dir;
  /// Every txn holds it shared; growing the map holds it exclusively (lmdb.h: no txn may be
  /// active in the process during mdb_env_set_mapsize).
  std::shared_mutex resize;
  /// Changed only under the exclusive lock, so read under the shared lock without a race.
  size_t map_size = 0;

  ~state() {
    if (handle != nullptr)
      mdb_env_close(handle);
  }
};

env::env() = default;
env::env(env&&) noexcept = default;
env& env::operator=(env&&) noexcept = default;
env::~env() = default;

caf::expected<env> env::open(const std::string& dir, unsigned max_dbs, size_t map_size,
                             bool durable) {
  env_options opts;
  opts.max_dbs = max_dbs;
  opts.map_size = map_size;
  opts.durable = durable;
  return open(dir, opts);
}

caf::expected<env> env::open(const std::string& dir, const env_options& opts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::store_io, "cannot create store directory " + dir + ": " + ec.message());
  auto st = std::make_unique<state>();
  st->dir = dir;
  auto fail = [&](int rc, const char* what) {
    return make_mdb_error(rc, std::string(what) + " (" + dir + ")");
  };
  if (int rc = mdb_env_create(&st->handle); rc != MDB_SUCCESS) {
    st->handle = nullptr;
    return fail(rc, "mdb_env_create");
  }
  if (int rc = mdb_env_set_maxdbs(st->handle, opts.max_dbs); rc != MDB_SUCCESS)
    return fail(rc, "mdb_env_set_maxdbs");
  if (int rc = mdb_env_set_mapsize(st->handle, opts.map_size); rc != MDB_SUCCESS)
    return fail(rc, "mdb_env_set_mapsize");
  unsigned flags = MDB_NOTLS;
  if (!opts.durable)
    flags |= MDB_NOSYNC;
  if (int rc = mdb_env_open(st->handle, dir.c_str(), flags, 0644); rc != MDB_SUCCESS)
    return fail(rc, "mdb_env_open");
  // Clears reader slots left behind by processes that died with a read txn open; stale slots
  // would otherwise keep old pages from being reused forever.
  int dead = 0;
  if (int rc = mdb_reader_check(st->handle, &dead); rc != MDB_SUCCESS)
    return fail(rc, "mdb_reader_check");
  MDB_envinfo info;
  if (int rc = mdb_env_info(st->handle, &info); rc != MDB_SUCCESS)
    return fail(rc, "mdb_env_info");
  st->map_size = info.me_mapsize;
  env e;
  e.state_ = std::move(st);
  return e;
}

const std::string& env::dir() const {
  return state_->dir;
}

size_t env::map_size() const {
  std::shared_lock<std::shared_mutex> guard{state_->resize};
  return state_->map_size;
}

caf::expected<size_t> env::used_size() const {
  std::shared_lock<std::shared_mutex> guard{state_->resize};
  MDB_envinfo info;
  if (int rc = mdb_env_info(state_->handle, &info); rc != MDB_SUCCESS)
    return make_mdb_error(rc, "mdb_env_info");
  MDB_stat st;
  if (int rc = mdb_env_stat(state_->handle, &st); rc != MDB_SUCCESS)
    return make_mdb_error(rc, "mdb_env_stat");
  return static_cast<size_t>(info.me_last_pgno + 1) * st.ms_psize;
}

size_t env::max_key_size() const {
  return static_cast<size_t>(mdb_env_get_maxkeysize(state_->handle));
}

caf::expected<txn> env::begin(bool read_only, size_t* map_size_seen) {
  if (!state_)
    return make_error(errc::internal, "use of a closed LMDB environment");
  for (;;) {
    std::shared_lock<std::shared_mutex> lock{state_->resize};
    MDB_txn* raw = nullptr;
    int rc = mdb_txn_begin(state_->handle, nullptr, read_only ? MDB_RDONLY : 0, &raw);
    if (rc == MDB_SUCCESS) {
      if (map_size_seen != nullptr)
        *map_size_seen = state_->map_size;
      return txn{raw, read_only, std::move(lock)};
    }
    if (rc != MDB_MAP_RESIZED)
      return make_mdb_error(rc, "mdb_txn_begin (" + state_->dir + ")");
    // Another process grew the map: adopt its size (0 = take it from the file) and retry.
    lock.unlock();
    std::unique_lock<std::shared_mutex> excl{state_->resize};
    if (int rc2 = mdb_env_set_mapsize(state_->handle, 0); rc2 != MDB_SUCCESS)
      return make_mdb_error(rc2, "mdb_env_set_mapsize (" + state_->dir + ")");
    MDB_envinfo info;
    if (mdb_env_info(state_->handle, &info) == MDB_SUCCESS)
      state_->map_size = info.me_mapsize;
  }
}

caf::expected<txn> env::begin_read() {
  return begin(true, nullptr);
}

caf::error env::grow(size_t seen) {
  std::unique_lock<std::shared_mutex> excl{state_->resize};
  if (state_->map_size != seen)
    return caf::none; // another writer grew it meanwhile
  if (seen > std::numeric_limits<size_t>::max() / 2)
    return make_error(errc::store_io, "LMDB map of " + state_->dir + " is full and cannot grow");
  size_t next = seen * 2;
  if (int rc = mdb_env_set_mapsize(state_->handle, next); rc != MDB_SUCCESS)
    return make_mdb_error(rc, "mdb_env_set_mapsize (" + state_->dir + ")");
  MDB_envinfo info;
  if (int rc = mdb_env_info(state_->handle, &info); rc != MDB_SUCCESS)
    return make_mdb_error(rc, "mdb_env_info (" + state_->dir + ")");
  state_->map_size = info.me_mapsize;
  return caf::none;
}

caf::error env::with_write(const std::function<caf::error(txn&)>& fn) {
  // Doubling from even a few KiB reaches any addressable size well within this many rounds.
  constexpr int max_rounds = 64;
  for (int round = 0; round < max_rounds; ++round) {
    size_t seen = 0;
    bool full = false;
    caf::error err;
    {
      auto t = begin(false, &seen);
      if (!t)
        return std::move(t.error());
      err = fn(*t);
      if (!err && !t->map_full())
        err = t->commit();
      full = t->map_full();
      // The txn aborts (when not committed) and releases its shared lock here.
    }
    if (!full)
      return err;
    if (auto gerr = grow(seen))
      return gerr;
  }
  return make_error(errc::store_io, "LMDB map of " + state_->dir + " stays full after growing");
}

caf::error env::with_read(const std::function<caf::error(txn&)>& fn) {
  auto t = begin_read();
  if (!t)
    return std::move(t.error());
  return fn(*t);
}

caf::error env::sync() {
  if (int rc = mdb_env_sync(state_->handle, 1); rc != MDB_SUCCESS)
    return make_mdb_error(rc, "mdb_env_sync (" + state_->dir + ")");
  return caf::none;
}

// -- format ---------------------------------------------------------------------------------------

caf::error check_format(txn& t, dbi meta, const std::string& dir, std::string_view kind,
                        uint32_t version) {
  auto stored = t.get(meta, "format_version");
  if (!stored)
    return std::move(stored.error());
  auto stored_kind = t.get(meta, "kind");
  if (!stored_kind)
    return std::move(stored_kind.error());
  if (!*stored) {
    // A new environment holds no table but `meta` (just created, and empty).
    auto n_meta = t.count(meta);
    if (!n_meta)
      return std::move(n_meta.error());
    auto main = t.open_dbi(nullptr, false);
    if (!main)
      return std::move(main.error());
    auto n_main = t.count(*main);
    if (!n_main)
      return std::move(n_main.error());
    if (*n_meta != 0 || *n_main > 1)
      return make_error(errc::store_format, "store " + dir + " is not a weir " + std::string(kind) +
                                              " store: it records no format version");
    char buf[4];
    codec::put_le32(buf, version);
    if (auto err = t.put(meta, "format_version", std::string_view{buf, 4}))
      return err;
    return t.put(meta, "kind", kind);
  }
  if ((*stored)->size() != 4)
    return make_error(errc::store_corrupt, "store " + dir + ": format_version is " +
                                             std::to_string((*stored)->size()) +
                                             " bytes, expected 4");
  auto found = codec::get_le32((*stored)->data());
  if (found != version)
    return make_error(errc::store_format,
                      "store " + dir + " has format version " + std::to_string(found) +
                        " but this build of weir reads format version " + std::to_string(version) +
                        " only; use a matching weir or a new store");
  if (*stored_kind && **stored_kind != kind)
    return make_error(errc::store_format, "store " + dir + " is a weir " +
                                            std::string(**stored_kind) + " store, not a " +
                                            std::string(kind) + " store");
  return caf::none;
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>>
env::table_report(const std::vector<std::pair<const char*, dbi>>& tables, uint32_t version) {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto err = with_read([&](txn& t) -> caf::error {
    for (auto& [name, d] : tables) {
      auto n = t.count(d);
      if (!n)
        return std::move(n.error());
      out.emplace_back(name, *n);
    }
    return caf::none;
  });
  if (err)
    return err;
  auto used = used_size();
  if (!used)
    return std::move(used.error());
  out.emplace_back("map_size", map_size());
  out.emplace_back("map_used", *used);
  out.emplace_back("format_version", version);
  return out;
}

} // namespace weir::lmdb
