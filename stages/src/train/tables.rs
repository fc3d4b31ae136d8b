//! Reading a training stage's table: its best epoch and its checkpoint row.

use arrow::array::{BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;

use crate::table::{col, str_col};
use crate::StageError;

/// The long table every training stage writes: `part` `curve` rows (one per epoch, `best`
/// marking the kept one), a `checkpoint` row, then `prediction` rows.
pub const TRAINING: &[&str] = &[
    "part",
    "epoch",
    "train_loss",
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
