#pragma once

// An output file that a Weir sink keeps exact: every committed epoch's lines appear in it once,
// however often the epoch is delivered and wherever the process is killed.
//
// The file holds lines; a small companion file, PATH.epoch, holds the last epoch applied, the
// length the file had after it and the sink's own state (text). Applying an epoch:
//   1. skip it when its number is at or below the recorded one (a redelivery after a crash);
//   2. cut the file back to the recorded length (a crash may have left part of an epoch);
//   3. append the epoch's lines and flush them to disk;
//   4. replace PATH.epoch (write a temporary file, fsync, rename): the epoch is applied.
// A crash before 4 leaves the old record, so the epoch is applied again, from step 2.

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>

namespace weir_examples {

class exact_file {
public:
  explicit exact_file(std::string path) : path_(std::move(path)) { load(); }

  uint64_t last_epoch() const { return epoch_; }
  /// The sink's state as of the last applied epoch.
  const std::string& state() const { return state_; }

  /// Applies epoch `epoch`: appends `lines` and records `state`. False when it was applied
  /// before (nothing changes).
  bool apply(uint64_t epoch, const std::string& lines, const std::string& state) {
    if (epoch <= epoch_)
      return false;
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw std::runtime_error("cannot open " + path_);
    bool ok = ::ftruncate(fd, static_cast<off_t>(length_)) == 0 &&
              ::lseek(fd, 0, SEEK_END) >= 0 && write_all(fd, lines) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok)
      throw std::runtime_error("cannot write " + path_);
    std::string record = std::to_string(epoch) + " " + std::to_string(length_ + lines.size()) +
                         "\n" + state;
    auto tmp = path_ + ".epoch.tmp";
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      throw std::runtime_error("cannot open " + tmp);
    ok = write_all(fd, record) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || std::rename(tmp.c_str(), (path_ + ".epoch").c_str()) != 0)
      throw std::runtime_error("cannot record the epoch of " + path_);
    epoch_ = epoch;
    length_ += lines.size();
    state_ = state;
    return true;
  }

private:
  void load() {
    std::ifstream in(path_ + ".epoch");
    if (!in)
      return; // nothing applied yet
    std::string first;
    std::getline(in, first);
    std::istringstream head(first);
    if (!(head >> epoch_ >> length_))
      throw std::runtime_error(path_ + ".epoch is damaged");
    std::ostringstream rest;
    rest << in.rdbuf();
    state_ = rest.str();
  }

  static bool write_all(int fd, const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      auto n = ::write(fd, s.data() + done, s.size() - done);
      if (n <= 0)
        return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  std::string path_;
  uint64_t epoch_ = 0;
  uint64_t length_ = 0;
  std::string state_;
};

} // namespace weir_examples
