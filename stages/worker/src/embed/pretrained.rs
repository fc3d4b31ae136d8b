//! `embed` (per clip, sharded, batched across clips): a pretrained TorchScript model over one
//! modality of each clip.
//!
//! - vision: the face crops of a `face` stage or the frames of a `decode` stage, resized and
//!   normalised as declared; one model input per image, so a clip gives one vector per image.
//!   Or a `pixels` stage's rows, already preprocessed: a worker built without OpenCV (for a GPU
//!   node) embeds those.
//! - audio: the waveform of an `audio` stage, optionally through a mel front end, or a feature
//!   matrix (`logmel`, `mfcc`); whole, or cut into fixed windows (the model then sees a batch
//!   of windows, as speaker and wav2vec-style encoders are run on long clips).
//! - text: the clip's transcript, tokenized in Rust from the model's tokenizer.json.
//!
//! The model is called as `forward(x)` (vision, audio) or `forward(input_ids, attention_mask
//! [, token_type_ids])` (text, int64) and returns `[B, D]` or `[B, T, D]` (or a tuple whose
//! element `output_index` is that). scripts/models/export.py writes models in this form.
//!
//! Each clip's output is one row in the layout of the feature stages: `frames` x `dim` values,
//! so `pad`/`segment` and the training stages read embeddings and features alike. `pool`
//! reduces the clip's sequence (images, windows or model steps, tokens) to one vector.
//! The model file's and the tokenizer's content hashes are part of the cache key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use tch::{IValue, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use crate::features::matrix::read_matrix;
use crate::features::spectral::{PadMode, SpecConfig, Spectral};
use crate::table::f32_lists;
use crate::table::{batch, col, i64s, str_col};
use crate::torch::ModelCache;
use crate::{resolve, ItemError, Params, RunCtx, Stage, StageError};

#[derive(Default)]
pub struct Embed {
    models: ModelCache,
    tokenizers: Mutex<HashMap<String, Arc<Tokenizer>>>,
}

/// `pixels`: each clip's face crops (or frames) as rows of normalised pixels, `[images x C*H*W]`,
/// with the same preprocessing as `embed`'s vision models: the input of a CNN that a training
/// stage fine-tunes inside its model (MER-SEM-MBT), cached so that training reads no images.
pub struct Pixels;

impl Stage for Pixels {
    fn decl(&self) -> &dyn crate::Kind {
        &stages::embed::Pixels
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let units = vision_units(ctx, row)?;
        let mut values = Vec::new();
        let mut dim = 0;
        for u in &units {
            if let Unit::Dense { data, .. } = u {
                dim = data.len();
                values.extend_from_slice(data);
            }
        }
        crate::table::batch(vec![
            ("frames", crate::table::i64s(vec![Some(units.len() as i64)])),
            ("dim", crate::table::i64s(vec![Some(dim as i64)])),
            ("values", crate::table::f32_lists(vec![values])),
        ])
        .map_err(|e| ItemError::new("", "", e.to_string()))
    }
}

/// One model input (an image, a window, a text) and the clip it belongs to.
enum Unit {
    Dense { shape: Vec<i64>, data: Vec<f32> },
    Tokens { ids: Vec<i64>, types: Vec<i64> },
}

struct Cfg {
    modality: String,
    batch: usize,
    pool: String,
    l2: bool,
    output_index: usize,
    /// Every model input has the same shape (images, windows), so JIT optimisation pays.
    fixed_shapes: bool,
}

/// The content hash the engine computed for a file the stage declared.
fn declared_hash(ctx: &RunCtx, path: &std::path::Path, what: &str) -> Result<String, String> {
    ctx.files
        .get(path)
        .and_then(|f| f.as_ref())
        .map(|f| f.hash.clone())
        .ok_or_else(|| format!("{what} {} is missing", path.display()))
}

fn param_err(e: StageError) -> ItemError {
    ItemError::new("", "params", e.to_string())
}

