//! Log-mel spectrograms and MFCCs with librosa's conventions, so that features computed here can
//! be compared one to one with a paper's librosa code:
//! - STFT: periodic Hann window of `win_length`, zero-padded to `n_fft` in the middle; with
//!   `center`, the signal is padded by `n_fft / 2` on both sides (`constant`: zeros, librosa's
//!   default since 0.10; `reflect`: numpy's reflect, the older default).
//! - Mel filterbank: Slaney's mel scale (linear below 1 kHz, log above) or HTK's, with Slaney's
//!   area normalisation, exactly as `librosa.filters.mel`.
//! - dB: `10 log10(max(amin, S))`, then clipped to `top_db` below the clip's maximum
//!   (`librosa.power_to_db(S, ref=1.0)`).
//! - MFCC: orthonormal DCT-II over the mel axis of the dB spectrogram (`librosa.feature.mfcc`).
//!
//! Everything is computed in f64 and returned as f32.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
}

#[derive(Debug, Clone)]
pub struct SpecConfig {
    pub sr: u32,
    pub n_fft: usize,
    pub win_length: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    pub fmin: f64,
    /// `None`: sr / 2.
    pub fmax: Option<f64>,
    pub center: bool,
    pub pad_mode: PadMode,
    /// 1: magnitude, 2: power.
    pub power: f64,
    pub htk: bool,
    /// Slaney area normalisation of the filters (librosa's `norm='slaney'`).
    pub slaney_norm: bool,
    pub amin: f64,
    pub top_db: Option<f64>,
}

impl SpecConfig {
    /// librosa's defaults for `melspectrogram` at a sample rate.
    pub fn librosa(sr: u32) -> SpecConfig {
        SpecConfig {
            sr,
            n_fft: 2048,
            win_length: 2048,
            hop_length: 512,
            n_mels: 128,
            fmin: 0.0,
            fmax: None,
            center: true,
            pad_mode: PadMode::Constant,
            power: 2.0,
            htk: false,
            slaney_norm: true,
            amin: 1e-10,
            top_db: Some(80.0),
        }
    }

    fn check(&self) -> Result<(), crate::StageError> {
        if self.n_fft == 0 || self.hop_length == 0 || self.n_mels == 0 {
            return Err("n_fft, hop_length and n_mels must be positive".into());
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return Err(format!(
                "win_length {} must be in 1..=n_fft ({})",
                self.win_length, self.n_fft
            )
            .into());
        }
        let fmax = self.fmax.unwrap_or(self.sr as f64 / 2.0);
        if !(self.fmin >= 0.0 && self.fmin < fmax && fmax <= self.sr as f64 / 2.0 + 1e-9) {
            return Err(format!(
                "need 0 <= fmin < fmax <= sr/2, got fmin {} fmax {fmax} sr {}",
                self.fmin, self.sr
            )
            .into());
        }
        Ok(())
    }
}

/// A prepared analyser: window, FFT plan and filterbank are built once per stage run.
pub struct Spectral {
    cfg: SpecConfig,
    window: Vec<f64>,
    fft: Arc<dyn Fft<f64>>,
    /// Per mel band: first FFT bin and the non-zero weights from there.
    mel: Vec<(usize, Vec<f64>)>,
}

