//! `face` (per clip, sharded): MTCNN on every frame the `decode` stage kept, then one crop per
//! face: the box grown by `margin` and resized (facenet-pytorch's `extract_face`), or, with
//! `align`, a similarity warp of the five landmarks onto the standard 112x112 template scaled
//! to `crop_size`.
//!
//! Output: one row per kept face (or per faceless frame with `no_face: keep`): the frame, its
//! time, the box, probability, landmarks and the crop as packed RGB24 bytes.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{BinaryArray, BinaryBuilder, Int64Array};
use arrow::record_batch::RecordBatch;
use opencv::core::{Mat, MatTraitConst, Rect, Scalar, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::MatTraitConstManual;

use crate::media::mtcnn::{self, Face};
use crate::table::f32_lists;
use crate::table::{batch, col, f64_col, f64s, i64s};
use crate::{resolve, ItemError, Kind, RunCtx, Stage, StageError};

pub struct FaceCrop;

/// ArcFace's 112x112 five-point template (eyes, nose, mouth corners).
const TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Least-squares similarity transform (rotation, uniform scale, shift) taking `src` to `dst`:
/// the 2x3 matrix [[a, -b, tx], [b, a, ty]].
pub fn similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> [[f64; 3]; 2] {
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        let (x, y) = p.iter().fold((0.0, 0.0), |a, q| (a.0 + q[0], a.1 + q[1]));
        [x / n, y / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut a, mut b, mut norm) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (px, py) = (p[0] - ms[0], p[1] - ms[1]);
        let (qx, qy) = (q[0] - md[0], q[1] - md[1]);
        a += px * qx + py * qy;
        b += px * qy - py * qx;
        norm += px * px + py * py;
    }
    let (a, b) = if norm > 0.0 {
        (a / norm, b / norm)
    } else {
        (1.0, 0.0)
    };
    [
        [a, -b, md[0] - (a * ms[0] - b * ms[1])],
        [b, a, md[1] - (b * ms[0] + a * ms[1])],
    ]
}

fn crop_face(img: &Mat, f: &Face, size: i32, margin: i32, align: bool) -> opencv::Result<Vec<u8>> {
    let mut out = Mat::default();
    if align {
        let s = f64::from(size) / 112.0;
        let dst: Vec<[f64; 2]> = TEMPLATE.iter().map(|p| [p[0] * s, p[1] * s]).collect();
        let m = similarity(&f.landmarks, &dst);
        let m = Mat::from_slice_2d(&[m[0], m[1]])?;
        imgproc::warp_affine(
            img,
            &mut out,
            &m,
            Size::new(size, size),
            imgproc::INTER_LINEAR,
            opencv::core::BORDER_CONSTANT,
            Scalar::all(0.0),
        )?;
    } else {
        let (w, h) = (img.cols(), img.rows());
        let b = f.bbox;
        let denom = f64::from((size - margin).max(1));
        let mx = f64::from(margin) * (b[2] - b[0]) / denom;
        let my = f64::from(margin) * (b[3] - b[1]) / denom;
        let x1 = ((b[0] - mx / 2.0).max(0.0) as i32).min(w - 1);
        let y1 = ((b[1] - my / 2.0).max(0.0) as i32).min(h - 1);
        let x2 = ((b[2] + mx / 2.0).min(f64::from(w)) as i32).max(x1 + 1);
        let y2 = ((b[3] + my / 2.0).min(f64::from(h)) as i32).max(y1 + 1);
        let roi = Mat::roi(img, Rect::new(x1, y1, x2 - x1, y2 - y1))?;
        out = mtcnn::resize_area(&roi, size, size)?;
    }
    Ok(out.data_bytes()?.to_vec())
}

struct Row {
    frame: i64,
    pts: f64,
    face: Option<(usize, Face, Vec<u8>)>,
}

impl FaceCrop {
    fn models(params: &crate::Params, root: &std::path::Path) -> Result<PathBuf, StageError> {
        Ok(resolve(root, params.str("models")?))
    }
}

