#include "cluster/config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "actors/core/config.hpp"
#include "actors/core/error.hpp"
#include "actors/core/toml_reader.hpp"
#include "cluster/tls.hpp"

namespace weir::cluster {

std::string node_config::address() const {
  auto h = host.find(':') == std::string::npos ? host : "[" + host + "]";
  return h + ":" + std::to_string(port);
}

std::optional<size_t> cluster_config::find(std::string_view name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name)
      return i;
  return std::nullopt;
}

size_t cluster_config::coordinator() const {
  auto it = std::find_if(nodes.begin(), nodes.end(), [](auto& n) { return n.coordinator; });
  return static_cast<size_t>(it - nodes.begin());
}

size_t cluster_config::ingest() const {
  auto it = std::find_if(nodes.begin(), nodes.end(), [](auto& n) { return n.ingest; });
  return static_cast<size_t>(it - nodes.begin());
}

namespace {

using namespace toml_check;

/// What reading the cluster file yields before the pipeline config it names is loaded.
struct draft {
  cluster_config config;
  uint32_t pipeline_line = 1; ///< where cluster.pipeline is, for errors about the pipeline
};

/// Where a setting was read, for errors found after reading it.
struct origin {
  uint32_t line = 1;
  std::string key;
};

/// A TLS file setting with the place it came from (the node's override or cluster.tls).
struct tls_setting {
  std::string path;
  origin at;
};

/// The settings of [cluster] and [cluster.tls] that the nodes are read against.
struct cluster_defaults {
  std::string dir;
  std::string self;
  bool insecure = false;
  origin insecure_at;
  tls_setting certificate, key, ca;
};

/// Cluster and node names: [A-Za-z0-9_.-]+, at most max_name_bytes.
void check_name(const table_reader& r, const std::string& name) {
  if (!valid_name(name) || name.size() > max_name_bytes)
    fail(*r.get("name"), r.key("name"),
         "must match [A-Za-z0-9_.-]+ and be at most " + std::to_string(max_name_bytes) +
           " characters");
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

/// The mode bits of `path` that group and others have; nullopt when it cannot be looked at.
std::optional<mode_t> shared_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return std::nullopt;
  return st.st_mode & 077;
}

/// A file holding a secret (the cluster secret, a private key) must exist and be private:
/// anyone else who can read it can join the cluster.
void check_private_file(const std::string& path, const origin& at, const char* what) {
  if (!std::filesystem::is_regular_file(path))
    fail(at.line, at.key, std::string{what} + " not found: " + path);
  auto mode = shared_mode(path);
  if (!mode)
    fail(at.line, at.key, std::string{"cannot read "} + what + " " + path);
  if (*mode != 0) {
    std::ostringstream m;
    m << what << " " << path << " is accessible by group or others (mode 0" << std::oct
      << (*mode | 0600) << "): chmod 600 " << path;
    fail(at.line, at.key, m.str());
  }
}

std::string trim_right(std::string s) {
  while (!s.empty() && std::string_view{" \t\r\n"}.find(s.back()) != std::string_view::npos)
    s.pop_back();
  return s;
}

std::string read_secret_file(const std::string& path, const origin& at) {
  check_private_file(path, at, "secret file");
  std::ifstream in{path, std::ios::binary};
  std::ostringstream buf;
  buf << in.rdbuf();
  if (!in)
    fail(at.line, at.key, "cannot read secret file " + path);
  return trim_right(buf.str());
}

/// secret_file or secret_env (exactly one), at least min_secret_bytes long.
std::string read_secret(const table_reader& c, const std::string& dir) {
  bool file = c.has("secret_file");
  if (file == c.has("secret_env"))
    fail(file ? line_of(*c.get("secret_env")) : c.line(),
         c.key(file ? "secret_env" : "secret_file"),
         file ? "give secret_file or secret_env, not both"
              : "missing: the cluster secret, secret_file = \"PATH\" or secret_env = \"VARIABLE\"");
  const char* k = file ? "secret_file" : "secret_env";
  origin at{line_of(*c.get(k)), c.key(k)};
  auto value = c.req_string(k);
  if (value.empty())
    fail(at.line, at.key, "must not be empty");
  std::string secret;
  if (file) {
    secret = read_secret_file(resolve(dir, value), at);
  } else {
    const char* env = std::getenv(value.c_str());
    if (env == nullptr)
      fail(at.line, at.key, "environment variable " + value + " is not set");
    secret = trim_right(env);
  }
  if (secret.size() < min_secret_bytes)
    fail(at.line, at.key,
         "the secret is " + std::to_string(secret.size()) + " bytes; at least " +
           std::to_string(min_secret_bytes) + " are needed (openssl rand -hex 32)");
  return secret;
}

tls_setting read_tls_file(const table_reader& r, const char* k, const std::string& dir,
                          tls_setting def) {
  if (!r.has(k))
    return def;
  auto path = r.req_string(k);
  if (path.empty())
    fail(*r.get(k), r.key(k), "must not be empty");
  return {resolve(dir, path), {line_of(*r.get(k)), r.key(k)}};
}

/// [cluster.tls]: the default certificate, key and CA of every node, or insecure = true.
void read_tls(const table_reader& c, cluster_defaults& d) {
  const auto* t = c.get_table("tls", false);
  if (t == nullptr)
    return;
  table_reader r{*t, c.key("tls"), {"certificate", "key", "ca", "insecure"}};
  d.insecure = r.get_bool("insecure", false);
  if (r.has("insecure"))
    d.insecure_at = {line_of(*r.get("insecure")), r.key("insecure")};
  d.certificate = read_tls_file(r, "certificate", d.dir, {});
  d.key = read_tls_file(r, "key", d.dir, {});
  d.ca = read_tls_file(r, "ca", d.dir, {});
}

/// The node's own TLS files, before it starts: they exist, the key is private, and they fit
/// together as TLS will use them.
void check_own_tls(const tls_setting& cert, const tls_setting& key, const tls_setting& ca) {
  for (auto* s : {&cert, &ca})
    if (!std::filesystem::is_regular_file(s->path))
      fail(s->at.line, s->at.key, "file not found: " + s->path);
  check_private_file(key.path, key.at, "private key");
  if (auto problem = check_tls_files({cert.path, key.path, ca.path})) {
    using file = tls_problem::file;
    const auto& at = problem->which == file::certificate ? cert.at
                     : problem->which == file::key       ? key.at
                                                         : ca.at;
    fail(at.line, at.key, problem->message);
  }
}

/// The TLS files of one node: its overrides over the defaults. With insecure = true there must
/// be none (a file that is set but not used would let a reader believe TLS is on).
tls_files read_node_tls(const table_reader& n, const cluster_defaults& d, bool self) {
  auto cert = read_tls_file(n, "certificate", d.dir, d.certificate);
  auto key = read_tls_file(n, "key", d.dir, d.key);
  auto ca = read_tls_file(n, "ca", d.dir, d.ca);
  for (auto* s : {&cert, &key, &ca}) {
    if (d.insecure && !s->path.empty())
      fail(s->at.line, s->at.key, "TLS is off (cluster.tls.insecure = true): remove this setting");
  }
  if (d.insecure)
    return {};
  for (auto [s, k] : {std::pair{&cert, "certificate"}, {&key, "key"}, {&ca, "ca"}})
    if (s->path.empty())
      fail(n.line(), n.key(k),
           std::string{"missing: TLS is on, so every node needs a "} + k + ": set cluster.tls." +
             k + " or " + n.key(k) + " (cluster.tls.insecure = true turns TLS off, on loopback)");
  if (self)
    check_own_tls(cert, key, ca);
  return {cert.path, key.path, ca.path};
}

/// roles = ["coordinator", "ingest", "aggregate"] (default: ["aggregate"]) and spare.
void read_roles(const table_reader& n, node_config& x) {
  auto roles = n.has("roles") ? n.get_strings("roles") : std::vector<std::string>{"aggregate"};
  if (roles.empty())
    fail(*n.get("roles"), n.key("roles"), "needs at least one of: coordinator, ingest, aggregate");
  for (size_t i = 0; i < roles.size(); ++i) {
    auto k = n.key("roles") + "[" + std::to_string(i) + "]";
    bool* flag = roles[i] == "coordinator" ? &x.coordinator
                 : roles[i] == "ingest"    ? &x.ingest
                 : roles[i] == "aggregate" ? &x.aggregate
                                           : nullptr;
    if (flag == nullptr)
      fail(*n.get("roles"), k,
           "unknown role " + in_quotes(roles[i]) +
             "; expected one of: coordinator, ingest, aggregate");
    if (*flag)
      fail(*n.get("roles"), k, "role " + in_quotes(roles[i]) + " given twice");
    *flag = true;
  }
  x.spare = n.get_bool("spare", false);
  if (x.spare && (x.coordinator || x.ingest || !x.aggregate))
    fail(*n.get("spare"), n.key("spare"),
         "a spare stands in for aggregate nodes only: its roles must be [\"aggregate\"]");
}

node_config read_node(const toml::table& t, size_t i, const cluster_defaults& d) {
  table_reader n{t,
                 "node[" + std::to_string(i) + "]",
                 {"name", "address", "store", "roles", "spare", "certificate", "key", "ca"}};
  node_config x;
  x.name = n.req_string("name");
  check_name(n, x.name);
  auto addr = parse_host_port(n.req_string("address"), 0);
  if (!addr)
    fail(*n.get("address"), n.key("address"),
         "must be \"HOST:PORT\" with a port from 1 to 65535, e.g. \"10.0.0.1:7700\" or "
         "\"[::1]:7700\"");
  x.host = addr->host;
  x.port = addr->port;
  x.store = resolve(d.dir, n.req_string("store"));
  if (x.store.empty() || x.store == "-")
    fail(*n.get("store"), n.key("store"), "must name a directory");
  read_roles(n, x);
  if (d.insecure && !is_loopback(x.host))
    fail(d.insecure_at.line, d.insecure_at.key,
         "only for nodes on loopback addresses; node " + in_quotes(x.name) + " listens on " +
           x.address() + ": make certificates (docs/cluster.md)");
  x.tls = read_node_tls(n, d, x.name == d.self);
  return x;
}

/// The roles the cluster needs: exactly one coordinator node, exactly one ingest node (its
/// lake is on its disk, next to its sources), at least one aggregate node that is not a spare.
void check_roles(const std::vector<node_config>& nodes,
                 const std::vector<const toml::table*>& tables) {
  auto check_one = [&](bool node_config::*role, const char* name, const char* why) {
    std::optional<size_t> first;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!(nodes[i].*role))
        continue;
      if (first)
        fail(*tables[i], "node[" + std::to_string(i) + "].roles",
             std::string{"a second "} + name + " node (the first is " +
               in_quotes(nodes[*first].name) + "): exactly one node has the " + name + " role" +
               why);
      first = i;
    }
    if (!first)
      fail(*tables[0], "node", std::string{"no node has the "} + name + " role; exactly one must");
  };
  check_one(&node_config::coordinator, "coordinator", "");
  check_one(&node_config::ingest, "ingest",
            " (the pipelines' lake is on its disk, next to their sources)");
  if (std::none_of(nodes.begin(), nodes.end(), [](auto& n) { return n.aggregate && !n.spare; }))
    fail(*tables[0], "node", "no node has the aggregate role (spares aside); at least one must");
}

