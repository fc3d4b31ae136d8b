"""Orchestration overhead of this project, DVC and Snakemake on one workload.

The workload: N per-clip inputs of 10 KB and a 7-stage linear pipeline
ingest -> decode -> face -> logmel -> embed -> train -> eval whose work is trivial (each per-clip
stage appends a line to its input clip's bytes; train counts the bytes of every clip and records
its learning rate; eval copies train's output), so the times are the tools' own overhead.
Each tool gets the pipeline the way its users write it:
- this project: the built-in `ingest` over a CSV manifest, then `command` stages, per clip for
  decode..embed and per table for train and eval (pipeline/default.yaml);
- Snakemake: a wildcard rule per clip for ingest..embed, then aggregate rules (Snakefile);
- DVC: one stage per step with directory deps and outs (dvc.yaml), a shell loop over the clips.
Each tool is driven through its command line only, in a folder of its own.

Usage: orchestration.py PIPELINE_BIN WORKDIR N TOOLS OUT_JSON
Environment: BENCH_REPEAT (reruns per measurement, default 5), BENCH_COLD (cold runs, default 3),
BENCH_SNAKEMAKE_COLD (Snakemake's cold runs, default 1: one takes 20 minutes at 2281 clips).
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

STEPS = ["ingest", "decode", "face", "logmel", "embed"]  # per clip
CLIP_BYTES = 10 * 1024


def clip_name(i):
    return f"c{i:06d}"


def make_inputs(raw: Path, n: int):
    raw.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = raw / f"{clip_name(i)}.bin"
        if not p.exists():
            # Distinct, deterministic content per clip.
            seed = (f"clip {i}\n").encode()
            p.write_bytes((seed * (CLIP_BYTES // len(seed) + 1))[:CLIP_BYTES])


PAGE = os.sysconf("SC_PAGE_SIZE")
# The peak memory of the last timed command's whole process tree, in bytes.
LAST_PEAK = [0]


def tree_rss(root):
    """Resident bytes of `root` and every process below it, from /proc."""
    kids, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        fields = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(d))
        rss[int(d)] = int(fields[21]) * PAGE
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(kids.get(p, []))
    return total


def timed(cmd, cwd, env=None, ok=(0,)):
    """Runs cmd; returns (wall seconds, CPU seconds of the children, stdout). The peak resident
    memory of its process tree (sampled every 50 ms) is left in LAST_PEAK."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_rss(p.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = p.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # A command shorter than one sample still counts its own peak.
    LAST_PEAK[0] = max(peak[0], (after.ru_maxrss if after.ru_maxrss > before.ru_maxrss else 0) * 1024)
    out = stdout.decode(errors="replace")
    if p.returncode not in ok:
        raise SystemExit(f"{' '.join(map(str, cmd))} in {cwd} exited with {p.returncode}:\n{out[-3000:]}")
    return wall, cpu, out


