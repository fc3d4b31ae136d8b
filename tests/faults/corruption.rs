//! Corrupt, truncated and missing objects: never used, named, and healed by the next run.

use crate::common::*;

pub const FRONT: &str = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  audio: {kind: audio, inputs: [ingest], params: {sample_rate: 16000, min_seconds: 0.5}}
  logmel: {kind: logmel, inputs: [audio], params: {n_mels: 64}}
";

/// The object file of a hash.
pub fn object_path(p: &Project, hash: &str) -> std::path::PathBuf {
    p.root()
        .join("cache/objects")
        .join(&hash[..2])
        .join(format!("{hash}.parquet"))
}

pub fn flip_bit(path: &std::path::Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at % b.len();
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// The objects a sharded stage's index names, in row order.
fn index_objects(p: &Project, stage: &str) -> Vec<String> {
    index_objects_with(p, stage, &[])
}

fn index_objects_with(p: &Project, stage: &str, args: &[&str]) -> Vec<String> {
    strs(&p.table_with(stage, args), "object")
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

const N40: &[&str] = &["--set", "logmel.n_mels=40"];

#[test]
fn a_flipped_bit_is_never_read_and_verify_fix_then_a_rerun_match_a_clean_cache() {
    let clean = Project::with_pipeline(6, FRONT);
    assert_eq!(clean.run_json(&["--set", "logmel.n_mels=40"]).0, 0);
    let want_audio = index_objects(&clean, "audio");
    let want_logmel = index_objects_with(&clean, "logmel", N40);

    for heal in ["verify --fix", "a plain rerun"] {
        let p = Project::with_pipeline(6, FRONT);
        assert_eq!(p.run_json(&[]).0, 0);
        let audio = index_objects(&p, "audio");
        assert_eq!(audio, want_audio, "the same clips give the same objects");
        flip_bit(&object_path(&p, &audio[2]), 5000);

        let out = p.run(&["run", "logmel", "--set", "logmel.n_mels=40"]);
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{text}");
        let clip = strs(&p.table("audio"), "clip_id")[2].clone().unwrap();
        let failed = p.failed_items_with("logmel", N40);
        assert_eq!(failed.len(), 1, "{failed:?}");
        let (item, _, reason) = &failed[0];
        assert_eq!(item, &clip);
        for part in [
            &audio[2][..12],
            "is corrupt",
            "input `audio`",
            "pipeline verify --fix",
        ] {
            assert!(reason.contains(part), "`{part}` not in: {reason}");
        }
        assert!(
            p.root()
                .join("cache/corrupt")
                .join(format!("{}.parquet", audio[2]))
                .exists(),
            "the corrupt object is kept aside"
        );

        if heal == "verify --fix" {
            let out = p.run(&["verify", "--fix"]);
            assert!(out.status.success(), "{out:?}");
        }
        let (code, events, _) = p.run_json(&["logmel", "--set", "logmel.n_mels=40"]);
        assert_eq!(code, 0, "{heal}: {events:?}");
        assert_eq!(stage_done(&events, "audio")["computed"], 1, "{heal}");
        assert_eq!(index_objects(&p, "audio"), want_audio, "{heal}");
        assert_eq!(index_objects_with(&p, "logmel", N40), want_logmel, "{heal}");
        assert!(p.run(&["verify"]).status.success());
    }
}

#[test]
fn verify_fix_drops_what_was_computed_from_a_corrupt_object() {
    let clean = Project::with_pipeline(4, FRONT);
    assert_eq!(clean.run_json(&[]).0, 0);
    let want = index_objects(&clean, "logmel");

    // An audio item replaced by another clip's (valid Parquet, wrong name): what logmel made
    // from it cannot be told from the rest by its own bytes, so verify --fix drops logmel's
    // artifact and the items it cached from audio's objects.
    let p = Project::with_pipeline(4, FRONT);
    assert_eq!(p.run_json(&[]).0, 0);
    let audio = index_objects(&p, "audio");
    std::fs::copy(object_path(&p, &audio[0]), object_path(&p, &audio[1])).unwrap();
    assert_eq!(p.run(&["verify"]).status.code(), Some(1));
    let out = p.run(&["verify", "--fix"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("(logmel) from a bad artifact"), "{text}");
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(stage_done(&events, "audio")["computed"], 1);
    assert_eq!(stage_done(&events, "logmel")["computed"], 4);
    assert_eq!(index_objects(&p, "logmel"), want);
    assert_eq!(index_objects(&p, "audio"), audio);
    assert!(p.run(&["verify"]).status.success());
}

#[test]
fn truncated_and_deleted_objects_are_recomputed_not_failed_for_good() {
    let p = Project::with_pipeline(5, FRONT);
    assert_eq!(p.run_json(&[]).0, 0);
    let want = index_objects(&p, "logmel");
    let audio = index_objects(&p, "audio");
    // Truncate one audio item, delete another; a changed logmel param reads both.
    let path = object_path(&p, &audio[0]);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(object_path(&p, &audio[3])).unwrap();
    let (code, _, _) = p.run_json(&["--set", "logmel.n_mels=32"]);
    assert_eq!(code, 3);
    assert_eq!(
        p.failed_items_with("logmel", &["--set", "logmel.n_mels=32"])
            .len(),
        2
    );
    // The next run retries them by itself: no verify, no flag.
    let (code, events, _) = p.run_json(&["--set", "logmel.n_mels=32"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(stage_done(&events, "audio")["computed"], 2);
    assert_eq!(stage_done(&events, "logmel")["computed"], 2);
    assert_eq!(index_objects(&p, "audio"), audio);
    // And the original params are still all cached and intact.
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert!(s["ran"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(index_objects(&p, "logmel"), want);
}

#[test]
fn a_corrupt_whole_table_artifact_fails_its_consumer_by_name_and_heals() {
    let p = Project::new(4);
    assert_eq!(p.run_json(&[]).0, 0);
    let out = p.run(&["show", "ingest", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = std::path::PathBuf::from(v["artifact"].as_str().unwrap());
    flip_bit(&path, 301);
    // labels reads ingest: a param change makes it compute.
    let out = p.run(&["run", "--set", "labels.source=ima"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("input `ingest`") && err.contains("is corrupt"),
        "{err}"
    );
    let (code, events, _) = p.run_json(&["--set", "labels.source=ima"]);
    assert_eq!(code, 0, "{events:?}");
    assert!(ran(&events).contains(&"ingest".to_string()));
}

#[test]
fn retry_failed_tries_failed_items_again() {
    // A per-clip command that fails for one clip while a file outside the key says so.
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  flaky:
    kind: command
    inputs: [ingest]
    params: {from: media, cmd: \"test ! -e flag-{id} && echo ok > {out}\"}
";
    let p = Project::with_pipeline(6, yaml);
    let ids = strs(&p.table_after_run("ingest"), "clip_id");
    let id = ids[1].clone().unwrap();
    let flag = p.root().join(format!("flag-{id}"));
    std::fs::create_dir_all(flag.parent().unwrap()).unwrap();
    std::fs::write(&flag, "").unwrap();
    let (code, _, _) = p.run_json(&[]);
    assert_eq!(code, 3);
    assert_eq!(p.failed_items("flaky").len(), 1);
    std::fs::remove_file(&flag).unwrap();
    // A clip's own failure is not retried by itself...
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 3, "{s}");
    // ...but on request, and only the failed item computes.
    let (code, events, _) = p.run_json(&["--retry-failed"]);
    assert_eq!(code, 0, "{events:?}");
    let d = stage_done(&events, "flaky");
    assert_eq!(
        (d["computed"].as_u64(), d["reused"].as_u64()),
        (Some(1), Some(5))
    );
    assert!(p.failed_items("flaky").is_empty());
}

const BLOBS: &str = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  size: {kind: command, inputs: [ingest], params: {from: media, cmd: \"wc -c < {in} > {out}\"}}
  tagged: {kind: command, inputs: [size], params: {cmd: \"printf '%s ' {id} > {out}; cat {in} >> {out}\"}}
";

/// The file a `command` stage wrote for row `r`.
fn blob_path(p: &Project, stage: &str, r: usize) -> std::path::PathBuf {
    let h = strs(&p.table(stage), "data_hash")[r].clone().unwrap();
    p.root()
        .join("cache/objects")
        .join(&h[..2])
        .join(format!("{h}.bin"))
}

/// A `command` stage's file that vanished or changed size is never handed to the next command:
/// the reading clip fails naming it, and the next run computes the file again and then the
/// clip, matching a clean cache; `verify` finds such a file and `--fix` heals it the same way.
#[test]
fn a_lost_or_damaged_command_output_is_named_and_computed_again() {
    let clean = Project::with_pipeline(4, BLOBS);
    assert_eq!(clean.run_json(&[]).0, 0);
    let want = command_outputs(&clean, "tagged");

    let p = Project::with_pipeline(4, BLOBS);
    assert_eq!(p.run_json(&["size"]).0, 0);
    std::fs::remove_file(blob_path(&p, "size", 1)).unwrap();
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 3, "{s}");
    let failed = p.failed_items("tagged");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].2.contains("could not be read"), "{failed:?}");
    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(stage_done(&events, "size")["computed"].as_u64(), Some(1));
    assert_eq!(stage_done(&events, "tagged")["computed"].as_u64(), Some(1));
    assert_eq!(command_outputs(&p, "tagged"), want);

    // Found by `verify`, healed by `--fix` and the next run.
    let f = blob_path(&p, "size", 2);
    let mut perms = std::fs::metadata(&f).unwrap().permissions();
    assert!(perms.readonly(), "the cache's files are read-only");
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&f, perms).unwrap();
    std::fs::write(&f, "999\n").unwrap();
    let out = p.run(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("corrupt"), "{text}");
    assert!(p.run(&["verify", "--fix"]).status.success());
    assert!(p.run(&["verify"]).status.success());
    assert_eq!(p.run_json(&[]).0, 0);
    assert_eq!(command_outputs(&p, "tagged"), want);
}
