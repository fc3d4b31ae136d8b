#!/usr/bin/env bash
# The embed stage (TorchScript through tch) per modality on demo clips, against the same models
# run by their own Python packages in PyTorch (scripts/bench/embed_peers.py), on the same
# inputs (the pipeline's own waveforms, face crops and transcripts), cores and torch version.
. "$(dirname "$0")/bench/common.sh"
bench_init embed
bench_torch_python
m=$PWD/data/models/embed

proj=$out/project; rm -rf "$proj" "$out/cache"; mkdir -p "$proj/pipeline"
cat > "$proj/pipeline/default.yaml" <<YAML
stages:
  ingest: {kind: ingest, params: {root: "$data"}}
  audio: {kind: audio, inputs: [ingest]}
  decode: {kind: decode, inputs: [ingest], params: {sampling: uniform, frames: 10}}
  face: {kind: face, inputs: [decode], params: {models: "$PWD/data/models/mtcnn", crop_size: 160}}
  embed_text:
    kind: embed
    inputs: [ingest]
    params: {modality: text, model: "$m/text-minilm.pt", tokenizer: "$m/text-minilm.tokenizer.json", max_length: 36, pool: mean, normalize: l2}
  embed_audio:
    kind: embed
    inputs: [audio]
    params: {modality: audio, model: "$m/audio-resemblyzer.pt", frontend: mel, n_mels: 40, window: 160, hop: 77, min_coverage: 0.75, pool: mean, normalize: l2}
  embed_face:
    kind: embed
    inputs: [face]
    params: {modality: vision, model: "$m/vision-face-emotion.pt", image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5], interpolation: linear, pool: none}
YAML
(cd "$proj" && "$BIN" --cache "$out/cache" run all -j 1 --json > "$out/events.jsonl")
art() { (cd "$proj" && "$BIN" --cache "$out/cache" show "$1" --json) | "$py" -c "import json,sys; print(json.load(sys.stdin)['artifact'])"; }
"$py" scripts/bench/embed_peers.py "$(art ingest)" "$(art audio)" "$(art face)" "$out/cache/objects" > "$out/peers.json"
"$py" - "$out" "$N" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
ev = [json.loads(l) for l in open(f"{out}/events.jsonl") if l.startswith("{")]
secs = {e["stage"]: e.get("secs", 0.0) for e in ev if e.get("event") == "stage_done"}
peer = json.load(open(f"{out}/peers.json"))
rows = [
    ("text: all-MiniLM-L6-v2, 36 tokens, mean + L2", "embed_text", "text", "sentence-transformers encode"),
    ("audio: resemblyzer GE2E, 1.6 s partials, mean + L2", "embed_audio", "audio", "resemblyzer embed_utterance"),
    ("vision: face-emotion CNN on 48x48 grey crops", "embed_face", "vision", "package transform + network"),
]
lines = [f"## Pretrained embeddings, {n} demo clips, 2 cores, CPU, torch 2.13 on both sides", "",
         "| model | pipeline embed | clips/s | Python peer | clips/s | ratio |", "|---|---|---|---|---|---|"]
for name, stage, key, who in rows:
    a, b = secs[stage], peer[key]["secs"]
    lines.append(f"| {name} | {a:.2f} s | {n / a:.1f} | {who}: {b:.2f} s | {n / b:.1f} | {b / a:.2f}x |")
lines += ["", f"face crops embedded: {peer['vision']['items']}. Both sides' times include loading the model "
          "from disk (Python: " + ", ".join(f"{k} {v['load_secs']:.2f} s" for k, v in peer.items()) + "); the "
          "pipeline's also include storing each clip's output as a Parquet object."]
print("\n".join(lines))
open(f"{out}/embed.md", "w").write("\n".join(lines) + "\n")
PY