impl Embed {
    fn tokenizer(&self, ctx: &RunCtx) -> Result<Arc<Tokenizer>, String> {
        let p = ctx.params;
        let path = resolve(ctx.root, p.str("tokenizer").map_err(|e| e.to_string())?);
        let hash = declared_hash(ctx, &path, "tokenizer")?;
        let max_length = p.i64("max_length").map_err(|e| e.to_string())?.max(2) as usize;
        let key = format!("{hash}:{max_length}");
        if let Some(t) = self.tokenizers.lock().unwrap().get(&key) {
            return Ok(t.clone());
        }
        let mut t = Tokenizer::from_file(&path)
            .map_err(|e| format!("{}: not a tokenizer.json: {e}", path.display()))?;
        // Batches are padded here, to their longest text; truncation counts the begin/end
        // tokens, as the tokenizer's own `encode(text, add_special_tokens)` does.
        t.with_padding(None);
        t.with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| e.to_string())?;
        let t = Arc::new(t);
        self.tokenizers.lock().unwrap().insert(key, t.clone());
        Ok(t)
    }

    /// The model inputs of one clip.
    fn units(
        &self,
        ctx: &RunCtx,
        row: usize,
        tok: Option<&Tokenizer>,
    ) -> Result<Vec<Unit>, ItemError> {
        match ctx.params.str("modality").map_err(param_err)? {
            "vision" => vision_units(ctx, row),
            "audio" => audio_units(ctx, row),
            _ => text_units(ctx, row, tok.expect("tokenizer loaded for text")),
        }
    }
}

/// What a vision model's input is: `[channels, height, width]` after the declared resize,
/// channel order and normalisation. A `pixels` input was preprocessed by its own stage: only
/// its shape is checked against this.
#[cfg_attr(not(feature = "media"), allow(dead_code))]
struct ImageSpec {
    oh: i32,
    ow: i32,
    channels: String,
    nc: usize,
    mean: Vec<f64>,
    std: Vec<f64>,
    scale: f32,
    interpolation: String,
}

fn image_spec(p: &Params) -> Result<ImageSpec, ItemError> {
    let size = p.f64_list("image_size").map_err(param_err)?;
    let (oh, ow) = match size[..] {
        [h, w] if h >= 1.0 && w >= 1.0 => (h as i32, w as i32),
        _ => {
            return Err(ItemError::new(
                "",
                "params",
                "image_size needs [height, width]",
            ))
        }
    };
    let channels = p.str("channels").map_err(param_err)?.to_string();
    let nc = if channels == "gray" { 1 } else { 3 };
    let mean = p.f64_list("mean").map_err(param_err)?;
    let std = p.f64_list("std").map_err(param_err)?;
    if mean.len() != nc || std.len() != nc || std.contains(&0.0) {
        return Err(ItemError::new(
            "",
            "params",
            format!("mean and std need {nc} values for {channels} (std non-zero)"),
        ));
    }
    Ok(ImageSpec {
        oh,
        ow,
        channels,
        nc,
        mean,
        std,
        scale: p.f64("scale").map_err(param_err)? as f32,
        interpolation: p.str("interpolation").map_err(param_err)?.to_string(),
    })
}

fn vision_units(ctx: &RunCtx, row: usize) -> Result<Vec<Unit>, ItemError> {
    let spec = image_spec(ctx.params)?;
    let fail = |reason: String| ItemError::new("", "images", reason);
    let t = ctx.shard(0, row).map_err(|e| fail(e.to_string()))?;
    if t.column_by_name("values").is_some() {
        return pixel_units(ctx, row, &spec);
    }
    images::units(&t, &spec)
}

