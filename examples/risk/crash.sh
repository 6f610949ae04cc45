#!/usr/bin/env bash
# The risk example under kill -9: starts the pipeline on a month of transactions, kills it at a
# random moment, starts it again, KILLS times, then lets a run finish and checks that every
# alert is in alerts.csv exactly once.
#
#   crash.sh WEIR RISK_GEN RISK_CHECK [KILLS] [SEED]
set -uo pipefail
weir=$1 gen=$2 check=$3 kills=${4:-8} seed=${5:-11}
RANDOM=$seed
rm -rf store alerts.csv alerts.csv.epoch
"$gen" transactions.csv 30 40 60 "$seed" || exit 2
killed=0
for ((i = 0; i < kills; ++i)); do
  "$weir" run pipeline.toml --final --quiet > /dev/null 2>&1 &
  pid=$!
  sleep "0.$(( 200 + RANDOM % 700 ))"
  if kill -9 "$pid" 2>/dev/null; then
    killed=$((killed + 1))
  fi
  wait "$pid" 2>/dev/null
done
timeout 300 "$weir" run pipeline.toml --final --quiet || { echo "FAIL: the last run failed"; exit 1; }
echo "$killed runs killed with SIGKILL"
"$check" transactions.csv alerts.csv
