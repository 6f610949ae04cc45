#!/usr/bin/env bash
# Network partitions in a Weir cluster (docs/cluster.md, "Local clusters and chaos testing"): puts
# every node in its own Linux network namespace, wired by a veth pair to a bridge in a namespace
# of its own (nothing touches the host's interfaces), with TLS certificates made by the guide's
# openssl commands. Node a coordinates and aggregates, node b runs ingest with its lake and
# aggregates (--ingest-on-coordinator: a ingests too), the others aggregate. While a runs the
# pipelines with --final, links are cut at random moments: a node's link goes down for 0.5 to 3 s
# (longer or shorter than the failure_timeout of 1 s), then comes back. Nodes must never exit by
# themselves, a must finish with exit 0, and its store must equal a single-node
# `weir run --final` of the same input: results of every pipeline and dead letters.
# Prints the cuts, the figures and a one-line verdict (PASS/FAIL); exits 0 on PASS, 1 on FAIL, 2 on
# a usage or setup error (not root, no `ip`, no openssl, namespaces refused).
#
#   scripts/cluster-partition.sh [--nodes N] [--events E] [--cuts K] [--subnet A.B.C.0/24]
#                                [--bin DIR] [--seed S] [--ingest-on-coordinator] [--keep]
#
# Needs root, iproute2 (ip) and openssl; otherwise bash and Debian base tools. Every wait is
# bounded; a trap on EXIT, INT and TERM kills every node and deletes every namespace (and with
# them the veth pairs and the bridge), and removes the temporary directory (--keep keeps it on
# FAIL).
set -uo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/cluster-workload.sh
. "$here/scripts/cluster-workload.sh"
bin="${WEIR_BIN_DIR:-$here/build/bin}"
guide="$here/docs/cluster.md"
nodes=3 events=6000000 cuts_target=12 keep=0 subnet="10.200.0.0/24" ingest_on_a=0
seed=$(( ($(date +%s) + $$) % 32768 ))
port=7700          # every node listens on it, each in its own namespace
cut_min=500 cut_max=3000 gap_min=200 gap_max=1000    # ms: a cut, and between two cuts
listen_limit=15    # seconds a node may take to listen
stop_limit=10      # seconds between SIGTERM and SIGKILL
finish_limit=300   # seconds a may take after the last cut

usage() {
  cat <<EOF
usage: $0 [options]
  --nodes N     nodes in the cluster, 2 to 26, named a, b, c, ... (default $nodes)
  --events E    events to generate (default $events)
  --cuts K      link cuts to reach before a may finish (default $cuts_target)
  --subnet NET  the private network, a /24 (default $subnet; node i gets address .i)
  --bin DIR     directory with weir and weir-gen (default \$WEIR_BIN_DIR or build/bin)
  --seed S      seed of the random schedule (default: from the clock, printed)
  --ingest-on-coordinator
                node a runs ingest with its lake (default: node b, ingest on its own node)
  --keep        keep the temporary directory when the verdict is FAIL
Needs root and iproute2: every node runs in a network namespace of its own.
EOF
}

setup_error() { echo "cluster-partition: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  opt="$1"
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --keep) keep=1; shift; continue ;;
    --ingest-on-coordinator) ingest_on_a=1; shift; continue ;;
    --nodes|--events|--cuts|--subnet|--bin|--seed)
      [ $# -ge 2 ] || setup_error "$opt needs a value" ;;
    *) echo "cluster-partition: unknown option $opt" >&2; usage >&2; exit 2 ;;
  esac
  case "$opt" in
    --nodes) nodes="$2" ;;
    --events) events="$2" ;;
    --cuts) cuts_target="$2" ;;
    --subnet) subnet="$2" ;;
    --bin) bin="$2" ;;
    --seed) seed="$2" ;;
  esac
  shift 2
done
for n in "$nodes" "$events" "$cuts_target" "$seed"; do
  case "$n" in ''|*[!0-9]*) setup_error "not a whole number: '$n'" ;; esac
