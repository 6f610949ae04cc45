// Frames and their decode limits (actors/frame.hpp, docs/architecture.md "Frames and decode
// limits"): what is refused, with which message, and that every real frame decodes within the
// limits. The decode functions of the actors get frames whose fields are out of range.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <capnp/message.h>

#include "actors/core/error.hpp"
#include "tests/fuzz/frame_fixture.hpp"

using namespace weir;
using namespace weir::fuzz;

namespace {

/// The text of an error, and CHECKs that it is errc::decode.
std::string decode_failure(const caf::error& err) {
  REQUIRE(err);
  CHECK(err.code() == static_cast<uint8_t>(errc::decode));
  return render(err);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

frame event_batch(size_t events) {
  event_columns c;
  for (size_t r = 0; r < events; ++r) {
    c.time.push_back(int64_t(r));
    c.wm_before.push_back(0);
    c.key_hash.push_back(r);
    c.key_bytes += "k";
    c.key_end.push_back(static_cast<uint32_t>(c.key_bytes.size()));
    c.values.insert(c.values.end(), {1.0, 2.0});
    c.hashes.push_back(r);
  }
  return encode_event_batch(fixture_partition, 0, c, fixture_layout());
}

/// A frame that reads as an EventBatch, given `fn` to set its fields.
template <class F>
frame batch_with(F fn) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::EventBatch>();
  fn(b);
  return to_frame<schema::EventBatch>(mb);
}

/// Reads the EventBatch `f` the way the aggregator does (nothing kept).
caf::error read_batch(const frame& f) {
  return decode_frame<schema::EventBatch>(
    f, [](schema::EventBatch::Reader b) { (void)b.getTime().size(); });
}

} // namespace

TEST_CASE("frame: every real frame decodes within the limits, as its struct") {
  for (auto& [name, f] : seed_frames()) {
    INFO(name);
    uint64_t sink = 0;
    CHECK(f.type != 0);
    auto err = decode_as_its_type(f, sink);
    CHECK_FALSE(err);
  }
}

TEST_CASE("frame: the limits refuse what untrusted bytes can do, with a clear errc::decode") {
  const auto good = event_batch(20);
  REQUIRE_FALSE(read_batch(good));
  SECTION("an oversized frame is refused before it is read") {
    decode_limits small;
    small.max_words = good.words.size() - 1;
    auto text = decode_failure(decode_frame<schema::EventBatch>(
      good, [](schema::EventBatch::Reader) { FAIL("read past the size limit"); }, small));
    CHECK(text == "undecodable EventBatch frame: a frame of " +
                    std::to_string(good.words.size() * 8) + " bytes is over the limit of " +
                    std::to_string(small.max_words * 8));
    CHECK(decode_limits{}.max_words * 8 == uint64_t{1} << 30); // as docs/architecture.md says
  }
  SECTION("a truncated frame") {
    for (size_t keep : {size_t{1}, good.words.size() / 2, good.words.size() - 1}) {
      auto cut = good;
      cut.words.resize(keep);
      auto text = decode_failure(read_batch(cut));
      INFO(text);
      CHECK(has(text, "undecodable EventBatch frame: "));
      CHECK(has(text, "ends prematurely"));
    }
  }
  SECTION("a frame whose segment table lies") {
    // Word 0: segment count - 1 (low half), size of segment 0 in words (high half).
    auto longer = good;
    longer.words[0] = (uint64_t{1} << 40) | (longer.words[0] & 0xffffffffu);
    auto more = good;
    more.words[0] = (more.words[0] & ~uint64_t{0xffffffffu}) | 100'000u;
    for (const auto& f : {longer, more}) {
      auto text = decode_failure(read_batch(f));
      INFO(text);
      CHECK(has(text, "undecodable EventBatch frame: "));
      CHECK(has(text, "ends prematurely"));
    }
  }
  SECTION("a frame of another struct") {
    auto text = decode_failure(read_batch(seed_frames().back().second));
    CHECK(text == "undecodable EventBatch frame: it holds DeadLetters, not EventBatch");
    auto untyped = good;
    untyped.type = 0;
    CHECK(decode_failure(read_batch(untyped)) ==
          "undecodable EventBatch frame: it holds an untyped frame, not EventBatch");
    auto unknown = good;
    unknown.type = 0x0123456789abcdefULL;
    CHECK(decode_failure(read_batch(unknown)) ==
          "undecodable EventBatch frame: it holds struct @0x0123456789abcdef, not EventBatch");
  }
  SECTION("an empty frame") {
    frame empty;
    empty.type = good.type;
    CHECK(decode_failure(read_batch(empty)) == "undecodable EventBatch frame: empty frame");
  }
  SECTION("words after the message") {
    auto longer = good;
    longer.words.push_back(0);
    CHECK(decode_failure(read_batch(longer)) ==
          "undecodable EventBatch frame: the frame has words after its message");
  }
  SECTION("reads beyond a small multiple of the frame's size (amplification)") {
    // Each getRows() counts the rows' words again: a reader made to walk them many times runs
    // out, as one walking pointers that all lead to the same bytes would.
    const auto seeds = seed_frames();
    auto at = std::find_if(seeds.begin(), seeds.end(),
                           [](const auto& s) { return s.first == "QueryResult-rows"; });
    REQUIRE(at != seeds.end());
    const auto& page = at->second;
    size_t walks = 0;
    auto err = decode_frame<schema::QueryResult>(page, [&](schema::QueryResult::Reader q) {
      for (walks = 0; walks < 100; ++walks)
        for (auto r : q.getRows())
          (void)r.getValues().size();
    });
    auto text = decode_failure(err);
    CHECK(has(text, "traversal limit"));
    CHECK(walks < 100);
    CHECK(walks >= 1); // a reader that reads each object once never comes near it
  }
}

