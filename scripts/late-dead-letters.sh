#!/usr/bin/env bash
# Reproduces a workload where most records are late: 3 M generated transactions, 90 % of them
# moved back by up to 30 days, hourly windows without out-of-orderness or allowed lateness, so
# that each moved record finds its window closed and becomes a dead letter ("late").
# Prints the run summary and the peak RSS. Usage: scripts/late-dead-letters.sh [WEIR] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
weir=${1:-build/bin/weir}
events=${2:-3000000}
dir=${TMPDIR:-/tmp}/weir-late-dead-letters
mkdir -p "$dir"
csv="$dir/late-$events.csv"
if [ ! -s "$csv" ]; then
  build/bin/weir-gen --events "$events" --disorder 0.9 --max-shift 2592000 --seed 7 --out "$csv"
fi
cat >"$dir/pipeline.toml" <<TOML
commit_interval = "100ms"

[[pipeline]]
name = "late"

  [[pipeline.source]]
  name = "transactions"
  path = "$csv"
  format = "csv"

  [pipeline.fields]
  time = "ts"
  key = ["merchant"]
  measures = ["amount"]

  [pipeline.window]
  kind = "tumbling"
  size = "1h"

  [[pipeline.aggregate]]
  fn = "sum"
  field = "amount"
  name = "total"
TOML
rm -rf "$dir/store"
/usr/bin/time -v "$weir" run "$dir/pipeline.toml" --store "$dir/store" --final 2>"$dir/time.txt"
grep -E "Maximum resident|Elapsed" "$dir/time.txt"
