#include "cluster/placement.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

#include <xxhash.h>

namespace weir::cluster {

// Why rendezvous (highest-random-weight) hashing: a partition's state is costly to move (its
// new node reloads it from the store and the epoch in flight aborts), so a change of membership
// should move as few partitions as possible. Round robin by partition index over the alive
// nodes (index mod n) reshuffles almost every partition when n changes. With rendezvous
// hashing each partition ranks the nodes by a hash of (pipeline, partition, node name) and
// takes the first one that can hold it: losing a node moves exactly the partitions it held,
// spread evenly over the others, and its return moves them back. It needs no table, no
// coordination and no virtual nodes, and weights depend on names, not on the order of the
// config file. xxhash (XXH64) is fast and spreads well; the seed is fixed, never change it,
// nor the byte layout below: every node of a cluster must compute the same weights.

namespace {

constexpr uint64_t weight_seed = 0x7765697231; // "weir1"

bool better(const cluster_config& c, const std::string& pipeline, size_t partition, size_t a,
            size_t b) {
  auto wa = rendezvous_weight(pipeline, partition, c.nodes[a].name);
  auto wb = rendezvous_weight(pipeline, partition, c.nodes[b].name);
  return wa != wb ? wa > wb : c.nodes[a].name < c.nodes[b].name;
}

/// The candidate with the highest weight for the partition; nullopt when there is none.
node_slot highest(const cluster_config& c, const std::string& pipeline, size_t partition,
                  const std::vector<size_t>& candidates) {
  node_slot best;
  for (auto i : candidates)
    if (!best || better(c, pipeline, partition, i, *best))
      best = i;
  return best;
}

struct aggregate_nodes {
  std::vector<size_t> all_regular;   ///< non-spare aggregate nodes, alive or not
  std::vector<size_t> alive_regular; ///< the alive ones among them
  std::vector<size_t> alive_spares;
};

aggregate_nodes aggregate_nodes_of(const cluster_config& c, const std::vector<bool>& alive) {
  aggregate_nodes out;
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    const auto& n = c.nodes[i];
    if (!n.aggregate)
      continue;
    if (n.spare) {
      if (alive[i])
        out.alive_spares.push_back(i);
    } else {
      out.all_regular.push_back(i);
      if (alive[i])
        out.alive_regular.push_back(i);
    }
  }
  return out;
}

/// A partition belongs to its first-ranked non-spare aggregate node, alive or not: that node
/// alone decides whether the partition moves. When it is down, the partition goes to the
/// first-ranked alive spare, or, without one, to the first-ranked alive non-spare node.
node_slot place_partition(const cluster_config& c, const aggregate_nodes& nodes,
                          const std::vector<bool>& alive, const std::string& pipeline,
                          size_t partition) {
  auto home = highest(c, pipeline, partition, nodes.all_regular);
  if (home && alive[*home])
    return home;
  if (auto spare = highest(c, pipeline, partition, nodes.alive_spares))
    return spare;
  return highest(c, pipeline, partition, nodes.alive_regular);
}

} // namespace

std::vector<partition_move> moves(const placement& before, const placement& after) {
  std::vector<partition_move> out;
  auto pipelines = std::min(before.pipelines.size(), after.pipelines.size());
  for (size_t k = 0; k < pipelines; ++k) {
    const auto& b = before.pipelines[k].partitions;
    const auto& a = after.pipelines[k].partitions;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
      if (a[i] != b[i])
        out.push_back({k, i, b[i], a[i]});
  }
  return out;
}

uint64_t rendezvous_weight(const std::string& pipeline, size_t partition, const std::string& node) {
  // pipeline name, a zero byte, the partition as 8 bytes little endian, the node name.
  std::string bytes = pipeline;
  bytes.push_back('\0');
  auto p = static_cast<uint64_t>(partition);
  for (int i = 0; i < 8; ++i)
    bytes.push_back(static_cast<char>((p >> (8 * i)) & 0xff));
  bytes += node;
  return XXH64(bytes.data(), bytes.size(), weight_seed);
}

std::vector<pipeline_shape> shapes_of(const cluster_config& c) {
  std::vector<pipeline_shape> out;
  for (const auto& p : c.pipeline.pipelines)
    out.push_back({p.name, p.partitions});
  return out;
}

bool placement::complete() const {
  auto placed = [](const node_slot& s) { return s.has_value(); };
  return coordinator &&
         std::all_of(pipelines.begin(), pipelines.end(), [&](const pipeline_placement& p) {
           return p.ingest && std::all_of(p.partitions.begin(), p.partitions.end(), placed);
         });
}

placement place(const cluster_config& c, const std::vector<pipeline_shape>& pipelines,
                const std::vector<bool>& alive) {
  assert(alive.size() == c.nodes.size());
  placement out;
  auto only_if_alive = [&](size_t i) {
    return i < alive.size() && alive[i] ? node_slot{i} : node_slot{};
  };
  out.coordinator = only_if_alive(c.coordinator());
  auto nodes = aggregate_nodes_of(c, alive);
  for (const auto& shape : pipelines) {
    pipeline_placement p;
    p.name = shape.name;
    p.ingest = only_if_alive(c.ingest());
    p.partitions.reserve(shape.partitions);
    for (size_t i = 0; i < shape.partitions; ++i)
      p.partitions.push_back(place_partition(c, nodes, alive, shape.name, i));
    out.pipelines.push_back(std::move(p));
  }
  return out;
}

} // namespace weir::cluster
