#!/usr/bin/env bash
# Chaos test of a local Weir cluster (docs/cluster.md, "Local clusters and chaos testing"): starts
# N nodes on loopback with scripts/cluster, runs the coordinating node n1 on a generated input and,
# while it runs, SIGKILLs and SIGSTOPs random nodes at random moments (a stopped node is continued
# 0.5 to 3 s later, so sometimes after the cluster's failure_timeout of 1 s and sometimes not);
# killed nodes are started again after a short pause, n1 with the same command (it resumes from
# its store). When n1 has finished (exit 0) after at least K kills, its store must equal a
# single-node `weir run --final` of the same input: results of every pipeline and dead letters.
# Prints the figures and a one-line verdict (PASS/FAIL); exits 0 on PASS, 1 on FAIL (results
# differ, a node crashed, n1 failed or hung), 2 on a usage or setup error.
#
#   scripts/cluster-chaos.sh [--nodes N] [--events E] [--kills K] [--bin DIR] [--seed S]
#                            [--ingest NODE] [--keep]
#
# Bash and Debian base tools only; loopback only; every wait is bounded in time; the nodes are
# stopped and the temporary directory removed at the end (--keep keeps it on FAIL).
set -uo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/cluster-workload.sh
. "$here/scripts/cluster-workload.sh"
bin="${WEIR_BIN_DIR:-$here/build/bin}"
nodes=3 events=8000000 kills_target=24 keep=0 ingest=n1
seed=$(( ($(date +%s) + $$) % 32768 ))
gap_min=300 gap_max=1200    # ms between two kills

usage() {
  cat <<EOF
usage: $0 [options]
  --nodes N    nodes in the cluster (default $nodes; n1 coordinates, all aggregate)
  --events E   events to generate (default $events)
  --kills K    kills (SIGKILL or SIGSTOP) to reach before n1 may finish (default $kills_target)
  --bin DIR    directory with weir and weir-gen (default \$WEIR_BIN_DIR or build/bin)
  --seed S     seed of the random schedule (default: from the clock, printed)
  --ingest N   the node that runs ingest with its lake (default n1; n2 puts it on its own node,
               which is killed and stopped like the others)
  --keep       keep the temporary directory when the verdict is FAIL
EOF
}

while [ $# -gt 0 ]; do
  opt="$1"
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --keep) keep=1; shift; continue ;;
    --nodes|--events|--kills|--bin|--seed|--ingest)
      [ $# -ge 2 ] || { echo "cluster-chaos: $opt needs a value" >&2; exit 2; } ;;
    *) echo "cluster-chaos: unknown option $opt" >&2; usage >&2; exit 2 ;;
  esac
  case "$opt" in
    --nodes) nodes="$2" ;;
    --events) events="$2" ;;
    --kills) kills_target="$2" ;;
    --bin) bin="$2" ;;
    --seed) seed="$2" ;;
    --ingest) ingest="$2" ;;
  esac
  shift 2
done
for n in "$nodes" "$events" "$kills_target" "$seed"; do
  case "$n" in ''|*[!0-9]*) echo "cluster-chaos: not a whole number: '$n'" >&2; exit 2 ;; esac
done
[ "$nodes" -ge 1 ] || { echo "cluster-chaos: --nodes must be 1 or more" >&2; exit 2; }
weir="$bin/weir"
gen="$bin/weir-gen"
cluster="$here/scripts/cluster"
if [ ! -x "$weir" ] || [ ! -x "$gen" ]; then
  echo "cluster-chaos: no weir and weir-gen in $bin (build first, or give --bin)" >&2
  exit 2
fi
RANDOM=$seed

work="$(mktemp -d "${TMPDIR:-/tmp}/weir-chaos.XXXXXX")" || exit 2
dir="$work/cluster"
verdict_ok=0
cpid=""
# Every node stopped (n1 here, the others by scripts/cluster down); the directory removed unless
# the verdict is FAIL and --keep was given.
finish() {
  if [ -n "$cpid" ]; then kill -CONT "$cpid"; kill -KILL "$cpid"; fi 2> /dev/null
  [ -f "$dir/cluster.toml" ] && "$cluster" down --dir "$dir" > /dev/null 2>&1
  if [ "$verdict_ok" = 0 ] && [ "$keep" = 1 ]; then
    echo "cluster-chaos: kept $work (seed $seed)" >&2
    return
  fi
  rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }
