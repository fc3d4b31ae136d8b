"""Writes bench/RESULTS.md and a PNG bar chart of the speed ratios from the figures that
scripts/bench-peers.sh left in its output folder (orch-*.json, media.md, e2e-*.json).
Usage: results.py OUT_DIR RESULTS_MD CHART_PNG
"""
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

out, md_path, png_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
venv = Path(os.environ.get("BENCH_PEERS_VENV", ".venv-peers"))


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return "?"


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 2**20
    return 0


def load(name):
    p = out / name
    return json.load(open(p)) if p.exists() else None


WORKLOADS = [("cold", "cold run"), ("noop", "no-op rerun"), ("status", "status / dry run"),
             ("param", "one param read only by stage 6 changed"), ("input", "one of the inputs changed")]
PEERS = [("dvc", "DVC"), ("snakemake", "Snakemake")]


def cell(s):
    if not s:
        return "not run"
    if s["n"] == 1:
        return f"{s['median']:.3f} s (n=1)"
    return f"{s['median']:.3f} s ({s['min']:.3f}–{s['max']:.3f}, n={s['n']})"


def items(r):
    it = r.get("input_items") or {}
    per = [f"{k} {'—' if v is None else v}" for k, v in it.items()]
    return ", ".join(per)


lines = ["# Benchmarks against DVC, Snakemake and the Python feature tools", ""]
lines += [f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `make bench-peers` "
          "(scripts/bench-peers.sh); every tool is driven through its command line only.", ""]
lines += ["## Machine and versions", "",
          f"- CPU: {cpu_model()}, {os.cpu_count()} cores; {mem_gib():.0f} GiB memory; {platform.platform()}",
          f"- pipeline: git {sh('git', 'rev-parse', '--short', 'HEAD')}, {sh('rustc', '--version')}",
          f"- DVC {sh(str(venv / 'bin' / 'dvc'), '--version')}, Snakemake {sh(str(venv / 'bin' / 'snakemake'), '--version')}, "
          f"Python {platform.python_version()}",
          ""]

ratios = []  # (label, peer, ratio)
for n_name in ("orch-2281.json", "orch-22810.json"):
    r = load(n_name)
    if not r:
        continue
    n, t = r["n"], r["tools"]
    ours = t.get("pipeline")
    lines += [f"## Orchestration overhead, {n} clips", "",
              "The same 7-stage pipeline (ingest → decode → face → logmel → embed → train → eval) over "
              f"{n} inputs of 10 KB whose per-clip work is one `cat` and one `echo`, so the times are the "
              "tools' own overhead (scripts/bench/orchestration.py writes each tool's files). "
              "Wall time, median (min–max, runs).", "",
              "| workload | pipeline | DVC | Snakemake | DVC / pipeline | Snakemake / pipeline |",
              "|---|---|---|---|---|---|"]
    for key, label in WORKLOADS:
        row = [label, cell(ours and ours.get(key))]
        for p, _ in PEERS:
            row.append(cell(t.get(p, {}).get(key)))
        for p, pname in PEERS:
            if ours and t.get(p, {}).get(key):
                x = t[p][key]["median"] / ours[key]["median"]
                row.append(f"{x:.1f}x")
                ratios.append((f"{label}\n({n} clips)", pname, x))
            else:
                row.append("—")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "What reran:", ""]
    for name, r_ in [("pipeline", ours)] + [(pn, t.get(p)) for p, pn in PEERS]:
        if not r_:
            continue
        lines.append(f"- {name}: after the param change {', '.join(r_['param_ran'])}; after one input changed, "
                     f"items recomputed per per-clip stage: {items(r_)}; no-op rerun ran "
                     f"{', '.join(r_['noop_ran']) or 'nothing'}; cold CPU time {r_['cold_cpu']['median']:.1f} s.")
    if ours:
        lines.append("- pipeline's ingest is a table stage: it re-reads the manifest and re-hashes only the "
                     "clips whose size, mtime or inode changed (—).")
    if "snakemake" not in t:
        lines.append("- Snakemake was left out at this size: its cold run at 2281 clips already takes about "
                     "8 minutes and its job scheduling grows faster than linearly with the job count, so a "
                     "cold run here would not fit in the 10 minutes per tool.")
    lines.append("")

media = out / "media.md"
if media.exists():
    text = media.read_text()
    when = datetime.datetime.fromtimestamp(media.stat().st_mtime, datetime.timezone.utc)
    lines += [text.replace("## Media front half", "## Feature extraction against the Python tools: media front half"),
              f"Measured {when:%Y-%m-%d %H:%M} UTC by scripts/bench-media.sh.", ""]
    lines += ["Both sides use the same 2 cores: the pipeline's stages spread clips over both, the Python "
              "scripts (scripts/bench/peers.py) run a 2-process pool, so the ratios are also per core.", ""]
    for row in text.splitlines():
        if row.startswith("| ") and "x |" in row:
            cols = [c.strip() for c in row.strip("|").split("|")]
            ratios.append((cols[0].split(",")[0] + "\n(" + cols[3].split(":")[0].split(" ")[0] + ")", "Python tools",
                           float(cols[5].rstrip("x"))))

