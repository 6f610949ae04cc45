/// A plugin for the end-to-end tests: registers the aggregates of aggregates.hpp as "sum_sq",
/// "plain_sum" and "ewma" in the registry the `weir` command passes in.

#include "tests/plugins/aggregates.hpp"

WEIR_PLUGIN(registry) {
  registry.add_aggregate("sum_sq", [](const weir::extension_options& o) {
    return std::make_shared<weir::aggregate_of<weir_test::sum_sq>>(o);
  });
  registry.add_aggregate("plain_sum", [](const weir::extension_options& o) {
    return std::make_shared<weir::aggregate_of<weir_test::plain_sum>>(o);
  });
  registry.add_aggregate("ewma", [](const weir::extension_options& o) {
    return std::make_shared<weir::aggregate_of<weir_test::ewma>>(o);
  });
}
