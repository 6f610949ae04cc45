#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <lmdb.h>

#include "tests/raw_lmdb.hpp"
#include "tests/test_support.hpp"
#include "actors/core/codec.hpp"
#include "store/lake.hpp"

using namespace weir;
namespace fs = std::filesystem;

namespace {

using weir::test::temp_dir;

using weir::test::has_code;

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

/// The reference: (source, offset) -> (data, landed-at bounds known to the test).
using model_t = std::map<std::pair<uint32_t, uint64_t>, std::string>;

std::vector<std::pair<uint64_t, std::string>> brute_scan(const model_t& m, uint32_t source,
                                                         uint64_t from) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (const auto& [k, v] : m)
    if (k.first == source && k.second + v.size() > from)
      out.emplace_back(k.second, v);
  return out;
}

uint64_t brute_end(const model_t& m, uint32_t source) {
  uint64_t end = 0;
  uint64_t best = 0;
  bool any = false;
  for (const auto& [k, v] : m)
    if (k.first == source && (!any || k.second >= best)) {
      best = k.second;
      end = k.second + v.size();
      any = true;
    }
  return end;
}

std::vector<std::pair<uint64_t, std::string>> do_scan(lake& l, uint32_t source, uint64_t from) {
  std::vector<std::pair<uint64_t, std::string>> out;
  auto err = l.scan(source, from, [&](uint64_t off, std::string_view data) {
    out.emplace_back(off, std::string{data});
    return true;
  });
  REQUIRE(!err);
  return out;
}

std::string random_lines(std::mt19937_64& rng, size_t approx) {
  std::string s;
  while (s.size() < approx) {
    size_t n = 1 + rng() % 40;
    for (size_t i = 0; i < n; ++i)
      s += static_cast<char>('a' + rng() % 26);
    s += '\n';
  }
  return s;
}

/// Writes `value` under `key` into table `table` of an environment with raw LMDB calls, the
/// way another program (or a damaged disk) could.
using weir::test::raw_put;

} // namespace

TEST_CASE("lake: source ids are stable, distinct and survive reopening", "[lake]") {
  temp_dir dir;
  std::map<std::string, uint32_t> ids;
  {
    auto l = lake::open(dir.str());
    REQUIRE(l);
    for (auto key : {"p/a/x.csv", "p/b/-", "q/a/y.csv", "p/a/x.csv"}) {
      auto id = l->source_id(key);
      REQUIRE(id);
      CHECK(*id != 0);
      if (ids.count(key))
        CHECK(ids[key] == *id);
      ids[key] = *id;
    }
    CHECK(ids.size() == 3);
    CHECK(ids["p/a/x.csv"] != ids["p/b/-"]);
    CHECK(ids["p/b/-"] != ids["q/a/y.csv"]);
    CHECK(has_code(l->source_id("").error(), errc::bad_config));
    CHECK(has_code(l->source_id(std::string(600, 'k')).error(), errc::bad_config));
  }
  auto l = lake::open(dir.str());
  REQUIRE(l);
  for (const auto& [key, id] : ids) {
    auto again = l->source_id(key);
    REQUIRE(again);
    CHECK(*again == id);
  }
  auto all = l->sources();
  REQUIRE(all);
  std::vector<std::pair<uint32_t, std::string>> expected;
  for (const auto& [key, id] : ids)
    expected.emplace_back(id, key);
  std::sort(expected.begin(), expected.end());
  CHECK(*all == expected);
}

