// `weir check --store DIR`: walks the whole store and reports (store/check.hpp).

#include "cli/check.hpp"

#include <iostream>

#include "store/check.hpp"

namespace weir::cli {

caf::expected<bool> run_check(const std::string& store) {
  auto report = check_store(store, [](const std::string& line) {
    std::cout << line << std::endl; // flushed: a fatal damage still leaves what was checked
  });
  if (!report)
    return std::move(report.error());
  std::cout << "checked " << report->entries << " entries: ";
  if (report->clean())
    std::cout << "no problems\n";
  else
    std::cout << report->problems.size() << " problem" << (report->problems.size() == 1 ? "" : "s")
              << "; the store is damaged\n";
  std::cout.flush();
  return report->clean();
}

} // namespace weir::cli
