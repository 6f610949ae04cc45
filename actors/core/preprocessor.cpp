#include "actors/core/preprocessor.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include <fast_float/fast_float.h>
#include <simdjson.h>
#include <xxhash.h>

#include "actors/core/codec.hpp"
#include "actors/core/error.hpp"
#include "actors/core/expr.hpp"
#include "actors/core/fault.hpp"
#include "actors/core/stage_runner.hpp"
#include "actors/core/timeparse.hpp"

namespace weir {

namespace {

constexpr size_t max_long_line_raw = 1024;       ///< raw text kept of a too long line
constexpr size_t max_value_in_reason = 256;      ///< value text quoted in a reason

/// The dead-letter reason of a line of `length` bytes over max_line_bytes `limit`.
std::string long_line_reason(uint64_t length, size_t limit) {
  return "line too long (" + std::to_string(length) + " bytes, max_line_bytes " +
         std::to_string(limit) + ")";
}
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

/// Classes of rejection, counted in preprocess_counters::rejected under these names.
enum class reject : uint8_t {
  line_too_long,
  bad_utf8,
  bad_quoting,
  column_count,
  bad_json,
  unusable,
  no_header,
  unknown_source,
  missing_field,
  bad_number,
  bad_integer,
  bad_time,
  derive,
  poison,
  count_
};

constexpr const char* reject_names[] = {
  "line too long",  "invalid utf-8", "bad quoting", "wrong column count", "bad json",
  "unusable value", "no header",     "unknown source", "missing field",   "bad number",
  "bad integer",    "bad time",      "derive",          "poison"};
static_assert(sizeof(reject_names) / sizeof(reject_names[0])
              == static_cast<size_t>(reject::count_));

bool parse_double(std::string_view s, double& out) {
  if (s.empty())
    return false;
  auto r = fast_float::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size() && std::isfinite(out);
}

bool parse_int(std::string_view s, int64_t& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    --q;
  return q;
}

int64_t sat_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    return b > 0 ? max_timestamp : min_timestamp;
  return r;
}

int64_t sat_sub(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r))
    return b > 0 ? min_timestamp : max_timestamp;
  return r;
}

std::string show(std::string_view v) {
  if (v.size() <= max_value_in_reason)
    return "'" + std::string{v} + "'";
  return "'" + std::string{v.substr(0, max_value_in_reason)} + "...'";
}

/// Remembered event ids: open addressing with linear probing. Key 0 marks an empty slot
/// (id_hash never returns 0). Grows by doubling; sweeps rebuild in place through a spare
/// vector so that steady-state inserts never allocate.
class id_table {
public:
  struct entry {
    uint64_t id;
    int64_t time;
  };

  id_table() { slots_.resize(1024); }

  const entry* find(uint64_t id) const {
    size_t mask = slots_.size() - 1;
    for (size_t i = id & mask;; i = (i + 1) & mask) {
      if (slots_[i].id == id)
        return &slots_[i];
      if (slots_[i].id == 0)
        return nullptr;
    }
  }

  /// Inserts or overwrites. Returns false when the table needs to grow first.
  bool put(uint64_t id, int64_t time) {
    size_t mask = slots_.size() - 1;
    for (size_t i = id & mask;; i = (i + 1) & mask) {
      if (slots_[i].id == id) {
        slots_[i].time = time;
        return true;
      }
      if (slots_[i].id == 0) {
        if ((count_ + 1) * 2 > slots_.size())
          return false;
        slots_[i] = {id, time};
        ++count_;
        return true;
      }
    }
  }

  size_t size() const { return count_; }
  size_t capacity() const { return slots_.size(); }

  /// Removes every id with time < threshold, appending them to `removed`.
  void sweep(int64_t threshold, std::vector<uint64_t>& removed) {
    spare_.clear();
    for (const auto& e : slots_) {
      if (e.id == 0)
        continue;
      if (e.time < threshold)
        removed.push_back(e.id);
      else
        spare_.push_back(e);
    }
    rebuild(slots_.size());
  }

  void grow() {
    spare_.clear();
    for (const auto& e : slots_)
      if (e.id != 0)
        spare_.push_back(e);
    rebuild(slots_.size() * 2);
  }

  void clear() {
    std::fill(slots_.begin(), slots_.end(), entry{0, 0});
    count_ = 0;
  }

private:
  void rebuild(size_t cap) {
    slots_.assign(cap, entry{0, 0});
    count_ = 0;
    for (const auto& e : spare_) {
      size_t mask = cap - 1;
      size_t i = e.id & mask;
      while (slots_[i].id != 0)
        i = (i + 1) & mask;
      slots_[i] = e;
      ++count_;
    }
  }

  std::vector<entry> slots_;
  std::vector<entry> spare_;
  size_t count_ = 0;
};

/// A field a setting reads: an input slot, a derived value, or nothing (a name no input has).
struct field_ref {
  enum kind_t : uint8_t { none, slot, derived } kind = none;
  int index = -1;
};

} // namespace

struct preprocessor::impl {
  struct source_state {
    uint32_t id = 0;
    int cfg_index = -1;          ///< into cfg.sources; -1: unbound
    bool header_known = false;
    std::vector<int> col_slot;   ///< csv column -> slot (-1: unused)
  };

  struct derive_step {
    std::string name;
    bool ok = false;
    std::string error;           ///< why the expression did not compile
    expr_program prog;
    std::vector<field_ref> inputs;
  };

  struct filter_step {
    field_ref f;
    const filter_config* c;
  };

  struct agg_input {
    field_ref f;
    bool presence;               ///< count of a field: 1 when present
    bool distinct;
    bool staged = false; ///< filled after the stages (stage_runner::aggregate_fill)
  };

  pipeline_config cfg;
  size_t nparts;
  aggregate_layout layout;

