//! Reading a training stage's table: its best epoch and its checkpoint row.

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;

use crate::metrics::figures::{curves_png, Curve};
use crate::table::{col, str_col};
use crate::StageError;
use plotters::style::RGBColor;

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

/// Epoch, and each column in `cols`, of a training table's curve rows.
fn curve_series(t: &RecordBatch, cols: [&str; 4]) -> Option<[Vec<(i64, f64)>; 4]> {
    let (part, ep) = (
        str_col(t, "part").ok()?,
        col::<Int64Array>(t, "epoch").ok()?,
    );
    let rows: Vec<usize> = (0..t.num_rows())
        .filter(|&r| part.value(r) == "curve")
        .collect();
    if rows.is_empty() {
        return None;
    }
    Some(cols.map(|c| {
        crate::table::f64_col(t, c).map_or(Vec::new(), |a| {
            rows.iter()
                .filter_map(|&r| crate::table::opt_f64(a, r).map(|v| (ep.value(r), v)))
                .collect()
        })
    }))
}

/// The accuracy a training's curve records, by its task (from the checkpoint's config).
fn score_name(t: &RecordBatch) -> &'static str {
    let task = checkpoint_of(t)
        .ok()
        .and_then(|(_, c)| c.get("task").and_then(|v| v.as_str()).map(str::to_string));
    match task.as_deref() {
        Some("regress") => "accuracy of the three-way class",
        Some("multilabel") => "mean per-class accuracy",
        _ => "accuracy",
    }
}

/// Train and valid curves of one run, for [`crate::metrics::figures::curves_png`].
fn run_curves(t: &RecordBatch, opacity: f64, legend: bool) -> Option<[Curve<'static>; 2]> {
    let [tl, ta, vl, va] = curve_series(t, ["train_loss", "train_acc", "valid_loss", "valid_acc"])?;
    let name = |n: &'static str| if legend { n } else { "" };
    Some([
        Curve {
            name: name("train"),
            color: RGBColor(31, 119, 180),
            opacity,
            loss: tl,
            score: ta,
        },
        Curve {
            name: name("valid"),
            color: RGBColor(255, 127, 14),
            opacity,
            loss: vl,
            score: va,
        },
    ])
}

/// The training curve as a figure: loss and accuracy per epoch, train against valid, the kept
/// epoch marked. Tables written before the train scores were recorded draw valid's alone.
pub fn curve_figures(t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, StageError>)> {
    let Some(curves) = run_curves(t, 1.0, true) else {
        return Vec::new();
    };
    let best = match (
        col::<BooleanArray>(t, "best"),
        col::<Int64Array>(t, "epoch"),
    ) {
        (Ok(b), Ok(ep)) => (0..t.num_rows())
            .find(|&r| b.is_valid(r) && b.value(r))
            .map(|r| ep.value(r)),
        _ => None,
    };
    let title = match best {
        Some(b) => format!("training curve (kept epoch {b}, dashed)"),
        None => "training curve".to_string(),
    };
    vec![(
        "curve".to_string(),
        curves_png(&curves, score_name(t), best, &title),
    )]
}

/// The curves of several runs of one model (its seeds or folds) in one figure.
pub fn curve_figures_over(
    tables: &[(String, &RecordBatch)],
) -> Vec<(String, Result<Vec<u8>, StageError>)> {
    let opacity = if tables.len() > 1 { 0.55 } else { 1.0 };
    let curves: Vec<Curve> = tables
        .iter()
        .enumerate()
        .filter_map(|(k, (_, t))| run_curves(t, opacity, k == 0))
        .flatten()
        .collect();
    let Some((_, first)) = tables.first() else {
        return Vec::new();
    };
    if curves.is_empty() {
        return Vec::new();
    }
    let title = format!("training curves of {} runs, one line each", tables.len());
    vec![(
        "curves".to_string(),
        curves_png(&curves, score_name(first), None, &title),
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