done
[ "$nodes" -ge 2 ] && [ "$nodes" -le 26 ] || setup_error "--nodes must be 2 to 26"
[[ "$subnet" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] \
  && [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] \
  && [ "${BASH_REMATCH[3]}" -le 255 ] || setup_error "--subnet must be A.B.C.0/24: '$subnet'"
net="${subnet%.0/24}"
weir="$bin/weir"
gen="$bin/weir-gen"
[ -x "$weir" ] && [ -x "$gen" ] \
  || setup_error "no weir and weir-gen in $bin (build first, or give --bin)"
[ "$(id -u)" = 0 ] || setup_error "network namespaces need root (run as root, e.g. with sudo)"
command -v ip > /dev/null || setup_error "no 'ip' command (install iproute2)"
command -v openssl > /dev/null || setup_error "no 'openssl' command (the certificates need it)"
[ -f "$guide" ] || setup_error "$guide not found (its openssl commands make the certificates)"
RANDOM=$seed

names=()
for i in $(seq 1 "$nodes"); do names+=("$(printf "\\x$(printf %x $(( 96 + i )))")"); done
ingest=b
[ "$ingest_on_a" = 1 ] && ingest=a
prefix="weirpart$$"   # namespaces: PREFIX-br (the bridge) and PREFIX-NODE
bridge_ns="$prefix-br"

cut_node="" cut_how=""   # the cut in progress
work="$(mktemp -d "${TMPDIR:-/tmp}/weir-partition.XXXXXX")" || exit 2
verdict_ok=0
made_ns=()
declare -A pid=() addr=()

# Whether the process is there and neither a zombie nor gone.
alive() { # pid
  local s
  s=$(awk '{ print $3 }' "/proc/$1/stat" 2> /dev/null)
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}

# SIGTERM to every node still there, SIGKILL after stop_limit s; then every process left in one
# of our namespaces is killed and every namespace deleted, which deletes its veth ends and the
# bridge. The directory is removed unless the verdict is FAIL and --keep was given.
# SIGTERM to the nodes named, then up to stop_limit s for them to end.
term_and_wait() { # node...
  local n t left
  for n in "$@"; do kill -TERM "${pid[$n]}" 2> /dev/null; done
  for t in $(seq 1 $(( stop_limit * 10 ))); do
    left=0
    for n in "$@"; do alive "${pid[$n]}" && left=1; done
    [ "$left" = 0 ] && return
    sleep 0.1
  done
}

finish() {
  local n ns p
  [ "$BASHPID" = "$$" ] || return # a subshell that caught a signal before it reset its traps
  # Links up first: a node whose peer is cut off may not end before it can reach it again.
  if [ -n "$cut_node" ]; then
    ip -n "$bridge_ns" link set dev "port-$cut_node" up
    ip -n "$prefix-$cut_node" link set eth0 up
  fi 2> /dev/null
  term_and_wait "${!pid[@]}"
  for n in "${!pid[@]}"; do
    alive "${pid[$n]}" || continue
    echo "cluster-partition: node $n did not end within $stop_limit s of SIGTERM: SIGKILL" >&2
    kill -KILL "${pid[$n]}" 2> /dev/null
  done
  wait 2> /dev/null
  for ns in "${made_ns[@]}"; do
    for p in $(ip netns pids "$ns" 2> /dev/null); do kill -KILL "$p" 2> /dev/null; done
    ip netns del "$ns" 2> /dev/null
  done
  if [ "$verdict_ok" = 0 ] && [ "$keep" = 1 ]; then
    echo "cluster-partition: kept $work (seed $seed)" >&2
    return
  fi
  rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }
exec 3>&1 # the verdict goes to the first stdout, also from functions whose output is redirected
fail() {
  echo "FAIL: $* (seed $seed, ${cuts:-0} cuts)" >&3
  exit 1
}
# A random number of ms from min to max in r_ms (not echoed: a $(...) subshell would draw from a
# reseeded RANDOM, and the schedule would not follow --seed).
rand_ms() { r_ms=$(( $1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1) )); } # min max

# -- the network ----------------------------------------------------------------------------------
t_start=$(now_ms)
echo "cluster-partition: seed $seed, $nodes nodes (ingest on $ingest), $events events," \
  "target $cuts_target cuts, $subnet, dir $work"

add_ns() { # name
  ip netns add "$1" || setup_error "ip netns add $1 failed"
  made_ns+=("$1")
  ip -n "$1" link set lo up || setup_error "cannot set lo up in $1"
}

