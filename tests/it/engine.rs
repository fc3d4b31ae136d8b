//! The engine end to end: the real binary on real H.264/AAC clips.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const ALL: [&str; 4] = ["ingest", "labels", "probe", "split"];

#[test]
fn cold_run_then_noop_rerun_is_all_cached() {
    let p = Project::new(12);
    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(names(&s["ran"]), ALL);
    assert_eq!(stage_done(&events, "probe")["computed"], 12);
    let objects = p.objects();
    assert_eq!(objects.len(), 4);

    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert!(s["ran"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(names(&s["cached"]), ALL);
    assert!(!events.iter().any(|e| e["event"] == "stage_start"));
    assert_eq!(p.objects(), objects, "a no-op rerun writes no objects");

    // The artifacts are real Parquet tables with one row per clip.
    let out = p.run(&["show", "probe", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 12);
    assert!(v["schema"]
        .as_str()
        .unwrap()
        .contains("duration_s: Float64"));
    let out = p.run(&["show", "labels", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 12 * 4, "one row per clip and target m/t/a/v");
}

#[test]
fn param_change_reruns_only_dependents_and_status_names_the_key() {
    let p = Project::new(8);
    assert_eq!(p.run_json(&[]).0, 0);

    let out = p.run(&["status", "--json", "--set", "split.method=ratio"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let split = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "split")
        .unwrap();
    assert_eq!(split["state"], "stale");
    let reasons = split["reasons"].to_string();
    assert!(
        reasons.contains("param method changed \\\"manifest\\\" -> \\\"ratio\\\""),
        "{reasons}"
    );
    for other in ["ingest", "labels", "probe"] {
        let s = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == other)
            .unwrap();
        assert_eq!(s["state"], "fresh", "{other}");
    }

    let (code, _, s) = p.run_json(&["--set", "split.method=ratio"]);
    assert_eq!(code, 0);
    assert_eq!(names(&s["ran"]), ["split"]);

    // A variable no stage reads changes nothing; writing a default explicitly changes nothing.
    let (_, _, s) = p.run_json(&["--set", "vars.unused=99", "--set", "labels.scale=sims"]);
    assert!(s["ran"].as_array().unwrap().is_empty(), "{s}");

    // A variable a stage does read reruns that stage and what follows.
    std::fs::create_dir_all(p.root().join("data2")).unwrap();
    let (code, _, s) = p.run_json(&["--set", "labels.source=ima"]);
    assert_eq!(code, 0);
    assert_eq!(names(&s["ran"]), ["labels"]);
}

#[test]
fn one_changed_clip_recomputes_one_item() {
    let n = 10;
    let p = Project::new(n);
    assert_eq!(p.run_json(&[]).0, 0);
    p.change_clip("video_0000/0003.mp4", 1234);

    let out = p.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ingest = &v["stages"][0];
    assert_eq!(ingest["name"], "ingest");
    assert!(
        ingest["reasons"]
            .to_string()
            .contains("data/Raw/video_0000/0003.mp4 (content)"),
        "{ingest}"
    );
    // status and --dry-run count the items the run will compute, and name the clip.
    let probe = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "probe")
        .unwrap();
    assert_eq!(probe["items"]["compute"], 1, "{probe}");
    assert_eq!(probe["items"]["of"], n, "{probe}");
    assert_eq!(probe["items"]["exact"], true);
    assert_eq!(
        probe["items"]["clips"]["changed"],
        serde_json::json!(["video_0000/0003"])
    );
    let dry = String::from_utf8(p.run(&["run", "--dry-run"]).stdout).unwrap();
    assert!(dry.contains(&format!("1 of {n} items to compute")), "{dry}");
    let text = String::from_utf8(p.run(&["status", "--clips"]).stdout).unwrap();
    assert!(text.contains("changed: video_0000/0003"), "{text}");

    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(
        names(&s["ran"]),
        ALL,
        "ingest changed, so its dependents have new keys"
    );
    let probe = stage_done(&events, "probe");
    assert_eq!(probe["computed"], 1, "{probe}");
    assert_eq!(probe["reused"], n - 1, "{probe}");

    // A clip gone from the manifest and one that is new to it.
    let label = p.root().join("data/label.csv");
    let text = std::fs::read_to_string(&label).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let gone = lines.remove(2).to_string();
    let added = lines[1].replacen("video_0000,0001", "video_0000,0001b", 1);
    std::fs::copy(
        p.root().join("data/Raw/video_0000/0001.mp4"),
        p.root().join("data/Raw/video_0000/0001b.mp4"),
    )
    .unwrap();
    lines.push(&added);
    std::fs::write(&label, lines.join("\n") + "\n").unwrap();
    let out = p.run(&["status", "--json", "probe"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let clips = &v["stages"][1]["items"]["clips"];
    let gone_id = gone.split(',').take(2).collect::<Vec<_>>().join("/");
    assert_eq!(clips["removed"], serde_json::json!([gone_id]), "{v}");
    assert_eq!(clips["new"], serde_json::json!(["video_0000/0001b"]), "{v}");
    assert_eq!(
        v["stages"][1]["items"]["compute"], 1,
        "the new clip only: {v}"
    );
    assert_eq!(p.run_json(&[]).0, 0);

    // The human summary says it in words.
    p.change_clip("video_0000/0005.mp4", 777);
    let out = p.run(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("1 computed, {} reused", n - 1)),
        "{err}"
    );
}

#[test]
fn a_target_that_names_no_stage_exits_2_with_a_hint() {
    let p = Project::new(2);
    for args in [&["run", "splt"][..], &["status", "splt"], &["exec", "splt"]] {
        let out = p.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no stage `splt`") && err.contains("did you mean `split`"),
            "{err}"
        );
    }
}

#[test]
fn bad_pipelines_exit_2_with_line_and_hint_and_run_nothing() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("stages:\n  ingest:\n    kind: ingset\n    params: {root: data}\n", ":3:", &["unknown kind `ingset`", "did you mean `ingest`"]),
        ("stages:\n  ingest:\n    kind: ingest\n    params:\n      root: data\n      layot: mmsa\n", ":6:", &["unknown param `layot`", "did you mean `layout`"]),
        ("stages:\n  ingest:\n    kind: ingest\n    params:\n      root: data\n      layout: 7\n", ":6:", &["expected one of mmsa, csv"]),
        ("stages:\n  ingest:\n    kind: ingest\n    params: {root: data}\n  split:\n    kind: split\n    inputs: [ingst]\n", ":7:", &["input `ingst` is not a stage", "did you mean `ingest`"]),
        ("stages:\n  a:\n    kind: labels\n    inputs: [b]\n  b:\n    kind: labels\n    inputs: [a]\n", ":4:", &["cycle: a -> b -> a"]),
        ("vars: {data: d}\nstages:\n  ingest:\n    kind: ingest\n    params:\n      root: ${dta}\n", ":6:", &["unknown variable `${dta}`", "did you mean `data`"]),
        ("stages:\n  ingest:\n    kind: ingest\n    params: {root: data\n", ":", &["invalid YAML"]),
        ("stages:\n  split:\n    kind: split\n    params: {seed: 1.5}\n", ":", &["expected an integer"]),
        ("stages:\n  ingest:\n    kind: ingest\n    params: {root: data}\n  decode:\n    kind: decode\n    inputs: [ingest]\n    params:\n      frames: 0\n", ":9:", &["param `frames`: 0 is not in 1..=1000000", "uniform: frames per clip"]),
    ];
    for (yaml, line, needles) in cases {
        let p = Project::with_pipeline(2, yaml);
        let out = p.run(&["run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{err}");
        assert!(
            err.contains(&format!("default.yaml{line}")),
            "{yaml}\n{err}"
        );
        for n in *needles {
            assert!(err.contains(n), "missing `{n}` in:\n{err}");
        }
        assert!(
            !p.root().join("cache").exists(),
            "nothing runs on a bad pipeline"
        );
    }
}

#[test]
fn bad_clips_are_named_and_the_run_is_partial() {
    let p = Project::new(6);
    // A truncated clip, a 0-byte clip, and a row whose file is missing.
    let f = p.root().join("data/Raw/video_0000/0002.mp4");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(p.root().join("data/Raw/video_0000/0003.mp4"), b"").unwrap();
    std::fs::remove_file(p.root().join("data/Raw/video_0000/0004.mp4")).unwrap();

    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 3, "partial: {s}");
    let errs: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "item_error")
        .collect();
    let about = |id: &str| {
        errs.iter()
            .find(|e| e["item"] == id)
            .unwrap_or_else(|| panic!("no error for {id}: {errs:?}"))
    };
    assert_eq!(about("video_0000/0004")["stage"], "ingest");
    assert_eq!(about("video_0000/0004")["field"], "media_path");
    assert_eq!(about("video_0000/0003")["stage"], "probe");
    assert_eq!(about("video_0000/0002")["stage"], "probe");
    assert_eq!(stage_done(&events, "probe")["computed"], 3);

    let out = p.run(&["show", "probe"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed items (2)") && text.contains("video_0000/0003"),
        "{text}"
    );
    let out = p.run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("item(s) failed"));

    // Failed items are not cached as results: the rerun is cached but still says partial.
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 3);
    assert!(s["ran"].as_array().unwrap().is_empty());
}

