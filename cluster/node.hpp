#pragma once

/// A node of a Weir cluster (`weir node`): the node actor every node publishes on its address,
/// and the run of the coordinating node, which places the window-aggregator partitions of each
/// generation on the nodes (cluster/placement.hpp) over CAF's own distribution (BASP, with TLS
/// through caf::openssl unless the cluster is insecure).
///
/// A peer reaches nothing but the node actor until it has proved the cluster secret with the
/// challenge and response of cluster/auth.hpp, in both directions; a partition is spawned only
/// for a peer that did. Heartbeats are BASP's own (middleman.heartbeat-interval, from the
/// cluster's `heartbeat`); a peer silent for `failure_timeout` is disconnected, which takes its
/// partitions down, and the supervisor restarts the generation on the nodes that are left.
///
/// The ingest of every pipeline runs on the node with the ingest role, next to its sources and
/// with its lake in that node's store. When that is not the coordinating node, the coordinating
/// node opens only its warehouse and asks the ingest node for each generation's ingest actors;
/// the lake is bound to the warehouse's store identity, so that committed offsets never meet a
/// lake they do not belong to.

#include <atomic>
#include <memory>
#include <string>

#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/actors.hpp"
#include "actors/core/types.hpp"
#include "actors/runtime.hpp"
#include "cluster/config.hpp"

namespace weir::cluster {

using hello_atom = caf::atom_constant<caf::atom("hello")>;
using auth_atom = caf::atom_constant<caf::atom("auth")>;
using place_atom = caf::atom_constant<caf::atom("place")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using ingest_atom = caf::atom_constant<caf::atom("ingest")>;

/// The actor each node publishes: the only one a peer can reach before it is authenticated.
using node_actor = caf::typed_actor<
  /// A peer's hello (cluster/auth.hpp): answered with this node's hello and this node's
  /// response to the peer's challenge.
  caf::replies_to<hello_atom, std::string>::with<std::string, std::string>,
  /// The peer's response to this node's challenge: true once verified; a refusal is logged
  /// and answered with an error.
  caf::replies_to<auth_atom, std::string>::with<bool>,
  /// Spawns partition `part` of pipeline `pipeline` from its restored state `snapshot`
  /// (window_operator::snapshot() bytes), contributing to `updater`; for authenticated nodes
  /// only. `shape` is the pipeline's fingerprint (pipeline_shape_of): a node whose own config
  /// differs refuses.
  caf::replies_to<place_atom, uint32_t, uint32_t, uint64_t, std::string,
                  updater_actor>::with<aggregator_actor>,
  /// Starts the ingest of one pipeline on the ingest node, with its lake there: an IngestRequest
  /// frame (schema/cluster.capnp) says which, where its sources resume and which store the lake
  /// belongs to; it sends to the preprocess actor and the coordinator given. The ingest of that
  /// pipeline started before is stopped first, so that one ingest at a time writes the lake.
  /// Answered with the actor and an IngestStarted frame; for the coordinating node only.
  caf::replies_to<ingest_atom, frame, preprocess_actor, coordinator_actor>::with<ingest_actor,
                                                                                 frame>,
  /// What the node holds and, on the coordinating node, how far the pipelines are: a
  /// NodeStatus frame (schema/cluster.capnp); for authenticated peers and tools.
  caf::replies_to<status_atom>::with<frame>>;

/// A fingerprint of what a partition of `p` computes: its definition (window, key, fields,
/// aggregates) and its partition count. Nodes running different configs disagree on it.
uint64_t pipeline_shape_of(const pipeline_config& p);

/// Makes `cfg` (before the actor system starts) load CAF's io module for cluster `c` and, unless
/// the cluster is insecure, caf::openssl with node `self`'s TLS files; BASP heartbeats follow the
/// cluster's heartbeat and failure_timeout.
void configure_system(caf::actor_system_config& cfg, const cluster_config& c, size_t self);

/// Runs node `c.self` of the cluster until `stop` is set. The coordinating node runs the
/// pipelines (as `weir run` does, with `opts`; its partitions placed on the nodes) and returns
/// when they end; every other node serves partitions until stopped.
caf::expected<std::vector<run_stats>> run_node(const cluster_config& c, run_options opts);

/// How far a pipeline is, as the coordinating node reports it.
struct pipeline_progress {
  std::string name;
  uint64_t last_epoch = 0;
  uint64_t windows = 0;
  timestamp watermark = min_timestamp;
  timestamp max_time = min_timestamp;
  uint32_t restarts = 0;
};

/// What `weir status --cluster` shows of one node.
struct node_report {
  std::string name;
  std::string address;
  std::string roles;
  bool up = false;
  std::string error;                                        ///< why it is not up
  int64_t uptime_us = 0;                                    ///< since its node actor started
  std::vector<std::pair<std::string, uint32_t>> partitions; ///< (pipeline, partition) held
  std::vector<std::string> ingests; ///< pipelines whose ingest runs here (not on the coordinator)
  std::vector<pipeline_progress> pipelines; ///< the coordinating node only
};

/// Asks every node of the cluster for its status, as a tool (status_client). With TLS, the
/// certificate of node `c.self` is presented (the tool runs on that node's machine).
caf::expected<std::vector<node_report>> cluster_status(const cluster_config& c);

} // namespace weir::cluster
