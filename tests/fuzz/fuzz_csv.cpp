// Fuzz target: the csv decoder and every check of the preprocess engine after it.

#include "tests/fuzz/fuzz_pipeline.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weir::fuzz::run_pipeline("csv", data, size);
  return 0;
}
