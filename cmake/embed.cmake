# Turns a file kept in the repository into a C++ source that holds its bytes, so that a program
# carries it (the status page of `weir serve`). Any byte may appear in the file: it is written
# as numbers, never as text. Run as a script:
#   cmake -DINPUT=page.html -DOUTPUT=page.cpp -DFUNCTION=status_page -DNAMESPACE=weir::cli
#         -DHEADER=cli/status_page.hpp -P embed.cmake
# The source defines `std::string_view NAMESPACE::FUNCTION()`, declared in HEADER.
foreach(var INPUT OUTPUT FUNCTION NAMESPACE HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed.cmake: -D${var}=... is missing")
  endif()
endforeach()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
# 16 bytes a line; a last 0 keeps the array from being empty.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n  " bytes "${bytes}")
get_filename_component(name "${INPUT}" NAME)
set(text "// Made by cmake/embed.cmake from ${name} at build time; edit that file instead.
#include \"${HEADER}\"

namespace ${NAMESPACE} {

namespace {

const unsigned char bytes[] = {
  ${bytes}0x00};

} // namespace

std::string_view ${FUNCTION}() {
  return {reinterpret_cast<const char*>(bytes), ${size}};
}

} // namespace ${NAMESPACE}
")
file(WRITE "${OUTPUT}" "${text}")