#[test]
fn kill_9_at_any_point_then_rerun_reuses_finished_work() {
    let n = 16;
    let reference = Project::new(n);
    assert_eq!(reference.run_json(&[]).0, 0);
    let want = reference.objects();

    let mut resumed_some_items = false;
    for ms in [60u64, 250, 500, 900, 1400] {
        let p = Project::new(n);
        let mut child = p
            .cmd(&["run", "-j", "1"])
            .env("PIPELINE_TEST_ITEM_DELAY_MS", "120")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (code, events, _) = p.run_json(&[]);
        assert_eq!(code, 0, "rerun after kill at {ms} ms: {events:?}");
        if let Some(probe) = events
            .iter()
            .find(|e| e["event"] == "stage_done" && e["stage"] == "probe" && e["outcome"] == "ran")
        {
            let reused = probe["reused"].as_u64().unwrap();
            assert_eq!(reused + probe["computed"].as_u64().unwrap(), n as u64);
            resumed_some_items |= reused > 0 && reused < n as u64;
        }
        assert_eq!(
            p.objects(),
            want,
            "same artifacts as an uninterrupted run (kill at {ms} ms)"
        );
        let v = p.run(&["verify"]);
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    }
    assert!(
        resumed_some_items,
        "at least one kill landed mid-stage and the rerun reused its finished items"
    );
}