  // Fields: every input field a setting names gets a slot.
  std::vector<std::string> slot_names;   ///< names after rename
  std::vector<std::string> slot_inputs;  ///< names in the input (before rename)
  std::vector<uint8_t> slot_is_measure;
  int time_slot = -1;
  int id_slot = -1;
  std::vector<int> key_slots;
  std::vector<int> measure_slots;
  std::vector<int> required_slots;
  std::vector<std::pair<int, value_type>> type_slots;
  std::vector<derive_step> derives;
  std::vector<filter_step> filters;
  std::vector<agg_input> agg_inputs;     ///< one per aggregate with a value or hash column
  /// The stages and the numeric fields they see, by where each comes from (none: an output);
  /// null without stages.
  std::unique_ptr<stage_runner> stages;
  std::vector<field_ref> stage_src;
  std::vector<size_t> staged; ///< per partition: records already through the stages

  // Per-record scratch, reused.
  std::vector<std::string_view> val;
  std::vector<double> num;
  std::vector<uint8_t> seen;
  std::vector<std::array<char, 64>> num_text;
  std::vector<double> dval;
  std::vector<double> dinputs;
  std::string unquoted;                  ///< csv fields with doubled quotes, unescaped
  std::string key_buf;                   ///< a multi-field key, joined
  std::array<char, 64> dtext;

  std::vector<source_state> sources;
  size_t last_source = 0;
  simdjson::dom::parser json;

  std::vector<event_columns> parts;
  dead_letter_pack dead;
  preprocess_counters counters;
  std::array<int, static_cast<size_t>(reject::count_)> reject_pos;

  /// The watermark of one configured source (a glob's files are one stream, read in order).
  struct wm_source {
    timestamp max_time = min_timestamp; ///< largest accepted event time; min: none yet
    int64_t idle_timeout = 0;           ///< 0: never idle
    int64_t last_active = 0;            ///< clock of the last tick() that saw it move
    bool moved = false;                 ///< lines since the last tick()
    bool idle = false;                  ///< not holding the watermark back
  };

  /// The pipeline's watermark: max over time of (min over the sources that count of their
  /// max_time) - out_of_orderness. It never goes down.
  timestamp wm = min_timestamp;
  std::vector<wm_source> wm_sources; ///< one per configured source
  int current_cfg = -1;              ///< configured source of the lines being processed
  bool clock_started = false;
  id_table ids;
  std::vector<std::pair<uint64_t, int64_t>> added;
  std::vector<uint64_t> expired;

  impl(const pipeline_config& c, size_t partitions)
    : cfg(c), nparts(partitions == 0 ? 1 : partitions), layout(make_layout(c.aggregates)) {
    reject_pos.fill(-1);
    parts.resize(nparts);
    wm_sources.resize(std::max<size_t>(1, cfg.sources.size()));
    for (size_t i = 0; i < cfg.sources.size(); ++i)
      wm_sources[i].idle_timeout = cfg.sources[i].idle_timeout;
    const auto& f = cfg.fields;
    time_slot = add_slot(f.time);
    if (!f.event_id.empty())
      id_slot = add_slot(f.event_id);
    for (const auto& k : f.key)
      key_slots.push_back(add_slot(k));
    for (const auto& m : f.measures) {
      int s = add_slot(m);
      if (!slot_is_measure[s]) {
        slot_is_measure[s] = 1;
        measure_slots.push_back(s);
      }
    }
    for (const auto& a : f.attributes)
      add_slot(a);
    const auto& pp = cfg.preprocess;
    for (const auto& d : pp.derive) {
      derive_step step;
      step.name = d.name;
      auto prog = expr_program::compile(d.expr);
      if (prog) {
        step.ok = true;
        step.prog = std::move(*prog);
        for (const auto& in : step.prog.inputs())
          step.inputs.push_back(resolve(in));
      } else {
        step.error = render(prog.error());
      }
      derives.push_back(std::move(step));
    }
    for (const auto& r : pp.required) {
      auto ref = resolve(r);
      if (ref.kind == field_ref::slot)
        required_slots.push_back(ref.index);
    }
    for (const auto& [name, type] : pp.types) {
      auto ref = resolve(name);
      if (ref.kind == field_ref::slot)
        type_slots.emplace_back(ref.index, type);
    }
    const auto numeric_fields = stage_fields(cfg);
    for (const auto& flt : pp.filters) {
      auto ref = resolve(flt.field);
      bool output =
        ref.kind == field_ref::none &&
        std::find(numeric_fields.begin(), numeric_fields.end(), flt.field) != numeric_fields.end();
      if (!output)
        filters.push_back({ref, &flt});
    }
    auto fills = read_aggregate_inputs();
    if (!cfg.stages.empty()) {
      for (const auto& name : stage_fields(cfg))
        stage_src.push_back(resolve(name));
      size_t vw = 0;
      for (const auto& a : agg_inputs)
        vw += a.distinct ? 0 : 1;
      stages =
        std::make_unique<stage_runner>(cfg, nparts, std::move(fills), vw, agg_inputs.size() - vw);
      staged.assign(nparts, 0);
      add_output_filters();
    }
    size_t n = slot_names.size();
    val.resize(n);
    num.assign(n, nan);
    seen.assign(n, 0);
    num_text.resize(n);
    dval.assign(derives.size(), nan);
    size_t max_inputs = 0;
    for (const auto& d : derives)
      max_inputs = std::max(max_inputs, d.inputs.size());
    dinputs.resize(max_inputs);
  }

  /// Filters on stages' outputs go to the stages, which apply them after they ran.
  void add_output_filters() {
    const auto names = stage_fields(cfg);
    for (const auto& flt : cfg.preprocess.filters) {
      if (resolve(flt.field).kind != field_ref::none)
        continue;
      stage_runner::output_filter f;
      for (size_t i = 0; i < names.size(); ++i)
        if (names[i] == flt.field)
          f.field = static_cast<int>(i);
      if (f.field < 0)
        continue;
      f.min = flt.min.value_or(f.min);
      f.max = flt.max.value_or(f.max);
      stages->add_filter(f);
    }
  }