/// A `pixels` stage's rows: each image's `C*H*W` values, preprocessed as `spec` says.
fn pixel_units(ctx: &RunCtx, row: usize, spec: &ImageSpec) -> Result<Vec<Unit>, ItemError> {
    let m = read_matrix(ctx, row)?;
    let want = spec.nc * (spec.oh * spec.ow) as usize;
    if m.dim != want {
        return Err(ItemError::new(
            "",
            "images",
            format!(
                "the pixels input has {} values per image; image_size {}x{} with {} channel(s) \
                 needs {want} (give both stages the same image params)",
                m.dim, spec.oh, spec.ow, spec.nc
            ),
        ));
    }
    Ok(m.values
        .chunks_exact(want.max(1))
        .map(|px| Unit::Dense {
            shape: vec![spec.nc as i64, spec.oh as i64, spec.ow as i64],
            data: px.to_vec(),
        })
        .collect())
}

/// Face crops and frames into model inputs, with OpenCV.
#[cfg(feature = "media")]
mod images {
    use arrow::array::{Array, BinaryArray, Int64Array};
    use arrow::record_batch::RecordBatch;
    use opencv::core::{Mat, MatTraitConst, Size, Vec3b, CV_32F};
    use opencv::imgproc;
    use opencv::prelude::MatTraitConstManual;

    use super::{ImageSpec, Unit};
    use crate::table::col;
    use crate::ItemError;

    pub(super) fn units(t: &RecordBatch, spec: &ImageSpec) -> Result<Vec<Unit>, ItemError> {
        let fail = |reason: String| ItemError::new("", "images", reason);
        // A face stage's crops, or a decode stage's frames.
        let images: Vec<(&[u8], usize, usize)> = if let Ok(crops) = col::<BinaryArray>(t, "crop") {
            let side = col::<Int64Array>(t, "crop_size").map_err(|e| fail(e.to_string()))?;
            (0..t.num_rows())
                .filter(|&i| !crops.is_null(i))
                .map(|i| {
                    (
                        crops.value(i),
                        side.value(i) as usize,
                        side.value(i) as usize,
                    )
                })
                .collect()
        } else {
            let rgb = col::<BinaryArray>(t, "rgb").map_err(|_| {
                fail("the input has neither face crops (`crop`) nor frames (`rgb`)".into())
            })?;
            let w = col::<Int64Array>(t, "width").map_err(|e| fail(e.to_string()))?;
            let h = col::<Int64Array>(t, "height").map_err(|e| fail(e.to_string()))?;
            (0..t.num_rows())
                .map(|i| (rgb.value(i), w.value(i) as usize, h.value(i) as usize))
                .collect()
        };
        if images.is_empty() {
            return Err(fail(
                "no images (every frame of the clip was without a face)".into(),
            ));
        }
        images
            .into_iter()
            .map(|(px, w, h)| image(px, (w, h), spec).map_err(&fail))
            .collect()
    }

    fn image(px: &[u8], (w, h): (usize, usize), spec: &ImageSpec) -> Result<Unit, String> {
        let cv = |e: opencv::Error| format!("preprocessing: {e}");
        let (oh, ow, nc) = (spec.oh, spec.ow, spec.nc);
        if px.len() != w * h * 3 {
            return Err(format!("{} bytes for a {w}x{h} RGB image", px.len()));
        }
        let img = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, px).map_err(cv)?;
        let mut conv = Mat::default();
        match spec.channels.as_str() {
            "gray" => {
                imgproc::cvt_color_def(&img, &mut conv, imgproc::COLOR_RGB2GRAY).map_err(cv)?
            }
            "bgr" => imgproc::cvt_color_def(&img, &mut conv, imgproc::COLOR_RGB2BGR).map_err(cv)?,
            _ => conv = img.try_clone().map_err(cv)?,
        }
        let interp = match spec.interpolation.as_str() {
            "linear" => imgproc::INTER_LINEAR,
            "cubic" => imgproc::INTER_CUBIC,
            _ => imgproc::INTER_AREA,
        };
        let sized = if (w as i32, h as i32) == (ow, oh) {
            conv
        } else {
            let mut r = Mat::default();
            imgproc::resize(&conv, &mut r, Size::new(ow, oh), 0.0, 0.0, interp).map_err(cv)?;
            r
        };
        let mut f = Mat::default();
        sized.convert_to(&mut f, CV_32F, 1.0, 0.0).map_err(cv)?;
        // One channel view of the interleaved pixels: data_typed checks the element type.
        let flat = f.reshape(1, 0).map_err(cv)?;
        let hwc: &[f32] = flat.data_typed::<f32>().map_err(cv)?;
        let plane = (oh * ow) as usize;
        let mut chw = vec![0f32; plane * nc];
        for (i, px) in hwc.chunks_exact(nc).enumerate() {
            for c in 0..nc {
                chw[c * plane + i] =
                    (px[c] * spec.scale - spec.mean[c] as f32) / spec.std[c] as f32;
            }
        }
        Ok(Unit::Dense {
            shape: vec![nc as i64, oh as i64, ow as i64],
            data: chw,
        })
    }
}

