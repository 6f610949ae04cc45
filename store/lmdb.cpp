#include "store/lmdb.hpp"

#include <cstdio>
#include <filesystem>
#include <limits>
#include <mutex>
#include <system_error>

#include <fstream>
#include <vector>

#include <csignal>
#include <signal.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "actors/core/codec.hpp"

namespace weir::lmdb {

// -- seals ----------------------------------------------------------------------------------------

uint64_t table_seed(std::string_view table) {
  return XXH3_64bits(table.data(), table.size());
}

uint64_t seal_hash(uint64_t seed, std::string_view key, std::string_view body) {
  return XXH3_64bits_withSeed(body.data(), body.size(),
                              XXH3_64bits_withSeed(key.data(), key.size(), seed));
}

void seal_at(uint64_t seed, std::string_view key, char* body, size_t n) {
  codec::put_le64(body + n, seal_hash(seed, key, std::string_view{body, n}));
}

std::optional<std::string_view> unseal(uint64_t seed, std::string_view key,
                                       std::string_view value) {
  if (value.size() < seal_size)
    return std::nullopt;
  auto body = value.substr(0, value.size() - seal_size);
  if (codec::get_le64(value.data() + body.size()) != seal_hash(seed, key, body))
    return std::nullopt;
  return body;
}

std::string show_key(std::string_view key) {
  constexpr size_t max_shown = 64;
  bool text = !key.empty();
  for (unsigned char c : key)
    text = text && c >= 0x20 && c < 0x7F;
  auto shown = key.substr(0, max_shown);
  std::string out;
  if (text) {
    out = "'" + std::string{shown} + "'";
  } else {
    static const char digits[] = "0123456789abcdef";
    out = "0x";
    for (unsigned char c : shown) {
      out += digits[c >> 4];
      out += digits[c & 0xF];
    }
  }
  if (key.size() > max_shown)
    out += "... (" + std::to_string(key.size()) + " bytes)";
  return out;
}

// -- data file check ------------------------------------------------------------------------------

namespace {

/// Where LMDB 0.9 (64-bit) keeps the fields of a meta page: a 16-byte page header, then
/// MDB_meta {magic u32, version u32, address, mapsize, MDB_db dbs[2] (48 bytes each: pad u32 =
/// page size in dbs[0], flags u16, depth u16, 4 page counts and entries u64, root u64),
/// last_pg u64, txnid u64}. The file and the machine share byte order.
struct meta_layout {
  static constexpr size_t flags = 10;
  static constexpr size_t magic = 16;
  static constexpr size_t version = 20;
  static constexpr size_t psize = 40;
  static constexpr size_t root[2] = {80, 128};
  static constexpr size_t depth[2] = {46, 94};
  static constexpr size_t last_pg = 136;
  static constexpr size_t size = 152;
};

constexpr uint32_t mdb_magic = 0xBEEFC0DE;
constexpr uint32_t mdb_data_version = 1;
constexpr uint16_t page_meta = 0x08;
constexpr uint64_t invalid_page = ~uint64_t{0};

template <class T>
T field(const char* page, size_t at) {
  T v;
  std::memcpy(&v, page + at, sizeof v);
  return v;
}

caf::error read_at(std::ifstream& f, uint64_t at, char* out, size_t n, const std::string& path) {
  f.seekg(static_cast<std::streamoff>(at));
  if (!f.read(out, static_cast<std::streamsize>(n)))
    return make_error(errc::store_io, "cannot read " + path);
  return caf::none;
}

/// Pages at the end of the allocated range that a commit may leave unwritten (loose pages).
constexpr uint64_t unwritten_slack = 64;

/// Checks one meta page; `which` (0 or 1) is its page number.
caf::error check_meta(const char* m, int which, uint64_t psize, uint64_t file_size,
                      const std::string& path) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::store_corrupt, path + ": meta page " + std::to_string(which) + " " +
                                             why + "; the store is damaged");
  };
  if (field<uint32_t>(m, meta_layout::magic) != mdb_magic)
    return make_error(errc::store_format, path + ": meta page " + std::to_string(which) +
                                            " has no LMDB magic: not an LMDB file, or damaged");
  if (field<uint32_t>(m, meta_layout::version) != mdb_data_version)
    return make_error(errc::store_format,
                      path + " has LMDB data version " +
                        std::to_string(field<uint32_t>(m, meta_layout::version)) + ", not 1");
  if (field<uint64_t>(m, 0) != static_cast<uint64_t>(which) ||
      !(field<uint16_t>(m, meta_layout::flags) & page_meta))
    return bad("has a wrong page header");
  // The last page number may lie a little past the end of the file: pages a commit allocated
  // and freed again (LMDB's loose pages) are never written. More than that, or a tree root past
  // the end (roots are always written), is a file cut short.
  const uint64_t last = field<uint64_t>(m, meta_layout::last_pg);
  const uint64_t pages = file_size / psize;
  if (last < 1 || last > pages - 1 + unwritten_slack)
    return bad("says the file uses pages up to " + std::to_string(last) + " of " +
               std::to_string(psize) + " bytes, but it holds " + std::to_string(file_size) +
               " bytes (" + std::to_string(pages) + " pages): the file was cut short");
  for (int i = 0; i < 2; ++i) {
    uint64_t root = field<uint64_t>(m, meta_layout::root[i]);
    if (root != invalid_page && (root < 2 || root > last))
      return bad("has a root page " + std::to_string(root) + " outside pages 2.." +
                 std::to_string(last));
    if (root != invalid_page && root >= pages)
      return bad("has a root page " + std::to_string(root) + " of " + std::to_string(psize) +
                 " bytes, but the file holds " + std::to_string(file_size) + " bytes (" +
                 std::to_string(pages) + " pages): the file was cut short");
    if (field<uint16_t>(m, meta_layout::depth[i]) > 64)
      return bad("has an impossible tree depth");
  }
  return caf::none;
}

} // namespace