void read_nodes(const table_reader& root, cluster_config& c, const cluster_defaults& d) {
  auto tables = root.get_tables("node");
  if (tables.empty())
    fail(root.line(), "node", "the cluster needs at least one [[node]]");
  std::map<std::string, size_t> names, addresses;
  for (size_t i = 0; i < tables.size(); ++i) {
    auto n = read_node(*tables[i], i, d);
    auto key = "node[" + std::to_string(i) + "]";
    if (auto [it, fresh] = names.emplace(n.name, i); !fresh)
      fail(*tables[i]->get("name"), key + ".name",
           "duplicate node name " + in_quotes(n.name) + " (also node[" +
             std::to_string(it->second) + "])");
    if (auto [it, fresh] = addresses.emplace(n.address(), i); !fresh)
      fail(*tables[i]->get("address"), key + ".address",
           "node " + in_quotes(c.nodes[it->second].name) + " listens on " + n.address() +
             " already");
    c.nodes.push_back(std::move(n));
  }
  check_roles(c.nodes, tables);
}

void read_durations(const table_reader& r, cluster_config& c) {
  c.heartbeat = r.get_duration("heartbeat", c.heartbeat);
  c.failure_timeout = r.get_duration("failure_timeout", c.failure_timeout);
  if (c.heartbeat <= 0)
    fail(*r.get("heartbeat"), r.key("heartbeat"), "must be greater than zero");
  if (c.failure_timeout <= c.heartbeat)
    fail(r.has("failure_timeout") ? *r.get("failure_timeout") : *r.get("heartbeat"),
         r.key("failure_timeout"),
         "must be longer than heartbeat (a node would be down between two heartbeats)");
}

