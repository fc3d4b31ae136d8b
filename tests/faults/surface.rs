//! What a user sees when something is off: quiet broken pipes, did-you-mean for targets and
//! variables, one message for a stage where every clip failed, and Ctrl-C.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let p = Project::new(2);
    assert_eq!(p.run_json(&[]).0, 0);
    for args in [
        &["kinds"][..],
        &["dag"],
        &["status"],
        &["show", "probe", "--rows", "50"],
    ] {
        let mut c = p
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(c.stdout.take());
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0 | 141)),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn unknown_targets_and_variables_are_exit_2_with_a_suggestion() {
    let p = Project::new(2);
    for cmd in [&["run", "prob"][..], &["status", "prob"], &["show", "prob"]] {
        let out = p.run(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("did you mean `probe`"), "{cmd:?}: {err}");
    }
    for cmd in ["run", "status"] {
        let out = p.run(&[cmd, "--set", "vars.unsed=2"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("no variable `unsed`") && err.contains("`unused`"),
            "{err}"
        );
    }
    // A variable the pipeline has is set as before.
    assert_eq!(p.run_json(&["--set", "vars.unused=2"]).0, 0);
}

#[test]
fn a_stage_where_every_clip_failed_is_exit_1_with_one_message() {
    let p = Project::new(3);
    std::fs::remove_dir_all(p.root().join("data/Raw")).unwrap();
    let out = p.run(&["run"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.matches("all 3 item(s) failed").count(), 1, "{text}");
    assert!(text.contains("[media_path]"), "{text}");
    assert!(!text.contains("partial"), "{text}");
}

#[test]
fn ctrl_c_says_finished_work_is_kept_and_the_rerun_resumes() {
    let p = Project::with_pipeline(6, crate::corruption::FRONT);
    let child = p
        .cmd(&["run"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("every finished stage and item is kept"),
        "{err}"
    );
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 0);
    let reused: u64 = ["audio", "logmel"]
        .iter()
        .filter_map(|s| {
            events
                .iter()
                .find(|e| e["event"] == "stage_done" && e["stage"] == *s)
        })
        .map(|e| e["reused"].as_u64().unwrap_or(0))
        .sum();
    let cached = events
        .iter()
        .any(|e| e["event"] == "stage_done" && e["outcome"] == "cached" && e["stage"] == "audio");
    assert!(reused > 0 || cached, "{events:?}");
}
