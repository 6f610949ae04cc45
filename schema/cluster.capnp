@0x85c797aa3a803261;
# Messages between the nodes of a cluster that are not the pipeline's own (cluster/node.hpp).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("weir::schema");

# One window-aggregator partition a node holds.
struct HeldPartition {
  pipeline @0 :Text;
  partition @1 :UInt32;
}

# What the coordinating node knows of one pipeline: its last committed epoch and where its
# event time stands.
struct PipelineProgress {
  name @0 :Text;
  lastEpoch @1 :UInt64;
  windows @2 :UInt64;       # result rows committed
  watermark @3 :Int64;      # microseconds since 1970; INT64_MIN: none yet
  maxTime @4 :Int64;        # the largest accepted event time; INT64_MIN: none yet
  restarts @5 :UInt32;      # restarts of the run so far
}

# A node's answer to `weir status --cluster`.
struct NodeStatus {
  node @0 :Text;
  uptimeUs @1 :Int64;
  partitions @2 :List(HeldPartition);
  pipelines @3 :List(PipelineProgress); # the coordinating node while it runs; empty elsewhere
}
