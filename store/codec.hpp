#pragma once

/// Little-endian value encoding for the stores. Values are small fixed structs with
/// length-prefixed strings; `reader` checks every bound so that a truncated or damaged value
/// turns into errc::store_corrupt, never a read past the end.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace weir::codec {

inline void put_le32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i, v >>= 8)
    p[i] = static_cast<char>(v & 0xFF);
}

inline void put_le64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i, v >>= 8)
    p[i] = static_cast<char>(v & 0xFF);
}

inline uint32_t get_le32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

inline uint64_t get_le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

/// Appends to a caller-owned buffer, so one buffer serves many values without reallocating.
class writer {
public:
  explicit writer(std::string& out)
    : out_(out) {}

  void u16(uint16_t v) {
    char b[2] = {static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
    out_.append(b, 2);
  }
  void u32(uint32_t v) {
    char b[4];
    put_le32(b, v);
    out_.append(b, 4);
  }
  void u64(uint64_t v) {
    char b[8];
    put_le64(b, v);
    out_.append(b, 8);
  }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    u64(bits);
  }
  /// A u32 length, then the bytes.
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s.data(), s.size());
  }

private:
  std::string& out_;
};

/// Reads a value front to back; every read returns false (and leaves the output alone) when
/// fewer bytes remain than it needs.
class reader {
public:
  explicit reader(std::string_view in)
    : in_(in) {}

  bool u16(uint16_t& v) {
    if (in_.size() < 2)
      return false;
    v = static_cast<uint16_t>(static_cast<uint8_t>(in_[0]) | (static_cast<uint8_t>(in_[1]) << 8));
    in_.remove_prefix(2);
    return true;
  }
  bool u32(uint32_t& v) {
    if (in_.size() < 4)
      return false;
    v = get_le32(in_.data());
    in_.remove_prefix(4);
    return true;
  }
  bool u64(uint64_t& v) {
    if (in_.size() < 8)
      return false;
    v = get_le64(in_.data());
    in_.remove_prefix(8);
    return true;
  }
  bool i64(int64_t& v) {
    uint64_t u;
    if (!u64(u))
      return false;
    v = static_cast<int64_t>(u);
    return true;
  }
  bool f64(double& v) {
    uint64_t bits;
    if (!u64(bits))
      return false;
    std::memcpy(&v, &bits, sizeof v);
    return true;
  }
  bool bytes(size_t n, std::string_view& out) {
    if (in_.size() < n)
      return false;
    out = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  bool str(std::string_view& out) {
    uint32_t n;
    std::string_view save = in_;
    if (!u32(n) || !bytes(n, out)) {
      in_ = save;
      return false;
    }
    return true;
  }
  bool str(std::string& out) {
    std::string_view v;
    if (!str(v))
      return false;
    out.assign(v.data(), v.size());
    return true;
  }

  size_t remaining() const { return in_.size(); }
  bool done() const { return in_.empty(); }

private:
  std::string_view in_;
};

} // namespace weir::codec
