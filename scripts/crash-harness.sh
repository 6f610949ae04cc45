#!/usr/bin/env bash
# Crash harness (issue 3, item 6): kills `weir run` with SIGKILL at random moments and at named
# fault points (WEIR_FAULT, docs/faults.md), restarts it each time, then compares the store
# with a failure-free reference run: window results, dead letters and committed offsets must be
# identical; no window lost, no event counted twice. Prints the figures and a one-line verdict
# (PASS/FAIL); exits 0 on PASS, 1 on any difference, 2 on a usage or setup error.
#
#   scripts/crash-harness.sh [--events N] [--kills K] [--bin DIR] [--seed S] [--keep]
#
# With the sink plugin of the tests (build/bin/weir_test_sinks.so, or --sink-plugin), the first
# pipeline also has a [[pipeline.sink]] of kind "file" (tests/plugins/sinks.cpp), and the file it
# keeps must hold each window of the store's results exactly once (key and count compared).
#
# Bash and Debian base tools only (coreutils, grep, mawk/awk, diff); no network. Every run is
# bounded in time; the temporary directory is removed at the end (--keep keeps it on FAIL).
set -uo pipefail

events=2000000
kills_target=30
span_days=60
named_every=3       # every Nth iteration crashes at a named fault point instead of a random kill
seed=$(( $(date +%s) % 32768 ))
keep=0
sink_plugin=""
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${WEIR_BIN_DIR:-$here/build/bin}"

usage() {
  cat <<EOF
usage: $0 [options]
  --events N       events to generate (default $events)
  --kills K        kills to reach before the final run (default $kills_target)
  --span-days D    days of event time in the input (default $span_days)
  --named-every M  every Mth iteration crashes at a random named fault point (default $named_every; 0: never)
  --bin DIR        directory with weir and weir-gen (default \$WEIR_BIN_DIR or build/bin)
  --seed S         seed of the random kill schedule (default: from the clock, printed)
  --keep           keep the temporary directory when the verdict is FAIL
  --sink-plugin P  the sink plugin of the tests (default DIR/weir_test_sinks.so when it is
                   there; none: no sink)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --kills) kills_target="$2"; shift 2 ;;
    --span-days) span_days="$2"; shift 2 ;;
    --named-every) named_every="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --sink-plugin) sink_plugin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "crash-harness: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$events" "$kills_target" "$span_days" "$named_every" "$seed"; do
  case "$n" in ''|*[!0-9]*) echo "crash-harness: not a whole number: '$n'" >&2; exit 2 ;; esac
done
weir="$bin/weir"
gen="$bin/weir-gen"
for b in "$weir" "$gen"; do
  [ -x "$b" ] || { echo "crash-harness: $b not found (build first, or give --bin)" >&2; exit 2; }
done
RANDOM=$seed
[ -z "$sink_plugin" ] && [ -f "$bin/weir_test_sinks.so" ] && sink_plugin="$bin/weir_test_sinks.so"
[ "$sink_plugin" = none ] && sink_plugin=""
if [ -n "$sink_plugin" ]; then
  [ -f "$sink_plugin" ] || { echo "crash-harness: no sink plugin at $sink_plugin" >&2; exit 2; }
  sink_plugin="$(cd "$(dirname "$sink_plugin")" && pwd)/$(basename "$sink_plugin")"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/weir-crash.XXXXXX")" || exit 2
verdict_ok=0
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2> /dev/null
  if [ "$verdict_ok" = 1 ] || [ "$keep" = 0 ]; then
    rm -rf "$work"
  else
    echo "crash-harness: kept $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
die() { echo "FAIL: $*"; exit 1; }

# Bounded helpers: every command of weir here has a time limit.
q_timeout=300
wq() { timeout -s KILL "$q_timeout" "$weir" "$@"; }

# -- input: generated transactions, plus planted duplicates and malformed lines ----------------
t_start=$(now_ms)
echo "crash-harness: seed $seed, $events events, target $kills_target kills, dir $work"
timeout -s KILL 600 "$gen" --events "$events" --span-days "$span_days" --seed 7 \
  --disorder 0.02 --max-shift 60 --out "$work/raw.csv" || die "weir-gen failed"
# Every 10007th record comes again two lines later (a duplicate id: dedupe drops it) and every
# 50021st is followed by a malformed one (a dead letter).
awk 'NR == 1 { print; next }
     { print }
     held != "" && NR == held_at { print held; held = "" }
     (NR - 1) % 10007 == 0 { held = $0; held_at = NR + 2 }
     (NR - 1) % 50021 == 0 { print "bad" NR ",not-a-time,m001,1.00,EUR" }' \
  "$work/raw.csv" > "$work/in.csv" || die "awk failed"