  /// agg_inputs, and with stages where the aggregates over a numeric field take it after them.
  std::vector<stage_runner::aggregate_fill> read_aggregate_inputs() {
    std::vector<stage_runner::aggregate_fill> fills;
    const auto fields = stage_fields(cfg);
    size_t vcol = 0;
    size_t hcol = 0;
    for (const auto& a : cfg.aggregates) {
      if (a.fn == agg_fn::count && a.field.empty())
        continue;
      agg_input in{resolve(a.field), a.fn == agg_fn::count, a.fn == agg_fn::distinct};
      auto col = std::find(fields.begin(), fields.end(), a.field);
      if (!cfg.stages.empty() && col != fields.end()) {
        in.staged = true;
        fills.push_back({static_cast<int>(col - fields.begin()), in.distinct, in.presence,
                         in.distinct ? hcol : vcol});
      }
      ++(in.distinct ? hcol : vcol);
      agg_inputs.push_back(in);
    }
    return fills;
  }

  int add_slot(const std::string& name) {
    auto i = std::find(slot_names.begin(), slot_names.end(), name);
    if (i != slot_names.end())
      return static_cast<int>(i - slot_names.begin());
    std::string input = name;
    for (const auto& [from, to] : cfg.preprocess.rename)
      if (to == name)
        input = from;
    slot_names.push_back(name);
    slot_inputs.push_back(input);
    slot_is_measure.push_back(0);
    return static_cast<int>(slot_names.size() - 1);
  }

  field_ref resolve(const std::string& name) const {
    for (size_t i = 0; i < derives.size(); ++i)
      if (derives[i].name == name)
        return {field_ref::derived, static_cast<int>(i)};
    for (size_t i = 0; i < slot_names.size(); ++i)
      if (slot_names[i] == name)
        return {field_ref::slot, static_cast<int>(i)};
    return {};
  }

  int slot_of_input(std::string_view input) const {
    for (size_t i = 0; i < slot_inputs.size(); ++i)
      if (slot_inputs[i] == input)
        return static_cast<int>(i);
    return -1;
  }

  // -- sources ------------------------------------------------------------------------------

  source_state& source(uint32_t id) {
    if (last_source < sources.size() && sources[last_source].id == id)
      return sources[last_source];
    for (size_t i = 0; i < sources.size(); ++i)
      if (sources[i].id == id) {
        last_source = i;
        return sources[i];
      }
    source_state s;
    s.id = id;
    if (cfg.sources.size() == 1)
      bind(s, 0);
    sources.push_back(std::move(s));
    last_source = sources.size() - 1;
    return sources.back();
  }

  void bind(source_state& s, size_t index) {
    s.cfg_index = static_cast<int>(index);
    s.header_known = false;
    s.col_slot.clear();
    const auto& sc = cfg.sources[index];
    if (sc.format == source_format::csv && !sc.header) {
      for (const auto& c : sc.columns)
        map_column(s, c);
      s.header_known = true;
    }
  }

  void map_column(source_state& s, std::string_view name) {
    int slot = slot_of_input(name);
    // The first column of a name wins, as with duplicate keys of an NDJSON object.
    if (slot >= 0 && std::find(s.col_slot.begin(), s.col_slot.end(), slot) != s.col_slot.end())
      slot = -1;
    s.col_slot.push_back(slot);
  }

  // -- csv ----------------------------------------------------------------------------------

  /// Splits one csv line, calling `on_field(column, text)`. Returns nullptr or why it failed.
  template <class F>
  const char* split_csv(std::string_view line, char delim, char quote, F&& on_field) {
    const char* p = line.data();
    const char* end = p + line.size();
    unquoted.clear();
    if (unquoted.capacity() < line.size())
      unquoted.reserve(line.size()); // views into it must stay valid for the whole line
    size_t col = 0;
    for (;;) {
      std::string_view field;
      if (p != end && *p == quote) {
        const char* start = ++p;
        bool escaped = false;
        const char* q = nullptr;
        for (;;) {
          q = static_cast<const char*>(std::memchr(p, quote, static_cast<size_t>(end - p)));
          if (q == nullptr)
            return "unterminated quoted field";
          if (q + 1 != end && q[1] == quote) {
            escaped = true;
            p = q + 2;
            continue;
          }
          break;
        }
        p = q + 1;
        if (!escaped) {
          field = {start, static_cast<size_t>(q - start)};
        } else {
          size_t b = unquoted.size();
          for (const char* c = start; c < q; ++c) {
            unquoted.push_back(*c);
            if (*c == quote)
              ++c; // the second of a doubled quote
          }
          field = std::string_view{unquoted}.substr(b);
        }
        if (p != end && *p != delim)
          return "text after a closing quote";
      } else {
        auto q = static_cast<const char*>(std::memchr(p, delim, static_cast<size_t>(end - p)));
        if (q == nullptr)
          q = end;
        field = {p, static_cast<size_t>(q - p)};
        p = q;
      }
      on_field(col++, field);
      if (p == end)
        return nullptr;
      ++p;
    }
  }

  void parse_header(source_state& s, uint64_t off, std::string_view line) {
    const auto& sc = cfg.sources[static_cast<size_t>(s.cfg_index)];
    if (line.substr(0, 3) == "\xEF\xBB\xBF")
      line.remove_prefix(3);
    s.col_slot.clear();
    s.header_known = false;
    auto err = split_csv(line, sc.delimiter, sc.quote,
                         [&](size_t, std::string_view name) { map_column(s, name); });
    if (err != nullptr) {
      ++counters.read;
      reject_line(reject::no_header, off, line, std::string{"bad header: "} + err);
      s.col_slot.clear();
      return;
    }
    s.header_known = true;
  }

  // -- dead letters ---------------------------------------------------------------------------

  /// Raw text longer than dead_letter_pack::max_raw is cut there, with a marker; `cut` keeps
  /// less (the head of a long line).
  void dead_letter_raw(uint64_t off, std::string_view line, std::string_view reason,
                       size_t cut = std::string_view::npos) {
    dead.add(current_source, off, reason, line.substr(0, cut));
  }

