//! Multi-channel features (SMP, paper 001): a second visual channel computed from the face
//! stage's landmarks, and `concat`, which joins the per-frame feature channels of one modality.
//!
//! `face_geometry` (per clip, sharded) stands in for OpenFace 2.0's 17 AU x 2 = 34-d features,
//! which need weights that cannot be fetched here. OpenFace derives AUs from landmark geometry
//! and appearance; this channel keeps the geometry that MTCNN's five landmarks (eyes, nose tip,
//! mouth corners) carry. Per face, 20 values in a face-centred frame (origin between the eyes,
//! x along the eye line, unit = inter-ocular distance, so head position, size and roll drop
//! out): the nose and both mouth corners (6), the nine pairwise landmark distances other than
//! eye to eye (9), the roll as sine and cosine (2), the box's height/width, the inter-ocular
//! distance / box width (yaw shrinks it) and the detection probability (3).
//!
//! `concat` (per clip, sharded) puts the channels of its inputs side by side per frame:
//! `frames x (dim_1 + dim_2 + ...)`. All kept inputs must have the same number of frames for a
//! clip (pad or resample them first, or concatenate two channels of the same face rows).

use arrow::array::{Array, Float32Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::features::matrix::Matrix;
use crate::params::{ParamSpec, ParamType};
use crate::table::f32_lists;
use crate::table::{batch, col, f64_col, i64s, str_col};
use crate::{ItemError, Kind, Mode, Params, RunCtx, Stage, StageError};

const MODE: Mode = Mode::Sharded {
    id_column: "clip_id",
    reads: &["object"],
};

pub const GEOMETRY_DIM: usize = 20;

/// The 20 geometry values of one face from its five landmarks `[x, y]` (left eye, right eye,
/// nose, left and right mouth corner), its box `[x1, y1, x2, y2]` and probability.
pub fn geometry(lm: &[[f64; 2]; 5], bbox: [f64; 4], prob: f64) -> [f32; GEOMETRY_DIM] {
    let (le, re) = (lm[0], lm[1]);
    let c = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let (dx, dy) = (re[0] - le[0], re[1] - le[1]);
    let iod = (dx * dx + dy * dy).sqrt().max(1e-6);
    let (cos, sin) = (dx / iod, dy / iod);
    // Into the face frame: translate to the eye centre, rotate the eye line onto x, scale.
    let local = |p: [f64; 2]| -> [f64; 2] {
        let (x, y) = (p[0] - c[0], p[1] - c[1]);
        [(cos * x + sin * y) / iod, (-sin * x + cos * y) / iod]
    };
    let mut out = [0f32; GEOMETRY_DIM];
    let mut k = 0;
    for p in &lm[2..] {
        let q = local(*p);
        out[k] = q[0] as f32;
        out[k + 1] = q[1] as f32;
        k += 2;
    }
    for i in 0..5 {
        for j in i + 1..5 {
            if (i, j) == (0, 1) {
                continue; // eye to eye is the unit
            }
            let (a, b) = (lm[i], lm[j]);
            out[k] = (((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt() / iod) as f32;
            k += 1;
        }
    }
    let (w, h) = ((bbox[2] - bbox[0]).max(1e-6), (bbox[3] - bbox[1]).max(1e-6));
    out[k] = sin as f32;
    out[k + 1] = cos as f32;
    out[k + 2] = (h / w) as f32;
    out[k + 3] = (iod / w) as f32;
    out[k + 4] = prob as f32;
    debug_assert_eq!(k + 5, GEOMETRY_DIM);
    out
}

pub struct FaceGeometry;

impl Kind for FaceGeometry {
    fn kind(&self) -> &'static str {
        "face_geometry"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: 20-d landmark geometry per face (a stand-in for OpenFace AU features; input: face)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::MATRIX
    }
    fn mode(&self, _params: &Params) -> Mode {
        MODE
    }
}

impl Stage for FaceGeometry {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let fail = |field: &str, reason: String| ItemError::new("", field, reason);
        let t = ctx
            .shard(0, row)
            .map_err(|e| fail("faces", e.to_string()))?;
        let bad = |e: StageError| fail("faces", e.to_string());
        let lms = col::<ListArray>(&t, "landmarks").map_err(bad)?;
        let prob = f64_col(&t, "prob").map_err(bad)?;
        let bx: Vec<_> = ["x1", "y1", "x2", "y2"]
            .iter()
            .map(|c| f64_col(&t, c))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        let mut values = Vec::new();
        let mut frames = 0i64;
        for r in 0..t.num_rows() {
            // Faceless frames (`no_face: keep`) have no landmarks and no geometry.
            if prob.is_null(r) || lms.is_null(r) {
                continue;
            }
            let l = lms.value(r);
            let l = l
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| fail("landmarks", "not f32".into()))?;
            if l.len() != 10 {
                return Err(fail(
                    "landmarks",
                    format!("frame row {r}: {} values, expected 5 points", l.len()),
                ));
            }
            let mut lm = [[0f64; 2]; 5];
            for (i, p) in lm.iter_mut().enumerate() {
                *p = [l.value(2 * i) as f64, l.value(2 * i + 1) as f64];
            }
            let b = [
                bx[0].value(r),
                bx[1].value(r),
                bx[2].value(r),
                bx[3].value(r),
            ];
            values.extend_from_slice(&geometry(&lm, b, prob.value(r)));
            frames += 1;
        }
        if frames == 0 {
            return Err(fail("faces", "no face with landmarks".into()));
        }
        batch(vec![
            ("frames", i64s(vec![Some(frames)])),
            ("dim", i64s(vec![Some(GEOMETRY_DIM as i64)])),
            ("values", f32_lists(vec![values])),
        ])
        .map_err(|e| fail("", e.to_string()))
    }
}