/// A worker built without OpenCV embeds only what a `pixels` stage preprocessed.
#[cfg(not(feature = "media"))]
mod images {
    use arrow::record_batch::RecordBatch;

    use super::{ImageSpec, Unit};
    use crate::ItemError;

    pub(super) fn units(_: &RecordBatch, _: &ImageSpec) -> Result<Vec<Unit>, ItemError> {
        Err(ItemError::new(
            "",
            "images",
            "this worker was built without OpenCV (no `media` feature): give the embed stage a \
             `pixels` stage's output instead of face crops or frames",
        ))
    }
}

/// Window starts over `n` steps: every `hop` while a window still reaches new steps, the last
/// one dropped when the clip covers less than `min_coverage` of it (unless it is the only one).
/// `covered(start)` says how much of the window at `start` the clip fills.
pub fn window_starts(
    n: usize,
    window: usize,
    hop: usize,
    min_coverage: f64,
    covered: impl Fn(usize) -> f64,
) -> Vec<usize> {
    let steps = (n + hop + 1).saturating_sub(window).max(1);
    let mut starts: Vec<usize> = (0..steps).step_by(hop).collect();
    let last = covered(*starts.last().unwrap());
    if starts.len() > 1 && (last < min_coverage || last <= 0.0) {
        starts.pop();
    }
    starts
}