  void reject_line(reject r, uint64_t off, std::string_view line, std::string_view reason,
                   size_t cut = std::string_view::npos) {
    auto i = static_cast<size_t>(r);
    if (reject_pos[i] < 0) {
      reject_pos[i] = static_cast<int>(counters.rejected.size());
      counters.rejected.emplace_back(reject_names[i], 0);
    }
    ++counters.rejected[static_cast<size_t>(reject_pos[i])].second;
    dead_letter_raw(off, line, reason, cut);
  }

  /// Why a record is late, built in a reused buffer: a run where most records are late makes
  /// millions of these. The watermark's text is kept while the watermark stays.
  std::string_view late_reason(timestamp start, timestamp end, timestamp w) {
    const auto& wc = cfg.window;
    if (w != reason_wm || reason_wm_text.empty()) {
      reason_wm = w;
      reason_wm_text.clear();
      append_time(reason_wm_text, w);
    }
    reason_buf.clear();
    const bool too_late = wc.late == late_policy::update && wc.kind != window_kind::session;
    reason_buf += too_late ? "too late: window [" : "late: window [";
    append_time(reason_buf, start);
    reason_buf += ", ";
    append_time(reason_buf, end);
    reason_buf += ") closed at watermark ";
    reason_buf += reason_wm_text;
    if (too_late)
      reason_buf += ", past the update horizon";
    return reason_buf;
  }

  std::string reason_buf;
  timestamp reason_wm = min_timestamp;
  std::string reason_wm_text;
  uint32_t current_source = 0;

  // -- per line -------------------------------------------------------------------------------

  void process(uint32_t id, uint64_t offset, std::string_view chunk) {
    current_source = id;
    counters.bytes += chunk.size();
    auto& s = source(id);
    current_cfg = s.cfg_index;
    if (current_cfg >= 0) {
      auto& ws = wm_sources[static_cast<size_t>(current_cfg)];
      ws.moved = true;
      ws.idle = false; // it moved: it counts again (the watermark does not go down)
    }
    const bool chunk_utf8 = simdjson::validate_utf8(chunk.data(), chunk.size());
    size_t pos = 0;
    while (pos < chunk.size()) {
      auto nl = static_cast<const char*>(std::memchr(chunk.data() + pos, '\n', chunk.size() - pos));
      size_t end = nl == nullptr ? chunk.size() : static_cast<size_t>(nl - chunk.data());
      std::string_view line = chunk.substr(pos, end - pos);
      uint64_t off = offset + pos;
      pos = end + 1;
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      handle_line(s, off, line, chunk_utf8);
    }
    if (stages)
      run_stages();
  }

  /// The stages over each partition's records since the last run; a record a stage drops
  /// counts as filtered instead of accepted.
  void run_stages() {
    for (size_t p = 0; p < nparts; ++p) {
      auto& cols = parts[p];
      if (cols.size() == staged[p])
        continue;
      stages->run(p, cols, staged[p], [this](timestamp t, timestamp w) {
        --counters.accepted;
        ++counters.filtered;
        if (w != min_timestamp && w >= window_closes(t))
          --counters.late_updates;
      });
      staged[p] = cols.size();
    }
  }

  /// When the window of a record at `t` closes (its end + allowed_lateness), with its start and
  /// end (the last window of a sliding one; a session's from `t` alone).
  timestamp window_closes(timestamp t, timestamp* start_out = nullptr,
                          timestamp* end_out = nullptr) const {
    const auto& wc = cfg.window;
    timestamp start = t;
    timestamp end = sat_add(t, wc.gap);
    if (wc.kind != window_kind::session) {
      int64_t slide = wc.kind == window_kind::tumbling || wc.slide <= 0 ? wc.size : wc.slide;
      if (slide > 0) {
        start = wc.offset + floor_div(t - wc.offset, slide) * slide;
        end = start + wc.size;
      }
    }
    if (start_out != nullptr) {
      *start_out = start;
      *end_out = end;
    }
    return sat_add(end, wc.allowed_lateness);
  }

  void handle_line(source_state& s, uint64_t off, std::string_view line, bool utf8_ok) {
    if (s.cfg_index < 0) {
      if (line.empty())
        return;
      ++counters.read;
      reject_line(reject::unknown_source, off, line,
                  "source " + std::to_string(s.id) + " is not bound to a configured source");
      return;
    }
    const auto& sc = cfg.sources[static_cast<size_t>(s.cfg_index)];
    const bool csv = sc.format == source_format::csv;
    if (csv && sc.header && off == 0) {
      parse_header(s, off, line);
      return;
    }
    if (line.empty())
      return;
    if (fault::hit("preprocess.record", line)) // fault injection: a record whose processing fails
      throw fault::injected_failure("preprocess.record");
    ++counters.read;
    if (line.size() > sc.max_line_bytes) {
      reject_line(reject::line_too_long, off, line,
                  long_line_reason(line.size(), sc.max_line_bytes), max_long_line_raw);
      return;
    }
    if (!utf8_ok && !simdjson::validate_utf8(line.data(), line.size())) {
      reject_line(reject::bad_utf8, off, line, "invalid UTF-8");
      return;
    }
    std::fill(val.begin(), val.end(), std::string_view{});
    if (csv) {
      if (!s.header_known) {
        reject_line(reject::no_header, off, line,
                    "no csv header known for source " + std::to_string(s.id));
        return;
      }
      size_t ncols = 0;
      const auto& map = s.col_slot;
      auto err = split_csv(line, sc.delimiter, sc.quote, [&](size_t col, std::string_view f) {
        if (col < map.size() && map[col] >= 0)
          val[static_cast<size_t>(map[col])] = f;
        ncols = col + 1;
      });
      if (err != nullptr) {
        reject_line(reject::bad_quoting, off, line, std::string{"bad csv quoting: "} + err);
        return;
      }
      if (ncols != map.size()) {
        reject_line(reject::column_count, off, line,
                    "wrong column count: " + std::to_string(ncols) + " fields, header has "
                      + std::to_string(map.size()));
        return;
      }
    } else if (!decode_json(off, line)) {
      return;
    }
    process_record(off, line);
  }

