#include "store/store.hpp"

#include <random>

namespace weir {

namespace {

constexpr size_t identity_size = 16;

std::string new_identity() {
  std::random_device rd;
  std::string id(identity_size, '\0');
  for (auto& c : id)
    c = static_cast<char>(rd() & 0xFF);
  return id;
}

/// Whether the lake holds anything: a known source means chunks or offsets may refer to it.
caf::expected<bool> lake_holds_data(lake& lk) {
  auto srcs = lk.sources();
  if (!srcs)
    return std::move(srcs.error());
  return !srcs->empty();
}

caf::expected<bool> warehouse_holds_data(warehouse& wh) {
  auto ps = wh.pipelines();
  if (!ps)
    return std::move(ps.error());
  return !ps->empty();
}

caf::error lost_half(const std::string& new_half, const std::string& other, std::string_view id,
                     const std::string& what_is_lost) {
  return make_error(errc::store_corrupt,
                    new_half +
                      " records no store identity (it is new: lost, deleted or replaced) "
                      "while " +
                      other + " beside it holds the data of store " + show_identity(id) + "; " +
                      what_is_lost + "; restore it, or move the store away and start anew");
}

} // namespace

std::string show_identity(std::string_view id) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : id) {
    out += digits[c >> 4];
    out += digits[c & 0xF];
  }
  return out;
}

caf::error bind_identity(lake& lk, warehouse& wh) {
  auto lid = lk.identity();
  if (!lid)
    return std::move(lid.error());
  auto wid = wh.identity();
  if (!wid)
    return std::move(wid.error());
  if (*lid && *wid) {
    if (**lid == **wid)
      return caf::none;
    return make_error(errc::store_corrupt,
                      "the lake " + lk.dir() + " belongs to store " + show_identity(**lid) +
                        " but the warehouse " + wh.dir() + " to store " + show_identity(**wid) +
                        ": they were not made together and cannot be used as one store");
  }
  if (*lid) { // a new warehouse
    auto data = lake_holds_data(lk);
    if (!data)
      return std::move(data.error());
    if (*data)
      return lost_half("the warehouse " + wh.dir(), "the lake " + lk.dir(), **lid,
                       "the committed offsets, state and results that go with the lake are gone");
    return wh.record_identity(**lid);
  }
  if (*wid) { // a new lake
    auto data = warehouse_holds_data(wh);
    if (!data)
      return std::move(data.error());
    if (*data)
      return lost_half("the lake " + lk.dir(), "the warehouse " + wh.dir(), **wid,
                       "the source ids the committed offsets refer to are gone");
    return lk.record_identity(**wid);
  }
  // A new store (format version 2 stores record an identity at their first open).
  auto id = new_identity();
  if (auto err = wh.record_identity(id))
    return err;
  return lk.record_identity(id);
}

caf::expected<std::string> warehouse_identity(warehouse& wh, bool& holds_data) {
  // What a lake elsewhere must still have: the source ids of committed offsets.
  auto ps = wh.pipelines();
  if (!ps)
    return std::move(ps.error());
  holds_data = false;
  for (const auto& p : *ps) {
    auto last = wh.last_epoch(p.name);
    if (!last)
      return std::move(last.error());
    holds_data = holds_data || *last > 0;
  }
  auto wid = wh.identity();
  if (!wid)
    return std::move(wid.error());
  if (*wid)
    return **wid;
  auto id = new_identity();
  if (auto err = wh.record_identity(id))
    return err;
  return id;
}

caf::error bind_lake(lake& lk, std::string_view id, bool warehouse_holds_data,
                     const std::string& where) {
  auto lid = lk.identity();
  if (!lid)
    return std::move(lid.error());
  if (*lid) {
    if (**lid == id)
      return caf::none;
    return make_error(errc::store_corrupt,
                      "the lake " + lk.dir() + " belongs to store " + show_identity(**lid) +
                        " but the warehouse " + where + " to store " + show_identity(id) +
                        ": they were not made together and cannot be used as one store");
  }
  if (warehouse_holds_data)
    return lost_half("the lake " + lk.dir(), "the warehouse " + where, id,
                     "the source ids the committed offsets refer to are gone");
  return lk.record_identity(id);
}

caf::expected<store_pair> open_store(const std::string& dir, bool durable) {
  auto lk = lake::open(dir, durable);
  if (!lk)
    return std::move(lk.error());
  auto wh = warehouse::open(dir, durable);
  if (!wh)
    return std::move(wh.error());
  if (auto err = bind_identity(*lk, *wh))
    return err;
  return store_pair{std::move(*lk), std::move(*wh)};
}

} // namespace weir