fn audio_units(ctx: &RunCtx, row: usize) -> Result<Vec<Unit>, ItemError> {
    let p = ctx.params;
    let fail = |reason: String| ItemError::new("", "audio", reason);
    let window = p.i64("window").map_err(param_err)?.max(0) as usize;
    let hop = match p.i64("hop").map_err(param_err)?.max(0) as usize {
        0 => window,
        h => h,
    };
    let min_cov = p.f64("min_coverage").map_err(param_err)?;
    let t = ctx.shard(0, row).map_err(|e| fail(e.to_string()))?;
    // `flat`: raw samples, one value per step, fed as [B, n] rather than [B, n, 1].
    let cut = |values: &[f32], n: usize, dim: usize, starts: &[usize], flat: bool| -> Vec<Unit> {
        starts
            .iter()
            .map(|&s| {
                let mut v = vec![0f32; window * dim];
                let take = window.min(n.saturating_sub(s));
                v[..take * dim].copy_from_slice(&values[s * dim..(s + take) * dim]);
                let shape = if flat {
                    vec![window as i64]
                } else {
                    vec![window as i64, dim as i64]
                };
                Unit::Dense { shape, data: v }
            })
            .collect()
    };
    if t.column_by_name("samples").is_none() {
        // A feature matrix: windows in frames, zero-padded at the end.
        let m = read_matrix(ctx, row)?;
        if window == 0 {
            return Ok(vec![Unit::Dense {
                shape: vec![m.frames as i64, m.dim as i64],
                data: m.values,
            }]);
        }
        let starts = window_starts(m.frames, window, hop, min_cov, |s| {
            (m.frames - s) as f64 / window as f64
        });
        return Ok(cut(&m.values, m.frames, m.dim, &starts, false));
    }
    let rate = col::<Int64Array>(&t, "sample_rate").map_err(|e| fail(e.to_string()))?;
    let lists = col::<ListArray>(&t, "samples").map_err(|e| fail(e.to_string()))?;
    if t.num_rows() != 1 || rate.is_null(0) {
        return Err(fail("the audio item is not one waveform".into()));
    }
    let wav = lists.value(0);
    let mut wav = wav
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| fail("samples are not f32".into()))?
        .values()
        .to_vec();
    let sr = rate.value(0) as u32;
    let frontend = p.str("frontend").map_err(param_err)?;
    if frontend == "none" {
        if window == 0 {
            return Ok(vec![Unit::Dense {
                shape: vec![wav.len() as i64],
                data: wav,
            }]);
        }
        let n = wav.len();
        let starts = window_starts(n, window, hop, min_cov, |s| (n - s) as f64 / window as f64);
        return Ok(cut(&wav, n, 1, &starts, true));
    }
    let spec = |name: &str| -> Result<usize, ItemError> {
        usize::try_from(p.i64(name).map_err(param_err)?)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| ItemError::new("", "params", format!("{name} must be positive")))
    };
    let cfg = SpecConfig {
        n_fft: spec("n_fft")?,
        win_length: spec("n_fft")?,
        hop_length: spec("hop_length")?,
        n_mels: spec("n_mels")?,
        pad_mode: PadMode::Constant,
        ..SpecConfig::librosa(sr)
    };
    let hop_len = cfg.hop_length;
    let s = Spectral::new(cfg).map_err(|e| ItemError::new("", "params", e.to_string()))?;
    let n_samples = wav.len();
    let starts = if window == 0 {
        vec![0]
    } else {
        // Windows in frames, their coverage in samples; the waveform is zero-padded to the
        // last window before the front end runs, so its frames see the real signal's tail.
        let starts = window_starts(s.n_frames(n_samples), window, hop, min_cov, |st| {
            (n_samples as f64 - (st * hop_len) as f64) / (window * hop_len) as f64
        });
        let need = (starts.last().unwrap() + window) * hop_len;
        if need > wav.len() {
            wav.resize(need, 0.0);
        }
        starts
    };
    let (frames, mel) = s.mel_spectrogram(&wav).map_err(|e| fail(e.to_string()))?;
    let mel: Vec<f32> = if frontend == "logmel" {
        s.to_db(mel).into_iter().map(|v| v as f32).collect()
    } else {
        mel.into_iter().map(|v| v as f32).collect()
    };
    let dim = s.config().n_mels;
    if window == 0 {
        return Ok(vec![Unit::Dense {
            shape: vec![frames as i64, dim as i64],
            data: mel,
        }]);
    }
    Ok(cut(&mel, frames, dim, &starts, false))
}

fn text_units(ctx: &RunCtx, row: usize, tok: &Tokenizer) -> Result<Vec<Unit>, ItemError> {
    let p = ctx.params;
    let column = p.str("column").map_err(param_err)?;
    let fail = |reason: String| ItemError::new("", column, reason);
    let texts = str_col(&ctx.inputs[0], column).map_err(|e| fail(e.to_string()))?;
    if texts.is_null(row) || texts.value(row).trim().is_empty() {
        return Err(fail("empty transcript".into()));
    }
    let special = p.bool("special_tokens").map_err(param_err)?;
    let enc = tok
        .encode(texts.value(row), special)
        .map_err(|e| fail(format!("tokenizing: {e}")))?;
    let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
    let types: Vec<i64> = enc.get_type_ids().iter().map(|&i| i64::from(i)).collect();
    Ok(vec![Unit::Tokens { ids, types }])
}

