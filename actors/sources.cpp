#include "actors/sources.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "actors/core/codec.hpp"

namespace weir {

namespace {

constexpr size_t record_size = 8 + 8 + 4 + 8 + 1;

/// The fingerprint of the first `len` bytes of fd; false when it has fewer.
bool fingerprint(int fd, uint32_t len, uint64_t& fp) {
  char buf[fingerprint_bytes];
  size_t got = 0;
  while (got < len) {
    auto n = ::pread(fd, buf + got, len - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    got += static_cast<size_t>(n);
  }
  fp = XXH3_64bits(buf, len);
  return true;
}

/// The generation records of a source: generation -> identity.
caf::expected<std::map<uint32_t, file_identity>> load_generations(lake& lk, uint32_t files_id) {
  std::map<uint32_t, file_identity> out;
  auto err = lk.scan(files_id, 0, [&](uint64_t g, std::string_view d) {
    if (d.size() >= record_size) {
      codec::reader r{d};
      file_identity id;
      id.dev = r.u64();
      id.ino = r.u64();
      id.fp_len = r.u32();
      id.fp = r.u64();
      id.finished = r.u8() != 0;
      out[static_cast<uint32_t>(g)] = id;
    }
    return true;
  });
  if (err)
    return err;
  return out;
}

/// Fills in the lake id, committed offset and lake end of `in` from its key.
caf::error bind_input(lake& lk, const offset_list& committed, source_input& in) {
  auto id = lk.source_id(in.key);
  if (!id)
    return id.error();
  in.id = *id;
  in.committed = 0;
  for (auto& [s, off] : committed)
    if (s == in.id)
      in.committed = off;
  auto end = lk.end_offset(in.id);
  if (!end)
    return end.error();
  in.lake_end = std::max(*end, in.committed);
  return caf::none;
}

/// An earlier generation's file, renamed next to `path` (a name that starts with its name, as
/// app.log.1 or app.log-20240601): its path, or "" when none is found.
std::string find_rotated(const std::string& path, const file_identity& known) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto p = fs::path(path);
  auto name = p.filename().string();
  for (auto& e : fs::directory_iterator(p.parent_path(), ec)) {
    auto n = e.path().filename().string();
    if (n == name || n.compare(0, name.size(), name) != 0)
      continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0 || static_cast<uint64_t>(st.st_ino) != known.ino ||
        static_cast<uint64_t>(st.st_dev) != known.dev)
      continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue;
    bool same = same_file(known, fd);
    ::close(fd);
    if (same)
      return e.path().string();
  }
  return {};
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

/// The drain input of earlier generation g (identity `known`) of the source at `path`, whose
/// file now is `current`; nothing when it has nothing left (then it is marked finished).
caf::expected<std::optional<source_input>> drain_input(lake& lk, const offset_list& committed,
                                                       const source_input& proto, uint32_t g,
                                                       file_identity known,
                                                       const file_identity& current) {
  source_input in = proto;
  in.generation = g;
  in.key = generation_key(in.base_key, g);
  in.identity = known;
  in.drain = true;
  in.cfg.follow = false;
  if (auto err = bind_input(lk, committed, in))
    return err;
  in.path.clear();
  const bool truncated = known.dev == current.dev && known.ino == current.ino;
  if (!known.finished && !truncated)
    in.path = find_rotated(proto.path, known);
  const bool file_left = !in.path.empty() && file_size(in.path) > in.committed;
  if (!file_left && in.lake_end <= in.committed) {
    if (!known.finished && in.path.empty())
      spdlog::warn("source {}: generation {} ({}) is gone {}; what was not read of it (from "
                   "offset {}) is lost",
                   proto.path, g, in.key,
                   truncated ? "(the file was truncated)" : "(no rotated file has its inode)",
                   in.committed);
    if (!known.finished) {
      known.finished = true;
      if (auto err = save_generation(lk, in.files_id, g, known))
        return err;
    }
    return std::optional<source_input>{};
  }
  if (in.path.empty())
    in.header_from = proto.path; // its csv header: the file now at the path has the same one
  else
    spdlog::warn("source {}: reading the rest of generation {} from {} (from offset {})",
                 proto.path, g, in.path, in.committed);
  return std::optional<source_input>{std::move(in)};
}

/// Whether the file open as `fd` is (or was) a generation of another path of the same
/// configured source: a file renamed by a rotation that its glob matches too, which is read
/// under its old path's key (drained) and must not be read again under its own.
caf::expected<bool> rotated_here(lake& lk, const std::string& prefix, const std::string& own,
                                 int fd) {
  auto keys = lk.sources();
  if (!keys)
    return keys.error();
  static const std::string suffix = files_key_suffix;
  for (auto& [id, key] : *keys) {
    if (key == own || key.size() <= suffix.size() || key.compare(0, prefix.size(), prefix) != 0 ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    auto gens = load_generations(lk, id);
    if (!gens)
      return gens.error();
    for (auto& [g, known] : *gens)
      if (same_file(known, fd))
        return true;
  }
  return false;
}

/// Starts the generation after the last one (`last`) of `in` for the file now at its path
/// (`current`), which was replaced or truncated since the last run; appended to `out`.
caf::expected<std::vector<source_input>>
start_generation(lake& lk, const offset_list& committed, source_input in, const file_identity& last,
                 const file_identity& current, std::vector<source_input> out) {
  const bool truncated = last.ino == current.ino && last.dev == current.dev;
  spdlog::warn("source {}: the file was {} since the last run (committed offset {} of {}); it is "
               "read from its start as generation {}",
               in.path, truncated || last.ino == 0 ? "truncated" : "replaced", in.committed, in.key,
               in.generation + 1);
  in.generation += 1;
  in.key = generation_key(in.base_key, in.generation);
  in.identity = current;
  if (auto err = save_generation(lk, in.files_id, in.generation, in.identity))
    return err;
  if (auto err = bind_input(lk, committed, in))
    return err;
  out.push_back(std::move(in));
  return out;
}

} // namespace

std::optional<size_t> source_of_key(const pipeline_config& p, const std::string& key) {
  auto ends_with = [&key](std::string_view suffix) {
    return key.size() >= suffix.size() &&
           key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(files_key_suffix) || ends_with(long_line_key_suffix))
    return std::nullopt;
  // "pipeline/source:...": names hold neither '/' nor ':', so one source at most fits.
  for (size_t i = 0; i < p.sources.size(); ++i) {
    const std::string prefix = p.name + "/" + p.sources[i].name + ":";
    if (key.compare(0, prefix.size(), prefix) == 0)
      return i;
  }
  return std::nullopt;
}

std::string generation_key(const std::string& base, uint32_t g) {
  return g == 0 ? base : base + "#" + std::to_string(g);
}

std::string http_source_key(const std::string& pipeline, const std::string& source) {
  return pipeline + "/" + source + ":http";
}

std::string redis_source_key(const std::string& pipeline, const std::string& source) {
  return pipeline + "/" + source + ":redis";
}

caf::expected<source_input> resolve_network_source(lake& lk, const offset_list& committed,
                                                const std::string& pipeline,
                                                const source_config& src, uint32_t si) {
  source_input in;
  in.cfg = src;
  in.config_index = si;
  in.base_key = src.is_redis() ? redis_source_key(pipeline, src.name)
                               : http_source_key(pipeline, src.name);
  in.key = in.base_key;
  if (auto err = bind_input(lk, committed, in))
    return err;
  return in;
}

std::string source_base_key(const std::string& pipeline, const std::string& source,
                            const std::string& path) {
  // The absolute path names the file in the store, so that a run from another working
  // directory (or with the config given another way) resumes instead of starting over.
  std::error_code ec;
  auto abs = path == "-" ? path : std::filesystem::weakly_canonical(path, ec).string();
  if (ec)
    abs = std::filesystem::absolute(path).lexically_normal().string();
  return pipeline + "/" + source + ":" + abs;
}

caf::expected<file_identity> identify(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_error(errc::bad_input,
                      std::string{"cannot stat a source: "} + std::strerror(errno));
  file_identity id;
  id.dev = static_cast<uint64_t>(st.st_dev);
  id.ino = static_cast<uint64_t>(st.st_ino);
  id.fp_len =
    static_cast<uint32_t>(std::min<uint64_t>(static_cast<uint64_t>(st.st_size), fingerprint_bytes));
  if (!fingerprint(fd, id.fp_len, id.fp)) { // shrunk meanwhile: an empty fingerprint
    id.fp_len = 0;
    id.fp = XXH3_64bits(nullptr, 0);
  }
  return id;
}

bool same_file(const file_identity& known, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_dev) != known.dev ||
      static_cast<uint64_t>(st.st_ino) != known.ino)
    return false;
  uint64_t fp = 0;
  return fingerprint(fd, known.fp_len, fp) && fp == known.fp;
}

