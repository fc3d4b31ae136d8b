//! Checkpoints and the long-format table of a trained model.
//!
//! A training stage's table is long-format, one artifact per trained model:
//! - `part = curve`: one row per epoch (`epoch`, `train_loss`, `train_acc`, `train_f1`,
//!   `valid_loss`, `valid_acc`, `valid_f1`, `best`). The train columns are running values over
//!   the epoch's batches, in training mode (dropout on), as the loss is; the valid ones come
//!   after the epoch in evaluation mode. No timings: the same key gives the same bytes;
//! - `part = checkpoint`: one row, the best-on-valid weights as safetensors bytes
//!   (`checkpoint`) and the model's shape (`config`, JSON);
//! - `part = prediction`: one row per clip (`clip_id`, `split`, `y`, `pred`, `probs`,
//!   `score`, `pred_score`, `hidden`) from the best weights.
//!
//! `label` picks the task. An integer column of the labels table (acc3, acc2, class, ...) is
//! classification on cross-entropy. The continuous `y` is MMSA-style regression: one output, L1
//! loss, the best epoch by validation loss; `score`/`pred_score` hold the true and predicted
//! values, and `y`/`pred` their three-way classes (CH-SIMS's edges, MOSI's sign) so that
//! confusion matrices and plots work for both.
//!
//! So `df[df.part == "curve"]` is the training curve, and the checkpoint file is
//! `open("m.safetensors", "wb").write(df.checkpoint.dropna().iloc[0])`.
//!
//! Training is deterministic for a seed on CPU: weights from `tch::manual_seed`, batches from a
//! seeded shuffle, and libtorch's CPU kernels reduce in a fixed order.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, BooleanArray};
use arrow::record_batch::RecordBatch;
use tch::nn::{self};
use tch::Tensor;

use crate::table::{batch, f32_lists, f64s, i64s, strings};
use crate::train::dataset::{Dataset, Task};
use crate::StageError;

/// One epoch of the training curve. Accuracy and macro F1 (multi-label: the averages of the
/// per-class binary accuracy and F1) on each side.
pub struct Epoch {
    pub epoch: i64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub train_f1: f64,
    pub valid_loss: f64,
    pub valid_acc: f64,
    pub valid_f1: f64,
}

/// What `fit` hands back: the curve, the kept epoch and its weights, and every clip's outputs.
pub struct Trained {
    pub curve: Vec<Epoch>,
    pub best_epoch: i64,
    pub checkpoint: Vec<u8>,
    /// Per clip: class probabilities, or the predicted score.
    pub outputs: Vec<Vec<f32>>,
}

pub(crate) fn safetensors_bytes(vars: &[(String, Tensor)]) -> Result<Vec<u8>, StageError> {
    let dir = tempfile_dir()?;
    let path = dir.join("weights.safetensors");
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &path)
        .map_err(|e| StageError::Other(format!("saving weights: {e}")))?;
    let b = std::fs::read(&path).map_err(|e| StageError::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(b)
}