setup_error() { echo "cluster-chaos: $*" >&2; exit 2; }
exec 3>&1 # the verdict goes to the first stdout, also from functions whose output is redirected
fail() {
  echo "FAIL: $* (seed $seed, ${kills:-0} kills)" >&3
  exit 1
}
rand_ms() { echo $(( $1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1) )); } # min max

# -- input, pipelines and the single-node reference --------------------------------------------
t_start=$(now_ms)
echo "cluster-chaos: seed $seed, $nodes nodes, $events events, target $kills_target kills, dir $work"
# Transactions over 60 days, a few out of order; a malformed line after every 40009th record
# (a dead letter) and every 30011th record once more (a duplicate id: dedupe drops it).
workload_input "$gen" "$events" "$work/in.csv" || setup_error "weir-gen failed"

workload_config scripts/cluster-chaos.sh > "$work/pipeline.toml"

t0=$(now_ms)
timeout -s KILL 1800 "$weir" run "$work/pipeline.toml" --store "$work/ref" --final \
  > "$work/ref.log" 2>&1 || { tail -5 "$work/ref.log"; setup_error "the reference run failed"; }
ref_ms=$(( $(now_ms) - t0 ))
run_limit=$(( ref_ms * 30 / 1000 + 120 ))  # seconds a round of the chaotic run may take

# A store in comparable text: every pipeline's results and the dead letters, sorted.
workload_text "$work/ref" "$work/ref.txt"
windows_ref=$(grep -vc -e '^==' -e '^window_start,' -e '^pipeline,source,' "$work/ref.txt")
echo "cluster-chaos: reference: $(secs "$ref_ms") s, $windows_ref result rows and dead letters"

# -- the cluster ----------------------------------------------------------------------------------
"$cluster" up "$nodes" --dir "$dir" --pipeline "$work/pipeline.toml" --bin "$bin" --ingest "$ingest" \
  > "$work/up.log" 2>&1 || { cat "$work/up.log"; setup_error "scripts/cluster up failed"; }
names=$(seq -f 'n%g' 1 "$nodes")
declare -A state=() due=() by=()
for n in $names; do state[$n]=running; due[$n]=0; done

start_coordinator() {
  "$weir" node --cluster "$dir/cluster.toml" --name n1 --final --log-level info \
    < /dev/null >> "$dir/n1.out" 2>> "$dir/n1.log" &
  cpid=$!
  echo "$cpid" > "$dir/n1.pid"
  coordinator_starts=$(( coordinator_starts + 1 ))
}

# Whether the process is there and neither a zombie nor gone.
alive() { # pid
  local s
  s=$(awk '{ print $3 }' "/proc/$1/stat" 2> /dev/null)
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}

# The kill of one node: SIGKILL (started again later) or SIGSTOP (continued later).
strike() { # node
  local n="$1" p sig rc
  p=$(cat "$dir/$n.pid")
  if [ $(( RANDOM % 2 )) = 0 ]; then
    sig=KILL
    kill -KILL "$p" 2> /dev/null
    state[$n]=dead
    if [ "$n" = n1 ]; then
      wait "$cpid" 2> /dev/null
      rc=$?
      [ "$rc" = 137 ] || [ "$rc" = 0 ] || fail "n1 exited with $rc before it was killed"
      cpid=""
      due[$n]=$(( $(now_ms) + $(rand_ms 200 1000) ))
    else
      due[$n]=$(( $(now_ms) + $(rand_ms 200 1500) ))
    fi
  else
    sig=STOP
    kill -STOP "$p" 2> /dev/null
    state[$n]=stopped
    due[$n]=$(( $(now_ms) + $(rand_ms 500 3000) ))
  fi
  kills=$(( kills + 1 ))
  by["$sig $n"]=$(( ${by["$sig $n"]:-0} + 1 ))
  echo "$(( $(now_ms) - t_run )) ms: SIG$sig $n" >> "$work/schedule.log"
}

