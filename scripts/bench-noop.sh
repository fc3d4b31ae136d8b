#!/usr/bin/env bash
# Engine overhead on a CH-SIMS-sized manifest (2281 clips): cold run, no-op rerun, status, and a
# rerun after a one-param change. Medians of several runs, with min and max.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-2281}; REPEAT=${BENCH_REPEAT:-10}
BIN=target/release/pipeline
out=bench/out; mkdir -p $out
[ -s $out/data/label.csv ] && [ "$(($(wc -l < $out/data/label.csv) - 1))" = "$N" ] || {
  rm -rf $out/data; echo "bench: writing a $N-clip manifest (40 distinct clips, the rest copies)"
  scripts/make-fixture.sh $out/data "$N" 1 40
}
cache=$(mktemp -d); trap 'rm -rf "$cache"' EXIT
p=(-p bench/noop.yaml)
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || [ $? = 3 ]; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "median %.1f ms (min %.1f, max %.1f, n=%d)", a[int((NR+1)/2)]/1000, a[1]/1000, a[NR]/1000, NR}'; }
cold=$(ms $BIN --cache "$cache" run "${p[@]}")
noop=$(for i in $(seq $REPEAT); do ms $BIN --cache "$cache" run "${p[@]}"; done | stats)
status=$(for i in $(seq $REPEAT); do ms $BIN --cache "$cache" status "${p[@]}"; done | stats)
param=$(for i in $(seq $REPEAT); do ms $BIN --cache "$cache" run "${p[@]}" --set split.seed=$((i + 100)); done | stats)
{
  echo "## Engine overhead, $N clips (ingest, labels, split) — $(date -u +%F), $(nproc) cores"
  echo
  echo "| workload | time |"
  echo "|---|---|"
  echo "| cold run | $(awk -v u=$cold 'BEGIN{printf "%.1f ms", u/1000}') |"
  echo "| no-op rerun | $noop |"
  echo "| status | $status |"
  echo "| one param of split changed (split reruns) | $param |"
} | tee $out/noop.md