pub(crate) fn load_safetensors(vs: &mut nn::VarStore, bytes: &[u8]) -> Result<(), StageError> {
    let dir = tempfile_dir()?;
    let path = dir.join("weights.safetensors");
    std::fs::write(&path, bytes).map_err(|e| StageError::io(&path, e))?;
    let r = vs
        .load(&path)
        .map_err(|e| StageError::Input(format!("loading a checkpoint: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf, StageError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "pipeline-ckpt-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).map_err(|e| StageError::io(&d, e))?;
    Ok(d)
}

/// The long-format table of a trained model (see the module docs).
pub(crate) fn model_table(
    ds: &Dataset,
    t: &Trained,
    config: serde_json::Value,
    hidden: Option<&Tensor>,
) -> Result<RecordBatch, StageError> {
    let nc = t.curve.len();
    let np = ds.ids.len();
    let n = nc + 1 + np;
    let mut part = vec!["curve"; nc];
    part.push("checkpoint");
    part.extend(std::iter::repeat_n("prediction", np));
    let curve_f = |f: fn(&Epoch) -> f64| -> ArrayRef {
        let mut v: Vec<Option<f64>> = t.curve.iter().map(|c| Some(f(c))).collect();
        v.resize(n, None);
        f64s(v)
    };
    let mut epoch: Vec<Option<i64>> = t.curve.iter().map(|c| Some(c.epoch)).collect();
    epoch.resize(n, None);
    let mut best: Vec<Option<bool>> = t
        .curve
        .iter()
        .map(|c| Some(c.epoch == t.best_epoch))
        .collect();
    best.resize(n, None);
    let mut ckpt = BinaryBuilder::new();
    let mut config = config;
    if let (Some(c), serde_json::Value::Object(t)) = (config.as_object_mut(), ds.task.config()) {
        c.extend(t);
    }
    let mut cfg: Vec<Option<String>> = vec![None; n];
    cfg[nc] = Some(config.to_string());
    for r in 0..n {
        if r == nc {
            ckpt.append_value(&t.checkpoint);
        } else {
            ckpt.append_null();
        }
    }
    let pre = |v: Vec<Option<String>>| -> Vec<Option<String>> {
        let mut out = vec![None; nc + 1];
        out.extend(v);
        out
    };
    let task = ds.task;
    let regress = matches!(task, Task::Regress { .. });
    let mut ys: Vec<Option<i64>> = vec![None; nc + 1];
    ys.extend(ds.cls.iter().map(|&y| Some(y)));
    let mut preds: Vec<Option<i64>> = vec![None; nc + 1];
    preds.extend(t.outputs.iter().map(|o| Some(task.predict(o))));
    let mut score: Vec<Option<f64>> = vec![None; nc + 1];
    let mut pred_score: Vec<Option<f64>> = vec![None; nc + 1];
    for (y, o) in ds.y.iter().zip(&t.outputs) {
        score.push(regress.then_some(*y));
        pred_score.push(regress.then(|| o.first().copied().unwrap_or(0.0) as f64));
    }
    let probs = if regress {
        vec![Vec::new(); np]
    } else {
        t.outputs.clone()
    };
    let lists = |rows: Vec<Vec<f32>>| -> ArrayRef {
        let mut all = vec![Vec::new(); nc + 1];
        all.extend(rows);
        f32_lists(all)
    };
    let hidden_rows: Vec<Vec<f32>> = match hidden {
        Some(h) => {
            let h = h.to_device(tch::Device::Cpu);
            (0..np as i64)
                .map(|i| Vec::try_from(h.get(i)).unwrap_or_default())
                .collect()
        }
        None => vec![Vec::new(); np],
    };
    batch(vec![
        ("part", strings(&part)),
        ("epoch", i64s(epoch)),
        ("train_loss", curve_f(|c| c.train_loss)),
        ("train_acc", curve_f(|c| c.train_acc)),
        ("train_f1", curve_f(|c| c.train_f1)),
        ("valid_loss", curve_f(|c| c.valid_loss)),
        ("valid_acc", curve_f(|c| c.valid_acc)),
        ("valid_f1", curve_f(|c| c.valid_f1)),
        ("best", Arc::new(BooleanArray::from(best)) as ArrayRef),
        ("checkpoint", Arc::new(ckpt.finish()) as ArrayRef),
        ("config", crate::table::opt_strings(cfg)),
        (
            "clip_id",
            crate::table::opt_strings(pre(ds.ids.iter().cloned().map(Some).collect())),
        ),
        (
            "split",
            crate::table::opt_strings(pre(ds.split.iter().cloned().map(Some).collect())),
        ),
        ("y", i64s(ys)),
        ("pred", i64s(preds)),
        ("probs", lists(probs)),
        ("score", f64s(score)),
        ("pred_score", f64s(pred_score)),
        ("hidden", lists(hidden_rows)),
        (
            "targets",
            lists(if ds.flags.is_empty() {
                vec![Vec::new(); np]
            } else {
                ds.flags.clone()
            }),
        ),
    ])
}
