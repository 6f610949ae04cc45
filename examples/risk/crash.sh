#!/usr/bin/env bash
# The risk example under kill -9: runs the pipeline on six weeks of transactions of 40
# merchants and kills it, then starts it again: twice at named points (between a sink's
# delivery and the record of it, and inside an epoch's commit), then KILLS times with SIGKILL at
# random moments. A last run finishes, and the check wants every alert in alerts.csv exactly
# once.
#
#   crash.sh WEIR RISK_GEN RISK_CHECK [KILLS] [SEED]
set -uo pipefail
weir=$1 gen=$2 check=$3 kills=${4:-8} seed=${5:-11}
RANDOM=$seed
rm -rf store alerts.csv alerts.csv.epoch
"$gen" transactions.csv 42 40 60 "$seed" || exit 2
killed=0
for point in sink.delivered@3 epoch.during_commit@3; do
  (WEIR_FAULT=$point exec timeout 300 "$weir" run pipeline.toml --final --quiet) > /dev/null 2>&1
  rc=$?
  [ "$rc" = 0 ] && { echo "FAIL: the fault $point did not stop the run"; exit 1; }
  killed=$((killed + 1))
done
for ((i = 0; i < kills; ++i)); do
  "$weir" run pipeline.toml --final --quiet > /dev/null 2>&1 &
  pid=$!
  sleep "0.$(( 100 + RANDOM % 500 ))"
  # Only a kill of a run still going counts: a run that ended has nothing to lose.
  kill -9 "$pid" 2> /dev/null && killed=$((killed + 1))
  wait "$pid" 2> /dev/null
done
timeout 300 "$weir" run pipeline.toml --final --quiet || { echo "FAIL: the last run failed"; exit 1; }
echo "$killed runs killed (2 at named fault points, the others with SIGKILL at random moments)"
"$check" transactions.csv alerts.csv