TEST_CASE("lake: append, scan from any offset, end_offset, against a model", "[lake]") {
  temp_dir dir;
  auto l = lake::open(dir.str(), false);
  REQUIRE(l);
  std::mt19937_64 rng{2024};
  std::vector<uint32_t> srcs;
  for (auto key : {"a", "b", "c"}) {
    auto id = l->source_id(key);
    REQUIRE(id);
    srcs.push_back(*id);
  }
  model_t model;
  std::map<uint32_t, uint64_t> next_off;
  // Batches mixing sources, contiguous chunks per source with a gap now and then (a source
  // whose offsets are sequence numbers, or a truncated file).
  for (int b = 0; b < 60; ++b) {
    std::vector<std::string> keep;
    std::vector<lake::chunk_ref> batch;
    size_t n = 1 + rng() % 6;
    keep.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      uint32_t s = srcs[rng() % 2]; // source c stays empty
      keep.push_back(random_lines(rng, 1 + rng() % 300));
      uint64_t off = next_off[s] + (rng() % 5 == 0 ? rng() % 50 : 0);
      batch.push_back({s, off, keep.back()});
      model[{s, off}] = keep.back();
      next_off[s] = off + keep.back().size();
    }
    REQUIRE(!l->append(batch));
  }
  for (uint32_t s : srcs) {
    auto end = l->end_offset(s);
    REQUIRE(end);
    CHECK(*end == brute_end(model, s));
    std::vector<uint64_t> froms = {0, 1, brute_end(model, s), brute_end(model, s) + 1,
                                   std::numeric_limits<uint64_t>::max()};
    for (const auto& [k, v] : model)
      if (k.first == s) {
        froms.push_back(k.second);
        froms.push_back(k.second + v.size() / 2);
        froms.push_back(k.second + v.size());
        froms.push_back(k.second + v.size() - 1);
      }
    for (auto from : froms) {
      INFO("source " << s << " from " << from);
      CHECK(do_scan(*l, s, from) == brute_scan(model, s, from));
    }
  }
  CHECK(*l->end_offset(srcs[2]) == 0);
  CHECK(*l->end_offset(999) == 0);
  CHECK(*l->end_offset(std::numeric_limits<uint32_t>::max()) == 0);
  CHECK(do_scan(*l, 999, 0).empty());
  // fn returning false stops the scan.
  size_t calls = 0;
  REQUIRE(!l->scan(srcs[0], 0, [&](uint64_t, std::string_view) { return ++calls < 3; }));
  CHECK(calls == 3);
  // Reopening keeps everything (close first: LMDB forbids one env open twice in a process).
  l = make_error(errc::stopped, "closed");
  l = lake::open(dir.str());
  REQUIRE(l);
  for (uint32_t s : srcs) {
    CHECK(*l->end_offset(s) == brute_end(model, s));
    CHECK(do_scan(*l, s, 0) == brute_scan(model, s, 0));
  }
  auto counts = l->table_counts();
  REQUIRE(counts);
  std::map<std::string, uint64_t> c(counts->begin(), counts->end());
  CHECK(c["chunks"] == model.size());
  CHECK(c["source_keys"] == 3);
  CHECK(c["source_ids"] == 3);
  CHECK(c["format_version"] == lake::format_version);
  CHECK(c["map_size"] >= c["map_used"]);
  CHECK(c["map_used"] > 0);
}

TEST_CASE("lake: a long scan runs across several read txns without losing a chunk", "[lake]") {
  temp_dir dir;
  auto l = lake::open(dir.str(), false);
  REQUIRE(l);
  auto s = l->source_id("many");
  REQUIRE(s);
  model_t model;
  std::vector<std::string> keep;
  std::vector<lake::chunk_ref> batch;
  uint64_t off = 0;
  keep.reserve(5000);
  for (int i = 0; i < 5000; ++i) {
    keep.push_back("line " + std::to_string(i) + "\n");
    batch.push_back({*s, off, keep.back()});
    model[{*s, off}] = keep.back();
    off += keep.back().size();
  }
  REQUIRE(!l->append(batch));
  CHECK(do_scan(*l, *s, 0) == brute_scan(model, *s, 0));
  CHECK(do_scan(*l, *s, off / 2) == brute_scan(model, *s, off / 2));
}

TEST_CASE("lake: append is all or nothing and unknown sources are refused", "[lake]") {
  temp_dir dir;
  auto l = lake::open(dir.str());
  REQUIRE(l);
  auto s = l->source_id("known");
  REQUIRE(s);
  std::vector<lake::chunk_ref> batch = {{*s, 0, "a\n"}, {*s + 7, 0, "b\n"}, {*s, 2, "c\n"}};
  CHECK(l->append(batch));
  CHECK(*l->end_offset(*s) == 0);
  CHECK(do_scan(*l, *s, 0).empty());
  std::vector<lake::chunk_ref> overflow = {{*s, std::numeric_limits<uint64_t>::max(), "x\n"}};
  CHECK(has_code(l->append(overflow), errc::bad_input));
  REQUIRE(!l->append({}));
}

