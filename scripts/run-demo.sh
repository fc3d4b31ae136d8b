#!/usr/bin/env bash
# `make run`'s studies on the demo, in two lanes that run side by side. One `pipeline run` trains
# one model at a time (libtorch has one random generator per process), so two processes are what
# puts both cores to work; they share the cache, and each training stays deterministic for its key.
#   lane 1 (this terminal):      pipeline/default.yaml, Uni2Mul, SMP, MER-SEM-MBT
#   lane 2 (report/lane-2.log):  the IEMOCAP-layout demo, Foal-Net, CM-MSF
# Then every study's report (report/<study>/) and its table_main beside its baseline.
# Targets and overrides come from the Makefile (UNI2MUL_TARGETS, *_SETS).
set -euo pipefail
bin=${BIN:-target/release/pipeline}
mkdir -p report
log=report/lane-2.log

# Both lanes need the IEMOCAP-layout demo; the lock keeps them from writing it twice.
demo_iemocap() { flock report/.demo-iemocap.lock make -s demo-iemocap; }

lane_2() {
  demo_iemocap
  "$bin" run table_main table_probes -p pipeline/foal-net.yaml $FOAL_SETS
  "$bin" run table_main table_probes -p pipeline/cm-msf.yaml $CMMSF_SETS
}

lane_2 >"$log" 2>&1 &
lane=$!
echo "Foal-Net and CM-MSF run beside these; their log: $log"

status=0
"$bin" run all || status=$?
"$bin" run $UNI2MUL_TARGETS -p pipeline/uni2mul.yaml $UNI2MUL_SETS || status=$?
"$bin" run table_main table_probes -p pipeline/smp.yaml $SMP_SETS || status=$?
demo_iemocap
"$bin" run table_main -p pipeline/mer-sem-mbt.yaml $MBT_SETS || status=$?
if ! wait "$lane"; then
  status=1
  echo "lane 2 failed; the end of $log:" >&2
  tail -20 "$log" >&2
fi

"$bin" report -p pipeline/uni2mul.yaml $UNI2MUL_SETS -o report/uni2mul
"$bin" report -p pipeline/smp.yaml $SMP_SETS -o report/smp
"$bin" report -p pipeline/cm-msf.yaml $CMMSF_SETS -o report/cm-msf
"$bin" report -p pipeline/foal-net.yaml $FOAL_SETS -o report/foal-net
"$bin" report -p pipeline/mer-sem-mbt.yaml $MBT_SETS -o report/mer-sem-mbt

echo
echo "== Each study's main model over its seeds (folds for Foal-Net), test split, [baseline] =="
for s in uni2mul smp cm-msf foal-net mer-sem-mbt; do
  echo "-- $s (report/$s/report.md)"
  awk '/^## table_main /{on=1; next} /^## /{on=0} on && /^\|/' "report/$s/report.md"
done
exit "$status"
