#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "actors/core/error.hpp"
#include "actors/core/sketches.hpp"

using namespace weir;

namespace {

uint64_t hash_of(uint64_t x) {
  return XXH3_64bits(&x, sizeof x);
}

/// The value at rank floor(q * (n - 1)) of the sorted input: the definition, computed directly.
double true_quantile(std::vector<double> xs, double q) {
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<size_t>(std::floor(q * static_cast<double>(xs.size() - 1)));
  return xs[rank];
}

void check_quantiles(const quantile_sketch& sk, const std::vector<double>& xs) {
  for (double q : {0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0}) {
    double truth = true_quantile(xs, q);
    double got = sk.quantile(q);
    INFO("q = " << q << " n = " << xs.size() << " truth = " << truth << " got = " << got);
    CHECK(std::fabs(got - truth) <= 0.01 * std::fabs(truth) * (1 + 1e-9));
  }
}

} // namespace

TEST_CASE("distinct_counter is exact up to the threshold") {
  std::mt19937_64 rng{7};
  for (size_t n : {0, 1, 2, 17, 500, 1023, 1024}) {
    distinct_counter c;
    std::set<uint64_t> truth;
    // Repeat values so that duplicates are exercised; include the hash 0 once in a while.
    std::uniform_int_distribution<uint64_t> pick(0, n == 0 ? 0 : n - 1);
    for (size_t i = 0; i < 3 * n; ++i) {
      uint64_t v = pick(rng);
      uint64_t h = v == 3 ? 0 : hash_of(v);
      c.add(h);
      truth.insert(h);
    }
    for (size_t v = 0; v < n; ++v) { // make sure every value appears
      uint64_t h = v == 3 ? 0 : hash_of(v);
      c.add(h);
      truth.insert(h);
    }
    INFO("n = " << n);
    CHECK(c.exact());
    CHECK(c.estimate() == static_cast<double>(truth.size()));
  }
}

TEST_CASE("distinct_counter switches to HyperLogLog past 1024 and stays within 3 SE") {
  const double tolerance = 3 * distinct_counter::standard_error;
  for (uint64_t seed : {1, 2, 3}) {
    for (size_t n : {1025, 2000, 5000, 20000, 60000, 200000, 1000000}) {
      distinct_counter c;
      uint64_t base = seed * 1'000'000'007ull;
      for (size_t i = 0; i < n; ++i) {
        c.add(hash_of(base + i));
        if (i % 3 == 0) // duplicates must not count
          c.add(hash_of(base + i / 2));
      }
      INFO("seed " << seed << " n " << n << " estimate " << c.estimate());
      CHECK_FALSE(c.exact());
      CHECK(std::fabs(c.estimate() - static_cast<double>(n)) <= tolerance * n);
    }
  }
}

TEST_CASE("distinct_counter merge equals counting the union") {
  for (auto [na, nb] : {std::pair<size_t, size_t>{10, 20}, {600, 600}, {100, 5000},
                        {5000, 100}, {30000, 40000}}) {
    distinct_counter a;
    distinct_counter b;
    distinct_counter both;
    std::set<uint64_t> truth;
    for (size_t i = 0; i < na; ++i) {
      a.add(hash_of(i));
      both.add(hash_of(i));
      truth.insert(i);
    }
    for (size_t i = na / 2; i < na / 2 + nb; ++i) {
      b.add(hash_of(i));
      both.add(hash_of(i));
      truth.insert(i);
    }
    a.merge(b);
    INFO("na " << na << " nb " << nb);
    if (truth.size() <= distinct_counter::exact_limit) {
      CHECK(a.estimate() == static_cast<double>(truth.size()));
    } else {
      CHECK(a.estimate() == both.estimate()); // same registers either way
      CHECK(std::fabs(a.estimate() - truth.size())
            <= 3 * distinct_counter::standard_error * truth.size());
    }
  }
}

TEST_CASE("distinct_counter serializes both modes and rejects bad bytes") {
  for (size_t n : {0, 5, 1024, 3000}) {
    distinct_counter c;
    for (size_t i = 0; i < n; ++i)
      c.add(hash_of(i));
    c.add(0);
    std::string bytes;
    c.serialize(bytes);
    distinct_counter d;
    REQUIRE_FALSE(d.deserialize(bytes));
    CHECK(d.exact() == c.exact());
    CHECK(d.estimate() == c.estimate());
    // Every truncation fails cleanly.
    for (size_t cut = 0; cut < bytes.size(); cut += std::max<size_t>(1, bytes.size() / 50)) {
      distinct_counter e;
      auto err = e.deserialize(std::string_view{bytes}.substr(0, cut));
      CHECK(err);
      CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
      CHECK(e.estimate() == 0);
    }
    distinct_counter e;
    CHECK(e.deserialize(bytes + "x"));
  }
  std::mt19937 rng{11};
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 40, '\0');
    for (auto& ch : junk)
      ch = static_cast<char>(rng());
    if (i % 2 == 0 && !junk.empty())
      junk[0] = 1; // a valid version byte gets further into the decoder
    distinct_counter d;
    auto err = d.deserialize(junk);
    if (err)
      CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
  }
  // An HLL register above the largest possible rank is corrupt.
  std::string bad{"\x01\x01"};
  bad.append(distinct_counter::register_count, '\0');
  bad[5] = 60;
  distinct_counter d;
  CHECK(d.deserialize(bad));
}

