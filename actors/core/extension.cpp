#include "actors/core/extension.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>

#include "actors/core/error.hpp"
#include "actors/core/timeparse.hpp"

namespace weir {

// -- options ---------------------------------------------------------------------------------

const std::string* extension_options::find(std::string_view key) const {
  for (const auto& [k, v] : values_)
    if (k == key)
      return &v;
  return nullptr;
}

std::string extension_options::text(std::string_view key, std::string fallback) const {
  auto v = find(key);
  return v ? *v : std::move(fallback);
}

double extension_options::number(std::string_view key, double fallback) const {
  auto v = find(key);
  if (v == nullptr)
    return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || end != v->c_str() + v->size() || errno == ERANGE || x != x)
    throw extension_error("options." + std::string{key} + ": expected a number, got \"" + *v +
                          "\"");
  return x;
}

int64_t extension_options::duration(std::string_view key, int64_t fallback) const {
  auto v = find(key);
  if (v == nullptr)
    return fallback;
  int64_t us = 0;
  bool digits = !v->empty() && std::all_of(v->begin(), v->end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (digits && v->size() < 12)
    return std::stoll(*v) * us_per_ms;
  if (!parse_duration(*v, us))
    throw extension_error("options." + std::string{key} +
                          ": expected a duration such as \"250ms\", \"5s\", \"2m\", \"1h\", got \"" +
                          *v + "\"");
  return us;
}

bool extension_options::flag(std::string_view key, bool fallback) const {
  auto v = find(key);
  if (v == nullptr)
    return fallback;
  if (*v == "true")
    return true;
  if (*v == "false")
    return false;
  throw extension_error("options." + std::string{key} + ": expected true or false, got \"" + *v +
                        "\"");
}

void extension_options::allow_only(std::initializer_list<const char*> allowed) const {
  for (const auto& [k, v] : values_) {
    bool ok = false;
    for (const char* a : allowed)
      ok = ok || k == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed)
        list += (list.empty() ? "" : ", ") + std::string{a};
      throw extension_error("options." + k + ": unknown option" +
                            (list.empty() ? std::string{" (it takes none)"}
                                          : " (allowed: " + list + ")"));
    }
  }
}

std::string extension_options::canonical() const {
  auto sorted = values_;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const auto& [k, v] : sorted) {
    out += k;
    out += '=';
    out += std::to_string(v.size());
    out += ':';
    out += v;
    out += ';';
  }
  return out;
}

// -- registry --------------------------------------------------------------------------------

namespace {

bool valid_extension_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
  });
}

class registry_impl final : public extension_registry {
public:
  void add_aggregate(const std::string& name, aggregate_factory f) override {
    static const std::set<std::string> builtin{"count", "sum",      "avg",     "min",
                                               "max",   "distinct", "quantile"};
    if (builtin.count(name) != 0)
      throw std::invalid_argument("aggregate \"" + name + "\" is built in");
    add(aggregates_, "aggregate", name, std::move(f));
  }
  void add_stage(const std::string& name, stage_factory f) override {
    add(stages_, "stage", name, std::move(f));
  }
  void add_sink(const std::string& name, sink_factory f) override {
    add(sinks_, "sink", name, std::move(f));
  }
  const aggregate_factory* aggregate(std::string_view name) const override {
    return find(aggregates_, name);
  }
  const stage_factory* stage_kind(std::string_view name) const override {
    return find(stages_, name);
  }
  const sink_factory* sink_kind(std::string_view name) const override {
    return find(sinks_, name);
  }
  std::vector<std::string> names(std::string_view what) const override {
    std::lock_guard<std::mutex> lock{mu_};
    std::vector<std::string> out;
    auto keys = [&out](const auto& m) {
      for (const auto& kv : m)
        out.push_back(kv.first);
    };
    if (what == "aggregate")
      keys(aggregates_);
    else if (what == "stage")
      keys(stages_);
    else if (what == "sink")
      keys(sinks_);
    return out;
  }

private:
  template <class F>
  using table = std::map<std::string, std::shared_ptr<F>, std::less<>>;

  template <class F>
  void add(table<F>& m, const char* what, const std::string& name, F f) {
    if (!valid_extension_name(name))
      throw std::invalid_argument(std::string{what} + " name \"" + name +
                                  "\" must match [A-Za-z0-9_.-]+");
    if (!f)
      throw std::invalid_argument(std::string{what} + " \"" + name + "\" has no factory");
    std::lock_guard<std::mutex> lock{mu_};
    // Factories are handed out by pointer: a replaced one stays alive until the process ends.
    auto& slot = m[name];
    if (slot)
      retired_.push_back(std::move(slot));
    slot = std::make_shared<F>(std::move(f));
  }
  template <class F>
  const F* find(const table<F>& m, std::string_view name) const {
    std::lock_guard<std::mutex> lock{mu_};
    auto i = m.find(name);
    return i == m.end() ? nullptr : i->second.get();
  }

  mutable std::mutex mu_;
  table<aggregate_factory> aggregates_;
  table<stage_factory> stages_;
  table<sink_factory> sinks_;
  std::vector<std::shared_ptr<void>> retired_;
};

} // namespace

extension_registry& extension_registry::global() {
  static registry_impl r;
  return r;
}

// -- plugins ---------------------------------------------------------------------------------

caf::error load_plugin(const std::string& path) {
  static std::mutex mu;
  static std::set<std::string> loaded;
  std::lock_guard<std::mutex> lock{mu};
  if (loaded.count(path) != 0)
    return caf::none;
  // RTLD_NODELETE: the code of registered factories stays mapped for the life of the process.
  void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (h == nullptr) {
    const char* why = ::dlerror();
    return make_error(errc::bad_input,
                      "cannot load plugin " + path + ": " + (why ? why : "unknown error"));
  }
  using abi_fn = uint32_t (*)();
  using register_fn = void (*)(extension_registry&);
  auto abi = reinterpret_cast<abi_fn>(::dlsym(h, "weir_plugin_abi"));
  auto reg = reinterpret_cast<register_fn>(::dlsym(h, "weir_plugin_register"));
  if (abi == nullptr || reg == nullptr)
    return make_error(errc::bad_input, "plugin " + path +
                                         " defines no WEIR_PLUGIN (weir_plugin_register)");
  if (abi() != extension_abi)
    return make_error(errc::bad_input, "plugin " + path + " was built for extension interface " +
                                         std::to_string(abi()) + ", this weir has " +
                                         std::to_string(extension_abi) + ": rebuild it");
  try {
    reg(extension_registry::global());
  } catch (const std::exception& e) {
    return make_error(errc::bad_input, "plugin " + path + ": " + e.what());
  }
  loaded.insert(path);
  return caf::none;
}

} // namespace weir