# The bridge in its own namespace; for every node a namespace with eth0 (its address), whose veth
# peer is the bridge's port port-NODE. The pair is made inside the namespaces, never on the host.
make_network() {
  local i n
  add_ns "$bridge_ns"
  ip -n "$bridge_ns" link add br0 type bridge && ip -n "$bridge_ns" link set br0 up \
    || setup_error "cannot make the bridge in $bridge_ns"
  for i in "${!names[@]}"; do
    n="${names[$i]}"
    addr[$n]="$net.$(( i + 1 ))"
    add_ns "$prefix-$n"
    ip -n "$prefix-$n" link add eth0 type veth peer name "port-$n" netns "$bridge_ns" \
      && ip -n "$bridge_ns" link set dev "port-$n" master br0 \
      && ip -n "$bridge_ns" link set dev "port-$n" up \
      && ip -n "$prefix-$n" addr add "${addr[$n]}/24" dev eth0 \
      && ip -n "$prefix-$n" link set eth0 up \
      || setup_error "cannot wire node $n to the bridge"
  done
}
make_network

# -- certificates, secret, configs ------------------------------------------------------------
# The shell block of the guide that follows the marker <!-- test: NAME -->.
guide_block() { # name
  awk -v m="<!-- test: $1 -->" '$0 == m { want = 1; next }
    want && /^```/ { if (inside) exit; inside = 1; next } inside { print }' "$guide"
}
make_certificates() {
  local n ca node secret
  ca=$(guide_block ca) node=$(guide_block node) secret=$(guide_block secret)
  [ -n "$ca" ] && [ -n "$node" ] && [ -n "$secret" ] \
    || setup_error "no ca, node or secret block in $guide"
  mkdir -p "$work/certs" || exit 2
  (cd "$work/certs" && bash -e -c "$ca") > "$work/certs.log" 2>&1 \
    || { cat "$work/certs.log"; setup_error "the guide's CA commands failed"; }
  for n in "${names[@]}"; do
    (cd "$work/certs" && NODE="$n" ADDR="${addr[$n]}" bash -e -c "$node") \
      >> "$work/certs.log" 2>&1 \
      || { cat "$work/certs.log"; setup_error "the guide's commands for node $n failed"; }
  done
  (cd "$work" && bash -e -c "$secret") >> "$work/certs.log" 2>&1 \
    || { cat "$work/certs.log"; setup_error "the guide's secret commands failed"; }
}
make_certificates

write_cluster() {
  local n roles
  { echo '# Written by scripts/cluster-partition.sh: one network namespace per node.'
    printf '[cluster]\nname = "partition"\npipeline = "pipeline.toml"\nsecret_file = "secret"\n'
    printf 'heartbeat = "200ms"\nfailure_timeout = "1s"\n'
    printf '[cluster.tls]\nca = "certs/ca.pem"\n'
    for n in "${names[@]}"; do
      roles='"aggregate"'
      [ "$n" = "$ingest" ] && roles='"ingest", '"$roles"
      [ "$n" = a ] && roles='"coordinator", '"$roles"
      printf '\n[[node]]\nname = "%s"\naddress = "%s:%d"\nstore = "%s"\n' \
        "$n" "${addr[$n]}" "$port" "$n"
      printf 'roles = [%s]\ncertificate = "certs/%s.pem"\nkey = "certs/%s.key"\n' "$roles" "$n" "$n"
    done
  } > "$work/cluster.toml"
}
write_cluster

workload_config scripts/cluster-partition.sh > "$work/pipeline.toml"

# -- input and the single-node reference ---------------------------------------------------------
# Transactions over 60 days, a few out of order; a malformed line after every 40009th record
# (a dead letter) and every 30011th record once more (a duplicate id: dedupe drops it).
workload_input "$gen" "$events" "$work/in.csv" || setup_error "weir-gen failed"

t0=$(now_ms)
timeout -s KILL 1800 "$weir" run "$work/pipeline.toml" --store "$work/ref" --final \
  > "$work/ref.log" 2>&1 || { tail -5 "$work/ref.log"; setup_error "the reference run failed"; }
ref_ms=$(( $(now_ms) - t0 ))

workload_text "$work/ref" "$work/ref.txt"
rows_ref=$(grep -vc -e '^==' -e '^window_start,' -e '^pipeline,' "$work/ref.txt")
echo "cluster-partition: reference: $(secs "$ref_ms") s, $rows_ref result rows and dead letters"

# -- the nodes ------------------------------------------------------------------------------------

# Starts NODE in its namespace. `ip netns exec` execs weir in place (no fork), so $! is weir's
# own pid: the signals reach weir, and its exit code is waited for.
start_node() { # node [args...]
  local n="$1"
  shift
  ip netns exec "$prefix-$n" "$weir" node --cluster "$work/cluster.toml" --name "$n" \
    --log-level info "$@" < /dev/null >> "$work/$n.out" 2>> "$work/$n.log" &
  pid[$n]=$!
}

# How many times NODE's log says it listens.
listened() { # node
  local c
  c=$(grep -c "node $1 listens on" "$work/$1.log" 2> /dev/null)
  echo "${c:-0}"
}

start_peer() { # node
  local n="$1" t
  start_node "$n"
  for t in $(seq 1 $(( listen_limit * 10 ))); do
    [ "$(listened "$n")" -gt 0 ] && break
    alive "${pid[$n]}" || { tail -5 "$work/$n.log"; setup_error "node $n exited at start"; }
    sleep 0.1
  done
  [ "$(listened "$n")" -gt 0 ] || setup_error "node $n did not listen within $listen_limit s"
  [ "$(readlink "/proc/${pid[$n]}/exe")" = "$(readlink -f "$weir")" ] \
    || setup_error "pid ${pid[$n]} of node $n is not weir"
}
for n in "${names[@]}"; do [ "$n" = a ] || start_peer "$n"; done

a_starts=0 a_runs="" a_since=0
start_a() {
  start_node a --final
  a_starts=$(( a_starts + 1 ))
  a_since=$(now_ms)
}

# -- cuts -----------------------------------------------------------------------------------------
role_of() { # node
  if [ "$1" = a ]; then echo coordinator
  elif [ "$1" = "$ingest" ]; then echo ingest
  else echo aggregate; fi
}

# Takes NODE's link down: the bridge's port (the cable pulled: packets vanish, the node's eth0
# loses its carrier) or the node's own eth0 (its routes go: sends fail at once).
cut_down() { # node how
  if [ "$2" = port ]; then ip -n "$bridge_ns" link set dev "port-$1" down
  else ip -n "$prefix-$1" link set eth0 down; fi || fail "cannot take the link of $1 down"
}
cut_up() { # node how
  if [ "$2" = port ]; then ip -n "$bridge_ns" link set dev "port-$1" up
  else ip -n "$prefix-$1" link set eth0 up; fi || fail "cannot bring the link of $1 up"
}

# The node to cut in cut_node: the first cuts strike each role once (in a random order), the
# later ones any node.
pick_node() {
  local order=() r n
  if [ "$cuts" -lt ${#first_roles[@]} ]; then
    r="${first_roles[$cuts]}"
    for n in "${names[@]}"; do [ "$(role_of "$n")" = "$r" ] && order+=("$n"); done
    cut_node="${order[$(( RANDOM % ${#order[@]} ))]}"
  else
    cut_node="${names[$(( RANDOM % nodes ))]}"
  fi
}
first_roles=(coordinator)
[ "$ingest" != a ] && first_roles+=(ingest)
[ "$nodes" -gt 2 ] || [ "$ingest" = a ] && first_roles+=(aggregate)
for i in $(seq 1 ${#first_roles[@]}); do # shuffle
  j=$(( RANDOM % ${#first_roles[@]} ))
  r="${first_roles[0]}" first_roles[0]="${first_roles[$j]}" first_roles[$j]="$r"
done

declare -A by=()
cut_end=0 cut_start=0 long_cuts=0
strike() {
  local len role
  pick_node
  role=$(role_of "$cut_node")
  cut_how=port
  [ $(( RANDOM % 3 )) = 0 ] && cut_how=eth0
  rand_ms "$cut_min" "$cut_max"
  len=$r_ms
  cut_start=$(now_ms)
  cut_end=$(( cut_start + len ))
  cut_down "$cut_node" "$cut_how"
  cuts=$(( cuts + 1 ))
  [ "$len" -gt 1000 ] && long_cuts=$(( long_cuts + 1 ))
  by["$cut_node $role"]=$(( ${by["$cut_node $role"]:-0} + 1 ))
  printf '  %8s s: cut %s (%s, %s) for %s s\n' "$(secs $(( cut_start - t_run )))" "$cut_node" \
    "$role" "$cut_how" "$(secs "$len")" | tee -a "$work/schedule.log"
}
heal() {
  cut_up "$cut_node" "$cut_how"
  cut_node=""
}

# A node other than a that is gone was not stopped by us: it crashed or gave up.
check_nodes() {
  local n
  for n in "${names[@]}"; do
    [ "$n" = a ] && continue
    alive "${pid[$n]}" && continue
    wait "${pid[$n]}"
    rc=$?
    unset "pid[$n]"
    fail "node $n exited by itself with $rc; its log ends: $(tail -1 "$work/$n.log")"
  done
}

# a has ended: it must have exited 0. Before the cuts reach the target it starts again on the
# same store (it resumes; a finished run adds nothing) so that the cuts go on while it runs.
a_ended() {
  local rc
  wait "${pid[a]}"
  rc=$?
  [ "$rc" = 0 ] || fail "a exited with $rc; its log ends: $(tail -1 "$work/a.log")"
  a_runs="$a_runs $(secs $(( $(now_ms) - a_since )))"
  [ "$cuts" -ge "$cuts_target" ] && [ -z "$cut_node" ] && { unset 'pid[a]'; return 0; }
  start_a
  return 1
}

# -- the partitioned run --------------------------------------------------------------------------
echo "cluster-partition: cuts (time since a started, node, role, link, length):"
cuts=0
t_run=$(now_ms)
# The cuts, then finish_limit s (more for a large input) for a to finish.
deadline=$(( t_run + cuts_target * (cut_max + gap_max + 500) + finish_limit * 1000 + ref_ms * 10 ))
rand_ms 500 1500
next_cut=$(( t_run + r_ms ))
start_a
while :; do
  now=$(now_ms)
  [ "$now" -gt "$deadline" ] \
    && fail "a did not finish within $(secs $(( deadline - t_run ))) s; its log ends:" \
      "$(tail -1 "$work/a.log")"
  if [ -n "$cut_node" ] && [ "$now" -ge "$cut_end" ]; then
    heal
    rand_ms "$gap_min" "$gap_max"
    next_cut=$(( now + r_ms ))
  fi
  if ! alive "${pid[a]}"; then
    a_ended && break
  fi
  check_nodes
  if [ -z "$cut_node" ] && [ "$cuts" -lt "$cuts_target" ] && [ "$now" -ge "$next_cut" ]; then
    strike
  fi
  sleep 0.05
done
run_ms=$(( $(now_ms) - t_run ))

# The other nodes end on SIGTERM with exit 0 (SIGKILL after stop_limit s is a FAIL).
peers=()
for n in "${names[@]}"; do [ "$n" = a ] || peers+=("$n"); done
term_and_wait "${peers[@]}"
for n in "${peers[@]}"; do
  alive "${pid[$n]}" && kill -KILL "${pid[$n]}" 2> /dev/null
  wait "${pid[$n]}"
  rc=$?
  unset "pid[$n]"
  [ "$rc" = 0 ] \
    || fail "node $n exited with $rc on SIGTERM; its log ends: $(tail -1 "$work/$n.log")"
done

# -- figures and verdict --------------------------------------------------------------------------
workload_text "$work/a" "$work/a.txt"
differing=0
if ! cmp -s "$work/ref.txt" "$work/a.txt"; then
  differing=$(diff "$work/ref.txt" "$work/a.txt" | grep -c '^[<>]')
  echo "cluster-partition: a's store differs from the reference; first differences:"
  diff "$work/ref.txt" "$work/a.txt" | head -10 | sed 's/^/  /'
fi
generations=$(grep -c -e 'the next generation is placed' -e 'restart [0-9]* of' "$work/a.log")
lost=$(grep -c 'is not available' "$work/a.log")
elapsed_ms=$(( $(now_ms) - t_start ))
echo "cluster-partition figures (seed $seed):"
echo "  nodes, events          $nodes (ingest on $ingest), $events"
echo "  cuts                   $cuts, $long_cuts longer than failure_timeout (1 s)"
for k in $(printf '%s\n' "${!by[@]}" | sort | tr ' ' '_'); do
  printf '    %-20s %d\n' "${k/_/ }" "${by[${k/_/ }]}"
done
echo "  a started              $a_starts times, runs of (s):$a_runs"
echo "  generation restarts    $generations (a's log), node not available $lost times"
echo "  rows compared          $rows_ref (results and dead letters), differing $differing"
echo "  reference run          $(secs "$ref_ms") s"
echo "  partitioned run        $(secs "$run_ms") s"
echo "  elapsed                $(secs "$elapsed_ms") s"
[ "$differing" -eq 0 ] || fail "$differing rows differ from the single-node run"
verdict_ok=1
echo "PASS: $cuts cuts on $nodes nodes (seed $seed, ingest on $ingest), a started $a_starts" \
  "times, $rows_ref rows identical to the single-node run"
