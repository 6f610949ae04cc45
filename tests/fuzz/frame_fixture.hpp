#pragma once

// The frames fuzz target and tests/frame_test.cpp share this: a pipeline shape (sources,
// partitions, aggregates), real frames of every struct that crosses between actors (the seed
// corpus tests/fuzz/corpus/frames/ is made of them), and decode_as<T>, which hands a frame to
// the decode function of the actor that receives a T and reads everything it gives, so that a
// read out of bounds shows under ASan.

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <capnp/message.h>

#include "actors/actors.hpp"
#include "actors/aggregator.hpp"
#include "actors/core/dead_letters.hpp"
#include "actors/core/result_pack.hpp"
#include "actors/frame.hpp"
#include "actors/preprocess.hpp"
#include "actors/runtime.hpp"
#include "actors/updater.hpp"
#include "actors/warehouse.hpp"
#include "schema/batch.capnp.h"

namespace weir::fuzz {

constexpr size_t fixture_sources = 2;     ///< configured sources of the pipeline
constexpr size_t fixture_partitions = 2;  ///< its window-aggregator partitions
constexpr uint32_t fixture_partition = 1; ///< the partition an EventBatch is decoded for
inline const std::string fixture_pipeline = "p";

/// count, sum(x), avg(y), distinct(card): two values and one hash per event.
inline aggregate_layout fixture_layout() {
  aggregate_layout l;
  l.value_col = {-1, 0, 1, -1};
  l.hash_col = {-1, -1, -1, 0};
  l.value_width = 2;
  l.hash_width = 1;
  return l;
}

/// A PreprocessEpoch of epoch `e` as preprocess sends it: offsets, dead letters, dedupe, state.
inline frame pre_epoch_frame(uint64_t e, bool letters) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::PreprocessEpoch>();
  c.setEpoch(e);
  c.setMarkerKind(to_wire(marker_kind::normal));
  auto offs = c.initOffsets(2);
  offs[0].setSource(1);
  offs[0].setOffset(4096 * e);
  offs[1].setSource(2);
  offs[1].setOffset(17);
  dead_letter_pack pack;
  if (letters) {
    pack.add(1, 120, "bad number in field x: 'q'", "k1,17,q,3");
    pack.add(2, 7, "missing field k", ",18,2,3");
  }
  if (auto b = pack.padded_bytes(); !b.empty())
    c.setDeadLetterPack(as_data(b));
  auto ids = c.initDedupeAdded(2);
  ids[0].setId(0x1234);
  ids[0].setTime(1'000'000);
  ids[1].setId(0x5678);
  ids[1].setTime(2'000'000);
  c.setDedupeExpireBefore(500'000);
  c.setState(as_data("preprocess state"));
  return to_frame<schema::PreprocessEpoch>(mb);
}

/// An AggregatorEpoch of epoch `e` from `partition`: fired results and state changes.
inline frame agg_epoch_frame(uint64_t e, uint32_t partition, size_t results) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<schema::AggregatorEpoch>();
  c.setEpoch(e);
  c.setPartition(partition);
  result_pack rs;
  for (size_t i = 0; i < results; ++i)
    rs.push_back({"key" + std::to_string(i),
                  int64_t(i) * 3600'000'000,
                  int64_t(i + 1) * 3600'000'000,
                  1,
                  {2.0, 40.5, 20.25, 2.0}});
  if (auto b = rs.padded_bytes(); !b.empty())
    c.setResultPack(as_data(b));
  c.setState(as_data("meta"));
  c.setStatePuts(as_data("put rows"));
  c.setStateDels(as_data("del keys"));
  c.setStateMemory(4096);
  c.setStateRows(results);
  return to_frame<schema::AggregatorEpoch>(mb);
}

