//! Bounds at plan time, and per-clip memory bounded by the clip: run under a memory limit
//! (`ulimit -v` on the engine and its media workers).

use std::process::Command;

use crate::common::*;

/// `pipeline ARGS` in the project under an address-space limit of `kib` KiB.
fn limited(p: &Project, kib: u64, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    ensure_worker();
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("ulimit -v {kib}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .current_dir(p.root())
        .env_remove("PIPELINE_CACHE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn a_huge_matrix_is_exit_2_before_anything_is_allocated() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  split:
    kind: split
    inputs: [ingest]
    params: {method: ratio}
    matrix: {seed: 1..10000000}
";
    let p = Project::with_pipeline(1, yaml);
    for cmd in ["run", "status", "dag"] {
        let out = limited(&p, 1 << 20, &[cmd], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("default.yaml:7:") && err.contains("more than the cap of 100000"),
            "{err}"
        );
    }
    // Two axes whose product passes the cap, and a variable that widens an axis.
    let yaml2 = yaml.replace(
        "{seed: 1..10000000}",
        "{seed: 1..1000, ratios: \"${r}\"}\nvars: {r: 1..1000}",
    );
    std::fs::write(p.root().join("pipeline/default.yaml"), yaml2).unwrap();
    let out = limited(&p, 1 << 20, &["status"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1000000 variants"));
    // The cap is the user's to raise.
    let yaml3 = yaml.replace("1..10000000", "1..150");
    std::fs::write(p.root().join("pipeline/default.yaml"), yaml3).unwrap();
    let out = limited(
        &p,
        1 << 20,
        &["status"],
        &[("PIPELINE_MAX_VARIANTS", "100")],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = limited(&p, 1 << 20, &["dag"], &[]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn params_out_of_range_are_exit_2_at_their_line() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  decode:
    kind: decode
    inputs: [ingest]
    params: {frames: 10}
";
    let p = Project::with_pipeline(1, yaml);
    for (set, what) in [
        ("decode.frames=-5", "-5 is not in 1..=1000000"),
        ("decode.frames=100000000", "is not in 1..=1000000"),
        ("decode.fps=0", "fps"),
    ] {
        let out = p.run(&["run", "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains("default.yaml:") && err.contains(what), "{err}");
        assert!(!p.root().join("cache/objects").exists() || p.objects().is_empty());
    }
}

#[test]
fn decode_allocates_no_frame_beyond_the_clips_own() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  decode: {kind: decode, inputs: [ingest], params: {frames: 100000}}
  fast: {kind: decode, inputs: [ingest], params: {sampling: fps, fps: 1000.0}}
";
    let p = Project::with_pipeline(3, yaml);
    // 100000 frames of 96x64 RGB would be 1.8 GB per clip (the same frames repeated); the limit is 1.5 GB for all.
    let out = limited(&p, 1_500_000, &["run"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stage in ["decode", "fast"] {
        for obj in strs(&p.table(stage), "object") {
            let n = p.object(obj.as_deref().unwrap()).num_rows();
            // The fixture's clips: 1 or 2 s at 25 frames per second.
            assert!((1..=50).contains(&n), "{stage}: {n} frames");
        }
    }
}
