#include "actors/warehouse.hpp"

#include <algorithm>
#include <limits>

#include <capnp/message.h>

#include "actors/frame.hpp"
#include "actors/runtime.hpp"
#include "schema/batch.capnp.h"

namespace weir {

namespace {

/// Whether window (start, end, key) comes after (start, end, key) of `b`: the order of results.
bool after(const window_result& a, int64_t start, int64_t end, std::string_view key) {
  if (a.start != start)
    return a.start > start;
  if (a.end != end)
    return a.end > end;
  return std::string_view{a.key} > key;
}

} // namespace

caf::error decode_query_page(const frame& f, const query_request& req, query_answer& a) {
  a.aggregates.clear();
  return decode_frame<schema::QueryResult>(f, [&](schema::QueryResult::Reader q) {
    a.window = q.getWindow();
    for (auto n : q.getAggregates())
      a.aggregates.emplace_back(n.cStr(), n.size());
    auto rows = q.getRows();
    if (req.limit > 0 && rows.size() > req.limit)
      refuse_frame(std::to_string(rows.size()) + " rows where " + std::to_string(req.limit) +
                   " were asked for");
    a.rows.resize(rows.size());
    for (unsigned i = 0; i < rows.size(); ++i) {
      auto& w = a.rows[i];
      decode_result(rows[i], w);
      if (w.values.size() != a.aggregates.size())
        refuse_frame("a row of " + std::to_string(w.values.size()) + " values for " +
                     std::to_string(a.aggregates.size()) + " aggregates");
      bool ordered = i == 0
                       ? !req.has_after || after(w, req.after_start, req.after_end, req.after_key)
                       : after(w, a.rows[i - 1].start, a.rows[i - 1].end, a.rows[i - 1].key);
      if (!ordered)
        refuse_frame("rows out of order");
    }
  });
}

caf::error decode_letters_page(const frame& f, const std::string& pipeline, uint64_t after,
                               uint64_t limit, std::vector<dead_letter_row>& rows) {
  return decode_frame<schema::DeadLetters>(f, [&](schema::DeadLetters::Reader d) {
    auto letters = d.getLetters();
    if (limit > 0 && letters.size() > limit)
      refuse_frame(std::to_string(letters.size()) + " dead letters where " + std::to_string(limit) +
                   " were asked for");
    for (auto l : letters) {
      dead_letter_row x;
      x.pipeline = l.getPipeline();
      x.seq = l.getSequence();
      if (x.pipeline != pipeline)
        refuse_frame("a dead letter of pipeline " + x.pipeline + " in a listing of " + pipeline);
      if (x.seq <= after)
        refuse_frame("dead letter sequences not rising");
      after = x.seq;
      x.letter = decode_dead_letter(l.getLetter());
      rows.push_back(std::move(x));
    }
  });
}

warehouse_actor::behavior_type
warehouse_service(warehouse_actor::stateful_pointer<warehouse_state> self,
                  std::shared_ptr<warehouse> store) {
  return {
    [store](query_atom, const query_request& req) -> caf::result<frame> {
      auto info = store->pipeline(req.pipeline);
      if (!info)
        return info.error();
      if (!*info)
        return make_error(errc::bad_input, "no pipeline " + req.pipeline + " in the store");
      result_query q;
      q.pipeline = req.pipeline;
      if (!req.key.empty())
        q.key = req.key;
      if (req.from != std::numeric_limits<int64_t>::min())
        q.from = req.from;
      if (req.to != std::numeric_limits<int64_t>::max())
        q.to = req.to;
      if (req.has_after) {
        q.after.emplace();
        q.after->start = req.after_start;
        q.after->end = req.after_end;
        q.after->key = req.after_key;
      }
      capnp::MallocMessageBuilder mb;
      auto out = mb.initRoot<schema::QueryResult>();
      out.setPipeline(req.pipeline);
      out.setWindow((*info)->window);
      auto names = out.initAggregates(static_cast<unsigned>((*info)->aggregates.size()));
      for (size_t i = 0; i < (*info)->aggregates.size(); ++i)
        names.set(static_cast<unsigned>(i), (*info)->aggregates[i]);
      // Rows go straight into an orphan list of a page's size (cut to what was found); a
      // request without a limit grows it by doubling.
      auto orphan = mb.getOrphanage().newOrphan<capnp::List<schema::WindowResult>>(
        static_cast<unsigned>(req.limit ? std::min<uint64_t>(req.limit, 65536) : 1024));
      unsigned n = 0;
      if (auto err = store->query(q, [&](const window_result& r) {
            if (n == orphan.get().size())
              orphan.truncate(n * 2);
            encode_result(orphan.get()[n++], r);
            return req.limit == 0 || n < req.limit;
          }))
        return err;
      orphan.truncate(n);
      out.adoptRows(std::move(orphan));
      return to_frame<schema::QueryResult>(mb);
    },
    [store](letters_atom, const std::string& pipeline, uint64_t after,
            uint64_t limit) -> caf::result<frame> {
      std::optional<std::string> p;
      if (!pipeline.empty()) {
        auto info = store->pipeline(pipeline);
        if (!info)
          return info.error();
        if (!*info)
          return make_error(errc::bad_input, "no pipeline " + pipeline + " in the store");
        p = pipeline;
      }
      std::vector<dead_letter_row> rows;
      if (auto err = store->dead_letters(
            p,
            [&](const dead_letter_row& r) {
              rows.push_back(r);
              return limit == 0 || rows.size() < limit;
            },
            after))
        return err;
      capnp::MallocMessageBuilder mb;
      auto list =
        mb.initRoot<schema::DeadLetters>().initLetters(static_cast<unsigned>(rows.size()));
      for (size_t i = 0; i < rows.size(); ++i) {
        auto o = list[static_cast<unsigned>(i)];
        o.setPipeline(rows[i].pipeline);
        o.setSequence(rows[i].seq);
        encode_dead_letter(o.initLetter(), rows[i].letter);
      }
      return to_frame<schema::DeadLetters>(mb);
    },
  };
}

} // namespace weir