/// One clip's features: `frames` rows of `dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub frames: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Spectral {
    pub fn new(cfg: SpecConfig) -> Result<Spectral, crate::StageError> {
        cfg.check()?;
        let mut window = vec![0.0; cfg.n_fft];
        let off = (cfg.n_fft - cfg.win_length) / 2;
        for (i, w) in hann_periodic(cfg.win_length).into_iter().enumerate() {
            window[off + i] = w;
        }
        let fft = FftPlanner::new().plan_fft_forward(cfg.n_fft);
        let fb = mel_filterbank(
            cfg.sr,
            cfg.n_fft,
            cfg.n_mels,
            cfg.fmin,
            cfg.fmax.unwrap_or(cfg.sr as f64 / 2.0),
            cfg.htk,
            cfg.slaney_norm,
        );
        let mel = fb
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        Ok(Spectral {
            cfg,
            window,
            fft,
            mel,
        })
    }

    pub fn config(&self) -> &SpecConfig {
        &self.cfg
    }

    /// Number of STFT frames for a signal of `n` samples.
    pub fn n_frames(&self, n: usize) -> usize {
        let c = &self.cfg;
        let len = if c.center { n + 2 * (c.n_fft / 2) } else { n };
        if len < c.n_fft {
            0
        } else {
            1 + (len - c.n_fft) / c.hop_length
        }
    }

    /// Mel spectrogram (power or magnitude per `power`), frames x n_mels, f64.
    pub fn mel_spectrogram(&self, y: &[f32]) -> Result<(usize, Vec<f64>), crate::StageError> {
        let c = &self.cfg;
        let n_frames = self.n_frames(y.len());
        if n_frames == 0 {
            return Err(format!(
                "{} samples is shorter than one window of {} samples",
                y.len(),
                c.n_fft
            )
            .into());
        }
        let pad = if c.center { c.n_fft / 2 } else { 0 };
        let sample = |i: isize| -> f64 {
            let n = y.len() as isize;
            let j = i - pad as isize;
            if (0..n).contains(&j) {
                return y[j as usize] as f64;
            }
            match c.pad_mode {
                PadMode::Constant => 0.0,
                PadMode::Reflect => {
                    if n == 1 {
                        return y[0] as f64;
                    }
                    // numpy 'reflect' (edge not repeated), repeated for pads longer than the signal
                    let period = 2 * (n - 1);
                    let m = j.rem_euclid(period);
                    y[(if m < n { m } else { period - m }) as usize] as f64
                }
            }
        };
        let bins = c.n_fft / 2 + 1;
        let mut out = vec![0.0; n_frames * c.n_mels];
        let mut buf = vec![Complex::new(0.0, 0.0); c.n_fft];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut spec = vec![0.0; bins];
        for f in 0..n_frames {
            let start = (f * c.hop_length) as isize;
            for (k, b) in buf.iter_mut().enumerate() {
                *b = Complex::new(sample(start + k as isize) * self.window[k], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (s, b) in spec.iter_mut().zip(&buf[..bins]) {
                let mag2 = b.norm_sqr();
                *s = if c.power == 2.0 {
                    mag2
                } else {
                    mag2.sqrt().powf(c.power)
                };
            }
            let row = &mut out[f * c.n_mels..(f + 1) * c.n_mels];
            for (m, (first, w)) in self.mel.iter().enumerate() {
                row[m] = w.iter().zip(&spec[*first..]).map(|(a, b)| a * b).sum();
            }
        }
        Ok((n_frames, out))
    }

    /// Log-mel in dB (`power_to_db(melspectrogram(y), ref=1.0)`), frames x n_mels.
    pub fn log_mel(&self, y: &[f32]) -> Result<Features, crate::StageError> {
        let (frames, mel) = self.mel_spectrogram(y)?;
        let db = self.to_db(mel);
        Ok(Features {
            frames,
            dim: self.cfg.n_mels,
            data: db.into_iter().map(|v| v as f32).collect(),
        })
    }

    /// MFCCs, frames x n_mfcc: orthonormal DCT-II of the dB mel spectrogram.
    pub fn mfcc(&self, y: &[f32], n_mfcc: usize) -> Result<Features, crate::StageError> {
        let n_mels = self.cfg.n_mels;
        if n_mfcc == 0 || n_mfcc > n_mels {
            return Err(format!("n_mfcc {n_mfcc} must be in 1..=n_mels ({n_mels})").into());
        }
        let (frames, mel) = self.mel_spectrogram(y)?;
        let db = self.to_db(mel);
        let basis = dct2_ortho(n_mels, n_mfcc);
        let mut data = Vec::with_capacity(frames * n_mfcc);
        for row in db.chunks(n_mels) {
            for b in basis.chunks(n_mels) {
                data.push(b.iter().zip(row).map(|(a, x)| a * x).sum::<f64>() as f32);
            }
        }
        Ok(Features {
            frames,
            dim: n_mfcc,
            data,
        })
    }

    pub fn to_db(&self, s: Vec<f64>) -> Vec<f64> {
        let amin = self.cfg.amin;
        let mut db: Vec<f64> = s.into_iter().map(|v| 10.0 * v.max(amin).log10()).collect();
        if let Some(top) = self.cfg.top_db {
            let max = db.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            for v in &mut db {
                *v = v.max(max - top);
            }
        }
        db
    }
}

/// `scipy.signal.get_window('hann', n, fftbins=True)`.
pub fn hann_periodic(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        .collect()
}

pub fn hz_to_mel(f: f64, htk: bool) -> f64 {
    if htk {
        return 2595.0 * (1.0 + f / 700.0).log10();
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

pub fn mel_to_hz(m: f64, htk: bool) -> f64 {
    if htk {
        return 700.0 * (10f64.powf(m / 2595.0) - 1.0);
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel`: n_mels rows of 1 + n_fft/2 weights.
pub fn mel_filterbank(
    sr: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
    htk: bool,
    slaney_norm: bool,
) -> Vec<Vec<f64>> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|i| i as f64 * (sr as f64 / 2.0) / (bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(fmin, htk), hz_to_mel(fmax, htk));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64, htk))
        .collect();
    (0..n_mels)
        .map(|m| {
            let (f0, f1, f2) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
            let enorm = if slaney_norm { 2.0 / (f2 - f0) } else { 1.0 };
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - f0) / (f1 - f0);
                    let upper = (f2 - f) / (f2 - f1);
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

/// Rows of the orthonormal DCT-II (`scipy.fft.dct(type=2, norm='ortho')`), n_out x n.
fn dct2_ortho(n: usize, n_out: usize) -> Vec<f64> {
    let mut m = Vec::with_capacity(n * n_out);
    for k in 0..n_out {
        let s = if k == 0 {
            (1.0 / n as f64).sqrt()
        } else {
            (2.0 / n as f64).sqrt()
        };
        for i in 0..n {
            m.push(s * (std::f64::consts::PI / n as f64 * (i as f64 + 0.5) * k as f64).cos());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_bends_at_1khz() {
        for f in [0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0] {
            for htk in [false, true] {
                assert!((mel_to_hz(hz_to_mel(f, htk), htk) - f).abs() < 1e-9);
            }
        }
        assert!((hz_to_mel(1000.0, false) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn dct_is_orthonormal() {
        let n = 16;
        let m = dct2_ortho(n, n);
        for a in 0..n {
            for b in 0..n {
                let dot: f64 = (0..n).map(|i| m[a * n + i] * m[b * n + i]).sum();
                assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn frame_counts_follow_librosa() {
        let s = Spectral::new(SpecConfig::librosa(16000)).unwrap();
        // librosa: 1 + len // hop with center=True
        assert_eq!(s.n_frames(16000), 1 + 16000 / 512);
        let mut c = SpecConfig::librosa(16000);
        c.center = false;
        let s = Spectral::new(c).unwrap();
        assert_eq!(s.n_frames(16000), 1 + (16000 - 2048) / 512);
        assert_eq!(s.n_frames(100), 0);
    }
}

/// Against values librosa 0.11 computed once on real speech (tests/data/, written by
/// scripts/reference/librosa_reference.py).
#[cfg(test)]
mod librosa_match {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data")
            .join(name)
    }

    #[test]
    fn matches_librosa_on_real_speech() {
        let mut r = hound::WavReader::open(data("speech16k.wav")).unwrap();
        let y: Vec<f32> = r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect();
        let refs: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data("librosa_reference.json")).unwrap())
                .unwrap();
        assert_eq!(refs["samples"].as_u64().unwrap() as usize, y.len());
        for case in refs["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let us = |k: &str| case[k].as_u64().unwrap() as usize;
            let cfg = SpecConfig {
                n_fft: us("n_fft"),
                win_length: us("win_length"),
                hop_length: us("hop_length"),
                n_mels: us("n_mels"),
                fmin: case["fmin"].as_f64().unwrap(),
                fmax: case["fmax"].as_f64(),
                pad_mode: if case["pad_mode"] == "reflect" {
                    PadMode::Reflect
                } else {
                    PadMode::Constant
                },
                htk: case["htk"].as_bool().unwrap_or(false),
                ..SpecConfig::librosa(16000)
            };
            let s = Spectral::new(cfg).unwrap();
            let f = if case["kind"] == "mfcc" {
                s.mfcc(&y, us("n_mfcc")).unwrap()
            } else {
                s.log_mel(&y).unwrap()
            };
            assert_eq!((f.frames, f.dim), (us("frames"), us("dim")), "{name}");
            let mut worst = 0.0f64;
            for (row, want) in case["rows"].as_object().unwrap() {
                let i: usize = row.parse().unwrap();
                for (j, w) in want.as_array().unwrap().iter().enumerate() {
                    let w = w.as_f64().unwrap();
                    let got = f.data[i * f.dim + j] as f64;
                    // relative, with a floor of 1 (dB and cepstra cross zero)
                    let err = (got - w).abs() / w.abs().max(1.0);
                    worst = worst.max(err);
                    assert!(err < 1e-3, "{name} frame {i} dim {j}: {got} vs librosa {w}");
                }
            }
            eprintln!("{name}: worst relative error {worst:.2e}");
        }
    }
}
