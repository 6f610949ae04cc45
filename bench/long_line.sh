#!/usr/bin/env bash
# Peak memory of `weir run` on an input with one huge line: LINE_MB megabytes (default 250) in a
# single line between normal ones, with max_line_bytes = 1 MiB. The over-long line goes to dead
# letters; it is streamed past, so the peak resident set stays far below its size.
#
#   bench/long_line.sh [WEIR_BINARY] [LINE_MB]
#
# Prints the peak RSS (from /usr/bin/time -v, or GNU time's %M), the wall time and the size of
# the store afterwards. Needs /usr/bin/time (Debian package "time").
set -euo pipefail
weir=${1:-build/bin/weir}
line_mb=${2:-250}
weir=$(readlink -f "$weir")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
cat > p.toml <<'TOML'
store = "store"

[[pipeline]]
name = "p"
partitions = 1

  [[pipeline.source]]
  name = "in"
  path = "in.csv"
  max_line_bytes = 1048576

  [pipeline.fields]
  time = "ts"
  key = "k"
  measures = ["v"]

  [pipeline.window]
  kind = "tumbling"
  size = "1m"

  [[pipeline.aggregate]]
  fn = "count"
TOML
{
  echo "ts,k,v"
  for i in $(seq 0 999); do printf '2024-06-01T00:%02d:%02dZ,a,%d\n' $((i / 60 % 60)) $((i % 60)) "$i"; done
  printf '2024-06-01T00:20:00Z,b,'
  head -c $((line_mb * 1024 * 1024)) /dev/zero | tr '\0' '7'
  printf '\n'
  for i in $(seq 0 999); do printf '2024-06-01T01:%02d:%02dZ,a,%d\n' $((i / 60 % 60)) $((i % 60)) "$i"; done
} > in.csv
echo "input: $(du -m in.csv | cut -f1) MiB, one line of ${line_mb} MiB, max_line_bytes 1 MiB"
/usr/bin/time -f '%M %e' -o time.out "$weir" run p.toml > run.out 2> run.err || {
  cat run.err >&2
  exit 1
}
read -r rss_kb wall < time.out
echo "peak RSS: $((rss_kb / 1024)) MiB, wall ${wall} s"
echo "store: $(du -sm store | cut -f1) MiB"
grep -E 'events read|rejected' run.out || true
