//! `pipeline submit` against a real single-node Slurm cluster (munged, slurmctld, slurmd from
//! Debian's packages, started by scripts/slurm/local-cluster.sh into a temp folder and stopped
//! by the PIDs it started): the demo pipeline through Slurm against a local run, array shards,
//! a failing job with its dependents cancelled and a resubmission, a crashed submitter, the job
//! limit, and a dry run. One test, because one cluster serves every scenario and they share it
//! in sequence.

#[path = "it/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/local-cluster.sh");
        // Ports of our own, so a cluster already on the defaults is left alone.
        let base = 20000 + (std::process::id() % 20000) as u16;
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir)
            .env("SLURM_CTLD_PORT", base.to_string())
            .env("SLURM_D_PORT", (base + 1).to_string())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "the local Slurm cluster did not start (needs root and `make setup`'s slurm packages): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("export SLURM_CONF=")
            .expect("start prints SLURM_CONF")
            .to_string();
        Cluster {
            dir: dir.to_path_buf(),
            conf,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/local-cluster.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn pipeline_yaml(models: &Path) -> String {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline/default.yaml"),
    )
    .unwrap();
    // The repository's own demo pipeline: its models from the checkout; two CPUs per job, as
    // many threads as the local run uses, so the two compute the same floats; the per-frame
    // stages split into array shards.
    let y = src
        .replace(
            "models: data/models",
            &format!("models: \"{}\"", models.display()),
        )
        .replace("data: data/demo", "data: data");
    let y = format!("resources: {{cpus: 2}}\n{y}");
    let mut out = y.clone();
    for stage in ["decode", "face"] {
        let from = format!("  {stage}:\n    kind: {stage}\n");
        assert!(
            out.contains(&from),
            "default.yaml has no `{stage}` stage in the expected form"
        );
        out = out.replace(
            &from,
            &format!("{from}    resources: {{shards: 3, parallel: 2}}\n"),
        );
    }
    assert_ne!(out, y);
    out
}

fn cmd(p: &Project, cl: &Cluster, args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.env("SLURM_CONF", &cl.conf)
        .env("PIPELINE_POLL_SECS", "0.5");
    c
}

/// `ARGS --json`: exit code and events.
fn run_json(p: &Project, cl: &Cluster, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cmd(p, cl, &a).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        json_lines(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// stage -> (state, key, job) from `status --json`.
fn status(p: &Project, cl: &Cluster, extra: &[&str]) -> BTreeMap<String, (String, String, Value)> {
    status_in(p, cl, "cache", extra)
}

fn status_in(
    p: &Project,
    cl: &Cluster,
    cache: &str,
    extra: &[&str],
) -> BTreeMap<String, (String, String, Value)> {
    let mut a = vec!["--cache", cache, "status", "--json"];
    a.extend_from_slice(extra);
    let out = cmd(p, cl, &a).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("status: {}", String::from_utf8_lossy(&out.stderr)));
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["key"].as_str().unwrap_or("").to_string(),
                    s["job"].clone(),
                ),
            )
        })
        .collect()
}

