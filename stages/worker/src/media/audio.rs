//! `audio` (per clip, sharded): the clip's sound as mono f32 at one sample rate, through
//! FFmpeg's decoder and resampler (libswresample). Reads `audio_path` when the dataset has a
//! separate audio file per clip (IEMOCAP), otherwise the clip's own audio track, cut to
//! `start_s`..`end_s` when the clip is a segment of a longer recording.
//!
//! Options the papers use: peak normalisation (SMP: -3 dBFS) and crop/pad to a fixed length
//! (Foal-Net: 6 s). Clips with no audio stream, silence, or a length outside
//! `min_seconds`..`max_seconds` are failed with a reason, never passed on.

use std::path::Path;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use ffmpeg::channel_layout::ChannelLayout;
use ffmpeg::format::sample::{Sample, Type as SampleType};
use ffmpeg::frame;
use ffmpeg_next as ffmpeg;

use crate::media::ffmpeg::init_ffmpeg;
use crate::table::{batch, f32_lists, f64s, i64s, opt_str, str_col};
use crate::{resolve, ItemError, Kind, RunCtx, Stage};

pub struct Audio;

/// Decoded, resampled mono audio.
pub struct Decoded {
    pub samples: Vec<f32>,
    pub rate: u32,
}

/// Decodes the best audio stream of `path` to mono f32 at `rate`, keeping `span` (seconds)
/// when given.
pub fn decode_audio(
    path: &Path,
    rate: u32,
    span: Option<(f64, f64)>,
) -> Result<Decoded, crate::StageError> {
    init_ffmpeg();
    let mut ictx = ffmpeg::format::input(path).map_err(|e| format!("cannot open as media: {e}"))?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Audio)
        .ok_or("no audio stream")?;
    let index = stream.index();
    let tb = f64::from(stream.time_base());
    let mut dec = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().audio())
        .map_err(|e| format!("audio stream has no usable decoder: {e}"))?;
    if let Some((start, _)) = span {
        if start > 0.0 {
            let ts = (start * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
            ictx.seek(ts, ..ts)
                .map_err(|e| format!("cannot seek to {start:.3} s: {e}"))?;
        }
    }
    let out_fmt = Sample::F32(SampleType::Packed);
    let mut resampler: Option<ffmpeg::software::resampling::Context> = None;
    let mut out = Vec::new();
    // Time of the first output sample, from the first decoded frame's timestamp.
    let mut t0: Option<f64> = None;
    let mut decoded = frame::Audio::empty();
    let mut pull = |dec: &mut ffmpeg::decoder::Audio,
                    resampler: &mut Option<ffmpeg::software::resampling::Context>,
                    out: &mut Vec<f32>,
                    t0: &mut Option<f64>|
     -> Result<(), String> {
        while dec.receive_frame(&mut decoded).is_ok() {
            if t0.is_none() {
                *t0 = Some(decoded.pts().map_or(0.0, |p| p as f64 * tb));
            }
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ChannelLayout::default(i32::from(decoded.channels())));
            }
            if resampler.is_none() {
                *resampler = Some(
                    ffmpeg::software::resampling::Context::get(
                        decoded.format(),
                        decoded.channel_layout(),
                        decoded.rate(),
                        out_fmt,
                        ChannelLayout::MONO,
                        rate,
                    )
                    .map_err(|e| format!("cannot resample the audio: {e}"))?,
                );
            }
            let r = resampler.as_mut().expect("set above");
            // Room for everything this frame can produce, so nothing piles up inside swr.
            let cap = decoded.samples() * rate as usize / decoded.rate().max(1) as usize + 256;
            let mut o = frame::Audio::new(out_fmt, cap, ChannelLayout::MONO);
            r.run(&decoded, &mut o)
                .map_err(|e| format!("resampling failed: {e}"))?;
            out.extend_from_slice(&o.plane::<f32>(0)[..o.samples()]);
        }
        Ok(())
    };
    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        if let Some((_, end)) = span {
            if let Some(t) = t0 {
                if t + out.len() as f64 / f64::from(rate) > end + 0.5 {
                    break;
                }
            }
        }
        dec.send_packet(&packet)
            .map_err(|e| format!("corrupt audio packet: {e}"))?;
        pull(&mut dec, &mut resampler, &mut out, &mut t0)?;
    }
    let _ = dec.send_eof();
    pull(&mut dec, &mut resampler, &mut out, &mut t0)?;
    if let Some(r) = resampler.as_mut() {
        loop {
            let mut o = frame::Audio::new(out_fmt, 4096, ChannelLayout::MONO);
            match r.flush(&mut o) {
                Ok(_) if o.samples() > 0 => {
                    out.extend_from_slice(&o.plane::<f32>(0)[..o.samples()])
                }
                _ => break,
            }
        }
    }
    if let Some((start, end)) = span {
        let t0 = t0.unwrap_or(0.0);
        let a = (((start - t0) * f64::from(rate)).round().max(0.0) as usize).min(out.len());
        let b = (((end - t0) * f64::from(rate)).round().max(0.0) as usize).min(out.len());
        out = out[a..b.max(a)].to_vec();
    }
    Ok(Decoded { samples: out, rate })
}

/// A mono 16-bit PCM WAV file in memory (hound), clipping to [-1, 1].
pub fn wav_bytes(samples: &[f32], rate: u32) -> Result<Vec<u8>, crate::StageError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut buf, spec).map_err(|e| e.to_string())?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .map_err(|e| e.to_string())?;
    }
    w.finalize().map_err(|e| e.to_string())?;
    Ok(buf.into_inner())
}

