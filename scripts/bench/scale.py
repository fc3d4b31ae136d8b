"""Writes the scale section of bench/RESULTS.md and a PNG of time against clips from what
scripts/bench-scale.sh left in its output folder (scale-N.json, one per size).
Usage: scale.py OUT_DIR RESULTS_MD CHART_PNG
The section sits between `<!-- scale -->` and `<!-- /scale -->`; the rest of the file is kept
(scripts/bench/results.py carries the section over when it rewrites the file).
"""
import datetime
import json
import subprocess
import sys
from pathlib import Path

out, md_path, png_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
BEGIN, END = "<!-- scale -->", "<!-- /scale -->"
WORKLOADS = [("cold", "cold run"), ("noop", "no-op rerun"), ("status", "status / dry run"),
             ("input", "one of the inputs changed"), ("param", "one param read only by stage 6 changed")]
PEAK_LABELS = {"cold": "cold", "noop": "no-op rerun", "status": "status / dry run",
               "input": "one input changed", "param": "lr changed"}

runs = {}
for p in sorted(out.glob("scale-*.json")):
    d = json.load(open(p))
    runs[d["n"]] = d
sizes = sorted(runs)


def cell(s):
    if not s:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:.3f} s"
    return f"{s['median']:.3f} s ({s['min']:.3f}–{s['max']:.3f}, n={s['n']})"


def med(n, tool, w):
    t = runs[n]["tools"].get(tool)
    return t[w]["median"] if t and w in t else None


def peak(n, tool, w):
    t = runs[n]["tools"].get(tool)
    return t.get("peak", {}).get(PEAK_LABELS[w]) if t else None


def mib(b):
    # A command shorter than the 50 ms sampling period is not sampled.
    return "—" if b is None else ("under 50 ms, not sampled" if b == 0 else f"{b / 2**20:.0f} MiB")


git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [BEGIN, "## Scale: 2281 to 228100 clips", "",
         f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at git {git} by "
         "`make bench-scale` (scripts/bench-scale.sh): the orchestration workload above "
         "(scripts/bench/orchestration.py, 7 stages, 10 KB inputs, `cat`/`echo` per clip) at three sizes, this "
         "project and DVC side by side in one run. Wall time, median (min–max, runs); peak memory is the "
         "resident memory of the whole process tree (the tool and every process it started), sampled "
         "every 50 ms. DVC runs where its cold run fits in 20 minutes.", ""]
for n in sizes:
    tools = runs[n]["tools"]
    lines += [f"### {n} clips", ""]
    if runs[n].get("git"):
        lines += [f"Engine at git {runs[n]['git']}." + (f" {runs[n]['source'][0].upper()}{runs[n]['source'][1:]}."
                                                         if runs[n].get("source") else ""), ""]
    lines += ["| workload | pipeline | peak | DVC | peak | DVC / pipeline |", "|---|---|---|---|---|---|"]
    for w, label in WORKLOADS:
        ours, dvc = med(n, "pipeline", w), med(n, "dvc", w)
        ratio = f"{dvc / ours:.1f}x" if ours and dvc else "—"
        lines.append(f"| {label} | {cell(tools.get('pipeline', {}).get(w))} | {mib(peak(n, 'pipeline', w))} | "
                     f"{cell(tools.get('dvc', {}).get(w))} | {mib(peak(n, 'dvc', w))} | {ratio} |")
    p = tools.get("pipeline", {})
    if p.get("input_items"):
        per = ", ".join(f"{k} {'—' if v is None else v}" for k, v in p["input_items"].items())
        after = f"; after the param change: {', '.join(p['param_ran'])}" if p.get("param_ran") else ""
        lines += ["", f"After one input changed, items recomputed per per-clip stage: {per}{after}."]
    known = [(m, med(m, "dvc", "cold")) for m in sizes if m < n and med(m, "dvc", "cold")]
    if "dvc" not in tools and known:
        m, c = known[-1]
        lines += ["", f"DVC not run at {n} clips: its cold run grows linearly ({c:.1f} s at {m} clips above), "
                      f"so it would take about {c * n / m / 60:.0f} minutes here."]
    notes = out / f"notes-{n}.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    lines.append("")

# Growth and aims.
lines += ["### Growth and aims", "", "| workload | " + " | ".join(f"{a} → {b} clips" for a, b in zip(sizes, sizes[1:]))
          + " |", "|---|" + "---|" * max(1, len(sizes) - 1)]
for w, label in WORKLOADS:
    cells = []
    for a, b in zip(sizes, sizes[1:]):
        x, y = med(a, "pipeline", w), med(b, "pipeline", w)
        cells.append(f"{y / x:.1f}x time for {b / a:.0f}x clips" if x and y else "—")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
lines += ["", "| aim | measured | met |", "|---|---|---|"]
big = max(sizes) if sizes else None


def aim(text, value, ok, fmt):
    lines.append(f"| {text} | {fmt(value) if value is not None else 'not measured'} | "
                 f"{'—' if value is None else ('yes' if ok(value) else 'no')} |")


if big:
    s = lambda v: f"{v:.2f} s"
    aim(f"no-op rerun ≤ 2 s at {big} clips", med(big, "pipeline", "noop"), lambda v: v <= 2, s)
    aim(f"status ≤ 2 s at {big} clips", med(big, "pipeline", "status"), lambda v: v <= 2, s)
    aim(f"one input changed ≤ 3 s at {big} clips", med(big, "pipeline", "input"), lambda v: v <= 3, s)
    pk = max((v for v in runs[big]["tools"].get("pipeline", {}).get("peak", {}).values()), default=None)
    aim(f"peak memory ≤ 2 GB at {big} clips (any workload)", pk, lambda v: v <= 2e9, mib)
if 22810 in runs:
    o, d = med(22810, "pipeline", "input"), med(22810, "dvc", "input")
    aim("one input changed ≥ 100x faster than DVC at 22810 clips", d / o if o and d else None,
        lambda v: v >= 100, lambda v: f"{v:.0f}x")
if 2281 in runs:
    o, d = med(2281, "pipeline", "param"), med(2281, "dvc", "param")
    aim("one param changed ≥ 3x faster than DVC at 2281 clips", d / o if o and d else None,
        lambda v: v >= 3, lambda v: f"{v:.1f}x")
lines += ["", f"![time against clips]({png_path.name})", "", END]

text = md_path.read_text() if md_path.exists() else ""
block = "\n".join(lines)
if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
else:
    marker = "## Targets"
    text = text.replace(marker, block + "\n\n" + marker, 1) if marker in text else text + "\n" + block + "\n"
md_path.write_text(text)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(7.5, 5))
colors = dict(zip([w for w, _ in WORKLOADS], ["C0", "C1", "C2", "C3", "C4"]))
for tool, style in [("pipeline", "-o"), ("dvc", "--s")]:
    for w, label in WORKLOADS:
        xs = [n for n in sizes if med(n, tool, w) is not None]
        if xs:
            ax.plot(xs, [med(n, tool, w) for n in xs], style, color=colors[w],
                    label=f"{'pipeline' if tool == 'pipeline' else 'DVC'}: {label}")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("clips")
ax.set_ylabel("wall time (s)")
ax.set_title("Orchestration workload: time against clips (2 cores)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7, loc="upper left")
fig.tight_layout()
fig.savefig(png_path, dpi=110)
print(f"wrote the scale section of {md_path} and {png_path}")
