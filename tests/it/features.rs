//! The audio front end through the real binary: FFmpeg decode + resample, log-mel and MFCC
//! stored one object per clip, per-clip reuse, and agreement with librosa end to end.

use std::path::Path;

use crate::common::*;
use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use serde_json::Value;

const FRONT: &str = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  audio: {kind: audio, inputs: [ingest], params: {sample_rate: 16000, min_seconds: 0.5}}
  logmel: {kind: logmel, inputs: [audio], params: {n_mels: 40}}
  mfcc: {kind: mfcc, inputs: [audio], params: {n_mfcc: 13, n_mels: 40}}
";

fn i64_at(t: &arrow::record_batch::RecordBatch, c: &str) -> i64 {
    typed::<Int64Array>(t, c).value(0)
}

fn values(t: &arrow::record_batch::RecordBatch, c: &str) -> Vec<f32> {
    let l = t
        .column_by_name(c)
        .unwrap()
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap()
        .value(0);
    l.as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
        .to_vec()
}

#[test]
fn per_clip_objects_reuse_and_gc() {
    let p = Project::with_pipeline(6, FRONT);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    for s in ["audio", "logmel", "mfcc"] {
        assert_eq!(stage_done(&events, s)["computed"], 6, "{s}");
    }
    // Each stage's table is an index; every clip's rows are an object of their own.
    let idx = p.table("audio");
    let objects = strs(&idx, "object");
    assert_eq!(objects.len(), 6);
    let first = p.object(objects[0].as_deref().unwrap());
    assert_eq!(strs(&first, "clip_id")[0], strs(&idx, "clip_id")[0]);
    let wave = values(&first, "samples");
    assert_eq!(i64_at(&first, "sample_rate"), 16000);
    let lm = p.object(strs(&p.table("logmel"), "object")[0].as_deref().unwrap());
    let frames = i64_at(&lm, "frames") as usize;
    assert_eq!(frames, 1 + wave.len() / 160, "centred frames every 10 ms");
    assert_eq!(i64_at(&lm, "dim"), 40);
    assert_eq!(values(&lm, "values").len(), frames * 40);
    let mf = p.object(strs(&p.table("mfcc"), "object")[0].as_deref().unwrap());
    assert_eq!(i64_at(&mf, "dim"), 13);

    // One clip changes: one item recomputes in each per-clip stage.
    p.change_clip("video_0000/0002.mp4", 777);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0);
    for s in ["audio", "logmel", "mfcc"] {
        let d = stage_done(&events, s);
        assert_eq!(
            (d["computed"].as_u64(), d["reused"].as_u64()),
            (Some(1), Some(5)),
            "{s}"
        );
    }

    // gc keeps every object a fresh stage's items live in; nothing reruns afterwards.
    let gc = p.run(&["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let (code, events, summary) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(summary["ran"], Value::Array(vec![]), "{summary}");
    assert!(p.run(&["verify"]).status.success());
    // A deleted item object is noticed by verify; after --fix only that item is computed.
    let victim = strs(&p.table("logmel"), "object")[3].clone().unwrap();
    std::fs::remove_file(
        p.root()
            .join("cache/objects")
            .join(&victim[..2])
            .join(format!("{victim}.parquet")),
    )
    .unwrap();
    let v = p.run(&["verify"]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert!(p.run(&["verify", "--fix"]).status.success());
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let d = stage_done(&events, "logmel");
    assert_eq!(
        (d["computed"].as_u64(), d["reused"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(stage_done(&events, "mfcc")["outcome"], "cached");
}

/// A real speech WAV through ingest (CSV layout) -> audio -> logmel, against the values
/// librosa 0.11 computed for the same file (tests/data/librosa_reference.json).
#[test]
fn logmel_through_the_pipeline_matches_librosa() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {layout: csv, root: data/clips.csv}}
  audio: {kind: audio, inputs: [ingest], params: {sample_rate: 16000}}
  logmel: {kind: logmel, inputs: [audio], params: {n_fft: 400, hop_length: 160, n_mels: 64, fmax: 8000.0}}
";
    let p = Project::with_pipeline(1, yaml);
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    std::fs::copy(data.join("speech16k.wav"), p.root().join("data/speech.wav")).unwrap();
    std::fs::write(
        p.root().join("data/clips.csv"),
        "path,text,label,split\nspeech.wav,happy voices rise,0.8,train\n",
    )
    .unwrap();
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let lm = p.object(strs(&p.table("logmel"), "object")[0].as_deref().unwrap());
    let got = values(&lm, "values");
    let refs: Value =
        serde_json::from_slice(&std::fs::read(data.join("librosa_reference.json")).unwrap())
            .unwrap();
    let case = refs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "logmel_16k_constant")
        .unwrap();
    assert_eq!(i64_at(&lm, "frames"), case["frames"].as_i64().unwrap());
    let mut worst = 0.0f64;
    for (row, want) in case["rows"].as_object().unwrap() {
        let i: usize = row.parse().unwrap();
        for (j, w) in want.as_array().unwrap().iter().enumerate() {
            let w = w.as_f64().unwrap();
            let err = (got[i * 64 + j] as f64 - w).abs() / w.abs().max(1.0);
            worst = worst.max(err);
        }
    }
    assert!(worst < 1e-3, "worst relative error {worst}");
}

#[test]
fn segment_and_pad_cut_the_log_mel_sequence() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  audio: {kind: audio, inputs: [ingest]}
  logmel: {kind: logmel, inputs: [audio], params: {n_mels: 64}}
  patches: {kind: segment, inputs: [logmel], params: {frames: 96}}
  padded: {kind: pad, inputs: [logmel], params: {steps: 500, method: zero}}
  resampled: {kind: pad, inputs: [logmel], params: {steps: 32, method: resample}}
";
    let p = Project::with_pipeline(2, yaml);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let objects = |s: &str| strs(&p.table(s), "object");
    for k in 0..2 {
        let lm = p.object(objects("logmel")[k].as_deref().unwrap());
        let (n, full) = (i64_at(&lm, "frames") as usize, values(&lm, "values"));
        let seg = p.object(objects("patches")[k].as_deref().unwrap());
        assert_eq!(
            seg.num_rows(),
            n / 96,
            "non-overlapping 960 ms patches, partial one dropped"
        );
        let last = seg.num_rows() - 1;
        let patch = seg
            .column_by_name("values")
            .unwrap()
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap()
            .value(last);
        let patch = patch.as_any().downcast_ref::<Float32Array>().unwrap();
        assert_eq!(
            patch.values()[..],
            full[96 * 64 * last..96 * 64 * (last + 1)]
        );

        let pad = p.object(objects("padded")[k].as_deref().unwrap());
        let pv = values(&pad, "values");
        assert_eq!(i64_at(&pad, "length") as usize, n);
        assert_eq!(pv.len(), 500 * 64);
        assert_eq!(pv[..n * 64], full[..]);
        assert!(pv[n * 64..].iter().all(|v| *v == 0.0));

        let rs = p.object(objects("resampled")[k].as_deref().unwrap());
        let rv = values(&rs, "values");
        assert_eq!(rv.len(), 32 * 64);
        for j in 0..32 {
            let r = ((j as f64 + 0.5) * n as f64 / 32.0) as usize;
            assert_eq!(rv[j * 64..(j + 1) * 64], full[r * 64..(r + 1) * 64]);
        }
    }
}

/// `pipeline export` read back the way a notebook reads it: pandas for Parquet and CSV, numpy
/// for the arrays, each clip's frames where the index says.
#[test]
fn exports_load_in_pandas_and_numpy() {
    let p = Project::with_pipeline(4, FRONT);
    assert_eq!(p.run_json(&[]).0, 0);
    let out = p.root().join("out");
    for f in ["parquet", "csv", "npy"] {
        let o = p.run(&[
            "export",
            "logmel",
            "--format",
            f,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // --path: the index, then each clip's object.
    let paths = String::from_utf8(p.run(&["show", "logmel", "--path"]).stdout).unwrap();
    assert_eq!(paths.lines().count(), 1 + 4, "{paths}");
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-read/bin/python");
    let script = r#"
import sys, numpy as np, pandas as pd
d = sys.argv[1]
t = pd.read_parquet(f"{d}/logmel.parquet")
c = pd.read_csv(f"{d}/logmel.csv")
x = np.load(f"{d}/logmel.npy"); n = np.load(f"{d}/logmel.lengths.npy")
i = pd.read_csv(f"{d}/logmel.index.csv")
assert list(t.clip_id) == list(c.clip_id) == list(i.clip_id), (t.clip_id, c.clip_id, i.clip_id)
assert x.dtype == np.float32 and x.shape == (4, int(t.frames.max()), 40), x.shape
assert list(n) == list(t.frames), (n, t.frames)
for k in range(4):
    want = np.asarray(t["values"][k], dtype=np.float32).reshape(int(t.frames[k]), 40)
    assert np.array_equal(x[k, : n[k]], want), k
    assert not x[k, n[k]:].any()
print("ok", x.shape)
"#;
    let o = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&out)
        .output()
        .expect("the .venv-read Python that `make setup` makes");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A stage that is not features has no arrays to give.
    let o = p.run(&[
        "export",
        "ingest",
        "--format",
        "npy",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("npy needs a feature stage"));
}

/// `export --format mmsa`: MMSA's own `MMDataset` (its data_loader.py, loaded on its own)
/// reads the pickle, every split, with the shapes, ids and labels of the stages it came from.
#[test]
fn an_mmsa_feature_pickle_loads_in_mmsas_own_data_loader() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  labels: {kind: labels, inputs: [ingest], params: {scale: sims, source: iua}}
  split: {kind: split, inputs: [ingest], params: {method: ratio, ratios: [0.6, 0.2, 0.2], seed: 1}}
  audio: {kind: audio, inputs: [ingest], params: {sample_rate: 16000}}
  logmel: {kind: logmel, inputs: [audio], params: {n_mels: 40}}
  mfcc: {kind: mfcc, inputs: [audio], params: {n_mfcc: 13}}
  decode: {kind: decode, inputs: [ingest], params: {frames: 3}}
  pixels: {kind: pixels, inputs: [decode], params: {image_size: [8, 8], channels: gray, mean: [0.5], std: [0.5]}}
";
    let p = Project::with_pipeline(10, yaml);
    assert_eq!(p.run_json(&[]).0, 0);
    let out = p.root().join("out");
    let o = p.run(&[
        "export",
        "--format",
        "mmsa",
        "--text",
        "mfcc",
        "--audio",
        "logmel",
        "--vision",
        "pixels",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // What the pickle should hold, from the stages themselves.
    let split = p.table("split");
    let labels = p.table("labels");
    let (sid, sname) = (strs(&split, "clip_id"), strs(&split, "split"));
    let (lid, ltarget, ly) = (
        strs(&labels, "clip_id"),
        strs(&labels, "target"),
        f64s(&labels, "y"),
    );
    let mut want = String::new();
    for part in ["train", "valid", "test"] {
        let ids: Vec<String> = (0..sid.len())
            .filter(|&r| sname[r].as_deref() == Some(part))
            .map(|r| sid[r].clone().unwrap())
            .collect();
        let ys: Vec<String> = ids
            .iter()
            .map(|c| {
                let r = (0..lid.len())
                    .find(|&r| lid[r].as_deref() == Some(c) && ltarget[r].as_deref() == Some("m"))
                    .unwrap();
                format!("{:.4}", ly[r].unwrap())
            })
            .collect();
        want.push_str(&format!("{part} {} {}\n", ids.join(","), ys.join(",")));
    }
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-torch/bin/python");
    let script = r#"
import importlib.util, os, sys, sysconfig
path = os.path.join(sysconfig.get_paths()["purelib"], "MMSA", "data_loader.py")
spec = importlib.util.spec_from_file_location("mmsa_data_loader", path)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
args = {"dataset_name": "sims", "custom_feature": sys.argv[1], "featurePath": "",
        "feature_T": "", "feature_A": "", "feature_V": "", "need_data_aligned": False,
        "feature_dims": [0, 0, 0]}
for part in ["train", "valid", "test"]:
    ds = m.MMDataset(args, mode=part)
    assert args["feature_dims"] == [13, 40, 64], args["feature_dims"]
    ids, ys = [], []
    for i in range(len(ds)):
        s = ds[i]
        assert s["text"].shape[1] == 13 and s["audio"].shape[1] == 40 and s["vision"].shape == (3, 64)
        assert 0 < s["audio_lengths"] <= s["audio"].shape[0]
        assert s["vision_lengths"] == 3
        assert set(s["labels"]) == {"M", "T", "A", "V"}
        ids.append(s["id"]); ys.append("%.4f" % float(s["labels"]["M"][0]))
    print(part, ",".join(ids), ",".join(ys))
"#;
    let o = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(out.join("features.pkl"))
        .output()
        .expect("the .venv-torch Python that `make setup` makes");
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{got}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(got, want);
}

/// Every artifact says of itself, in its Parquet metadata, which stage made it from what: the
/// stage's table (index) names its key, inputs' keys, params, external files and libraries;
/// a clip's object, shared by every stage run with the same stage id, only what that id fixes,
/// so that a rerun that reuses it leaves its bytes alone. The metadata travels with an export.
#[test]
fn artifacts_carry_their_provenance_and_reused_items_keep_their_bytes() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/embed");
    let yaml = format!(
        "{FRONT}  text: {{kind: embed, inputs: [ingest], params: {{modality: text, model: \"{m}/text-minilm.pt\", tokenizer: \"{m}/text-minilm.tokenizer.json\", max_length: 36, pool: mean}}}}\n",
        m = m.display()
    );
    let p = Project::with_pipeline(4, &yaml);
    assert_eq!(p.run_json(&["all"]).0, 0);
    let show = |s: &str| -> Value {
        let o = p.run(&["show", s, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (ingest, audio, text) = (show("ingest"), show("audio"), show("text"));
    let meta = &audio["metadata"];
    assert_eq!(meta["pipeline.key"], audio["key"], "{meta}");
    assert_eq!(meta["pipeline.stage"], "audio");
    assert_eq!(meta["pipeline.kind"], "audio");
    assert!(meta["pipeline.kind_version"]
        .as_str()
        .unwrap()
        .parse::<u32>()
        .is_ok());
    assert_eq!(meta["pipeline.params"]["sample_rate"], 16000);
    assert_eq!(
        meta["pipeline.inputs"],
        serde_json::json!([{"name": "ingest", "key": ingest["key"]}])
    );
    assert!(meta["pipeline.tool"]
        .as_str()
        .unwrap()
        .starts_with("pipeline "));
    let ffmpeg = meta["pipeline.libraries"]["ffmpeg"].as_str().unwrap();
    assert!(ffmpeg.contains("libavcodec"), "{ffmpeg}");
    // The embedding: libtorch's version, and the model keyed (and listed) by its content.
    let meta = &text["metadata"];
    let model = blake3::hash(&std::fs::read(m.join("text-minilm.pt")).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(
        meta["pipeline.params"]["model"],
        serde_json::json!({"content": model})
    );
    let files = meta["pipeline.files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["blake3"] == model.as_str()
            && f["path"].as_str().unwrap().ends_with("text-minilm.pt")),
        "{meta}"
    );
    assert!(meta["pipeline.libraries"]["libtorch"]
        .as_str()
        .unwrap()
        .starts_with("2."));
    assert!(meta["pipeline.libraries"].get("ffmpeg").is_none(), "{meta}");
    // `show` prints it.
    let text_show = String::from_utf8(p.run(&["show", "audio", "--rows", "0"]).stdout).unwrap();
    assert!(
        text_show.contains("metadata (Parquet key-value)"),
        "{text_show}"
    );
    assert!(text_show.contains("pipeline.libraries"), "{text_show}");

    // A clip's object: its id and what the stage id fixes; no stage name, key or inputs.
    let item_paths = |stage: &str| -> Vec<(String, String)> {
        let o = String::from_utf8(p.run(&["show", stage, "--path"]).stdout).unwrap();
        o.lines()
            .skip(1)
            .map(|l| {
                let (id, path) = l.split_once('\t').unwrap();
                (id.to_string(), path.to_string())
            })
            .collect()
    };
    let before = item_paths("audio");
    assert_eq!(before.len(), 4);
    let item_meta = |path: &str| -> Vec<(String, String)> {
        let bytes = std::fs::read(path).unwrap();
        pipeline::store::parquet_metadata(bytes.into()).unwrap()
    };
    let (id, path) = &before[0];
    let im: std::collections::BTreeMap<String, String> = item_meta(path).into_iter().collect();
    assert_eq!(im.get("pipeline.item"), Some(id), "{im:?}");
    assert_eq!(
        im.get("pipeline.stage_id").map(String::as_str),
        audio["metadata"]["pipeline.stage_id"].as_str()
    );
    for k in ["pipeline.key", "pipeline.stage", "pipeline.inputs"] {
        assert!(!im.contains_key(k), "{k} in a shared item: {im:?}");
    }

    // One clip changes: a new key for the stage, the other clips' objects untouched.
    p.change_clip("video_0000/0002.mp4", 777);
    assert_eq!(p.run_json(&["all"]).0, 0);
    let audio2 = show("audio");
    assert_ne!(audio2["key"], audio["key"]);
    assert_eq!(audio2["metadata"]["pipeline.key"], audio2["key"]);
    let after = item_paths("audio");
    let kept: Vec<_> = after.iter().filter(|a| before.contains(a)).collect();
    assert_eq!(kept.len(), 3, "{before:?}\n{after:?}");
    for (_, path) in kept {
        let now = item_meta(path);
        assert!(now.iter().all(|(k, _)| k != "pipeline.key"), "{now:?}");
    }

    // Out of the cache: the exported Parquet file keeps the stage's metadata, as pyarrow reads it.
    let out = p.root().join("out");
    let o = p.run(&[
        "export",
        "logmel",
        "--format",
        "parquet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-read/bin/python");
    let script = r#"
import json, sys, pyarrow.parquet as pq
md = pq.read_metadata(sys.argv[1]).metadata
print(json.dumps({k.decode(): v.decode() for k, v in md.items() if k.startswith(b"pipeline.")}))
"#;
    let o = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(out.join("logmel.parquet"))
        .output()
        .expect("the .venv-read Python that `make setup` makes");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(read["pipeline.key"], show("logmel")["key"], "{read}");
    assert_eq!(read["pipeline.kind"], "logmel");
}
