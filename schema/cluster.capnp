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
  ingests @4 :List(Text);   # the pipelines whose ingest runs here (the ingest node of a cluster
                            # whose ingest is not on the coordinating node)
}

# The coordinating node asks the ingest node to start the ingest of one pipeline for a
# generation (cluster/node.hpp): where its sources resume, and which store its lake belongs to.
struct IngestRequest {
  pipeline @0 :UInt32;           # index in the pipeline config
  shape @1 :UInt64;              # the pipeline's fingerprint (pipeline_shape_of)
  storeIdentity @2 :Data;        # the identity of the coordinating node's warehouse
  warehouseHoldsData @3 :Bool;   # it holds committed epochs: a new lake cannot go with it
  committed @4 :List(LakeOffset);# committed offsets: lake source id -> offset
  finalFlush @5 :Bool;           # the run is final (weir node --final): end with a final marker
}

struct LakeOffset {
  source @0 :UInt32;
  offset @1 :UInt64;
}

# The ingest node's answer: the sources its lake knows (id -> key), for where the run resumes.
struct IngestStarted {
  sources @0 :List(LakeSource);
}

struct LakeSource {
  id @0 :UInt32;
  key @1 :Text;
}
