#!/usr/bin/env bash
# The main job: installs what is missing, builds, runs the single-node pipeline on the bundled
# sample (examples/transactions) into a fresh embedded LMDB store and prints the results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh weir_cli
store="$(mktemp -d "${TMPDIR:-/tmp}/weir-demo.XXXXXX")"
trap 'rm -rf "$store"' EXIT
# The sample is a whole day: --final fires the last hours' windows too. Without it they would
# stay open in the store for a next run with more data (the summary counts them).
build/bin/weir run examples/transactions/pipeline.toml --store "$store" --final
echo
build/bin/weir query --store "$store" --pipeline merchant_hourly
echo
build/bin/weir dead-letters --store "$store"
