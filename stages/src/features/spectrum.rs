//! `logmel` and `mfcc` (per clip, sharded): spectral features of the `audio` stage's waveform,
//! computed by [`crate::features::spectral`] with librosa's conventions. Each clip's features are one row:
//! `frames` x `dim` values, row-major, in `values`, so pandas/polars users reshape with
//! `np.asarray(values).reshape(frames, dim)`.

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::features::spectral::{PadMode, SpecConfig, Spectral};
use crate::params::{ParamSpec, ParamType};
use crate::table::f32_lists;
use crate::table::{batch, col, f64s, i64s};
use crate::{ItemError, Kind, Mode, Params, RunCtx, Stage, StageError};

macro_rules! spectral_params {
    ($($extra:expr),* $(,)?) => {
        &[
            ParamSpec::new("n_fft", ParamType::Int, Some("400"), "FFT size in samples (400 = 25 ms at 16 kHz)").min(1.0),
            ParamSpec::new("win_length", ParamType::Int, Some("0"), "Hann window length (0: n_fft)"),
            ParamSpec::new("hop_length", ParamType::Int, Some("160"), "hop in samples (160 = 10 ms at 16 kHz)").min(1.0),
            ParamSpec::new("n_mels", ParamType::Int, Some("64"), "mel bands").min(1.0),
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
)
.min(1.0));

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
    let t = ctx.shard(0, row).map_err(|e| fail(e.to_string()))?;
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
    let s = Spectral::new(cfg).map_err(|e| ItemError::new("", "params", e.to_string()))?;
    let f = match n_mfcc {
        Some(n) => s.mfcc(&y, n),
        None => s.log_mel(&y),
    }
    .map_err(|e| ItemError::new("", "audio", e.to_string()))?;
    batch(vec![
        ("sample_rate", i64s(vec![Some(i64::from(sr))])),
        ("hop_s", f64s(vec![Some(hop_s)])),
        ("frames", i64s(vec![Some(f.frames as i64)])),
        ("dim", i64s(vec![Some(f.dim as i64)])),
        ("values", f32_lists(vec![f.data])),
    ])
    .map_err(|e| ItemError::new("", "", e.to_string()))
}

pub(crate) const MODE: Mode = Mode::Sharded {
    id_column: "clip_id",
    reads: &["object"],
};

impl Kind for LogMel {
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
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::SPECTRUM
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
}

impl Stage for LogMel {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        compute(ctx, row, None)
    }
}

impl Kind for Mfcc {
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
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::SPECTRUM
    }
    fn mode(&self, _params: &crate::Params) -> Mode {
        MODE
    }
}

impl Stage for Mfcc {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let n = ctx
            .params
            .i64("n_mfcc")
            .map_err(|e| ItemError::new("", "params", e.to_string()))?;
        compute(ctx, row, Some(n.max(0) as usize))
    }
}
