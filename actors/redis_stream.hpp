#pragma once

/// A Redis stream read through a consumer group, for a source with `redis = "HOST:PORT"`.
///
/// Exactly-once into the lake: ingest lands a batch of entries together with the id of its
/// last entry (one lake transaction) and only then acknowledges them (XACK). After a crash,
/// the entries delivered but not acknowledged are read again from the group's pending list;
/// those at or before the last id the lake holds were landed already and are only
/// acknowledged. So every entry is landed once, whatever is killed when, and even when Redis
/// lost its acknowledgements (or the whole group: it is created again after that id).
///
/// Not thread-safe: one object per source, used by its ingest actor.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/core/error.hpp"
#include "actors/core/stream_entry.hpp"
#include "actors/core/types.hpp"

struct redisContext;
struct redisReply;

namespace weir {

class redis_stream {
public:
  using config = source_config::redis_stream_config;

  /// `source` names the source in messages.
  redis_stream(config cfg, std::string source);
  ~redis_stream();
  redis_stream(redis_stream&&) noexcept;
  redis_stream& operator=(redis_stream&&) noexcept;
  redis_stream(const redis_stream&) = delete;
  redis_stream& operator=(const redis_stream&) = delete;

  /// Entries up to `id` are in the lake: they are never read again (only acknowledged).
  void landed_up_to(stream_id id) { after_ = id; }
  const std::optional<stream_id>& landed() const { return after_; }

  /// Connects (1 s timeout; 5 s per command), authenticates when password_env is set, and
  /// makes sure the group exists: a new one starts after the last landed entry when there is
  /// one, else at the configured start. Reading begins with this consumer's pending entries.
  caf::error connect();
  bool connected() const { return ctx_ != nullptr; }
  /// Before a run: connects and authenticates, and checks that the stream's key holds a
  /// stream or nothing yet; changes nothing and disconnects.
  caf::error check();
  /// Drops the connection (after an error); connect() starts over.
  void disconnect();

  /// The entries taken by one call of take().
  struct batch {
    std::string lines;                 ///< each entry's line and '\n' (see append_entry_line)
    size_t records = 0;                ///< entries with a line in `lines`
    std::optional<stream_id> last;     ///< the last of them
    uint64_t long_length = 0;          ///< > 0: one entry over max_line_bytes, `lines` its head
    std::vector<const char*> ack_ids;  ///< every entry taken (landed or not), for ack()
    std::vector<size_t> ack_lens;
    void clear();
  };

  /// Takes the next entries into `b` (cleared first): at most `max_bytes` of lines (at least
  /// one entry), stopping before an entry whose line is longer than `max_line_bytes` — such an
  /// entry is taken alone, as its first `head_bytes` and its length. Nothing taken
  /// (`b.ack_ids` empty): nothing new now. `b` refers to the last reply: it is valid until the
  /// next take().
  caf::error take(batch& b, size_t max_bytes, size_t max_line_bytes, size_t head_bytes);

  /// Acknowledges the entries of `b` to the group.
  caf::error ack(const batch& b);

private:
  caf::error fail(const std::string& what);
  caf::error open(); ///< connect and authenticate
  caf::error fetch(size_t count);

  config cfg_;
  std::string source_;
  std::optional<stream_id> after_;
  redisContext* ctx_ = nullptr;
  std::unique_ptr<redisReply, void (*)(void*)> reply_;
  size_t next_ = 0;             ///< the next entry of the reply to take
  bool pending_ = true;         ///< reading this consumer's pending entries (after a start)
  std::string pending_from_;    ///< the id to read pending entries after
  std::vector<const char*> argv_;
  std::vector<size_t> argl_;
};

} // namespace weir