/// Runs the model over `units` in batches; returns each unit's output as (steps, dim, values).
fn forward(
    model: &crate::torch::Loaded,
    units: &[&Unit],
    cfg: &Cfg,
    (text_inputs, on_batch): (&[String], &dyn Fn(usize)),
) -> Result<Vec<(usize, usize, Vec<f32>)>, String> {
    // Shortest first (stable), so that texts of like length share a batch and pad little, and
    // inputs of one shape are batched together; outputs go back to their units' places.
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&k| match units[k] {
        Unit::Dense { shape, .. } => shape.clone(),
        Unit::Tokens { ids, .. } => vec![ids.len() as i64],
    });
    let sorted: Vec<&Unit> = order.iter().map(|&k| units[k]).collect();
    let units = &sorted[..];
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        // A batch: up to `batch` units of one shape (text: any lengths, padded).
        let mut j = i + 1;
        while j < units.len() && j - i < cfg.batch && same_shape(units[i], units[j]) {
            j += 1;
        }
        let chunk = &units[i..j];
        let (inputs, lens) = stack(chunk, text_inputs, model.device)?;
        let y = tch::no_grad(|| {
            // TorchScript's executor profiles the first calls for each input shape and then
            // optimises (fusing conv and batch norm, say). That pays where every batch has one
            // shape (images, fixed windows) and costs more than it saves where shapes vary
            // (texts padded per batch, whole clips). Per thread, so set where the forward runs.
            tch::jit::set_graph_executor_optimize(cfg.fixed_shapes);
            let _torch = crate::torch::inference();
            let m = model.module.lock().unwrap();
            m.forward_is(&inputs)
        })
        .map_err(|e| format!("model forward failed: {e}"))?;
        let y = pick(y, cfg.output_index)?
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let size = y.size();
        let (steps, dim) = match size[..] {
            [b, d] if b == chunk.len() as i64 => (1usize, d as usize),
            [b, t, d] if b == chunk.len() as i64 => (t as usize, d as usize),
            _ => {
                return Err(format!(
                "the model returned shape {size:?} for a batch of {}; expected [B, D] or [B, T, D]",
                chunk.len()
            ))
            }
        };
        let flat: Vec<f32> = Vec::<f32>::try_from(y.view([-1])).map_err(|e| e.to_string())?;
        for (k, len) in lens.into_iter().enumerate() {
            let rows = if steps == 1 {
                1
            } else {
                len.unwrap_or(steps).min(steps)
            };
            let start = k * steps * dim;
            out.push((rows, dim, flat[start..start + rows * dim].to_vec()));
        }
        i = j;
        on_batch(i);
    }
    let mut placed: Vec<Option<(usize, usize, Vec<f32>)>> = vec![None; out.len()];
    for (k, o) in order.into_iter().zip(out) {
        placed[k] = Some(o);
    }
    Ok(placed
        .into_iter()
        .map(|o| o.expect("every unit ran"))
        .collect())
}

fn same_shape(a: &Unit, b: &Unit) -> bool {
    match (a, b) {
        (Unit::Dense { shape: x, .. }, Unit::Dense { shape: y, .. }) => x == y,
        (Unit::Tokens { .. }, Unit::Tokens { .. }) => true,
        _ => false,
    }
}