caf::error check_data_file(const std::string& dir) {
  const std::string path = dir + "/data.mdb";
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec || size == 0)
    return caf::none; // new (LMDB creates it); an unreadable file fails in mdb_env_open
  auto cut = [&](const std::string& what) {
    return make_error(errc::store_corrupt, path + " holds " + std::to_string(size) +
                                             " bytes, less than " + what +
                                             ": the file was cut short; the store is damaged");
  };
  if (size < meta_layout::size)
    return cut("one meta page");
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return make_error(errc::store_io, "cannot open " + path);
  char m[2][meta_layout::size];
  if (auto err = read_at(f, 0, m[0], meta_layout::size, path))
    return err;
  if (field<uint32_t>(m[0], meta_layout::magic) != mdb_magic)
    return make_error(errc::store_format,
                      path + " has no LMDB magic: not an LMDB file, or its first page is damaged");
  const uint32_t psize = field<uint32_t>(m[0], meta_layout::psize);
  if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0)
    return make_error(errc::store_corrupt, path + ": meta page 0 gives a page size of " +
                                             std::to_string(psize) + "; the store is damaged");
  if (size < 2 * uint64_t{psize})
    return cut("its two meta pages");
  if (auto err = read_at(f, psize, m[1], meta_layout::size, path))
    return err;
  for (int i = 0; i < 2; ++i)
    if (auto err = check_meta(m[i], i, psize, size, path))
      return err;
  return caf::none;
}

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

// -- faults inside LMDB ---------------------------------------------------------------------------