# Continues stopped nodes and starts killed ones whose time has come.
revive() { # now
  local n
  for n in $names; do
    [ "${state[$n]}" = running ] || [ "$1" -lt "${due[$n]}" ] && continue
    if [ "${state[$n]}" = stopped ]; then
      kill -CONT "$(cat "$dir/$n.pid")" 2> /dev/null
    elif [ "$n" = n1 ]; then
      start_coordinator
    else
      "$cluster" start "$n" --dir "$dir" --bin "$bin" >> "$work/up.log" 2>&1 \
        || fail "node $n did not start again: $(tail -3 "$dir/$n.log")"
    fi
    state[$n]=running
  done
}

# A node that is gone without being killed crashed.
check_nodes() {
  local n
  for n in $names; do
    [ "$n" = n1 ] || [ "${state[$n]}" != running ] && continue
    alive "$(cat "$dir/$n.pid")" || fail "node $n died by itself: $(tail -3 "$dir/$n.log")"
  done
}

# n1 has ended: it must have exited 0, and its store must equal the reference. True when the
# kills have reached the target; otherwise starts n1 again on a fresh store (a new round).
end_round() {
  local rc
  wait "$cpid"
  rc=$?
  cpid=""
  [ "$rc" = 0 ] || fail "n1 exited with $rc: $(tail -3 "$dir/n1.log")"
  workload_text "$dir/n1" "$work/round$rounds.txt"
  compared=$(( compared + windows_ref ))
  if ! cmp -s "$work/ref.txt" "$work/round$rounds.txt"; then
    differing=$(( differing + $(diff "$work/ref.txt" "$work/round$rounds.txt" | grep -c '^[<>]') ))
    echo "cluster-chaos: round $rounds differs from the reference; first differences:"
    diff "$work/ref.txt" "$work/round$rounds.txt" | head -10 | sed 's/^/  /'
  fi
  [ "$kills" -ge "$kills_target" ] && return 0
  echo "cluster-chaos: round $rounds finished after $kills kills; a new round on a fresh store"
  rm -rf "$dir/n1"
  rounds=$(( rounds + 1 ))
  round_start=$(now_ms)
  start_coordinator
  return 1
}

# -- the chaotic run ------------------------------------------------------------------------------
kills=0 rounds=1 coordinator_starts=0 compared=0 differing=0
t_run=$(now_ms)
round_start=$t_run
next_kill=$(( t_run + $(rand_ms 500 1500) ))
start_coordinator
while :; do
  now=$(now_ms)
  [ $(( now - round_start )) -gt $(( run_limit * 1000 )) ] \
    && fail "n1 did not finish round $rounds within $run_limit s: $(tail -3 "$dir/n1.log")"
  if [ "${state[n1]}" = running ] && ! alive "$cpid"; then
    end_round && break
  fi
  check_nodes
  revive "$now"
  if [ "$kills" -lt "$kills_target" ] && [ "$now" -ge "$next_kill" ]; then
    up=()
    for n in $names; do [ "${state[$n]}" = running ] && up+=("$n"); done
    [ ${#up[@]} -gt 0 ] && strike "${up[$(( RANDOM % ${#up[@]} ))]}"
    next_kill=$(( now + $(rand_ms "$gap_min" "$gap_max") ))
  fi
  sleep 0.05
done
elapsed_ms=$(( $(now_ms) - t_start ))
run_ms=$(( $(now_ms) - t_run ))

# -- figures and verdict --------------------------------------------------------------------------
generations=$(grep -c -e 'the next generation is placed' -e 'restart [0-9]* of' "$dir/n1.log")
lost=$(grep -c 'is not available' "$dir/n1.log")
echo "cluster-chaos figures (seed $seed):"
echo "  nodes, events          $nodes, $events"
echo "  kills                  $kills"
for k in $(printf '%s\n' "${!by[@]}" | sort | tr ' ' '_'); do
  printf '    %-20s %d\n' "${k/_/ }" "${by[${k/_/ }]}"
done
echo "  n1 started             $coordinator_starts times, in $rounds round(s)"
echo "  generation restarts    $generations (n1's log), node not available $lost times"
echo "  rows compared          $compared (results and dead letters), differing $differing"
echo "  reference run          $(secs "$ref_ms") s"
echo "  chaotic run            $(secs "$run_ms") s"
echo "  elapsed                $(secs "$elapsed_ms") s"
[ "$differing" -eq 0 ] || fail "$differing rows differ from the single-node run"
verdict_ok=1
echo "PASS: $kills kills on $nodes nodes (seed $seed), n1 started $coordinator_starts times," \
  "$compared rows identical to the single-node run"