  bool decode_json(uint64_t off, std::string_view line) {
    simdjson::dom::element doc;
    auto err = json.parse(line.data(), line.size()).get(doc);
    if (err) {
      reject_line(reject::bad_json, off, line,
                  std::string{"bad json: "} + simdjson::error_message(err));
      return false;
    }
    simdjson::dom::object obj;
    if (doc.get(obj)) {
      reject_line(reject::bad_json, off, line, "bad json: not an object");
      return false;
    }
    std::fill(seen.begin(), seen.end(), 0);
    for (auto kv : obj) {
      int s = slot_of_input(kv.key);
      if (s < 0 || seen[static_cast<size_t>(s)])
        continue;
      auto i = static_cast<size_t>(s);
      seen[i] = 1;
      auto& buf = num_text[i];
      switch (kv.value.type()) {
        case simdjson::dom::element_type::STRING:
          val[i] = kv.value.get_string().value_unsafe();
          break;
        case simdjson::dom::element_type::INT64: {
          auto r = std::to_chars(buf.data(), buf.data() + buf.size(),
                                 kv.value.get_int64().value_unsafe());
          val[i] = {buf.data(), static_cast<size_t>(r.ptr - buf.data())};
          break;
        }
        case simdjson::dom::element_type::UINT64: {
          auto r = std::to_chars(buf.data(), buf.data() + buf.size(),
                                 kv.value.get_uint64().value_unsafe());
          val[i] = {buf.data(), static_cast<size_t>(r.ptr - buf.data())};
          break;
        }
        case simdjson::dom::element_type::DOUBLE:
          val[i] = double_text(kv.value.get_double().value_unsafe(), buf);
          break;
        case simdjson::dom::element_type::BOOL:
          val[i] = kv.value.get_bool().value_unsafe() ? "true" : "false";
          break;
        case simdjson::dom::element_type::NULL_VALUE:
          break;
        case simdjson::dom::element_type::ARRAY:
        case simdjson::dom::element_type::OBJECT:
          reject_line(reject::unusable, off, line,
                      "field " + slot_names[i] + " is an "
                        + (kv.value.is_array() ? "array" : "object") + ", not a usable value");
          return false;
      }
    }
    return true;
  }

