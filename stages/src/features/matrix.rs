//! Reading one clip of a feature stage (`frames` x `dim` values, or a clip's patches) as a
//! matrix: the shared reader of every stage that consumes features.

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::table::col;
use crate::{ItemError, RunCtx, StageError};

/// One item of a feature stage: `frames` x `dim` values, row-major, and the hop between
/// frames in seconds when the producer recorded one.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub frames: usize,
    pub dim: usize,
    pub hop_s: Option<f64>,
    pub values: Vec<f32>,
}

/// A clip of several rows (a `segment` stage's patches) read as one matrix: a step per patch,
/// the patch's values flattened, so `pad` can fix the number of patches per clip.
fn patches(
    t: &RecordBatch,
    frames: &Int64Array,
    dim: &Int64Array,
    lists: &ListArray,
) -> Result<Matrix, String> {
    let per = (frames.value(0) * dim.value(0)) as usize;
    let mut values = Vec::with_capacity(per * t.num_rows());
    for r in 0..t.num_rows() {
        let v = lists.value(r);
        let v = v
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or("values are not f32")?;
        if (frames.value(r) * dim.value(r)) as usize != per || v.len() != per {
            return Err(format!(
                "row {r}: {} values where the first patch has {per}",
                v.len()
            ));
        }
        values.extend_from_slice(v.values());
    }
    Ok(Matrix {
        frames: t.num_rows(),
        dim: per,
        hop_s: None,
        values,
    })
}

pub fn read_matrix(ctx: &RunCtx, row: usize) -> Result<Matrix, ItemError> {
    read_matrix_of(ctx, 0, row)
}

/// [`read_matrix`] of input `input`'s row `row`.
pub fn read_matrix_of(ctx: &RunCtx, input: usize, row: usize) -> Result<Matrix, ItemError> {
    let fail = |reason: String| ItemError::new("", "features", reason);
    let t = ctx.shard(input, row).map_err(|e| fail(e.to_string()))?;
    matrix_of(&t).map_err(fail)
}

/// One feature item's rows (a clip's `frames`, `dim`, `values`, or its patches) as a matrix.
pub fn matrix_of(t: &RecordBatch) -> Result<Matrix, String> {
    let fail = |reason: String| reason;
    let bad = |e: StageError| e.to_string();
    let frames = col::<Int64Array>(t, "frames").map_err(bad)?;
    let dim = col::<Int64Array>(t, "dim").map_err(bad)?;
    let lists = col::<ListArray>(t, "values").map_err(bad)?;
    if t.num_rows() != 1 || t.column_by_name("segment").is_some() {
        if t.num_rows() == 0 {
            return Err(fail("no rows".into()));
        }
        return patches(t, frames, dim, lists);
    }
    let v = lists.value(0);
    let v = v
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| fail("values are not f32".into()))?;
    let (n, d) = (frames.value(0) as usize, dim.value(0) as usize);
    if v.len() != n * d {
        return Err(fail(format!("{} values for {n} x {d}", v.len())));
    }
    let hop_s = crate::table::f64_col(t, "hop_s")
        .ok()
        .and_then(|c| crate::table::opt_f64(c, 0));
    Ok(Matrix {
        frames: n,
        dim: d,
        hop_s,
        values: v.values().to_vec(),
    })
}
