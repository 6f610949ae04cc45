// Packed window results (actors/core/result_pack.hpp): the layout the aggregators send and the
// warehouse writes as it lies.

#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "actors/core/result_pack.hpp"

using namespace weir;

namespace {

/// The layout written by hand: i64 start, i64 end, u32 key length, u32 version, u32 count,
/// count f64, key bytes, little-endian.
std::string by_hand(const window_result& r) {
  std::string out;
  auto le = [&out](uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  le(static_cast<uint64_t>(r.start), 8);
  le(static_cast<uint64_t>(r.end), 8);
  le(r.key.size(), 4);
  le(r.version, 4);
  le(r.values.size(), 4);
  for (double x : r.values) {
    uint64_t bits;
    std::memcpy(&bits, &x, 8);
    le(bits, 8);
  }
  out += r.key;
  return out;
}

bool same(const window_result& a, const window_result& b) {
  return a.key == b.key && a.start == b.start && a.end == b.end && a.version == b.version &&
         a.values == b.values;
}

} // namespace

TEST_CASE("result pack: the layout by hand, read back in place, in order") {
  std::mt19937_64 rng{11};
  result_pack pack;
  std::vector<window_result> want;
  std::string bytes;
  for (int i = 0; i < 500; ++i) {
    window_result r;
    r.key.assign(rng() % 40, static_cast<char>('a' + rng() % 26));
    if (i % 50 == 0)
      r.key.push_back('\0'); // keys are bytes
    r.start = static_cast<int64_t>(rng()) >> (rng() % 64);
    r.end = r.start + static_cast<int64_t>(rng() % 1000);
    r.version = static_cast<uint32_t>(rng() % 7 + 1);
    r.values.resize(rng() % 6);
    for (auto& x : r.values)
      x = static_cast<double>(static_cast<int64_t>(rng() % 2000001) - 1000000) / 7.0;
    pack.push_back(r);
    want.push_back(r);
    bytes += by_hand(r);
  }
  REQUIRE(pack.bytes() == bytes);
  REQUIRE(pack.size() == want.size());
  size_t i = 0;
  for (auto v : pack) {
    CHECK(same(v, want[i]));
    // The stored part is a results-table value: version, count, values.
    CHECK(v.stored == by_hand(want[i]).substr(20, 8 + 8 * want[i].values.size()));
    ++i;
  }
  result_pack back;
  REQUIRE(back.assign(bytes));
  REQUIRE(back.size() == want.size());
  for (size_t j = 0; j < want.size(); ++j)
    CHECK(same(back[j], want[j]));

  // Copying results one by one in another order keeps each whole.
  result_pack reordered;
  for (size_t j = want.size(); j-- > 0;)
    reordered.add(pack, j);
  for (size_t j = 0; j < want.size(); ++j)
    CHECK(same(reordered[j], want[want.size() - 1 - j]));

  // update() replaces version and values only.
  std::vector<double> other(want[3].values.size(), 2.5);
  reordered.update(want.size() - 4, 9, other.data(), other.size());
  window_result changed = want[3];
  changed.version = 9;
  changed.values = other;
  CHECK(same(reordered[want.size() - 4], changed));
  CHECK(same(reordered[want.size() - 5], want[4]));
}

TEST_CASE("result pack: bytes that are not whole results are refused, the pack unchanged") {
  result_pack pack;
  pack.push_back({"key", 0, 60, 1, {1.0, 2.0}});
  pack.push_back({"other", 60, 120, 2, {3.0, 4.0}});
  const std::string whole{pack.bytes()};
  result_pack target;
  target.push_back({"x", 1, 2, 1, {}});
  const std::string before{target.bytes()};
  for (size_t cut = 1; cut < whole.size(); ++cut) {
    result_pack probe;
    const bool ok = probe.assign(std::string_view{whole}.substr(0, cut));
    // Only the cut after the first result is a whole sequence.
    CHECK(ok == (cut == by_hand({"key", 0, 60, 1, {1.0, 2.0}}).size()));
    if (!ok) {
      CHECK(probe.empty());
      CHECK(!target.append(std::string_view{whole}.substr(0, cut)));
      CHECK(target.bytes() == before);
      CHECK(target.size() == 1);
    }
  }
  // A count that claims more values than there are bytes.
  std::string lying = whole;
  lying[24] = '\xff';
  CHECK(!target.append(lying));
  CHECK(target.size() == 1);
  REQUIRE(target.append(whole));
  CHECK(target.size() == 3);
  CHECK(same(target[2], {"other", 60, 120, 2, {3.0, 4.0}}));
}
