#include "actors/ingest.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "actors/core/fault.hpp"
#include "actors/frame.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace {

using source_run = ingest_state::source_run;

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
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
    }
    else
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
      return bounded ? got : 0;
    }
    auto* nl = static_cast<const char*>(memrchr(buf.data() + have, '\n', static_cast<size_t>(n)));
    if (nl) {
      buf.resize(got);
      return static_cast<size_t>(nl - buf.data()) + 1;
    }
    // No line end yet: a long line. Read on; preprocess dead-letters it when it is too long.
    have = got;
    want = batch;
  }
}

} // namespace

ingest_state::~ingest_state() {
  for (auto& s : sources)
    if (s.fd > 0)
      ::close(s.fd);
}

ingest_actor::behavior_type ingest(ingest_actor::stateful_pointer<ingest_state> self,
                                   uint32_t pipeline, std::vector<source_input> inputs,
                                   runtime_config rt, std::shared_ptr<lake> lk,
                                   preprocess_actor next, coordinator_actor coordinator) {
  auto& st = self->state;
  st.pipeline = pipeline;
  for (auto& in : inputs) {
    source_run s;
    s.in = std::move(in);
    s.pos = s.in.committed;
    st.follow = st.follow || s.in.cfg.follow;
    if (s.in.path == "-") {
      s.fd = STDIN_FILENO;
      // Every run's csv stream starts with its header line; it is learnt before anything of
      // this source is sent (it also marks stream starts in chunks replayed from the lake).
      s.stdin_header = s.in.cfg.format == source_format::csv && s.in.cfg.header;
    } else {
      s.fd = ::open(s.in.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (s.fd < 0) {
        self->quit(
          make_error(errc::bad_input, "cannot open " + s.in.path + ": " + std::strerror(errno)));
        return ingest_actor::behavior_type::make_empty_behavior();
      }
      if (s.in.cfg.format == source_format::csv && s.in.cfg.header)
        s.header = read_header(s.fd, s.in.cfg.max_line_bytes);
    }
    st.sources.push_back(std::move(s));
  }
  // Sends one chunk [offset, offset + data.size()) of source s on to preprocess.
  auto send_chunk = [self, next, coordinator, rt](source_run& s, uint64_t offset,
                                                  std::string_view data) {
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
    c.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
    if (!s.header_sent && !s.header.empty()) {
      c.setHeader(s.header);
      s.header_sent = true;
    }
    c.setHeaderLen(header_len);
    if (fault::hit("send.chunk")) { // fault injection: this actor fails, reads nothing more
      st.stopping = true;
      st.finished = true;
      self->quit(fault::injected("send.chunk"));
      return;
    }
    ++st.inflight;
    self->send(next, chunk_atom::value, ++st.seq, to_frame(mb));
    s.pos = offset + data.size();
    if (rt.commit_events > 0) {
      st.lines_since_marker += static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
      if (st.lines_since_marker >= rt.commit_events && !st.epoch_asked) {
        st.epoch_asked = true;
        self->send(coordinator, epoch_atom::value, st.pipeline);
      }
    }
  };
  // Produces the next chunk of the current source: from the lake while replaying, else from the
  // input (landing it first). Returns false when nothing is available now.
  auto next_chunk = [self, lk, rt, send_chunk]() -> bool {
    auto& st = self->state;
    while (st.current < st.sources.size()) {
      auto& s = st.sources[st.current];
      if (s.exhausted) {
        ++st.current;
        continue;
      }
      if (s.stdin_header && !s.header_known && !learn_stdin_header(s))
        return false; // wait for the header line
      if (s.pos < s.in.lake_end) {
        // Replay landed but uncommitted chunks.
        bool sent = false;
        auto err = lk->scan(s.in.id, s.pos, [&](uint64_t off, std::string_view data) {
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
        continue;
      }
      bool at_end = false;
      const bool bounded = !s.in.cfg.follow;
      if (s.in.path != "-")
        s.buf.clear(); // stdin keeps a partial line from its last read in buf
      auto len = read_lines(s, s.buf, rt.batch_bytes, bounded, at_end);
      if (len > 0) {
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
  auto pump = [self, next_chunk, coordinator, max_inflight]() {
    auto& st = self->state;
    if (st.finished)
      return;
    while (st.inflight < max_inflight && !st.stopping) {
      if (!next_chunk())
        break;
    }
    if (st.inflight >= max_inflight || st.stopping)
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
    [self, pump](read_atom) {
      self->state.timer_pending = false;
      pump();
    },
    [self, pump](ack_atom, uint64_t) {
      auto& st = self->state;
      if (st.inflight > 0)
        --st.inflight;
      pump();
    },
    [self, next, rt](epoch_atom, uint64_t e) {
      auto& st = self->state;
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
        m.kind = static_cast<uint8_t>(rt.final_flush ? marker_kind::final : marker_kind::stop);
      st.finished = m.kind != static_cast<uint8_t>(marker_kind::normal);
      st.lines_since_marker = 0;
      st.epoch_asked = false;
      st.epoch_offsets[e] = m.offsets;
      self->send(next, marker_atom::value, std::move(m));
    },
    [self, lk, rt](committed_atom, uint64_t e) {
      auto& st = self->state;
      auto i = st.epoch_offsets.find(e);
      if (i == st.epoch_offsets.end())
        return;
      auto before = wall_us() - rt.lake_retention;
      if (rt.mode == commit_mode::exactly_once)
        for (auto& [source, offset] : i->second)
          if (auto n = lk->prune(source, offset, before); !n)
            spdlog::warn("lake prune failed: {}", render(n.error()));
      st.epoch_offsets.erase(st.epoch_offsets.begin(), std::next(i));
      if (st.finished)
        self->quit();
    },
    [self](stop_atom) { self->state.stopping = true; },
  };
}

} // namespace weir
