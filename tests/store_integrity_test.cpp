// Damage is refused, never half-read (store/lmdb.hpp, store/store.hpp, store/check.hpp): the
// data file against its meta pages, sealed values, one identity for lake and warehouse, and the
// walk of `weir check`.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "actors/core/codec.hpp"
#include "store/check.hpp"
#include "store/lake.hpp"
#include "store/lmdb.hpp"
#include "store/store.hpp"
#include "store/warehouse.hpp"
#include "tests/raw_lmdb.hpp"
#include "tests/test_support.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

using namespace weir;
namespace fs = std::filesystem;
using weir::test::has_code;
using weir::test::raw_put;
using weir::test::temp_dir;

namespace {

/// The bytes a sealed value of `table` holds, computed here from XXH3 directly.
std::string sealed(std::string_view table, std::string_view key, std::string_view body) {
  uint64_t seed = XXH3_64bits(table.data(), table.size());
  uint64_t h = XXH3_64bits_withSeed(body.data(), body.size(),
                                    XXH3_64bits_withSeed(key.data(), key.size(), seed));
  std::string out{body};
  char b[8];
  codec::put_le64(b, h);
  return out + std::string{b, 8};
}

caf::error write_some(lmdb::env& e, lmdb::dbi d) {
  return e.with_write([&](lmdb::txn& t) -> caf::error {
    for (int i = 0; i < 6000; ++i)
      if (auto err = t.put_sealed(d, "key" + std::to_string(10000 + i), std::string(100, 'v')))
        return err;
    return caf::none;
  });
}

caf::expected<lmdb::dbi> open_table(lmdb::env& e) {
  lmdb::dbi d = 0;
  auto err = e.with_write([&](lmdb::txn& t) -> caf::error {
    auto x = t.open_dbi("things", true);
    if (!x)
      return std::move(x.error());
    d = *x;
    return caf::none;
  });
  if (err)
    return err;
  return d;
}

std::string messages(const check_report& r) {
  std::string out;
  for (auto& p : r.problems)
    out += p + "\n";
  return out;
}

caf::expected<check_report> check_quietly(const std::string& dir) {
  return check_store(dir, [](const std::string&) {});
}

} // namespace

TEST_CASE("a sealed value is XXH3 of its body seeded with XXH3 of its key") {
  temp_dir dir;
  auto e = lmdb::env::open(dir.str(), 4, size_t{1} << 20);
  REQUIRE(e);
  auto d = open_table(*e);
  REQUIRE(d);
  REQUIRE(!e->with_write([&](lmdb::txn& t) { return t.put_sealed(*d, "a", "hello"); }));
  auto raw = [&](std::string_view k) {
    std::string out;
    REQUIRE(!e->with_read([&](lmdb::txn& t) -> caf::error {
      auto v = t.get(*d, k);
      REQUIRE(v);
      REQUIRE(*v);
      out = std::string{**v};
      return caf::none;
    }));
    return out;
  };
  CHECK(raw("a") == sealed("things", "a", "hello"));
  const auto seed = lmdb::table_seed("things");
  REQUIRE(lmdb::unseal(seed, "a", raw("a")));
  CHECK(*lmdb::unseal(seed, "a", raw("a")) == "hello");
  // A flipped byte, the same bytes under another key or in another table (a moved value), are
  // refused.
  std::string flipped = raw("a");
  flipped[1] ^= 0x04;
  CHECK_FALSE(lmdb::unseal(seed, "a", flipped));
  CHECK_FALSE(lmdb::unseal(seed, "b", raw("a")));
  CHECK_FALSE(lmdb::unseal(lmdb::table_seed("other"), "a", raw("a")));
  CHECK_FALSE(lmdb::unseal(seed, "a", "short"));
  e->with_write([&](lmdb::txn& t) { return t.put(*d, "b", raw("a")); });
  auto err = e->with_read([&](lmdb::txn& t) -> caf::error {
    auto v = t.get_sealed(*d, "b");
    return v ? caf::none : std::move(v.error());
  });
  REQUIRE(has_code(err, errc::store_corrupt));
  auto text = render(err);
  CHECK_THAT(text, Catch::Contains(dir.str()));
  CHECK_THAT(text, Catch::Contains("table things"));
  CHECK_THAT(text, Catch::Contains("key 'b'"));
  CHECK(lmdb::show_key(std::string{"\x00\x01\xff", 3}) == "0x0001ff");
}