#[test]
fn concurrent_runs_on_one_cache_agree_with_a_single_run() {
    let n = 12;
    let reference = Project::new(n);
    assert_eq!(reference.run_json(&[]).0, 0);
    let want = reference.objects();

    let p = Project::new(n);
    let spawn = || {
        p.cmd(&["run", "--json"])
            .env("PIPELINE_TEST_ITEM_DELAY_MS", "20")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(p.objects(), want);
    assert!(p.run(&["verify"]).status.success());
    let (_, _, s) = p.run_json(&[]);
    assert_eq!(names(&s["cached"]), ALL);
}

#[test]
fn matrix_variants_share_upstream_work_and_dag_renders() {
    let yaml = "\
stages:
  ingest:
    kind: ingest
    params: {root: data}
  split:
    kind: split
    inputs: [ingest]
    matrix: {seed: 1..3, method: [ratio]}
  labels:
    kind: labels
    inputs: [ingest]
    matrix: {source: [ima, iua]}
";
    let p = Project::with_pipeline(6, yaml);
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(s["ran"].as_array().unwrap().len(), 6, "{s}");
    let (_, _, s) = p.run_json(&["split"]);
    assert_eq!(
        s["cached"].as_array().unwrap().len(),
        4,
        "the three seeds and their one shared ingest"
    );

    // Each matrix stage once, with its axes; --expand draws every variant.
    let dag = |args: &[&str]| {
        let mut a = vec!["dag"];
        a.extend_from_slice(args);
        String::from_utf8(p.run(&a).stdout).unwrap()
    };
    let dot = dag(&["--format", "dot"]);
    assert_eq!(dot.matches(" -> ").count(), 2, "{dot}");
    assert!(dot.contains("split [split] x3 (method, seed)"), "{dot}");
    let dot = dag(&["--format", "dot", "--expand"]);
    assert_eq!(dot.matches(" -> ").count(), 5, "{dot}");
    assert!(dot.contains("split[seed=2,method=ratio]"));
    let mermaid = dag(&["--format", "mermaid", "--expand"]);
    assert!(mermaid.starts_with("flowchart LR") && mermaid.matches("-->").count() == 5);
    // ASCII is a tree from each end stage up to what it reads; one target draws its upstream.
    assert_eq!(
        dag(&[]),
        "split [split] x3 (method, seed)\n└── ingest [ingest]\nlabels [labels] x2 (source)\n└── ingest [ingest]\n"
    );
    assert_eq!(
        dag(&["labels", "--expand"]),
        "labels[source=ima] [labels]\n└── ingest [ingest]\nlabels[source=iua] [labels]\n└── ingest [ingest]\n"
    );
}

#[test]
fn gc_and_verify_keep_what_pipelines_use() {
    let p = Project::new(6);
    assert_eq!(p.run_json(&[]).0, 0);
    // An artifact only a one-off --set used, twenty-one runs ago: gc may drop it.
    assert_eq!(p.run_json(&["--set", "split.method=ratio"]).0, 0);
    for _ in 0..20 {
        p.run_json(&[]);
    }
    let before = p.objects();
    assert_eq!(before.len(), 5);
    let out = p.run(&["gc", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would delete: 1 artifact(s), 1 object(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(p.objects(), before);
    assert!(p.run(&["gc"]).status.success());
    assert_eq!(p.objects().len(), 4);
    let (_, _, s) = p.run_json(&[]);
    assert_eq!(
        names(&s["cached"]),
        ALL,
        "gc kept everything the pipeline uses"
    );

    // Corrupt one object: verify names it, --fix forgets it, the next run recomputes it.
    let obj = p.objects()[0].clone();
    let path = p.root().join("cache/objects").join(&obj[..2]).join(&obj);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = p.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 corrupt"));
    assert!(p.run(&["verify", "--fix"]).status.success());
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(s["ran"].as_array().unwrap().len(), 1, "{s}");
    assert!(p.run(&["verify"]).status.success());
}

#[test]
fn plain_csv_manifest_with_ratio_and_leave_one_group_out_splits() {
    let yaml = "\
stages:
  ingest:
    kind: ingest
    params: {layout: csv, root: data/clips.csv}
  ratio:
    kind: split
    inputs: [ingest]
    params: {method: ratio, ratios: [0.5, 0.25, 0.25], seed: 3}
  logo:
    kind: split
    inputs: [ingest]
    params: {method: logo, group_column: group}
  labels:
    kind: labels
    inputs: [ingest]
    params: {scale: mosi, source: ima}
";
    let p = Project::with_pipeline(8, yaml);
    let mut csv = String::from("path,text,label,split,group\n");
    for i in 0..8 {
        let rel = format!("Raw/video_0000/{:04}.mp4", i + 1);
        csv.push_str(&format!(
            "{rel},clip {i},{},train,spk{}\n",
            i as f64 * 0.75 - 3.0,
            i % 3
        ));
    }
    csv.push_str("Raw/none.mp4,a missing clip,0.5,test,spk0\n");
    std::fs::write(p.root().join("data/clips.csv"), csv).unwrap();
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(
        code, 3,
        "the missing file makes the run partial: {events:?}"
    );
    let show = |s: &str| -> Value {
        serde_json::from_slice(&p.run(&["show", s, "--json", "--rows", "0"]).stdout).unwrap()
    };
    assert_eq!(show("ingest")["rows"], 8);
    assert_eq!(show("ingest")["failed_items"][0]["item"], "Raw/none.mp4");
    assert_eq!(show("ratio")["rows"], 8);
    assert_eq!(show("logo")["rows"], 8 * 3, "three groups, three folds");
    assert_eq!(show("labels")["rows"], 8 * 4);
    let text = String::from_utf8(p.run(&["show", "labels", "--rows", "8"]).stdout).unwrap();
    // -3.0 -> Acc-7 class 0; -0.75 -> round(-0.75) = -1 -> class 2.
    assert!(
        text.contains("| Raw/video_0000/0001.mp4 | m      | -3.0  | 0    |"),
        "{text}"
    );
}

/// A user's own script as stages: per clip on the media (ffprobe here), per clip on the previous
/// command's bytes, and once over the whole table. One changed clip reruns one item per per-clip
/// stage; a failing clip is named and the run is partial; a changed `deps` file reruns the stage.
#[test]
fn command_stages_cache_per_clip_and_name_failing_clips() {
    let n = 6;
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  duration:
    kind: command
    inputs: [ingest]
    params:
      from: media
      cmd: \"ffprobe -v error -show_entries format=duration -of csv=p=0 {in} > {out}\"
  tagged:
    kind: command
    inputs: [duration]
    params: {cmd: \"sh tag.sh {id} {in} > {out}\", deps: [tag.sh]}
  total:
    kind: command
    inputs: [tagged]
    params: {per: table, cmd: \"find {in} -type f | xargs cat | sort > {out}/all.txt; find {in} -type f | wc -l > {out}/count.txt\"}
";
    let p = Project::with_pipeline(n, yaml);
    std::fs::write(p.root().join("tag.sh"), "printf '%s ' \"$1\"; cat \"$2\"\n").unwrap();
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 0, "{s}");
    let t = p.table("total");
    assert_eq!(
        strs(&t, "clip_id"),
        [Some("all.txt".into()), Some("count.txt".into())]
    );
    let data = command_outputs(&p, "total");
    let all = data[0].clone();
    assert_eq!(all.lines().count(), n, "{all}");
    // Every line is "<clip id> <duration>", the duration ffprobe read from the real clip.
    for line in all.lines() {
        let (id, dur) = line.split_once(' ').unwrap();
        // MMSA ids are video/clip: nested folders in {in}.
        assert!(id.starts_with("video_0000/"), "{line}");
        let d: f64 = dur.trim().parse().unwrap();
        assert!((0.9..=2.2).contains(&d), "{line}");
    }
    assert_eq!(data[1].trim(), n.to_string());

    assert_eq!(names(&p.run_json(&[]).2["ran"]), Vec::<String>::new());

    let before = strs(&p.table("duration"), "data_hash");
    p.change_clip("video_0000/0002.mp4", 555);
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 0);
    let d = stage_done(&events, "duration");
    assert_eq!(
        (d["computed"].as_i64(), d["reused"].as_i64()),
        (Some(1), Some(n as i64 - 1)),
        "{d}"
    );
    // The next stage reads the bytes, not the clip: it reruns the clip only if they changed.
    let changed = before != strs(&p.table("duration"), "data_hash");
    let d = stage_done(&events, "tagged");
    assert_eq!(d["computed"].as_i64(), Some(changed as i64), "{d}");

    // A changed script is a changed stage: every item of it reruns, upstream stays cached.
    std::fs::write(
        p.root().join("tag.sh"),
        "printf '%s: ' \"$1\"; cat \"$2\"\n",
    )
    .unwrap();
    let (code, events, s) = p.run_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(names(&s["ran"]), ["tagged", "total"]);
    assert_eq!(stage_done(&events, "tagged")["computed"], n);

    // A clip the command fails on is named with the command's own message; the rest finish.
    std::fs::write(
        p.root().join("data/Raw/video_0000/0004.mp4"),
        b"not a video",
    )
    .unwrap();
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 3, "partial run");
    let failed = p.failed_items("duration");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "video_0000/0004");
    assert_eq!(failed[0].1, "cmd");
    assert!(failed[0].2.contains("exited with"), "{failed:?}");
    assert!(failed[0].2.contains("Invalid data"), "{failed:?}");
    assert_eq!(stage_done(&events, "tagged")["computed"], 0);
    assert_eq!(command_outputs(&p, "total")[1].trim(), (n - 1).to_string());
}

/// Every study ships a `table_main` stage in a pipeline that parses: its paper's main model over
/// the seeds, the target `make` runs.
#[test]
fn every_study_has_a_table_main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut studies = 0;
    for e in std::fs::read_dir(root.join("pipeline")).unwrap() {
        let path = e.unwrap().path();
        if path.file_name().and_then(|n| n.to_str()) == Some("default.yaml") {
            continue;
        }
        let out = {
            ensure_worker();
            std::process::Command::new(BIN)
        }
        .args(["dag", "-p"])
        .arg(&path)
        .current_dir(root)
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("table_main"),
            "{}: {}{}",
            path.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        studies += 1;
    }
    assert_eq!(studies, 5);
}

#[test]
fn the_workers_kinds_agree_with_the_engines() {
    ensure_worker();
    let worker = std::path::Path::new(BIN).with_file_name("pipeline-worker");
    let run = |bin: &std::path::Path| {
        let o = std::process::Command::new(bin)
            .arg("kinds")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", bin.display());
        String::from_utf8(o.stdout).unwrap()
    };
    let (engine, worker) = (run(Path::new(BIN)), run(&worker));
    assert!(engine.contains("train_joint (v") && engine.contains("probe (v"));
    assert_eq!(
        engine, worker,
        "the worker computes other kinds, versions or params"
    );
}

#[test]
fn the_engine_links_no_heavy_library_and_says_where_its_worker_is_missing() {
    let ldd = std::process::Command::new("ldd").arg(BIN).output().unwrap();
    let libs = String::from_utf8_lossy(&ldd.stdout);
    for heavy in [
        "libtorch",
        "libc10",
        "libavcodec",
        "libavformat",
        "libopencv",
    ] {
        assert!(!libs.contains(heavy), "pipeline links {heavy}:\n{libs}");
    }
    // A stage that needs the worker fails clearly when it is not there; the others run.
    let p = Project::new(2);
    let (code, events, _) = {
        let o = p
            .cmd(&["run", "--json", "--keep-going"])
            .env("PIPELINE_WORKER", p.root().join("no-such-worker"))
            .output()
            .unwrap();
        let ev: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (o.status.code(), ev, ())
    };
    assert_eq!(code, Some(1));
    let outcome = |s: &str| {
        events
            .iter()
            .find(|e| e["event"] == "stage_done" && e["stage"] == s)
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap().to_string(),
                    e["error"].clone(),
                )
            })
            .unwrap()
    };
    assert_eq!(outcome("split").0, "ran");
    let (probe, err) = outcome("probe");
    assert_eq!(probe, "failed");
    assert!(err.as_str().unwrap().contains("no-such-worker"), "{err}");
}

