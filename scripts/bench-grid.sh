#!/usr/bin/env bash
# The Uni2Mul Table 2 + Table 3 grid (pipeline/uni2mul.yaml: 18 stage-one encoders, 32 fusions,
# their evaluations and the two tables; one seed) on the BENCH_N-clip demo (default 120) from
# a cold cache: wall time, CPU time and CPU/wall of the whole run (GNU time), and how many
# trainings ran at once (the run's JSON events). With BENCH_BEFORE=DIR (a checkout of an
# earlier engine with its release build), the same grid with that engine first, in the same
# call, and whether both give the same tables.
# Writes bench/out/grid/grid.md.
. "$(dirname "$0")/bench/common.sh"
bench_init grid
root=$PWD
# One side: engine binary, its pipeline file, a name. Prints nothing; leaves $out/NAME.*.
side() {
  local bin=$1 file=$2 name=$3 cache=$out/cache-$3
  rm -rf "$cache"
  local m=$root/data/models/embed
  local vars=(-p "$file" --set "vars.data=$data" --set vars.seeds=1
    --set "vars.models=$root/data/models" --set "vars.vision_model=$m/vision-face-emotion.pt"
    --set "vars.audio_model=$m/audio-resemblyzer.pt" --set "vars.text_model=$m/text-minilm.pt"
    --set "vars.text_tokenizer=$m/text-minilm.tokenizer.json")
  /usr/bin/time -f '%e %U %S %M' -o "$out/$name.time" \
    "$bin" --cache "$cache" run table2 table3 "${vars[@]}" --json > "$out/$name.jsonl"
  "$bin" --cache "$cache" show table3 "${vars[@]}" --json > "$out/$name.table3.json" || true
  echo "$bin --cache $cache run table2 table3 ${vars[*]} --json" > "$out/$name.cmd"
}
names=()
if [ -n "${BENCH_BEFORE:-}" ]; then
  side "$BENCH_BEFORE/target/release/pipeline" "$BENCH_BEFORE/pipeline/uni2mul.yaml" before
  names+=(before)
fi
side "$BIN" "$root/pipeline/uni2mul.yaml" after
names+=(after)
python3 - "$out" "$N" "$(nproc)" "${names[@]}" <<'PY'
import json, sys
out, n, cores, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows, tables = [], {}
for name in names:
    wall, user, sys_, rss = open(f"{out}/{name}.time").read().split()[-4:]
    wall, cpu = float(wall), float(user) + float(sys_)
    now = most = trainings = 0
    for line in open(f"{out}/{name}.jsonl"):
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        training = e.get("stage", "").split("[")[0] in ("uni_v", "uni_a", "uni_t", "fusion")
        if e.get("event") == "stage_start" and training:
            now += 1; trainings += 1
        elif e.get("event") == "stage_done" and training and e.get("outcome") == "ran":
            now -= 1
        most = max(most, now)
    try:
        t3 = json.load(open(f"{out}/{name}.table3.json"))
        tables[name] = open(t3["artifact"], "rb").read()
    except Exception:
        pass
    rows.append((name, wall, cpu, int(rss) / 1024, trainings, most))
lines = [f"| engine | wall | CPU (user+sys) | CPU / wall | peak RSS | trainings | most at once |",
         "|---|---|---|---|---|---|---|"]
for name, wall, cpu, rss, t, most in rows:
    lines.append(f"| {name} | {wall:.1f} s | {cpu:.1f} s | {cpu / wall:.2f} | {rss:.0f} MiB | {t} | {most} |")
if len(rows) == 2:
    lines += ["", f"after / before: {rows[0][1] / rows[1][1]:.2f}x faster in wall time."]
    if len(tables) == 2:
        same = tables["before"] == tables["after"]
        lines.append(f"Table 3 artifact byte-identical on both engines: {'yes' if same else 'no'}.")
lines += ["", f"{n} clips, {cores} cores, one seed, cold cache. Commands:", ""]
lines += [f"- `{open(f'{out}/{name}.cmd').read().strip()}`" for name in names]
open(f"{out}/grid.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
