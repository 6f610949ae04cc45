@0xc14ce5eeb1297e96;
# Batches that travel between Weir's actors (and, later, between nodes). Columns are Data blobs
# holding little-endian arrays, so that a reader can use them in place without copying.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("weir::schema");

# Raw bytes of one source, whole lines, as landed in the lake: ingest -> preprocess.
struct RawChunk {
  source @0 :UInt32;        # source id (lake source table)
  offset @1 :UInt64;        # byte offset of data[0] in the source
  data @2 :Data;
  header @3 :Text;          # csv: the header line of this source, when it has one
  headerLen @4 :UInt32;     # data starts with a header line of this many bytes (a csv stream
                            # on stdin: each run's stream begins with its own header)
  longSpan @5 :UInt64;      # > 0: the chunk stands for ONE line longer than max_line_bytes that
                            # covers this many bytes of the source (line end included); data
                            # holds only its first bytes
  longLength @6 :UInt64;    # that line's length without its line end
  configIndex @7 :UInt32;   # 1 + index of the configured source this source reads (0: unknown);
                            # binds a source id that appeared while running (a new generation
                            # of a rotated file, a file newly matching a glob)
}

# Accepted events of one key partition, in source order: preprocess -> window-aggregator.
struct EventBatch {
  partition @0 :UInt32;
  count @1 :UInt32;
  watermark @2 :Int64;      # watermark after the last record of the batch
  time @3 :Data;            # Int64[count], event time in microseconds
  wmBefore @4 :Data;        # Int64[count], watermark just before each record
  keyHash @5 :Data;         # UInt64[count]
  keyEnd @6 :Data;          # UInt32[count], end of each key in keyBytes
  keyBytes @7 :Data;
  valueWidth @8 :UInt32;
  values @9 :Data;          # Float64[count * valueWidth]
  hashWidth @10 :UInt32;
  hashes @11 :Data;         # UInt64[count * hashWidth]
  # Where the records came from, so that a failure can name them (actors/core/poison.hpp):
  # bytes [originBegin, originEnd) of lake source originSource; originLine when one line.
  originSource @12 :UInt32;
  originBegin @13 :UInt64;
  originEnd @14 :UInt64;
  originLine @15 :Bool;
}

struct DeadLetter {
  source @0 :UInt32;
  offset @1 :UInt64;
  raw @2 :Data;
  reason @3 :Text;
}

struct WindowResult {
  key @0 :Data;
  start @1 :Int64;
  end @2 :Int64;
  version @3 :UInt32;
  values @4 :List(Float64);
}

struct SourceOffset {
  source @0 :UInt32;
  offset @1 :UInt64;
}

struct DedupeEntry {
  id @0 :UInt64;
  time @1 :Int64;
}

# What preprocess contributes to epoch e: offsets reached, dead letters, dedupe changes and its
# own state.
struct PreprocessEpoch {
  epoch @0 :UInt64;
  offsets @1 :List(SourceOffset);
  deadLetters @2 :List(DeadLetter);  # no longer filled: see deadLetterPack
  dedupeAdded @3 :List(DedupeEntry);
  dedupeExpired @4 :List(UInt64);
  state @5 :Data;           # watermark and counters
  final @6 :Bool;           # the sources are exhausted (bounded run)
  kind @7 :UInt8;           # no longer filled: see markerKind
  dedupeExpireBefore @8 :Int64 = -9223372036854775808;
                            # ids with an event time below this are expired (dedupeExpired is
                            # no longer filled: the store expires by time)
  deadLetterPack @9 :Data;  # the epoch's dead letters, packed one after the other in the
                            # layout of actors/core/dead_letters.hpp (one blob, read in place)
  markerKind @10 :MarkerKind; # how the epoch ends
}

# How an epoch ends (weir::marker_kind).
enum MarkerKind {
  normal @0;  # commit and go on
  stop @1;    # commit and stop: windows the watermark has not closed stay open
  final @2;   # the end of the data: every open window fires, commit, stop
}

# The end of epoch e: ingest -> preprocess after the chunks of the epoch, then preprocess ->
# every window-aggregator partition after the batches of the epoch (the same frame to each).
struct EpochMarker {
  epoch @0 :UInt64;
  kind @1 :MarkerKind;
  watermark @2 :Int64;      # the pipeline's watermark at the end of the epoch (set by preprocess)
  checkpoint @3 :Bool;      # false in a dry run: the contribution carries no operator state
  offsets @4 :List(SourceOffset);
                            # set by ingest: source id -> offset reached; empty in the frames
                            # preprocess sends to partitions (they commit no offsets)
}

# What one window-aggregator partition contributes to epoch e: fired results and its state.
struct AggregatorEpoch {
  epoch @0 :UInt64;
  partition @1 :UInt32;
  results @2 :List(WindowResult);  # no longer filled: see resultPack
  state @3 :Data;           # the operator's meta value (watermark, row count)
  statePuts @4 :Data;       # window-state rows changed this epoch (see window_operator.hpp)
  stateDels @5 :Data;       # window-state row keys deleted this epoch
  stateMemory @6 :UInt64;   # bytes of memory the operator's state holds
  stateRows @7 :UInt64;     # slices and sessions it holds
  resultPack @8 :Data;      # the results fired, packed one after the other in the layout of
                            # actors/core/result_pack.hpp, in results-table key order
}

# The answer of the warehouse actor to a query.
struct QueryResult {
  pipeline @0 :Text;
  aggregates @1 :List(Text);
  window @2 :Text;
  rows @3 :List(WindowResult);
}

struct PipelineDeadLetter {
  pipeline @0 :Text;
  sequence @1 :UInt64;
  letter @2 :DeadLetter;
}

# The answer of the warehouse actor to a dead-letter listing.
struct DeadLetters {
  letters @0 :List(PipelineDeadLetter);
}
