"""Compares the GPU check's runs: embeddings of each embed stage (max abs difference over every
value of every clip) and each training's test metrics, side by side, with each run's wall time.

Usage: compare.py BUNDLE RUN [RUN ...]   (a RUN is a name whose cache is BUNDLE/cache-RUN and
whose events are BUNDLE/RUN.jsonl; `ref` is the CPU run made where the bundle was built)
Writes BUNDLE/results.json and prints a Markdown summary.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

EMBED = ["embed_vision", "embed_audio"]
TRAINED = {"fusion": "eval_fusion", "smp": "eval_smp"}


def engine(bundle, run, *args):
    cmd = [os.path.join(bundle, "bin", "pipeline"), "--cache", os.path.join(bundle, f"cache-{run}"),
           *args, "-p", os.path.join(bundle, "pipeline", "check.yaml"), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def objects(bundle, run, stage):
    """Per clip: the stage's values, from the index of a sharded stage."""
    art = engine(bundle, run, "show", stage)[0]["artifact"]
    idx = pq.read_table(art).to_pydict()
    out = {}
    for clip, obj in zip(idx["clip_id"], idx["object"]):
        path = os.path.join(bundle, f"cache-{run}", "objects", obj[:2], f"{obj}.parquet")
        t = pq.read_table(path).to_pydict()
        out[clip] = np.asarray(t["values"][0], dtype=np.float32)
    return out


def metrics(bundle, run):
    rows = engine(bundle, run, "metrics", "table_main")
    out = {}
    for r in rows:
        if r.get("split") == "test":
            out[r["stage"]] = {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}
    return out


def runtime(bundle, run, stage):
    return engine(bundle, run, "show", stage)[0].get("runtime")


def wall(bundle, run):
    path = os.path.join(bundle, f"{run}.time")
    return float(open(path).read().split()[0]) if os.path.exists(path) else None


def main():
    bundle, runs = sys.argv[1], sys.argv[2:]
    res = {"runs": {}, "embed_max_abs_diff": {}}
    emb = {}
    for run in runs:
        emb[run] = {s: objects(bundle, run, s) for s in EMBED}
        res["runs"][run] = {
            "wall_s": wall(bundle, run),
            "metrics": metrics(bundle, run),
            "device": {s: (runtime(bundle, run, s) or {}).get("device") for s in EMBED + list(TRAINED)},
        }
    base = runs[0]
    for run in runs[1:]:
        for s in EMBED:
            a, b = emb[base][s], emb[run][s]
            assert a.keys() == b.keys(), f"{s}: other clips in {run}"
            d = max(float(np.max(np.abs(a[c] - b[c]))) if a[c].size else 0.0 for c in a)
            res["embed_max_abs_diff"][f"{s} {run} vs {base}"] = d
    json.dump(res, open(os.path.join(bundle, "results.json"), "w"), indent=1)
    lines = ["| run | wall | devices |", "|---|---|---|"]
    for run in runs:
        r = res["runs"][run]
        w = f"{r['wall_s']:.1f} s" if r["wall_s"] is not None else "-"
        lines.append(f"| {run} | {w} | {', '.join(f'{k}: {v}' for k, v in r['device'].items())} |")
    lines += ["", "| embeddings | max abs difference | within 1e-3 |", "|---|---|---|"]
    for k, d in res["embed_max_abs_diff"].items():
        lines.append(f"| {k} | {d:.2e} | {'yes' if d <= 1e-3 else 'NO'} |")
    names = sorted({m for run in runs for st in res["runs"][run]["metrics"].values() for m in st})
    lines += ["", "| stage | metric | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    stages = sorted({st for run in runs for st in res["runs"][run]["metrics"]})
    for st in stages:
        for m in names:
            vals = [res["runs"][run]["metrics"].get(st, {}).get(m) for run in runs]
            if all(v is None for v in vals):
                continue
            lines.append(f"| {st} | {m} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    print("\n".join(lines))
    bad = [k for k, d in res["embed_max_abs_diff"].items() if d > 1e-3]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
