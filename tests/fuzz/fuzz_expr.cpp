// Fuzz target: the derive expression compiler, and evaluating what compiles with inputs of
// every kind (zero, negative, huge, infinite, NaN).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <vector>

#include "actors/core/expr.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto prog = weir::expr_program::compile(text);
  if (!prog)
    return 0;
  if (prog->inputs().empty() && text.find_first_not_of(" \t") == std::string_view::npos)
    std::abort(); // an empty expression must not compile
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double samples[] = {
    0.0, 1.0, -2.5, 1e308, -inf, inf, std::numeric_limits<double>::quiet_NaN()};
  std::vector<double> values(prog->inputs().size());
  for (double s : samples) {
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = i % 2 ? -s : s;
    bool div0 = false;
    (void)prog->eval(values.data(), div0);
  }
  return 0;
}