namespace {

/// The directory of the environment whose pages this thread is reading inside an LMDB call, or
/// nullptr outside one. A damaged page can send LMDB's reads anywhere; a SIGSEGV or SIGBUS
/// inside a call then means a damaged store, not a bug of ours.
thread_local const char* reading_store = nullptr;

struct sigaction previous_segv;
struct sigaction previous_bus;

void write_stderr(const char* s) {
  auto n = std::strlen(s);
  while (n > 0) {
    auto w = ::write(2, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

extern "C" void on_fault(int sig, siginfo_t* info, void* ctx) {
  if (const char* dir = reading_store) {
    // Only async-signal-safe calls here.
    write_stderr("weir: store ");
    write_stderr(dir);
    write_stderr(" is damaged: a damaged page points outside the file\n");
    ::_exit(4);
  }
  // Not ours: hand it to the handler that was there before, or let the default action happen
  // when the instruction faults again.
  const struct sigaction& prev = sig == SIGSEGV ? previous_segv : previous_bus;
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, ctx);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
    return;
  }
  ::signal(sig, SIG_DFL);
}

/// Installs on_fault once per process, keeping the handlers that were there.
void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &previous_segv);
    ::sigaction(SIGBUS, &sa, &previous_bus);
  });
}

/// Reads the last byte of a key or value LMDB handed out, inside the fault guard: its first byte
/// is on a page in the file, so when its last byte is too, the whole of it is, and later reads
/// of it (copies, compares, hashes) cannot fault. A damaged page can give a size that reaches
/// past the file's end.
void touch(const MDB_val& v) {
  if (v.mv_size > 0) {
    volatile char last = static_cast<const char*>(v.mv_data)[v.mv_size - 1];
    (void)last;
  }
}

/// Marks this thread as inside an LMDB call on the environment in `dir` while it lives.
class in_lmdb {
public:
  explicit in_lmdb(const char* dir)
    : saved_(reading_store) {
    reading_store = dir;
  }
  ~in_lmdb() { reading_store = saved_; }
  in_lmdb(const in_lmdb&) = delete;
  in_lmdb& operator=(const in_lmdb&) = delete;

private:
  const char* saved_;
};

} // namespace

// -- txn ------------------------------------------------------------------------------------------

/// What messages about an environment name: its directory, and its tables by handle (filled
/// while the tables are opened, in the setup txn, before any other txn runs).
struct txn::names {
  std::string dir;
  std::vector<std::string> tables;
  std::vector<uint64_t> seeds; ///< lmdb::table_seed of each table's name
};

txn::txn(MDB_txn* t, bool read_only, std::shared_lock<std::shared_mutex> lock, names* n)
  : txn_(t)
  , names_(n)
  , read_only_(read_only)
  , lock_(std::move(lock)) {}

txn::txn(txn&& other) noexcept
  : txn_(other.txn_)
  , names_(other.names_)
  , read_only_(other.read_only_)
  , map_full_(other.map_full_)
  , lock_(std::move(other.lock_)) {
  other.txn_ = nullptr;
}

txn& txn::operator=(txn&& other) noexcept {
  if (this != &other) {
    abort();
    txn_ = other.txn_;
    names_ = other.names_;
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
  if (names_ == nullptr)
    return make_mdb_error(rc, what);
  if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND)
    return make_mdb_error(rc, "store " + names_->dir +
                                " is damaged (run weir check): " + std::string{what});
  return make_mdb_error(rc, std::string{what} + " (" + names_->dir + ")");
}

caf::expected<dbi> txn::open_dbi(const char* name, bool create) {
  MDB_dbi d = 0;
  in_lmdb guard{store_dir()};
  int rc = mdb_dbi_open(txn_, name, create ? MDB_CREATE : 0, &d);
  if (rc != MDB_SUCCESS)
    return check(rc, std::string("opening table ") + (name ? name : "(main)"));
  if (names_ != nullptr && name != nullptr) {
    if (names_->tables.size() <= d) {
      names_->tables.resize(d + 1);
      names_->seeds.resize(d + 1);
    }
    names_->tables[d] = name;
    names_->seeds[d] = lmdb::table_seed(name);
  }
  return d;
}

