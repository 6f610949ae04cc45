# The workload of the cluster harnesses (scripts/cluster-chaos.sh, scripts/cluster-partition.sh),
# sourced by them: one generated input and two pipelines over it, the same in both, so that
# their verdicts speak of the same runs. Bash and Debian base tools only.

# workload_input GEN EVENTS FILE: transactions over 60 days, a few out of order, a malformed
# line after every 40009th record (a dead letter) and every 30011th record once more (a
# duplicate id: dedupe drops it). Fails when weir-gen does.
workload_input() {
  timeout -s KILL 600 "$1" --events "$2" --span-days 60 --seed 11 --disorder 0.02 \
    --max-shift 60 --out - \
    | awk '{ print } NR > 1 && NR % 40009 == 0 { print "broken" NR ",never,m1,x,EUR" }
           NR > 1 && NR % 30011 == 0 { print }' > "$3"
}

# One pipeline over in.csv, deduplicating by tx_id: name, partitions, key field, window size,
# then the aggregates as fn or fn:field.
workload_pipeline() {
  local a
  printf '\n[[pipeline]]\nname = "%s"\npartitions = %d\n' "$1" "$2"
  printf '[[pipeline.source]]\nname = "tx"\npath = "in.csv"\n'
  printf '[pipeline.fields]\nevent_id = "tx_id"\ntime = "ts"\nkey = ["%s"]\n' "$3"
  printf 'measures = ["amount"]\n[pipeline.preprocess]\ndedupe = true\ndedupe_horizon = "1h"\n'
  printf '[pipeline.window]\nkind = "tumbling"\nsize = "%s"\nout_of_orderness = "2m"\n' "$4"
  shift 4
  for a in "$@"; do
    printf '[[pipeline.aggregate]]\nfn = "%s"\n' "${a%%:*}"
    [ "${a#*:}" != "$a" ] && printf 'field = "%s"\n' "${a#*:}"
  done
}

# workload_config WRITER: the pipeline config over in.csv (every pipeline sets partitions, as a
# cluster needs); sets `pipelines` to their names.
workload_config() {
  echo "# Written by $1; a cluster needs every pipeline to set partitions."
  echo 'commit_interval = "100ms"'
  workload_pipeline merchant_hourly 4 merchant 1h count sum:amount max:amount
  workload_pipeline currency_daily 3 currency 1d count avg:amount
}
pipelines="merchant_hourly currency_daily"

# workload_text STORE OUT: the store as comparable text, every pipeline's results and the dead
# letters, sorted (with the caller's $weir; `fail` when a command fails).
workload_text() {
  local p
  for p in $pipelines; do
    echo "== $p"
    timeout -s KILL 300 "$weir" query --store "$1" --pipeline "$p" --format csv | sort \
      || fail "weir query of $1 failed"
  done > "$2"
  { echo "== dead letters"
    timeout -s KILL 300 "$weir" dead-letters --store "$1" --format csv | sort \
      || fail "weir dead-letters of $1 failed"; } >> "$2"
}
