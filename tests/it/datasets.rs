//! The demo dataset and the dataset adapters, driven through the real binary on clips the demo
//! generator writes from real photos and espeak-ng speech.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use arrow::array::{Int64Array, UInt64Array};

const DEFAULT: &str = include_str!("../../pipeline/default.yaml");

fn default_pipeline() -> String {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models");
    DEFAULT.replace("data: data/demo", "data: data").replace(
        "models: data/models",
        &format!("models: \"{}\"", models.display()),
    )
}

#[test]
fn shipped_ch_sims_manifest_matches_the_default_pipeline_stages() {
    let p = Project::with_demo(
        &include_str!("../../manifests/ch-sims.yaml").replace("data: data/demo", "data: data"),
        6,
        4,
        &[],
    );
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(p.table("ingest").num_rows(), 6);
    assert_eq!(
        p.table("labels").num_rows(),
        6 * 4,
        "iua: m, t, a, v per clip"
    );
}

#[test]
fn plain_csv_manifest_on_demo_media() {
    // manifests/csv.yaml already points at data/clips.csv.
    let p = Project::with_demo(include_str!("../../manifests/csv.yaml"), 6, 9, &[]);
    // The same clips described by a plain CSV with its own column names and order.
    let mut csv = String::from("split,path,label,text,group\n");
    for r in label_rows(p.root()) {
        csv.push_str(&format!(
            "{},Raw/{}/{}.mp4,{},\"{}\",{}\n",
            r["mode"], r["video_id"], r["clip_id"], r["label"], r["text"], r["video_id"]
        ));
    }
    std::fs::write(p.root().join("data/clips.csv"), csv).unwrap();
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let t = p.table("ingest");
    assert_eq!(t.num_rows(), 6);
    assert!(strs(&t, "clip_id")[0]
        .as_deref()
        .unwrap()
        .starts_with("Raw/video_0001/"));
    let total: u64 = summary_counts(&p).values().sum();
    assert_eq!(total, 6);
}

/// label.csv rows as maps, read from bytes so that a non-UTF-8 row stays readable.
fn label_rows(root: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(root.join("data/label.csv")).unwrap();
    let head: Vec<String> = r
        .byte_headers()
        .unwrap()
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    r.byte_records()
        .map(|rec| {
            let rec = rec.unwrap();
            head.iter()
                .cloned()
                .zip(rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()))
                .collect()
        })
        .collect()
}

/// (fold, split, class) -> clips, from the summary stage's table.
fn summary_counts(p: &Project) -> BTreeMap<(i64, String, String), u64> {
    let t = p.table("summary");
    let fold = typed::<Int64Array>(&t, "fold");
    let clips = typed::<UInt64Array>(&t, "clips");
    let split = strs(&t, "split");
    let class = strs(&t, "class_name");
    (0..t.num_rows())
        .map(|i| {
            (
                (
                    fold.value(i),
                    split[i].clone().unwrap(),
                    class[i].clone().unwrap(),
                ),
                clips.value(i),
            )
        })
        .collect()
}

fn sims_class(y: f64) -> &'static str {
    if y <= -0.1 {
        "Negative"
    } else if y <= 0.1 {
        "Neutral"
    } else {
        "Positive"
    }
}

