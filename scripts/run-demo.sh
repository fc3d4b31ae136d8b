#!/usr/bin/env bash
# `make run`'s studies on the demo, as a queue of jobs, DEMO_JOBS at a time (default: one per
# core). One `pipeline run` trains one model at a time (libtorch has one random generator per
# process), so side-by-side processes are what put the cores to work; they share the cache, whose
# per-key locks make a stage that two jobs need run once, and each training stays deterministic
# for its key. The longest jobs start first so that the last one to finish starts early.
# Each job's log: report/logs/<job>.log. Then every study's report (report/<study>/) and its
# table_main beside its baseline. Targets and overrides come from the Makefile (*_SETS).
set -euo pipefail
bin=${BIN:-target/release/pipeline}
jobs=${DEMO_JOBS:-$(nproc)}
mkdir -p report/logs

# Foal-Net and MER-SEM-MBT need the IEMOCAP-layout demo; it is the first job, and the lock keeps
# a job that needs it waiting until it is written.
demo_iemocap() { flock report/.demo-iemocap.lock make -s demo-iemocap; }
seeds=$(seq ${SEEDS%%..*} ${SEEDS##*..})

# A job is a study's whole command, or one seed (fold) of its paper model, so that the queue
# can keep every core busy to the end. NAME.N is seed (fold) N.
job() {
  local n=${1#*.}
  case $1 in
    iemocap) demo_iemocap ;;
    default) "$bin" run all ;;
    uni2mul) "$bin" run $UNI2MUL_TARGETS -p pipeline/uni2mul.yaml $UNI2MUL_SETS ;;
    cm_msf.*) "$bin" run "eval_cm_msf[seed=$n]" -p pipeline/cm-msf.yaml $CMMSF_SETS ;;
    smp.*) "$bin" run "eval_smp[seed=$n]" -p pipeline/smp.yaml $SMP_SETS ;;
    foal_net.*) demo_iemocap && "$bin" run "eval_foal_net[fold=$n]" -p pipeline/foal-net.yaml $FOAL_SETS ;;
    mer_sem_mbt.*) demo_iemocap && "$bin" run "eval_mer_sem_mbt[seed=$n]" -p pipeline/mer-sem-mbt.yaml $MBT_SETS ;;
    # The whole commands: tables, probes and directions over the models the jobs above trained.
    cm_msf) "$bin" run table_main table_probes -p pipeline/cm-msf.yaml $CMMSF_SETS ;;
    smp) "$bin" run table_main table_probes -p pipeline/smp.yaml $SMP_SETS ;;
    foal_net) "$bin" run table_main table_probes -p pipeline/foal-net.yaml $FOAL_SETS ;;
    mer_sem_mbt) "$bin" run table_main -p pipeline/mer-sem-mbt.yaml $MBT_SETS ;;
    *) echo "no job $1" >&2; return 2 ;;
  esac
}

# Longest first, by their times on 2 cores; `default` is mostly the features Uni2Mul computed.
order=(iemocap uni2mul)
for s in $seeds; do order+=("cm_msf.$s"); done
for s in $seeds; do order+=("smp.$s"); done
for f in 0 1 2 3 4; do order+=("foal_net.$f"); done
for s in $seeds; do order+=("mer_sem_mbt.$s"); done
order+=(default cm_msf smp foal_net mer_sem_mbt)

declare -A started=() pid_of=()
failed=()
finish() {
  local name=$1 rc=$2
  if [ "$rc" -eq 0 ]; then
    printf '%-14s done in %4d s\n' "$name" $(($(date +%s) - started[$name]))
  else
    failed+=("$name")
    printf '%-14s FAILED (exit %d) after %d s; the end of report/logs/%s.log:\n' \
      "$name" "$rc" $(($(date +%s) - started[$name])) "$name"
    tail -20 "report/logs/$name.log" | sed 's/^/  /'
  fi
}
# Waits for any one running job and reports it.
reap() {
  local done_pid rc=0 name
  wait -n -p done_pid "${pid_of[@]}" || rc=$?
  for name in "${!pid_of[@]}"; do
    if [ "${pid_of[$name]}" = "$done_pid" ]; then
      unset "pid_of[$name]"
      finish "$name" "$rc"
      return
    fi
  done
}

for name in "${order[@]}"; do
  while [ "${#pid_of[@]}" -ge "$jobs" ]; do reap; done
  started[$name]=$(date +%s)
  job "$name" >"report/logs/$name.log" 2>&1 &
  pid_of[$name]=$!
  printf '%-14s started (log: report/logs/%s.log)\n' "$name" "$name"
done
while [ "${#pid_of[@]}" -gt 0 ]; do reap; done

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
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