draft read_root(const toml::table& root, const std::string& file, const std::string& self) {
  table_reader r{root, "", {"cluster", "node"}};
  table_reader c{
    *r.get_table("cluster", true),
    "cluster",
    {"name", "pipeline", "secret_file", "secret_env", "heartbeat", "failure_timeout", "tls"}};
  draft out;
  auto& x = out.config;
  cluster_defaults d;
  d.dir = std::filesystem::path{file}.parent_path().string();
  d.self = self;
  x.file = file;
  x.name = c.req_string("name");
  check_name(c, x.name);
  auto pipeline = c.req_string("pipeline");
  if (pipeline.empty() || pipeline == "-")
    fail(*c.get("pipeline"), c.key("pipeline"), "must name the pipeline config file");
  x.pipeline_file = resolve(d.dir, pipeline);
  out.pipeline_line = line_of(*c.get("pipeline"));
  read_durations(c, x);
  x.secret = read_secret(c, d.dir);
  read_tls(c, d);
  x.insecure = d.insecure;
  read_nodes(r, x, d);
  return out;
}

/// A cluster moves partitions between nodes, so every node must agree on their number: 0 (the
/// number of cores) would differ from machine to machine.
caf::error check_pipeline(const cluster_config& c, uint32_t line) {
  for (size_t i = 0; i < c.pipeline.pipelines.size(); ++i) {
    const auto& p = c.pipeline.pipelines[i];
    if (p.partitions == 0)
      return check_error(
        {line, "cluster.pipeline",
         c.pipeline_file + ": pipeline[" + std::to_string(i) + "] (" + in_quotes(p.name) +
           ") sets no partitions; a cluster needs a fixed count, the same on every node "
           "(partitions = N)"},
        c.file);
  }
  return {};
}

} // namespace

caf::expected<cluster_config> parse_cluster_config(std::string_view text, const std::string& path,
                                                   const std::string& self) {
  auto d = parse_checked<draft>(
    text, path, [&](const toml::table& root) { return read_root(root, path, self); });
  if (!d)
    return std::move(d.error());
  auto& c = d->config;
  if (!self.empty()) {
    c.self = c.find(self);
    if (!c.self) {
      std::string names;
      for (const auto& n : c.nodes)
        names += (names.empty() ? "" : ", ") + n.name;
      return make_error(errc::bad_config,
                        path + ": no node named " + in_quotes(self) + "; the nodes are " + names);
    }
  }
  auto pipeline = load_config(c.pipeline_file);
  if (!pipeline)
    return std::move(pipeline.error());
  c.pipeline = std::move(*pipeline);
  if (auto err = check_pipeline(c, d->pipeline_line))
    return err;
  return std::move(c);
}

caf::expected<cluster_config> load_cluster_config(const std::string& path,
                                                  const std::string& self) {
  auto text = read_config_file(path);
  if (!text)
    return std::move(text.error());
  return parse_cluster_config(*text, path, self);
}

} // namespace weir::cluster
