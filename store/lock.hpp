#pragma once

/// One writer per store: `weir run` holds an exclusive lock on DIR/LOCK for as long as it may
/// write to the store. The lock is an flock(2) on an open file, so the kernel releases it when
/// the process ends, however it ends: a killed run never blocks the next one. The file holds the
/// process id of its holder, for the message a second writer gets. Readers (query, inspect,
/// dead-letters) do not take it: LMDB gives them consistent snapshots beside the writer.

#include <string>

#include "actors/core/error.hpp"

namespace weir {

class store_lock {
public:
  /// Takes the lock of store `dir` (which must exist) without waiting. Fails with
  /// errc::store_busy ("store DIR is in use by process PID") when another process holds it,
  /// and with errc::store_io when the lock file cannot be opened.
  static caf::expected<store_lock> acquire(const std::string& dir);

  store_lock(store_lock&& other) noexcept;
  store_lock& operator=(store_lock&& other) noexcept;
  store_lock(const store_lock&) = delete;
  store_lock& operator=(const store_lock&) = delete;
  ~store_lock();

  /// The name of the lock file in a store directory.
  static constexpr const char* file_name = "LOCK";

private:
  explicit store_lock(int fd)
    : fd_(fd) {}
  int fd_ = -1;
};

} // namespace weir