#[test]
fn a_killed_worker_fails_its_stage_only_with_the_signal_and_a_rerun_resumes() {
    let n = 12;
    let p = Project::new(n);
    let child = p
        .cmd(&["run", "--json", "--keep-going", "-j", "1"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let engine = child.id();
    // The worker computing `probe`, once some of its items are done.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let worker = loop {
        if let Some(&w) = workers_of(engine).first() {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "no worker started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(900));
    let st = std::process::Command::new("kill")
        .args(["-9", &worker.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let done = |s: &str| {
        events
            .iter()
            .find(|e| e["event"] == "stage_done" && e["stage"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("no stage_done for {s}: {events:?}"))
    };
    assert_eq!(out.status.code(), Some(1));
    let probe = done("probe");
    assert_eq!(probe["outcome"], "failed");
    let msg = probe["error"].as_str().unwrap();
    assert!(msg.contains("killed by signal 9"), "{msg}");
    // Independent stages went on under --keep-going.
    assert_eq!(done("split")["outcome"], "ran");
    assert_eq!(done("labels")["outcome"], "ran");
    // Nothing torn; the items finished before the kill are reused.
    let v = p.run(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let (code, events, _) = p.run_json(&[]);
    assert_eq!(code, 0);
    let probe = events
        .iter()
        .find(|e| e["event"] == "stage_done" && e["stage"] == "probe")
        .unwrap();
    let reused = probe["reused"].as_u64().unwrap();
    assert!(reused > 0 && reused < n as u64, "{probe}");
}

#[test]
fn reading_commands_take_the_last_runs_overrides_and_runs_lists_them() {
    let p = Project::new(4);
    assert_eq!(p.run_json(&[]).0, 0);
    assert_eq!(p.run_json(&["--set", "split.method=ratio"]).0, 0);
    let state = |args: &[&str]| -> (String, String) {
        let mut a = vec!["status", "--json"];
        a.extend_from_slice(args);
        let out = p.run(&a);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let split = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "split")
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string();
        (split, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (st, err) = state(&[]);
    assert_eq!(st, "fresh", "the last run's --set: {err}");
    assert!(
        err.contains("with run 2's overrides: --set split.method=ratio"),
        "{err}"
    );
    // Its own --set, or none at all on request.
    assert_eq!(state(&["--set", "split.method=manifest"]).0, "fresh");
    let (st, err) = state(&["--no-last-sets"]);
    assert_eq!(st, "fresh", "the default was computed by run 1");
    assert!(err.is_empty(), "{err}");
    let out = p.run(&["show", "split", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"]["method"], "ratio");
    // The history.
    let out = p.run(&["runs", "--json"]);
    let runs = json_lines(&out.stdout);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["sets"], serde_json::json!(["split.method=ratio"]));
    assert_eq!(runs[1]["exit_code"], 0);
    assert_eq!(runs[1]["stages"]["ran"], 1);
    assert_eq!(runs[1]["stages"]["cached"], 3);
    let out = p.run(&["metrics", "diff", "--json"]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["params"][0]["param"], "split.method", "{d}");
}

#[test]
fn quiet_verbose_and_shell_completions() {
    let p = Project::new(3);
    let out = p.run(&["-q", "run"]);
    assert!(out.status.success());
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(o.starts_with("4 ran, 0 cached, 0 failed"), "{o}");
    assert!(e.is_empty(), "-q: {e}");
    let out = p.run(&["-v", "run", "--set", "split.method=ratio"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("why    split  (param method changed \"manifest\" -> \"ratio\")"),
        "{e}"
    );
    // A failure still shows under -q.
    std::fs::remove_dir_all(p.root().join("data/Raw")).unwrap();
    let out = p.run(&["-q", "run", "--set", "split.method=manifest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed ingest"));
    for (shell, mark) in [
        ("bash", "complete -F _pipeline"),
        ("zsh", "#compdef pipeline"),
        ("fish", "complete -c pipeline"),
    ] {
        let out = p.run(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(mark), "{shell}");
        assert!(text.contains("retry-failed"), "{shell}");
    }
    let out = p.run(&["completions", "bash"]);
    let f = p.root().join("c.bash");
    std::fs::write(&f, &out.stdout).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p pipeline", f.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
}

#[test]
fn wiring_errors_are_exit_2_at_plan_time_with_the_kinds_that_fit() {
    let cases = [
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  face: {kind: face, inputs: [ingest]}\n",
            ":3:",
            "stage `face` (face) reads `object` from its input `ingest`",
            "decode",
        ),
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  audio: {kind: audio, inputs: [ingest]}\n  logmel: {kind: logmel, inputs: [audio]}\n  cmd: {kind: command, inputs: [logmel], params: {cmd: \"cat {in} > {out}\"}}\n",
            ":5:",
            "reads `data_hash` from its input `logmel`",
            "command",
        ),
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  cmd: {kind: command, inputs: [ingest], params: {from: media, cmd: \"cat {in} > {out}\"}}\n  padded: {kind: pad, inputs: [cmd], params: {steps: 4}}\n",
            ":4:",
            "reads `object` from its input `cmd`",
            "logmel",
        ),
        // Whole-table kinds: a training given raw audio as its features (by role), and
        // `evaluate` given features instead of a trained model.
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  audio: {kind: audio, inputs: [ingest]}\n  labels: {kind: labels, inputs: [ingest]}\n  split: {kind: split, inputs: [ingest]}\n  uni: {kind: train_unimodal, inputs: {features: audio, labels: labels, split: split}, params: {modality: a, model: cnn}}\n",
            ":6:",
            "stage `uni` (train_unimodal) reads `frames`, `dim`, `values` from its input `audio`",
            "logmel",
        ),
        (
            "stages:\n  ingest: {kind: ingest, params: {root: data}}\n  audio: {kind: audio, inputs: [ingest]}\n  logmel: {kind: logmel, inputs: [audio]}\n  ev: {kind: evaluate, inputs: [logmel]}\n",
            ":5:",
            "reads `part`, `split`, `y`, `pred` from its input `logmel`",
            "train_unimodal",
        ),
    ];
    for (yaml, line, msg, maker) in cases {
        let p = Project::with_pipeline(1, yaml);
        for cmd in [&["run", "--dry-run"][..], &["status"]] {
            let out = p.run(cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
            assert!(err.contains(&format!("default.yaml{line}")), "{err}");
            assert!(err.contains(msg), "{err}");
            assert!(
                err.contains("kinds that produce it:") && err.contains(maker),
                "{err}"
            );
        }
    }
}

/// A project of `n` small text clips in a CSV manifest, for the engine's own behaviour at
/// more clips than media tests can afford.
fn text_clips(n: usize, yaml: &str) -> Project {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("pipeline")).unwrap();
    std::fs::create_dir_all(root.join("raw")).unwrap();
    std::fs::write(root.join("pipeline/default.yaml"), yaml).unwrap();
    let mut csv = String::from("id,path,text,label,split\n");
    for i in 0..n {
        std::fs::write(root.join(format!("raw/c{i:03}.txt")), format!("clip {i}\n")).unwrap();
        csv.push_str(&format!("c{i:03},raw/c{i:03}.txt,,0,train\n"));
    }
    std::fs::write(root.join("clips.csv"), csv).unwrap();
    Project { tmp }
}

const PARTS_YAML: &str = "\
stages:
  ingest: {kind: ingest, params: {layout: csv, root: clips.csv}}
  first: {kind: command, inputs: [ingest], params: {from: media, cmd: \"cat {in} > {out}; echo first >> {out}\"}}
  second: {kind: command, inputs: [first], params: {cmd: \"cat {in} > {out}; echo second >> {out}\"}}
  total: {kind: command, inputs: [second], params: {per: table, cmd: \"cat {in}/* > {out}/all.txt\"}}
";

/// The part objects of a stage's table in parts (empty for a table in one object).
fn parts_of(p: &Project, stage: &str) -> Vec<String> {
    let out = p.run(&["show", stage, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    part_objects(Path::new(v["artifact"].as_str().unwrap())).unwrap_or_default()
}

/// A per-clip stage's table is stored in parts: after one clip changes, one part is written
/// again and the others are the same objects; readers see the whole table in input order;
/// `gc` keeps the parts and the files the commands wrote.
#[test]
fn a_changed_clip_rewrites_one_part_of_each_per_clip_table() {
    let n = 60;
    let p = text_clips(n, PARTS_YAML);
    let run = |args: &[&str]| {
        let mut a = vec!["run", "--json"];
        a.extend_from_slice(args);
        let out = p
            .cmd(&a)
            .env("PIPELINE_TEST_PART_ROWS", "8")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    };
    run(&[]);
    let before: Vec<Vec<String>> = ["first", "second"]
        .iter()
        .map(|s| parts_of(&p, s))
        .collect();
    assert!(before.iter().all(|v| v.len() >= 3), "{before:?}");
    let ids: Vec<String> = (0..n).map(|i| format!("c{i:03}")).collect();
    assert_eq!(
        strs(&p.table("second"), "clip_id")
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        ids
    );
    let out = command_outputs(&p, "second");
    assert_eq!(out[7], "clip 7\nfirst\nsecond\n");

    std::fs::write(p.root().join("raw/c033.txt"), "clip 33, again\n").unwrap();
    let events = run(&[]);
    for (s, old) in ["first", "second"].iter().zip(&before) {
        let d = stage_done(&events, s);
        assert_eq!(
            (d["computed"].as_u64(), d["reused"].as_u64()),
            (Some(1), Some(n as u64 - 1)),
            "{d}"
        );
        let now = parts_of(&p, s);
        assert_eq!(now.len(), old.len(), "{s}");
        let new = now.iter().filter(|o| !old.contains(o)).count();
        assert_eq!(new, 1, "{s}: {old:?} -> {now:?}");
    }
    assert_eq!(
        command_outputs(&p, "second")[33],
        "clip 33, again\nfirst\nsecond\n"
    );
    let all = &command_outputs(&p, "total")[0];
    assert_eq!(all.lines().count(), 3 * n, "{all}");
    assert!(all.contains("clip 33, again"), "{all}");

    // gc keeps what the pipeline uses: the next run reuses everything.
    let out = p.run(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ran(&run(&[])).is_empty());
    assert_eq!(
        command_outputs(&p, "second")[33],
        "clip 33, again\nfirst\nsecond\n"
    );
}

/// A command's inputs are the cache's own files, read-only: a per-clip command or a per-table
/// one that writes to its input fails and names it, the file is set aside, and the next run
/// computes it again instead of using what the command wrote.
#[test]
fn a_command_that_writes_to_its_input_fails_and_the_cache_heals() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {layout: csv, root: clips.csv}}
  first: {kind: command, inputs: [ingest], params: {from: media, cmd: \"cat {in} > {out}\"}}
  vandal: {kind: command, inputs: [first], params: {per: table, cmd: \"set -e; echo x >> {in}/c002; ls {in} > {out}/list\"}}
  polite: {kind: command, inputs: [first], params: {per: table, cmd: \"cat {in}/c002 > {out}/c002\"}}
";
    let p = text_clips(4, yaml);
    // Outside root, the file's permissions stop the write itself.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    let (code, _, s) = p.run_json(&["first"]);
    assert_eq!(code, 0, "{s}");
    let out = p.run(&["run", "vandal"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let said = if root {
        "wrote to its input"
    } else {
        "Permission denied"
    };
    assert!(err.contains(said) && err.contains("c002"), "{err}");
    // The file the command wrote to is not used: `first` computes that clip again.
    let (code, events, s) = p.run_json(&["polite"]);
    assert_eq!(code, 0, "{s}");
    let d = stage_done(&events, "first");
    assert_eq!(d["computed"].as_u64(), Some(root as u64), "{d}");
    assert_eq!(command_outputs(&p, "polite"), ["clip 2\n"]);

    // The same for a per-clip command.
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {layout: csv, root: clips.csv}}
  first: {kind: command, inputs: [ingest], params: {from: media, cmd: \"cat {in} > {out}\"}}
  second: {kind: command, inputs: [first], params: {cmd: \"cat {in} > {out}; test {id} != c001 || echo x >> {in}\"}}
";
    std::fs::write(p.root().join("pipeline/default.yaml"), yaml).unwrap();
    let (code, _, s) = p.run_json(&[]);
    assert_eq!(code, 3, "{s}");
    let failed = p.failed_items("second");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "c001");
    let said = if root {
        "wrote to its input"
    } else {
        "Permission denied"
    };
    assert!(failed[0].2.contains(said), "{failed:?}");
    let (code, events, s) = p.run_json(&["first"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        stage_done(&events, "first")["computed"].as_u64(),
        Some(root as u64)
    );
    assert_eq!(command_outputs(&p, "first")[1], "clip 1\n");
}