TEST_CASE("quantile_sketch is within 1% relative error") {
  std::mt19937_64 rng{42};
  std::uniform_real_distribution<double> uniform(0, 1000);
  std::lognormal_distribution<double> lognormal(0, 2);
  std::normal_distribution<double> normal(0, 50);
  std::uniform_int_distribution<int> coin(0, 9);
  for (size_t n : {1, 2, 3, 10, 100, 1000, 50000}) {
    for (int dist = 0; dist < 4; ++dist) {
      quantile_sketch sk;
      std::vector<double> xs;
      for (size_t i = 0; i < n; ++i) {
        double x = 0;
        switch (dist) {
          case 0: x = uniform(rng); break;
          case 1: x = lognormal(rng); break;
          case 2: x = normal(rng); break;                             // negatives
          case 3: x = coin(rng) < 3 ? 0.0 : normal(rng) * lognormal(rng); break; // zeros
        }
        xs.push_back(x);
        sk.add(x);
      }
      sk.add(std::nan("")); // ignored
      INFO("distribution " << dist);
      CHECK(sk.count() == n);
      check_quantiles(sk, xs);
    }
  }
}

TEST_CASE("quantile_sketch edge cases") {
  quantile_sketch empty;
  CHECK(std::isnan(empty.quantile(0.5)));
  CHECK(empty.count() == 0);

  quantile_sketch zeros;
  for (int i = 0; i < 5; ++i)
    zeros.add(0.0);
  CHECK(zeros.quantile(0.5) == 0.0);

  // Extreme magnitudes, tiny and huge, positive and negative.
  quantile_sketch wide;
  std::vector<double> xs{1e-300, -1e-300, 1e300, -1e300, 1e-5, 3.0, -7.5, 12345.678, 1e150};
  for (double x : xs)
    wide.add(x);
  check_quantiles(wide, xs);

  // Infinities count at the ends.
  quantile_sketch inf;
  inf.add(std::numeric_limits<double>::infinity());
  inf.add(1.0);
  inf.add(-std::numeric_limits<double>::infinity());
  CHECK(inf.quantile(1.0) == std::numeric_limits<double>::infinity());
  CHECK(inf.quantile(0.0) == -std::numeric_limits<double>::infinity());
  CHECK(std::fabs(inf.quantile(0.5) - 1.0) <= 0.01);
}

TEST_CASE("quantile_sketch merge equals sketching the union") {
  std::mt19937_64 rng{5};
  std::normal_distribution<double> normal(10, 40);
  quantile_sketch a;
  quantile_sketch b;
  std::vector<double> xs;
  for (int i = 0; i < 3000; ++i) {
    double x = normal(rng);
    xs.push_back(x);
    (i % 3 == 0 ? a : b).add(x);
  }
  a.merge(b);
  CHECK(a.count() == xs.size());
  check_quantiles(a, xs);
  quantile_sketch c;
  c.merge(a);
  check_quantiles(c, xs);
}

TEST_CASE("quantile_sketch serializes and rejects bad bytes") {
  std::mt19937_64 rng{9};
  std::normal_distribution<double> normal(0, 100);
  quantile_sketch sk;
  std::vector<double> xs;
  for (int i = 0; i < 1000; ++i) {
    double x = i % 7 == 0 ? 0.0 : normal(rng);
    xs.push_back(x);
    sk.add(x);
  }
  std::string bytes;
  sk.serialize(bytes);
  quantile_sketch back;
  REQUIRE_FALSE(back.deserialize(bytes));
  for (double q : {0.0, 0.1, 0.5, 0.77, 1.0})
    CHECK(back.quantile(q) == sk.quantile(q));
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    quantile_sketch e;
    auto err = e.deserialize(std::string_view{bytes}.substr(0, cut));
    CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
    CHECK(e.count() == 0);
  }
  std::mt19937 junk_rng{3};
  for (int i = 0; i < 2000; ++i) {
    std::string junk = bytes;
    junk[junk_rng() % junk.size()] = static_cast<char>(junk_rng());
    quantile_sketch e;
    auto err = e.deserialize(junk);
    if (err) {
      CHECK(err.code() == static_cast<uint8_t>(errc::store_corrupt));
    } else { // a flip that still decodes must still answer without crashing
      e.quantile(0.5);
    }
  }
  // A huge claimed store length must not allocate: it is bounded by the input.
  std::string huge;
  binary::writer w{huge};
  w.u8(1);
  w.varint(1);
  w.varint(0);
  w.f64(1);
  w.f64(1);
  w.i64(0);
  w.varint(uint64_t{1} << 60);
  quantile_sketch e;
  CHECK(e.deserialize(huge));
}

TEST_CASE("binary reader bounds-checks") {
  std::string s;
  binary::writer w{s};
  w.varint(300);
  w.bytes("abc");
  w.u32(0xdeadbeef);
  binary::reader r{s};
  CHECK(r.varint() == 300);
  CHECK(r.bytes() == "abc");
  CHECK(r.u32() == 0xdeadbeef);
  CHECK(r.ok());
  CHECK(r.remaining() == 0);
  CHECK(r.u8() == 0);
  CHECK_FALSE(r.ok());
  std::string overlong(11, '\xff');
  binary::reader r2{overlong};
  r2.varint();
  CHECK_FALSE(r2.ok());
  std::string claim;
  binary::writer w2{claim};
  w2.varint(1000);
  binary::reader r3{claim};
  CHECK(r3.bytes().empty());
  CHECK_FALSE(r3.ok());
}
