#pragma once

/// The one binary codec of Weir, for every byte layout that is not a Cap'n Proto message: store
/// values, operator snapshots and sketches (little-endian fixed-width numbers, LEB128 varints,
/// length-prefixed bytes), and store keys (big-endian, so that byte order is numeric order).
/// Every layout is independent of the host's byte order. `reader` checks every bound, so that a
/// truncated or damaged input turns into a failed read, never a read past the end.
///
/// It lives in core, the lowest layer, so that core (snapshots, sketches) and the store share it.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace weir::codec {

// -- fixed-width numbers at a place ---------------------------------------------------------------

// Byte by byte on any host; one load or store (and a byte swap for big-endian) where the
// compiler says the host is little-endian, since compilers do not always fold the loops.

template <class T>
T byte_swap(T v) {
  if constexpr (sizeof(T) == 1)
    return v;
  else if constexpr (sizeof(T) == 2)
    return static_cast<T>(__builtin_bswap16(v));
  else if constexpr (sizeof(T) == 4)
    return static_cast<T>(__builtin_bswap32(v));
  else
    return static_cast<T>(__builtin_bswap64(v));
}

template <class T>
void put_le(char* p, T v) {
  static_assert(std::is_unsigned_v<T>);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(p, &v, sizeof(T));
#else
  for (size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<char>(static_cast<uint64_t>(v) >> (8 * i));
#endif
}

template <class T>
T get_le(const char* p) {
  static_assert(std::is_unsigned_v<T>);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
#else
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return static_cast<T>(v);
#endif
}

template <class T>
void put_be(char* p, T v) {
  static_assert(std::is_unsigned_v<T>);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = byte_swap(v);
  std::memcpy(p, &v, sizeof(T));
#else
  for (size_t i = 0; i < sizeof(T); ++i)
    p[sizeof(T) - 1 - i] = static_cast<char>(static_cast<uint64_t>(v) >> (8 * i));
#endif
}

template <class T>
T get_be(const char* p) {
  static_assert(std::is_unsigned_v<T>);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  T v;
  std::memcpy(&v, p, sizeof(T));
  return byte_swap(v);
#else
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  return static_cast<T>(v);
#endif
}

inline void put_le32(char* p, uint32_t v) {
  put_le(p, v);
}
inline void put_le64(char* p, uint64_t v) {
  put_le(p, v);
}
inline uint32_t get_le32(const char* p) {
  return get_le<uint32_t>(p);
}
inline uint64_t get_le64(const char* p) {
  return get_le<uint64_t>(p);
}

// Keys: big-endian.
inline void put_be16(char* p, uint16_t v) {
  put_be(p, v);
}
inline void put_be32(char* p, uint32_t v) {
  put_be(p, v);
}
inline void put_be64(char* p, uint64_t v) {
  put_be(p, v);
}
inline uint16_t get_be16(const char* p) {
  return get_be<uint16_t>(p);
}
inline uint32_t get_be32(const char* p) {
  return get_be<uint32_t>(p);
}
inline uint64_t get_be64(const char* p) {
  return get_be<uint64_t>(p);
}

/// Signed values: flipping the sign bit maps INT64_MIN..INT64_MAX onto 0..UINT64_MAX in order,
/// so negative timestamps sort before positive ones.
inline void put_be64_signed(char* p, int64_t v) {
  put_be64(p, static_cast<uint64_t>(v) ^ (uint64_t{1} << 63));
}

inline int64_t get_be64_signed(const char* p) {
  return static_cast<int64_t>(get_be64(p) ^ (uint64_t{1} << 63));
}

// -- a stream of values ---------------------------------------------------------------------------

/// Appends to a caller-owned buffer, so one buffer serves many values without reallocating.
class writer {
public:
  explicit writer(std::string& out)
    : out_(out) {}

  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { fixed(v); }
  void u32(uint32_t v) { fixed(v); }
  void u64(uint64_t v) { fixed(v); }
  void i64(int64_t v) { fixed(static_cast<uint64_t>(v)); }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    fixed(bits);
  }
  /// LEB128: 7 bits a byte, low bits first.
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  /// A varint length, then the bytes (snapshots, sketches).
  void bytes(std::string_view s) {
    varint(s.size());
    raw(s);
  }
  /// A u32 length, then the bytes (store values).
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s);
  }
  /// The bytes alone, no length.
  void raw(std::string_view s) { out_.append(s.data(), s.size()); }

private:
  template <class T>
  void fixed(T v) {
    char b[sizeof(T)];
    put_le(b, v);
    out_.append(b, sizeof(T));
  }

  std::string& out_;
};

/// Reads what `writer` wrote, front to back. A read past the end (or of a malformed varint)
/// puts the reader into a sticky failed state in which every read returns zero or empty, so a
/// decoder reads a whole structure and checks `ok()` (or `done()`) once.
class reader {
public:
  explicit reader(std::string_view in)
    : p_(in.data())
    , end_(in.data() + in.size()) {}

  uint8_t u8() { return need(1) ? static_cast<uint8_t>(*p_++) : 0; }
  uint16_t u16() { return fixed<uint16_t>(); }
  uint32_t u32() { return fixed<uint32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  double f64() {
    uint64_t bits = u64();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (!need(1))
        return 0;
      auto b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) // would not fit in 64 bits
        break;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0)
        return v;
    }
    ok_ = false;
    return 0;
  }
  /// What `writer::bytes` wrote; a view into the input.
  std::string_view bytes() { return take(varint()); }
  /// What `writer::str` wrote; a view into the input.
  std::string_view str() { return take(u32()); }
  /// The next n bytes; a view into the input.
  std::string_view take(uint64_t n) {
    if (!ok_ || n > remaining()) {
      ok_ = false;
      return {};
    }
    std::string_view v{p_, static_cast<size_t>(n)};
    p_ += n;
    return v;
  }

  bool ok() const { return ok_; }
  /// Every read succeeded and nothing is left.
  bool done() const { return ok_ && p_ == end_; }
  void fail() { ok_ = false; }
  size_t remaining() const { return ok_ ? static_cast<size_t>(end_ - p_) : 0; }

private:
  bool need(size_t n) {
    if (!ok_ || static_cast<size_t>(end_ - p_) < n)
      ok_ = false;
    return ok_;
  }
  template <class T>
  T fixed() {
    if (!need(sizeof(T)))
      return 0;
    T v = get_le<T>(p_);
    p_ += sizeof(T);
    return v;
  }

  const char* p_;
  const char* end_;
  bool ok_ = true;
};

} // namespace weir::codec