#[test]
fn demo_run_all_ingests_every_clip_and_counts_agree_with_label_csv() {
    let p = Project::with_demo(&default_pipeline(), 40, 1, &[]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let rows = label_rows(p.root());
    assert_eq!(rows.len(), 40);
    assert_eq!(p.table("ingest").num_rows(), 40);

    // The summary agrees with label.csv's mode x annotation, and with the labels themselves.
    let mut want: BTreeMap<(i64, String, String), u64> = BTreeMap::new();
    for r in &rows {
        let y: f64 = r["label"].parse().unwrap();
        assert_eq!(sims_class(y), r["annotation"], "{r:?}");
        assert!((-1.0..=1.0).contains(&y));
        for m in ["label_T", "label_A", "label_V"] {
            let v: f64 = r[m].parse().unwrap();
            // five annotators voting -1/0/1: multiples of 0.2
            assert!(((v * 5.0).round() - v * 5.0).abs() < 1e-9, "{m}={v}");
        }
        *want
            .entry((0, r["mode"].clone(), r["annotation"].clone()))
            .or_default() += 1;
    }
    assert_eq!(summary_counts(&p), want);
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str()).collect();
    for m in ["train", "valid", "test"] {
        assert!(modes.contains(&m), "no {m} clips");
    }
    let report = events
        .iter()
        .find(|e| e["event"] == "report" && e["stage"] == "summary")
        .expect("summary report");
    assert!(report["text"].as_str().unwrap().contains("all"), "{report}");

    // IUA and IMA disagree for some clips, and no modality gives the multimodal class always.
    for m in ["label_T", "label_A", "label_V"] {
        let differ = rows
            .iter()
            .filter(|r| sims_class(r[m].parse().unwrap()) != r["annotation"])
            .count();
        assert!(differ > 0 && differ < rows.len() / 2, "{m}: {differ}");
    }

    // CH-SIMS-like clips: H.264 at 25 fps with AAC audio, 1-10 s.
    let probe = p.table("probe");
    assert_eq!(probe.num_rows(), 40);
    let vc = strs(&probe, "video_codec");
    let ac = strs(&probe, "audio_codec");
    let fps = f64s(&probe, "fps");
    let dur = f64s(&probe, "duration_s");
    for i in 0..40 {
        assert_eq!(vc[i].as_deref(), Some("h264"));
        assert_eq!(ac[i].as_deref(), Some("aac"));
        assert_eq!(fps[i], Some(25.0));
        let d = dur[i].unwrap();
        assert!((1.0..=10.0).contains(&d), "duration {d}");
    }
    // Labels live in the content only: file names are the corpus's ids.
    for r in &rows {
        assert!(r["video_id"].starts_with("video_") && r["clip_id"].len() == 4);
    }
}

