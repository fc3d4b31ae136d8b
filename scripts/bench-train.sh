#!/usr/bin/env bash
# Uni2Mul training on the demo data (pipeline/uni2mul.yaml, one variant):
# 1. a cold run of one Conformer fusion and everything under it, then the same with the fusion
#    type changed to a transformer (only that fusion and its evaluation run);
# 2. seconds per training epoch of the audio model and of the Conformer fusion, against the same
#    models in PyTorch (scripts/bench/train_peer.py) on the same features, on 1 and 2 threads.
#    The pipeline's epoch time is (stage time at 12 epochs - at 2 epochs) / 10, so loading,
#    set-up and storing the artifact are not counted; the peer's is the median epoch.
. "$(dirname "$0")/bench/common.sh"
bench_init train
bench_torch_python
cache=$out/cache; rm -rf "$cache"
P=(--cache "$cache")
R=(-p pipeline/uni2mul.yaml --set "vars.data=$data" --set vars.seeds=1 --json)
one() { echo "$1[source=iua,seed=1,fusion=$2,multitask=true,pretrained=true]"; }
# Seconds of stage $2 in the JSON events of file $1.
secs() { "$py" -c "import json,sys; print(sum(e.get('secs',0) for e in map(json.loads, open(sys.argv[1])) if e.get('event')=='stage_done' and e.get('stage')==sys.argv[2] and e.get('outcome')=='ran'))" "$1" "$2"; }
# Runs "$@" with stdout to file $1; prints the wall seconds.
wall() { local f=$1 s e; shift; s=$(date +%s%N); "$@" > "$f"; e=$(date +%s%N); awk -v d=$((e - s)) 'BEGIN {printf "%.2f", d / 1e9}'; }

cold=$(wall "$out/cold.jsonl" "$BIN" "${P[@]}" run "${R[@]}" "$(one evaluate conformer)")
rerun=$(wall "$out/rerun.jsonl" "$BIN" "${P[@]}" run "${R[@]}" "$(one evaluate transformer)")
ran_rerun=$("$py" -c "import json,sys; print(', '.join(e['stage'] for e in map(json.loads, open(sys.argv[1])) if e.get('event')=='stage_done' and e.get('outcome')=='ran'))" "$out/rerun.jsonl")
ran_cold=$("$py" -c "import json,sys; print(sum(1 for e in map(json.loads, open(sys.argv[1])) if e.get('event')=='stage_done' and e.get('outcome')=='ran'))" "$out/cold.jsonl")

uni_a='uni_a[model=cnn_attn_bilstm,source=iua,seed=1]'
fus=$(one fusion conformer)
declare -A ours
for th in 1 2; do
  for ep in 2 12; do
    f=$out/epochs-$th-$ep.jsonl
    "$BIN" "${P[@]}" run "${R[@]}" --set uni_a.epochs=$ep --set uni_a.threads=$th \
      --set fusion.epochs=$ep --set fusion.threads=$th "$uni_a" "$fus" > "$f"
    ours[a$th$ep]=$(secs "$f" "$uni_a"); ours[f$th$ep]=$(secs "$f" "$fus")
  done
done
art() { "$BIN" "${P[@]}" show -p pipeline/uni2mul.yaml --set "vars.data=$data" "$1" --json | "$py" -c "import json,sys; print(json.load(sys.stdin)['artifact'])"; }
args=("$(art audio_seq)" "$(art vision_seq)" "$(art text_seq)" "$(art 'labels[source=iua]')" "$(art split)" "$cache/objects")
for th in 1 2; do "$py" scripts/bench/train_peer.py "${args[@]}" 12 $th > "$out/peer-$th.json"; done

"$py" - "$out" "$N" "$cold" "$rerun" "$ran_cold" "$ran_rerun" \
  "${ours[a12]}" "${ours[a112]}" "${ours[f12]}" "${ours[f112]}" \
  "${ours[a22]}" "${ours[a212]}" "${ours[f22]}" "${ours[f212]}" <<'PY'
import json, sys
out, n, cold, rerun, ran_cold, ran_rerun = sys.argv[1:7]
v = list(map(float, sys.argv[7:]))
ours = {1: {"audio": (v[1] - v[0]) / 10, "conformer": (v[3] - v[2]) / 10},
        2: {"audio": (v[5] - v[4]) / 10, "conformer": (v[7] - v[6]) / 10}}
peer = {th: json.load(open(f"{out}/peer-{th}.json")) for th in (1, 2)}
p = peer[1]
lines = [f"## Uni2Mul training, {n} demo clips ({p['train']} train, {p['valid']} valid), CPU, torch 2.13 on both sides", "",
         f"One Conformer fusion (IUA, seed 1, multi-task, pre-trained) and all it needs, cold: {float(cold):.1f} s "
         f"({ran_cold} stages ran). The same with fusion=transformer: {float(rerun):.1f} s; ran: {ran_rerun}.", "",
         "Seconds per training epoch (training steps + validation pass + best-weights snapshot):", "",
         "| model | threads | pipeline (tch) | PyTorch | pipeline / PyTorch |", "|---|---|---|---|---|"]
for name, key in (("audio CNN-ATTN-BiLSTM, 128 x D", "audio"), ("Conformer fusion, frozen encoders, multi-task", "conformer")):
    for th in (1, 2):
        a, b = ours[th][key], peer[th][f"{key}_epoch_s"]
        lines.append(f"| {name} | {th} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
print("\n".join(lines))
open(f"{out}/train.md", "w").write("\n".join(lines) + "\n")
PY