impl Stage for FaceCrop {
    fn decl(&self) -> &dyn Kind {
        &stages::media::FaceCrop
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let fail = |field: &str, reason: String| ItemError::new("", field, reason);
        let p = |e: StageError| fail("params", e.to_string());
        let dir = Self::models(ctx.params, ctx.root).map_err(p)?;
        let th = ctx.params.f64_list("thresholds").map_err(p)?;
        if th.len() != 3 {
            return Err(fail("params", "thresholds needs 3 values".into()));
        }
        let mp = mtcnn::Params {
            min_face_size: ctx.params.i64("min_face_size").map_err(p)?.max(1) as f64,
            scale_factor: ctx.params.f64("scale_factor").map_err(p)?,
            thresholds: [th[0], th[1], th[2]],
        };
        if !(0.1..0.95).contains(&mp.scale_factor) {
            return Err(fail(
                "params",
                format!("scale_factor {} must be in [0.1, 0.95)", mp.scale_factor),
            ));
        }
        let size = ctx.params.i64("crop_size").map_err(p)?;
        if !(8..=1024).contains(&size) {
            return Err(fail(
                "params",
                format!("crop_size {size} must be in 8..=1024"),
            ));
        }
        let margin = ctx.params.i64("margin").map_err(p)?.clamp(0, size - 1) as i32;
        let align = ctx.params.bool("align").map_err(p)?;
        let select = ctx.params.str("select").map_err(p)?;
        let no_face = ctx.params.str("no_face").map_err(p)?;

        let frames = ctx
            .shard(0, row)
            .map_err(|e| fail("frames", e.to_string()))?;
        let bad = |e: StageError| fail("frames", e.to_string());
        let num = col::<Int64Array>(&frames, "frame").map_err(bad)?;
        let pts = f64_col(&frames, "pts_s").map_err(bad)?;
        let width = col::<Int64Array>(&frames, "width").map_err(bad)?;
        let height = col::<Int64Array>(&frames, "height").map_err(bad)?;
        let rgb = col::<BinaryArray>(&frames, "rgb").map_err(bad)?;
        let mut rows = Vec::new();
        let mut found = 0;
        for i in 0..frames.num_rows() {
            let (w, h) = (width.value(i) as usize, height.value(i) as usize);
            let px = rgb.value(i);
            let mut faces =
                mtcnn::detect(px, w, h, &dir, &mp).map_err(|e| fail("frames", e.to_string()))?;
            let area = |f: &Face| (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]);
            match select {
                "largest" => {
                    faces.sort_by(|a, b| area(b).total_cmp(&area(a)));
                    faces.truncate(1);
                }
                "most_confident" => {
                    faces.sort_by(|a, b| b.prob.total_cmp(&a.prob));
                    faces.truncate(1);
                }
                _ => {}
            }
            if faces.is_empty() {
                match no_face {
                    "keep" => rows.push(Row {
                        frame: num.value(i),
                        pts: pts.value(i),
                        face: None,
                    }),
                    "fail" => {
                        return Err(fail(
                            "frames",
                            format!(
                                "no face in frame {} at {:.2} s (no_face: fail)",
                                num.value(i),
                                pts.value(i)
                            ),
                        ))
                    }
                    _ => {}
                }
                continue;
            }
            let img = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, px)
                .and_then(|m| m.try_clone())
                .map_err(|e| fail("frames", e.to_string()))?;
            for (k, f) in faces.into_iter().enumerate() {
                let crop = crop_face(&img, &f, size as i32, margin, align)
                    .map_err(|e| fail("frames", format!("cropping: {e}")))?;
                found += 1;
                rows.push(Row {
                    frame: num.value(i),
                    pts: pts.value(i),
                    face: Some((k, f, crop)),
                });
            }
        }
        if found == 0 && no_face != "keep" {
            return Err(fail(
                "frames",
                format!("no face in any of the {} frames", frames.num_rows()),
            ));
        }
        faces_table(&rows, size).map_err(|e| fail("", e.to_string()))
    }
}

/// One row per kept face (or per faceless frame with `no_face: keep`).
fn faces_table(rows: &[Row], size: i64) -> Result<RecordBatch, StageError> {
    let g = |f: fn(&(usize, Face, Vec<u8>)) -> f64| -> Vec<Option<f64>> {
        rows.iter().map(|r| r.face.as_ref().map(f)).collect()
    };
    let mut crops = BinaryBuilder::new();
    for r in rows {
        match &r.face {
            Some((_, _, c)) => crops.append_value(c),
            None => crops.append_null(),
        }
    }
    let landmarks: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| {
            r.face.as_ref().map_or_else(Vec::new, |(_, f, _)| {
                f.landmarks
                    .iter()
                    .flat_map(|p| [p[0] as f32, p[1] as f32])
                    .collect()
            })
        })
        .collect();
    batch(vec![
        ("frame", i64s(rows.iter().map(|r| Some(r.frame)).collect())),
        ("pts_s", f64s(rows.iter().map(|r| Some(r.pts)).collect())),
        (
            "face",
            i64s(
                rows.iter()
                    .map(|r| r.face.as_ref().map(|f| f.0 as i64))
                    .collect(),
            ),
        ),
        ("prob", f64s(g(|f| f.1.prob))),
        ("x1", f64s(g(|f| f.1.bbox[0]))),
        ("y1", f64s(g(|f| f.1.bbox[1]))),
        ("x2", f64s(g(|f| f.1.bbox[2]))),
        ("y2", f64s(g(|f| f.1.bbox[3]))),
        ("landmarks", f32_lists(landmarks)),
        ("crop_size", i64s(vec![Some(size); rows.len()])),
        ("crop", Arc::new(crops.finish())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let (s, th, tx, ty) = (1.7f64, 0.3f64, 12.0, -4.0);
        let src: Vec<[f64; 2]> = TEMPLATE.to_vec();
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| {
                [
                    s * (th.cos() * p[0] - th.sin() * p[1]) + tx,
                    s * (th.sin() * p[0] + th.cos() * p[1]) + ty,
                ]
            })
            .collect();
        let m = similarity(&src, &dst);
        assert!((m[0][0] - s * th.cos()).abs() < 1e-9);
        assert!((m[1][0] - s * th.sin()).abs() < 1e-9);
        assert!((m[0][2] - tx).abs() < 1e-9 && (m[1][2] - ty).abs() < 1e-9);
    }
}
