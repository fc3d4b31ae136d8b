//! Frames and faces through the real binary on demo clips: FFmpeg decode with each sampling
//! mode, MTCNN on every kept frame, and per-clip errors for the bad inputs.

use crate::common::*;
use arrow::array::{BinaryArray, Float64Array, Int64Array};
use arrow::record_batch::RecordBatch;

/// Every item of a sharded stage, by clip id.
fn items(p: &Project, stage: &str) -> Vec<(String, RecordBatch)> {
    let idx = p.table(stage);
    let ids = strs(&idx, "clip_id");
    let objs = strs(&idx, "object");
    ids.into_iter()
        .zip(objs)
        .map(|(i, o)| (i.unwrap(), p.object(o.as_deref().unwrap())))
        .collect()
}

#[test]
fn frames_and_faces_on_demo_clips_with_bad_inputs() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/mtcnn");
    let yaml = format!(
        "\
stages:
  ingest: {{kind: ingest, params: {{root: data}}}}
  decode: {{kind: decode, inputs: [ingest], params: {{sampling: uniform, frames: 6, max_side: 320}}}}
  face: {{kind: face, inputs: [decode], params: {{models: \"{}\", crop_size: 112}}}}
  every: {{kind: decode, inputs: [ingest], params: {{sampling: fps, fps: 4.0}}}}
  windows: {{kind: decode, inputs: [ingest], params: {{sampling: window, window_ms: 960, seed: 7}}}}
",
        models.display()
    );
    let p = Project::with_demo(&yaml, 4, 1, &["--bad"]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 3, "bad inputs make the run partial: {events:?}");

    let failed = |stage: &str| -> Vec<(String, String)> {
        p.failed_items(stage)
            .into_iter()
            .map(|(i, _, r)| (i, r))
            .collect()
    };
    let dec = failed("decode");
    let names: Vec<&str> = dec.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["bad_inputs/truncated", "bad_inputs/zero_bytes"],
        "{dec:?}"
    );
    let face = failed("face");
    assert_eq!(face.len(), 1, "{face:?}");
    assert_eq!(face[0].0, "bad_inputs/no_face");
    assert!(
        face[0].1.contains("no face in any of the 6 frames"),
        "{face:?}"
    );

    // Uniform sampling: 6 frames at the centres of 6 equal slices, scaled to 320 wide.
    for (id, t) in items(&p, "decode") {
        assert_eq!(t.num_rows(), 6, "{id}");
        let target = typed::<Float64Array>(&t, "target_s");
        let pts = typed::<Float64Array>(&t, "pts_s");
        for i in 0..6 {
            assert!(
                pts.value(i) <= target.value(i) + 1e-9,
                "{id}: frame shown at its time"
            );
            assert!(target.value(i) - pts.value(i) < 0.04 + 1e-9, "{id}: 25 fps");
        }
        assert_eq!(typed::<Int64Array>(&t, "width").value(0), 320);
        let rgb = typed::<BinaryArray>(&t, "rgb");
        assert_eq!(rgb.value(0).len(), 320 * 240 * 3);
    }

    // Faces: every frame of every clip with a face has one, with a sane box and 112x112 crop.
    let mut frames_with_face = 0;
    let mut frames = 0;
    for (id, t) in items(&p, "face") {
        assert!(!id.ends_with("no_face"));
        frames += 6;
        frames_with_face += t.num_rows();
        let prob = typed::<Float64Array>(&t, "prob");
        let crop = typed::<BinaryArray>(&t, "crop");
        for i in 0..t.num_rows() {
            assert!(prob.value(i) > 0.9, "{id}");
            let (x1, y1, x2, y2) = (
                typed::<Float64Array>(&t, "x1").value(i),
                typed::<Float64Array>(&t, "y1").value(i),
                typed::<Float64Array>(&t, "x2").value(i),
                typed::<Float64Array>(&t, "y2").value(i),
            );
            assert!(
                x1 < x2 && y1 < y2 && x2 - x1 > 40.0,
                "{id}: {x1} {y1} {x2} {y2}"
            );
            assert!(x1 > -10.0 && y1 > -10.0 && x2 < 330.0 && y2 < 250.0, "{id}");
            assert_eq!(crop.value(i).len(), 112 * 112 * 3);
        }
    }
    assert!(
        frames_with_face * 10 >= frames * 9,
        "faces in {frames_with_face} of {frames} frames"
    );

    // fps: one frame every 0.25 s; window: one random frame inside each full 960 ms window.
    for (id, t) in items(&p, "every") {
        let target = typed::<Float64Array>(&t, "target_s");
        for i in 0..t.num_rows() {
            assert!((target.value(i) - i as f64 * 0.25).abs() < 1e-9, "{id}");
        }
    }
    for (id, t) in items(&p, "windows") {
        let target = typed::<Float64Array>(&t, "target_s");
        assert!(t.num_rows() >= 1, "{id}");
        for i in 0..t.num_rows() {
            let x = target.value(i);
            assert!(
                x >= i as f64 * 0.96 && x <= (i + 1) as f64 * 0.96,
                "{id}: {x}"
            );
        }
    }
}

#[test]
fn missing_face_weights_fail_the_stage_once_with_the_fix() {
    let yaml = "\
stages:
  ingest: {kind: ingest, params: {root: data}}
  decode: {kind: decode, inputs: [ingest], params: {frames: 2}}
  face: {kind: face, inputs: [decode], params: {models: nowhere}}
";
    let p = Project::new(2);
    std::fs::write(p.root().join("pipeline/default.yaml"), yaml).unwrap();
    let (code, events, summary) = p.run_json(&["all", "--keep-going"]);
    assert_eq!(code, 1, "{summary}");
    let done = stage_done(&events, "face");
    assert_eq!(done["outcome"], "failed");
    let msg = done["error"].as_str().unwrap();
    assert!(
        msg.contains("MTCNN weights") && msg.contains("make setup"),
        "{msg}"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "item_error"),
        "not one error per clip"
    );
    assert_eq!(stage_done(&events, "decode")["outcome"], "ran");
}