/// The batch's input tensors, and each unit's valid length (text: its tokens).
fn stack(
    chunk: &[&Unit],
    text_inputs: &[String],
    device: tch::Device,
) -> Result<(Vec<IValue>, Vec<Option<usize>>), String> {
    match chunk[0] {
        Unit::Dense { shape, .. } => {
            let mut data = Vec::with_capacity(chunk.len() * chunk_len(shape));
            for u in chunk {
                if let Unit::Dense { data: d, .. } = u {
                    data.extend_from_slice(d);
                }
            }
            let mut dims = vec![chunk.len() as i64];
            dims.extend(shape);
            let x = Tensor::from_slice(&data)
                .view(dims.as_slice())
                .to_device(device);
            Ok((vec![IValue::Tensor(x)], vec![None; chunk.len()]))
        }
        Unit::Tokens { .. } => {
            let longest = chunk
                .iter()
                .map(|u| match u {
                    Unit::Tokens { ids, .. } => ids.len(),
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            let b = chunk.len();
            let (mut ids, mut mask, mut types) = (
                vec![0i64; b * longest],
                vec![0i64; b * longest],
                vec![0i64; b * longest],
            );
            let mut lens = Vec::with_capacity(b);
            for (k, u) in chunk.iter().enumerate() {
                if let Unit::Tokens { ids: i, types: t } = u {
                    ids[k * longest..k * longest + i.len()].copy_from_slice(i);
                    types[k * longest..k * longest + t.len()].copy_from_slice(t);
                    mask[k * longest..k * longest + i.len()].fill(1);
                    lens.push(Some(i.len()));
                }
            }
            let t = |v: Vec<i64>| {
                IValue::Tensor(
                    Tensor::from_slice(&v)
                        .view([b as i64, longest as i64])
                        .to_device(device),
                )
            };
            let (mut ids, mut mask, mut types) = (Some(ids), Some(mask), Some(types));
            let inputs = text_inputs
                .iter()
                .map(|name| match name.as_str() {
                    "input_ids" => ids.take().map(t).ok_or("input_ids named twice"),
                    "attention_mask" => mask.take().map(t).ok_or("attention_mask named twice"),
                    "token_type_ids" => types.take().map(t).ok_or("token_type_ids named twice"),
                    _ => Err("text_inputs may name input_ids, attention_mask, token_type_ids"),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((inputs, lens))
        }
    }
}

fn chunk_len(shape: &[i64]) -> usize {
    shape.iter().product::<i64>() as usize
}

fn pick(y: IValue, index: usize) -> Result<Tensor, String> {
    match y {
        IValue::Tensor(t) => Ok(t),
        IValue::Tuple(v) | IValue::GenericList(v) => match v.into_iter().nth(index) {
            Some(IValue::Tensor(t)) => Ok(t),
            _ => Err(format!("output element {index} is not a tensor")),
        },
        other => Err(format!(
            "the model returned {other:?}, not a tensor or tuple"
        )),
    }
}

/// Pools one clip's sequence (steps x dim, row-major) and normalises it.
pub fn finish(
    steps: usize,
    dim: usize,
    values: Vec<f32>,
    pool: &str,
    l2: bool,
) -> (usize, Vec<f32>) {
    let (rows, mut v) = match pool {
        "mean" => {
            let mut m = vec![0f64; dim];
            for r in values.chunks_exact(dim) {
                for (a, b) in m.iter_mut().zip(r) {
                    *a += f64::from(*b);
                }
            }
            (
                1,
                m.into_iter().map(|a| (a / steps as f64) as f32).collect(),
            )
        }
        "max" => {
            let mut m = vec![f32::NEG_INFINITY; dim];
            for r in values.chunks_exact(dim) {
                for (a, b) in m.iter_mut().zip(r) {
                    *a = a.max(*b);
                }
            }
            (1, m)
        }
        "cls" => (1, values[..dim].to_vec()),
        _ => (steps, values),
    };
    if l2 {
        for r in v.chunks_exact_mut(dim) {
            let n = r.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            if n > 0.0 {
                r.iter_mut().for_each(|a| *a = (f64::from(*a) / n) as f32);
            }
        }
    }
    (rows, v)
}

impl Stage for Embed {
    fn decl(&self) -> &dyn crate::Kind {
        &stages::embed::Embed
    }
    fn batch_items(&self, params: &Params) -> Option<usize> {
        // Several model batches' worth of clips per call, so sorting by length has a choice.
        params.i64("batch_size").ok().map(|b| 4 * b.max(1) as usize)
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        self.run_batch(ctx, &[row]).pop().expect("one result")
    }
    fn run_batch(&self, ctx: &RunCtx, rows: &[usize]) -> Vec<Result<RecordBatch, ItemError>> {
        let all = |e: ItemError| rows.iter().map(|_| Err(e.clone())).collect();
        let p = ctx.params;
        let cfg = match (|| -> Result<Cfg, StageError> {
            Ok(Cfg {
                modality: p.str("modality")?.to_string(),
                batch: p.i64("batch_size")?.max(1) as usize,
                pool: p.str("pool")?.to_string(),
                l2: p.str("normalize")? == "l2",
                output_index: p.i64("output_index")?.max(0) as usize,
                fixed_shapes: match p.str("modality")? {
                    "vision" => true,
                    "audio" => p.i64("window")? > 0,
                    _ => false,
                },
            })
        })() {
            Ok(c) => c,
            Err(e) => return all(param_err(e)),
        };
        let text_inputs = p.str_list("text_inputs").unwrap_or_default();
        let model = (|| -> Result<_, String> {
            let path = stages::embed::Embed::model_path(p, ctx.root).map_err(|e| e.to_string())?;
            let hash = declared_hash(ctx, &path, "model")?;
            let dev = crate::torch::device(p.str("device").map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            self.models
                .get(&path, &hash, dev)
                .map_err(|e| e.to_string())
        })();
        let model = match model {
            Ok(m) => m,
            Err(e) => return all(ItemError::new("", "model", e)),
        };
        let tok = if cfg.modality == "text" {
            match self.tokenizer(ctx) {
                Ok(t) => Some(t),
                Err(e) => return all(ItemError::new("", "tokenizer", e)),
            }
        } else {
            None
        };
        let per_clip: Vec<Result<Vec<Unit>, ItemError>> = rows
            .par_iter()
            .map(|&r| self.units(ctx, r, tok.as_deref()))
            .collect();
        let flat: Vec<&Unit> = per_clip.iter().flatten().flatten().collect();
        // Progress in clips while the model runs: units done, scaled to this call's clips.
        let on_batch = |units_done: usize| {
            ctx.progress
                .batch(units_done * rows.len() / flat.len().max(1));
        };
        let outs = match forward(&model, &flat, &cfg, (&text_inputs, &on_batch)) {
            Ok(o) => o,
            Err(e) => return all(ItemError::new("", "model", e)),
        };
        let mut outs = outs.into_iter();
        per_clip
            .into_iter()
            .map(|units| {
                let units = units?;
                let mut dim = 0;
                let mut steps = 0;
                let mut values = Vec::new();
                for _ in 0..units.len() {
                    let (s, d, v) = outs.next().expect("one output per unit");
                    dim = d;
                    steps += s;
                    values.extend(v);
                }
                let (frames, v) = finish(steps, dim, values, &cfg.pool, cfg.l2);
                batch(vec![
                    ("frames", i64s(vec![Some(frames as i64)])),
                    ("dim", i64s(vec![Some(dim as i64)])),
                    ("values", f32_lists(vec![v])),
                ])
                .map_err(|e| ItemError::new("", "", e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_coverage_rule() {
        // 400 steps, windows of 160 every 77: starts 0, 77, 154, 231, 308; the last covers
        // 92/160 = 0.575 of its window, under 0.75, so it is dropped.
        let n = 400;
        let s = window_starts(n, 160, 77, 0.75, |s| (n - s) as f64 / 160.0);
        assert_eq!(s, vec![0, 77, 154, 231]);
        // Shorter than one window: always one, padded.
        assert_eq!(window_starts(50, 160, 77, 0.75, |_| 0.3), vec![0]);
        assert_eq!(window_starts(160, 160, 160, 0.0, |_| 0.0), vec![0]);
    }

    #[test]
    fn pooling_and_norm() {
        let v = vec![1.0, 2.0, 3.0, 6.0];
        assert_eq!(finish(2, 2, v.clone(), "mean", false), (1, vec![2.0, 4.0]));
        assert_eq!(finish(2, 2, v.clone(), "max", false), (1, vec![3.0, 6.0]));
        assert_eq!(finish(2, 2, v.clone(), "cls", false), (1, vec![1.0, 2.0]));
        let (n, l2) = finish(2, 2, v, "none", true);
        assert_eq!(n, 2);
        assert!((l2[2] - 3.0 / 45f32.sqrt()).abs() < 1e-6);
    }
}
