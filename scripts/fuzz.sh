#!/usr/bin/env bash
# Builds the libFuzzer programs (clang, ASan + UBSan, docs/testing.md) in build-fuzz/ and runs
# each fuzz target for a while, starting from its seed corpus in tests/fuzz/corpus/<target>/.
# New interesting inputs go to build-fuzz/corpus/<target>/; a crash stops that target with the
# input saved as build-fuzz/crashes/<target>/crash-*: fix the bug, then copy the input into
# tests/fuzz/corpus/<target>/ so that ctest replays it from then on.
#
# Usage: scripts/fuzz.sh [--seconds N] [target...]
#   --seconds N   run time per target (default 120)
#   targets       csv ndjson time expr config frames (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=120
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(csv ndjson time expr config frames)
command -v clang++ >/dev/null || { echo "fuzz.sh needs clang++ (apt-get install clang)"; exit 2; }
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DWEIR_FUZZ=ON -DWEIR_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/crashes/$t"
  echo "== fuzz_$t for ${seconds}s"
  if ! build-fuzz/tests/fuzz/fuzz_"$t" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" \
      -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="build-fuzz/crashes/$t/" -print_final_stats=1 2>"build-fuzz/fuzz_$t.log"; then
    failed+=("$t")
    tail -n 40 "build-fuzz/fuzz_$t.log"
  fi
  grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' "build-fuzz/fuzz_$t.log" || true
done
if ((${#failed[@]})); then
  echo "crashes in: ${failed[*]} (inputs under build-fuzz/crashes/)"
  exit 1
fi
echo "no crash in: ${targets[*]}"
