#!/usr/bin/env bash
# `make bench-peers`: this project side by side with DVC and Snakemake, and with the Python
# feature tools, all through their command lines; writes bench/RESULTS.md and bench/ratios.png.
#   1. orchestration overhead on a trivial 7-stage pipeline over 2281 clips, then 22810
#      (scripts/bench/orchestration.py);
#   2. the media front half against librosa, opencv-python + ffmpeg CLI and facenet-pytorch
#      (scripts/bench-media.sh);
#   3. `pipeline run all` of the Uni2Mul study on 120 and on 1000 demo clips.
# BENCH_PARTS picks parts (default "orch orch-big media e2e"); each part's figures are kept
# in bench/out/peers/, so parts can be rerun alone and the report rebuilt from what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/bench/out/peers
mkdir -p "$out"
BIN=$PWD/target/release/pipeline
parts=${BENCH_PARTS:-orch orch-big media e2e}

# shellcheck source=scripts/lib/venv.sh
. scripts/lib/venv.sh
venv=$PWD/.venv-peers
pinned_venv "$venv" "$PEERS_PINS" "the benchmarks' peers"
export BENCH_PEERS_VENV=$venv
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX"); trap 'rm -rf "$work"' EXIT

for part in $parts; do
  case $part in
    orch)
      # 3 cold runs (1 for Snakemake: about 20 minutes at this size), 5 of everything else.
      rm -f "$out/orch-2281.json"
      BENCH_REPEAT=${BENCH_REPEAT:-5} BENCH_COLD=3 BENCH_SNAKEMAKE_COLD=1 \
        "$venv/bin/python" scripts/bench/orchestration.py "$BIN" "$work/2281" 2281 \
        pipeline,dvc,snakemake "$out/orch-2281.json" ;;
    orch-big)
      # Ten times the clips, one run of each measurement, for the tools that fit in about 10
      # minutes: Snakemake's cold run at 2281 clips already takes longer than that.
      rm -f "$out/orch-22810.json"
      BENCH_REPEAT=1 BENCH_COLD=1 \
        "$venv/bin/python" scripts/bench/orchestration.py "$BIN" "$work/22810" 22810 \
        pipeline,dvc "$out/orch-22810.json" ;;
    media)
      scripts/bench-media.sh
      cp bench/out/media/media.md "$out/media.md" ;;
    e2e)
      for n in 120 1000; do scripts/bench/e2e.sh "$n" "$out/e2e-$n.json"; done ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
"$venv/bin/python" scripts/bench/results.py "$out" bench/RESULTS.md bench/ratios.png
echo "wrote bench/RESULTS.md and bench/ratios.png"
