//! The SMP (paper 001) and CM-MSF (paper 003) pipelines as shipped in pipeline/, end to end
//! through the real binary on demo clips (CH-SIMS layout, and the MOSI layout with [-3, 3]
//! labels), shrunk through their vars: fewer frames, steps, epochs and layers.

mod common;

use std::path::Path;

use arrow::array::Int64Array;
use common::*;

/// The repository's pipeline file with its model paths made absolute and some vars replaced.
fn study(file: &str, vars: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("pipeline").join(file))
        .unwrap()
        .replace(
            ": data/models",
            &format!(": {}/data/models", root.display()),
        );
    for (k, v) in vars {
        let head = format!("\n  {k}: ");
        let at = text
            .find(&head)
            .unwrap_or_else(|| panic!("{file} has no var `{k}`"));
        let end = at + 1 + text[at + 1..].find('\n').unwrap();
        text.replace_range(at..end, &format!("{head}{v}"));
    }
    text
}

fn test_row(t: &arrow::record_batch::RecordBatch) -> usize {
    strs(t, "split")
        .iter()
        .position(|s| s.as_deref() == Some("test"))
        .expect("a test split")
}

#[test]
fn smp_runs_end_to_end_and_a_fusion_change_reruns_only_training() {
    let yaml = study(
        "smp.yaml",
        &[
            ("data", "data"),
            ("frames", "6"),
            ("steps", "8"),
            ("epochs", "3"),
            ("seeds", "[1]"),
            ("vision_channels", "[face+au, au]"),
        ],
    );
    let p = Project::with_demo(&yaml, 20, 3, &[]);
    let (code, events, _) = p.run_json(&["table_main", "table_fig6", "table_bimodal"]);
    assert_eq!(code, 0, "{events:?}");

    // Two visual channels side by side: 256 CNN values + 20 geometry values per face.
    let v = p.table("vision_seq[vch=face+au]");
    let item = p.object(strs(&v, "object")[0].as_deref().unwrap());
    assert_eq!(typed::<Int64Array>(&item, "dim").value(0), 276);
    assert_eq!(typed::<Int64Array>(&item, "frames").value(0), 8);
    let au = p.object(
        strs(&p.table("vision_seq[vch=au]"), "object")[0]
            .as_deref()
            .unwrap(),
    );
    assert_eq!(typed::<Int64Array>(&au, "dim").value(0), 20);

    // The model and MMSA's CH-SIMS metrics of its regression output.
    let ck = p.table("smp[seed=1]");
    let cfg = strs(&ck, "config")
        .into_iter()
        .flatten()
        .next()
        .expect("a checkpoint row");
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["model"], "smp");
    assert_eq!(cfg["dims"], serde_json::json!([276, 276, 384]));
    let ev = p.table("eval_smp[seed=1]");
    let k = test_row(&ev);
    for c in ["acc2", "acc3", "acc5", "f1_acc2", "mae"] {
        assert!(f64s(&ev, c)[k].is_some(), "CH-SIMS reports {c}");
    }
    // r is undefined (null, NaN in MMSA) when every clipped prediction is the same.
    assert!(f64s(&ev, "corr")[k].is_none_or(|r| (-1.0..=1.0).contains(&r)));
    for c in ["acc7", "acc2_pos", "f1_acc2_pos"] {
        assert!(f64s(&ev, c)[k].is_none(), "CH-SIMS has no {c}");
    }
    // Table V as a pivot: pairs vs all, one row per modality pair.
    let t5 = p.table("table_bimodal");
    assert_eq!(t5.num_rows(), 6);
    let out = p.run(&["report", "-o", "rep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(p.root().join("rep/report.md")).unwrap();
    assert!(md.contains("| terms=pairs | terms=all |"), "{md}");
    assert!(md.contains("Fig. 6: single- vs multi-channel"), "{md}");

    // Fusion hyperparameters: only the model, its evaluation and the tables see them.
    let (code, events, _) = p.run_json(&[
        "table_main",
        "--set",
        "smp.heads=2",
        "--set",
        "smp.d_model=32",
    ]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(
        ran(&events),
        ["eval_smp[seed=1]", "smp[seed=1]", "table_main"]
    );
}

#[test]
fn cm_msf_runs_on_mosi_layout_with_mosi_metrics() {
    let yaml = study(
        "cm-msf.yaml",
        &[
            ("data", "data"),
            ("scale", "mosi"),
            ("video_fps", "3"),
            ("video_steps", "6"),
            ("audio_steps", "8"),
            ("text_steps", "12"),
            ("epochs", "2"),
            ("layers", "1"),
            ("encoder_layers", "1"),
            ("seeds", "[1]"),
        ],
    );
    let p = Project::with_demo(&yaml, 20, 2, &["--layout", "mosi"]);
    let (code, events, _) = p.run_json(&["table_main", "table_modules"]);
    assert_eq!(code, 0, "{events:?}");
    let ev = p.table("eval_cm_msf[seed=1]");
    let k = test_row(&ev);
    // MOSI: both Acc-2 conventions with their F1s, Acc-5, Acc-7, MAE, Corr; no Acc-3.
    for c in [
        "acc2",
        "acc2_pos",
        "f1_acc2",
        "f1_acc2_pos",
        "acc5",
        "acc7",
        "mae",
    ] {
        let v = f64s(&ev, c)[k].unwrap_or_else(|| panic!("MOSI reports {c}"));
        assert!(v >= 0.0, "{c} {v}");
    }
    assert!(f64s(&ev, "acc3")[k].is_none());
    // The scores are on MOSI's scale: the labels reach beyond CH-SIMS's [-1, 1].
    let m = p.table("cm_msf[seed=1]");
    let scores: Vec<f64> = f64s(&m, "score").into_iter().flatten().collect();
    assert!(scores.iter().any(|s| s.abs() > 1.0), "{scores:?}");
    // Table 6's rows: the full model and its two ablations, each a different network.
    let t6 = p.table("table_modules");
    assert_eq!(
        strs(&t6, "stage"),
        [
            Some("eval_cm_msf".to_string()),
            Some("eval_no_bilstm".to_string()),
            Some("eval_no_mgf".to_string())
        ]
    );
    let params = |stage: &str| -> i64 {
        let t = p.table(stage);
        let cfg = strs(&t, "config").into_iter().flatten().next().unwrap();
        serde_json::from_str::<serde_json::Value>(&cfg).unwrap()["parameters"]
            .as_i64()
            .unwrap()
    };
    let full = params("cm_msf[seed=1]");
    assert!(params("no_bilstm[seed=1]") < full && params("no_mgf[seed=1]") < full);

    // More cross-modal heads: the model, its evaluation and its table run again, nothing else.
    let (code, events, _) = p.run_json(&["table_main", "--set", "cm_msf.heads=4"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(
        ran(&events),
        ["cm_msf[seed=1]", "eval_cm_msf[seed=1]", "table_main"]
    );
}