uint64_t txn::table_seed(dbi d) const {
  if (names_ != nullptr && d < names_->seeds.size())
    return names_->seeds[d];
  return 0;
}

const char* txn::store_dir() const {
  return names_ != nullptr ? names_->dir.c_str() : "?";
}

std::string txn::table_name(dbi d) const {
  if (names_ != nullptr && d < names_->tables.size() && !names_->tables[d].empty())
    return names_->tables[d];
  return "#" + std::to_string(d);
}

caf::error txn::corrupt(dbi d, std::string_view key, std::string_view what) const {
  std::string text = "store " + (names_ ? names_->dir : std::string{"?"}) + ", table " +
                     table_name(d) + ", key " + show_key(key) + ": " + std::string{what} +
                     "; the store is damaged";
  return make_error(errc::store_corrupt, std::move(text));
}

caf::expected<std::string_view> txn::unsealed(dbi d, std::string_view key, std::string_view value) {
  std::optional<std::string_view> body;
  {
    // A value LMDB found on a damaged page may reach outside the file: reading it to hash it
    // faults like a read inside LMDB.
    in_lmdb guard{store_dir()};
    body = unseal(table_seed(d), key, value);
  }
  if (!body)
    return corrupt(d, key, "checksum mismatch (the value was damaged or does not belong there)");
  return *body;
}

caf::error txn::put_sealed(dbi d, std::string_view key, std::string_view body, unsigned flags) {
  return put_sealed_with(
    d, key, body.size(),
    [&](char* p) {
      if (!body.empty())
        std::memcpy(p, body.data(), body.size());
    },
    flags);
}

caf::expected<std::optional<std::string_view>> txn::get_sealed(dbi d, std::string_view key) {
  auto v = get(d, key);
  if (!v)
    return std::move(v.error());
  if (!*v)
    return std::optional<std::string_view>{};
  auto body = unsealed(d, key, **v);
  if (!body)
    return std::move(body.error());
  return std::optional<std::string_view>{*body};
}

caf::expected<std::optional<std::string_view>> txn::get(dbi d, std::string_view key) {
  MDB_val k = to_val(key);
  MDB_val v{0, nullptr};
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_get(txn_, d, &k, &v);
    if (rc == MDB_SUCCESS)
      touch(v);
  }
  if (rc == MDB_NOTFOUND)
    return std::optional<std::string_view>{};
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_get");
  return std::optional<std::string_view>{to_view(v)};
}

caf::error txn::put(dbi d, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_put(txn_, d, &k, &v, flags);
  }
  return check(rc, "mdb_put");
}

caf::expected<char*> txn::reserve(dbi d, std::string_view key, size_t size, unsigned flags) {
  MDB_val k = to_val(key);
  MDB_val v{size, nullptr};
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_put(txn_, d, &k, &v, MDB_RESERVE | flags);
  }
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_put (reserve)");
  return static_cast<char*>(v.mv_data);
}

caf::expected<bool> txn::del(dbi d, std::string_view key) {
  MDB_val k = to_val(key);
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_del(txn_, d, &k, nullptr);
  }
  if (rc == MDB_NOTFOUND)
    return false;
  if (rc != MDB_SUCCESS)
    return check(rc, "mdb_del");
  return true;
}

caf::expected<uint64_t> txn::count(dbi d) {
  MDB_stat st;
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_stat(txn_, d, &st);
  }
  if (auto err = check(rc, "mdb_stat"))
    return err;
  return static_cast<uint64_t>(st.ms_entries);
}

caf::error txn::commit() {
  if (txn_ == nullptr)
    return make_error(errc::internal, "commit of a finished LMDB transaction");
  // mdb_txn_commit frees the txn whether it succeeds or not.
  auto t = txn_;
  txn_ = nullptr;
  int rc = 0;
  {
    in_lmdb guard{store_dir()};
    rc = mdb_txn_commit(t);
  }
  auto err = check(rc, "mdb_txn_commit");
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
  c.dbi_ = d;
  c.cur_ = raw;
  return c;
}

