//! Snapshots of what people read: `run --help`, a run's summary, `status` with its reasons,
//! `dag` as text and as Mermaid, `show`, and a config error with its hint. What changes from
//! one machine or run to the next (the temp folder, keys, hashes, timings, core counts) is
//! masked, so a snapshot changes only when the wording or layout does.

use std::process::Output;

use crate::common::*;

/// The project root, keys, hashes and timings masked.
fn masked(p: Option<&Project>) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    if let Some(p) = p {
        let root = p.root().to_string_lossy().replace('.', r"\.");
        s.add_filter(&root, "[PROJECT]");
    }
    s.add_filter(r"objects/[0-9a-f]{2}/", "objects/[AB]/");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[KEY]");
    s.add_filter(r"\b\d+\.\d+s\b", "[SECS]");
    s.add_filter(
        r"Stages to run at once, at most \[default: \d+\]",
        "Stages to run at once, at most [default: N]",
    );
    s
}

fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn run_help() {
    let out = {
        ensure_worker();
        std::process::Command::new(BIN)
    }
    .args(["run", "--help"])
    .output()
    .unwrap();
    masked(None).bind(|| insta::assert_snapshot!("run_help", text(&out)));
}

#[test]
fn run_summary_then_status_dag_and_show() {
    let p = Project::new(4);
    let s = masked(Some(&p));
    // One stage at a time, so that the lines come in plan order.
    let out = p.run(&["run", "-j", "1"]);
    s.bind(|| insta::assert_snapshot!("run_summary", text(&out)));
    let out = p.run(&["run"]);
    s.bind(|| insta::assert_snapshot!("run_noop", text(&out)));
    let out = p.run(&["status", "--set", "split.method=ratio"]);
    s.bind(|| insta::assert_snapshot!("status_reasons", text(&out)));
    let out = p.run(&["dag"]);
    s.bind(|| insta::assert_snapshot!("dag_ascii", text(&out)));
    let out = p.run(&["dag", "--format", "mermaid"]);
    s.bind(|| insta::assert_snapshot!("dag_mermaid", text(&out)));
    let out = p.run(&["show", "labels", "--rows", "3"]);
    s.bind(|| insta::assert_snapshot!("show_labels", text(&out)));
}

#[test]
fn config_error_names_file_line_and_hint() {
    let p = Project::with_pipeline(2, &PIPELINE.replace("kind: probe", "kind: prob"));
    let out = p.run(&["run"]);
    masked(Some(&p)).bind(|| insta::assert_snapshot!("config_error", text(&out)));
    assert_eq!(out.status.code(), Some(2));
}
