//! The SMP (paper 001) and CM-MSF (paper 003) pipelines as shipped in pipeline/, end to end
//! through the real binary on demo clips (CH-SIMS layout, and the MOSI layout with [-3, 3]
//! labels), shrunk through their vars: fewer frames, steps, epochs and layers.

use std::path::Path;

use crate::common::*;
use arrow::array::Int64Array;

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

/// The lists of a list column, as f64.
fn lists(t: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Vec<f64>> {
    let l = typed::<arrow::array::ListArray>(t, name);
    (0..t.num_rows())
        .map(|r| {
            let v = l.value(r);
            let v = arrow::compute::cast(&v, &arrow::datatypes::DataType::Float64).unwrap();
            v.as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn config(p: &Project, stage: &str) -> serde_json::Value {
    let t = p.table(stage);
    let cfg = strs(&t, "config").into_iter().flatten().next().unwrap();
    serde_json::from_str(&cfg).unwrap()
}

#[test]
fn mer_sem_mbt_trains_its_backbones_on_cached_patches_and_faces() {
    let yaml = study(
        "mer-sem-mbt.yaml",
        &[
            ("data", "data"),
            ("segments", "4"),
            ("epochs", "2"),
            ("seeds", "[1]"),
        ],
    );
    let p = Project::with_demo(&yaml, 30, 2, &["--layout", "iemocap"]);
    let (code, events, _) = p.run_json(&["table_main"]);
    assert_eq!(code, 0, "{events:?}");

    // Six one-hot emotion flags per kept utterance.
    let l = p.table("labels");
    for f in lists(&l, "flags") {
        assert_eq!(f.len(), 6);
        assert_eq!(f.iter().sum::<f64>(), 1.0, "{f:?}");
    }
    // Model inputs: 4 log-mel patches of 96 x 64 and 4 grey 48 x 48 faces per clip.
    for (stage, dim) in [("audio_in", 96 * 64), ("vision_in", 48 * 48)] {
        let t = p.table(stage);
        let item = p.object(strs(&t, "object")[0].as_deref().unwrap());
        assert_eq!(typed::<Int64Array>(&item, "frames").value(0), 4, "{stage}");
        assert_eq!(typed::<Int64Array>(&item, "dim").value(0), dim, "{stage}");
    }
    // The face CNN starts from the packaged weights: 4 groups x (conv weight, bias, BN weight,
    // bias, running mean, running variance).
    let cfg = config(&p, "mer_sem_mbt[seed=1]");
    assert_eq!(cfg["task"], "multilabel");
    assert_eq!(cfg["pretrained_tensors"], 24);

    // Avg F1 as the paper computes it, from the stored test predictions.
    let m = p.table("mer_sem_mbt[seed=1]");
    let (split, probs, targets) = (strs(&m, "split"), lists(&m, "probs"), lists(&m, "targets"));
    let test: Vec<usize> = (0..m.num_rows())
        .filter(|&r| split[r].as_deref() == Some("test"))
        .collect();
    let mut avg_f1 = 0.0;
    for c in 0..6 {
        let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
        for &r in &test {
            match (targets[r][c] > 0.5, probs[r][c] > 0.5) {
                (true, true) => tp += 1.0,
                (false, true) => fp += 1.0,
                (true, false) => fn_ += 1.0,
                _ => {}
            }
        }
        avg_f1 += if tp + fp + fn_ > 0.0 {
            2.0 * tp / (2.0 * tp + fp + fn_)
        } else {
            0.0
        } / 6.0;
    }
    let ev = p.table("eval_mer_sem_mbt[seed=1]");
    let k = test_row(&ev);
    assert!((f64s(&ev, "avg_f1")[k].unwrap() - avg_f1).abs() < 1e-6);
    for c in ["avg_acc", "avg_wa"] {
        assert!((0.0..=1.0).contains(&f64s(&ev, c)[k].unwrap()), "{c}");
    }
    assert!(
        f64s(&ev, "acc")[k].is_none(),
        "no single-label accuracy for flags"
    );

    // SEM positions live in the training key only: patches and faces stay cached.
    let (code, events, _) = p.run_json(&["table_main", "--set", "mer_sem_mbt.sem_vision=4"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(
        ran(&events),
        [
            "eval_mer_sem_mbt[seed=1]",
            "mer_sem_mbt[seed=1]",
            "table_main"
        ]
    );
    // A new random frame per window: frame selection and all that follows on the visual side.
    let (code, events, _) = p.run_json(&["table_main", "--set", "vars.frame_seed=2"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(
        ran(&events),
        [
            "eval_mer_sem_mbt[seed=1]",
            "face",
            "faces",
            "frames",
            "mer_sem_mbt[seed=1]",
            "table_main",
            "vision_in"
        ]
    );
    let out = p.run(&["report", "--variants", "-o", "rep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(p.root().join("rep/report.md")).unwrap();
    assert!(
        md.contains("| class | Acc (%) | WA (%) | F1 (%) |") && md.contains("| fru |"),
        "{md}"
    );
    assert!(md.contains("Avg F1"), "{md}");
}

#[test]
fn foal_net_runs_five_session_folds_and_batch_size_reruns_training() {
    let yaml = study(
        "foal-net.yaml",
        &[
            ("data", "data"),
            ("frames", "4"),
            ("audio_steps", "8"),
            ("batch_size", "8"),
            ("epochs", "2"),
        ],
    );
    let p = Project::with_demo(&yaml, 30, 2, &["--layout", "iemocap"]);
    let (code, events, _) = p.run_json(&["table_main", "table_ablation"]);
    assert_eq!(code, 0, "{events:?}");

    // Each fold tests one session and validates on a share of the others.
    let sp = p.table("split");
    let (fold, split) = (typed::<Int64Array>(&sp, "fold"), strs(&sp, "split"));
    for k in 0..5 {
        let n = |s: &str| {
            (0..sp.num_rows())
                .filter(|&r| fold.value(r) == k && split[r].as_deref() == Some(s))
                .count()
        };
        assert!(
            n("test") > 0 && n("valid") > 0 && n("train") > n("valid"),
            "fold {k}"
        );
    }
    // UA is the mean of per-class recalls of the test predictions; WA the accuracy.
    for k in 0..5 {
        let m = p.table(&format!("foal_net[fold={k}]"));
        let (s, y, pr) = (
            strs(&m, "split"),
            typed::<Int64Array>(&m, "y"),
            typed::<Int64Array>(&m, "pred"),
        );
        let test: Vec<usize> = (0..m.num_rows())
            .filter(|&r| s[r].as_deref() == Some("test"))
            .collect();
        let mut classes: Vec<i64> = test.iter().map(|&r| y.value(r)).collect();
        classes.sort();
        classes.dedup();
        let ua = classes
            .iter()
            .map(|&c| {
                let of: Vec<&usize> = test.iter().filter(|&&r| y.value(r) == c).collect();
                of.iter().filter(|&&&r| pr.value(r) == c).count() as f64 / of.len() as f64
            })
            .sum::<f64>()
            / classes.len() as f64;
        let ev = p.table(&format!("eval_foal_net[fold={k}]"));
        let t = test_row(&ev);
        assert!((f64s(&ev, "ua")[t].unwrap() - ua).abs() < 1e-9, "fold {k}");
        assert_eq!(f64s(&ev, "wa")[t], f64s(&ev, "acc")[t]);
        assert_eq!(config(&p, &format!("foal_net[fold={k}]"))["fold"], k);
    }
    let main = p.table("table_main");
    assert_eq!(
        typed::<Int64Array>(&main, "n").value(0),
        5,
        "five folds averaged"
    );
    assert_eq!(p.table("table_ablation").num_rows(), 4, "AVEL x MEM");

    // Batch size changes the in-batch negatives: every fold's training reruns, no features.
    let (code, events, _) = p.run_json(&["table_main", "--set", "vars.batch_size=4"]);
    assert_eq!(code, 0, "{events:?}");
    let r = ran(&events);
    assert_eq!(r.len(), 11, "{r:?}");
    assert!(
        r.iter().all(|s| s.starts_with("foal_net[")
            || s.starts_with("eval_foal_net[")
            || s == "table_main"),
        "{r:?}"
    );
}

#[test]
fn trainings_side_by_side_give_the_bytes_they_give_one_at_a_time() {
    let yaml = study(
        "uni2mul.yaml",
        &[
            ("data", "data"),
            ("seeds", "[1]"),
            ("epochs", "2"),
            ("vision_models", "[cnn_lstm, cnn]"),
            ("audio_models", "[cnn_attn_bilstm, bilstm]"),
            ("text_models", "[cnn_attn, bilstm]"),
        ],
    );
    let (one, four) = (
        Project::with_demo(&yaml, 12, 7, &[]),
        Project::with_demo(&yaml, 12, 7, &[]),
    );
    let (code, _, _) = one.run_json(&["table2", "-j", "1"]);
    assert_eq!(code, 0);
    let (code, events, _) = four.run_json(&["table2", "-j", "4", "--cpus", "4"]);
    assert_eq!(code, 0, "{events:?}");
    // Every artifact (12 trainings, their evaluations, the table) byte for byte.
    assert_eq!(one.objects(), four.objects());
    // And the trainings did run side by side: a second started before the first ended.
    let (mut now, mut most) = (0i32, 0i32);
    for e in &events {
        let training = e["stage"].as_str().is_some_and(|s| s.starts_with("uni_"));
        match e["event"].as_str() {
            Some("stage_start") if training => now += 1,
            Some("stage_done") if training && e["outcome"] == "ran" => now -= 1,
            _ => {}
        }
        most = most.max(now);
    }
    assert!(most >= 2, "at most {most} training ran at once");
}

/// A worker killed by `kill -9` in the middle of a training (from its epoch events) fails that
/// training only, with the signal; independent trainings go on under `--keep-going`; the cache
/// verifies; a rerun trains only what was killed. Epoch events carry the validation loss.
#[test]
fn a_training_killed_mid_way_fails_alone_and_a_rerun_trains_only_it() {
    use std::io::BufRead;
    let yaml = study(
        "uni2mul.yaml",
        &[
            ("data", "data"),
            ("seeds", "[1]"),
            ("epochs", "150"),
            ("vision_models", "[cnn_lstm]"),
            ("audio_models", "[cnn_attn_bilstm]"),
            ("text_models", "[cnn_attn]"),
        ],
    );
    let p = Project::with_demo(&yaml, 12, 7, &[]);
    let targets = [
        "eval_v",
        "eval_a",
        "eval_t",
        "--json",
        "--keep-going",
        "-j",
        "1",
    ];
    let mut child = p
        .cmd(&["run"])
        .args(targets)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let engine = child.id();
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut killed: Option<String> = None;
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines().map_while(Result::ok) {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let epoch = e["event"] == "epoch" && e["epoch"].as_u64() >= Some(3);
        if epoch && killed.is_none() {
            // One stage at a time: the only worker is this training's.
            let w = workers_of(engine);
            assert_eq!(w.len(), 1, "{w:?}");
            let st = std::process::Command::new("kill")
                .args(["-9", &w[0].to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            killed = e["stage"].as_str().map(String::from);
        }
        events.push(e);
    }
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let killed = killed.expect("a training reported its third epoch");
    let done = |s: &str| {
        events
            .iter()
            .find(|e| e["event"] == "stage_done" && e["stage"] == s)
            .unwrap_or_else(|| panic!("no stage_done for {s}"))
            .clone()
    };
    let msg = done(&killed)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("killed by signal 9 (SIGKILL"), "{msg}");
    let trainings: Vec<String> = events
        .iter()
        .filter(|e| {
            e["event"] == "stage_done" && e["stage"].as_str().is_some_and(|s| s.starts_with("uni_"))
        })
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(trainings.len(), 6, "{trainings:?}");
    for t in trainings.iter().filter(|t| **t != killed) {
        assert_eq!(done(t)["outcome"], "ran", "{t}");
        // Every epoch, in order, each with a finite validation loss.
        let epochs: Vec<(u64, f64)> = events
            .iter()
            .filter(|e| e["event"] == "epoch" && e["stage"] == t.as_str())
            .map(|e| {
                (
                    e["epoch"].as_u64().unwrap(),
                    e["valid_loss"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(epochs.len(), 150, "{t}");
        assert!(epochs
            .iter()
            .enumerate()
            .all(|(i, (k, l))| *k == i as u64 + 1 && l.is_finite()));
    }
    let v = p.run(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let (code, events, _) = p.run_json(&targets[..3]);
    assert_eq!(code, 0, "{events:?}");
    let trained: Vec<String> = ran(&events)
        .into_iter()
        .filter(|s| s.starts_with("uni_"))
        .collect();
    assert_eq!(trained, vec![killed]);
}
