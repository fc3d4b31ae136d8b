# Sourced by the scripts/bench-*.sh peer benchmarks: `bench_init NAME` sets BIN, N (BENCH_N,
# default 120 clips), out (bench/out/NAME) and data (a demo dataset of N clips, made once).
bench_init() {
  set -euo pipefail
  cd "$(dirname "$0")/.."
  N=${BENCH_N:-120}
  BIN=$PWD/target/release/pipeline
  out=$PWD/bench/out/$1
  mkdir -p "$out"
  data=$out/demo-$N
  [ -f "$data/.made" ] || { rm -rf "$data"; scripts/demo/make-demo.sh "$data" "$N" 1 >/dev/null; touch "$data/.made"; }
}

# The torch venv's Python, with pyarrow to read the pipeline's Parquet artifacts.
bench_torch_python() {
  py=$PWD/.venv-torch/bin/python
  "$py" -c "import pyarrow" 2>/dev/null || "$PWD/.venv-torch/bin/pip" install -q pyarrow
}