e2e = [load(f) for f in sorted(os.listdir(out)) if f.startswith("e2e-") and f.endswith(".json")] if out.exists() else []
e2e = sorted([e for e in e2e if e], key=lambda e: e["n"])
if e2e:
    lines += ["## End to end: the Uni2Mul study, `pipeline run all`", "",
              "`" + e2e[0]["command"].replace(str(Path.cwd()) + "/", "") + "` on demo datasets (CH-SIMS layout) "
              "from a cold cache; GNU time for the whole run, the run's JSON events for each stage's time "
              "(matrix variants summed).", "",
              "| clips | wall | CPU (user+sys) | peak RSS |", "|---|---|---|---|"]
    for e in e2e:
        lines.append(f"| {e['n']} | {e['wall']:.1f} s | {e['cpu']:.1f} s | {e['peak_rss_mib']:.0f} MiB |")
    names = []
    for e in e2e:
        for s in e["stages"]:
            if s not in names:
                names.append(s)
    lines += ["", "| stage | " + " | ".join(f"{e['n']} clips" for e in e2e) + " |",
              "|---|" + "---|" * len(e2e)]
    for s in names:
        cells = []
        for e in e2e:
            st = e["stages"].get(s)
            cells.append(f"{st['secs']:.2f} s ({st['variants']})" if st else "—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Stage times are summed over a stage's matrix variants. Trainings hold libtorch's one "
              "process-wide random generator from seeding to their last step, so that each is "
              "reproducible: they run one at a time on one core, and a training's time includes its wait "
              "for the generator, which is why the summed times exceed the wall time and CPU time is "
              "close to wall time. `fusion` is Table 3's 32-model grid "
              "(IUA/IMA x 4 fusion types x single/multi-task x frozen stage-one encoders or not).", ""]

# Targets, reported rather than tested.
lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
for size in ("2281", "22810"):
    big = load(f"orch-{size}.json")
    if not big or "pipeline" not in big["tools"]:
        continue
    for p, pname in PEERS:
        if p in big["tools"]:
            x = big["tools"][p]["noop"]["median"] / big["tools"]["pipeline"]["noop"]["median"]
            lines.append(f"| no-op rerun ≥ 20x faster than {pname} ({size} clips) | {x:.1f}x | {'yes' if x >= 20 else 'no'} |")
o = load("orch-2281.json")
if o and "pipeline" in o["tools"]:
    t = o["tools"]
    it = t["pipeline"].get("input_items", {})
    per_clip = {k: v for k, v in it.items() if v is not None}
    ok = bool(per_clip) and all(v == 1 for v in per_clip.values())
    lines.append(f"| a one-clip change recomputes 1 item per per-clip stage | {items(t['pipeline'])} | {'yes' if ok else 'no'} |")
if media.exists():
    rows = {}
    for row in media.read_text().splitlines():
        if row.startswith("| ") and "x |" in row:
            cols = [c.strip() for c in row.strip("|").split("|")]
            rows[cols[0]] = (float(cols[1].split()[0]), float(cols[3].split(":")[1].split()[0]))
    lm = rows.get("log-mel + MFCC")
    if lm:
        x = lm[1] / lm[0]
        lines.append(f"| log-mel and MFCC ≥ 2x librosa per core | {x:.1f}x | {'yes' if x >= 2 else 'no'} |")
    dec, aud = rows.get("decode, 10 frames per clip"), rows.get("audio split, mono 16 kHz")
    if dec and aud:
        x = (dec[1] + aud[1]) / (dec[0] + aud[0])
        lines.append(f"| decode + audio split ≥ 3x opencv-python + ffmpeg CLI | {x:.1f}x | {'yes' if x >= 3 else 'no'} |")
lines.append("")
missing = [what for f, what in [("orch-2281.json", "orchestration at 2281 clips (`orch`)"),
                                 ("orch-22810.json", "orchestration at 22810 clips (`orch-big`)"),
                                 ("media.md", "media front half (`media`)"),
                                 ("e2e-120.json", "Uni2Mul end to end on 120 clips (`e2e`)"),
                                 ("e2e-1000.json", "Uni2Mul end to end on 1000 clips (`e2e`)")]
           if not (out / f).exists()]
if missing:
    lines += ["## Not measured in this run", ""] + [f"- {m}" for m in missing] + [""]
lines += ["## Commands", "",
          "```", "make bench-peers                       # everything below, then this file",
          "BENCH_PARTS=orch make bench-peers      # one part: orch, orch-big, media, e2e",
          "python3 scripts/bench/orchestration.py BIN WORKDIR N pipeline,dvc,snakemake OUT.json",
          "scripts/bench-media.sh                 # BENCH_N clips (default 120)",
          "scripts/bench/e2e.sh N OUT.json", "```", ""]
# The scale section (scripts/bench/scale.py, `make bench-scale`) is measured apart; kept as is.
old = md_path.read_text() if md_path.exists() else ""
if "<!-- scale -->" in old and "<!-- /scale -->" in old:
    block = old[old.index("<!-- scale -->"):old.index("<!-- /scale -->") + len("<!-- /scale -->")]
    at = lines.index("## Targets") if "## Targets" in lines else len(lines)
    lines[at:at] = [block, ""]
md_path.write_text("\n".join(lines))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is missing: no chart", file=sys.stderr)
    sys.exit(0)
if ratios:
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(ratios)), 5.5))
    colours = {"DVC": "#4c72b0", "Snakemake": "#dd8452", "Python tools": "#55a868"}
    xs = range(len(ratios))
    ax.bar(xs, [r[2] for r in ratios], color=[colours[r[1]] for r in ratios])
    for x, r in zip(xs, ratios):
        ax.text(x, r[2] * 1.05, f"{r[2]:.1f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r[0] for r in ratios], rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.axhline(20, color="grey", linestyle="--", linewidth=0.8)
    ax.text(len(ratios) - 0.5, 21, "20x", color="grey", fontsize=7, ha="right")
    ax.set_ylabel("peer time / pipeline time (log scale)")
    ax.set_title("How many times faster pipeline is (median wall time)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()],
              labels=list(colours), fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
