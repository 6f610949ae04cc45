#pragma once

/// One store directory: its lake (DIR/lake) and its warehouse (DIR/warehouse) belong together.
/// The warehouse's offsets count bytes of sources whose ids and landed chunks live in the lake,
/// so a lake beside a warehouse of another store, or one half lost and made anew beside the
/// other, would resume from the wrong place and commit wrong results without a word.
///
/// A random 128-bit identity, made with the store, is recorded in both meta tables. Opening the
/// pair refuses (errc::store_corrupt) a pair whose identities differ, and a half that records
/// none (it is new) beside a half that holds data. A half without identity beside an empty other
/// half adopts its identity: that is a store whose first open stopped between the two writes.

#include <string>
#include <string_view>

#include "actors/core/error.hpp"
#include "store/lake.hpp"
#include "store/warehouse.hpp"

namespace weir {

struct store_pair {
  lake lk;
  warehouse wh;
};

/// Opens (creating when missing) DIR/lake and DIR/warehouse and binds them (bind_identity).
caf::expected<store_pair> open_store(const std::string& dir, bool durable = true);

/// Checks that lake and warehouse are one store, recording a new identity in a new store.
caf::error bind_identity(lake& lk, warehouse& wh);

/// The warehouse alone, when its lake lives on another node (the ingest node of a cluster):
/// its identity, recorded now when it has none, and in `holds_data` whether it holds committed
/// epochs (whose offsets count bytes of the lake's sources). The lake is bound to it on its node
/// with bind_lake.
caf::expected<std::string> warehouse_identity(warehouse& wh, bool& holds_data);

/// Binds a lake to the identity `id` of a warehouse on another node (`where` names it for the
/// messages), with the rules of bind_identity: equal identities are one store; a lake that
/// records another is refused; a new lake adopts the identity unless the warehouse held data
/// (the source ids its committed offsets refer to would be gone). errc::store_corrupt.
caf::error bind_lake(lake& lk, std::string_view id, bool warehouse_holds_data,
                     const std::string& where);

/// A store identity as 32 hex digits.
std::string show_identity(std::string_view id);

} // namespace weir
