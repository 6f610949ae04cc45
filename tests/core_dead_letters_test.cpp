// Packed dead letters (actors/core/dead_letters.hpp): the layout the warehouse stores.

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "actors/core/dead_letters.hpp"

using namespace weir;

namespace {

/// The layout written by hand: u32 source, u64 offset, u32 + reason, u32 + raw, little-endian.
std::string by_hand(uint32_t source, uint64_t offset, const std::string& reason,
                    const std::string& raw) {
  std::string out;
  auto le = [&out](uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  le(source, 4);
  le(offset, 8);
  le(reason.size(), 4);
  out += reason;
  le(raw.size(), 4);
  out += raw;
  return out;
}

} // namespace

TEST_CASE("dead-letter pack: the stored layout, in order, raw cut at the limit with a marker") {
  std::mt19937_64 rng{5};
  dead_letter_pack pack;
  std::vector<dead_letter> want;
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    dead_letter d;
    d.source = static_cast<uint32_t>(rng() % 5);
    d.offset = rng();
    d.reason = "reason " + std::to_string(i);
    size_t len = i % 50 == 7 ? dead_letter_pack::max_raw + 1 + rng() % 1000 : rng() % 200;
    d.raw = std::string(len, static_cast<char>('a' + i % 26));
    pack.add(d.source, d.offset, d.reason, d.raw);
    if (d.raw.size() > dead_letter_pack::max_raw)
      d.raw = d.raw.substr(0, dead_letter_pack::max_raw) + " [weir: cut here, " +
              std::to_string(len) + " bytes in all]";
    bytes += by_hand(d.source, d.offset, d.reason, d.raw);
    want.push_back(d);
  }
  CHECK(pack.bytes() == bytes);
  REQUIRE(pack.size() == want.size());
  size_t i = 0;
  for (auto d : pack) {
    CHECK(d.source == want[i].source);
    CHECK(d.offset == want[i].offset);
    CHECK(d.reason == want[i].reason);
    CHECK(d.raw == want[i].raw);
    CHECK(pack.entry(i) == by_hand(d.source, d.offset, want[i].reason, want[i].raw));
    ++i;
  }
  // Through a message and back, and appended to another pack.
  dead_letter_pack copy;
  REQUIRE(copy.assign(bytes));
  CHECK(copy.size() == want.size());
  dead_letter_pack both;
  both.push_back(want[0]);
  both.append(copy);
  REQUIRE(both.size() == want.size() + 1);
  CHECK(both[0].raw == want[0].raw);
  CHECK(both.back().reason == want.back().reason);
}

TEST_CASE("dead-letter pack: bytes that are not whole dead letters are refused") {
  dead_letter_pack pack;
  pack.add(1, 2, "late", "raw text");
  pack.add(3, 4, "bad", "more");
  const std::string bytes{pack.bytes()};
  dead_letter_pack got;
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    const bool whole = cut == 0 || cut == pack.entry(0).size();
    CHECK(got.assign(std::string_view{bytes}.substr(0, cut)) == whole);
    if (!whole)
      CHECK(got.empty());
  }
  std::string lying = bytes;
  lying[12] = '\x7f'; // the first reason claims more bytes than there are
  CHECK(!got.assign(lying));
}