cursor::cursor(cursor&& other) noexcept
  : txn_(other.txn_)
  , dbi_(other.dbi_)
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
    dbi_ = other.dbi_;
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
  int rc = 0;
  {
    in_lmdb guard{txn_->store_dir()};
    rc = mdb_cursor_get(cur_, &key_, &value_, op);
    if (rc == MDB_SUCCESS) {
      touch(key_);
      touch(value_);
    }
  }
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

caf::expected<std::string_view> cursor::sealed_value() const {
  return txn_->unsealed(dbi_, key(), value());
}

caf::expected<bool> cursor::find(std::string_view key) {
  key_ = to_val(key);
  return move(MDB_SET_KEY, "cursor find");
}

caf::error cursor::put_sealed(std::string_view key, std::string_view body, unsigned flags) {
  MDB_val k = to_val(key);
  MDB_val v{body.size() + seal_size, nullptr};
  int rc = 0;
  {
    in_lmdb guard{txn_->store_dir()};
    rc = mdb_cursor_put(cur_, &k, &v, MDB_RESERVE | flags);
  }
  if (rc != MDB_SUCCESS)
    return txn_->check(rc, "mdb_cursor_put");
  auto* p = static_cast<char*>(v.mv_data);
  if (!body.empty())
    std::memcpy(p, body.data(), body.size());
  seal_at(txn_->table_seed(dbi_), key, p, body.size());
  return caf::none;
}

caf::error cursor::del() {
  int rc = 0;
  {
    in_lmdb guard{txn_->store_dir()};
    rc = mdb_cursor_del(cur_, 0);
  }
  return txn_->check(rc, "mdb_cursor_del");
}

// -- env ------------------------------------------------------------------------------------------

struct env::state {
  MDB_env* handle = nullptr;
  std::string dir;
  txn::names names;
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

namespace {

/// LMDB calls this when it meets a page that cannot be (a damaged store), then calls abort().
/// The txn that met it cannot be finished, so the process ends here with exit code 4 (store
/// unusable) and a message naming the store instead of SIGABRT; the environment on disk is as
/// its last commit left it.
extern "C" void on_assert(MDB_env* e, const char* msg) {
  const char* path = nullptr;
  if (mdb_env_get_path(e, &path) != MDB_SUCCESS || path == nullptr)
    path = "?";
  std::fprintf(stderr, "weir: store %s is damaged: LMDB met an impossible page (%s)\n", path, msg);
  std::fflush(stderr);
  ::_exit(4);
}

} // namespace

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
  st->names.dir = dir;
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
  if (auto err = check_data_file(dir))
    return err;
  // Set only where LMDB is built with assertions (Debian's is); elsewhere there is none to catch.
  mdb_env_set_assert(st->handle, on_assert);
  install_fault_handler();
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
    int rc = 0;
    {
      in_lmdb guard{state_->dir.c_str()};
      rc = mdb_txn_begin(state_->handle, nullptr, read_only ? MDB_RDONLY : 0, &raw);
    }
    if (rc == MDB_SUCCESS) {
      if (map_size_seen != nullptr)
        *map_size_seen = state_->map_size;
      return txn{raw, read_only, std::move(lock), &state_->names};
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

// -- identity -------------------------------------------------------------------------------------

caf::expected<std::optional<std::string>> read_identity(env& e, dbi meta) {
  std::optional<std::string> out;
  auto err = e.with_read([&](txn& t) -> caf::error {
    auto v = t.get_sealed(meta, "store_id");
    if (!v)
      return std::move(v.error());
    if (*v)
      out = std::string{**v};
    return caf::none;
  });
  if (err)
    return err;
  return out;
}

caf::error write_identity(env& e, dbi meta, std::string_view id) {
  return e.with_write([&](txn& t) { return t.put_sealed(meta, "store_id", id); });
}

} // namespace weir::lmdb