/// The seed frames: name (its struct first) and frame.
inline std::vector<std::pair<std::string, frame>> seed_frames() {
  std::vector<std::pair<std::string, frame>> out;
  // RawChunk, as ingest sends them: lines with the csv header, a stdin chunk starting with its
  // header line, a long line's head, a chunk of a source bound while running.
  auto chunk = [&](const std::string& name, uint32_t source, uint64_t offset, std::string data,
                   const char* header, uint32_t header_len, uint64_t long_span,
                   uint32_t config_index) {
    capnp::MallocMessageBuilder mb;
    auto c = mb.initRoot<schema::RawChunk>();
    c.setSource(source);
    c.setOffset(offset);
    c.setData(as_data(data));
    if (header != nullptr)
      c.setHeader(header);
    c.setHeaderLen(header_len);
    c.setLongSpan(long_span);
    c.setLongLength(long_span > 0 ? long_span - 1 : 0);
    c.setConfigIndex(config_index);
    out.emplace_back("RawChunk-" + name, to_frame<schema::RawChunk>(mb));
  };
  chunk("lines", 1, 0, "k1,1700000000,3.5,c1\nk2,1700000001,4.5,c2\n", "k,ts,x,card", 0, 0, 1);
  chunk("stdin_header", 2, 512, "k,ts,x,card\nk3,1700000002,1,c3\n", nullptr, 12, 0, 2);
  chunk("long_line", 1, 4096, std::string(64, 'z'), nullptr, 0, 5'000'000, 1);
  chunk("unbound", 7, 0, "k4,1700000003,2,c4\n", nullptr, 0, 0, 0);
  // EventBatch, from the encoder preprocess uses.
  auto layout = fixture_layout();
  for (size_t n : {size_t{0}, size_t{1}, size_t{5}}) {
    event_columns cols;
    for (size_t r = 0; r < n; ++r) {
      cols.time.push_back(1'700'000'000'000'000 + int64_t(r) * 1'000'000);
      cols.wm_before.push_back(1'699'999'990'000'000);
      cols.key_bytes += "key" + std::to_string(r % 3);
      cols.key_end.push_back(static_cast<uint32_t>(cols.key_bytes.size()));
      cols.key_hash.push_back(0x9e3779b97f4a7c15ULL * (r % 3 + 1));
      cols.values.push_back(1.5 * double(r));
      cols.values.push_back(r == 2 ? std::nan("") : double(r));
      cols.hashes.push_back(0xabcdef00ULL + r);
    }
    record_span origin{0, 1, 100, 100 + 40 * n, n == 1};
    out.emplace_back(
      "EventBatch-" + std::to_string(n),
      encode_event_batch(fixture_partition, 1'699'999'995'000'000, cols, layout, origin));
  }
  // EpochMarker, as preprocess sends them to its partitions: a normal one, the final one (its
  // watermark past every window) and one of a dry run (no checkpoint); and as ingest sends them
  // to preprocess, with the offsets it reached.
  auto marker = [&](const std::string& name, uint64_t e, marker_kind kind, timestamp w,
                    bool checkpoint, std::vector<std::pair<uint32_t, uint64_t>> offsets = {}) {
    epoch_marker m;
    m.epoch = e;
    m.kind = kind;
    m.watermark = w;
    m.checkpoint = checkpoint;
    m.offsets = std::move(offsets);
    out.emplace_back("EpochMarker-" + name, encode_marker(m));
  };
  marker("normal", 3, marker_kind::normal, 1'699'999'995'000'000, true);
  marker("final", 4, marker_kind::final, 1'700'003'600'000'000, true);
  marker("dry_stop", 5, marker_kind::stop, min_timestamp, false);
  marker("ingest", 6, marker_kind::normal, 0, true, {{1, 4096}, {2, 0}, {7, 1'000'000'007}});
  out.emplace_back("PreprocessEpoch-letters", pre_epoch_frame(3, true));
  out.emplace_back("PreprocessEpoch-quiet", pre_epoch_frame(4, false));
  out.emplace_back("AggregatorEpoch-results", agg_epoch_frame(3, 0, 3));
  out.emplace_back("AggregatorEpoch-none", agg_epoch_frame(4, 1, 0));
  // QueryResult and DeadLetters, as the warehouse actor answers.
  {
    capnp::MallocMessageBuilder mb;
    auto q = mb.initRoot<schema::QueryResult>();
    q.setPipeline(fixture_pipeline);
    q.setWindow("tumbling 1h");
    auto names = q.initAggregates(2);
    names.set(0, "count");
    names.set(1, "sum_x");
    auto rows = q.initRows(3);
    for (unsigned i = 0; i < 3; ++i)
      encode_result(
        rows[i],
        {"k" + std::to_string(i), 3600'000'000, 7200'000'000, i + 1, {double(i), 2.5 * i}});
    out.emplace_back("QueryResult-rows", to_frame<schema::QueryResult>(mb));
  }
  {
    capnp::MallocMessageBuilder mb;
    auto list = mb.initRoot<schema::DeadLetters>().initLetters(2);
    for (unsigned i = 0; i < 2; ++i) {
      list[i].setPipeline(fixture_pipeline);
      list[i].setSequence(i + 1);
      encode_dead_letter(list[i].initLetter(),
                         {1, 100u * i, "raw line " + std::to_string(i), "bad field"});
    }
    out.emplace_back("DeadLetters-two", to_frame<schema::DeadLetters>(mb));
  }
  return out;
}

/// Sums bytes so that every byte a decoder gave is read (ASan checks the reads).
inline uint64_t touch(const void* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i)
    s += static_cast<const unsigned char*>(p)[i];
  return s;
}

inline uint64_t touch(std::string_view s) {
  return touch(s.data(), s.size());
}

inline uint64_t touch(const event_view& v) {
  uint64_t s = 0;
  for (size_t r = 0; r < v.n; ++r) {
    s += static_cast<uint64_t>(v.time[r] ^ v.wm_before[r]) + v.key_hash[r] + touch(v.key(r));
    s += touch(v.values + r * v.value_width, v.value_width * sizeof(double));
    s += touch(v.hashes + r * v.hash_width, v.hash_width * sizeof(uint64_t));
  }
  return s;
}

/// Hands `f` to the decode function of the actor that receives a T (as the fixture pipeline's
/// actor would) and reads all it gives. Returns the decode's error.
template <class T>
caf::error decode_as(const frame& f, uint64_t& sink);

template <>
inline caf::error decode_as<schema::RawChunk>(const frame& f, uint64_t& sink) {
  raw_chunk c;
  auto err = decode_chunk(f, fixture_sources, c);
  if (!err) {
    sink += touch(c.data) + touch(c.header.value_or("")) + c.data.substr(c.header_len).size();
    sink += c.offset + c.long_span + c.config_index;
  }
  return err;
}

template <>
inline caf::error decode_as<schema::EventBatch>(const frame& f, uint64_t& sink) {
  event_view v;
  record_span origin;
  auto err = decode_batch(f, fixture_layout(), 0, fixture_partition, v, origin);
  if (!err)
    sink += touch(v) + origin.begin;
  return err;
}

template <>
inline caf::error decode_as<schema::EpochMarker>(const frame& f, uint64_t& sink) {
  // As preprocess decodes a marker from ingest (a partition's bound of 0 refuses more).
  epoch_marker m;
  auto err = decode_marker(f, m, max_marker_offsets);
  if (!err) {
    sink += m.epoch + static_cast<uint64_t>(m.watermark) + static_cast<uint64_t>(m.kind) +
            (m.checkpoint ? 1 : 0);
    for (auto& [source, offset] : m.offsets)
      sink += source + offset;
  }
  return err;
}

template <>
inline caf::error decode_as<schema::PreprocessEpoch>(const frame& f, uint64_t& sink) {
  auto e = decode_pre_epoch_head(f);
  if (!e)
    return e.error();
  marker_kind kind = marker_kind::normal;
  auto c = assemble_commit(fixture_pipeline, f, {}, kind);
  if (!c)
    return c.error();
  for (auto d : c->dead_letters)
    sink += touch(d.raw) + touch(d.reason) + d.offset;
  sink += c->offsets.size() + c->dedupe_added.size() + c->states.size();
  return caf::none;
}

template <>
inline caf::error decode_as<schema::AggregatorEpoch>(const frame& f, uint64_t& sink) {
  auto head = decode_agg_epoch_head(f, fixture_partitions);
  if (!head)
    return head.error();
  marker_kind kind = marker_kind::normal;
  auto c = assemble_commit(fixture_pipeline, pre_epoch_frame(head->first, false), {f}, kind);
  if (!c)
    return c.error();
  for (auto w : c->results) {
    sink += touch(w.key) + touch(w.stored);
    for (size_t i = 0; i < w.count; ++i)
      sink += w.value(i) > 0 ? 1 : 0;
  }
  for (const auto& w : c->windows)
    sink += touch(w.puts) + touch(w.dels);
  return caf::none;
}

template <>
inline caf::error decode_as<schema::QueryResult>(const frame& f, uint64_t& sink) {
  query_request req;
  req.pipeline = fixture_pipeline;
  req.limit = 100;
  query_answer a;
  auto err = decode_query_page(f, req, a);
  if (!err)
    for (const auto& r : a.rows)
      sink += touch(r.key) + r.values.size();
  return err;
}

template <>
inline caf::error decode_as<schema::DeadLetters>(const frame& f, uint64_t& sink) {
  std::vector<dead_letter_row> rows;
  auto err = decode_letters_page(f, fixture_pipeline, 0, 100, rows);
  if (!err)
    for (const auto& r : rows)
      sink += touch(r.letter.raw) + touch(r.letter.reason) + r.seq;
  return err;
}

/// decode_as<T> for each T of `roots` in turn, the frame's type set to T's.
template <class... Ts>
void decode_as_each(frame& f, uint64_t& sink, type_list<Ts...>) {
  ((f.type = capnp::typeId<Ts>(), void(decode_as<Ts>(f, sink))), ...);
}

template <class... Ts>
caf::error decode_as_matching(const frame& f, uint64_t& sink, type_list<Ts...>) {
  caf::error err = make_error(errc::decode, frame_type_name(f.type) + " is no frame root");
  ((f.type == capnp::typeId<Ts>() ? void(err = decode_as<Ts>(f, sink)) : void()), ...);
  return err;
}

/// decode_as<T> for the T the frame says it holds.
inline caf::error decode_as_its_type(const frame& f, uint64_t& sink) {
  return decode_as_matching(f, sink, frame_roots{});
}

} // namespace weir::fuzz
