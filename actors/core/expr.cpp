#include "actors/core/expr.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fast_float/fast_float.h>

#include "actors/core/error.hpp"

namespace weir {

/// Recursive descent straight into postfix code; tracks the stack depth the code needs.
class expr_parser {
public:
  explicit expr_parser(std::string_view text) : text_(text) {}

  caf::expected<expr_program> run() {
    if (!parse_expr())
      return make_error(errc::bad_config, error_);
    skip_space();
    if (pos_ != text_.size()) {
      fail_here("unexpected");
      return make_error(errc::bad_config, error_);
    }
    if (prog_.code_.empty())
      return make_error(errc::bad_config, "empty expression");
    prog_.stack_.resize(max_depth_);
    return std::move(prog_);
  }

private:
  using op = expr_program::op;

  bool fail_here(const char* what) {
    if (pos_ >= text_.size())
      error_ = std::string{what} + " end of expression";
    else
      error_ = std::string{what} + " '" + text_[pos_] + "' at position "
               + std::to_string(pos_ + 1);
    return false;
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t'))
      ++pos_;
  }

  void emit(op code, uint32_t index = 0, double value = 0) {
    prog_.code_.push_back({code, index, value});
    if (code == op::constant || code == op::input)
      max_depth_ = std::max(max_depth_, ++depth_);
    else if (code != op::neg)
      --depth_;
  }

  bool parse_expr() {
    if (!parse_term())
      return false;
    for (;;) {
      skip_space();
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) {
        op code = text_[pos_++] == '+' ? op::add : op::sub;
        if (!parse_term())
          return false;
        emit(code);
      } else {
        return true;
      }
    }
  }

  bool parse_term() {
    if (!parse_unary())
      return false;
    for (;;) {
      skip_space();
      if (pos_ < text_.size() && (text_[pos_] == '*' || text_[pos_] == '/')) {
        op code = text_[pos_++] == '*' ? op::mul : op::div;
        if (!parse_unary())
          return false;
        emit(code);
      } else {
        return true;
      }
    }
  }

  bool parse_unary() {
    skip_space();
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) {
      bool neg = text_[pos_++] == '-';
      if (++nesting_ > max_nesting)
        return fail_here("too deeply nested at");
      if (!parse_unary())
        return false;
      --nesting_;
      if (neg)
        emit(op::neg);
      return true;
    }
    return parse_primary();
  }

  static bool name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  static bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9') || c == '.'; }

  void emit_input(std::string_view name) {
    auto& in = prog_.inputs_;
    auto i = std::find(in.begin(), in.end(), name);
    if (i == in.end())
      i = in.insert(in.end(), std::string{name});
    emit(op::input, static_cast<uint32_t>(i - in.begin()));
  }

  bool parse_primary() {
    skip_space();
    if (pos_ >= text_.size())
      return fail_here("unexpected");
    char c = text_[pos_];
    if (c == '(') {
      ++pos_;
      if (++nesting_ > max_nesting)
        return fail_here("too deeply nested at");
      if (!parse_expr())
        return false;
      --nesting_;
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ')')
        return fail_here("expected ')' instead of");
      ++pos_;
      return true;
    }
    if (c == '`') {
      auto close = text_.find('`', pos_ + 1);
      if (close == std::string_view::npos || close == pos_ + 1)
        return fail_here("unterminated or empty quoted name at");
      emit_input(text_.substr(pos_ + 1, close - pos_ - 1));
      pos_ = close + 1;
      return true;
    }
    if (name_start(c)) {
      size_t b = pos_;
      while (pos_ < text_.size() && name_char(text_[pos_]))
        ++pos_;
      emit_input(text_.substr(b, pos_ - b));
      return true;
    }
    if ((c >= '0' && c <= '9') || c == '.') {
      double v = 0;
      auto r = fast_float::from_chars(text_.data() + pos_, text_.data() + text_.size(), v);
      if (r.ec != std::errc{})
        return fail_here("bad number at");
      pos_ = static_cast<size_t>(r.ptr - text_.data());
      emit(op::constant, 0, v);
      return true;
    }
    return fail_here("unexpected");
  }

  static constexpr int max_nesting = 64;
  std::string_view text_;
  size_t pos_ = 0;
  int nesting_ = 0;
  size_t depth_ = 0;
  size_t max_depth_ = 0;
  std::string error_;
  expr_program prog_;
};

caf::expected<expr_program> expr_program::compile(std::string_view text) {
  return expr_parser{text}.run();
}

double expr_program::eval(const double* values, bool& div_by_zero) const {
  double* sp = stack_.data(); // points past the top
  for (const auto& i : code_) {
    switch (i.code) {
      case op::constant: *sp++ = i.value; break;
      case op::input: *sp++ = values[i.index]; break;
      case op::neg: sp[-1] = -sp[-1]; break;
      case op::add: --sp; sp[-1] += sp[0]; break;
      case op::sub: --sp; sp[-1] -= sp[0]; break;
      case op::mul: --sp; sp[-1] *= sp[0]; break;
      case op::div:
        --sp;
        if (sp[0] == 0) {
          div_by_zero = true;
          sp[-1] = std::numeric_limits<double>::quiet_NaN();
        } else {
          sp[-1] /= sp[0];
        }
        break;
    }
  }
  return sp[-1];
}

} // namespace weir