rm -f "$work/raw.csv"

cat > "$work/pipeline.toml" <<'EOF'
# Written by scripts/crash-harness.sh.
commit_interval = "50ms"
batch_bytes = 262144

[[pipeline]]
name = "merchant_hourly"
partitions = 3

  [[pipeline.source]]
  name = "tx"
  path = "in.csv"

  [pipeline.fields]
  event_id = "tx_id"
  time = "ts"
  key = ["merchant"]
  measures = ["amount"]

  [pipeline.preprocess]
  required = ["merchant", "amount", "ts"]
  dedupe = true
  dedupe_horizon = "1h"

  [pipeline.window]
  kind = "tumbling"
  size = "1h"
  out_of_orderness = "30s"
  allowed_lateness = "0s"

  [pipeline.results]
  key_index = true
  change_feed = true

  [[pipeline.aggregate]]
  fn = "count"
  [[pipeline.aggregate]]
  fn = "sum"
  field = "amount"
  [[pipeline.aggregate]]
  fn = "min"
  field = "amount"
  [[pipeline.aggregate]]
  fn = "max"
  field = "amount"
  [[pipeline.aggregate]]
  fn = "avg"
  field = "amount"

[[pipeline]]
name = "currency_daily"
partitions = 2

  [[pipeline.source]]
  name = "tx"
  path = "in.csv"

  [pipeline.fields]
  event_id = "tx_id"
  time = "ts"
  key = ["currency"]
  measures = ["amount"]
  attributes = ["currency"]

  [pipeline.preprocess]
  dedupe = true
  dedupe_horizon = "1h"

  [pipeline.window]
  kind = "tumbling"
  size = "1d"
  out_of_orderness = "30s"

  [[pipeline.aggregate]]
  fn = "count"
  [[pipeline.aggregate]]
  fn = "sum"
  field = "amount"
EOF
pipelines="merchant_hourly currency_daily"
sink_out="$work/sink.out"
if [ -n "$sink_plugin" ]; then
  # The plugin first; the sink goes into merchant_hourly, before the second [[pipeline]].
  awk -v plugin="$sink_plugin" -v out="$sink_out" '
    NR == 1 { print "plugins = [\"" plugin "\"]" }
    /^\[\[pipeline\]\]/ && ++n == 2 {
      print "  [[pipeline.sink]]\n  name = \"file\"\n  kind = \"file\""
      print "  options = { path = \"" out "\" }\n"
    }
    { print }' "$work/pipeline.toml" > "$work/pipeline.sink.toml" || die "awk failed"
  mv "$work/pipeline.sink.toml" "$work/pipeline.toml"
fi
sink_rows=0 sink_differing=0
# The sink's file against a snapshot of the store it was delivered from: the same windows
# (key, count), each once; then the file goes, for the next store.
sink_check() { # snapshot-dir label
  [ -n "$sink_plugin" ] || return 0
  local d
  [ -f "$sink_out" ] || die "$2: the sink wrote no file"
  d=$(diff <(awk -F, 'NR > 1 { print $3, $4 }' "$1/q.merchant_hourly.csv" | sort) \
    <(awk 'NR > 1 { print $4, $5 }' "$sink_out" | sort) | grep -c '^[<>]')
  sink_rows=$(( sink_rows + $(wc -l < "$sink_out") - 1 ))
  sink_differing=$(( sink_differing + d ))
  if [ "$d" -gt 0 ]; then
    echo "  $2 sink: $d windows differ from the store's (key, count); first differences:"
    diff <(awk -F, 'NR > 1 { print $3, $4 }' "$1/q.merchant_hourly.csv" | sort) \
      <(awk 'NR > 1 { print $4, $5 }' "$sink_out" | sort) | head -10 | sed 's/^/    /'
  fi
  rm -f "$sink_out"
}
fault_points="lake.before_commit lake.during_commit lake.after_commit epoch.before_commit
  epoch.during_commit epoch.after_commit aggregator.mid_batch send.chunk send.batch
  send.contribution"
[ -n "$sink_plugin" ] && fault_points+=" sink.delivered"
read -r -a points <<< "$(echo $fault_points)"

# -- the failure-free reference ------------------------------------------------------------------
t0=$(now_ms)
WEIR_FAULT= timeout -s KILL 900 "$weir" run "$work/pipeline.toml" --store "$work/ref" \
  > "$work/ref.log" 2>&1 || { cat "$work/ref.log"; die "the reference run failed"; }