TEST_CASE("a data file shorter than its meta pages say is refused before it is mapped") {
  temp_dir dir;
  {
    auto e = lmdb::env::open(dir.str(), 4, size_t{8} << 20);
    REQUIRE(e);
    auto d = open_table(*e);
    REQUIRE(d);
    REQUIRE(!write_some(*e, *d));
  }
  const auto file = dir.path / "data.mdb";
  const auto size = fs::file_size(file);
  REQUIRE(size > 16 * 4096);
  CHECK(!lmdb::check_data_file(dir.str()));
  // A commit may leave a few freed pages at the end unwritten, so a cut is judged by the
  // roots and by more than 64 missing pages.
  REQUIRE(size > 80 * 4096);
  for (uintmax_t cut : {uintmax_t{100}, uintmax_t{4096}, uintmax_t{8192}, size - 70 * 4096}) {
    INFO(cut);
    fs::resize_file(file, cut);
    auto err = lmdb::check_data_file(dir.str());
    CHECK(has_code(err, errc::store_corrupt));
    CHECK_THAT(render(err), Catch::Contains("cut short"));
    auto e = lmdb::env::open(dir.str(), 4, size_t{8} << 20);
    CHECK_FALSE(e);
  }
  // Not an LMDB file at all: a format error.
  weir::test::write_file(file, std::string(3 * 4096, 'x'));
  CHECK(has_code(lmdb::check_data_file(dir.str()), errc::store_format));
}

TEST_CASE("lake and warehouse share one identity; a mismatch or a lost half is refused") {
  temp_dir a;
  temp_dir b;
  std::string id;
  {
    auto s = open_store(a.str());
    REQUIRE(s);
    auto li = s->lk.identity();
    auto wi = s->wh.identity();
    REQUIRE((li && *li && wi && *wi));
    CHECK(**li == **wi);
    CHECK((*li)->size() == 16);
    id = **li;
    auto src = s->lk.source_id("p/in:/x");
    REQUIRE(src);
    REQUIRE(!s->lk.append({{*src, 0, "line\n"}}));
    REQUIRE(s->wh.register_pipeline("p", {"count"}, "tumbling 60s"));
  }
  {
    auto s = open_store(a.str()); // reopened: the same identity
    REQUIRE(s);
    CHECK(**s->lk.identity() == id);
  }
  REQUIRE(open_store(b.str()));
  SECTION("two stores") {
    fs::remove_all(a.path / "lake");
    fs::copy(b.path / "lake", a.path / "lake");
    auto s = open_store(a.str());
    REQUIRE_FALSE(s);
    CHECK(has_code(s.error(), errc::store_corrupt));
    CHECK_THAT(render(s.error()), Catch::Contains("belongs to store"));
  }
  SECTION("a lost warehouse") {
    fs::remove_all(a.path / "warehouse");
    auto s = open_store(a.str());
    REQUIRE_FALSE(s);
    CHECK(has_code(s.error(), errc::store_corrupt));
    CHECK_THAT(render(s.error()), Catch::Contains("warehouse"));
    CHECK_THAT(render(s.error()), Catch::Contains(show_identity(id)));
  }
  SECTION("a lost lake") {
    fs::remove_all(a.path / "lake");
    auto s = open_store(a.str());
    REQUIRE_FALSE(s);
    CHECK_THAT(render(s.error()), Catch::Contains("source ids"));
  }
  SECTION("a first open that stopped between the two writes is completed") {
    temp_dir c;
    {
      auto w = warehouse::open(c.str());
      REQUIRE(w);
      REQUIRE(!w->record_identity(id));
    }
    auto s = open_store(c.str());
    REQUIRE(s);
    CHECK(**s->lk.identity() == id);
  }
}

