//! `export_hidden`: a trained encoder's per-clip hidden vectors (H), for plots and inspection.

use arrow::array::{Array, Float32Array, Int64Array, ListArray, StringArray};
use arrow::record_batch::RecordBatch;

use crate::params::ParamSpec;
use crate::table::{batch, col, f32_lists, i64s, str_col, strings};
use crate::{Output, Params, RunCtx, Stage, StageError};

/// `export_hidden`: the per-clip hidden vectors (H) of a trained encoder, in the feature
/// layout (`frames` 1, `dim`, `values`) for plots and inspection.
pub struct ExportHidden;

impl ExportHidden {
    const NAMES: [&'static str; 3] = ["Negative", "Neutral", "Positive"];
}

impl Stage for ExportHidden {
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let d = col::<Int64Array>(t, "dim").ok()?;
        Some(format!(
            "{} clips, {}-d hidden vectors",
            t.num_rows(),
            if t.num_rows() > 0 { d.value(0) } else { 0 }
        ))
    }
    fn figures(&self, _p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, String>)> {
        let (Ok(y), Ok(v)) = (col::<Int64Array>(t, "y"), col::<ListArray>(t, "values")) else {
            return Vec::new();
        };
        let rows: Vec<Vec<f32>> = (0..t.num_rows())
            .map(|r| {
                let l = v.value(r);
                l.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        let pts: Vec<(f64, f64, i64)> = crate::metrics::figures::pca2(&rows)
            .into_iter()
            .zip(y.values().iter())
            .map(|((a, b), &c)| (a, b, c))
            .collect();
        let names: Vec<String> = Self::NAMES.iter().map(|s| s.to_string()).collect();
        vec![(
            "hidden-pca".to_string(),
            crate::metrics::figures::scatter_png(
                &pts,
                &names,
                "hidden vectors, first two principal components",
            ),
        )]
    }
    fn kind(&self) -> &'static str {
        "export_hidden"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: a trained encoder's hidden vector H (input: a train_unimodal stage)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
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
