#!/usr/bin/env bash
# `make bench-scale`: the orchestration workload of `make bench-peers`
# (scripts/bench/orchestration.py) at 2281, 22810 and 228100 clips: cold run, no-op rerun,
# status, one input changed, one param changed, and the peak memory of each tool's whole
# process tree; this project and DVC side by side, DVC where its cold run fits in 20 minutes
# (not at 228100 clips). Writes the scale section of bench/RESULTS.md and bench/scale.png.
#
# Long: about 90 minutes on 2 cores, most of it the 228100-clip cold run (about 1M files: inputs,
# and what four per-clip stages write) and DVC at 22810 clips. It needs about 20 GB of free
# disk in BENCH_SCALE_DIR (default: a new folder in $TMPDIR). BENCH_SCALE_SIZES picks sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/bench/out/scale
mkdir -p "$out"
BIN=$PWD/target/release/pipeline
sizes=${BENCH_SCALE_SIZES:-2281 22810 228100}

# shellcheck source=scripts/lib/venv.sh
. scripts/lib/venv.sh
venv=$PWD/.venv-peers
pinned_venv "$venv" "$PEERS_PINS" "the benchmarks' peers"
export BENCH_PEERS_VENV=$venv
work=${BENCH_SCALE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-scale.XXXXXX")}
BENCH_GIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src stages || echo "+changes")
export BENCH_GIT
mkdir -p "$work"

for n in $sizes; do
  # What one size needs on disk: the inputs twice (source and the tool's copy) and four
  # per-clip stages' outputs, 10 KB each in 12 KB of blocks, with room to spare.
  need_kb=$(( n * 12 * 7 ))
  free_kb=$(df -Pk "$work" | awk 'NR==2 {print $4}')
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "bench-scale: $n clips need about $((need_kb / 1048576)) GiB free in $work; $((free_kb / 1048576)) GiB are" >&2
    exit 1
  fi
  case $n in
    2281) tools=pipeline,dvc; cold=3; repeat=5 ;;
    22810) tools=pipeline,dvc; cold=1; repeat=3 ;;
    *) tools=pipeline; cold=1; repeat=3 ;;
  esac
  rm -f "$out/scale-$n.json"
  BENCH_REPEAT=$repeat BENCH_COLD=$cold \
    "$venv/bin/python" scripts/bench/orchestration.py "$BIN" "$work/$n" "$n" "$tools" "$out/scale-$n.json"
  rm -rf "${work:?}/$n"
done
"$venv/bin/python" scripts/bench/scale.py "$out" bench/RESULTS.md bench/scale.png