TEST_CASE("weir check walks a clean store and names each damage") {
  temp_dir dir;
  uint32_t src = 0;
  {
    auto s = open_store(dir.str());
    REQUIRE(s);
    auto id = s->lk.source_id("p/in:/x");
    REQUIRE(id);
    src = *id;
    REQUIRE(!s->lk.append({{src, 0, "a\n"}, {src, 2, "b\n"}}));
    REQUIRE(s->wh.register_pipeline("p", {"count", "sum_x"}, "tumbling 60s"));
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = 1;
    c.offsets = {{src, 4}};
    c.results.push_back({"k1", 0, 60, 1, {2, 3}});
    c.results.push_back({"k2", 0, 60, 1, {1, 5}});
    c.states = {{0, "state"}};
    c.dedupe_added = {{7, 10}};
    c.dead_letters.push_back({src, 0, "raw", "bad"});
    REQUIRE(s->wh.commit(c));
  }
  auto clean = check_quietly(dir.str());
  REQUIRE(clean);
  INFO(messages(*clean));
  CHECK(clean->clean());
  // lake: 3 meta + 1 + 1 + 2 chunks; warehouse: 3 meta + 1 pipeline + counters (next id,
  // windows, dead-letter seq) + 1 epoch + 1 offset + 2 results + 1 state + 1 dedupe + 1 letter.
  CHECK(clean->entries == 7 + 3 + 1 + 3 + 1 + 1 + 2 + 1 + 1 + 1);

  SECTION("a damaged result") {
    std::string key(2, '\0');
    codec::put_be16(key.data(), 1);
    key += std::string(16, '\x80') + "k9";
    raw_put(dir.str() + "/warehouse", "results", key, "garbage of some length");
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    REQUIRE(r->problems.size() == 1);
    CHECK_THAT(r->problems[0], Catch::Contains("table results"));
    CHECK_THAT(r->problems[0], Catch::Contains("checksum mismatch"));
  }
  SECTION("an offset of a source the lake does not know, sealed as the store would") {
    std::string key(6, '\0');
    codec::put_be16(key.data(), 1);
    codec::put_be32(key.data() + 2, 42);
    raw_put(dir.str() + "/warehouse", "offsets", key, sealed("offsets", key, std::string(8, '\0')));
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    REQUIRE(r->problems.size() == 1);
    CHECK_THAT(r->problems[0], Catch::Contains("source id 42"));
  }
  SECTION("a result row of a pipeline that does not exist") {
    std::string key(2, '\0');
    codec::put_be16(key.data(), 9);
    key += std::string(16, '\x80') + "k";
    std::string v;
    codec::writer w{v};
    w.u32(1);
    w.u32(0);
    raw_put(dir.str() + "/warehouse", "results", key, sealed("results", key, v));
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    REQUIRE(r->problems.size() == 1);
    CHECK_THAT(r->problems[0], Catch::Contains("unknown pipeline id 9"));
  }
  SECTION("no store") {
    auto r = check_quietly((dir.path / "nothing").string());
    REQUIRE_FALSE(r);
    CHECK(has_code(r.error(), errc::bad_input));
  }
}

TEST_CASE("weir check of a warehouse whose lake is on another node") {
  // The coordinating node of a cluster whose ingest runs elsewhere: DIR/warehouse alone, its
  // offsets keyed by source ids of the other node's lake.
  temp_dir dir;
  const std::vector<std::pair<uint32_t, std::string>> sources{{1, "p/a:/x/a.csv"},
                                                              {2, "p/b:/x/b.csv"}};
  auto record = [&](const std::vector<std::pair<uint32_t, std::string>>& which) {
    auto wh = warehouse::open(dir.str());
    REQUIRE(wh);
    REQUIRE(!wh->record_lake_sources(which));
  };
  {
    auto wh = warehouse::open(dir.str());
    REQUIRE(wh);
    bool holds = false;
    REQUIRE(warehouse_identity(*wh, holds));
    REQUIRE(wh->register_pipeline("p", {"count"}, "tumbling 60s"));
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = 1;
    c.offsets = {{1, 10}, {2, 20}};
    REQUIRE(wh->commit(c));
  }
  auto check = [&] {
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    CHECK_FALSE(fs::exists(dir.path / "lake"));
    return *r;
  };
  SECTION("no sources recorded: the lake is lost, and every offset says so") {
    auto r = check();
    INFO(messages(r));
    REQUIRE(r.problems.size() == 2);
    for (const auto& p : r.problems)
      CHECK_THAT(p, Catch::Contains("was the lake lost?"));
  }
  SECTION("every offset's source recorded") {
    record(sources);
    auto r = check();
    INFO(messages(r));
    CHECK(r.clean());
  }
  SECTION("an offset of a source the recorded ones do not name") {
    record({sources[0]});
    auto r = check();
    REQUIRE(r.problems.size() == 1);
    CHECK_THAT(r.problems[0], Catch::Contains("table offsets"));
    CHECK_THAT(r.problems[0], Catch::Contains("source id 2"));
  }
  SECTION("recorded sources that do not decode, sealed as the store would") {
    std::string v;
    codec::writer w{v};
    w.u32(2); // two announced, one there
    w.u32(1);
    w.str("p/a:/x/a.csv");
    raw_put(dir.str() + "/warehouse", "meta", "lake_sources", sealed("meta", "lake_sources", v));
    auto r = check();
    INFO(messages(r));
    REQUIRE(r.problems.size() == 3); // the meta entry, then both offsets it cannot name
    CHECK_THAT(r.problems[0], Catch::Contains("table meta"));
    CHECK_THAT(r.problems[0], Catch::Contains("lake sources"));
    auto wh = warehouse::open(dir.str());
    REQUIRE(wh);
    CHECK(has_code(wh->lake_sources().error(), errc::store_corrupt));
  }
}

