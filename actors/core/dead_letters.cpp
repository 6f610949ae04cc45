#include "actors/core/dead_letters.hpp"

#include <charconv>

#include "actors/core/codec.hpp"

namespace weir {

bool read_dead_letter(std::string_view& in, dead_letter_view& out) {
  codec::reader r{in};
  dead_letter_view d;
  d.source = r.u32();
  d.offset = r.u64();
  d.reason = r.str();
  d.raw = r.str();
  if (!r.ok())
    return false;
  out = d;
  in.remove_prefix(in.size() - r.remaining());
  return true;
}

void dead_letter_pack::add(uint32_t source, uint64_t offset, std::string_view reason,
                           std::string_view raw) {
  starts_.push_back(buf_.size());
  codec::writer w{buf_};
  w.u32(source);
  w.u64(offset);
  w.str(reason);
  if (raw.size() <= max_raw) {
    w.str(raw);
    return;
  }
  char digits[24];
  auto n = std::to_chars(digits, digits + sizeof digits, raw.size()).ptr - digits;
  const std::string_view before = " [weir: cut here, ";
  const std::string_view after = " bytes in all]";
  w.u32(static_cast<uint32_t>(max_raw + before.size() + n + after.size()));
  w.raw(raw.substr(0, max_raw));
  w.raw(before);
  w.raw({digits, static_cast<size_t>(n)});
  w.raw(after);
}

void dead_letter_pack::append(const dead_letter_pack& other) {
  const size_t base = buf_.size();
  buf_ += other.buf_;
  for (auto s : other.starts_)
    starts_.push_back(base + s);
}

bool dead_letter_pack::assign(std::string_view packed) {
  clear();
  buf_.assign(packed.data(), packed.size());
  std::string_view rest = buf_;
  dead_letter_view d;
  while (!rest.empty()) {
    starts_.push_back(buf_.size() - rest.size());
    if (!read_dead_letter(rest, d)) {
      clear();
      return false;
    }
  }
  return true;
}

void dead_letter_pack::clear() {
  buf_.clear();
  starts_.clear();
}

std::string_view dead_letter_pack::padded_bytes() {
  const size_t size = buf_.size();
  buf_.resize((size + 7) / 8 * 8 + 8, '\0'); // zeros written, then the size goes back
  buf_.resize(size);
  return buf_;
}

std::string_view dead_letter_pack::entry(size_t i) const {
  const size_t end = i + 1 < starts_.size() ? starts_[i + 1] : buf_.size();
  return std::string_view{buf_}.substr(starts_[i], end - starts_[i]);
}

dead_letter_view dead_letter_pack::operator[](size_t i) const {
  auto e = entry(i);
  dead_letter_view d;
  read_dead_letter(e, d); // written by add: always whole
  return d;
}

} // namespace weir
