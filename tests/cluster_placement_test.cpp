#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>

#include "cluster/placement.hpp"

using namespace weir::cluster;

namespace {

/// A node with the given roles ("c": coordinator, "i": ingest, "a": aggregate, "s": spare).
node_config node(const std::string& name, const std::string& roles) {
  node_config n;
  n.name = name;
  n.host = "127.0.0.1";
  n.coordinator = roles.find('c') != std::string::npos;
  n.ingest = roles.find('i') != std::string::npos;
  n.aggregate = roles.find('a') != std::string::npos || roles.find('s') != std::string::npos;
  n.spare = roles.find('s') != std::string::npos;
  return n;
}

cluster_config cluster_of(std::vector<node_config> nodes) {
  cluster_config c;
  c.name = "test";
  c.nodes = std::move(nodes);
  return c;
}

std::vector<bool> all_alive(const cluster_config& c) {
  return std::vector<bool>(c.nodes.size(), true);
}

std::vector<bool> down(const cluster_config& c, std::initializer_list<size_t> dead) {
  auto alive = all_alive(c);
  for (auto i : dead)
    alive[i] = false;
  return alive;
}

/// The weight as the placement comment specifies it, computed here from scratch: XXH64 with
/// seed "weir1" of pipeline, a zero byte, the partition as 8 little-endian bytes, the node.
uint64_t reference_weight(const std::string& pipeline, size_t partition, const std::string& node) {
  std::vector<unsigned char> bytes(pipeline.begin(), pipeline.end());
  bytes.push_back(0);
  for (int i = 0; i < 8; ++i)
    bytes.push_back(static_cast<unsigned char>(static_cast<uint64_t>(partition) >> (8 * i)));
  bytes.insert(bytes.end(), node.begin(), node.end());
  return XXH64(bytes.data(), bytes.size(), 0x7765697231);
}

/// Brute force: rank every node for the partition (sort by weight, then name), then walk the
/// ranking: the first non-spare aggregate node if it is alive, else the first alive spare,
/// else the first alive non-spare aggregate node.
node_slot reference_partition(const cluster_config& c, const std::vector<bool>& alive,
                              const std::string& pipeline, size_t partition) {
  std::vector<size_t> ranking(c.nodes.size());
  for (size_t i = 0; i < ranking.size(); ++i)
    ranking[i] = i;
  std::sort(ranking.begin(), ranking.end(), [&](size_t a, size_t b) {
    auto wa = reference_weight(pipeline, partition, c.nodes[a].name);
    auto wb = reference_weight(pipeline, partition, c.nodes[b].name);
    return wa != wb ? wa > wb : c.nodes[a].name < c.nodes[b].name;
  });
  auto first = [&](auto pred) -> node_slot {
    for (auto i : ranking)
      if (pred(c.nodes[i], i))
        return i;
    return std::nullopt;
  };
  auto home = first([](const node_config& n, size_t) { return n.aggregate && !n.spare; });
  if (home && alive[*home])
    return home;
  if (auto s = first([&](const node_config& n, size_t i) { return n.spare && alive[i]; }))
    return s;
  return first([&](const node_config& n, size_t i) { return n.aggregate && !n.spare && alive[i]; });
}

const std::vector<pipeline_shape> two_pipelines = {{"clicks", 64}, {"orders", 37}};

/// The nodes' names of every partition, pipeline by pipeline ("-" for none).
std::vector<std::vector<std::string>> names_of(const cluster_config& c, const placement& p) {
  std::vector<std::vector<std::string>> out;
  for (const auto& pp : p.pipelines) {
    out.emplace_back();
    for (const auto& s : pp.partitions)
      out.back().push_back(s ? c.nodes[*s].name : "-");
  }
  return out;
}

} // namespace

TEST_CASE("every partition is placed exactly once, as the brute-force reference places it") {
  std::mt19937 rng{20261129};
  for (int round = 0; round < 200; ++round) {
    std::vector<node_config> nodes{node("n0", "ci")};
    auto count = 1 + rng() % 7;
    for (size_t i = 1; i <= count; ++i)
      nodes.push_back(node("n" + std::to_string(i), rng() % 3 == 0 ? "s" : "a"));
    nodes[1].spare = false; // at least one non-spare aggregate node
    auto c = cluster_of(nodes);
    std::vector<bool> alive(c.nodes.size());
    for (size_t i = 0; i < alive.size(); ++i)
      alive[i] = rng() % 4 != 0;
    auto p = place(c, two_pipelines, alive);
    REQUIRE(p.pipelines.size() == two_pipelines.size());
    for (size_t k = 0; k < two_pipelines.size(); ++k) {
      const auto& pp = p.pipelines[k];
      CHECK(pp.name == two_pipelines[k].name);
      REQUIRE(pp.partitions.size() == two_pipelines[k].partitions);
      for (size_t i = 0; i < pp.partitions.size(); ++i) {
        auto want = reference_partition(c, alive, pp.name, i);
        CHECK(pp.partitions[i] == want);
        if (pp.partitions[i]) {
          CHECK(alive[*pp.partitions[i]]);
          CHECK(c.nodes[*pp.partitions[i]].aggregate);
        }
      }
      CHECK(pp.ingest == (alive[0] ? node_slot{0} : node_slot{}));
    }
    CHECK(p.coordinator == (alive[0] ? node_slot{0} : node_slot{}));
  }
}

TEST_CASE("the weight is the specified hash") {
  for (size_t i = 0; i < 100; ++i)
    CHECK(rendezvous_weight("clicks", i, "node-" + std::to_string(i % 7)) ==
          reference_weight("clicks", i, "node-" + std::to_string(i % 7)));
}

