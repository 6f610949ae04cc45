#include "actors/core/result_pack.hpp"

#include <cstring>

#include "actors/core/codec.hpp"

namespace weir {

namespace {

/// Reads the result at the front of `in`; the bytes it takes, or 0 when `in` does not start with
/// a whole one.
size_t read_result(std::string_view in, result_view& out) {
  if (in.size() < result_pack::head_size + 8)
    return 0;
  const char* p = in.data();
  const uint64_t key_len = codec::get_le<uint32_t>(p + 16);
  const uint64_t count = codec::get_le<uint32_t>(p + 24);
  const uint64_t stored = 8 + 8 * count;
  const uint64_t total = result_pack::head_size + stored + key_len;
  if (total > in.size())
    return 0;
  out.start = static_cast<timestamp>(codec::get_le<uint64_t>(p));
  out.end = static_cast<timestamp>(codec::get_le<uint64_t>(p + 8));
  out.version = codec::get_le<uint32_t>(p + 20);
  out.count = static_cast<uint32_t>(count);
  out.stored = in.substr(result_pack::head_size, stored);
  out.key = in.substr(result_pack::head_size + stored, key_len);
  return static_cast<size_t>(total);
}

} // namespace

double result_view::value(size_t i) const {
  const uint64_t bits = codec::get_le<uint64_t>(stored.data() + 8 + 8 * i);
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

result_view::operator window_result() const {
  window_result r;
  r.key.assign(key.data(), key.size());
  r.start = start;
  r.end = end;
  r.version = version;
  r.values.resize(count);
  for (size_t i = 0; i < count; ++i)
    r.values[i] = value(i);
  return r;
}

void result_pack::add(std::string_view key, timestamp start, timestamp end, uint32_t version,
                      const double* values, size_t count) {
  const size_t at = buf_.size();
  starts_.push_back(at);
  buf_.resize(at + head_size + 8 + 8 * count + key.size());
  char* p = buf_.data() + at;
  codec::put_le(p, static_cast<uint64_t>(start));
  codec::put_le(p + 8, static_cast<uint64_t>(end));
  codec::put_le(p + 16, static_cast<uint32_t>(key.size()));
  codec::put_le(p + 20, version);
  codec::put_le(p + 24, static_cast<uint32_t>(count));
  p += head_size + 8;
  for (size_t i = 0; i < count; ++i, p += 8) {
    uint64_t bits;
    std::memcpy(&bits, &values[i], sizeof bits);
    codec::put_le(p, bits);
  }
  if (!key.empty())
    std::memcpy(p, key.data(), key.size());
}

void result_pack::add(const result_pack& from, size_t i) {
  const auto e = from.entry(i);
  starts_.push_back(buf_.size());
  buf_.append(e.data(), e.size());
}

std::string_view result_pack::entry(size_t i) const {
  const size_t end = i + 1 < starts_.size() ? starts_[i + 1] : buf_.size();
  return std::string_view{buf_}.substr(starts_[i], end - starts_[i]);
}

void result_pack::update(size_t i, uint32_t version, const double* values, size_t count) {
  char* p = buf_.data() + starts_[i];
  codec::put_le(p + 20, version);
  p += head_size + 8;
  for (size_t j = 0; j < count; ++j, p += 8) {
    uint64_t bits;
    std::memcpy(&bits, &values[j], sizeof bits);
    codec::put_le(p, bits);
  }
}

bool result_pack::append(std::string_view packed) {
  const size_t base = buf_.size();
  const size_t n = starts_.size();
  result_view r;
  for (size_t at = 0; at < packed.size();) {
    const size_t taken = read_result(packed.substr(at), r);
    if (taken == 0) {
      starts_.resize(n);
      return false;
    }
    starts_.push_back(base + at);
    at += taken;
  }
  buf_.append(packed.data(), packed.size());
  return true;
}

bool result_pack::assign(std::string_view packed) {
  clear();
  return append(packed);
}

void result_pack::clear() {
  buf_.clear();
  starts_.clear();
}

void result_pack::reserve(size_t results, size_t bytes) {
  starts_.reserve(results);
  buf_.reserve(bytes);
}

std::string_view result_pack::padded_bytes() {
  const size_t size = buf_.size();
  buf_.resize((size + 7) / 8 * 8 + 8, '\0'); // zeros written, then the size goes back
  buf_.resize(size);
  return buf_;
}

result_view result_pack::operator[](size_t i) const {
  result_view r;
  read_result(std::string_view{buf_}.substr(starts_[i]), r); // written by add: always whole
  return r;
}

} // namespace weir