ref_ms=$(( $(now_ms) - t0 ))
t0=$(now_ms)
WEIR_FAULT= timeout -s KILL 300 "$weir" run "$work/pipeline.toml" --store "$work/ref" \
  > /dev/null 2>&1 || die "the no-op re-run of the reference failed"
noop_ms=$(( $(now_ms) - t0 ))
run_limit=$(( ref_ms * 20 / 1000 + 60 ))  # seconds any single run may take

# What a store holds, in comparable text: query csv per pipeline, dead letters, offsets.
snapshot() { # store outdir
  local s="$1" o="$2" p
  mkdir -p "$o"
  for p in $pipelines; do
    wq query --store "$s" --pipeline "$p" --format csv > "$o/q.$p.csv" \
      || die "weir query of $s failed"
  done
  # Lookups by key read merchant_hourly's key index (kept in the same commits): the rows of
  # the key in the full scan, in the same order.
  local k
  for k in $(awk -F, 'NR > 1 { print $3 }' "$o/q.merchant_hourly.csv" | sort -u | head -3); do
    wq query --store "$s" --pipeline merchant_hourly --key "$k" --format csv > "$o/key.csv" \
      || die "weir query --key of $s failed"
    cmp -s <(awk -F, -v k="$k" 'NR > 1 && $3 == k' "$o/q.merchant_hourly.csv") \
      <(tail -n +2 "$o/key.csv") || die "$s: the key index gives other rows for $k than the scan"
  done
  wq dead-letters --store "$s" --format csv > "$o/dead.csv" || die "weir dead-letters of $s failed"
  wq inspect --store "$s" > "$o/inspect.txt" || die "weir inspect of $s failed"
  grep -E '^pipeline |committed offset' "$o/inspect.txt" > "$o/offsets.txt"
}
snapshot "$work/ref" "$work/ref.out"
sink_check "$work/ref.out" reference
windows_ref=0
for p in $pipelines; do
  windows_ref=$(( windows_ref + $(wc -l < "$work/ref.out/q.$p.csv") - 1 ))
done
echo "crash-harness: reference: $ref_ms ms, $windows_ref windows, $(( $(wc -l < "$work/ref.out/dead.csv") - 1 )) dead letters; no-op re-run $noop_ms ms"

# -- comparison ----------------------------------------------------------------------------------
windows_compared=0 rows_differing=0 windows_lost=0 windows_extra=0 dup_events=0 lost_events=0
dead_differing=0 dead_dups=0 offsets_differing=0