TEST_CASE("a whole-table query that finds no rows where rows were committed is refused") {
  temp_dir dir;
  {
    auto w = warehouse::open(dir.str());
    REQUIRE(w);
    REQUIRE(w->register_pipeline("p", {"count"}, "tumbling 10s"));
    epoch_commit c;
    c.pipeline = "p";
    c.epoch = 1;
    for (int i = 0; i < 5; ++i) {
      window_result r;
      r.key = "k" + std::to_string(i);
      r.start = 0;
      r.end = 10;
      r.values = {1.0};
      c.results.push_back(r);
    }
    REQUIRE(w->commit(c));
  }
  weir::test::raw_clear(dir.str() + "/warehouse", "results");
  auto w = warehouse::open(dir.str());
  REQUIRE(w);
  size_t rows = 0;
  auto count = [&](const window_result&) {
    ++rows;
    return true;
  };
  result_query whole;
  whole.pipeline = "p";
  auto err = w->query(whole, count);
  CHECK(has_code(err, errc::store_corrupt));
  CHECK_THAT(render(err), Catch::Contains("5 were committed"));
  CHECK(rows == 0);
  // A query for one key cannot tell a missing row from one never written.
  result_query one = whole;
  one.key = "k1";
  CHECK_FALSE(w->query(one, count));
}

TEST_CASE("weir check verifies the key index and the change feed") {
  temp_dir dir;
  {
    auto s = open_store(dir.str());
    REQUIRE(s);
    REQUIRE(s->wh.register_pipeline("p", {"count", "sum_x"}, "tumbling 60s"));
    REQUIRE(!s->wh.set_indexes("p", {true, int64_t{3600} * 1000000}));
    for (uint64_t e = 1; e <= 2; ++e) {
      epoch_commit c;
      c.pipeline = "p";
      c.epoch = e;
      c.results.push_back({"k1", 0, 60, static_cast<uint32_t>(e), {2, 3}});
      c.results.push_back({"k2", 60, 120, 1, {1, 5}});
      REQUIRE(s->wh.commit(c));
    }
  }
  auto clean = check_quietly(dir.str());
  REQUIRE(clean);
  INFO(messages(*clean));
  CHECK(clean->clean());
  const std::string wh = dir.str() + "/warehouse";
  SECTION("a key index row filed under another key's hash, sealed as the store would") {
    std::string key(26, '\0');
    codec::put_be16(key.data(), 1);
    codec::put_be64(key.data() + 2, 12345);
    codec::put_be64_signed(key.data() + 10, 0);
    codec::put_be64_signed(key.data() + 18, 60);
    std::string v;
    codec::writer w{v};
    w.str("k1");
    w.u32(1);
    w.u32(2);
    w.f64(2);
    w.f64(3);
    raw_put(wh, "by_key", key, sealed("by_key", key, v));
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    INFO(messages(*r));
    CHECK_THAT(messages(*r), Catch::Contains("another key's hash"));
    CHECK(r->problems.size() == 1); // a row that does not count, so none more than the results
  }
  SECTION("a key index that lost its rows") {
    weir::test::raw_clear(wh, "by_key");
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    REQUIRE(r->problems.size() == 1);
    CHECK_THAT(r->problems[0], Catch::Contains("0 key index rows for 2 result rows"));
  }
  SECTION("a damaged change row") {
    std::string key(14, '\0');
    codec::put_be16(key.data(), 1);
    codec::put_be64(key.data() + 2, 2);
    codec::put_be32(key.data() + 10, 1);
    raw_put(wh, "changes", key, "garbage of some length");
    auto r = check_quietly(dir.str());
    REQUIRE(r);
    REQUIRE(r->problems.size() == 1);
    CHECK_THAT(r->problems[0], Catch::Contains("table changes"));
  }
}
