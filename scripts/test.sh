#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest; then builds
# the core and store tests and the fuzz corpus replays again with ASan + UBSan
# (WEIR_SANITIZE, in build-asan/) and runs them there (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# Relative paths in ccache's keys, so that build/ and build-asan/ share what is not instrumented
# (Catch2's main).
export CCACHE_BASEDIR="$PWD"
scripts/deps.sh --tests
scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 600)

# Only the targets the sanitizer stage runs: the rest of the tree is not built there.
targets=()
for f in tests/core_*_test.cpp tests/store_*_test.cpp tests/fuzz/fuzz_*.cpp; do
  name=$(basename "$f" .cpp)
  case "$name" in
    fuzz_*) targets+=("${name}_replay") ;;
    *) targets+=("$name") ;;
  esac
done
# -O1 -g1 (line tables only) compiles 2.5 times faster than -O2 -g and keeps asserts on.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEIR_SANITIZE=ON \
  -DWEIR_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" >/dev/null
cmake --build build-asan -j "$(nproc)" --target "${targets[@]}"
cd build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$(nproc)" --timeout 600 -R '^(core|store|fuzz)_'
