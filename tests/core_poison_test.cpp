#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <set>

#include "actors/core/poison.hpp"

using weir::poison_tracker;
using weir::quarantine;
using weir::record_span;
using verdict = poison_tracker::verdict;

namespace {

record_span chunk(uint32_t pipeline, uint32_t source, uint64_t begin, uint64_t end) {
  return {pipeline, source, begin, end, false};
}

record_span line(uint32_t pipeline, uint32_t source, uint64_t begin, uint64_t end) {
  return {pipeline, source, begin, end, true};
}

} // namespace

TEST_CASE("record errors carry their span through a caf::error") {
  auto err = weir::make_record_error(line(2, 5, 100, 140), "processing a record failed: boom");
  auto s = weir::record_span_of(err);
  REQUIRE(s);
  CHECK(s->pipeline == 2);
  CHECK(s->source == 5);
  CHECK(s->begin == 100);
  CHECK(s->end == 140);
  CHECK(s->line);
  CHECK(weir::render(err) == "processing a record failed: boom");
  CHECK_FALSE(weir::record_span_of(weir::make_error(weir::errc::internal, "x")));
  CHECK_FALSE(weir::record_span_of(caf::error{}));
}

TEST_CASE("a chunk is retried, then isolated; a line is retried, then poisoned") {
  poison_tracker t{2, 10};
  auto c = chunk(0, 1, 0, 1000);
  CHECK(t.failed(c, "e1") == verdict::retry);
  CHECK(t.failed(c, "e2") == verdict::retry);
  CHECK(t.of(0).empty());
  CHECK(t.failed(c, "e3") == verdict::isolate);
  auto q = t.of(0);
  REQUIRE(q.isolate.size() == 1);
  CHECK(q.isolate[0].begin == 0);
  CHECK(q.isolate[0].end == 1000);
  CHECK(q.touches(1, 999, 2000));
  CHECK_FALSE(q.touches(1, 1000, 2000));
  CHECK_FALSE(q.touches(2, 0, 1000));
  CHECK(t.of(1).empty()); // another pipeline
  auto l = line(0, 1, 400, 450);
  CHECK(t.failed(l, "x") == verdict::retry);
  CHECK(t.failed(l, "x") == verdict::retry);
  CHECK(t.failed(l, "bad line") == verdict::poison);
  q = t.of(0);
  REQUIRE(q.poison.size() == 1);
  REQUIRE(q.poisoned(1, 400));
  CHECK(q.poisoned(1, 400)->what == "bad line");
  CHECK_FALSE(q.poisoned(1, 401));
  CHECK_FALSE(q.poisoned(2, 400));
  CHECK(t.poisoned() == 1);
}

TEST_CASE("a replay that cuts the bytes into other chunks counts against the same chunk") {
  poison_tracker t{1, 10};
  CHECK(t.failed(chunk(0, 3, 100, 200), "e") == verdict::retry);
  CHECK(t.failed(chunk(0, 3, 150, 300), "e") == verdict::isolate);
  auto q = t.of(0);
  REQUIRE(q.isolate.size() == 1);
  CHECK(q.isolate[0].begin == 100);
  CHECK(q.isolate[0].end == 300);
  // Lines are exact: a line next to a failed one is a new record.
  CHECK(t.failed(line(0, 3, 120, 130), "e") == verdict::retry);
  CHECK(t.failed(line(0, 3, 130, 140), "e") == verdict::retry);
}

TEST_CASE("zero retries: the first failure isolates, the first line failure poisons") {
  poison_tracker t{0, 5};
  CHECK(t.failed(chunk(0, 0, 0, 10), "e") == verdict::isolate);
  CHECK(t.failed(line(0, 0, 0, 5), "e") == verdict::poison);
}

TEST_CASE("more poison lines than allowed, or endless failures, end with too_many") {
  poison_tracker t{0, 2};
  CHECK(t.failed(line(0, 0, 0, 5), "e") == verdict::poison);
  CHECK(t.failed(line(0, 0, 5, 9), "e") == verdict::poison);
  CHECK(t.failed(line(0, 0, 9, 12), "e") == verdict::too_many);

  // Chunks that never repeat (no progress) still end: the failure bound.
  poison_tracker u{1, 3};
  int n = 0;
  verdict v = verdict::retry;
  while (v != verdict::too_many && n < 1000) {
    v = u.failed(chunk(0, 0, 100 * static_cast<uint64_t>(n), 100 * static_cast<uint64_t>(n) + 50),
                 "e");
    ++n;
  }
  CHECK(v == verdict::too_many);
  CHECK(n == 2 * (1 + 1) * (3 + 1) + 1);
}

TEST_CASE("random failure schedules: the tracker agrees with a brute-force count") {
  // Reference model: failures per exact span, a span settles after retries + 1 failures.
  std::mt19937_64 rng{42};
  for (int round = 0; round < 200; ++round) {
    const uint32_t retries = static_cast<uint32_t>(rng() % 3);
    poison_tracker t{retries, 1000};
    std::map<std::tuple<uint32_t, uint64_t, bool>, uint32_t> count;
    std::set<std::pair<uint32_t, uint64_t>> poisoned, isolated;
    for (int i = 0; i < 40; ++i) {
      // Disjoint, fixed spans (begin 100*k .. 100*k+40), so overlap never merges two of them.
      uint32_t src = static_cast<uint32_t>(rng() % 2);
      uint64_t k = rng() % 6;
      bool is_line = rng() % 2 == 0;
      record_span s{0, src, 100 * k, 100 * k + 40, is_line};
      auto v = t.failed(s, "e");
      auto& c = count[{src, 100 * k, is_line}];
      auto& settled = is_line ? poisoned : isolated;
      verdict expect;
      if (settled.count({src, 100 * k}))
        expect = verdict::retry;
      else if (++c <= retries)
        expect = verdict::retry;
      else {
        settled.insert({src, 100 * k});
        expect = is_line ? verdict::poison : verdict::isolate;
      }
      REQUIRE(v == expect);
    }
    auto q = t.of(0);
    CHECK(q.poison.size() == poisoned.size());
    CHECK(q.isolate.size() == isolated.size());
    for (auto [src, b] : poisoned)
      CHECK(q.poisoned(src, b));
    CHECK(t.poisoned() == poisoned.size());
  }
}