std::vector<std::string> glob_paths(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i)
      out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  std::sort(out.begin(), out.end());
  return out;
}

caf::error save_generation(lake& lk, uint32_t files_id, uint32_t g, const file_identity& id) {
  if (files_id == 0)
    return caf::none; // identities are not kept (a run without exactly-once)
  std::string rec;
  codec::writer w{rec};
  w.u64(id.dev);
  w.u64(id.ino);
  w.u32(id.fp_len);
  w.u64(id.fp);
  w.u8(id.finished ? 1 : 0);
  return lk.append({{files_id, g, rec}});
}

caf::expected<source_input> next_generation(lake& lk, const source_input& from, int fd) {
  source_input in = from;
  in.drain = false;
  in.generation = from.generation + 1;
  in.key = generation_key(in.base_key, in.generation);
  auto id = identify(fd);
  if (!id)
    return id.error();
  in.identity = *id;
  if (auto err = save_generation(lk, in.files_id, in.generation, in.identity))
    return err;
  if (auto err = bind_input(lk, {}, in))
    return err;
  in.committed = 0;
  in.lake_end = 0;
  return in;
}

caf::expected<std::vector<source_input>> resolve_source(lake& lk, const offset_list& committed,
                                                        const std::string& pipeline,
                                                        const source_config& src, uint32_t si,
                                                        const std::string& path, bool persist) {
  source_input in;
  in.path = path;
  in.cfg = src;
  in.config_index = si;
  in.base_key = source_base_key(pipeline, src.name, path);
  in.key = in.base_key;
  std::vector<source_input> out;
  if (path == "-") {
    if (auto err = bind_input(lk, committed, in))
      return err;
    out.push_back(std::move(in));
    return out;
  }
  caf::expected<std::map<uint32_t, file_identity>> gens{std::map<uint32_t, file_identity>{}};
  if (persist) {
    auto files = lk.source_id(in.base_key + files_key_suffix);
    if (!files)
      return files.error();
    in.files_id = *files;
    gens = load_generations(lk, in.files_id);
    if (!gens)
      return gens.error();
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(errc::bad_input, "cannot open " + path + ": " + std::strerror(errno));
  auto current = identify(fd);
  if (!current) {
    ::close(fd);
    return current.error();
  }
  if (persist && src.path.find_first_of("*?[") != std::string::npos && current->fp_len > 0) {
    auto rotated =
      rotated_here(lk, pipeline + "/" + src.name + ":", in.base_key + files_key_suffix, fd);
    if (!rotated || *rotated) {
      ::close(fd);
      if (!rotated)
        return rotated.error();
      spdlog::debug("source {}: {} is a rotated file of another path; not read again", src.name,
                    path);
      return out;
    }
  }
  // The last generation goes on when the file is still the same (not truncated) ...
  uint32_t last = gens->empty() ? 0 : gens->rbegin()->first;
  in.generation = last;
  in.key = generation_key(in.base_key, last);
  if (auto err = bind_input(lk, committed, in)) {
    ::close(fd);
    return err;
  }
  const uint64_t size = file_size(path);
  bool same = size >= in.committed && (gens->empty() || same_file(gens->at(last), fd));
  ::close(fd);
  if (gens->empty() && !same)
    (*gens)[0] = file_identity{}; // a store from before identities: generation 0 drains
  // ... earlier generations drain first.
  for (auto& [g, known] : *gens) {
    if (g == last && same)
      break;
    auto d = drain_input(lk, committed, in, g, known, *current);
    if (!d)
      return d.error();
    if (*d)
      out.push_back(std::move(**d));
  }
  if (same) {
    in.identity = *current;
    auto& known = gens->empty() ? *current : gens->at(last);
    if (gens->empty() || current->fp_len > known.fp_len)
      if (auto err = save_generation(lk, in.files_id, last, *current))
        return err;
    out.push_back(std::move(in));
    return out;
  }
  return start_generation(lk, committed, std::move(in), gens->at(last), *current, std::move(out));
}

} // namespace weir
