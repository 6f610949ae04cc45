#include "store/lock.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace weir {

namespace {

/// The holder's pid as written in the lock file ("?" when it cannot be read).
std::string holder_of(int fd) {
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string out;
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i)
    out += buf[i];
  return out.empty() ? "?" : out;
}

} // namespace

caf::expected<store_lock> store_lock::acquire(const std::string& dir) {
  auto path = dir + "/" + file_name;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return make_error(errc::store_io,
                      "cannot open the lock file " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    std::string msg = e == EWOULDBLOCK ? "store " + dir + " is in use by process " + holder_of(fd)
                                       : "cannot lock " + path + ": " + std::strerror(e);
    ::close(fd);
    return make_error(e == EWOULDBLOCK ? errc::store_busy : errc::store_io, msg);
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    int e = errno;
    ::close(fd);
    return make_error(errc::store_io, "cannot write " + path + ": " + std::strerror(e));
  }
  return store_lock{fd};
}

store_lock::store_lock(store_lock&& other) noexcept
  : fd_(other.fd_) {
  other.fd_ = -1;
}

store_lock& store_lock::operator=(store_lock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

store_lock::~store_lock() {
  // Closing the descriptor releases the flock; the file stays (removing it would race with a
  // next writer that already opened it).
  if (fd_ >= 0)
    ::close(fd_);
}

} // namespace weir
