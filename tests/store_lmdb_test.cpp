#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actors/core/codec.hpp"
#include "store/lmdb.hpp"
#include "tests/test_support.hpp"

using namespace weir;
namespace fs = std::filesystem;

namespace {

/// A unique directory under the system temp dir, removed with everything in it at the end.
using weir::test::temp_dir;

using weir::test::has_code;

std::string be64s(int64_t v) {
  char b[8];
  codec::put_be64_signed(b, v);
  return {b, 8};
}

std::string be64(uint64_t v) {
  char b[8];
  codec::put_be64(b, v);
  return {b, 8};
}

std::string be32(uint32_t v) {
  char b[4];
  codec::put_be32(b, v);
  return {b, 4};
}

/// Bytewise comparison as LMDB does it (unsigned bytes).
int bytes_cmp(const std::string& a, const std::string& b) {
  return std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
}

} // namespace

TEST_CASE("big-endian keys sort like the numbers they encode", "[lmdb]") {
  std::mt19937_64 rng{42};
  std::vector<int64_t> special = {std::numeric_limits<int64_t>::min(),
                                  std::numeric_limits<int64_t>::min() + 1,
                                  -1'000'000'000'000,
                                  -256,
                                  -255,
                                  -1,
                                  0,
                                  1,
                                  255,
                                  256,
                                  1'000'000'000'000,
                                  std::numeric_limits<int64_t>::max() - 1,
                                  std::numeric_limits<int64_t>::max()};
  std::vector<int64_t> xs = special;
  for (int i = 0; i < 2000; ++i)
    xs.push_back(static_cast<int64_t>(rng()) >> (rng() % 64));
  for (size_t i = 0; i < xs.size(); ++i) {
    CHECK(codec::get_be64_signed(be64s(xs[i]).data()) == xs[i]);
    for (size_t j : {i, (i * 7 + 3) % xs.size(), (i * 13 + 1) % xs.size()}) {
      int c = bytes_cmp(be64s(xs[i]), be64s(xs[j]));
      INFO(xs[i] << " vs " << xs[j]);
      CHECK((c < 0) == (xs[i] < xs[j]));
      CHECK((c == 0) == (xs[i] == xs[j]));
    }
  }
  for (int i = 0; i < 2000; ++i) {
    uint64_t a = rng() >> (rng() % 64);
    uint64_t b = rng() >> (rng() % 64);
    CHECK(codec::get_be64(be64(a).data()) == a);
    CHECK((bytes_cmp(be64(a), be64(b)) < 0) == (a < b));
    auto a32 = static_cast<uint32_t>(a);
    auto b32 = static_cast<uint32_t>(b);
    CHECK(codec::get_be32(be32(a32).data()) == a32);
    CHECK((bytes_cmp(be32(a32), be32(b32)) < 0) == (a32 < b32));
    auto a16 = static_cast<uint16_t>(a);
    char buf[2];
    codec::put_be16(buf, a16);
    CHECK(codec::get_be16(buf) == a16);
  }
  // Spot checks of the exact bytes, computed by hand.
  CHECK(be64s(0) == std::string("\x80\0\0\0\0\0\0\0", 8));
  CHECK(be64s(-1) == std::string("\x7f\xff\xff\xff\xff\xff\xff\xff", 8));
  CHECK(be32(0x01020304) == "\x01\x02\x03\x04");
}

TEST_CASE("LMDB cursor order equals numeric order, negative timestamps included", "[lmdb]") {
  temp_dir dir;
  auto e = lmdb::env::open(dir.str(), 4, size_t{1} << 20);
  REQUIRE(e);
  lmdb::dbi d = 0;
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    auto x = t.open_dbi("t", true);
    if (!x)
      return x.error();
    d = *x;
    return caf::none;
  }));
  std::mt19937_64 rng{7};
  std::vector<int64_t> xs = {std::numeric_limits<int64_t>::min(), -1, 0, 1,
                             std::numeric_limits<int64_t>::max()};
  for (int i = 0; i < 500; ++i)
    xs.push_back(static_cast<int64_t>(rng()) >> (rng() % 64));
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    for (auto x : xs)
      if (auto err = t.put(d, be64s(x), std::to_string(x)))
        return err;
    return caf::none;
  }));
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  std::vector<int64_t> seen;
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    auto c = lmdb::cursor::open(t, d);
    REQUIRE(c);
    for (auto more = c->first(); more && *more; more = c->next()) {
      REQUIRE(c->key().size() == 8);
      auto x = codec::get_be64_signed(c->key().data());
      CHECK(c->value() == std::to_string(x));
      seen.push_back(x);
    }
    return caf::none;
  }));
  CHECK(seen == xs);
}

