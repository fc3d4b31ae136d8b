//! Reading a training stage's table: its best epoch and its checkpoint row.

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;

use crate::table::{col, str_col};
use crate::StageError;

/// The long table every training stage writes: `part` `curve` rows (one per epoch, `best`
/// marking the kept one), a `checkpoint` row, then `prediction` rows.
pub const TRAINING: &[&str] = &[
    "part",
    "epoch",
    "train_loss",
    "train_acc",
    "train_f1",
    "valid_loss",
    "valid_acc",
    "valid_f1",
    "best",
    "checkpoint",
    "config",
    "clip_id",
    "split",
    "y",
    "pred",
    "probs",
    "score",
    "pred_score",
    "hidden",
    "targets",
];

pub fn curve_report(t: &RecordBatch) -> Option<String> {
    let part = str_col(t, "part").ok()?;
    let best = col::<BooleanArray>(t, "best").ok()?;
    let acc = crate::table::f64_col(t, "valid_acc").ok()?;
    let f1 = crate::table::f64_col(t, "valid_f1").ok()?;
    let ep = col::<Int64Array>(t, "epoch").ok()?;
    (0..t.num_rows())
        .find(|&r| part.value(r) == "curve" && best.value(r))
        .map(|r| {
            format!(
                "best epoch {}: valid acc {:.4}, macro F1 {:.4}",
                ep.value(r),
                acc.value(r),
                f1.value(r)
            )
        })
}

/// The training curve as a figure: loss and accuracy per epoch, train against valid, the kept
/// epoch marked. Tables written before the train scores were recorded draw valid's alone.
pub fn curve_figures(t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, StageError>)> {
    use crate::metrics::figures::{curves_png, Curve};
    use plotters::style::RGBColor;
    let (Ok(part), Ok(ep)) = (str_col(t, "part"), col::<Int64Array>(t, "epoch")) else {
        return Vec::new();
    };
    let rows: Vec<usize> = (0..t.num_rows())
        .filter(|&r| part.value(r) == "curve")
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let series = |c: &str| -> Vec<(i64, f64)> {
        crate::table::f64_col(t, c).map_or(Vec::new(), |a| {
            rows.iter()
                .filter_map(|&r| crate::table::opt_f64(a, r).map(|v| (ep.value(r), v)))
                .collect()
        })
    };
    let best = col::<BooleanArray>(t, "best").ok().and_then(|b| {
        rows.iter()
            .find(|&&r| b.is_valid(r) && b.value(r))
            .map(|&r| ep.value(r))
    });
    let task = checkpoint_of(t)
        .ok()
        .and_then(|(_, c)| c.get("task").and_then(|v| v.as_str()).map(str::to_string));
    let score = match task.as_deref() {
        Some("regress") => "accuracy of the three-way class",
        Some("multilabel") => "mean per-class accuracy",
        _ => "accuracy",
    };
    let curves = [
        Curve {
            name: "train",
            color: RGBColor(31, 119, 180),
            loss: series("train_loss"),
            score: series("train_acc"),
        },
        Curve {
            name: "valid",
            color: RGBColor(255, 127, 14),
            loss: series("valid_loss"),
            score: series("valid_acc"),
        },
    ];
    let title = match best {
        Some(b) => format!("training curve (kept epoch {b}, dashed)"),
        None => "training curve".to_string(),
    };
    vec![(
        "curve".to_string(),
        curves_png(&curves, score, best, &title),
    )]
}

/// The checkpoint row of a training stage's table: (safetensors bytes, config).
pub fn checkpoint_of(t: &RecordBatch) -> Result<(Vec<u8>, serde_json::Value), StageError> {
    let part = str_col(t, "part")?;
    let ck = col::<arrow::array::BinaryArray>(t, "checkpoint")?;
    let cfg = str_col(t, "config")?;
    for r in 0..t.num_rows() {
        if part.value(r) == "checkpoint" {
            let c: serde_json::Value = serde_json::from_str(cfg.value(r))
                .map_err(|e| StageError::Input(format!("checkpoint config: {e}")))?;
            return Ok((ck.value(r).to_vec(), c));
        }
    }
    Err(StageError::Input(
        "the input is not a training stage's table (no checkpoint row)".into(),
    ))
}
