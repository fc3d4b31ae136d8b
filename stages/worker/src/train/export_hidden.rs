//! `export_hidden`: a trained encoder's per-clip hidden vectors (H), for plots and inspection.

use arrow::array::{Array, Float32Array, Int64Array, ListArray, StringArray};

use crate::table::{batch, col, f32_lists, i64s, str_col, strings};
use crate::{Kind, Output, RunCtx, Stage, StageError};

/// `export_hidden`: the per-clip hidden vectors (H) of a trained encoder, in the feature
/// layout (`frames` 1, `dim`, `values`) for plots and inspection.
pub struct ExportHidden;

impl Stage for ExportHidden {
    fn decl(&self) -> &dyn Kind {
        &stages::train::ExportHidden
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let t = &ctx.inputs[0];
        let part = str_col(t, "part")?;
        let ids = str_col(t, "clip_id")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let hidden = col::<ListArray>(t, "hidden")?;
        let rows: Vec<usize> = (0..t.num_rows())
            .filter(|&r| part.value(r) == "prediction")
            .collect();
        let vals: Vec<Vec<f32>> = rows
            .iter()
            .map(|&r| {
                let l = hidden.value(r);
                l.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        let take_str = |a: &StringArray| -> Vec<String> {
            rows.iter().map(|&r| a.value(r).to_string()).collect()
        };
        let table = batch(vec![
            ("clip_id", strings(&take_str(ids))),
            ("split", strings(&take_str(split))),
            ("y", i64s(rows.iter().map(|&r| Some(y.value(r))).collect())),
            ("frames", i64s(vec![Some(1); rows.len()])),
            (
                "dim",
                i64s(vals.iter().map(|v| Some(v.len() as i64)).collect()),
            ),
            ("values", f32_lists(vals)),
        ])?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
}
