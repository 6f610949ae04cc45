#!/usr/bin/env bash
# Cluster benchmark: the same input through `weir run` on one node and through a three-node
# cluster of `weir node` processes on loopback (docs/cluster.md). Prints, as medians of --runs:
#   - wall time and events/s of each, and the cluster's overhead against one node;
#   - bytes on the wire per event: what the loopback interface carried during the cluster run
#     (TX bytes of `lo` in /proc/net/dev, so anything else on loopback counts too: run it on a
#     quiet machine), divided by the events;
#   - recovery time: node c is SIGKILLed after the cluster's third commit; the time from the
#     kill to the first commit after it (from node a's log, millisecond timestamps).
#
# With --own-ingest, node b runs the ingest with its lake (ingest on its own node) and a only
# coordinates and aggregates, so the raw input crosses the wire too.
#
#   bench/cluster-bench.sh [--events N] [--keys K] [--runs R] [--bin DIR] [--own-ingest] [--keep]
#
# Needs weir and weir-gen (build/bin). Bounded in time; the directory is removed at the end.
set -uo pipefail

events=4000000
keys=300
runs=3
keep=0
own_ingest=0
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/build/bin"
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --own-ingest) own_ingest=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
weir="$bin/weir"
[ -x "$weir" ] && [ -x "$bin/weir-gen" ] || { echo "no weir or weir-gen in $bin" >&2; exit 2; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-cluster-bench.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "$keep" = 1 ] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir" || exit 2

"$bin/weir-gen" --events "$events" --keys "$keys" --span-days 60 --out tx.csv 2>/dev/null
sed -e 's/^name = "merchant_hourly"/partitions = 4\nname = "merchant_hourly"/' \
    -e 's/^  path = "transactions.csv"/  path = "tx.csv"/' \
    "$here/examples/transactions/pipeline.toml" > pipeline.toml
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > secret
chmod 600 secret
port() { echo $(( 20000 + (RANDOM % 12000) )); } # below the ephemeral range
{
  printf '[cluster]\nname = "bench"\npipeline = "pipeline.toml"\nsecret_file = "secret"\n'
  printf 'heartbeat = "200ms"\nfailure_timeout = "1s"\n[cluster.tls]\ninsecure = true\n'
  for n in a b c; do
    roles='["aggregate"]'
    [ "$n" = a ] && roles='["coordinator", "ingest", "aggregate"]'
    if [ "$own_ingest" = 1 ]; then
      [ "$n" = a ] && roles='["coordinator", "aggregate"]'
      [ "$n" = b ] && roles='["ingest", "aggregate"]'
    fi
    printf '[[node]]\nname = "%s"\naddress = "127.0.0.1:%s"\nstore = "%s"\nroles = %s\n' \
      "$n" "$(port)" "$n" "$roles"
  done
} > cluster.toml

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
lo_tx() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
wait_log() { # file text seconds
  local i
  for ((i = 0; i < $3 * 50; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.02; done
  return 1
}
start_node() { # name
  "$weir" node --cluster cluster.toml --name "$1" --log-level info > "$1.log" 2>&1 &
  pids+=($!) # weir's own pid, so that a signal reaches it
  wait_log "$1.log" "listens on" 10 || { echo "node $1 did not start" >&2; exit 2; }
}
stop_nodes() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  pids=()
}

single=() cluster=() wire=() recovery=()
for ((r = 1; r <= runs; r++)); do
  rm -rf single a b c
  t0=$(now)
  timeout 600 "$weir" run pipeline.toml --store single --final --quiet || exit 1
  single+=("$(calc "$(now) - $t0")")

  start_node b
  start_node c
  tx0=$(lo_tx)
  t0=$(now)
  timeout 600 "$weir" node --cluster cluster.toml --name a --final --quiet > a.log 2>&1 || {
    echo "cluster run failed" >&2; tail a.log >&2; exit 1; }
  cluster+=("$(calc "$(now) - $t0")")
  wire+=("$(calc "($(lo_tx) - $tx0) / $events")")
  stop_nodes

  rm -rf a b # b's lake, when it runs ingest, belongs to the warehouse of a's store
  start_node b
  start_node c
  timeout 600 "$weir" node --cluster cluster.toml --name a --final --log-level info > a.log 2>&1 &
  apid=$!
  wait_log a.log "epoch 3 committed" 60 || { echo "no third commit" >&2; exit 1; }
  kill -KILL "${pids[1]}"
  killed=$(now)
  wait "$apid" || { echo "cluster run after the kill failed" >&2; tail a.log >&2; exit 1; }
  # The first commit of the generation that follows the kill (an epoch already committing when
  # the node died may still end after it).
  first=$(awk '/next generation is placed/ { restarted = 1 }
      restarted && / committed: / {
      split($2, t, "[.\\]]"); cmd = "date -d \"" substr($1, 2) " " t[1] "\" +%s"
      cmd | getline s; close(cmd); print s "." t[2]; exit }' a.log)
  recovery+=("$(calc "$first - $killed")")
  stop_nodes
done

s=$(printf '%s\n' "${single[@]}" | median)
c=$(printf '%s\n' "${cluster[@]}" | median)
w=$(printf '%s\n' "${wire[@]}" | median)
k=$(printf '%s\n' "${recovery[@]}" | median)
printf 'events                 %d (%d keys, 4 partitions, 3 nodes on loopback%s)\n' "$events" \
  "$keys" "$([ "$own_ingest" = 1 ] && echo ', ingest on node b')"
printf 'one node   (weir run)  %.2f s   %.0f events/s   runs: %s\n' "$s" \
  "$(calc "$events / $s")" "${single[*]}"
printf 'cluster    (weir node) %.2f s   %.0f events/s   runs: %s\n' "$c" \
  "$(calc "$events / $c")" "${cluster[*]}"
printf 'overhead               %.1f %%\n' "$(calc "($c / $s - 1) * 100")"
printf 'bytes on the wire      %.1f per event\n' "$w"
printf 'recovery after a kill  %.3f s to the first new commit   runs: %s\n' "$k" "${recovery[*]}"
