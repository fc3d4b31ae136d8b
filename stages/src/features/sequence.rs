//! `segment` and `pad`: a clip's feature sequence cut into fixed windows, or brought to a fixed
//! number of steps.

use arrow::record_batch::RecordBatch;

use crate::features::matrix::read_matrix;
use crate::features::spectrum::MODE;
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f32_lists, f64s, i64s};
use crate::{ItemError, Kind, Mode, RunCtx, Stage, StageError};

/// `segment`: cuts each clip's feature sequence into fixed windows of `frames` steps every
/// `hop` steps (MER-SEM-MBT: 960 ms x 64 mel patches = 96 frames at a 10 ms hop).
pub struct Segment;

const SEGMENT_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("frames", ParamType::Int, Some("96"), "steps per segment").min(1.0),
    ParamSpec::new("hop", ParamType::Int, Some("0"), "steps between segment starts (0: frames, no overlap)"),
    ParamSpec::new(
        "last",
        ParamType::Enum(&["drop", "pad"]),
        Some("\"drop\""),
        "a trailing partial segment: drop it, or zero-pad it (a clip shorter than one segment is always padded)",
    ),
];

impl Kind for Segment {
    fn kind(&self) -> &'static str {
        "segment"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: fixed-length windows of a feature sequence (one row per segment)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        SEGMENT_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &crate::Params) -> &'static [&'static str] {
        &["segment", "start_s", "valid", "frames", "dim", "values"]
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
}

impl Stage for Segment {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let p = |e: StageError| ItemError::new("", "params", e.to_string());
        let len = ctx.params.i64("frames").map_err(p)?;
        let hop = ctx.params.i64("hop").map_err(p)?;
        if len < 1 || hop < 0 {
            return Err(ItemError::new(
                "",
                "params",
                "frames must be >= 1 and hop >= 0",
            ));
        }
        let (len, hop) = (
            len as usize,
            if hop == 0 { len as usize } else { hop as usize },
        );
        let pad_last = ctx.params.str("last").map_err(p)? == "pad";
        let m = read_matrix(ctx, row)?;
        let mut starts: Vec<usize> = (0..m.frames)
            .step_by(hop)
            .filter(|s| s + len <= m.frames)
            .collect();
        let next = starts.last().map_or(0, |s| s + hop);
        if starts.is_empty() || (pad_last && next < m.frames) {
            starts.push(next.min(m.frames.saturating_sub(1)));
        }
        let mut rows = Vec::with_capacity(starts.len());
        for &s in &starts {
            let mut v = vec![0f32; len * m.dim];
            let take = len.min(m.frames - s);
            v[..take * m.dim].copy_from_slice(&m.values[s * m.dim..(s + take) * m.dim]);
            rows.push((s, take, v));
        }
        let hop_s = m.hop_s;
        batch(vec![
            ("segment", i64s((0..rows.len() as i64).map(Some).collect())),
            (
                "start_s",
                f64s(rows.iter().map(|r| hop_s.map(|h| r.0 as f64 * h)).collect()),
            ),
            (
                "valid",
                i64s(rows.iter().map(|r| Some(r.1 as i64)).collect()),
            ),
            ("frames", i64s(vec![Some(len as i64); rows.len()])),
            ("dim", i64s(vec![Some(m.dim as i64); rows.len()])),
            ("values", f32_lists(rows.into_iter().map(|r| r.2).collect())),
        ])
        .map_err(|e| ItemError::new("", "", e.to_string()))
    }
}

/// `pad`: every clip's sequence to exactly `steps` steps, by zero-padding/truncating or by
/// uniform resampling (Uni2Mul: 10 / 128 / 36; SMP: 32). `length` keeps the original count
/// for attention masks.
pub struct Pad;

const PAD_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("steps", ParamType::Int, Some("32"), "output length").min(1.0),
    ParamSpec::new(
        "method",
        ParamType::Enum(&["zero", "resample", "zero_or_resample"]),
        Some("\"zero\""),
        "zero: pad with zeros or cut the end; resample: pick steps evenly spaced rows; zero_or_resample: pad shorter sequences with zeros, resample longer ones (SMP)",
    ),
];

/// Row indices `steps` evenly spaced over `n` rows (centres of equal slices).
pub fn uniform_rows(n: usize, steps: usize) -> Vec<usize> {
    (0..steps)
        .map(|k| (((k as f64 + 0.5) * n as f64 / steps as f64) as usize).min(n.saturating_sub(1)))
        .collect()
}

impl Kind for Pad {
    fn kind(&self) -> &'static str {
        "pad"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: a feature sequence to a fixed number of steps (zero-pad/cut or uniform resample)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PAD_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &crate::Params) -> &'static [&'static str] {
        &["length", "frames", "dim", "values"]
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
}

impl Stage for Pad {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let p = |e: StageError| ItemError::new("", "params", e.to_string());
        let steps = ctx.params.i64("steps").map_err(p)?;
        if steps < 1 {
            return Err(ItemError::new("", "params", "steps must be >= 1"));
        }
        let steps = steps as usize;
        let m = read_matrix(ctx, row)?;
        let mut v = vec![0f32; steps * m.dim];
        let method = ctx.params.str("method").map_err(p)?;
        let resample = match method {
            "resample" => true,
            "zero_or_resample" => m.frames > steps,
            _ => false,
        };
        if resample && m.frames > 0 {
            for (k, r) in uniform_rows(m.frames, steps).into_iter().enumerate() {
                v[k * m.dim..(k + 1) * m.dim]
                    .copy_from_slice(&m.values[r * m.dim..(r + 1) * m.dim]);
            }
        } else {
            let take = steps.min(m.frames);
            v[..take * m.dim].copy_from_slice(&m.values[..take * m.dim]);
        }
        batch(vec![
            ("length", i64s(vec![Some(m.frames as i64)])),
            ("frames", i64s(vec![Some(steps as i64)])),
            ("dim", i64s(vec![Some(m.dim as i64)])),
            ("values", f32_lists(vec![v])),
        ])
        .map_err(|e| ItemError::new("", "", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_rows_spread_evenly() {
        assert_eq!(uniform_rows(100, 4), vec![12, 37, 62, 87]);
        assert_eq!(uniform_rows(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(uniform_rows(10, 10), (0..10).collect::<Vec<_>>());
    }
}
