#pragma once

#include <memory>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "store/warehouse.hpp"

namespace weir {

struct warehouse_state {
  static inline const char* name = "warehouse";
};

/// The warehouse actor: serves queries on the committed window results and the dead letters
/// of the store it is given. Reads run in one LMDB read transaction each, so an answer holds
/// whole epochs only; commits come from the updater through the same store object.
warehouse_actor::behavior_type
warehouse_service(warehouse_actor::stateful_pointer<warehouse_state> self,
                  std::shared_ptr<warehouse> store);

struct query_answer; // actors/runtime.hpp

/// Reads a QueryResult frame answering `req` into `a`, reusing its rows (and their strings and
/// vectors) from the page before: paging allocates nothing per row once warm. errc::decode for
/// bad bytes, more rows than asked for, rows out of order or not after the request's cursor (a
/// client paging on would loop or repeat them) or values not one per aggregate.
caf::error decode_query_page(const frame& f, const query_request& req, query_answer& a);

/// Reads a DeadLetters frame answering a listing of `pipeline` after sequence `after`, at most
/// `limit` (0: any number), into `rows`. errc::decode for bad bytes, letters of another
/// pipeline, too many, or sequences not rising past `after`.
caf::error decode_letters_page(const frame& f, const std::string& pipeline, uint64_t after,
                               uint64_t limit, std::vector<dead_letter_row>& rows);

} // namespace weir
