#include "actors/ingest.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "actors/core/codec.hpp"
#include "actors/core/fault.hpp"
#include "actors/frame.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace {

/// The epoch being read holds max_epoch_bytes of input: reading waits for the next epoch.
bool epoch_full(const ingest_state& st, const runtime_config& rt) {
  return rt.max_epoch_bytes > 0 && st.bytes_since_marker >= rt.max_epoch_bytes;
}

using source_run = ingest_state::source_run;

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// How often a followed glob is expanded again for new files.
constexpr int64_t poll_interval_us = 1000000;

/// Bytes of an over-long line kept for its dead letter (and landed in the lake).
constexpr size_t long_line_head = 1024;
/// A long-line marker in the lake: span (u64 LE), length (u64 LE), then the line's head.
constexpr size_t long_marker_header = 16;

/// One over-long line as the lake keeps it: not its bytes, a marker at its offset in a side
/// source (the source's lake key + "#long-lines"), so that a replay gives the same dead letter.
struct long_marker {
  uint64_t span = 0;   ///< bytes of the source it covers, line end included
  uint64_t length = 0; ///< its length without the line end
  std::string_view head;
};

bool decode_long_marker(std::string_view data, long_marker& m) {
  if (data.size() < long_marker_header)
    return false;
  m.span = codec::get_le64(data.data());
  m.length = codec::get_le64(data.data() + 8);
  m.head = data.substr(long_marker_header);
  return m.span > 0;
}

/// The lake value of a long-line marker.
std::string encode_long_marker(uint64_t span, uint64_t length, std::string_view head) {
  std::string marker;
  codec::writer w{marker};
  w.u64(span);
  w.u64(length);
  w.raw(head);
  return marker;
}

/// The lake key of a Redis source's last-entry records: the source key with this suffix.
constexpr const char* redis_ids_key_suffix = "#redis-ids";

/// Starts streaming past a line that has no line end within its first `got` bytes (> the line
/// limit), held in buf from its start: keeps its head only.
void begin_long_line(source_run& s, const std::string& buf, size_t got) {
  s.skip.active = true;
  s.skip.start = s.pos;
  s.skip.scanned = got;
  s.skip.last = buf[got - 1];
  s.skip.head.assign(buf.data(), std::min(got, long_line_head));
}

/// Streams on past a long line (from the file at its offset, or from stdin) through a buffer
/// of `batch` bytes, keeping nothing of it. True once its end is found: its line end, or the
/// end of a bounded input. What stdin had past the line end stays in s.buf.
bool skip_long_line(source_run& s, size_t batch, bool bounded) {
  const bool is_stdin = s.in.path == "-";
  auto& k = s.skip;
  s.scratch.resize(batch);
  for (;;) {
    ssize_t n;
    if (is_stdin) {
      pollfd p{s.fd, POLLIN, 0};
      if (::poll(&p, 1, 0) == 0)
        return false;
      n = ::read(s.fd, s.scratch.data(), batch);
    } else {
      n = ::pread(s.fd, s.scratch.data(), batch, static_cast<off_t>(k.start + k.scanned));
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return bounded || is_stdin;
    auto* p = s.scratch.data();
    auto* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(n)));
    size_t take = nl ? static_cast<size_t>(nl - p) : static_cast<size_t>(n);
    if (take > 0)
      k.last = p[take - 1];
    k.scanned += take;
    if (nl) {
      k.scanned += 1; // the line end
      k.ended = true;
      if (is_stdin)
        s.buf.assign(nl + 1, static_cast<size_t>(n) - take - 1);
      return true;
    }
  }
}

