#include "actors/warehouse.hpp"

#include <limits>

#include <capnp/message.h>

#include "actors/frame.hpp"
#include "schema/batch.capnp.h"

namespace weir {

warehouse_actor::behavior_type
warehouse_service(warehouse_actor::stateful_pointer<warehouse_state> self,
                  std::shared_ptr<warehouse> store) {
  return {
    [store](query_atom, const std::string& pipeline, const std::string& key, int64_t from,
            int64_t to) -> caf::result<frame> {
      auto info = store->pipeline(pipeline);
      if (!info)
        return info.error();
      if (!*info)
        return make_error(errc::bad_input, "no pipeline " + pipeline + " in the store");
      result_query q;
      q.pipeline = pipeline;
      if (!key.empty())
        q.key = key;
      if (from != std::numeric_limits<int64_t>::min())
        q.from = from;
      if (to != std::numeric_limits<int64_t>::max())
        q.to = to;
      std::vector<window_result> rows;
      if (auto err = store->query(q, [&](const window_result& r) {
            rows.push_back(r);
            return true;
          }))
        return err;
      capnp::MallocMessageBuilder mb;
      auto out = mb.initRoot<schema::QueryResult>();
      out.setPipeline(pipeline);
      out.setWindow((*info)->window);
      auto names = out.initAggregates(static_cast<unsigned>((*info)->aggregates.size()));
      for (size_t i = 0; i < (*info)->aggregates.size(); ++i)
        names.set(static_cast<unsigned>(i), (*info)->aggregates[i]);
      auto list = out.initRows(static_cast<unsigned>(rows.size()));
      for (size_t i = 0; i < rows.size(); ++i)
        encode_result(list[static_cast<unsigned>(i)], rows[i]);
      return to_frame(mb);
    },
    [store](letters_atom, const std::string& pipeline, uint64_t limit) -> caf::result<frame> {
      std::vector<dead_letter_row> rows;
      std::optional<std::string> p;
      if (!pipeline.empty())
        p = pipeline;
      if (auto err = store->dead_letters(p, [&](const dead_letter_row& r) {
            rows.push_back(r);
            return limit == 0 || rows.size() < limit;
          }))
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
      return to_frame(mb);
    },
  };
}

} // namespace weir