#[test]
fn same_seed_same_bytes_same_keys() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_demo(&a.path().join("d"), 4, 7, &["--bad"]);
    make_demo(&b.path().join("d"), 4, 7, &["--bad"]);
    let files = |root: &Path| {
        let mut v = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                    v.push((rel, std::fs::read(e.path()).unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    let fa = files(&a.path().join("d"));
    assert!(fa.len() >= 14, "{}", fa.len());
    assert!(
        fa == files(&b.path().join("d")),
        "same seed, different bytes"
    );

    let c = tempfile::tempdir().unwrap();
    make_demo(&c.path().join("d"), 4, 8, &[]);
    let fc = files(&c.path().join("d"));
    let csv_of = |v: &[(std::path::PathBuf, Vec<u8>)]| {
        v.iter()
            .find(|f| f.0 == Path::new("label.csv"))
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(
        csv_of(&fa),
        csv_of(&fc),
        "another seed should give another dataset"
    );

    // Same bytes give the same cache keys, wherever the dataset lives.
    let p1 = Project::with_demo(&default_pipeline(), 3, 5, &[]);
    let p2 = Project::with_demo(&default_pipeline(), 3, 5, &[]);
    let (_, e1, _) = p1.run_json(&["all"]);
    let (_, e2, _) = p2.run_json(&["all"]);
    for s in ["ingest", "labels", "split", "summary", "probe"] {
        assert_eq!(stage_done(&e1, s)["key"], stage_done(&e2, s)["key"], "{s}");
    }
}

#[test]
fn bad_inputs_are_named_by_clip_and_field_and_the_rest_runs() {
    let p = Project::with_demo(&default_pipeline(), 3, 1, &["--bad"]);
    let (code, _, summary) = p.run_json(&["all"]);
    assert_eq!(code, 3, "partial run: {summary}");

    let ingest = p.failed_items("ingest");
    let fields: Vec<(&str, &str)> = ingest
        .iter()
        .map(|(i, f, _)| (i.as_str(), f.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("bad_inputs/latin1_text", "text"),
            ("bad_inputs/missing_file", "media_path")
        ]
    );
    assert!(ingest[0].2.contains("UTF-8"), "{:?}", ingest[0]);

    let probe = p.failed_items("probe");
    let items: Vec<&str> = probe.iter().map(|(i, _, _)| i.as_str()).collect();
    assert_eq!(items, vec!["bad_inputs/truncated", "bad_inputs/zero_bytes"]);

    // The audio stage names what is wrong with each clip's sound.
    let audio = p.failed_items("audio");
    let got: Vec<(&str, &str)> = audio
        .iter()
        .map(|(i, _, r)| (i.as_str(), r.as_str()))
        .collect();
    let expect = [
        ("bad_inputs/no_audio", "no audio stream"),
        ("bad_inputs/silent_audio", "silent"),
        ("bad_inputs/too_long", "longer than max_seconds"),
        ("bad_inputs/too_short", "shorter than min_seconds"),
        ("bad_inputs/truncated", "cannot open"),
        ("bad_inputs/zero_bytes", "cannot open"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:?}");
    for ((gi, gr), (ei, er)) in got.iter().zip(expect) {
        assert_eq!(*gi, ei);
        assert!(gr.contains(er), "{gi}: {gr}");
    }

    // Everything else went through: 3 good clips + no_audio, silent_audio, no_face, too_short,
    // too_long, emoji_text, truncated, zero_bytes.
    let t = p.table("ingest");
    let ids = strs(&t, "clip_id");
    assert_eq!(t.num_rows(), 11);
    let text = strs(&t, "text");
    let emoji = ids
        .iter()
        .position(|i| i.as_deref() == Some("bad_inputs/emoji_text"))
        .unwrap();
    assert!(text[emoji].as_deref().unwrap().contains("😍"));

    let probe = p.table("probe");
    let pid = strs(&probe, "clip_id");
    let dur = f64s(&probe, "duration_s");
    let has_audio = typed::<arrow::array::BooleanArray>(&probe, "has_audio");
    let at = |name: &str| {
        pid.iter()
            .position(|i| i.as_deref() == Some(&format!("bad_inputs/{name}")[..]))
            .unwrap()
    };
    assert!(!has_audio.value(at("no_audio")));
    assert!(has_audio.value(at("silent_audio")));
    assert!(dur[at("too_short")].unwrap() < 0.5);
    assert!(dur[at("too_long")].unwrap() > 10.0);
}

#[test]
fn mosi_layout_labels_in_minus_three_to_three() {
    let yaml = include_str!("../../manifests/mosi.yaml").replace("data: data/MOSI", "data: data");
    let p = Project::with_demo(&yaml, 12, 3, &["--layout", "mosi"]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let rows = label_rows(p.root());
    assert!(
        !rows[0].contains_key("label_T"),
        "MOSI has no unimodal labels"
    );
    let ys: Vec<f64> = rows.iter().map(|r| r["label"].parse().unwrap()).collect();
    assert!(ys.iter().all(|y| (-3.0..=3.0).contains(y)));
    assert!(ys.iter().any(|y| y.abs() > 1.0), "{ys:?}");
    let mut want: BTreeMap<(i64, String, String), u64> = BTreeMap::new();
    for r in &rows {
        *want
            .entry((0, r["mode"].clone(), r["annotation"].clone()))
            .or_default() += 1;
    }
    assert_eq!(summary_counts(&p), want);
    // acc7 of a MOSI score is round(y) + 3
    let l = p.table("labels");
    let acc7 = typed::<Int64Array>(&l, "acc7");
    let y = f64s(&l, "y");
    for (i, y) in y.iter().enumerate() {
        assert_eq!(acc7.value(i), (y.unwrap().round_ties_even() + 3.0) as i64);
    }
}

#[test]
fn iemocap_layout_four_classes_and_leave_one_session_out() {
    let yaml = include_str!("../../manifests/iemocap.yaml")
        .replace("data: data/IEMOCAP_full_release", "data: data");
    let p = Project::with_demo(&yaml, 20, 2, &["--layout", "iemocap"]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");

    // Ground truth from the corpus files themselves.
    let mut truth = BTreeMap::new();
    for s in 1..=5 {
        let dir = p
            .root()
            .join(format!("data/Session{s}/dialog/EmoEvaluation"));
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                if line.starts_with('[') {
                    let parts: Vec<&str> = line.split('\t').collect();
                    let valence: f64 = parts[3][1..].split(',').next().unwrap().parse().unwrap();
                    truth.insert(parts[1].to_string(), (s, parts[2].to_string(), valence));
                }
            }
        }
    }
    assert_eq!(truth.len(), 20);

    let t = p.table("ingest");
    assert_eq!(t.num_rows(), 20, "every utterance is ingested");
    let ids = strs(&t, "clip_id");
    let audio = strs(&t, "audio_path");
    let media = strs(&t, "media_path");
    let (start, end) = (f64s(&t, "start_s"), f64s(&t, "end_s"));
    let valence = f64s(&t, "valence");
    for i in 0..20 {
        let id = ids[i].clone().unwrap();
        assert_eq!(
            valence[i],
            Some(truth[&id].2),
            "{id}: the corpus's [V, A, D]"
        );
        assert!(p.root().join(audio[i].as_deref().unwrap()).is_file());
        assert!(media[i].as_deref().unwrap().ends_with(".avi"));
        assert!(start[i].unwrap() < end[i].unwrap());
        assert!(truth.contains_key(&id));
    }

    // Each fold tests one whole session and trains on the other four.
    let sp = p.table("split");
    let (sid, ssplit) = (strs(&sp, "clip_id"), strs(&sp, "split"));
    let sfold = typed::<Int64Array>(&sp, "fold");
    let mut tested: BTreeMap<i64, std::collections::BTreeSet<i32>> = BTreeMap::new();
    for i in 0..sp.num_rows() {
        let session = truth[sid[i].as_deref().unwrap()].0;
        if ssplit[i].as_deref() == Some("test") {
            tested.entry(sfold.value(i)).or_default().insert(session);
        }
    }
    let sessions: Vec<Vec<i32>> = tested
        .values()
        .map(|s| s.iter().copied().collect())
        .collect();
    assert_eq!(sessions, vec![vec![1], vec![2], vec![3], vec![4], vec![5]]);

    // 4 classes with excited merged into happy; others are counted as `(no class)`.
    let four = |c: &str| match c {
        "exc" | "hap" => "hap".to_string(),
        "neu" | "ang" | "sad" => c.to_string(),
        _ => "(no class)".to_string(),
    };
    let counts = summary_counts(&p);
    let folds: std::collections::BTreeSet<i64> = counts.keys().map(|k| k.0).collect();
    assert_eq!(folds.len(), 5, "five leave-one-session-out folds");
    for fold in folds {
        let test: u64 = counts
            .iter()
            .filter(|(k, _)| k.0 == fold && k.1 == "test")
            .map(|(_, v)| v)
            .sum();
        let all: u64 = counts
            .iter()
            .filter(|(k, _)| k.0 == fold)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(all, 20);
        // Each fold tests exactly one session (4 utterances here).
        assert_eq!(test, 4, "fold {fold}");
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &counts {
            if k.0 == fold {
                *got.entry(k.2.clone()).or_default() += v;
            }
        }
        for (_, c, _) in truth.values() {
            *want.entry(four(c)).or_default() += 1;
        }
        assert_eq!(got, want, "fold {fold}");
    }
}