TEST_CASE("txn: commit, abort on error, get/put/del/reserve/count, cursor seek", "[lmdb]") {
  temp_dir dir;
  auto e = lmdb::env::open(dir.str(), 4, size_t{1} << 20);
  REQUIRE(e);
  CHECK(e->dir() == dir.str());
  lmdb::dbi d = 0;
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    auto x = t.open_dbi("t", true);
    REQUIRE(x);
    d = *x;
    return caf::none;
  }));
  // An error from fn aborts the txn: nothing of it is visible afterwards.
  auto err = e->with_write([&](lmdb::txn& t) -> caf::error {
    REQUIRE(!t.put(d, "a", "1"));
    return make_error(errc::internal, "changed my mind");
  });
  CHECK(has_code(err, errc::internal));
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    auto v = t.get(d, "a");
    REQUIRE(v);
    CHECK(!*v);
    auto n = t.count(d);
    REQUIRE(n);
    CHECK(*n == 0);
    return caf::none;
  }));
  // A txn dropped without commit aborts too.
  {
    auto t = e->begin_read();
    REQUIRE(t);
  }
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    REQUIRE(!t.put(d, "a", "1"));
    REQUIRE(!t.put(d, "c", "3"));
    auto p = t.reserve(d, "b", 5);
    REQUIRE(p);
    std::memcpy(*p, "hello", 5);
    auto gone = t.del(d, "zz");
    REQUIRE(gone);
    CHECK(!*gone);
    return caf::none;
  }));
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    auto v = t.get(d, "b");
    REQUIRE(v);
    REQUIRE(*v);
    CHECK(**v == "hello");
    auto c = lmdb::cursor::open(t, d);
    REQUIRE(c);
    auto found = c->seek("bb");
    REQUIRE(found);
    REQUIRE(*found);
    CHECK(c->key() == "c");
    found = c->seek("d");
    REQUIRE(found);
    CHECK(!*found);
    found = c->last();
    REQUIRE(found);
    CHECK(c->key() == "c");
    found = c->prev();
    REQUIRE(found);
    CHECK(c->key() == "b");
    return caf::none;
  }));
  // Writing in a read txn fails with store_io, not a crash.
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    CHECK(has_code(t.put(d, "x", "y"), errc::store_io));
    return caf::none;
  }));
  // Deleting under a cursor, then next(), visits every remaining entry exactly once.
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    for (int i = 0; i < 100; ++i)
      REQUIRE(!t.put(d, be32(static_cast<uint32_t>(i)), "v"));
    auto c = lmdb::cursor::open(t, d);
    REQUIRE(c);
    for (auto more = c->seek(be32(0)); more && *more;) {
      if (c->key().size() == 4 && codec::get_be32(c->key().data()) % 3 == 0)
        REQUIRE(!c->del());
      more = c->next();
    }
    return caf::none;
  }));
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    for (uint32_t i = 0; i < 100; ++i) {
      auto v = t.get(d, be32(i));
      REQUIRE(v);
      CHECK(v->has_value() == (i % 3 != 0));
    }
    return caf::none;
  }));
}

TEST_CASE("MDB error codes map to weir errors with LMDB's text", "[lmdb]") {
  auto full = lmdb::make_mdb_error(MDB_MAP_FULL, "mdb_put");
  CHECK(has_code(full, errc::store_io));
  CHECK(render(full).find("mdb_put") != std::string::npos);
  CHECK(render(full).find(mdb_strerror(MDB_MAP_FULL)) != std::string::npos);
  CHECK(has_code(lmdb::make_mdb_error(MDB_CORRUPTED, "x"), errc::store_corrupt));
  CHECK(has_code(lmdb::make_mdb_error(MDB_INVALID, "x"), errc::store_format));
  CHECK(has_code(lmdb::make_mdb_error(ENOSPC, "x"), errc::store_io));
  // Opening a directory that cannot be one fails cleanly.
  temp_dir dir;
  auto file = dir.path / "plain_file";
  { std::ofstream{file} << "not a directory"; }
  auto e = lmdb::env::open(file.string() + "/sub", 4, size_t{1} << 20);
  CHECK(!e);
}

