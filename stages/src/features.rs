//! `logmel` and `mfcc` (per clip, sharded): spectral features of the `audio` stage's waveform,
//! computed by [`crate::spectral`] with librosa's conventions. Each clip's features are one row:
//! `frames` x `dim` values, row-major, in `values`, so pandas/polars users reshape with
//! `np.asarray(values).reshape(frames, dim)`.

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::audio::f32_lists;
use crate::params::{ParamSpec, ParamType};
use crate::spectral::{PadMode, SpecConfig, Spectral};
use crate::table::{batch, col, f64s, i64s};
use crate::{ItemError, Mode, Params, RunCtx, Stage, StageError};

macro_rules! spectral_params {
    ($($extra:expr),* $(,)?) => {
        &[
            ParamSpec::new("n_fft", ParamType::Int, Some("400"), "FFT size in samples (400 = 25 ms at 16 kHz)"),
            ParamSpec::new("win_length", ParamType::Int, Some("0"), "Hann window length (0: n_fft)"),
            ParamSpec::new("hop_length", ParamType::Int, Some("160"), "hop in samples (160 = 10 ms at 16 kHz)"),
            ParamSpec::new("n_mels", ParamType::Int, Some("64"), "mel bands"),
            ParamSpec::new("fmin", ParamType::Float, Some("0.0"), "lowest mel edge, Hz"),
            ParamSpec::new("fmax", ParamType::Float, Some("0.0"), "highest mel edge, Hz (0: sample_rate / 2)"),
            ParamSpec::new("center", ParamType::Bool, Some("true"), "pad n_fft/2 on both sides, frames centred on hops"),
            ParamSpec::new("pad_mode", ParamType::Enum(&["constant", "reflect"]), Some("\"constant\""), "centre padding: zeros (librosa >= 0.10) or numpy reflect"),
            ParamSpec::new("power", ParamType::Float, Some("2.0"), "2: power spectrogram, 1: magnitude"),
            ParamSpec::new("mel_scale", ParamType::Enum(&["slaney", "htk"]), Some("\"slaney\""), "mel scale formula"),
            ParamSpec::new("top_db", ParamType::Float, Some("80.0"), "clip dB values this far below the clip's maximum (0: off)"),
            ParamSpec::new("amin", ParamType::Float, Some("1e-10"), "log floor: power below this counts as this (librosa's amin)"),
            $($extra,)*
        ]
    };
}

const LOGMEL_PARAMS: &[ParamSpec] = spectral_params!();
const MFCC_PARAMS: &[ParamSpec] = spectral_params!(ParamSpec::new(
    "n_mfcc",
    ParamType::Int,
    Some("20"),
    "cepstral coefficients kept (orthonormal DCT-II)"
));

pub struct LogMel;
pub struct Mfcc;

fn config(p: &Params, sr: u32) -> Result<SpecConfig, StageError> {
    let n_fft = p.i64("n_fft")?;
    let win = p.i64("win_length")?;
    let usize_of = |name: &str, v: i64| {
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| StageError::param(name, format!("{v} must be positive")))
    };
    let fmax = p.f64("fmax")?;
    let top_db = p.f64("top_db")?;
    Ok(SpecConfig {
        sr,
        n_fft: usize_of("n_fft", n_fft)?,
        win_length: if win == 0 {
            usize_of("n_fft", n_fft)?
        } else {
            usize_of("win_length", win)?
        },
        hop_length: usize_of("hop_length", p.i64("hop_length")?)?,
        n_mels: usize_of("n_mels", p.i64("n_mels")?)?,
        fmin: p.f64("fmin")?,
        fmax: (fmax > 0.0).then_some(fmax),
        center: p.bool("center")?,
        pad_mode: if p.str("pad_mode")? == "reflect" {
            PadMode::Reflect
        } else {
            PadMode::Constant
        },
        power: p.f64("power")?,
        htk: p.str("mel_scale")? == "htk",
        slaney_norm: true,
        amin: {
            let a = p.f64("amin")?;
            if a <= 0.0 {
                return Err(StageError::param("amin", format!("{a} must be positive")));
            }
            a
        },
        top_db: (top_db > 0.0).then_some(top_db),
    })
}

