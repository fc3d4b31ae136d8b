#!/usr/bin/env bash
# The GPU check, run inside an unpacked bundle from `make gpu-check-bundle` on a machine with a
# GPU and a Python torch of the version the bundle's worker was built for (BUILT_FOR): the
# torch-only worker loads that torch's own libtorch. Runs scripts/gpu-check/check.yaml from
# the bundle's precomputed inputs once with `device: cpu` and once with `device: cuda`, times
# both, and compares the embeddings (within 1e-3) and the metrics with each other and with the
# CPU run made where the bundle was built (`ref`). Results: results.json, results.md (and in
# $OUT when set).
set -euo pipefail
cd "$(dirname "$0")"
py=${PYTHON:-python3}
lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
have=$("$py" -c 'import torch; print(torch.__version__)')
echo "torch $have ($lib); worker built for $(cat BUILT_FOR)"
case "$have" in "$(cat BUILT_FOR)"*) ;; *) echo "gpu-check: torch $have, but the worker was built for $(cat BUILT_FOR)" >&2; exit 2;; esac
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PIPELINE_WORKER=$PWD/bin/pipeline-worker
nvidia-smi -L || true
for dev in cpu cuda; do
  rm -rf "cache-$dev"; cp -r cache "cache-$dev"
  gpus=(); [ "$dev" = cuda ] && gpus=(--gpus "${GPU_CHECK_GPUS:-0}")
  s=$(date +%s.%N)
  bin/pipeline --cache "cache-$dev" run table_main -p pipeline/check.yaml \
    --set "vars.device=$dev" "${gpus[@]}" --json > "$dev.jsonl" || {
    echo "gpu-check: the $dev run failed; its last events:" >&2; tail -n 5 "$dev.jsonl" >&2; exit 1; }
  e=$(date +%s.%N)
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f\n", e - s}' > "$dev.time"
  echo "$dev: $(cat "$dev.time") s"
done
set +e
"$py" scripts/compare.py . ref cpu cuda | tee results.md
code=${PIPESTATUS[0]}
[ -n "${OUT:-}" ] && cp results.md results.json cpu.jsonl cuda.jsonl "$OUT"/ 2>/dev/null
exit "$code"
