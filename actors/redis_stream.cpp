#include "actors/redis_stream.hpp"

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <utility>

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

namespace weir {

namespace {

std::string_view view(const redisReply* r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
               r->type == REDIS_REPLY_ERROR)
           ? std::string_view{r->str, r->len}
           : std::string_view{};
}

/// The entries array of an XREADGROUP reply for one stream ([[key, entries]]); null for none.
const redisReply* entries_of(const redisReply* r) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 1)
    return nullptr;
  auto* s = r->element[0];
  if (s->type != REDIS_REPLY_ARRAY || s->elements < 2 || s->element[1]->type != REDIS_REPLY_ARRAY)
    return nullptr;
  return s->element[1];
}

} // namespace

void redis_stream::batch::clear() {
  lines.clear();
  records = 0;
  last.reset();
  long_length = 0;
  ack_ids.clear();
  ack_lens.clear();
}

redis_stream::redis_stream(config cfg, std::string source)
  : cfg_(std::move(cfg)), source_(std::move(source)), reply_(nullptr, freeReplyObject) {}

redis_stream::~redis_stream() { disconnect(); }

redis_stream::redis_stream(redis_stream&& o) noexcept
  : cfg_(std::move(o.cfg_)),
    source_(std::move(o.source_)),
    after_(o.after_),
    ctx_(std::exchange(o.ctx_, nullptr)),
    reply_(std::move(o.reply_)),
    next_(o.next_),
    pending_(o.pending_),
    pending_from_(std::move(o.pending_from_)) {}

redis_stream& redis_stream::operator=(redis_stream&& o) noexcept {
  if (this != &o) {
    disconnect();
    cfg_ = std::move(o.cfg_);
    source_ = std::move(o.source_);
    after_ = o.after_;
    ctx_ = std::exchange(o.ctx_, nullptr);
    reply_ = std::move(o.reply_);
    next_ = o.next_;
    pending_ = o.pending_;
    pending_from_ = std::move(o.pending_from_);
  }
  return *this;
}

void redis_stream::disconnect() {
  reply_.reset();
  next_ = 0;
  if (ctx_ != nullptr)
    redisFree(ctx_);
  ctx_ = nullptr;
}

caf::error redis_stream::fail(const std::string& what) {
  std::string why = ctx_ != nullptr && ctx_->err != 0 ? ctx_->errstr : "no reply";
  disconnect();
  return make_error(errc::bad_input, "source " + source_ + ": redis " + cfg_.host + ":" +
                                       std::to_string(cfg_.port) + " " + what + ": " + why);
}

namespace {

using reply_ptr = std::unique_ptr<redisReply, void (*)(void*)>;

reply_ptr command(redisContext* ctx, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return reply_ptr{static_cast<redisReply*>(redisCommandArgv(ctx, static_cast<int>(argv.size()),
                                                             argv.data(), lens.data())),
                   freeReplyObject};
}

} // namespace

caf::error redis_stream::open() {
  ctx_ = redisConnectWithTimeout(cfg_.host.c_str(), cfg_.port, timeval{1, 0});
  if (ctx_ == nullptr || ctx_->err != 0)
    return fail("cannot connect");
  if (redisSetTimeout(ctx_, timeval{5, 0}) != REDIS_OK)
    return fail("cannot set a timeout");
  if (!cfg_.password_env.empty()) {
    const char* pw = std::getenv(cfg_.password_env.c_str());
    if (pw == nullptr) {
      disconnect();
      return make_error(errc::bad_config, "source " + source_ + ": password_env names " +
                                            cfg_.password_env + ", which is not set");
    }
    auto r = command(ctx_, {"AUTH", pw});
    if (!r)
      return fail("AUTH failed");
    if (r->type == REDIS_REPLY_ERROR)
      return fail("refused the password: " + std::string{view(r.get())});
  }
  return caf::none;
}

caf::error redis_stream::check() {
  if (auto err = open())
    return err;
  auto r = command(ctx_, {"TYPE", cfg_.stream});
  if (!r)
    return fail("TYPE failed");
  auto type = std::string{view(r.get())};
  if (type != "stream" && type != "none")
    return fail("holds a " + type + " at key " + cfg_.stream + ", not a stream (check stream)");
  disconnect();
  return caf::none;
}

caf::error redis_stream::connect() {
  if (ctx_ != nullptr)
    return caf::none;
  if (auto err = open())
    return err;
  // A new group starts after what the lake holds; when the lake holds nothing, at `start`.
  auto r = command(ctx_, {"XGROUP", "CREATE", cfg_.stream, cfg_.group,
                    after_ ? after_->str() : cfg_.start, "MKSTREAM"});
  if (!r)
    return fail("XGROUP CREATE failed");
  if (r->type == REDIS_REPLY_ERROR && view(r.get()).substr(0, 9) != "BUSYGROUP")
    return fail("cannot make the group " + cfg_.group + " of stream " + cfg_.stream + ": " +
                std::string{view(r.get())});
  if (r->type != REDIS_REPLY_ERROR)
    spdlog::info("source {}: created consumer group {} of stream {}", source_, cfg_.group,
                 cfg_.stream);
  // What was delivered to this consumer and not acknowledged comes first.
  pending_ = true;
  pending_from_ = "0";
  reply_.reset();
  next_ = 0;
  return caf::none;
}