  /// The shortest text that reads back as `v`, in fixed notation where it fits.
  static std::string_view double_text(double v, std::array<char, 64>& buf) {
    auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::fixed);
    if (r.ec != std::errc{})
      r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    return {buf.data(), static_cast<size_t>(r.ptr - buf.data())};
  }

  /// The numeric value of a field for derive, filters and aggregates. Returns false (with the
  /// value text in `bad`) when present but not a number; NaN when absent.
  bool numeric(const field_ref& f, double& out, std::string_view& bad) {
    if (f.kind == field_ref::derived) {
      out = dval[static_cast<size_t>(f.index)];
      return true;
    }
    if (f.kind == field_ref::none) {
      out = nan;
      return true;
    }
    auto i = static_cast<size_t>(f.index);
    if (slot_is_measure[i]) {
      out = num[i];
      return true;
    }
    if (val[i].empty()) {
      out = nan;
      return true;
    }
    if (!parse_double(val[i], out)) {
      bad = val[i];
      return false;
    }
    return true;
  }

  const std::string& name_of(const field_ref& f) const {
    return f.kind == field_ref::derived ? derives[static_cast<size_t>(f.index)].name
                                        : slot_names[static_cast<size_t>(f.index)];
  }

  bool has_text(const field_ref& f) const {
    return f.kind == field_ref::slot && !val[static_cast<size_t>(f.index)].empty();
  }

  void process_record(uint64_t off, std::string_view line) {
    for (int s : required_slots)
      if (val[static_cast<size_t>(s)].empty())
        return reject_line(reject::missing_field, off, line,
                           "missing field " + slot_names[static_cast<size_t>(s)]);
    for (const auto& [s, type] : type_slots) {
      auto v = val[static_cast<size_t>(s)];
      if (v.empty())
        continue;
      const auto& name = slot_names[static_cast<size_t>(s)];
      switch (type) {
        case value_type::string: break;
        case value_type::int64: {
          int64_t x = 0;
          if (!parse_int(v, x))
            return reject_line(reject::bad_integer, off, line,
                               "bad integer in field " + name + ": " + show(v));
          break;
        }
        case value_type::float64: {
          double x = 0;
          if (!parse_double(v, x))
            return reject_line(reject::bad_number, off, line,
                               "bad number in field " + name + ": " + show(v));
          break;
        }
        case value_type::time: {
          timestamp x = 0;
          const char* why = nullptr;
          if (!parse_time(v, cfg.fields.time_fmt, x, why))
            return reject_line(reject::bad_time, off, line,
                               "bad time in field " + name + ": " + show(v) + " (" + why + ")");
          break;
        }
      }
    }
    auto tv = val[static_cast<size_t>(time_slot)];
    if (tv.empty())
      return reject_line(reject::missing_field, off, line, "missing field " + cfg.fields.time);
    timestamp t = 0;
    const char* why = nullptr;
    if (!parse_time(tv, cfg.fields.time_fmt, t, why))
      return reject_line(reject::bad_time, off, line,
                         "bad time in field " + cfg.fields.time + ": " + show(tv) + " (" + why
                           + ")");
    for (int s : key_slots)
      if (val[static_cast<size_t>(s)].empty())
        return reject_line(reject::missing_field, off, line,
                           "missing field " + slot_names[static_cast<size_t>(s)]);
    const bool dedupe = cfg.preprocess.dedupe && id_slot >= 0;
    if (dedupe && val[static_cast<size_t>(id_slot)].empty())
      return reject_line(reject::missing_field, off, line,
                         "missing field " + cfg.fields.event_id);
    for (int s : measure_slots) {
      auto i = static_cast<size_t>(s);
      if (val[i].empty()) {
        num[i] = nan;
      } else if (!parse_double(val[i], num[i])) {
        return reject_line(reject::bad_number, off, line,
                           "bad number in field " + slot_names[i] + ": " + show(val[i]));
      }
    }
    for (size_t d = 0; d < derives.size(); ++d) {
      auto& step = derives[d];
      if (!step.ok)
        return reject_line(reject::derive, off, line, "derive " + step.name + ": " + step.error);
      for (size_t k = 0; k < step.inputs.size(); ++k) {
        const auto& in = step.inputs[k];
        std::string_view bad;
        if (!numeric(in, dinputs[k], bad))
          return reject_line(reject::derive, off, line,
                             "derive " + step.name + ": bad number in field " + name_of(in)
                               + ": " + show(bad));
        if (std::isnan(dinputs[k]))
          return reject_line(reject::derive, off, line,
                             "derive " + step.name + ": missing field "
                               + step.prog.inputs()[k]);
      }
      bool div0 = false;
      dval[d] = step.prog.eval(dinputs.data(), div0);
      if (div0)
        return reject_line(reject::derive, off, line, "derive " + step.name + ": division by zero");
    }
    for (const auto& fs : filters) {
      const auto& c = *fs.c;
      if (c.min || c.max) {
        double x = 0;
        std::string_view bad;
        if (!numeric(fs.f, x, bad))
          return reject_line(reject::bad_number, off, line,
                             "bad number in field " + c.field + ": " + show(bad));
        if (std::isnan(x) || (c.min && x < *c.min) || (c.max && x > *c.max)) {
          ++counters.filtered;
          return;
        }
      }
      std::string_view text = has_text(fs.f) ? val[static_cast<size_t>(fs.f.index)] : "";
      const bool present = fs.f.kind == field_ref::derived || !text.empty();
      bool keep = true;
      if (c.eq)
        keep = keep && present && text == *c.eq;
      if (c.ne)
        keep = keep && (!present || text != *c.ne);
      if (!c.in.empty())
        keep = keep && present && std::find(c.in.begin(), c.in.end(), text) != c.in.end();
      if (!keep) {
        ++counters.filtered;
        return;
      }
    }
    uint64_t id = 0;
    const timestamp w = wm;
    if (dedupe) {
      auto idv = val[static_cast<size_t>(id_slot)];
      id = id_hash(idv);
      auto e = ids.find(id);
      if (e != nullptr && e->time >= expiry()) {
        ++counters.duplicates;
        return dead_letter_raw(off, line, "duplicate event id " + std::string{idv.substr(
                                                                    0, max_value_in_reason)});
      }
    }
    bool update = false;
    if (w != min_timestamp) {
      const auto& wc = cfg.window;
      timestamp start = 0;
      timestamp end = 0;
      const timestamp closes = window_closes(t, &start, &end);
      if (w >= closes) {
        const bool can_update = wc.late == late_policy::update
                                && wc.kind != window_kind::session
                                && w < sat_add(closes, wc.update_horizon);
        if (!can_update) {
          ++counters.late;
          return dead_letter_raw(off, line, late_reason(start, end, w));
        }
        update = true;
      }
    }
    emit(t, w);
    if (dedupe) {
      if (!ids.put(id, t)) {
        make_room();
        ids.put(id, t);
      }
      added.emplace_back(id, t);
    }
    ++counters.accepted;
    if (update)
      ++counters.late_updates;
    else
      advance_source(t);
  }

  // -- watermark ------------------------------------------------------------------------------

  /// An accepted on-time record of the current source: its max event time, then the watermark.
  void advance_source(timestamp t) {
    auto& ws = wm_sources[current_cfg < 0 ? 0 : static_cast<size_t>(current_cfg)];
    if (t <= ws.max_time)
      return;
    ws.max_time = t;
    if (wm_sources.size() == 1)
      wm = std::max(wm, sat_sub(t, cfg.window.out_of_orderness));
    else
      raise_watermark();
  }

  /// Raises wm to the min over the sources that count (not idle) of max_time - out_of_orderness.
  /// A source without records yet holds it where it is; with none counting it stays.
  void raise_watermark() {
    timestamp low = max_timestamp;
    bool any = false;
    for (const auto& ws : wm_sources)
      if (!ws.idle) {
        low = std::min(low, ws.max_time);
        any = true;
      }
    if (any && low != min_timestamp)
      wm = std::max(wm, sat_sub(low, cfg.window.out_of_orderness));
  }

  void tick(int64_t now) {
    bool changed = false;
    for (auto& ws : wm_sources) {
      if (ws.moved || !clock_started) {
        ws.last_active = now;
        ws.moved = false;
      } else if (ws.idle_timeout > 0 && !ws.idle && now - ws.last_active >= ws.idle_timeout) {
        ws.idle = true;
        changed = true;
      }
    }
    clock_started = true;
    if (changed)
      raise_watermark();
  }

  /// Ids remembered with an event time below this are expired.
  timestamp expiry() const {
    return wm == min_timestamp ? min_timestamp : sat_sub(wm, cfg.preprocess.dedupe_horizon);
  }

  void make_room() {
    ids.sweep(expiry(), expired);
    if ((ids.size() + 1) * 4 > ids.capacity())
      ids.grow();
  }

  void emit(timestamp t, timestamp w) {
    uint64_t kh = 0;
    size_t p = 0;
    event_columns* cols = nullptr;
    if (key_slots.size() == 1) {
      auto k = val[static_cast<size_t>(key_slots[0])];
      kh = XXH3_64bits(k.data(), k.size());
      p = kh % nparts;
      cols = &parts[p];
      cols->key_bytes.append(k);
    } else {
      // Joined in a scratch buffer first: the partition depends on the hash of the joined key.
      key_buf.clear();
      for (size_t i = 0; i < key_slots.size(); ++i) {
        if (i > 0)
          key_buf.push_back(key_separator);
        key_buf.append(val[static_cast<size_t>(key_slots[i])]);
      }
      kh = XXH3_64bits(key_buf.data(), key_buf.size());
      p = kh % nparts;
      cols = &parts[p];
      cols->key_bytes.append(key_buf);
    }
    cols->time.push_back(t);
    cols->wm_before.push_back(w);
    cols->key_hash.push_back(kh);
    cols->key_end.push_back(static_cast<uint32_t>(cols->key_bytes.size()));
    for (const auto& a : agg_inputs) {
      if (a.staged) { // stage_runner fills it after the stages
        if (a.distinct)
          cols->hashes.push_back(0);
        else
          cols->values.push_back(nan);
      } else if (a.distinct) {
        std::string_view text;
        if (a.f.kind == field_ref::slot)
          text = val[static_cast<size_t>(a.f.index)];
        else if (a.f.kind == field_ref::derived)
          text = double_text(dval[static_cast<size_t>(a.f.index)], dtext);
        cols->hashes.push_back(XXH3_64bits(text.data(), text.size()));
      } else if (a.presence) {
        bool present = a.f.kind == field_ref::derived || has_text(a.f);
        cols->values.push_back(present ? 1.0 : nan);
      } else {
        double x = nan;
        std::string_view bad;
        if (!numeric(a.f, x, bad))
          x = nan;
        cols->values.push_back(x);
      }
    }
    if (stages)
      append_stage_fields(p);
  }

  void append_stage_fields(size_t p) {
    double* f = stages->append(p);
    for (size_t i = 0; i < stage_src.size(); ++i) {
      const auto& src = stage_src[i];
      auto k = static_cast<size_t>(src.index);
      f[i] = src.kind == field_ref::derived ? dval[k] : src.kind == field_ref::slot ? num[k] : nan;
    }
  }
};

