//! gc against live runs: leases keep what a run planned; dead writers' temp files go.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::corruption::FRONT;

#[test]
fn gc_in_a_loop_during_a_run_collects_nothing_it_planned() {
    // A stage after the changed one keeps the run going once logmel's artifact is recorded.
    let yaml =
        format!("{FRONT}  patches: {{kind: segment, inputs: [logmel], params: {{frames: 20}}}}\n");
    let p = Project::with_pipeline(8, &yaml);
    // Params no pipeline file names: without its lease, gc would collect this run's work.
    let set = ["--set", "logmel.n_mels=24"];
    let mut run = p
        .cmd(&["run", "--json", set[0], set[1]])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", "250")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut passes = 0;
    let mut deleted = Vec::new();
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        let out = p.run(&["gc"]);
        assert!(out.status.success(), "{out:?}");
        passes += 1;
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        if !said.starts_with("deleted: 0 artifact(s), 0 object(s)") {
            deleted.push(said);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(t0.elapsed() < Duration::from_secs(300));
    };
    let out = run.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(passes >= 3, "only {passes} gc passes during the run");
    eprintln!("gc during a run: {passes} passes, nothing the run planned collected");
    let st = p.run(&["status", "--json", set[0], set[1]]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    for s in v["stages"].as_array().unwrap() {
        assert_eq!(s["state"], "fresh", "{s}\n{deleted:?}");
    }
    assert!(p.run(&["verify"]).status.success());
    let (code, _, s) = p.run_json(&set);
    assert_eq!(code, 0);
    assert!(s["ran"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn a_killed_runs_lease_dies_with_it() {
    let p = Project::with_pipeline(6, FRONT);
    let mut run = p
        .cmd(&["run", "--set", "logmel.n_mels=20"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = p.run(&["gc", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 live run"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let out = p.run(&["gc", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 live run"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn dead_writers_temp_files_go_and_live_ones_stay() {
    let p = Project::new(2);
    assert_eq!(p.run_json(&[]).0, 0);
    let dir = p.root().join("cache/objects/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let files = [
        (format!(".tmp-{dead}-0-{host}"), false),
        (format!(".tmp-{}-0-{host}", live.id()), true),
        // The older name without a host: this host's.
        (format!(".tmp-{dead}-7"), false),
        // Another host's: judged by age, so a fresh one stays.
        (format!(".tmp-{dead}-0-elsewhere"), true),
    ];
    for (f, _) in &files {
        std::fs::write(dir.join(f), b"partial").unwrap();
    }
    assert!(p.run(&["gc"]).status.success());
    for (f, stays) in &files {
        assert_eq!(dir.join(f).exists(), *stays, "{f}");
    }
    live.kill().unwrap();
    live.wait().unwrap();
}