TEST_CASE("partitions spread evenly over the aggregate nodes") {
  auto c = cluster_of({node("a", "cia"), node("b", "a"), node("c", "a")});
  auto p = place(c, {{"clicks", 3 * 256}}, all_alive(c));
  std::map<size_t, size_t> per_node;
  for (const auto& s : p.pipelines[0].partitions)
    ++per_node[s.value()];
  REQUIRE(per_node.size() == 3);
  for (auto [n, count] : per_node) {
    INFO(n << ": " << count);
    CHECK(count >= 3 * 256 / 5);      // 20%
    CHECK(count <= 3 * 256 * 7 / 15); // 47%
  }
}

TEST_CASE("a node going down moves only its partitions, and they come back with it") {
  auto c =
    cluster_of({node("a", "cia"), node("b", "a"), node("c", "a"), node("d", "a"), node("e", "")});
  auto before = place(c, two_pipelines, all_alive(c));
  REQUIRE(before.complete());
  for (size_t lost = 0; lost < 4; ++lost) {
    INFO("lost node " << lost);
    auto after = place(c, two_pipelines, down(c, {lost}));
    size_t moved = 0;
    for (size_t k = 0; k < two_pipelines.size(); ++k)
      for (size_t i = 0; i < two_pipelines[k].partitions; ++i) {
        auto was = before.pipelines[k].partitions[i];
        auto now = after.pipelines[k].partitions[i];
        REQUIRE(now);
        CHECK(*now != lost);
        if (*was != lost)
          CHECK(now == was);
        moved += *was == lost;
      }
    CHECK(moved > 0);
    // moves() lists exactly those, checked against the comparison above.
    auto listed = moves(before, after);
    CHECK(listed.size() == moved);
    for (const auto& m : listed) {
      CHECK(m.from == node_slot{lost});
      CHECK(m.to == after.pipelines[m.pipeline].partitions[m.partition]);
    }
    CHECK(names_of(c, place(c, two_pipelines, all_alive(c))) == names_of(c, before));
  }
}

TEST_CASE("spares take partitions only while a non-spare aggregate node is down") {
  auto c = cluster_of({node("a", "cia"), node("b", "a"), node("s1", "s"), node("s2", "s")});
  auto all = place(c, two_pipelines, all_alive(c));
  for (const auto& pp : all.pipelines)
    for (const auto& s : pp.partitions)
      CHECK((*s == 0 || *s == 1)); // no spare holds anything
  // b down: exactly b's partitions go to the spares, spread over both; a keeps its own.
  auto b_down = place(c, two_pipelines, down(c, {1}));
  std::map<size_t, size_t> taken;
  for (size_t k = 0; k < two_pipelines.size(); ++k)
    for (size_t i = 0; i < two_pipelines[k].partitions; ++i) {
      auto was = *all.pipelines[k].partitions[i];
      auto now = *b_down.pipelines[k].partitions[i];
      if (was == 0)
        CHECK(now == 0);
      else
        CHECK((now == 2 || now == 3));
      ++taken[now];
    }
  CHECK(taken[2] > 0);
  CHECK(taken[3] > 0);
  // A spare down while every regular node is up changes nothing.
  CHECK(names_of(c, place(c, two_pipelines, down(c, {2}))) == names_of(c, all));
  // b and both spares down: a takes everything.
  auto only_a = place(c, two_pipelines, down(c, {1, 2, 3}));
  for (const auto& pp : only_a.pipelines)
    for (const auto& s : pp.partitions)
      CHECK(s == node_slot{0});
  // No aggregate node alive: nothing can be placed, the placement is not complete.
  auto none = place(c, two_pipelines, down(c, {0, 1, 2, 3}));
  CHECK_FALSE(none.complete());
  CHECK_FALSE(none.pipelines[0].partitions[0]);
}

TEST_CASE("with one node everything lands on it") {
  auto c = cluster_of({node("solo", "cia")});
  auto p = place(c, two_pipelines, all_alive(c));
  CHECK(p.complete());
  CHECK(p.coordinator == node_slot{0});
  for (const auto& pp : p.pipelines) {
    CHECK(pp.ingest == node_slot{0});
    CHECK(std::all_of(pp.partitions.begin(), pp.partitions.end(),
                      [](const node_slot& s) { return s == node_slot{0}; }));
  }
  auto gone = place(c, two_pipelines, {false});
  CHECK_FALSE(gone.complete());
  CHECK_FALSE(gone.coordinator);
}

TEST_CASE("the same inputs give the same placement, whatever the order of the nodes") {
  std::vector<node_config> nodes{node("a", "ci"), node("b", "a"), node("c", "a"), node("d", "s"),
                                 node("e", "a")};
  auto c = cluster_of(nodes);
  auto alive = down(c, {2});
  auto first = names_of(c, place(c, two_pipelines, alive));
  CHECK(names_of(c, place(c, two_pipelines, alive)) == first);
  std::mt19937 rng{7};
  for (int i = 0; i < 10; ++i) {
    auto shuffled = nodes;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    auto s = cluster_of(shuffled);
    std::vector<bool> s_alive(s.nodes.size());
    for (size_t j = 0; j < s.nodes.size(); ++j)
      s_alive[j] = s.nodes[j].name != "c";
    auto p = place(s, two_pipelines, s_alive);
    CHECK(names_of(s, p) == first);
    CHECK(s.nodes[p.coordinator.value()].name == "a");
  }
}