preprocessor::preprocessor(const pipeline_config& cfg, size_t partitions)
  : d_(std::make_unique<impl>(cfg, partitions)) {
}

preprocessor::~preprocessor() = default;

void preprocessor::bind_source(uint32_t source, size_t config_index) {
  if (config_index >= d_->cfg.sources.size())
    return;
  d_->bind(d_->source(source), config_index);
}

void preprocessor::set_header(uint32_t source, std::string_view header_line) {
  auto& s = d_->source(source);
  if (s.cfg_index < 0)
    return;
  const auto& sc = d_->cfg.sources[static_cast<size_t>(s.cfg_index)];
  if (sc.format != source_format::csv || !sc.header)
    return;
  if (!header_line.empty() && header_line.back() == '\n')
    header_line.remove_suffix(1);
  if (!header_line.empty() && header_line.back() == '\r')
    header_line.remove_suffix(1);
  d_->current_source = source;
  // Not a record: a bad header here must not count as read.
  auto before = d_->counters.read;
  d_->parse_header(s, 0, header_line);
  d_->counters.read = before;
}

const std::vector<std::string>& preprocessor::input_fields() const { return d_->slot_inputs; }

caf::expected<std::vector<std::string>> preprocessor::header_columns(size_t config_index,
                                                                     std::string_view line) {
  const auto& sc = d_->cfg.sources.at(config_index);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
    line.remove_suffix(1);
  if (line.substr(0, 3) == "\xEF\xBB\xBF")
    line.remove_prefix(3);
  std::vector<std::string> out;
  auto err = d_->split_csv(line, sc.delimiter, sc.quote,
                           [&](size_t, std::string_view name) { out.emplace_back(name); });
  if (err != nullptr)
    return make_error(errc::bad_input, err);
  return out;
}

void preprocessor::process(uint32_t source, uint64_t offset, std::string_view chunk) {
  d_->process(source, offset, chunk);
}

void preprocessor::reject_long_line(uint32_t source, uint64_t offset, uint64_t span,
                                    uint64_t length, std::string_view head) {
  d_->counters.bytes += span;
  d_->current_source = source;
  ++d_->counters.read;
  auto& s = d_->source(source);
  const auto& sources = d_->cfg.sources;
  size_t limit = s.cfg_index < 0 ? 0 : sources[static_cast<size_t>(s.cfg_index)].max_line_bytes;
  d_->reject_line(reject::line_too_long, offset, head, long_line_reason(length, limit),
                  max_long_line_raw);
}

void preprocessor::reject_poison(uint32_t source, uint64_t offset, std::string_view line,
                                 std::string reason) {
  d_->counters.bytes += line.size();
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
    line.remove_suffix(1);
  d_->current_source = source;
  ++d_->counters.read;
  d_->reject_line(reject::poison, offset, line, std::move(reason));
}

event_columns& preprocessor::partition(size_t p) { return d_->parts[p]; }

size_t preprocessor::partitions() const { return d_->nparts; }

const dead_letter_pack& preprocessor::dead_letters() const { return d_->dead; }

void preprocessor::clear_outputs() {
  for (auto& p : d_->parts)
    p.clear();
  d_->dead.clear();
  if (d_->stages) {
    d_->stages->clear();
    d_->staged.assign(d_->nparts, 0);
  }
}

timestamp preprocessor::watermark() const { return d_->wm; }

const preprocess_counters& preprocessor::counters() const { return d_->counters; }

void preprocessor::take_dedupe_delta(std::vector<std::pair<uint64_t, int64_t>>& added,
                                     std::vector<uint64_t>& expired) {
  d_->ids.sweep(d_->expiry(), d_->expired);
  added.swap(d_->added);
  expired.swap(d_->expired);
  d_->added.clear();
  d_->expired.clear();
}

void preprocessor::restore(timestamp watermark,
                           const std::vector<std::pair<uint64_t, int64_t>>& ids) {
  d_->wm = watermark;
  d_->ids.clear();
  d_->added.clear();
  d_->expired.clear();
  const timestamp threshold = d_->expiry();
  for (const auto& [id, time] : ids) {
    if (time < threshold || id == 0)
      continue;
    while (!d_->ids.put(id, time))
      d_->ids.grow();
  }
}