TEST_CASE("with_write grows a tiny map and reruns the whole txn", "[lmdb]") {
  temp_dir dir;
  const size_t initial = size_t{64} << 10;
  auto e = lmdb::env::open(dir.str(), 4, initial, false);
  REQUIRE(e);
  CHECK(e->map_size() == initial);
  lmdb::dbi d = 0;
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    auto x = t.open_dbi("t", true);
    REQUIRE(x);
    d = *x;
    return caf::none;
  }));
  std::mt19937_64 rng{1};
  std::map<std::string, std::string> model;
  int runs = 0;
  // One txn of 3 MiB: has to be rerun after several doublings.
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    ++runs;
    for (uint32_t i = 0; i < 768; ++i) {
      std::string v(4096, static_cast<char>('a' + i % 26));
      if (auto err = t.put(d, be32(i), v))
        return err;
    }
    return caf::none;
  }));
  for (uint32_t i = 0; i < 768; ++i)
    model[be32(i)] = std::string(4096, static_cast<char>('a' + i % 26));
  CHECK(runs > 1);
  CHECK(e->map_size() > initial);
  // Many small txns of random sizes add up to several MiB more.
  std::vector<size_t> sizes(40 * 20);
  for (auto& s : sizes)
    s = rng() % 20000;
  for (int k = 0; k < 40; ++k) {
    REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
      for (int j = 0; j < 20; ++j) {
        auto key = be32(static_cast<uint32_t>(1000 + k * 20 + j));
        std::string v(sizes[k * 20 + j], static_cast<char>('A' + j));
        if (auto err = t.put(d, key, v))
          return err;
      }
      return caf::none;
    }));
    for (int j = 0; j < 20; ++j)
      model[be32(static_cast<uint32_t>(1000 + k * 20 + j))] =
        std::string(sizes[k * 20 + j], static_cast<char>('A' + j));
  }
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    auto n = t.count(d);
    REQUIRE(n);
    CHECK(*n == model.size());
    for (const auto& [k, v] : model) {
      auto got = t.get(d, k);
      REQUIRE(got);
      REQUIRE(*got);
      CHECK(**got == v);
    }
    return caf::none;
  }));
  auto used = e->used_size();
  REQUIRE(used);
  CHECK(*used > (size_t{3} << 20));
  CHECK(*used <= e->map_size());
}

TEST_CASE("map growth waits for a read txn open in another thread", "[lmdb]") {
  temp_dir dir;
  auto e = lmdb::env::open(dir.str(), 4, size_t{64} << 10, false);
  REQUIRE(e);
  lmdb::dbi d = 0;
  REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
    auto x = t.open_dbi("t", true);
    REQUIRE(x);
    d = *x;
    return t.put(d, "seed", "1");
  }));
  std::atomic<bool> reading{false};
  std::atomic<bool> writer_done_early{false};
  std::atomic<uint64_t> count_in_reader{0};
  std::atomic<bool> reader_ok{false};
  std::atomic<bool> writer_finished{false};
  std::thread reader{[&] {
    auto t = e->begin_read();
    if (!t)
      return;
    reading = true;
    // Hold the snapshot while the writer fills the map; it must wait for us to grow it.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    writer_done_early = writer_finished.load();
    auto v = t->get(d, "seed");
    auto n = t->count(d);
    reader_ok = v && *v && **v == "1" && n;
    if (n)
      count_in_reader = *n;
  }};
  while (!reading)
    std::this_thread::yield();
  auto err = e->with_write([&](lmdb::txn& t) -> caf::error {
    for (uint32_t i = 0; i < 512; ++i)
      if (auto perr = t.put(d, be32(i), std::string(4000, 'x')))
        return perr;
    return caf::none;
  });
  writer_finished = true;
  reader.join();
  CHECK(!err);
  CHECK(reader_ok);
  CHECK(count_in_reader == 1); // the reader saw its own snapshot
  CHECK(!writer_done_early);   // growth could not happen while the reader held its txn
  REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
    auto n = t.count(d);
    REQUIRE(n);
    CHECK(*n == 513);
    return caf::none;
  }));
}