caf::error redis_stream::fetch(size_t count) {
  reply_.reset();
  next_ = 0;
  reply_ = command(ctx_, {"XREADGROUP", "GROUP", cfg_.group, cfg_.consumer, "COUNT",
                          std::to_string(count), "STREAMS", cfg_.stream,
                          pending_ ? pending_from_ : std::string{">"}});
  if (!reply_)
    return fail("XREADGROUP failed");
  if (reply_->type == REDIS_REPLY_ERROR)
    return fail("refused XREADGROUP: " + std::string{view(reply_.get())});
  auto* e = entries_of(reply_.get());
  if (pending_ && (e == nullptr || e->elements == 0)) {
    pending_ = false; // every pending entry was read: new ones from now on
    reply_.reset();
  }
  return caf::none;
}

caf::error redis_stream::take(batch& b, size_t max_bytes, size_t max_line_bytes,
                              size_t head_bytes) {
  b.clear();
  if (auto err = connect())
    return err;
  auto* e = entries_of(reply_.get());
  if (e == nullptr || next_ >= e->elements) {
    const size_t count = std::clamp<size_t>(max_bytes / 64, 1, 10000);
    if (auto err = fetch(count))
      return err;
    if (!reply_ && !pending_)
      if (auto err = fetch(count)) // the pending entries ran out: new ones now
        return err;
    e = entries_of(reply_.get());
    if (e == nullptr)
      return caf::none;
  }
  for (; next_ < e->elements; ++next_) {
    const auto* entry = e->element[next_];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
      return fail("sent an entry that is not [id, fields]");
    auto id_text = view(entry->element[0]);
    auto id = stream_id::parse(id_text);
    if (!id)
      return fail("sent an entry id that does not parse: " + std::string{id_text});
    if (pending_)
      pending_from_.assign(id_text);
    const auto* fields = entry->element[1];
    const bool landed = after_ && *id <= *after_;
    const bool gone = fields->type != REDIS_REPLY_ARRAY;
    if (!landed && !gone) {
      // Its line: built in place at the end of the batch, undone when it does not fit.
      const size_t at = b.lines.size();
      append_entry_line(
        b.lines, fields->elements / 2,
        [fields](size_t i) {
          return std::pair{view(fields->element[2 * i]), view(fields->element[2 * i + 1])};
        },
        cfg_.field);
      const size_t len = b.lines.size() - at;
      if (len > max_line_bytes) {
        if (b.records > 0) { // taken alone, next time
          b.lines.resize(at);
          break;
        }
        b.lines.resize(std::min(len, head_bytes));
        b.long_length = len;
      } else if (b.records > 0 && b.lines.size() + 1 > max_bytes) {
        b.lines.resize(at);
        break;
      } else {
        b.lines += '\n';
      }
      ++b.records;
      b.last = *id;
    } else if (gone && !landed) {
      spdlog::warn("source {}: entry {} of stream {} was deleted before it was landed; it is "
                   "acknowledged without a record",
                   source_, id_text, cfg_.stream);
    }
    b.ack_ids.push_back(entry->element[0]->str);
    b.ack_lens.push_back(entry->element[0]->len);
    if (b.long_length > 0) {
      ++next_;
      break;
    }
  }
  return caf::none;
}

caf::error redis_stream::ack(const batch& b) {
  if (b.ack_ids.empty())
    return caf::none;
  if (ctx_ == nullptr)
    return make_error(errc::bad_input, "source " + source_ + ": redis not connected");
  argv_.assign({"XACK", cfg_.stream.c_str(), cfg_.group.c_str()});
  argl_.assign({4, cfg_.stream.size(), cfg_.group.size()});
  argv_.insert(argv_.end(), b.ack_ids.begin(), b.ack_ids.end());
  argl_.insert(argl_.end(), b.ack_lens.begin(), b.ack_lens.end());
  std::unique_ptr<redisReply, void (*)(void*)> r{
    static_cast<redisReply*>(
      redisCommandArgv(ctx_, static_cast<int>(argv_.size()), argv_.data(), argl_.data())),
    freeReplyObject};
  if (!r)
    return fail("XACK failed");
  if (r->type == REDIS_REPLY_ERROR)
    return fail("refused XACK: " + std::string{view(r.get())});
  return caf::none;
}

} // namespace weir