TEST_CASE("frame: each actor's decoder refuses fields out of range instead of using them") {
  uint64_t sink = 0;
  SECTION("EventBatch (aggregator)") {
    auto wrong_partition = event_batch(3);
    event_view v;
    record_span origin;
    CHECK(has(decode_failure(decode_batch(wrong_partition, fixture_layout(), 0, 0, v, origin)),
              "a batch of partition 1 sent to partition 0"));
    auto short_column = batch_with([](schema::EventBatch::Builder b) {
      b.setPartition(fixture_partition);
      b.setCount(1'000'000);
      b.setValueWidth(2);
      b.setHashWidth(1);
      b.initTime(8);
    });
    CHECK(has(decode_failure(decode_as<schema::EventBatch>(short_column, sink)),
              "a column shorter than the batch's 1000000 events"));
    auto widths = batch_with([](schema::EventBatch::Builder b) {
      b.setPartition(fixture_partition);
      b.setValueWidth(0x40000000);
      b.setHashWidth(1);
    });
    CHECK(has(decode_failure(decode_as<schema::EventBatch>(widths, sink)),
              "value and hash widths 1073741824 and 1 where the pipeline has 2 and 1"));
    auto key_ends = batch_with([](schema::EventBatch::Builder b) {
      b.setPartition(fixture_partition);
      b.setCount(2);
      b.setValueWidth(2);
      b.setHashWidth(1);
      b.initTime(16);
      b.initWmBefore(16);
      b.initKeyHash(16);
      auto ends = b.initKeyEnd(8);
      ends[0] = 1; // key ends 1, then 0: out of order
      b.initKeyBytes(1);
      b.initValues(32);
      b.initHashes(16);
    });
    CHECK(has(decode_failure(decode_as<schema::EventBatch>(key_ends, sink)),
              "key ends out of order or past the key bytes"));
    for (int64_t t : {min_timestamp, int64_t{-62'167'219'200'000'001}, max_timestamp}) {
      event_columns c;
      c.time = {0, t};
      c.wm_before = {0, 0};
      c.key_hash = {1, 1};
      c.key_bytes = "kk";
      c.key_end = {1, 2};
      c.values = {1, 2, 3, 4};
      c.hashes = {1, 2};
      auto f = encode_event_batch(fixture_partition, 0, c, fixture_layout());
      CHECK(has(decode_failure(decode_as<schema::EventBatch>(f, sink)),
                "an event time outside the years 0000 to 9999"));
    }
  }
  SECTION("EpochMarker (preprocess, aggregator)") {
    auto marker = [](uint16_t kind, std::vector<std::pair<uint32_t, uint64_t>> offsets = {}) {
      capnp::MallocMessageBuilder mb;
      auto m = mb.initRoot<schema::EpochMarker>();
      m.setEpoch(7);
      m.setKind(static_cast<schema::MarkerKind>(kind));
      m.setWatermark(-5);
      auto offs = m.initOffsets(static_cast<unsigned>(offsets.size()));
      for (unsigned i = 0; i < offsets.size(); ++i) {
        offs[i].setSource(offsets[i].first);
        offs[i].setOffset(offsets[i].second);
      }
      return to_frame<schema::EpochMarker>(mb);
    };
    // The kinds MarkerKind knows map to marker_kind by value (normal 0, stop 1, final 2).
    for (uint16_t kind : {0, 1, 2}) {
      epoch_marker m;
      REQUIRE_FALSE(decode_marker(marker(kind), m, 0));
      CHECK(static_cast<uint16_t>(m.kind) == kind);
      CHECK(m.epoch == 7);
      CHECK(m.watermark == -5);
      CHECK_FALSE(m.checkpoint);
      CHECK(m.offsets.empty());
    }
    for (uint16_t kind : {3, 255, 65535}) {
      epoch_marker m;
      CHECK(decode_failure(decode_marker(marker(kind), m, 0)) ==
            "undecodable EpochMarker frame: a marker kind this build does not know (" +
              std::to_string(kind) + ")");
    }
    // What ingest encodes comes back whole, offsets in their order; what was in `got` before
    // is gone.
    epoch_marker sent;
    sent.epoch = 41;
    sent.kind = marker_kind::final;
    sent.watermark = max_timestamp;
    sent.checkpoint = true;
    for (uint32_t s = 0; s < 300; ++s)
      sent.offsets.emplace_back(s * 7919 % 1000, (uint64_t{s} << 40) + s);
    epoch_marker got;
    got.offsets = {{2, 200}};
    REQUIRE_FALSE(decode_marker(encode_marker(sent), got, 300));
    CHECK(got.epoch == 41);
    CHECK(got.kind == marker_kind::final);
    CHECK(got.watermark == max_timestamp);
    CHECK(got.checkpoint);
    REQUIRE(got.offsets.size() == 300);
    for (uint32_t s = 0; s < 300; ++s) {
      CHECK(got.offsets[s].first == s * 7919 % 1000);
      CHECK(got.offsets[s].second == (uint64_t{s} << 40) + s);
    }
    // The bound on offsets: up to max_offsets pass, one more is refused.
    const std::vector<std::pair<uint32_t, uint64_t>> three{{1, 10}, {2, 20}, {3, 30}};
    epoch_marker m;
    REQUIRE_FALSE(decode_marker(marker(0, three), m, 3));
    CHECK(m.offsets == three);
    CHECK(decode_failure(decode_marker(marker(0, three), m, 2)) ==
          "undecodable EpochMarker frame: 3 offsets, more than the 2 allowed");
    CHECK(decode_failure(decode_marker(marker(0, three), m, 0)) ==
          "undecodable EpochMarker frame: 3 offsets, more than the 0 allowed");
    CHECK(decode_failure(decode_marker(event_batch(1), m, max_marker_offsets)) ==
          "undecodable EpochMarker frame: it holds EventBatch, not EpochMarker");
  }
  SECTION("RawChunk (preprocess)") {
    auto chunk = [](uint32_t config_index, uint32_t header_len, uint64_t offset) {
      capnp::MallocMessageBuilder mb;
      auto c = mb.initRoot<schema::RawChunk>();
      c.setSource(9);
      c.setOffset(offset);
      c.setData(as_data("a,b\n"));
      c.setHeaderLen(header_len);
      c.setConfigIndex(config_index);
      return to_frame<schema::RawChunk>(mb);
    };
    CHECK_FALSE(decode_as<schema::RawChunk>(chunk(fixture_sources, 4, 0), sink));
    CHECK(has(decode_failure(decode_as<schema::RawChunk>(chunk(3, 0, 0), sink)),
              "source 9 bound to configured source 3 of 2"));
    CHECK(has(decode_failure(decode_as<schema::RawChunk>(chunk(1, 5, 0), sink)),
              "a header line of 5 bytes in 4 bytes of data"));
    CHECK(has(decode_failure(decode_as<schema::RawChunk>(chunk(1, 0, ~uint64_t{0} - 2), sink)),
              "bytes past the largest offset"));
  }
  SECTION("AggregatorEpoch and PreprocessEpoch (updater)") {
    CHECK(has(decode_failure(decode_agg_epoch_head(agg_epoch_frame(1, 2, 0), 2).error()),
              "partition 2 of a pipeline of 2"));
    marker_kind kind;
    auto other_epoch =
      assemble_commit("p", pre_epoch_frame(1, false), {agg_epoch_frame(2, 0, 1)}, kind);
    REQUIRE_FALSE(other_epoch);
    CHECK(has(decode_failure(other_epoch.error()), "contribution of epoch 2 to epoch 1"));
    capnp::MallocMessageBuilder mb;
    mb.initRoot<schema::PreprocessEpoch>().setDeadLetterPack(as_data("not a pack"));
    auto letters = assemble_commit("p", to_frame<schema::PreprocessEpoch>(mb), {}, kind);
    REQUIRE_FALSE(letters);
    CHECK(has(decode_failure(letters.error()), "dead letters that do not decode"));
  }
  SECTION("QueryResult and DeadLetters (clients)") {
    auto page = [](std::vector<window_result> rows, unsigned aggregates) {
      capnp::MallocMessageBuilder mb;
      auto q = mb.initRoot<schema::QueryResult>();
      q.initAggregates(aggregates);
      auto out = q.initRows(static_cast<unsigned>(rows.size()));
      for (unsigned i = 0; i < rows.size(); ++i)
        encode_result(out[i], rows[i]);
      return to_frame<schema::QueryResult>(mb);
    };
    const window_result a{"a", 0, 10, 1, {1.0}};
    const window_result b{"b", 0, 10, 1, {2.0}};
    query_request req;
    req.limit = 2;
    query_answer ans;
    CHECK_FALSE(decode_query_page(page({a, b}, 1), req, ans));
    CHECK(has(decode_failure(decode_query_page(page({b, a}, 1), req, ans)), "rows out of order"));
    CHECK(has(decode_failure(decode_query_page(page({a, a}, 1), req, ans)), "rows out of order"));
    CHECK(has(decode_failure(decode_query_page(page({a, b}, 2), req, ans)),
              "a row of 1 values for 2 aggregates"));
    req.limit = 1;
    CHECK(has(decode_failure(decode_query_page(page({a, b}, 1), req, ans)),
              "2 rows where 1 were asked for"));
    req.has_after = true;
    req.after_start = 0;
    req.after_end = 10;
    req.after_key = "a";
    CHECK(has(decode_failure(decode_query_page(page({a}, 1), req, ans)), "rows out of order"));
    CHECK_FALSE(decode_query_page(page({b}, 1), req, ans));
    auto letters = [](std::vector<std::pair<std::string, uint64_t>> rows) {
      capnp::MallocMessageBuilder mb;
      auto list = mb.initRoot<schema::DeadLetters>().initLetters(unsigned(rows.size()));
      for (unsigned i = 0; i < rows.size(); ++i) {
        list[i].setPipeline(rows[i].first);
        list[i].setSequence(rows[i].second);
      }
      return to_frame<schema::DeadLetters>(mb);
    };
    std::vector<dead_letter_row> got;
    CHECK_FALSE(decode_letters_page(letters({{"p", 4}, {"p", 9}}), "p", 3, 2, got));
    CHECK(has(decode_failure(decode_letters_page(letters({{"p", 4}, {"p", 4}}), "p", 3, 2, got)),
              "dead letter sequences not rising"));
    CHECK(has(decode_failure(decode_letters_page(letters({{"p", 3}}), "p", 3, 2, got)),
              "dead letter sequences not rising"));
    CHECK(has(decode_failure(decode_letters_page(letters({{"q", 4}}), "p", 3, 2, got)),
              "a dead letter of pipeline q in a listing of p"));
    CHECK(has(decode_failure(decode_letters_page(letters({{"p", 4}, {"p", 5}}), "p", 3, 1, got)),
              "2 dead letters where 1 were asked for"));
  }
}

TEST_CASE("frame: the seed corpus of the frames fuzz target holds the real frames") {
  // WEIR_FRAME_SEEDS=DIR writes them (tests/fuzz/corpus/frames/ is made so); the test checks
  // that what is committed still decodes, each file as the struct its name starts with.
  const auto dir = std::filesystem::path(WEIR_SOURCE_DIR) / "tests/fuzz/corpus/frames";
  auto seeds = seed_frames();
  if (const char* out = std::getenv("WEIR_FRAME_SEEDS")) {
    std::filesystem::create_directories(out);
    for (auto& [name, f] : seeds) {
      std::ofstream o(std::filesystem::path(out) / name, std::ios::binary);
      o.write(reinterpret_cast<const char*>(f.words.data()),
              static_cast<std::streamsize>(f.words.size() * 8));
    }
  }
  size_t files = 0;
  for (auto& [name, f] : seeds) {
    INFO(name);
    std::ifstream in(dir / name, std::ios::binary);
    REQUIRE(in);
    std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    REQUIRE(bytes.size() < 4096);
    frame g;
    g.type = f.type;
    g.words.resize(bytes.size() / 8);
    std::memcpy(g.words.data(), bytes.data(), g.words.size() * 8);
    uint64_t sink = 0;
    CHECK_FALSE(decode_as_its_type(g, sink));
    ++files;
  }
  CHECK(files == seeds.size());
}

TEST_CASE("frame: between nodes its words go as one block of bytes, and a frame over 1 GiB is "
          "refused before it is allocated") {
  weir::frame f;
  f.type = 0x1234567890abcdefULL;
  for (uint64_t i = 0; i < 1000; ++i)
    f.words.push_back(i * 0x0101010101010101ULL);
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  caf::serializer& as_sink = sink; // as CAF serializes a message
  REQUIRE(!as_sink(f));
  // The type, the count, then the words' bytes as they lie in memory (a Cap'n Proto message).
  REQUIRE(buf.size() >= 8 * f.words.size());
  CHECK(std::memcmp(buf.data() + buf.size() - 8 * f.words.size(), f.words.data(),
                    8 * f.words.size()) == 0);
  weir::frame back;
  caf::binary_deserializer source{nullptr, buf};
  caf::deserializer& as_source = source;
  REQUIRE(!as_source(back));
  CHECK(back.type == f.type);
  CHECK(back.words == f.words);
  // A count that claims more than the bytes there are fails; one over 1 GiB fails without
  // allocating. The count follows the 8 bytes of the type, as a varint.
  auto truncated = buf;
  truncated.resize(truncated.size() - 8);
  weir::frame t;
  caf::binary_deserializer short_source{nullptr, truncated};
  CHECK(static_cast<caf::deserializer&>(short_source)(t));
  std::vector<char> huge(buf.begin(), buf.begin() + 8);
  for (char c : {'\x80', '\x80', '\x80', '\x80', '\x01'}) // 2^28 words: 2 GiB
    huge.push_back(c);
  huge.resize(huge.size() + 64);
  weir::frame h;
  caf::binary_deserializer huge_source{nullptr, huge};
  CHECK(static_cast<caf::deserializer&>(huge_source)(h));
  CHECK(h.words.capacity() < 1000);
}