def stats(xs):
    s = sorted(xs)
    return {"median": s[(len(s) - 1) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2,
            "min": s[0], "max": s[-1], "n": len(s), "all": xs}


def file_state(root: Path, dirs):
    """(mtime_ns, size) of every file under each output folder."""
    out = {}
    for d in dirs:
        base = root / d
        m = {}
        if base.exists():
            for e in os.scandir(base):
                st = e.stat(follow_symlinks=False)
                m[e.name] = (st.st_mtime_ns, st.st_ino)
        out[d] = m
    return out


def changed(before, after):
    return {d: sum(1 for k, v in after[d].items() if before[d].get(k) != v) for d in after}


class Tool:
    name = ""

    def __init__(self, work: Path, raw: Path, n: int, lr: float):
        self.dir = work / self.name
        self.n = n
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        shutil.copytree(raw, self.dir / "raw")
        self.lr = lr
        self.write(lr)

    def set_lr(self, lr):
        self.lr = lr
        self.write(lr)

    def run_files(self, cmd, env=None):
        """Runs a peer that writes its outputs into the project; what it recomputed is read
        from which output files are new or rewritten."""
        dirs = STEPS + ["train"]
        before = file_state(self.dir, dirs)
        wall, cpu, _ = timed(cmd, self.dir, env)
        ch = changed(before, file_state(self.dir, dirs))
        ran = [s for s in dirs if ch[s]]
        if "train" in ran:
            ran.append("eval")
        return wall, cpu, ran, {s: ch[s] for s in STEPS}

    def touch_input(self, i):
        p = self.dir / "raw" / f"{clip_name(i)}.bin"
        with open(p, "ab") as f:
            f.write(b"changed\n")


def item_line(stage, src, dst):
    return f'{{ cat {src}; echo {stage}; }} > {dst}'


class Ours(Tool):
    name = "pipeline"

    def __init__(self, binary, *a):
        self.bin = binary
        super().__init__(*a)

    def write(self, lr):
        d = self.dir
        if not (d / "clips.csv").exists():
            with open(d / "clips.csv", "w") as f:
                f.write("id,path,text,label,split\n")
                for i in range(self.n):
                    f.write(f"{clip_name(i)},raw/{clip_name(i)}.bin,,0,train\n")
        (d / "pipeline").mkdir(exist_ok=True)
        y = [f"vars: {{lr: {lr}}}", "stages:",
             "  ingest: {kind: ingest, params: {layout: csv, root: clips.csv}}"]
        prev = "ingest"
        for s in STEPS[1:]:
            src = "from: media, " if prev == "ingest" else ""
            y.append(f"  {s}: {{kind: command, inputs: [{prev}], params: {{{src}cmd: \"{item_line(s, '{in}', '{out}')}\"}}}}")
            prev = s
        y.append("  train: {kind: command, inputs: [embed], params: {per: table, "
                 "cmd: \"find {in} -type f | sort | xargs cat | wc -c > {out}/model.txt; echo lr=${lr} >> {out}/model.txt\"}}")
        y.append("  eval: {kind: command, inputs: [train], params: {per: table, "
                 "cmd: \"cat {in}/model.txt > {out}/metrics.txt\"}}")
        (d / "pipeline" / "default.yaml").write_text("\n".join(y) + "\n")

    def clean(self):
        shutil.rmtree(self.dir / "cache", ignore_errors=True)

    def run(self):
        wall, cpu, out = timed([self.bin, "run", "all", "--json"], self.dir)
        items = {}
        ran = []
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            if e.get("event") == "stage_done":
                if e.get("outcome") == "ran":
                    ran.append(e["stage"])
                    if e["stage"] in STEPS[1:]:
                        items[e["stage"]] = e.get("computed", 0)
        # ingest reads the manifest and hashes only the clips whose size or mtime changed; the
        # clips it lists are counted as its items.
        if "ingest" in ran:
            items["ingest"] = None
        return wall, cpu, ran, items

    def status(self):
        return timed([self.bin, "status"], self.dir)[:2]


class Snakemake(Tool):
    name = "snakemake"

    def __init__(self, venv, *a):
        self.exe = str(Path(venv) / "bin" / "snakemake")
        super().__init__(*a)

    def write(self, lr):
        d = self.dir
        (d / "config.yaml").write_text(f"lr: {lr}\n")
        rules = ['configfile: "config.yaml"',
                 'CLIPS, = glob_wildcards("raw/{c}.bin")',
                 "",
                 "rule all:",
                 '    input: "eval/metrics.txt"',
                 ""]
        prev = "raw"
        for s in STEPS:
            rules += [f"rule {s}:",
                      f'    input: "{prev}/{{c}}.bin"',
                      f'    output: "{s}/{{c}}.bin"',
                      # Literal braces are doubled in Snakemake's format strings.
                      f'    shell: "{item_line(s, "{input}", "{output}").replace("{ cat", "{{ cat").replace("; }", "; }}")}"',
                      ""]
            prev = s
        rules += ["rule train:",
                  '    input: expand("embed/{c}.bin", c=CLIPS)',
                  '    output: "train/model.txt"',
                  '    params: lr=config["lr"]',
                  '    shell: "cat {input} | wc -c > {output}; echo lr={params.lr} >> {output}"',
                  "",
                  "rule eval:",
                  '    input: "train/model.txt"',
                  '    output: "eval/metrics.txt"',
                  '    shell: "cat {input} > {output}"',
                  ""]
        (d / "Snakefile").write_text("\n".join(rules))

    def clean(self):
        for s in STEPS + ["train", "eval", ".snakemake"]:
            shutil.rmtree(self.dir / s, ignore_errors=True)

    def run(self):
        # The default ILP scheduler stalls on a DAG this wide; the greedy one is what its users
        # switch to.
        return self.run_files([self.exe, "--cores", "2", "--scheduler", "greedy", "--quiet", "all"])

    def status(self):
        return timed([self.exe, "--cores", "2", "--dry-run", "--quiet", "all"], self.dir)[:2]


class Dvc(Tool):
    name = "dvc"

    def __init__(self, venv, *a):
        self.exe = str(Path(venv) / "bin" / "dvc")
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1")
        super().__init__(*a)

    def write(self, lr):
        d = self.dir
        (d / "params.yaml").write_text(f"lr: {lr}\n")
        if (d / "dvc.yaml").exists():
            return
        stages = {}
        prev = "raw"
        for s in STEPS:
            # No `${...}` in the shell: dvc.yaml interpolates it.
            loop = (f'rm -rf {s} && mkdir {s} && cd {prev} && for f in *; do '
                    f'{item_line(s, chr(34) + "$f" + chr(34), chr(34) + "../" + s + "/$f" + chr(34))}; done')
            stages[s] = {"cmd": loop, "deps": [prev], "outs": [s]}
            prev = s
        # find | xargs: above about 100k files, `embed/*` is longer than a command line may be.
        stages["train"] = {"cmd": "rm -rf train && mkdir train && find embed -type f | sort | xargs cat | wc -c > train/model.txt && "
                                  "grep '^lr:' params.yaml | sed 's/: /=/' >> train/model.txt",
                           "deps": ["embed"], "params": ["lr"], "outs": ["train"]}
        stages["eval"] = {"cmd": "rm -rf eval && mkdir eval && cat train/model.txt > eval/metrics.txt",
                          "deps": ["train"], "outs": ["eval"]}
        (d / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=1))
        timed([self.exe, "init", "--no-scm", "-q"], d, self.env)
        # The site cache (DVC's index and hash state) in the project, so a cold run starts clean.
        timed([self.exe, "config", "core.site_cache_dir", str(d / ".dvc-site")], d, self.env)
        timed([self.exe, "config", "core.analytics", "false"], d, self.env)

    def clean(self):
        for s in STEPS + ["train", "eval", ".dvc/cache", ".dvc/tmp", ".dvc-site"]:
            shutil.rmtree(self.dir / s, ignore_errors=True)
        (self.dir / "dvc.lock").unlink(missing_ok=True)

    def run(self):
        return self.run_files([self.exe, "repro", "-q"], self.env)

    def status(self):
        return timed([self.exe, "status", "-q"], self.dir, self.env, ok=(0, 1))[:2]


