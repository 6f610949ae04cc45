// Fuzz target: arbitrary bytes as a frame of each struct that crosses between actors, in turn,
// into the decode function of the actor that receives it (tests/fuzz/frame_fixture.hpp). Every
// input must either be refused with an error or give values that read within the frame.

#include <cstring>

#include "tests/fuzz/frame_fixture.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weir::frame f;
  f.words.resize((size + 7) / 8);
  if (size > 0)
    std::memcpy(f.words.data(), data, size);
  uint64_t sink = 0;
  weir::fuzz::decode_as_each(f, sink, weir::frame_roots{});
  volatile uint64_t keep = sink; // the reads must happen
  (void)keep;
  return 0;
}
