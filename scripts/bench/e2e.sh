#!/usr/bin/env bash
# End to end: `pipeline run all` of the Uni2Mul study (pipeline/uni2mul.yaml, one seed) on an
# N-clip demo dataset from a cold cache: wall time, CPU time and peak RSS of the whole run
# (GNU time), and each stage's own time (the run's JSON events).
# Usage: e2e.sh N OUT_JSON
set -euo pipefail
cd "$(dirname "$0")/../.."
n=$1; out_json=$2
BIN=$PWD/target/release/pipeline
work=bench/out/e2e; mkdir -p "$work"
data=$PWD/$work/demo-$n
[ -f "$data/.made" ] || { rm -rf "$data"; scripts/demo/make-demo.sh "$data" "$n" 1 >/dev/null; touch "$data/.made"; }
cache=$PWD/$work/cache-$n; rm -rf "$cache"
cmd=("$BIN" --cache "$cache" run all -p pipeline/uni2mul.yaml --set "vars.data=$data" --set vars.seeds=1 --json)
/usr/bin/time -f '%e %U %S %M' -o "$work/time-$n" "${cmd[@]}" > "$work/events-$n.jsonl" || {
  code=$?; [ $code = 3 ] || { echo "e2e: run exited with $code" >&2; exit $code; }
}
python3 - "$work/time-$n" "$work/events-$n.jsonl" "$n" "$out_json" "${cmd[*]}" <<'PY'
import json, sys
tfile, events, n, out, cmd = sys.argv[1:6]
wall, user, sys_, rss = open(tfile).read().split()[-4:]
stages = {}
for line in open(events):
    if not line.startswith("{"):
        continue
    e = json.loads(line)
    if e.get("event") == "stage_done" and e.get("outcome") == "ran":
        # Matrix variants are summed under their base name.
        base = e["stage"].split("[")[0]
        s = stages.setdefault(base, {"secs": 0.0, "variants": 0})
        s["secs"] += e.get("secs", 0.0)
        s["variants"] += 1
json.dump({"n": int(n), "wall": float(wall), "cpu": float(user) + float(sys_),
           "peak_rss_mib": int(rss) / 1024, "stages": stages, "command": cmd}, open(out, "w"), indent=1)
print(f"e2e {n} clips: {float(wall):.1f} s wall, {float(user) + float(sys_):.1f} s CPU, {int(rss) / 1024:.0f} MiB peak RSS")
PY