pub fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0.0f32, |m, s| m.max(s.abs()))
}

/// `n` samples taken from the start or the centre of `x`, zero-padded at the end when short.
pub fn fit(x: &[f32], n: usize, center: bool) -> Vec<f32> {
    if x.len() >= n {
        let off = if center { (x.len() - n) / 2 } else { 0 };
        x[off..off + n].to_vec()
    } else {
        let mut v = x.to_vec();
        v.resize(n, 0.0);
        v
    }
}

impl Stage for Audio {
    fn decl(&self) -> &dyn Kind {
        &stages::media::Audio
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let t = &ctx.inputs[0];
        let fail = |field: &str, reason: String| ItemError::new("", field, reason);
        let col = |name: &str| str_col(t, name).map_err(|e| fail(name, e.to_string()));
        let p = |e: crate::StageError| fail("params", e.to_string());
        let rate = ctx.params.i64("sample_rate").map_err(p)?;
        if !(1000..=384_000).contains(&rate) {
            return Err(fail(
                "params",
                format!("sample_rate {rate} is out of range"),
            ));
        }
        let (path, field, span) = match opt_str(col("audio_path")?, row) {
            Some(a) => (a.to_string(), "audio_path", None),
            None => {
                let media = col("media_path")?.value(row).to_string();
                let span = crate::table::span(t, row);
                (media, "media_path", span)
            }
        };
        let d = decode_audio(&resolve(ctx.root, &path), rate as u32, span)
            .map_err(|e| fail(field, e.to_string()))?;
        let secs = d.samples.len() as f64 / rate as f64;
        let min = ctx.params.f64("min_seconds").map_err(p)?;
        let max = ctx.params.f64("max_seconds").map_err(p)?;
        if secs < min {
            return Err(fail(
                field,
                format!("audio lasts {secs:.2} s, shorter than min_seconds {min}"),
            ));
        }
        if max > 0.0 && secs > max {
            return Err(fail(
                field,
                format!("audio lasts {secs:.2} s, longer than max_seconds {max}"),
            ));
        }
        let pk = peak(&d.samples);
        if pk < 1e-4 && !ctx.params.bool("allow_silent").map_err(p)? {
            let level = if pk == 0.0 {
                "every sample is zero".to_string()
            } else {
                format!("peak {:.1} dBFS", 20.0 * f64::from(pk).log10())
            };
            return Err(fail(
                field,
                format!("audio is silent ({level}; allow_silent: true keeps it)"),
            ));
        }
        let mut samples = d.samples;
        if ctx.params.str("normalize").map_err(p)? == "peak" && pk > 0.0 {
            let target = 10f64.powf(ctx.params.f64("peak_db").map_err(p)? / 20.0) as f32;
            let g = target / pk;
            samples.iter_mut().for_each(|s| *s *= g);
        }
        let seconds = ctx.params.f64("seconds").map_err(p)?;
        if seconds > 0.0 {
            let n = (seconds * rate as f64).round() as usize;
            samples = fit(&samples, n, ctx.params.str("crop").map_err(p)? == "center");
        }
        let wav = if ctx.params.bool("wav").map_err(p)? {
            Some(wav_bytes(&samples, rate as u32).map_err(|e| fail("", e.to_string()))?)
        } else {
            None
        };
        let mut cols = vec![
            ("sample_rate", i64s(vec![Some(rate)])),
            ("source_seconds", f64s(vec![Some(secs)])),
            (
                "peak_dbfs",
                f64s(vec![Some(20.0 * f64::from(pk).max(1e-12).log10())]),
            ),
            ("samples", f32_lists(vec![samples])),
        ];
        if let Some(w) = wav {
            cols.push((
                "wav",
                Arc::new(arrow::array::BinaryArray::from_iter_values([w.as_slice()])) as ArrayRef,
            ));
        }
        batch(cols).map_err(|e| fail("", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips_through_hound() {
        let x: Vec<f32> = (0..800).map(|i| (i as f32 / 20.0).sin() * 0.5).collect();
        let bytes = wav_bytes(&x, 16000).unwrap();
        let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().sample_rate, 16000);
        let back: Vec<f32> = r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32767.0)
            .collect();
        assert_eq!(back.len(), 800);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-4));
    }

    #[test]
    fn fit_crops_and_pads() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        assert_eq!(fit(&x, 4, false), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(fit(&x, 4, true), vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(fit(&x[..2], 4, false), vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn decodes_and_resamples_real_speech() {
        let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/speech16k.wav");
        let d = decode_audio(&wav, 16000, None).unwrap();
        let mut r = hound::WavReader::open(&wav).unwrap();
        let want: Vec<f32> = r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect();
        // Same rate: the resampler only converts s16 -> f32.
        assert_eq!(d.samples.len(), want.len());
        let err = d
            .samples
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-6, "{err}");
        // 16 kHz -> 8 kHz keeps the length in seconds.
        let h = decode_audio(&wav, 8000, None).unwrap();
        assert!(
            (h.samples.len() as i64 - want.len() as i64 / 2).abs() <= 2,
            "{}",
            h.samples.len()
        );
        // A span cuts [0.5, 1.0) s.
        let s = decode_audio(&wav, 16000, Some((0.5, 1.0))).unwrap();
        assert_eq!(s.samples.len(), 8000);
        assert_eq!(s.samples[..100], want[8000..8100]);
    }
}