TEST_CASE("format version: recorded when new, checked when known, refused otherwise", "[lmdb]") {
  temp_dir dir;
  auto setup = [&](lmdb::env& e, uint32_t version, std::string_view kind) {
    return e.with_write([&](lmdb::txn& t) -> caf::error {
      auto meta = t.open_dbi("meta", true);
      if (!meta)
        return meta.error();
      return lmdb::check_format(t, *meta, e.dir(), kind, version);
    });
  };
  auto path = dir.str() + "/x";
  {
    auto e = lmdb::env::open(path, 4, size_t{1} << 20);
    REQUIRE(e);
    CHECK(!setup(*e, 3, "thing"));
    CHECK(!setup(*e, 3, "thing"));
    auto err = setup(*e, 4, "thing");
    REQUIRE(has_code(err, errc::store_format));
    auto text = render(err);
    CHECK(text.find(path) != std::string::npos);
    CHECK(text.find("3") != std::string::npos);
    CHECK(text.find("4") != std::string::npos);
    CHECK(has_code(setup(*e, 3, "other"), errc::store_format));
  }
  // Reopened: still version 3.
  {
    auto e = lmdb::env::open(path, 4, size_t{1} << 20);
    REQUIRE(e);
    CHECK(!setup(*e, 3, "thing"));
    CHECK(has_code(setup(*e, 2, "thing"), errc::store_format));
  }
  // An environment with data but no version is not taken for a new one.
  auto other = dir.str() + "/y";
  {
    auto e = lmdb::env::open(other, 4, size_t{1} << 20);
    REQUIRE(e);
    REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
      auto x = t.open_dbi("foreign", true);
      REQUIRE(x);
      return t.put(*x, "k", "v");
    }));
    CHECK(has_code(setup(*e, 1, "thing"), errc::store_format));
  }
  // A version value of the wrong size is corrupt, not misread.
  auto bad = dir.str() + "/z";
  {
    auto e = lmdb::env::open(bad, 4, size_t{1} << 20);
    REQUIRE(e);
    REQUIRE(!e->with_write([&](lmdb::txn& t) -> caf::error {
      auto x = t.open_dbi("meta", true);
      REQUIRE(x);
      return t.put(*x, "format_version", "12");
    }));
    CHECK(has_code(setup(*e, 1, "thing"), errc::store_corrupt));
  }
}

TEST_CASE("codec reader refuses truncated values", "[lmdb]") {
  std::string buf;
  codec::writer w{buf};
  w.u8(0x7F);
  w.u16(0xBEEF);
  w.u32(0xDEADBEEF);
  w.u64(0x0123456789ABCDEFull);
  w.i64(-5);
  w.f64(2.5);
  w.varint(300);
  w.bytes("varint-prefixed");
  w.str("hello");
  for (size_t cut = 0; cut <= buf.size(); ++cut) {
    codec::reader r{std::string_view{buf}.substr(0, cut)};
    auto a8 = r.u8();
    auto a = r.u16();
    auto b = r.u32();
    auto c = r.u64();
    auto d = r.i64();
    auto f = r.f64();
    auto v = r.varint();
    std::string bytes{r.bytes()};
    std::string s{r.str()};
    CHECK(r.ok() == (cut == buf.size()));
    CHECK(r.done() == (cut == buf.size()));
    if (r.ok()) {
      CHECK(a8 == 0x7F);
      CHECK(a == 0xBEEF);
      CHECK(b == 0xDEADBEEF);
      CHECK(c == 0x0123456789ABCDEFull);
      CHECK(d == -5);
      CHECK(f == 2.5);
      CHECK(v == 300);
      CHECK(bytes == "varint-prefixed");
      CHECK(s == "hello");
    } else {
      CHECK(r.remaining() == 0);
    }
  }
  // A length prefix larger than what follows.
  std::string lying;
  codec::writer{lying}.u32(1000);
  lying += "abc";
  codec::reader r{lying};
  CHECK(r.str().empty());
  CHECK(!r.ok());
  CHECK(r.u8() == 0); // failed reads stay failed
}

TEST_CASE("codec numbers: little-endian values, big-endian keys, byte by byte", "[lmdb]") {
  char b[8];
  codec::put_le64(b, 0x0102030405060708ull);
  CHECK(std::string(b, 8) == std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8));
  codec::put_be64(b, 0x0102030405060708ull);
  CHECK(std::string(b, 8) == std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  codec::put_be16(b, 0x0102);
  CHECK(std::string(b, 2) == "\x01\x02");
  codec::put_le32(b, 0x01020304);
  CHECK(std::string(b, 4) == "\x04\x03\x02\x01");
  CHECK(codec::get_le32(b) == 0x01020304);
  std::string out;
  codec::writer w{out};
  w.u16(0x0102);
  w.varint(300); // 0xAC 0x02
  CHECK(out == "\x02\x01\xAC\x02");
}
