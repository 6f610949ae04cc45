#pragma once

/// Arithmetic expressions of derived fields (`price * qty + fee`). An expression is compiled
/// once, when the pipeline starts, into a postfix program over numbered inputs; evaluating it
/// per record touches only a stack sized at compile time, so it never allocates.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace weir {

class expr_program {
public:
  /// Grammar: expr = term {('+'|'-') term}; term = unary {('*'|'/') unary};
  /// unary = ('-'|'+') unary | primary; primary = number | name | '(' expr ')'.
  /// Names are `[A-Za-z_][A-Za-z0-9_.]*`, or any text but a backquote between backquotes
  /// (`` `unit-price` ``) for field names that are not identifiers. Numbers are decimal with
  /// an optional fraction and exponent. Errors are errc::bad_config naming the position.
  static caf::expected<expr_program> compile(std::string_view text);

  /// The distinct field names the expression reads, in order of first use. eval() takes their
  /// values in this order.
  const std::vector<std::string>& inputs() const { return inputs_; }

  /// Evaluates with `values[i]` the value of inputs()[i]. NaN inputs give NaN. Division by
  /// zero gives NaN and sets `div_by_zero`. Not thread-safe: uses a member stack.
  double eval(const double* values, bool& div_by_zero) const;

private:
  enum class op : uint8_t { constant, input, add, sub, mul, div, neg };
  struct instr {
    op code;
    uint32_t index; ///< input index for op::input
    double value;   ///< for op::constant
  };
  std::vector<instr> code_;
  std::vector<std::string> inputs_;
  mutable std::vector<double> stack_;

  friend class expr_parser;
};

} // namespace weir