compare() { # store label
  local s="$1" o="$work/cmp.$2" p r
  snapshot "$s" "$o"
  for p in $pipelines; do
    # Rows keyed by (window_start, window_end, key); the count column tells events counted twice
    # (more than the reference) from events lost (fewer).
    r=$(awk -F, '
      FNR == 1 { for (i = 1; i <= NF; ++i) if ($i == "count") c = i; next }
      NR == FNR { ref[$1 FS $2 FS $3] = $0; rc[$1 FS $2 FS $3] = $c; ++n; next }
      { k = $1 FS $2 FS $3
        if (k in seen) { ++dup_rows; dup += $c; next }
        seen[k] = 1
        if (!(k in ref)) { ++extra; dup += $c; next }
        if ($0 != ref[k]) {
          ++diff
          if ($c > rc[k]) dup += $c - rc[k]; else lost += rc[k] - $c
        } }
      END {
        for (k in ref) if (!(k in seen)) { ++missing; lost += rc[k] }
        printf "%d %d %d %d %d %d\n", n, diff + 0, missing + 0, extra + dup_rows, dup + 0, lost + 0
      }' "$work/ref.out/q.$p.csv" "$o/q.$p.csv")
    read -r n d m e du lo <<< "$r"
    cmp -s <(head -1 "$work/ref.out/q.$p.csv") <(head -1 "$o/q.$p.csv") || d=$(( d + 1 ))
    windows_compared=$(( windows_compared + n ))
    rows_differing=$(( rows_differing + d ))
    windows_lost=$(( windows_lost + m ))
    windows_extra=$(( windows_extra + e ))
    dup_events=$(( dup_events + du ))
    lost_events=$(( lost_events + lo ))
    if [ "$d" -gt 0 ] || [ "$m" -gt 0 ] || [ "$e" -gt 0 ]; then
      echo "  $2 $p: $d rows differ, $m windows missing, $e extra; first differences:"
      diff "$work/ref.out/q.$p.csv" "$o/q.$p.csv" | head -10 | sed 's/^/    /'
    fi
  done
  # Dead letters: the same list in the same order; a (pipeline, source, offset) twice is a
  # duplicate.
  d=$(diff "$work/ref.out/dead.csv" "$o/dead.csv" | grep -c '^[<>]')
  dead_differing=$(( dead_differing + d ))
  du=$(awk -F, 'NR > 1 { k = $1 FS $2 FS $3; if (k in s) ++n; s[k] = 1 } END { print n + 0 }' \
    "$o/dead.csv")
  dead_dups=$(( dead_dups + du ))
  if [ "$d" -gt 0 ]; then
    echo "  $2 dead letters: $d lines differ; first differences:"
    diff "$work/ref.out/dead.csv" "$o/dead.csv" | head -10 | sed 's/^/    /'
  fi
  d=$(diff "$work/ref.out/offsets.txt" "$o/offsets.txt" | grep -c '^[<>]')
  offsets_differing=$(( offsets_differing + d ))
  if [ "$d" -gt 0 ]; then
    echo "  $2 committed offsets differ:"
    diff "$work/ref.out/offsets.txt" "$o/offsets.txt" | sed 's/^/    /'
  fi
}

# Runs weir to completion on a store (it must exit 0).
complete() { # store label
  WEIR_FAULT= timeout -s KILL "$run_limit" "$weir" run "$work/pipeline.toml" --store "$1" \
    > "$work/final.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { tail -20 "$work/final.log"; die "$2: the completing run exited with $rc"; }
}

# -- the kill loop ------------------------------------------------------------------------------
# A random kill lands after a delay drawn from [10 ms, dmax]; dmax starts so that a run makes
# about 1.5/K of the input of progress (delay - startup) and is then steered by note_progress.
# When a run finishes by itself before the target is reached, that store is completed and
# compared (a round) and a new round starts on a fresh store with shorter delays.
dmax=$(( noop_ms + ref_ms * 3 / (2 * (kills_target > 0 ? kills_target : 1)) ))
[ "$dmax" -lt 30 ] && dmax=30
input_bytes=$(wc -c < "$work/in.csv")
at_list=""
dmax_cap=$(( noop_ms + ref_ms * 3 ))
# After a kill: where the store stood (committed share of the input of merchant_hourly, in %),
# and the random delays steered so that the kills spread over the input: longer when the
# store is behind an even spread over the target, shorter when it is ahead.
# Also notes whether a next run will land new input in the lake (lake_open=1), or whether the
# lake already holds all the rest (then a next run only replays, and the lake points are not
# reached).
lake_open=1
note_progress() {
  local off pc want rest
  read -r off rest <<< "$(wq inspect --store "$store" 2> /dev/null | awk -v batch=262144 -v in_bytes="$input_bytes" '
    /^lake/ { lake = 1 } /^pipeline / { p = $2; lake = 0; ++np }
    lake && $1 == "chunks" { landed = $2 * batch }
    /committed offset/ { committed += $NF; if (p == "merchant_hourly") mine = $NF }
    END { print mine + 0, 2 * in_bytes - committed - landed }')"
  lake_open=$(( ${rest:-1} > 2 * 262144 ? 1 : 0 ))
  pc=$(( ${off:-0} * 100 / input_bytes ))
  at_list+=" $pc"
  want=$(( 90 * kills / kills_target ))
  if [ "$pc" -lt "$want" ]; then
    dmax=$(( dmax * 5 / 4 ))
    [ "$dmax" -gt "$dmax_cap" ] && dmax=$dmax_cap
  elif [ "$pc" -gt $(( want + 10 )) ]; then
    dmax=$(( dmax * 4 / 5 ))
  fi
  # Never so long that a run would likely finish what is left of the input.
  local left=$(( noop_ms + (100 - pc) * ref_ms * 3 / 400 ))
  [ "$dmax" -gt "$left" ] && dmax=$left
  [ "$dmax" -lt 30 ] && dmax=30
}
kills=0 named=0 iter=0 rounds=1 finished_early=0
store="$work/store.1"
declare -A named_by_point=()
while [ "$kills" -lt "$kills_target" ]; do
  iter=$(( iter + 1 ))
  [ "$iter" -gt $(( kills_target * 20 + 100 )) ] && die "no progress: $iter runs for $kills kills"
  log="$work/run.log"
  if [ "$named_every" -gt 0 ] && [ $(( iter % named_every )) -eq 0 ]; then
    point=${points[$(( RANDOM % ${#points[@]} ))]}
    # The lake points are reached only when new input is landed; epochs are few near the end.
    while [ "$lake_open" = 0 ] && [ "${point#lake.}" != "$point" ]; do
      point=${points[$(( RANDOM % ${#points[@]} ))]}
    done
    nth=$(( 1 + RANDOM % 3 ))
    [ "${point#epoch.}" != "$point" ] && [ "${at_list##* }" -ge 70 ] 2> /dev/null && nth=1
    # (The braces with 2>/dev/null keep bash's "Killed" notice off the output.)
    { WEIR_FAULT="$point@$nth" timeout -s KILL "$run_limit" "$weir" run "$work/pipeline.toml" \
      --store "$store" > "$log" 2>&1; } 2> /dev/null
    rc=$?
    if [ $rc -eq 137 ] && grep -q "injected fault at $point (crash)" "$log"; then
      kills=$(( kills + 1 ))
      named=$(( named + 1 ))
      named_by_point[$point]=$(( ${named_by_point[$point]:-0} + 1 ))
      note_progress
      continue
    fi
    what="WEIR_FAULT=$point@$nth"
  else
    delay=$(( 10 + (RANDOM * 32768 + RANDOM) % (dmax - 9) ))
    WEIR_FAULT= "$weir" run "$work/pipeline.toml" --store "$store" > "$log" 2>&1 &
    pid=$!
    sleep "$(( delay / 1000 )).$(printf '%03d' $(( delay % 1000 )))"
    kill -KILL "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    rc=$?
    pid=""
    if [ $rc -eq 137 ]; then
      kills=$(( kills + 1 ))
      note_progress
      continue
    fi
    what="a kill after $delay ms"
  fi
  if [ $rc -ne 0 ]; then
    tail -20 "$log"
    die "round $rounds: weir run ($what) exited with $rc instead of being killed or finishing"
  fi
  # The run finished by itself: this store is complete. Compare it and go on on a fresh one.
  finished_early=$(( finished_early + 1 ))
  echo "crash-harness: round $rounds: the run with $what finished by itself after $kills kills"
  complete "$store" "round $rounds"
  compare "$store" "round$rounds"
  sink_check "$work/cmp.round$rounds" "round $rounds"
  rm -rf "$store"
  rounds=$(( rounds + 1 ))
  store="$work/store.$rounds"
  dmax=$(( dmax * 2 / 3 ))
  [ "$dmax" -lt 30 ] && dmax=30
done
complete "$store" "round $rounds"
compare "$store" "round$rounds"
sink_check "$work/cmp.round$rounds" "round $rounds"
elapsed_ms=$(( $(now_ms) - t_start ))

# -- figures and verdict --------------------------------------------------------------------------
named_list=""
for p in "${!named_by_point[@]}"; do named_list+=" $p=${named_by_point[$p]}"; done
echo "crash-harness figures (seed $seed):"
echo "  events                 $events"
echo "  kills                  $kills (at named points $named, random $(( kills - named )))"
echo "  named points hit      ${named_list:- none}"
echo "  runs                   $iter (+ $rounds completing runs; rounds $rounds, finished early $finished_early)"
echo "  reference run          $ref_ms ms"
echo "  committed at each kill (% of input):${at_list:- none}"
echo "  windows compared       $windows_compared"
echo "  rows differing         $rows_differing"
echo "  windows lost           $windows_lost"
echo "  windows extra          $windows_extra"
echo "  events counted twice   $dup_events"
echo "  events lost            $lost_events"
echo "  dead letters differing $dead_differing (duplicates $dead_dups)"
echo "  offsets differing      $offsets_differing"
[ -n "$sink_plugin" ] && echo "  sink rows compared     $sink_rows (differing $sink_differing)"
echo "  elapsed                $(( elapsed_ms / 1000 )).$(printf '%03d' $(( elapsed_ms % 1000 ))) s"
bad=$(( rows_differing + windows_lost + windows_extra + dup_events + lost_events + dead_differing + dead_dups + offsets_differing + sink_differing ))
if [ "$bad" -eq 0 ] && [ "$kills" -ge "$kills_target" ]; then
  verdict_ok=1
  echo "PASS: $kills kills ($named at named points), $windows_compared windows identical to the failure-free run, 0 duplicates, 0 losses"
  exit 0
fi
echo "FAIL: $rows_differing rows differ, $windows_lost windows lost, $windows_extra extra, $dup_events events counted twice, $lost_events lost, $dead_differing dead letters, $offsets_differing offsets and $sink_differing sink windows differ after $kills kills (seed $seed)"
exit 1
