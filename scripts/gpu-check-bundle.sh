#!/usr/bin/env bash
# `make gpu-check-bundle`: everything the GPU check needs on a machine with a GPU, a Python
# torch and nothing else (no Rust, no FFmpeg, no OpenCV, no network), in one archive under the
# 64 MiB a device call carries: bench/out/gpu-check/gpu-check-bundle.tar.gz.
# - bin/pipeline: the engine (links no libtorch).
# - bin/pipeline-worker: a torch-only worker (no `media` feature) built against the libtorch
#   of GPU_TORCH_VERSION (default 2.11.0, the device's) with tch's matching release
#   GPU_TCH_VERSION (0.24.0), from a copy of the sources whose manifest pins it: Cargo refuses
#   two torch-sys versions in one dependency graph (both declare `links = "tch"`), even behind
#   features. With CUDA (PIPELINE_CUDA=1); at run time it loads the device's own libtorch.
# - A 12-clip demo, the two embedding models, MTCNN, the check pipeline, and a cache holding
#   the media stages' and `pixels`' outputs computed here; cache-ref: the whole check computed
#   here on the CPU with this checkout's own worker, to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
V=${GPU_TORCH_VERSION:-2.11.0}
T=${GPU_TCH_VERSION:-0.24.0}
out=$root/bench/out/gpu-check
b=$out/bundle
mkdir -p "$out"
py=$root/.venv-torch/bin/python

# 1. libtorch $V: the include and lib folders of PyPI's torch wheel.
lt=$out/torch-$V/torch
if [ ! -f "$lt/lib/libtorch_cpu.so" ]; then
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$out/wheel-$V" "torch==$V"
  rm -rf "$out/torch-$V"; mkdir -p "$out/torch-$V"
  (cd "$out/torch-$V" && unzip -q "$out/wheel-$V"/torch-"$V"-*.whl 'torch/include/*' 'torch/lib/*' 'torch/share/*')
fi

# 2. The torch-only worker from a copy of the sources pinned to tch $T.
src=$out/src
rm -rf "$src"; mkdir -p "$src"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$src"
sed -i -E "s/^tch = .*/tch = \"=$T\"/; s/^torch-sys = .*/torch-sys = \"=$T\"/" "$src/Cargo.toml"
grep -E '^(tch|torch-sys) = ' "$src/Cargo.toml"
(cd "$src" && LIBTORCH=$lt PIPELINE_CUDA=1 CARGO_TARGET_DIR=$out/target \
  cargo build --release -p pipeline-worker --no-default-features)
worker=$out/target/release/pipeline-worker

# 3. The bundle.
cargo build --release -p pipeline -p pipeline-worker
rm -rf "$b"; mkdir -p "$b/bin" "$b/pipeline" "$b/models/embed" "$b/scripts" "$b/data"
cp target/release/pipeline "$b/bin/"
cp "$worker" "$b/bin/pipeline-worker"
strip "$b/bin/pipeline" "$b/bin/pipeline-worker"
echo "$V" > "$b/BUILT_FOR"
cp scripts/gpu-check/check.yaml "$b/pipeline/"
cp scripts/gpu-check.sh "$b/"
cp scripts/gpu-check/compare.py "$b/scripts/"
cp -r data/models/mtcnn "$b/models/"
cp data/models/embed/vision-face-emotion.pt data/models/embed/audio-resemblyzer.pt "$b/models/embed/"
scripts/demo/make-demo.sh "$b/data/demo" 12 1 > /dev/null
# Inputs: what the torch-only worker cannot compute, with this checkout's full worker.
run=(target/release/pipeline --cache "$b/cache" run pixels mfcc labels split -p "$b/pipeline/check.yaml")
"${run[@]}"
# The reference: everything on this machine's CPU, from a copy of the inputs (hard links: the
# archive stores them once).
cp -al "$b/cache" "$b/cache-ref"
s=$(date +%s.%N)
target/release/pipeline --cache "$b/cache-ref" run table_main -p "$b/pipeline/check.yaml" --json > "$b/ref.jsonl"
e=$(date +%s.%N)
awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f\n", e - s}' > "$b/ref.time"
rm -rf "$b"/cache*/locks
tar -C "$out" -czf "$out/gpu-check-bundle.tar.gz" bundle
size=$(stat -c %s "$out/gpu-check-bundle.tar.gz")
echo "bundle: $out/gpu-check-bundle.tar.gz, $((size / 1048576)) MiB; worker built for torch $V (tch $T)"
[ "$size" -le $((60 * 1048576)) ] || { echo "gpu-check-bundle: over 60 MiB" >&2; exit 1; }