def measure(tool, repeat, cold_runs, log):
    r = {"tool": tool.name, "peak": {}}
    walls, cpus, peaks = [], [], []
    for k in range(cold_runs):
        tool.clean()
        wall, cpu, ran, _ = tool.run()
        peaks.append(LAST_PEAK[0])
        log(f"{tool.name}: cold run {k + 1}/{cold_runs}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
            f"peak {LAST_PEAK[0] / 2**20:.0f} MiB")
        walls.append(wall)
        cpus.append(cpu)
    r["cold"], r["cold_cpu"] = stats(walls), stats(cpus)
    r["peak"]["cold"] = max(peaks)

    def series(label, before_each, run):
        xs, extra, pk = [], [], 0
        for k in range(repeat):
            before_each(k)
            t, e = run()
            pk = max(pk, LAST_PEAK[0])
            xs.append(t)
            extra.append(e)
        r["peak"][label] = pk
        log(f"{tool.name}: {label}: median {stats(xs)['median']:.3f} s ({', '.join(f'{x:.3f}' for x in xs)}), "
            f"peak {pk / 2**20:.0f} MiB")
        return stats(xs), extra

    def rerun():
        wall, _, ran, items = tool.run()
        return wall, {"ran": ran, "items": items}

    r["noop"], ex = series("no-op rerun", lambda k: None, rerun)
    r["noop_ran"] = ex[-1]["ran"]
    r["status"], _ = series("status / dry run", lambda k: None, lambda: (tool.status()[0], None))
    r["param"], ex = series("lr changed", lambda k: tool.set_lr(round(0.01 * (k + 2), 2)), rerun)
    r["param_ran"] = ex[-1]["ran"]
    r["input"], ex = series("one input changed", lambda k: tool.touch_input((k * 997) % tool.n), rerun)
    r["input_ran"] = ex[-1]["ran"]
    r["input_items"] = ex[-1]["items"]
    log(f"{tool.name}: after one input changed, ran {ex[-1]['ran']}, items {ex[-1]['items']}")
    return r


def main():
    binary, work, n, tools, out_json = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","), sys.argv[5]
    venv = os.environ.get("BENCH_PEERS_VENV", ".venv-peers")
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    cold = int(os.environ.get("BENCH_COLD", "3"))
    smk_cold = int(os.environ.get("BENCH_SNAKEMAKE_COLD", "1"))
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw-src"
    make_inputs(raw, n)

    def log(msg):
        print(f"[{n} clips] {msg}", file=sys.stderr, flush=True)

    results = {"n": n, "repeat": repeat, "tools": {}}
    if Path(out_json).exists():
        results = json.load(open(out_json))
    if os.environ.get("BENCH_GIT"):
        results["git"] = os.environ["BENCH_GIT"]
    for t in tools:
        if t == "pipeline":
            tool, c = Ours(binary, work, raw, n, 0.1), cold
        elif t == "snakemake":
            tool, c = Snakemake(venv, work, raw, n, 0.1), smk_cold
        elif t == "dvc":
            tool, c = Dvc(venv, work, raw, n, 0.1), cold
        else:
            raise SystemExit(f"unknown tool {t}")
        results["tools"][t] = measure(tool, repeat, c, log)
        json.dump(results, open(out_json, "w"), indent=1)
        shutil.rmtree(tool.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
