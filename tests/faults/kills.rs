//! kill -9 at seeded random points, in the engine and inside its worker processes; a damaged,
//! truncated or deleted index; a full disk; two runs and a gc at once. After each, nothing
//! finished is lost, and the finished cache equals an undisturbed one.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::corruption::FRONT;

/// The pipeline under fault: engine-run stages (ingest, segment) and worker-run ones (audio,
/// logmel), all per clip but ingest.
fn yaml() -> String {
    format!("{FRONT}  patches: {{kind: segment, inputs: [logmel], params: {{frames: 20}}}}\n")
}

/// A small seeded generator (xorshift64*), so a failing point can be replayed with
/// PIPELINE_FAULT_SEED.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

fn seed() -> u64 {
    std::env::var("PIPELINE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_205)
}

fn items_in_index(p: &Project) -> i64 {
    let db = rusqlite::Connection::open(p.root().join("cache/index.sqlite")).unwrap();
    db.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

/// What a killed run had reported: stages recorded, and per stage the items stored.
#[derive(Default)]
struct Seen {
    done: Vec<String>,
    items: std::collections::HashMap<String, u64>,
}

impl Seen {
    fn read(events: &[Value]) -> Seen {
        let mut s = Seen::default();
        for e in events {
            let stage = e["stage"].as_str().unwrap_or("").to_string();
            match e["event"].as_str() {
                Some("stage_done") if e["outcome"] == "ran" => s.done.push(stage),
                Some("progress") => {
                    let d = e["done"].as_u64().unwrap_or(0);
                    let v = s.items.entry(stage).or_default();
                    *v = (*v).max(d);
                }
                _ => {}
            }
        }
        s
    }
}

/// One run killed with SIGKILL after `ms`, in the engine or (`in_worker`) in a worker process
/// if one is running then. Returns what it reported and whether a kill landed.
fn killed_run(p: &Project, ms: u64, in_worker: bool) -> (Vec<Value>, Option<&'static str>) {
    let mut child = p
        .cmd(&["run", "--json"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", DELAY_MS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (out, events) = (child.stdout.take().unwrap(), events.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    events.lock().unwrap().push(v);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(ms));
    let mut landed = None;
    // A worker kill waits a little for a worker to be there (they come and go per stage).
    let mut workers = Vec::new();
    for _ in 0..(if in_worker { 20 } else { 0 }) {
        workers = workers_of(child.id());
        if !workers.is_empty() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    if child.try_wait().unwrap().is_none() {
        match workers.first().filter(|_| in_worker) {
            Some(&w) => {
                unsafe { libc::kill(w as i32, libc::SIGKILL) };
                landed = Some("worker");
            }
            None => {
                child.kill().unwrap();
                landed = Some("engine");
            }
        }
    }
    child.wait().unwrap();
    reader.join().unwrap();
    let ev = events.lock().unwrap().clone();
    (ev, landed)
}

/// How long an undisturbed run of a fresh project takes with the test's item delay.
fn calibrate(clips: usize) -> (Vec<String>, u64) {
    let reference = Project::with_pipeline(clips, &yaml());
    let t0 = std::time::Instant::now();
    let out = reference
        .cmd(&["run"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", DELAY_MS)
        .output()
        .unwrap();
    assert!(out.status.success());
    (reference.objects(), t0.elapsed().as_millis() as u64)
}

const DELAY_MS: &str = "70";

#[test]
fn seeded_kill_9_points_lose_nothing_finished() {
    let clips = 8;
    let (want, total_ms) = calibrate(clips);
    let mut rng = Rng(seed());
    let (mut injected, mut in_workers, mut survived, mut missed) = (0, 0, 0, 0);
    for point in 0..32 {
        let p = Project::with_pipeline(clips, &yaml());
        // One kill, and for half the points a second one in the run that resumes.
        let kills = 1 + rng.below(2);
        for k in 0..kills {
            let ms = 100 + rng.below(total_ms * 9 / 10 / (k + 1));
            let in_worker = rng.below(2) == 0;
            let (events, landed) = killed_run(&p, ms, in_worker);
            let Some(where_) = landed else {
                missed += 1;
                continue;
            };
            injected += 1;
            in_workers += usize::from(where_ == "worker");
            let seen = Seen::read(&events);
            let ctx = format!(
                "seed {} point {point} kill {k}: {where_} at {ms} ms",
                seed()
            );
            // Every stage it reported recorded is fresh; every item it reported stored is there.
            let st = p.run(&["status", "--json"]);
            let v: Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            for s in v["stages"].as_array().into_iter().flatten() {
                if seen.done.iter().any(|d| s["name"] == d.as_str()) {
                    assert_eq!(s["state"], "fresh", "{ctx}: {s}");
                }
            }
            let reported: u64 = seen.items.values().sum();
            let stored = items_in_index_or_zero(&p) as u64;
            assert!(
                stored >= reported,
                "{ctx}: {reported} items reported, {stored} stored"
            );
            assert!(p.run(&["verify"]).status.success(), "{ctx}: verify");
            survived += 1;
        }
        let (code, events, _) = p.run_json(&[]);
        assert_eq!(code, 0, "point {point}: {events:?}");
        assert_eq!(
            p.objects(),
            want,
            "point {point}: same objects as an undisturbed run"
        );
        assert!(p.run(&["verify"]).status.success());
    }
    eprintln!(
        "kill -9: {injected} injected ({in_workers} in worker processes), {survived} survived with nothing lost, {missed} landed after the run ended (seed {})",
        seed()
    );
    assert!(injected >= 20, "only {injected} kills landed");
    assert!(in_workers >= 5, "only {in_workers} kills landed in workers");
}

fn items_in_index_or_zero(p: &Project) -> i64 {
    if p.root().join("cache/index.sqlite").exists() {
        items_in_index(p)
    } else {
        0
    }
}

/// One way of damaging a file.
type Damage = dyn Fn(&std::path::Path);

#[test]
fn a_damaged_truncated_or_deleted_index_never_sticks() {
    let p = Project::new(3);
    assert_eq!(p.run_json(&[]).0, 0);
    let index = p.root().join("cache/index.sqlite");
    let damages: [(&str, &Damage); 4] = [
        ("header bytes flipped", &|f| {
            let mut b = std::fs::read(f).unwrap();
            for i in (0..100).step_by(3) {
                b[i] ^= 0x5a;
            }
            std::fs::write(f, b).unwrap();
        }),
        ("truncated to a third", &|f| {
            let n = std::fs::metadata(f).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(n / 3)
                .unwrap();
        }),
        ("pages of garbage", &|f| {
            let mut b = std::fs::read(f).unwrap();
            let n = b.len();
            for (i, x) in b[4096..n].iter_mut().enumerate() {
                *x = (i * 31 % 251) as u8;
            }
            std::fs::write(f, b).unwrap();
        }),
        ("deleted", &|f| std::fs::remove_file(f).unwrap()),
    ];
    for (what, damage) in damages {
        // Everything committed into the main file, so the damage is not undone by the WAL.
        let db = rusqlite::Connection::open(&index).unwrap();
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        drop(db);
        damage(&index);
        // At most one command fails, naming the file; the next ones work.
        let mut failures = 0;
        for _ in 0..3 {
            let out = p.run(&["run"]);
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                failures += 1;
                assert!(
                    err.contains("index.sqlite") && err.contains("damaged"),
                    "{what}: {err}"
                );
            }
        }
        assert!(failures <= 1, "{what}: {failures} failed commands");
        let (code, _, s) = p.run_json(&[]);
        assert_eq!(code, 0, "{what}");
        assert!(s["ran"].as_array().unwrap().is_empty(), "{what}: {s}");
        assert!(p.run(&["verify"]).status.success(), "{what}");
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_the_rerun_finishes() {
    let p = Project::with_pipeline(6, &yaml());
    let reference = Project::with_pipeline(6, &yaml());
    assert_eq!(reference.run_json(&[]).0, 0);
    let cache = p.root().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&cache)
        .stderr(Stdio::null())
        .status();
    if !st.is_ok_and(|s| s.success()) {
        eprintln!("disk full: skipped (cannot mount a tmpfs here)");
        return;
    }
    let out = p.run(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "1 MiB cannot hold this run");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("No space left") || err.contains("disk is full"),
        "{err}"
    );
    // Nothing torn: whatever was stored checks out.
    let v = p.run(&["verify"]);
    let verified = v.status.success();
    // Room again: copy the cache out, unmount, and go on.
    let keep = p.root().join("cache-full");
    assert!(std::process::Command::new("cp")
        .args(["-a"])
        .arg(&cache)
        .arg(&keep)
        .status()
        .unwrap()
        .success());
    assert!(std::process::Command::new("umount")
        .arg(&cache)
        .status()
        .unwrap()
        .success());
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::rename(&keep, &cache).unwrap();
    assert!(verified, "{}", String::from_utf8_lossy(&v.stdout));
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(p.objects(), reference.objects());
    eprintln!("disk full: injected 1, survived 1");
}

#[test]
fn two_runs_and_a_gc_at_once_agree_with_one_run() {
    let reference = Project::with_pipeline(6, &yaml());
    assert_eq!(reference.run_json(&["--set", "logmel.n_mels=32"]).0, 0);
    let want = reference.table_with("patches", &["--set", "logmel.n_mels=32"]);

    let p = Project::with_pipeline(6, &yaml());
    let spawn = || {
        p.cmd(&["run", "--set", "logmel.n_mels=32"])
            .env("PIPELINE_TEST_ITEM_DELAY_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for _ in 0..5 {
        assert!(p.run(&["gc"]).status.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        p.table_with("patches", &["--set", "logmel.n_mels=32"]),
        want
    );
    assert!(p.run(&["verify"]).status.success());
}