namespace {

// Snapshot format "WPP3": watermark (i64), then read, accepted, filtered, late, late_updates,
// duplicates, bytes (u64 each), the number of rejection classes (u32) and per class its name
// (u16 length + bytes) and count (u64), then the number of configured sources (u32) and per
// source its name (u16 length + bytes) and largest accepted event time (i64); little endian.
// "WPP2" had no sources; "WPP1" held the watermark alone.

/// A snapshot's content; `has_sources` is false for the formats before per-source watermarks.
struct snapshot_content {
  timestamp wm = min_timestamp;
  preprocess_counters counters;
  bool has_sources = false;
  std::vector<std::pair<std::string, timestamp>> sources; ///< name -> largest event time
};

/// A name: u16 length (cut at 64 KiB), then its bytes.
void put_text(codec::writer& w, std::string_view s) {
  auto len = static_cast<uint16_t>(std::min<size_t>(s.size(), 0xffff));
  w.u16(len);
  w.raw(s.substr(0, len));
}

caf::error parse_snapshot(std::string_view blob, snapshot_content& out) {
  auto bad = [&] {
    return make_error(errc::store_corrupt, "preprocess snapshot: unknown format ("
                                             + std::to_string(blob.size()) + " bytes)");
  };
  const auto tag = blob.substr(0, 4);
  if (blob.size() < 12 || (tag != "WPP1" && tag != "WPP2" && tag != "WPP3"))
    return bad();
  codec::reader r{blob.substr(4)};
  out = snapshot_content{};
  out.wm = r.i64();
  auto& c = out.counters;
  if (tag != "WPP1") {
    for (auto* x : {&c.read, &c.accepted, &c.filtered, &c.late, &c.late_updates, &c.duplicates,
                    &c.bytes})
      *x = r.u64();
    auto n = r.u32();
    for (uint64_t i = 0; r.ok() && i < n; ++i) {
      std::string name{r.take(r.u16())};
      auto count = r.u64();
      c.rejected.emplace_back(std::move(name), count);
    }
  }
  if (tag == "WPP3") {
    out.has_sources = true;
    auto n = r.u32();
    for (uint64_t i = 0; r.ok() && i < n; ++i) {
      std::string name{r.take(r.u16())};
      auto t = r.i64();
      out.sources.emplace_back(std::move(name), t);
    }
  }
  if (!r.done())
    return bad();
  return {};
}

} // namespace

std::string preprocessor::snapshot() const {
  std::string out = "WPP3";
  codec::writer w{out};
  w.i64(d_->wm);
  const auto& c = d_->counters;
  for (auto x : {c.read, c.accepted, c.filtered, c.late, c.late_updates, c.duplicates, c.bytes})
    w.u64(x);
  w.u32(static_cast<uint32_t>(c.rejected.size()));
  for (const auto& [name, count] : c.rejected) {
    put_text(w, name);
    w.u64(count);
  }
  const auto& ws = d_->wm_sources;
  const auto& sc = d_->cfg.sources;
  auto m = std::min(ws.size(), sc.size());
  w.u32(static_cast<uint32_t>(m));
  for (size_t i = 0; i < m; ++i) {
    put_text(w, sc[i].name);
    w.i64(ws[i].max_time);
  }
  return out;
}

caf::error preprocessor::restore_snapshot(std::string_view blob) {
  snapshot_content sc;
  if (auto err = parse_snapshot(blob, sc))
    return err;
  d_->wm = sc.wm;
  d_->counters = std::move(sc.counters);
  // Sources are matched by name; one the snapshot does not know has no records yet. A snapshot
  // from before per-source watermarks gives every source the event time behind its watermark.
  const timestamp behind =
    sc.wm == min_timestamp ? min_timestamp : sat_add(sc.wm, d_->cfg.window.out_of_orderness);
  for (size_t i = 0; i < d_->wm_sources.size(); ++i) {
    auto& ws = d_->wm_sources[i];
    ws.max_time = sc.has_sources ? min_timestamp : behind;
    for (const auto& [name, t] : sc.sources)
      if (i < d_->cfg.sources.size() && name == d_->cfg.sources[i].name)
        ws.max_time = t;
  }
  d_->reject_pos.fill(-1);
  for (size_t i = 0; i < d_->counters.rejected.size(); ++i)
    for (size_t k = 0; k < static_cast<size_t>(reject::count_); ++k)
      if (d_->counters.rejected[i].first == reject_names[k])
        d_->reject_pos[k] = static_cast<int>(i);
  return {};
}

caf::expected<preprocess_counters> preprocessor::counters_of(std::string_view blob) {
  auto s = summary_of(blob);
  if (!s)
    return s.error();
  return std::move(s->counters);
}

caf::expected<preprocess_summary> preprocessor::summary_of(std::string_view blob) {
  if (blob.empty())
    return preprocess_summary{};
  snapshot_content sc;
  if (auto err = parse_snapshot(blob, sc))
    return err;
  preprocess_summary out;
  out.watermark = sc.wm;
  out.counters = std::move(sc.counters);
  out.sources = std::move(sc.sources);
  return out;
}

void preprocessor::set_watermark(timestamp w) { d_->wm = std::max(d_->wm, w); }

void preprocessor::tick(int64_t now_us) { d_->tick(now_us); }

std::vector<source_watermark> preprocessor::source_watermarks() const {
  std::vector<source_watermark> out;
  for (size_t i = 0; i < d_->wm_sources.size(); ++i) {
    const auto& ws = d_->wm_sources[i];
    source_watermark x;
    x.name = i < d_->cfg.sources.size() ? d_->cfg.sources[i].name : std::string{};
    x.max_time = ws.max_time;
    x.idle = ws.idle;
    out.push_back(std::move(x));
  }
  return out;
}

uint64_t preprocessor::id_hash(std::string_view id) {
  uint64_t h = XXH3_64bits(id.data(), id.size());
  return h == 0 ? 1 : h;
}

} // namespace weir
