#!/usr/bin/env bash
# What checking every object against its hash on read costs: the media and audio front end
# (decode, face-free frames, audio, log-mel, MFCC, segments) on the BENCH_N-clip demo (default
# 600), cold, as a no-op, and after a log-mel param change that reads every audio object again.
# With BENCH_BEFORE=DIR (a folder holding an earlier engine's `pipeline` and
# `pipeline-worker`), the same three with that engine first, in the same call.
# Writes bench/out/verify/verify.md.
BENCH_N=${BENCH_N:-600}
. "$(dirname "$0")/bench/common.sh"
bench_init verify
cat > "$out/front.yaml" <<YAML
stages:
  ingest: {kind: ingest, params: {root: $data}}
  decode: {kind: decode, inputs: [ingest], params: {frames: 10, max_side: 160}}
  audio: {kind: audio, inputs: [ingest], params: {sample_rate: 16000}}
  logmel: {kind: logmel, inputs: [audio], params: {n_mels: 64}}
  mfcc: {kind: mfcc, inputs: [audio], params: {n_mfcc: 13}}
  patches: {kind: segment, inputs: [logmel], params: {frames: 96}}
YAML
# One side: BIN WORKER NAME; three timings (cold, no-op, logmel change) in $out/NAME.times.
side() {
  local bin=$1 worker=$2 name=$3 cache=$out/cache-$3
  rm -rf "$cache"
  : > "$out/$name.times"
  for step in cold noop change; do
    local set=()
    [ "$step" = change ] && set=(--set logmel.n_mels=40)
    /usr/bin/time -f '%e' -a -o "$out/$name.times" env PIPELINE_WORKER="$worker" \
      "$bin" --cache "$cache" run -p "$out/front.yaml" "${set[@]}" > /dev/null
  done
}
names=()
if [ -n "${BENCH_BEFORE:-}" ]; then
  side "$BENCH_BEFORE/pipeline" "$BENCH_BEFORE/pipeline-worker" before
  names+=(before)
fi
side "$BIN" "$PWD/target/release/pipeline-worker" after
names+=(after)
{
  echo "# Checked reads: $N clips, front end (decode, audio, logmel, mfcc, segment)"
  echo
  echo "| engine | cold (s) | no-op (s) | logmel change (s) |"
  echo "|---|---|---|---|"
  for n in "${names[@]}"; do
    mapfile -t t < "$out/$n.times"
    echo "| $n | ${t[0]} | ${t[1]} | ${t[2]} |"
  done
  echo
  echo "Objects in the cache: $(find "$out/cache-after/objects" -name '*.parquet' | wc -l)," \
    "$(du -sm "$out/cache-after/objects" | cut -f1) MiB."
} > "$out/verify.md"
cat "$out/verify.md"
