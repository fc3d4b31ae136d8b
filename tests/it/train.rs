//! Uni2Mul's two training stages through the real binary on demo clips with the bundled
//! pretrained encoders' features: determinism per seed, the long-format model table, metrics
//! that agree with the predictions, and what reruns after a fusion change.

use std::path::Path;

use crate::common::*;
use arrow::array::{BinaryArray, Int64Array};

fn yaml() -> String {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models");
    format!(
        "\
vars: {{m: \"{m}\"}}
stages:
  ingest: {{kind: ingest, params: {{root: data}}}}
  labels: {{kind: labels, inputs: [ingest], params: {{scale: sims, source: iua}}}}
  split: {{kind: split, inputs: [ingest], params: {{method: manifest}}}}
  audio: {{kind: audio, inputs: [ingest]}}
  decode: {{kind: decode, inputs: [ingest], params: {{sampling: uniform, frames: 4}}}}
  face: {{kind: face, inputs: [decode], params: {{models: \"${{m}}/mtcnn\", crop_size: 64}}}}
  ev: {{kind: embed, inputs: [face], params: {{modality: vision, model: \"${{m}}/embed/vision-face-emotion.pt\", image_size: [48, 48], channels: gray, mean: [0.5], std: [0.5], pool: none}}}}
  ea: {{kind: embed, inputs: [audio], params: {{modality: audio, model: \"${{m}}/embed/audio-resemblyzer.pt\", frontend: mel, window: 160, hop: 40, pool: none}}}}
  et: {{kind: embed, inputs: [ingest], params: {{modality: text, model: \"${{m}}/embed/text-minilm.pt\", tokenizer: \"${{m}}/embed/text-minilm.tokenizer.json\", max_length: 36, pool: none}}}}
  sv: {{kind: pad, inputs: [ev], params: {{steps: 10, method: resample}}}}
  sa: {{kind: pad, inputs: [ea], params: {{steps: 16, method: resample}}}}
  st: {{kind: pad, inputs: [et], params: {{steps: 36}}}}
  uni_v: {{kind: train_unimodal, inputs: [sv, labels, split], params: {{modality: v, model: cnn_lstm, epochs: 4}}}}
  uni_a: {{kind: train_unimodal, inputs: [sa, labels, split], params: {{modality: a, model: cnn_attn_bilstm, epochs: 4}}}}
  uni_t: {{kind: train_unimodal, inputs: [st, labels, split], params: {{modality: t, model: cnn_attn, epochs: 4}}}}
  hidden_t: {{kind: export_hidden, inputs: [uni_t]}}
  fusion:
    kind: train_fusion
    inputs: [uni_v, uni_a, uni_t, sv, sa, st, labels, split]
    params: {{fusion: conformer, epochs: 3}}
  evaluate: {{kind: evaluate, inputs: [fusion]}}
  fusion_s:
    kind: train_fusion
    inputs: [uni_v, uni_a, uni_t, sv, sa, st, labels, split]
    params: {{fusion: concat, epochs: 2, pretrained: false}}
    matrix: {{seed: [1, 2], multitask: [false, true]}}
  eval_s: {{kind: evaluate, inputs: [fusion_s], matrix: {{seed: [1, 2], multitask: [false, true]}}}}
  agg: {{kind: aggregate, inputs: [eval_s], params: {{split: valid, columns: multitask}}}}
  fusion_r:
    kind: train_fusion
    inputs: [uni_v, uni_a, uni_t, sv, sa, st, labels, split]
    params: {{fusion: concat, epochs: 3, label: y}}
  eval_r: {{kind: evaluate, inputs: [fusion_r]}}
  probe_t: {{kind: linear_probe, inputs: [st, labels, split], params: {{target: t}}}}
  dir_mt: {{kind: compare, inputs: [eval_s], params: {{axis: multitask, better: \"true\", split: valid}}}}
  dir_st: {{kind: compare, inputs: [evaluate, eval_r], params: {{axis: stage, better: evaluate, split: valid}}}}
",
        m = m.display()
    )
}

/// The verdict of an interval of differences in the paper's direction.
fn verdict(lo: f64, hi: f64) -> &'static str {
    if lo > 0.0 {
        "holds"
    } else if hi < 0.0 {
        "fails"
    } else {
        "inconclusive"
    }
}

fn rows_of(t: &arrow::record_batch::RecordBatch, part: &str) -> Vec<usize> {
    let p = strs(t, "part");
    (0..t.num_rows())
        .filter(|&r| p[r].as_deref() == Some(part))
        .collect()
}

/// The valid-split accuracy of `eval_s` at seeds 1 and 2 for one multi-task setting.
fn valid_accs(p: &Project, multitask: &str) -> Vec<f64> {
    (1..=2)
        .map(|seed| {
            let t = p.table(&format!("eval_s[seed={seed},multitask={multitask}]"));
            let k = strs(&t, "split")
                .iter()
                .position(|x| x.as_deref() == Some("valid"))
                .unwrap();
            f64s(&t, "acc")[k].unwrap()
        })
        .collect()
}

#[test]
fn two_stage_training_is_deterministic_and_reruns_only_what_changed() {
    let p = Project::with_demo(&yaml(), 20, 1, &[]);
    let (code, events, _) = p.run_json(&["all"]);
    assert_eq!(code, 0, "{events:?}");

    // The long-format model table: a curve row per epoch, one checkpoint, a prediction per clip.
    let fusion = p.table("fusion");
    assert_eq!(rows_of(&fusion, "curve").len(), 3);
    let ck = rows_of(&fusion, "checkpoint");
    assert_eq!(ck.len(), 1);
    let bytes = typed::<BinaryArray>(&fusion, "checkpoint")
        .value(ck[0])
        .to_vec();
    // safetensors: an 8-byte little-endian header length, then a JSON header.
    let hl = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hl]).unwrap();
    assert!(header.get("fusion.head.weight").is_some(), "{header}");
    let preds = rows_of(&fusion, "prediction");
    let ids = strs(&p.table("ingest"), "clip_id");
    assert_eq!(
        preds.len(),
        ids.len(),
        "every clip with all three modalities is predicted"
    );

    // Evaluate agrees with the predictions it read.
    let ev = p.table("evaluate");
    let splits = strs(&ev, "split");
    let acc = f64s(&ev, "acc");
    let y = typed::<Int64Array>(&fusion, "y");
    let pred = typed::<Int64Array>(&fusion, "pred");
    let split = strs(&fusion, "split");
    for (k, s) in splits.iter().enumerate() {
        let rows: Vec<usize> = preds.iter().copied().filter(|&r| split[r] == *s).collect();
        let right = rows
            .iter()
            .filter(|&&r| y.value(r) == pred.value(r))
            .count();
        assert!(
            (acc[k].unwrap() - right as f64 / rows.len() as f64).abs() < 1e-12,
            "{s:?}"
        );
    }
    // The majority-class baseline: the training clips' most frequent class on every split.
    let train: Vec<usize> = preds
        .iter()
        .copied()
        .filter(|&r| split[r].as_deref() == Some("train"))
        .collect();
    let mut counts = [0usize; 3];
    train.iter().for_each(|&r| counts[y.value(r) as usize] += 1);
    let major = (0..3).rev().max_by_key(|&c| counts[c]).unwrap() as i64;
    let base = f64s(&ev, "base_acc");
    for (k, s) in splits.iter().enumerate() {
        let rows: Vec<usize> = preds.iter().copied().filter(|&r| split[r] == *s).collect();
        let hit = rows.iter().filter(|&&r| y.value(r) == major).count();
        assert!((base[k].unwrap() - hit as f64 / rows.len() as f64).abs() < 1e-12);
    }
    // The probe's table: one row per split, probe and baseline side by side.
    let probe = p.table("probe_t");
    assert_eq!(
        strs(&probe, "split"),
        [Some("train"), Some("valid"), Some("test")].map(|s| s.map(String::from))
    );
    for c in ["acc", "ua", "base_acc", "base_ua"] {
        assert!(f64s(&probe, c)
            .iter()
            .all(|v| v.is_some_and(|v| (0.0..=1.0).contains(&v))));
    }
    // Mean and sample sd over the two seeds' valid accuracy, one row per multi-task setting.
    let accs = valid_accs(&p, "true");
    let agg = p.table("agg");
    assert_eq!(agg.num_rows(), 2);
    assert_eq!(strs(&agg, "multitask")[1].as_deref(), Some("true"));
    assert_eq!(typed::<Int64Array>(&agg, "n").value(1), 2);
    let m = (accs[0] + accs[1]) / 2.0;
    assert!((f64s(&agg, "acc_mean")[1].unwrap() - m).abs() < 1e-12);
    let sd = ((accs[0] - m).powi(2) + (accs[1] - m).powi(2)).sqrt();
    assert!((f64s(&agg, "acc_sd")[1].unwrap() - sd).abs() < 1e-12);
    assert!(
        agg.column_by_name("mae_mean").is_none(),
        "classification has no MMSA regression metrics"
    );
    // The paired difference over the two seeds, multi-task minus single-task.
    let single = valid_accs(&p, "false");
    let dir = p.table("dir_mt");
    assert_eq!(typed::<Int64Array>(&dir, "n").value(0), 2);
    let diff = (accs[0] - single[0] + accs[1] - single[1]) / 2.0;
    assert!((f64s(&dir, "diff")[0].unwrap() - diff).abs() < 1e-12);
    let (lo, hi) = (
        f64s(&dir, "ci_low")[0].unwrap(),
        f64s(&dir, "ci_high")[0].unwrap(),
    );
    assert!(lo <= diff && diff <= hi);
    assert_eq!(strs(&dir, "verdict")[0].as_deref(), Some(verdict(lo, hi)));
    // The paired bootstrap over the clips and the two seeds: an interval and its own verdict.
    let (blo, bhi) = (
        f64s(&dir, "boot_low")[0].unwrap(),
        f64s(&dir, "boot_high")[0].unwrap(),
    );
    assert!(blo <= bhi && blo >= -1.0 && bhi <= 1.0, "{blo} {bhi}");
    assert_eq!(
        strs(&dir, "boot_verdict")[0].as_deref(),
        Some(verdict(blo, bhi))
    );
    // The per-clip outcomes it drew from: the evaluated clips of each split, in the model's
    // predictions.
    let ev_clips = typed::<Int64Array>(&ev, "clips");
    let ids_col = typed::<arrow::array::ListArray>(&ev, "clip_ids");
    for k in 0..ev.num_rows() {
        assert_eq!(ids_col.value(k).len() as i64, ev_clips.value(k));
    }
    // `axis: stage` pairs two whole stages: the classifier against the regression model.
    let st = p.table("dir_st");
    assert_eq!(strs(&st, "other")[0].as_deref(), Some("eval_r"));
    let valid = |t: &arrow::record_batch::RecordBatch| {
        let k = strs(t, "split")
            .iter()
            .position(|x| x.as_deref() == Some("valid"))
            .unwrap();
        f64s(t, "acc")[k].unwrap()
    };
    let d = valid(&ev) - valid(&p.table("eval_r"));
    assert!((f64s(&st, "diff")[0].unwrap() - d).abs() < 1e-12);
    // `pipeline metrics`: an aggregate lists the models it gathers, one line per split.
    let out = p.run(&["metrics", "agg", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 4 * 3, "{lines:?}");
    let one = lines
        .iter()
        .find(|l| {
            l["variant"] == serde_json::json!({"seed": 2, "multitask": true})
                && l["split"] == "valid"
        })
        .unwrap();
    assert_eq!(one["stage"], "eval_s");
    assert!((one["metrics"]["acc"].as_f64().unwrap() - accs[1]).abs() < 1e-12);
    assert!(one["baseline"]["acc"].as_f64().is_some());
    let out = p.run(&["metrics", "probe_t"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probe_t") && text.contains("UA"), "{text}");
    let out = p.run(&["metrics", "fusion"]);
    assert!(
        !out.status.success(),
        "a training stage is not an evaluated model"
    );

    // Regression on the continuous label: scores in the table, MMSA's metrics from them.
    let fr = p.table("fusion_r");
    let (score, pred_score) = (f64s(&fr, "score"), f64s(&fr, "pred_score"));
    let fsplit = strs(&fr, "split");
    let test: Vec<usize> = rows_of(&fr, "prediction")
        .into_iter()
        .filter(|&r| fsplit[r].as_deref() == Some("test"))
        .collect();
    assert!(!test.is_empty());
    let mae = test
        .iter()
        .map(|&r| {
            (score[r].unwrap().clamp(-1.0, 1.0) - pred_score[r].unwrap().clamp(-1.0, 1.0)).abs()
        })
        .sum::<f64>()
        / test.len() as f64;
    let er = p.table("eval_r");
    let k = strs(&er, "split")
        .iter()
        .position(|s| s.as_deref() == Some("test"))
        .unwrap();
    assert!((f64s(&er, "mae")[k].unwrap() - mae).abs() < 1e-9);
    for c in ["acc2", "acc3", "acc5", "f1_acc2"] {
        let v = f64s(&er, c)[k].unwrap();
        assert!((0.0..=1.0).contains(&v), "{c} {v}");
    }
    assert!(f64s(&er, "acc7")[k].is_none(), "CH-SIMS has no Acc-7");
    // The report: Markdown and HTML tables, PNG figures (confusion matrix, PCA of H_T).
    let out = p.run(&["report", "-o", "rep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(p.root().join("rep/report.md")).unwrap();
    assert!(md.contains("## agg (aggregate)"), "{md}");
    // Where it came from: date, version, the project's revision, each table's key.
    // The temp project may sit inside another repository (CI's TMPDIR): either is right.
    assert!(
        md.contains(" UTC by pipeline ")
            && (md.contains("project: git ") || md.contains("project: not in a git repository")),
        "{md}"
    );
    let agg_key = p.run(&["show", "agg", "--json"]);
    let agg_key: serde_json::Value = serde_json::from_slice(&agg_key.stdout).unwrap();
    let short = &agg_key["key"].as_str().unwrap()[..12];
    assert!(md.contains(&format!("Key `{short}`, computed ")), "{md}");
    assert!(
        md.contains("| multitask | n | Acc (%) | F1 (macro) (%) | F1 (weighted) (%) |"),
        "{md}"
    );
    assert!(
        md.contains("| multitask=false | multitask=true |"),
        "pivoted table: {md}"
    );
    assert!(
        md.contains("| Acc-2 (%) |") && md.contains("| MAE | Corr |"),
        "units on the columns they apply to: {md}"
    );
    assert!(!md.contains("seed` (%)"), "no unit on the caption: {md}");
    assert!(md.contains("## evaluate (evaluate)"), "{md}");
    assert!(
        !md.contains("## eval_s[seed=1,multitask=false]"),
        "matrix variants only with --variants"
    );
    // ...but the runs of one model (its seeds) are drawn together: curves overlaid, confusion
    // matrices summed.
    for section in [
        "## fusion_s[multitask=false] (train_fusion), 2 runs",
        "## eval_s[multitask=true] (evaluate), 2 runs",
    ] {
        assert!(md.contains(section), "{md}");
    }
    assert!(md.contains("`eval_s[seed=1,multitask=true]` key `"), "{md}");
    for fig in [
        "evaluate-confusion-test.png",
        "hidden_t-hidden-pca.png",
        "fusion-curve.png",
        "uni_t-curve.png",
        "fusion_s_multitask_false_-curves.png",
        "eval_s_multitask_true_-confusion-test.png",
    ] {
        assert!(md.contains(&format!("figures/{fig}")), "{md}");
        let png = std::fs::read(p.root().join("rep/figures").join(fig)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{fig} is a PNG");
    }
    let html = std::fs::read_to_string(p.root().join("rep/report.html")).unwrap();
    assert!(
        html.contains("<th>Acc (%)</th>") && html.contains("<img"),
        "{html}"
    );
    // Inline code is set as code, and the page's title is the report's, without backticks.
    assert!(html.contains("<title>Results of "), "{html}");
    assert!(!html.contains('`'), "{html}");

    let hidden = p.table("hidden_t");
    assert!(
        typed::<Int64Array>(&hidden, "dim")
            .iter()
            .all(|d| d == Some(128)),
        "H_T is 128-d"
    );

    // Same seed, same bytes: the whole pipeline again in a second, empty cache.
    let again = p.run(&["--cache", "cache2", "run", "all"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let out = p.run(&["--cache", "cache2", "show", "fusion", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fusion2 = read_parquet(Path::new(v["artifact"].as_str().unwrap()));
    let bytes2 = typed::<BinaryArray>(&fusion2, "checkpoint")
        .value(rows_of(&fusion2, "checkpoint")[0])
        .to_vec();
    assert!(bytes == bytes2, "training is deterministic for a seed");

    // A fusion change reruns the fusion, its evaluation and the comparison that reads it, only.
    let (code, events, _) = p.run_json(&["all", "--set", "fusion.fusion=transformer"]);
    assert_eq!(code, 0, "{events:?}");
    let mut ran: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "stage_done" && e["outcome"] == "ran")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    ran.sort();
    assert_eq!(ran, ["dir_st", "evaluate", "fusion"]);
    // The two runs side by side: the param that differs, and each metric with its change.
    let out = p.run(&["metrics", "diff", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let params = d["params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{d}");
    assert_eq!(params[0]["param"], "fusion.fusion");
    assert_eq!(params[0]["b"], "transformer");
    let after = p.table("evaluate"); // with the last run's overrides
    let before = p.table_with("evaluate", &["--no-last-sets"]);
    let k = strs(&after, "split")
        .iter()
        .position(|x| x.as_deref() == Some("test"))
        .unwrap();
    let m = d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "evaluate/test/acc")
        .unwrap_or_else(|| panic!("{d}"));
    let (a, b) = (
        f64s(&before, "acc")[k].unwrap(),
        f64s(&after, "acc")[k].unwrap(),
    );
    assert_eq!(
        (m["a"].as_f64(), m["b"].as_f64()),
        (Some(a), Some(b)),
        "{m}"
    );
    assert!((m["delta"].as_f64().unwrap() - (b - a)).abs() < 1e-12);
    let runs = String::from_utf8(p.run(&["runs"]).stdout).unwrap();
    assert!(runs.contains("--set fusion.fusion=transformer"), "{runs}");
    // Another seed: other weights.
    let (code, _, _) = p.run_json(&["fusion", "--set", "fusion.seed=2"]);
    assert_eq!(code, 0);
    let out = p.run(&["show", "fusion", "--json", "--set", "fusion.seed=2"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f3 = read_parquet(Path::new(v["artifact"].as_str().unwrap()));
    let bytes3 = typed::<BinaryArray>(&f3, "checkpoint")
        .value(rows_of(&f3, "checkpoint")[0])
        .to_vec();
    assert!(bytes != bytes3, "another seed trains other weights");
}