/// The waveform one `audio` item stored, and its rate.
fn waveform(ctx: &RunCtx, row: usize) -> Result<(Vec<f32>, u32), ItemError> {
    let fail = |reason: String| ItemError::new("", "audio", reason);
    let t = ctx.shard(0, row).map_err(fail)?;
    let rate = col::<Int64Array>(&t, "sample_rate").map_err(|e| fail(e.to_string()))?;
    let lists = col::<ListArray>(&t, "samples").map_err(|e| fail(e.to_string()))?;
    if t.num_rows() != 1 || rate.is_null(0) {
        return Err(fail("the audio item is not one waveform".into()));
    }
    let v = lists.value(0);
    let v = v
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| fail("samples are not f32".into()))?;
    Ok((v.values().to_vec(), rate.value(0) as u32))
}

fn compute(ctx: &RunCtx, row: usize, n_mfcc: Option<usize>) -> Result<RecordBatch, ItemError> {
    let (y, sr) = waveform(ctx, row)?;
    let cfg = config(ctx.params, sr).map_err(|e| ItemError::new("", "params", e.to_string()))?;
    let hop_s = cfg.hop_length as f64 / f64::from(sr);
    let s = Spectral::new(cfg).map_err(|e| ItemError::new("", "params", e))?;
    let f = match n_mfcc {
        Some(n) => s.mfcc(&y, n),
        None => s.log_mel(&y),
    }
    .map_err(|e| ItemError::new("", "audio", e))?;
    batch(vec![
        ("sample_rate", i64s(vec![Some(i64::from(sr))])),
        ("hop_s", f64s(vec![Some(hop_s)])),
        ("frames", i64s(vec![Some(f.frames as i64)])),
        ("dim", i64s(vec![Some(f.dim as i64)])),
        ("values", f32_lists(vec![f.data])),
    ])
    .map_err(|e| ItemError::new("", "", e.to_string()))
}

const MODE: Mode = Mode::Sharded {
    id_column: "clip_id",
    reads: &["object"],
};

impl Stage for LogMel {
    fn kind(&self) -> &'static str {
        "logmel"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: log-mel spectrogram in dB (librosa conventions) of the `audio` stage's waveform"
    }
    fn params(&self) -> &'static [ParamSpec] {
        LOGMEL_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        compute(ctx, row, None)
    }
}

impl Stage for Mfcc {
    fn kind(&self) -> &'static str {
        "mfcc"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: MFCCs (orthonormal DCT-II of the log-mel, librosa conventions)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        MFCC_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let n = ctx
            .params
            .i64("n_mfcc")
            .map_err(|e| ItemError::new("", "params", e.to_string()))?;
        compute(ctx, row, Some(n.max(0) as usize))
    }
}

/// One item of a feature stage: `frames` x `dim` values, row-major, and the hop between
/// frames in seconds when the producer recorded one.
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
    let t = ctx.shard(input, row).map_err(fail)?;
    let bad = |e: StageError| fail(e.to_string());
    let frames = col::<Int64Array>(&t, "frames").map_err(bad)?;
    let dim = col::<Int64Array>(&t, "dim").map_err(bad)?;
    let lists = col::<ListArray>(&t, "values").map_err(bad)?;
    if t.num_rows() != 1 || t.column_by_name("segment").is_some() {
        if t.num_rows() == 0 {
            return Err(fail("no rows".into()));
        }
        return patches(&t, frames, dim, lists).map_err(fail);
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
    let hop_s = crate::table::f64_col(&t, "hop_s")
        .ok()
        .and_then(|c| crate::table::opt_f64(c, 0));
    Ok(Matrix {
        frames: n,
        dim: d,
        hop_s,
        values: v.values().to_vec(),
    })
}

/// `segment`: cuts each clip's feature sequence into fixed windows of `frames` steps every
/// `hop` steps (MER-SEM-MBT: 960 ms x 64 mel patches = 96 frames at a 10 ms hop).
pub struct Segment;

const SEGMENT_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("frames", ParamType::Int, Some("96"), "steps per segment"),
    ParamSpec::new("hop", ParamType::Int, Some("0"), "steps between segment starts (0: frames, no overlap)"),
    ParamSpec::new(
        "last",
        ParamType::Enum(&["drop", "pad"]),
        Some("\"drop\""),
        "a trailing partial segment: drop it, or zero-pad it (a clip shorter than one segment is always padded)",
    ),
];

impl Stage for Segment {
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
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
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
    ParamSpec::new("steps", ParamType::Int, Some("32"), "output length"),
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

impl Stage for Pad {
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
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
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