/// Reads the first line of a file (the csv header), without its line end.
std::string read_header(int fd, size_t limit) {
  std::string out;
  char tmp[4096];
  uint64_t off = 0;
  while (out.size() <= limit) {
    auto n = ::pread(fd, tmp, sizeof(tmp), static_cast<off_t>(off));
    if (n <= 0)
      break;
    auto* nl = static_cast<char*>(std::memchr(tmp, '\n', static_cast<size_t>(n)));
    if (nl) {
      out.append(tmp, static_cast<size_t>(nl - tmp));
      break;
    }
    out.append(tmp, static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  if (!out.empty() && out.back() == '\r')
    out.pop_back();
  return out;
}

/// Learns the header line of a csv stream on stdin without blocking: reads what is there into
/// buf (which keeps it as data) until buf holds a whole first line. True once it is known (an
/// empty stream has no header).
bool learn_stdin_header(source_run& s) {
  for (;;) {
    if (auto* nl = static_cast<const char*>(std::memchr(s.buf.data(), '\n', s.buf.size()))) {
      s.header.assign(s.buf.data(), static_cast<size_t>(nl - s.buf.data()));
      if (!s.header.empty() && s.header.back() == '\r')
        s.header.pop_back();
      s.header_known = true;
      return true;
    }
    if (s.buf.size() > s.in.cfg.max_line_bytes) {
      // No header line within the line limit: go on without one (its lines are dead-lettered
      // by preprocess, which knows no header for them), rather than buffering without bound.
      s.header_known = true;
      return true;
    }
    pollfd p{s.fd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 0)
      return false;
    char tmp[4096];
    auto n = ::read(s.fd, tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      s.header_known = true; // the stream ended before a whole first line
      return true;
    }
    s.buf.append(tmp, static_cast<size_t>(n));
  }
}

/// Reads the next chunk of whole lines of a file or stdin into buf. Returns its length (0: none
/// available now). A last line without a line end counts only when the input is bounded.
size_t read_lines(source_run& s, std::string& buf, size_t batch, bool bounded, bool& at_end) {
  at_end = false;
  const bool is_stdin = s.in.path == "-";
  size_t have = 0;
  if (is_stdin) {
    // stdin cannot be re-read: what is read past the last line end stays in buf for next time.
    have = buf.size();
  }
  size_t want = batch;
  for (;;) {
    if (buf.size() < have + want)
      buf.resize(have + want);
    ssize_t n;
    if (is_stdin) {
      // Never block the actor on stdin: with nothing to read now it answers "nothing yet", so
      // acks and a stop request are handled while the stream is quiet.
      pollfd p{s.fd, POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) {
        buf.resize(have);
        if (have > 0) {
          auto* nl = static_cast<const char*>(memrchr(buf.data(), '\n', have));
          if (nl)
            return static_cast<size_t>(nl - buf.data()) + 1;
        }
        return 0;
      }
      n = ::read(s.fd, buf.data() + have, want);
    } else
      n = ::pread(s.fd, buf.data() + have, want, static_cast<off_t>(s.pos + have));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      n = 0;
    }
    size_t got = have + static_cast<size_t>(n);
    if (n == 0) {
      at_end = true;
      buf.resize(got);
      if (got == 0)
        return 0;
      auto* nl = static_cast<const char*>(memrchr(buf.data(), '\n', got));
      if (nl)
        return static_cast<size_t>(nl - buf.data()) + 1;
      if (bounded && got > s.in.cfg.max_line_bytes) {
        begin_long_line(s, buf, got); // the last line, too long
        if (is_stdin)
          buf.clear();
        return 0;
      }
      return bounded ? got : 0;
    }
    auto* nl = static_cast<const char*>(memrchr(buf.data() + have, '\n', static_cast<size_t>(n)));
    if (nl) {
      buf.resize(got);
      return static_cast<size_t>(nl - buf.data()) + 1;
    }
    if (got > s.in.cfg.max_line_bytes) {
      // A line over the limit: stream past it rather than hold it (it may be huge).
      buf.resize(got);
      begin_long_line(s, buf, got);
      at_end = false;
      if (is_stdin)
        buf.clear();
      return 0;
    }
    // No line end yet: read on, up to the line limit.
    have = got;
    want = batch;
  }
}

/// Finds the lake id of the source's long-line markers; what the lake holds reaches at least
/// to the end of the last long line it marks.
caf::error init_long_lines(source_run& s, lake& lk) {
  auto id = lk.source_id(s.in.key + long_line_key_suffix);
  if (!id)
    return id.error();
  s.long_id = *id;
  return lk.scan(s.long_id, s.in.committed, [&](uint64_t off, std::string_view data) {
    long_marker m;
    if (decode_long_marker(data, m))
      s.in.lake_end = std::max(s.in.lake_end, off + m.span);
    s.had_long_line = true;
    return true;
  });
}

/// Finds the last entry id the lake holds of a Redis source and connects to its stream. An
/// unreachable server is not an error here: reading retries (see read_redis).
caf::error open_redis(source_run& s, lake& lk) {
  auto id = lk.source_id(s.in.key + redis_ids_key_suffix);
  if (!id)
    return id.error();
  s.ids_id = *id;
  std::optional<stream_id> last;
  auto err = lk.scan(s.ids_id, 0, [&](uint64_t off, std::string_view data) {
    if (auto i = stream_id::parse(data)) {
      last = *i;
      s.ids_newest = off;
    }
    return true;
  });
  if (err)
    return err;
  s.redis = std::make_unique<redis_stream>(s.in.cfg.redis, s.in.cfg.name);
  if (last)
    s.redis->landed_up_to(*last);
  if (auto err = s.redis->connect())
    spdlog::warn("{}; retrying", render(err));
  return caf::none;
}

/// Opens the input of s (stdin, its file, or nothing for a drained generation whose file is
/// gone) and finds its long-line markers.
caf::error open_source(source_run& s, lake& lk) {
  s.pos = s.in.committed;
  if (s.in.path == "-") {
    s.fd = STDIN_FILENO;
    // Every run's csv stream starts with its header line; it is learnt before anything of
    // this source is sent (it also marks stream starts in chunks replayed from the lake).
    s.stdin_header = s.in.cfg.format == source_format::csv && s.in.cfg.header;
  } else if (!s.in.path.empty()) {
    s.fd = ::open(s.in.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd < 0)
      return make_error(errc::bad_input, "cannot open " + s.in.path + ": " + std::strerror(errno));
    if (s.in.cfg.format == source_format::csv && s.in.cfg.header)
      s.header = read_header(s.fd, s.in.cfg.max_line_bytes);
  } else if (!s.in.header_from.empty() && s.in.cfg.format == source_format::csv &&
             s.in.cfg.header) {
    int fd = ::open(s.in.header_from.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      s.header = read_header(fd, s.in.cfg.max_line_bytes);
      ::close(fd);
    }
  }
  if (auto err = init_long_lines(s, lk))
    return err;
  return s.in.cfg.is_redis() ? open_redis(s, lk) : caf::none;
}

/// What became of a followed file with nothing new to read.
enum class file_change { none, replaced, truncated };

/// Looks whether the file at the path of s is still the one s reads: another inode there
/// (renamed away, a new one created: logrotate's default), or the same one shorter than what
/// was read or with other first bytes (copytruncate: truncated and written again). While the
/// file is shorter than a whole fingerprint, the fingerprint grows with it.
file_change check_file(source_run& s, lake& lk) {
  struct stat at {};
  if (s.fd < 0 || s.in.path == "-" || ::stat(s.in.path.c_str(), &at) != 0)
    return file_change::none; // gone: wait for a new file at the path
  auto& id = s.in.identity;
  if (static_cast<uint64_t>(at.st_dev) != id.dev || static_cast<uint64_t>(at.st_ino) != id.ino)
    return file_change::replaced;
  if (static_cast<uint64_t>(at.st_size) < s.pos)
    return file_change::truncated;
  if (!same_file(id, s.fd))
    return file_change::truncated;
  if (id.fp_len<fingerprint_bytes&& static_cast<uint64_t>(at.st_size)> id.fp_len) {
    if (auto fresh = identify(s.fd); fresh && fresh->ino == id.ino) {
      id = *fresh;
      if (auto err = save_generation(lk, s.in.files_id, s.in.generation, id))
        spdlog::warn("source {}: cannot save its identity: {}", s.in.path, render(err));
    }
  }
  return file_change::none;
}

/// Whether the file at `path` is read by a source already (by its path, or its inode: a file
/// renamed by a rotation may match the glob too).
bool known_file(const ingest_state& st, const std::string& path) {
  struct stat at {};
  bool have_stat = ::stat(path.c_str(), &at) == 0;
  for (auto& s : st.sources) {
    if (s.in.path == path)
      return true;
    if (have_stat && s.in.identity.ino == static_cast<uint64_t>(at.st_ino) &&
        s.in.identity.dev == static_cast<uint64_t>(at.st_dev))
      return true;
  }
  return false;
}

/// Adds the files that newly match a followed glob, each a source read from its start.
caf::error add_new_matches(ingest_state& st, lake& lk) {
  auto& cat = st.catalog;
  for (size_t si = 0; si < cat.sources.size(); ++si) {
    const auto& cfg = cat.sources[si];
    if (!cfg.follow || cfg.path.find_first_of("*?[") == std::string::npos)
      continue;
    for (auto& path : glob_paths(cfg.path)) {
      if (st.not_sources.count(path) || known_file(st, path))
        continue;
      auto inputs = resolve_source(lk, cat.committed, cat.pipeline, cfg, static_cast<uint32_t>(si),
                                   path, cat.persist);
      if (!inputs)
        return inputs.error();
      if (inputs->empty()) {
        st.not_sources.insert(path); // a rotated file of another path
        continue;
      }
      spdlog::info("source {}: new file {} matches {}", cfg.name, path, cfg.path);
      for (auto& in : *inputs) {
        source_run s;
        s.in = std::move(in);
        if (auto err = open_source(s, lk))
          return err;
        if (st.meter) // read from its committed offset: what came before counts as read
          st.meter->bytes_read.fetch_add(s.pos, std::memory_order_relaxed);
        st.sources.push_back(std::move(s));
      }
    }
  }
  return caf::none;
}

} // namespace

