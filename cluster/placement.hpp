#pragma once

/// Where each actor of each pipeline runs in a cluster: a pure function of the cluster config,
/// the pipelines' shapes and which nodes are alive. Every node computes it for itself and gets
/// the same answer, so placing needs no messages; when membership changes, each node computes
/// the new placement and the partitions whose node changed move.
///
/// - coordinator, updater and warehouse: on the coordinator node;
/// - a pipeline's ingest (and its lake): on the ingest node, the one node with that role;
/// - aggregator partitions: by rendezvous hashing over the aggregate nodes (see placement.cpp);
///   spares hold partitions only while a non-spare aggregate node is down.
///
/// Ingest and the coordinator do not move when their node is down: their state (the lake, the
/// warehouse) is on that node's disk, so the pipeline waits for the node to return.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/config.hpp"

namespace weir::cluster {

/// What placement needs to know of a pipeline.
struct pipeline_shape {
  std::string name;
  size_t partitions = 0;
};

/// The pipeline shapes of a cluster's pipeline config (partitions are fixed in a cluster).
std::vector<pipeline_shape> shapes_of(const cluster_config& c);

/// A node index into cluster_config::nodes, or nullopt: no alive node can hold it now.
using node_slot = std::optional<size_t>;

struct pipeline_placement {
  std::string name;
  node_slot ingest;
  std::vector<node_slot> partitions; ///< the node of each aggregator partition, by index
};

struct placement {
  node_slot coordinator;                     ///< coordinator, updater and warehouse
  std::vector<pipeline_placement> pipelines; ///< in the order of the shapes given

  /// Whether every actor has a node: the pipelines can run.
  bool complete() const;
};

/// Places every actor of `pipelines` on the nodes of `c`; `alive[i]` tells whether node i
/// (of c.nodes) is up. Deterministic: the same inputs give the same placement on every node,
/// whatever the order of the [[node]] tables.
placement place(const cluster_config& c, const std::vector<pipeline_shape>& pipelines,
                const std::vector<bool>& alive);

/// A partition whose node changed between two placements.
struct partition_move {
  size_t pipeline = 0; ///< index into placement::pipelines
  size_t partition = 0;
  node_slot from;
  node_slot to;
};

/// The partitions that `after` places elsewhere than `before` (two placements of the same
/// pipelines): what the nodes must hand over when membership changes.
std::vector<partition_move> moves(const placement& before, const placement& after);

/// The rendezvous weight of node `node` for partition `partition` of pipeline `pipeline`: the
/// partition goes to the candidate with the highest weight (ties: the smaller name).
uint64_t rendezvous_weight(const std::string& pipeline, size_t partition, const std::string& node);

} // namespace weir::cluster
