#!/usr/bin/env bash
# Runs the security example on three local nodes and checks its alerts.
#
#   run.sh SCRIPTS_CLUSTER WEIR_BIN_DIR SECURITY_GEN SECURITY_CHECK
set -uo pipefail
cluster=$1 bin=$2 gen=$3 check=$4
"$cluster" down --dir nodes > /dev/null 2>&1
rm -rf nodes alerts.csv alerts.csv.epoch
"$gen" access.ndjson || exit 2
"$cluster" up 3 --dir nodes --pipeline pipeline.toml --bin "$bin" --run
rc=$?
"$cluster" down --dir nodes
[ "$rc" = 0 ] || { echo "FAIL: the cluster run failed (logs in $PWD/nodes)"; exit 1; }
grep -h "runs partition" nodes/n2.log nodes/n3.log | head -n 4
echo "-- alerts.csv (address, window start, window end, failed logins):"
head -n 6 alerts.csv
"$check" access.ndjson alerts.csv 20