TEST_CASE("lake: prune deletes what is below the offset and landed long enough ago", "[lake]") {
  temp_dir dir;
  auto l = lake::open(dir.str(), false);
  REQUIRE(l);
  auto a = l->source_id("a");
  auto b = l->source_id("b");
  REQUIRE(a);
  REQUIRE(b);
  std::mt19937_64 rng{5};
  model_t model;
  std::map<std::pair<uint32_t, uint64_t>, int> landed_round;
  std::vector<int64_t> round_end; // a time after round r landed and before r+1 did
  uint64_t off_a = 0;
  uint64_t off_b = 0;
  std::vector<std::string> keep;
  keep.reserve(1000);
  for (int r = 0; r < 4; ++r) {
    std::vector<lake::chunk_ref> batch;
    for (int i = 0; i < 20; ++i) {
      keep.push_back(random_lines(rng, 1 + rng() % 100));
      batch.push_back({*a, off_a, keep.back()});
      model[{*a, off_a}] = keep.back();
      landed_round[{*a, off_a}] = r;
      off_a += keep.back().size();
      keep.push_back(random_lines(rng, 1 + rng() % 100));
      batch.push_back({*b, off_b, keep.back()});
      model[{*b, off_b}] = keep.back();
      landed_round[{*b, off_b}] = r;
      off_b += keep.back().size();
    }
    REQUIRE(!l->append(batch));
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    round_end.push_back(now_us());
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  auto brute_prune = [&](uint32_t s, uint64_t below, int rounds_before) {
    size_t n = 0;
    for (auto it = model.begin(); it != model.end();) {
      bool del = it->first.first == s && it->first.second + it->second.size() <= below &&
                 landed_round[it->first] < rounds_before;
      if (del) {
        it = model.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
  };
  // Offsets in the middle of a chunk, at chunk ends, zero and beyond the end; retention cut
  // between rounds.
  struct step {
    uint32_t s;
    uint64_t below;
    int rounds;
  };
  std::vector<step> steps = {{*a, off_a / 3 + 1, 1}, {*a, off_a / 2, 0}, {*b, 0, 4},
                             {*a, off_a / 2, 2},     {*b, off_b / 2, 4}, {*a, off_a, 3},
                             {*a, off_a + 10, 4},    {*b, off_b, 1}};
  for (const auto& st : steps) {
    INFO("source " << st.s << " below " << st.below << " rounds " << st.rounds);
    int64_t cut = st.rounds == 0 ? 0 : round_end[st.rounds - 1];
    auto n = l->prune(st.s, st.below, cut);
    REQUIRE(n);
    CHECK(*n == brute_prune(st.s, st.below, st.rounds));
    CHECK(do_scan(*l, *a, 0) == brute_scan(model, *a, 0));
    CHECK(do_scan(*l, *b, 0) == brute_scan(model, *b, 0));
    CHECK(*l->end_offset(*a) == brute_end(model, *a));
    CHECK(*l->end_offset(*b) == brute_end(model, *b));
  }
  // A scan from a pruned region starts at the first chunk left.
  CHECK(do_scan(*l, *b, 0) == brute_scan(model, *b, 0));
}

TEST_CASE("lake: a 64 KiB map grows to hold several MiB", "[lake]") {
  temp_dir dir;
  std::mt19937_64 rng{9};
  model_t model;
  uint32_t s = 0;
  {
    auto l = lake::open(dir.str(), false, size_t{64} << 10);
    REQUIRE(l);
    auto id = l->source_id("big");
    REQUIRE(id);
    s = *id;
    uint64_t off = 0;
    // Many small batches, then one batch of 3 MiB in a single txn.
    for (int b = 0; b < 40; ++b) {
      std::string data = random_lines(rng, 64 << 10);
      REQUIRE(!l->append({{s, off, data}}));
      model[{s, off}] = data;
      off += data.size();
    }
    std::vector<std::string> keep;
    std::vector<lake::chunk_ref> batch;
    keep.reserve(48);
    for (int i = 0; i < 48; ++i) {
      keep.push_back(random_lines(rng, 64 << 10));
      batch.push_back({s, off, keep.back()});
      model[{s, off}] = keep.back();
      off += keep.back().size();
    }
    REQUIRE(!l->append(batch));
    CHECK(do_scan(*l, s, 0) == brute_scan(model, s, 0));
  }
  auto l = lake::open(dir.str(), true, size_t{64} << 10);
  REQUIRE(l);
  CHECK(do_scan(*l, s, 0) == brute_scan(model, s, 0));
  auto counts = l->table_counts();
  REQUIRE(counts);
  std::map<std::string, uint64_t> c(counts->begin(), counts->end());
  CHECK(c["map_used"] > (uint64_t{5} << 20));
}

TEST_CASE("lake: two threads append and scan at once", "[lake]") {
  temp_dir dir;
  auto l = lake::open(dir.str(), false, size_t{128} << 10);
  REQUIRE(l);
  auto a = l->source_id("t/a");
  auto b = l->source_id("t/b");
  REQUIRE(a);
  REQUIRE(b);
  auto writer = [&](uint32_t s, uint64_t seed, model_t& m, bool& ok) {
    std::mt19937_64 rng{seed};
    uint64_t off = 0;
    ok = true;
    for (int i = 0; i < 200 && ok; ++i) {
      std::string data = random_lines(rng, 1 + rng() % 8000);
      ok = !l->append({{s, off, data}});
      m[{s, off}] = data;
      off += data.size();
      // Read while the other thread writes (and grows the map).
      size_t seen = 0;
      ok = ok && !l->scan(s, 0, [&](uint64_t, std::string_view) { return ++seen > 0; });
      ok = ok && seen == m.size();
    }
  };
  model_t ma;
  model_t mb;
  bool oka = false;
  bool okb = false;
  std::thread ta{[&] { writer(*a, 1, ma, oka); }};
  std::thread tb{[&] { writer(*b, 2, mb, okb); }};
  ta.join();
  tb.join();
  CHECK(oka);
  CHECK(okb);
  CHECK(do_scan(*l, *a, 0) == brute_scan(ma, *a, 0));
  CHECK(do_scan(*l, *b, 0) == brute_scan(mb, *b, 0));
}

TEST_CASE("lake: unknown format version and damaged chunks are refused", "[lake]") {
  temp_dir dir;
  uint32_t s = 0;
  {
    auto l = lake::open(dir.str());
    REQUIRE(l);
    auto id = l->source_id("x");
    REQUIRE(id);
    s = *id;
    REQUIRE(!l->append({{s, 0, "hello\n"}}));
  }
  // A chunk value shorter than its header: a bounds-checked error, not a crash.
  char key[12];
  codec::put_be32(key, s);
  codec::put_be64(key + 4, 100);
  raw_put(dir.str() + "/lake", "chunks", std::string_view{key, 12}, "abc");
  {
    auto l = lake::open(dir.str());
    REQUIRE(l);
    auto err = l->scan(s, 0, [](uint64_t, std::string_view) { return true; });
    CHECK(has_code(err, errc::store_corrupt));
    CHECK(has_code(l->end_offset(s).error(), errc::store_corrupt));
  }
  char v[4];
  codec::put_le32(v, 99);
  raw_put(dir.str() + "/lake", "meta", "format_version", std::string_view{v, 4});
  auto l = lake::open(dir.str());
  REQUIRE(!l);
  CHECK(has_code(l.error(), errc::store_format));
  auto text = render(l.error());
  CHECK(text.find(dir.str() + "/lake") != std::string::npos);
  CHECK(text.find("99") != std::string::npos);
  CHECK(text.find(std::to_string(lake::format_version)) != std::string::npos);
}