ingest_state::~ingest_state() {
  for (auto& s : sources)
    if (s.fd > 0)
      ::close(s.fd);
}

ingest_actor::behavior_type ingest(ingest_actor::stateful_pointer<ingest_state> self,
                                   uint32_t pipeline, pipeline_sources inputs, runtime_config rt,
                                   std::shared_ptr<lake> lk, preprocess_actor next,
                                   coordinator_actor coordinator,
                                   std::shared_ptr<state_meter> meter) {
  auto& st = self->state;
  st.pipeline = pipeline;
  st.meter = std::move(meter);
  for (auto& in : inputs.inputs) {
    source_run s;
    s.in = std::move(in);
    st.follow = st.follow || s.in.cfg.follow;
    if (auto err = open_source(s, *lk)) {
      self->quit(err);
      return ingest_actor::behavior_type::make_empty_behavior();
    }
    st.sources.push_back(std::move(s));
  }
  inputs.inputs.clear();
  st.catalog = std::move(inputs);
  st.globbed_us = wall_us();
  // Sends one chunk [offset, offset + data.size()) of source s on to preprocess.
  // A long line (long.span > 0) goes as its head with its span and length.
  auto send_chunk = [self, next, coordinator, rt](source_run& s, uint64_t offset,
                                                  std::string_view data, long_marker lm = {}) {
    auto& st = self->state;
    // A csv stream on stdin begins with its header line; say so, wherever its offset is.
    uint32_t header_len = 0;
    if (s.stdin_header && !s.header.empty() && data.size() > s.header.size() &&
        data.compare(0, s.header.size(), s.header) == 0) {
      size_t n = s.header.size();
      if (n < data.size() && data[n] == '\r')
        ++n;
      if (n < data.size() && data[n] == '\n')
        header_len = static_cast<uint32_t>(n + 1);
    }
    capnp::MallocMessageBuilder mb(static_cast<unsigned>(data.size() / 8 + 256));
    auto c = mb.initRoot<schema::RawChunk>();
    c.setSource(s.in.id);
    c.setOffset(offset);
    c.setData(as_data(data));
    if (!s.header_sent && !s.header.empty()) {
      c.setHeader(s.header);
      s.header_sent = true;
    }
    c.setHeaderLen(lm.span > 0 ? 0 : header_len);
    c.setLongSpan(lm.span);
    c.setConfigIndex(s.in.config_index + 1);
    c.setLongLength(lm.length);
    if (fault::hit("send.chunk")) { // fault injection: this actor fails, reads nothing more
      st.stopping = true;
      st.finished = true;
      self->quit(fault::injected("send.chunk"));
      return;
    }
    ++st.inflight;
    self->send(next, chunk_atom::value, ++st.seq, to_frame<schema::RawChunk>(mb));
    const uint64_t end = offset + (lm.span > 0 ? lm.span : data.size());
    if (st.meter && end > s.pos)
      st.meter->bytes_read.fetch_add(end - s.pos, std::memory_order_relaxed);
    s.pos = end;
    if (rt.commit_events > 0)
      st.lines_since_marker +=
        lm.span > 0 ? 1 : static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
    st.bytes_since_marker += data.size();
    if (!st.epoch_asked && ((rt.commit_events > 0 && st.lines_since_marker >= rt.commit_events) ||
                            epoch_full(st, rt))) {
      st.epoch_asked = true;
      self->send(coordinator, epoch_atom::value, st.pipeline);
    }
  };
  // Lands the marker of the long line streamed past (its bytes are not landed: a replay gives
  // the same dead letter from the marker) and sends it on.
  auto land_long_line = [self, lk, rt, send_chunk](source_run& s) -> bool {
    auto& k = s.skip;
    long_marker m;
    m.span = k.scanned;
    // Its length without the line end ('\r' included), as preprocess counts a whole line.
    m.length = k.scanned - (k.ended ? 1 : 0) - (k.last == '\r' ? 1 : 0);
    if (k.head.size() > m.length)
      k.head.resize(m.length);
    m.head = k.head;
    std::string marker = encode_long_marker(m.span, m.length, m.head);
    if (rt.mode == commit_mode::exactly_once) {
      if (auto err = lk->append({{s.long_id, k.start, marker}})) {
        self->quit(err);
        return false;
      }
    }
    spdlog::warn("source {}: the line at offset {} is {} bytes, over max_line_bytes {}: it goes "
                 "to dead letters",
                 s.in.path, k.start, m.length, s.in.cfg.max_line_bytes);
    send_chunk(s, k.start, m.head, m);
    s.had_long_line = true;
    k = {};
    return true;
  };
  // Takes the next entries of a Redis source: lands them with the id of the last one (one lake
  // transaction), acknowledges them, and sends them on. 1: a chunk was sent; 2: entries were
  // only acknowledged (landed before), read on; 0: nothing now; -1: the actor quit.
  auto read_redis = [self, lk, rt, send_chunk](source_run& s) -> int {
    auto& b = s.entries;
    if (wall_us() < s.redis_retry_us)
      return 0;
    auto retry = [&s](const caf::error& err) {
      spdlog::warn("{}; retrying in 1 s", render(err));
      s.redis_retry_us = wall_us() + 1000000;
    };
    if (auto err = s.redis->take(b, rt.batch_bytes, s.in.cfg.max_line_bytes, long_line_head)) {
      retry(err);
      return 0;
    }
    if (b.ack_ids.empty())
      return 0;
    const bool long_entry = b.long_length > 0;
    if (b.records > 0) {
      const std::string last = b.last->str();
      std::string marker;
      std::vector<lake::chunk_ref> refs;
      if (long_entry) {
        marker = encode_long_marker(b.long_length + 1, b.long_length, b.lines);
        refs.push_back({s.long_id, s.pos, marker});
      } else {
        refs.push_back({s.in.id, s.pos, b.lines});
      }
      refs.push_back({s.ids_id, s.pos, last});
      if (auto err = lk->append(refs)) {
        self->quit(err);
        return -1;
      }
      s.ids_newest = s.pos;
      s.redis->landed_up_to(*b.last);
    }
    if (fault::hit("redis.before_ack")) {
      self->quit(fault::injected("redis.before_ack"));
      return -1;
    }
    // Landed: a failed acknowledgement only means the entries come again, and are skipped.
    if (auto err = s.redis->ack(b))
      retry(err);
    if (b.records == 0)
      return 2;
    if (long_entry) {
      spdlog::warn("source {}: an entry of {} bytes is over max_line_bytes {}: it goes to dead "
                   "letters",
                   s.in.cfg.name, b.long_length, s.in.cfg.max_line_bytes);
      long_marker m;
      m.span = b.long_length + 1;
      m.length = b.long_length;
      m.head = b.lines;
      send_chunk(s, s.pos, b.lines, m);
      s.had_long_line = true;
    } else {
      send_chunk(s, s.pos, b.lines);
    }
    s.in.lake_end = s.pos;
    return 1;
  };
  // Source i's file was replaced or truncated: it is finished after what it still has (a
  // replaced file is read on to its end through the open descriptor), and the file now at
  // the path starts as its next generation. Returns whether a chunk can follow now.
  auto rotate = [self, lk](size_t i, file_change change) -> bool {
    auto& st = self->state;
    auto& old = st.sources[i];
    auto& in = old.in;
    in.cfg.follow = false; // drain: read to the end, then done
    if (change == file_change::truncated) {
      old.exhausted = true;
      spdlog::warn("source {}: the file was truncated (read up to offset {} of {}); it is read "
                   "from its start as generation {}",
                   in.path, old.pos, in.key, in.generation + 1);
      in.identity.finished = true;
      if (auto err = save_generation(*lk, in.files_id, in.generation, in.identity)) {
        self->quit(err);
        return false;
      }
    } else {
      spdlog::warn("source {}: the file was replaced (rotated); {} is read to its end, the new "
                   "file is generation {}",
                   in.path, in.key, in.generation + 1);
    }
    int fd = ::open(in.path.c_str(), O_RDONLY | O_CLOEXEC);
    caf::expected<source_input> fresh{make_error(errc::bad_input, "cannot open " + in.path)};
    if (fd >= 0) {
      fresh = next_generation(*lk, in, fd);
      ::close(fd);
    }
    if (!fresh) {
      self->quit(fresh.error());
      return false;
    }
    source_run n;
    n.in = std::move(*fresh);
    n.in.cfg.follow = true;
    if (auto err = open_source(n, *lk)) {
      self->quit(err);
      return false;
    }
    st.sources.push_back(std::move(n));
    return true;
  };
  // Produces the next chunk of the current source: from the lake while replaying, else from the
  // input (landing it first). Returns false when nothing is available now.
  auto next_chunk = [self, lk, rt, send_chunk, land_long_line, rotate, read_redis]() -> bool {
    auto& st = self->state;
    while (st.current < st.sources.size()) {
      auto& s = st.sources[st.current];
      if (s.exhausted) {
        ++st.current;
        continue;
      }
      if (s.stdin_header && !s.header_known && !learn_stdin_header(s))
        return false; // wait for the header line
      // An http source's records are landed in the lake by the server (weir serve): whatever
      // the lake holds beyond what was sent is read from there, as a replay is.
      bool http_idle = false;
      if (s.in.cfg.http && s.pos >= s.in.lake_end) {
        auto end = lk->end_offset(s.in.id);
        if (!end) {
          self->quit(end.error());
          return false;
        }
        http_idle = *end <= s.pos;
        s.in.lake_end = std::max(s.in.lake_end, *end);
      }
      if (!http_idle && s.pos < s.in.lake_end) {
        // Replay landed but uncommitted chunks: a long line's marker, or lines.
        bool sent = false;
        auto err = lk->scan(s.long_id, s.pos, [&](uint64_t off, std::string_view data) {
          long_marker m;
          if (off < s.pos || !decode_long_marker(data, m))
            return off < s.pos;
          if (off == s.pos) {
            send_chunk(s, off, m.head, m);
            sent = true;
          }
          return false;
        });
        if (!err && !sent)
          err = lk->scan(s.in.id, s.pos, [&](uint64_t off, std::string_view data) {
            if (off + data.size() <= s.pos)
              return true;
            if (off < s.pos) {
              data.remove_prefix(s.pos - off);
              off = s.pos;
            }
            send_chunk(s, off, data);
            sent = true;
            return false;
          });
        if (err) {
          self->quit(err);
          return false;
        }
        if (sent)
          return true;
        s.in.lake_end = s.pos; // the lake holds nothing more
        if (!s.in.cfg.http)
          continue;
        http_idle = true;
      }
      if (s.redis) {
        const int r = read_redis(s);
        if (r < 0)
          return false;
        if (r == 1)
          return true;
        if (r == 2)
          continue;
      }
      if (s.in.cfg.http || s.redis) {
        // Nothing new over HTTP or from Redis yet: look at the other sources before waiting.
        for (size_t i = 1; i < st.sources.size(); ++i) {
          const size_t other = (st.current + i) % st.sources.size();
          if (!st.sources[other].exhausted) {
            st.current = other;
            break;
          }
        }
        return false;
      }
      bool at_end = false;
      const bool bounded = !s.in.cfg.follow;
      size_t len = 0;
      if (s.idle && !bounded && !s.skip.active && s.in.path != "-") {
        // New bytes after a pause may belong to another file: look before reading them.
        auto change = check_file(s, *lk);
        if (change != file_change::none)
          return rotate(st.current, change);
      }
      s.idle = false;
      if (!s.skip.active) {
        if (s.in.path != "-")
          s.buf.clear(); // stdin keeps a partial line from its last read in buf
        len = read_lines(s, s.buf, rt.batch_bytes, bounded, at_end);
      }
      if (s.skip.active) {
        if (skip_long_line(s, rt.batch_bytes, bounded))
          return land_long_line(s);
        at_end = false; // its end has not come yet (follow mode)
      } else if (len > 0) {
        std::string_view data{s.buf.data(), len};
        std::vector<lake::chunk_ref> refs{{s.in.id, s.pos, data}};
        if (rt.mode == commit_mode::exactly_once) {
          if (auto err = lk->append(refs)) {
            self->quit(err);
            return false;
          }
        }
        send_chunk(s, s.pos, data);
        if (s.in.path == "-")
          s.buf.erase(0, len);
        return true;
      }
      if (at_end && bounded) {
        s.exhausted = true;
        ++st.current;
        continue;
      }
      s.idle = !bounded && at_end;
      // Follow mode: nothing new yet. Look at the other sources before waiting.
      bool any_other = false;
      for (size_t i = 0; i < st.sources.size(); ++i)
        if (i != st.current && !st.sources[i].exhausted)
          any_other = true;
      if (any_other)
        st.current = (st.current + 1) % st.sources.size();
      return false;
    }
    return false;
  };
  const size_t max_inflight = std::max<size_t>(1, rt.max_inflight_batches);
  auto pump = [self, next_chunk, coordinator, max_inflight, rt]() {
    auto& st = self->state;
    if (st.finished)
      return;
    while (st.inflight < max_inflight && !st.stopping && !epoch_full(st, rt)) {
      if (!next_chunk())
        break;
    }
    // A full epoch waits for its marker (the epoch_atom handler pumps again).
    if (st.inflight >= max_inflight || st.stopping || epoch_full(st, rt))
      return;
    bool all_done = true;
    for (auto& s : st.sources)
      all_done = all_done && s.exhausted;
    if (all_done) {
      if (!st.done_sent) {
        st.done_sent = true;
        self->send(coordinator, done_atom::value, st.pipeline);
      }
    } else if (!st.timer_pending) {
      st.timer_pending = true;
      self->delayed_send(self, std::chrono::milliseconds(20), read_atom::value);
    }
  };
  self->send(self, read_atom::value);
  return {
    [self, pump, lk](read_atom) {
      auto& st = self->state;
      st.timer_pending = false;
      if (st.follow && !st.stopping && wall_us() - st.globbed_us >= poll_interval_us) {
        st.globbed_us = wall_us();
        if (auto err = add_new_matches(st, *lk)) {
          self->quit(err);
          return;
        }
      }
      pump();
    },
    [self, pump](ack_atom, uint64_t) {
      auto& st = self->state;
      if (st.meter)
        mailbox_depths::note(self, &st.meter->mailboxes.ingest);
      if (st.inflight > 0)
        --st.inflight;
      pump();
    },
    [self, next, rt, pump](epoch_atom, uint64_t e) {
      auto& st = self->state;
      if (st.meter)
        mailbox_depths::note(self, &st.meter->mailboxes.ingest);
      if (st.finished)
        return;
      epoch_marker m;
      m.checkpoint = rt.mode == commit_mode::exactly_once;
      m.epoch = e;
      bool all_done = true;
      for (auto& s : st.sources) {
        m.offsets.emplace_back(s.in.id, s.pos);
        all_done = all_done && s.exhausted;
      }
      // The end of a run (a stop, or bounded inputs read to their end) fires every open window
      // only when it is the end of the data (weir run --final); otherwise they stay open.
      if (st.stopping || all_done)
        m.kind = rt.final_flush ? marker_kind::final : marker_kind::stop;
      st.finished = m.kind != marker_kind::normal;
      st.lines_since_marker = 0;
      st.bytes_since_marker = 0;
      st.epoch_asked = false;
      st.epoch_offsets[e] = m.offsets;
      // A frame: preprocess may run on another node.
      self->send(next, marker_atom::value, encode_marker(m));
      if (!st.finished)
        pump(); // reading may have waited for this epoch
    },
    [self, lk, rt](committed_atom, uint64_t e) {
      auto& st = self->state;
      auto i = st.epoch_offsets.find(e);
      if (i == st.epoch_offsets.end())
        return;
      auto before = wall_us() - rt.lake_retention;
      if (rt.mode == commit_mode::exactly_once)
        for (auto& [source, offset] : i->second)
          for (auto& s : st.sources)
            if (s.in.id == source)
              for (auto id : {s.in.id, s.long_id})
                if (id == s.in.id || s.had_long_line)
                  if (auto n = lk->prune(id, offset, before); !n)
                    spdlog::warn("lake prune failed: {}", render(n.error()));
      // A Redis source needs only its newest last-entry record (landed, not committed, ids).
      for (auto& s : st.sources)
        if (s.ids_id != 0)
          if (auto n = lk->prune(s.ids_id, s.ids_newest, before); !n)
            spdlog::warn("lake prune failed: {}", render(n.error()));
      st.epoch_offsets.erase(st.epoch_offsets.begin(), std::next(i));
      if (st.finished)
        self->quit();
    },
    [self](stop_atom) { self->state.stopping = true; },
  };
}

} // namespace weir