pub struct Concat;

const CONCAT_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "names",
        ParamType::StrList,
        Some("[]"),
        "a name per input, in order (default: the inputs' stage names)",
    ),
    ParamSpec::new(
        "keep",
        ParamType::Str,
        Some("\"all\""),
        "the inputs to join, by name, `+`-separated (`face+au`), or `all`; a matrix axis over it gives single- vs multi-channel ablations",
    ),
];

/// The inputs a `concat` keeps, by index, from its `names` and `keep` params.
fn kept(p: &Params, input_names: &[String]) -> Result<Vec<usize>, StageError> {
    let mut names = p.str_list("names")?;
    if names.is_empty() {
        names = input_names.to_vec();
    }
    if names.len() != input_names.len() {
        return Err(StageError::param(
            "names",
            format!("{} names for {} inputs", names.len(), input_names.len()),
        ));
    }
    let keep = p.str("keep")?;
    if keep == "all" {
        return Ok((0..names.len()).collect());
    }
    keep.split('+')
        .map(|k| {
            names.iter().position(|n| n == k.trim()).ok_or_else(|| {
                StageError::param(
                    "keep",
                    format!("no input named `{k}` (names: {})", names.join(", ")),
                )
            })
        })
        .collect()
}

impl Kind for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: feature channels side by side per frame (inputs: 1-8 per-clip feature stages)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        CONCAT_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 8)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::MATRIX
    }
    fn mode(&self, _params: &Params) -> Mode {
        MODE
    }
}

impl Stage for Concat {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let keep = kept(ctx.params, ctx.input_names)
            .map_err(|e| ItemError::new("", "params", e.to_string()))?;
        let id = str_col(&ctx.inputs[0], "clip_id")
            .map_err(|e| ItemError::new("", "features", e.to_string()))?
            .value(row)
            .to_string();
        let mut parts: Vec<(usize, Matrix)> = Vec::new();
        for &k in &keep {
            let field = ctx.input_names[k].clone();
            let ids = str_col(&ctx.inputs[k], "clip_id")
                .map_err(|e| ItemError::new("", &field, e.to_string()))?;
            let r = (0..ids.len())
                .find(|&r| ids.value(r) == id)
                .ok_or_else(|| ItemError::new("", &field, "no features for this clip"))?;
            let m = crate::features::matrix::read_matrix_of(ctx, k, r)
                .map_err(|e| ItemError::new("", &field, e.reason))?;
            parts.push((k, m));
        }
        let frames = parts[0].1.frames;
        if let Some((k, m)) = parts.iter().find(|(_, m)| m.frames != frames) {
            return Err(ItemError::new(
                "",
                &ctx.input_names[*k],
                format!(
                    "{} frames where `{}` has {frames}; pad or resample both to one length first",
                    m.frames, ctx.input_names[parts[0].0]
                ),
            ));
        }
        let dim: usize = parts.iter().map(|(_, m)| m.dim).sum();
        let mut values = Vec::with_capacity(frames * dim);
        for f in 0..frames {
            for (_, m) in &parts {
                values.extend_from_slice(&m.values[f * m.dim..(f + 1) * m.dim]);
            }
        }
        batch(vec![
            ("frames", i64s(vec![Some(frames as i64)])),
            ("dim", i64s(vec![Some(dim as i64)])),
            ("values", f32_lists(vec![values])),
        ])
        .map_err(|e| ItemError::new("", "", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_ignores_position_scale_and_roll() {
        let lm = [
            [30.0, 40.0],
            [70.0, 40.0],
            [50.0, 60.0],
            [35.0, 80.0],
            [65.0, 80.0],
        ];
        let g = geometry(&lm, [10.0, 10.0, 90.0, 110.0], 0.99);
        // Nose at (0, 0.5), mouth corners at (-0.375, 1) and (0.375, 1) in eye-distance units.
        let want = [0.0, 0.5, -0.375, 1.0, 0.375, 1.0];
        for (a, b) in g[..6].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{g:?}");
        }
        // Mouth width 30 / 40; roll 0; box 100 / 80; eye distance / width 40 / 80.
        assert!((g[14] - 0.75).abs() < 1e-6, "{g:?}");
        assert!(g[15].abs() < 1e-6 && (g[16] - 1.0).abs() < 1e-6);
        assert!((g[17] - 1.25).abs() < 1e-6 && (g[18] - 0.5).abs() < 1e-6);
        // The same face moved, doubled and rolled by 30 degrees: the first 15 values agree.
        let (s, th) = (2.0f64, 30f64.to_radians());
        let moved: Vec<[f64; 2]> = lm
            .iter()
            .map(|p| {
                [
                    s * (th.cos() * p[0] - th.sin() * p[1]) + 100.0,
                    s * (th.sin() * p[0] + th.cos() * p[1]) - 7.0,
                ]
            })
            .collect();
        let moved: [[f64; 2]; 5] = moved.try_into().unwrap();
        let h = geometry(&moved, [0.0, 0.0, 1.0, 1.0], 0.5);
        for k in 0..15 {
            assert!((g[k] - h[k]).abs() < 1e-5, "{k}: {} vs {}", g[k], h[k]);
        }
        assert!((h[15] - 0.5).abs() < 1e-6, "sin of the roll");
    }
}