/// stage -> artifact object hash, for every stage in `cache`.
fn objects(p: &Project, cache: &str, stages: &[String]) -> BTreeMap<String, String> {
    stages
        .iter()
        .map(|s| {
            let out = p.run(&["--cache", cache, "show", s, "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("show {s}: {}", String::from_utf8_lossy(&out.stderr)));
            let path = v["artifact"].as_str().expect("computed");
            let hash = Path::new(path)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (s.clone(), hash)
        })
        .collect()
}

fn events<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn pipeline_submit_on_a_local_slurm_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let cl = Cluster::start(&tmp.path().join("slurm"));
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models");
    let p = Project::with_demo(&pipeline_yaml(&models), 6, 1, &[]);

    // Dry run: every stage's script, nothing submitted.
    let out = cmd(&p, &cl, &["submit", "--dry-run", "--partition", "debug"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("#!/bin/bash").count(),
        13 + 2,
        "13 stage jobs + 2 shard arrays:\n{text}"
    );
    assert!(text.contains("#SBATCH --array=0-2%2"), "{text}");
    assert!(
        text.contains("--shard \"$SLURM_ARRAY_TASK_ID/3\""),
        "{text}"
    );
    assert!(text.contains("#SBATCH --cpus-per-task=2"), "{text}");
    assert!(text.contains("#SBATCH --partition=debug"), "{text}");
    assert!(
        text.contains("#SBATCH --dependency=afterok:<face>"),
        "embed_face waits for face:\n{text}"
    );
    assert!(
        !p.root().join("cache/logs").exists(),
        "a dry run submits nothing"
    );

    // The same pipeline locally, in a cache of its own.
    let local = p.run(&["--cache", "cache-local", "run", "all"]);
    assert_eq!(
        local.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    // Through Slurm, watching until done.
    let (code, ev, err) = run_json(&p, &cl, &["submit", "--watch"]);
    assert_eq!(code, 0, "{ev:?}\n{err}");
    let sub = events(&ev, "submitted");
    assert_eq!(sub.len(), 13, "{sub:?}");
    for s in &sub {
        let name = s["stage"].as_str().unwrap();
        let sharded = name == "decode" || name == "face";
        assert_eq!(s["array"].is_string(), sharded, "{s}");
        if sharded {
            assert_eq!(s["shards"], 3);
        }
    }
    // Shard tasks ran as array tasks, each with its own log.
    let logs: Vec<String> = std::fs::read_dir(p.root().join("cache/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let face_array = sub.iter().find(|s| s["stage"] == "face").unwrap()["array"]
        .as_str()
        .unwrap()
        .to_string();
    for t in 0..3 {
        assert!(
            logs.iter()
                .any(|l| l.starts_with("face-") && l.ends_with(&format!("{face_array}_{t}.out"))),
            "no log of face shard {t}: {logs:?}"
        );
    }

    // Same keys, same artifacts as the local run.
    let slurm_st = status(&p, &cl, &[]);
    let local_keys: BTreeMap<_, _> = status_in(&p, &cl, "cache-local", &[])
        .into_iter()
        .map(|(n, (_, k, _))| (n, k))
        .collect();
    assert_eq!(slurm_st.len(), 13);
    for (name, (state, key, _)) in &slurm_st {
        assert_eq!(state, "fresh", "{name}: {slurm_st:?}");
        assert_eq!(
            &local_keys[name], key,
            "{name}: a cluster run and a local run share keys"
        );
    }
    let names: Vec<String> = slurm_st.keys().cloned().collect();
    let a = objects(&p, "cache", &names);
    let b = objects(&p, "cache-local", &names);
    assert_eq!(a, b, "the same artifacts, byte for byte");

    // Everything fresh: nothing to submit.
    let (code, ev, _) = run_json(&p, &cl, &["submit"]);
    assert_eq!(code, 0);
    assert!(events(&ev, "submitted").is_empty(), "{ev:?}");

    // A failing job. The model file is not TorchScript, so every clip of `embed_bad` fails: the
    // stage fails and so does its job; `padded` and `repadded` wait on it and are cancelled.
    // The cluster is told not to cancel dependents itself, as on sites without
    // kill_invalid_depend.
    std::fs::write(p.root().join("broken.pt"), b"not a TorchScript archive").unwrap();
    let extra = format!(
        "{}\n  embed_bad:\n    kind: embed\n    inputs: [ingest]\n    params: {{modality: text, model: broken.pt, tokenizer: \"{}\"}}\n  padded:\n    kind: pad\n    inputs: [embed_bad]\n    params: {{steps: 8}}\n  repadded:\n    kind: pad\n    inputs: [padded]\n    params: {{steps: 4}}\n",
        std::fs::read_to_string(p.root().join("pipeline/default.yaml"))
            .unwrap()
            .trim_end(),
        models.join("embed/text-minilm.tokenizer.json").display()
    );
    std::fs::write(p.root().join("pipeline/default.yaml"), extra).unwrap();
    let mut c = cmd(&p, &cl, &["submit", "--watch", "--json"]);
    c.env("PIPELINE_TEST_KEEP_INVALID_DEP", "1");
    let out = c.output().unwrap();
    let ev = json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{ev:?}");
    let sub = events(&ev, "submitted");
    let sent: Vec<&str> = sub.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(
        sent,
        ["embed_bad", "padded", "repadded"],
        "only the new stages"
    );
    let jobs = events(&ev, "job");
    let word_of = |stage: &str| -> Vec<&str> {
        jobs.iter()
            .filter(|j| j["stage"] == stage)
            .map(|j| j["word"].as_str().unwrap())
            .collect()
    };
    assert_eq!(word_of("embed_bad").last(), Some(&"failed"), "{jobs:?}");
    assert_eq!(word_of("padded").last(), Some(&"cancelled"), "{jobs:?}");
    let cancelled = jobs
        .iter()
        .find(|j| j["stage"] == "repadded" && j["word"] == "cancelled")
        .unwrap_or_else(|| panic!("repadded was not cancelled: {jobs:?}"));
    let padded_job = sub[1]["job"].as_str().unwrap();
    assert_eq!(
        cancelled["reason"],
        format!("input job {padded_job} failed"),
        "{cancelled}"
    );
    // The scheduler agrees: the dependent is cancelled, not pending for ever.
    let repadded_job = sub[2]["job"].as_str().unwrap();
    let sq = Command::new("squeue")
        .args(["-t", "all", "-h", "-o", "%i|%T", "-j", repadded_job])
        .env("SLURM_CONF", &cl.conf)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sq.stdout).trim(),
        format!("{repadded_job}|CANCELLED")
    );
    let st = status(&p, &cl, &[]);
    assert_eq!(st["embed_bad"].0, "failed", "{st:?}");
    assert_eq!(st["padded"].0, "cancelled", "{st:?}");
    assert_eq!(st["repadded"].0, "cancelled", "{st:?}");
    assert_eq!(st["ingest"].0, "fresh");
    let bad_job = sub[0]["job"].as_str().unwrap();
    let log = st["embed_bad"].2["log"]
        .as_str()
        .unwrap()
        .replace("%j", bad_job);
    let log_text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log}: {e}"));
    assert!(
        log_text.contains("embed_bad") && log_text.contains("all 6 item(s) failed"),
        "the log says what failed: {log_text}"
    );
    let plain = cmd(&p, &cl, &["status"]).output().unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.contains(&format!("log {log}")),
        "status shows the log path:\n{plain}"
    );

    // Fix the model and submit again: only the stages that are not done (the model's content
    // is in embed_bad's key, so all three have new keys).
    std::fs::copy(
        models.join("embed/text-minilm.pt"),
        p.root().join("broken.pt"),
    )
    .unwrap();
    let (code, ev, err) = run_json(&p, &cl, &["submit", "--watch"]);
    assert_eq!(code, 0, "{ev:?}\n{err}");
    let sent: Vec<String> = events(&ev, "submitted")
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, ["embed_bad", "padded", "repadded"]);
    assert!(status(&p, &cl, &[]).values().all(|s| s.0 == "fresh"));
    assert!(p.failed_items("embed_bad").is_empty());

    // A limit on queued jobs, and a submitter killed while it watches: what it sent runs on,
    // and the next submit sends only what is neither done nor queued.
    let sets = ["--set", "mfcc.n_mfcc=13", "--set", "logmel.n_mels=40"];
    let mut a = vec!["submit", "--watch", "--json", "--max-jobs", "1"];
    a.extend_from_slice(&sets);
    let mut child = cmd(&p, &cl, &a)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    loop {
        first.clear();
        use std::io::BufRead;
        assert!(
            stdout.read_line(&mut first).unwrap() > 0,
            "submit ended early"
        );
        if first.contains("\"submitted\"") {
            break;
        }
    }
    let first: Value = serde_json::from_str(&first).unwrap();
    let summary = {
        let mut l = String::new();
        use std::io::BufRead;
        stdout.read_line(&mut l).unwrap();
        serde_json::from_str::<Value>(&l).unwrap()
    };
    assert_eq!(summary["event"], "submit");
    assert_eq!(summary["jobs_submitted"], 1, "--max-jobs 1: {summary}");
    assert_eq!(summary["waiting_for_room"], 1, "{summary}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut a = vec!["submit", "--watch"];
    a.extend_from_slice(&sets);
    let (code, ev, err) = run_json(&p, &cl, &a);
    assert_eq!(code, 0, "{ev:?}\n{err}");
    let resent: Vec<&str> = events(&ev, "submitted")
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(
        !resent.contains(&first["stage"].as_str().unwrap()),
        "{} was submitted again: {resent:?}",
        first["stage"]
    );
    assert_eq!(resent.len(), 1, "the other changed stage: {resent:?}");
    let st = status(&p, &cl, &sets);
    assert!(st.values().all(|s| s.0 == "fresh"), "{st:?}");

    // gc while a submission's jobs are queued and running: their lease keeps what they
    // planned, with params no pipeline file names, and the jobs finish with every stage fresh.
    let sets = ["--set", "logmel.n_mels=48"];
    let mut a = vec!["submit"];
    a.extend_from_slice(&sets);
    let (code, ev, err) = run_json(&p, &cl, &a);
    assert_eq!(code, 0, "{ev:?}\n{err}");
    assert!(!events(&ev, "submitted").is_empty(), "{ev:?}");
    let mut passes = 0;
    loop {
        let out = cmd(&p, &cl, &["gc"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        passes += 1;
        let open = status(&p, &cl, &sets)
            .values()
            .any(|s| s.0 == "queued" || s.0 == "running");
        if !open && passes >= 3 {
            break;
        }
        assert!(passes < 400, "jobs did not finish");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let st = status(&p, &cl, &sets);
    assert!(
        st.values().all(|s| s.0 == "fresh"),
        "after {passes} gc passes: {st:?}"
    );
}
