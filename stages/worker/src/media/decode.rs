//! `decode` (per clip, sharded): video frames picked by time, decoded with FFmpeg and converted
//! to RGB24 by libswscale.
//!
//! Sampling (`sampling`):
//! - `uniform`: `frames` frames at the centres of equal slices of the clip (Uni2Mul's 10 steps);
//! - `fps`: one frame every 1/`fps` s from the start;
//! - `window`: one frame at a seeded random time inside each full `window_ms` window
//!   (MER-SEM-MBT: one frame per 960 ms);
//! - `all`: every decoded frame.
//!
//! The frame taken for time t is the one on screen at t: the last frame whose timestamp is
//! not after t. Frames are stored losslessly as packed RGB24 bytes (one Binary value per
//! frame, with its size and timestamps). Lossless because face detection and embeddings
//! downstream should see the decoder's pixels, not a second lossy generation; Parquet's zstd
//! then shrinks them, and decoding a clip again costs more than reading it back.

use std::path::Path;

use arrow::array::BinaryArray;
use arrow::record_batch::RecordBatch;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use crate::media::ffmpeg::init_ffmpeg;
use crate::table::{batch, f64s, i64s, str_col};
use crate::{resolve, ItemError, Kind, RunCtx, Stage};

pub struct Decode;

#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    Uniform(usize),
    Fps(f64),
    Window { seconds: f64, seed: u64 },
    All,
}

#[derive(Debug, Clone)]
pub struct Frame {
    /// When the frame was asked for, and when it was actually shown (seconds from the clip's
    /// start; `all` gives the same for both).
    pub target_s: f64,
    pub pts_s: f64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// A uniform number in [0, 1) from a seed, a clip and a window index.
fn unit(seed: u64, clip: &str, k: usize) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(clip.as_bytes());
    h.update(&(k as u64).to_le_bytes());
    let b = h.finalize();
    let v = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    (v >> 11) as f64 / (1u64 << 53) as f64
}

/// The times to take frames at, for a clip of `dur` seconds.
pub fn targets(s: &Sampling, dur: f64, clip: &str) -> Vec<f64> {
    match *s {
        Sampling::Uniform(n) => (0..n).map(|k| (k as f64 + 0.5) * dur / n as f64).collect(),
        Sampling::Fps(f) => (0..)
            .map(|k| k as f64 / f)
            .take_while(|t| *t < dur)
            .collect(),
        Sampling::Window { seconds, seed } => {
            let n = ((dur / seconds).floor() as usize).max(1);
            (0..n)
                .map(|k| ((k as f64 + unit(seed, clip, k)) * seconds).min(dur))
                .collect()
        }
        Sampling::All => Vec::new(),
    }
}

fn scaled(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    if max_side == 0 || w.max(h) <= max_side {
        return (w, h);
    }
    let s = f64::from(max_side) / f64::from(w.max(h));
    (
        ((f64::from(w) * s).round() as u32).max(1),
        ((f64::from(h) * s).round() as u32).max(1),
    )
}

/// Decoded frames to packed RGB24 at most `max_side` pixels on the longer side; the scaler is
/// made for the first frame's size and format.
struct RgbFrames {
    scaler: Option<(Scaler, u32, u32)>,
    max_side: u32,
}

impl RgbFrames {
    fn convert(&mut self, f: &Video, target: f64, pts: f64) -> Result<Frame, crate::StageError> {
        if self.scaler.is_none() {
            let (w, h) = scaled(f.width(), f.height(), self.max_side);
            let s = Scaler::get(
                f.format(),
                f.width(),
                f.height(),
                Pixel::RGB24,
                w,
                h,
                Flags::AREA,
            )
            .map_err(|e| format!("cannot convert frames to RGB: {e}"))?;
            self.scaler = Some((s, w, h));
        }
        let (s, w, h) = self.scaler.as_mut().expect("set above");
        let mut rgb = Video::empty();
        s.run(f, &mut rgb)
            .map_err(|e| format!("frame conversion failed: {e}"))?;
        let (w, h) = (*w as usize, *h as usize);
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        let mut packed = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            packed.extend_from_slice(&data[row * stride..row * stride + w * 3]);
        }
        Ok(Frame {
            target_s: target,
            pts_s: pts,
            width: w as u32,
            height: h as u32,
            rgb: packed,
        })
    }
}

/// The video stream's duration, else the container's.
fn video_duration(
    ictx: &ffmpeg::format::context::Input,
    stream: &ffmpeg::format::stream::Stream,
) -> Result<f64, crate::StageError> {
    let tb = f64::from(stream.time_base());
    let stream_dur = (stream.duration() > 0).then(|| stream.duration() as f64 * tb);
    let container_dur = (ictx.duration() > 0)
        .then(|| ictx.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
    Ok(stream_dur
        .or(container_dur)
        .ok_or("the video has no duration")?)
}

/// Decodes the frames `sampling` asks for from `path`, within `span` when given.
pub fn decode_frames(
    path: &Path,
    span: Option<(f64, f64)>,
    sampling: &Sampling,
    max_side: u32,
    clip: &str,
) -> Result<Vec<Frame>, crate::StageError> {
    init_ffmpeg();
    let mut ictx = ffmpeg::format::input(path).map_err(|e| format!("cannot open as media: {e}"))?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or("no video stream")?;
    let index = stream.index();
    let tb = f64::from(stream.time_base());
    let mut dec = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| format!("video stream has no usable decoder: {e}"))?;
    let (start, dur) = match span {
        Some((a, b)) => (a, b - a),
        None => (0.0, video_duration(&ictx, &stream)?),
    };
    if dur <= 0.0 {
        return Err(format!("the video lasts {dur:.3} s").into());
    }
    if start > 0.0 {
        let ts = (start * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        ictx.seek(ts, ..ts)
            .map_err(|e| format!("cannot seek to {start:.3} s: {e}"))?;
    }
    let want = targets(sampling, dur, clip);
    let all = matches!(sampling, Sampling::All);
    let mut out = Vec::new();
    let mut rgb = RgbFrames {
        scaler: None,
        max_side,
    };
    let mut convert = |f: &Video, target: f64, pts: f64| rgb.convert(f, target, pts);
    let mut next = 0usize;
    let mut prev: Option<(Video, f64)> = None;
    let mut decoded = Video::empty();
    let mut done = false;
    let mut handle = |decoded: &Video,
                      prev: &mut Option<(Video, f64)>,
                      next: &mut usize,
                      out: &mut Vec<Frame>|
     -> Result<bool, crate::StageError> {
        let pts = decoded
            .timestamp()
            .or(decoded.pts())
            .map_or(0.0, |p| p as f64 * tb)
            - start;
        if pts < -1e-9 {
            // Before the segment (after a seek to the preceding keyframe).
            *prev = Some((decoded.clone(), pts));
            return Ok(false);
        }
        if pts >= dur {
            return Ok(true);
        }
        if all {
            out.push(convert(decoded, pts, pts)?);
            return Ok(false);
        }
        while *next < want.len() && want[*next] < pts {
            // Several times on one frame (more frames asked than the clip has): the frame is
            // taken once, so a clip never yields more frames than it holds.
            let (f, fp) = match prev.as_ref() {
                Some((p, pp)) => (p, pp.max(0.0)),
                None => (decoded, pts),
            };
            if out.last().is_none_or(|l: &Frame| l.pts_s != fp) {
                out.push(convert(f, want[*next], fp)?);
            }
            *next += 1;
        }
        *prev = Some((decoded.clone(), pts));
        Ok(*next >= want.len())
    };
    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        if dec.send_packet(&packet).is_err() {
            // A damaged packet: skip it, as players do; a clip with no good frame fails below.
            continue;
        }
        while dec.receive_frame(&mut decoded).is_ok() {
            if handle(&decoded, &mut prev, &mut next, &mut out)? {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
    }
    if !done {
        let _ = dec.send_eof();
        while dec.receive_frame(&mut decoded).is_ok() {
            if handle(&decoded, &mut prev, &mut next, &mut out)? {
                break;
            }
        }
    }
    // Times after the last frame show the last frame.
    if let Some((p, pp)) = prev.as_ref() {
        if next < want.len() && out.last().is_none_or(|l| l.pts_s != pp.max(0.0)) {
            out.push(convert(p, want[next], pp.max(0.0))?);
        }
    }
    if out.is_empty() {
        return Err("no decodable video frames".into());
    }
    Ok(out)
}

impl Stage for Decode {
    fn decl(&self) -> &dyn Kind {
        &stages::media::Decode
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let t = &ctx.inputs[0];
        let fail = |field: &str, reason: String| ItemError::new("", field, reason);
        let p = |e: crate::StageError| fail("params", e.to_string());
        let sampling = match ctx.params.str("sampling").map_err(p)? {
            "uniform" => {
                let n = ctx.params.i64("frames").map_err(p)?;
                if n < 1 {
                    return Err(fail("params", format!("frames {n} must be at least 1")));
                }
                Sampling::Uniform(n as usize)
            }
            "fps" => {
                let f = ctx.params.f64("fps").map_err(p)?;
                if f <= 0.0 {
                    return Err(fail("params", format!("fps {f} must be positive")));
                }
                Sampling::Fps(f)
            }
            "window" => {
                let w = ctx.params.i64("window_ms").map_err(p)?;
                if w < 1 {
                    return Err(fail("params", format!("window_ms {w} must be positive")));
                }
                Sampling::Window {
                    seconds: w as f64 / 1000.0,
                    seed: ctx.params.i64("seed").map_err(p)? as u64,
                }
            }
            _ => Sampling::All,
        };
        let max_side = ctx.params.i64("max_side").map_err(p)?.max(0) as u32;
        let ids = str_col(t, "clip_id").map_err(|e| fail("clip_id", e.to_string()))?;
        let media = str_col(t, "media_path").map_err(|e| fail("media_path", e.to_string()))?;
        let span = crate::table::span(t, row);
        let frames = decode_frames(
            &resolve(ctx.root, media.value(row)),
            span,
            &sampling,
            max_side,
            ids.value(row),
        )
        .map_err(|e| fail("media_path", e.to_string()))?;
        batch(vec![
            ("frame", i64s((0..frames.len() as i64).map(Some).collect())),
            (
                "target_s",
                f64s(frames.iter().map(|f| Some(f.target_s)).collect()),
            ),
            (
                "pts_s",
                f64s(frames.iter().map(|f| Some(f.pts_s)).collect()),
            ),
            (
                "width",
                i64s(frames.iter().map(|f| Some(i64::from(f.width))).collect()),
            ),
            (
                "height",
                i64s(frames.iter().map(|f| Some(i64::from(f.height))).collect()),
            ),
            (
                "rgb",
                std::sync::Arc::new(BinaryArray::from_iter_values(
                    frames.iter().map(|f| f.rgb.as_slice()),
                )),
            ),
        ])
        .map_err(|e| fail("", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times() {
        assert_eq!(
            targets(&Sampling::Uniform(4), 2.0, "c"),
            vec![0.25, 0.75, 1.25, 1.75]
        );
        assert_eq!(
            targets(&Sampling::Fps(2.0), 1.6, "c"),
            vec![0.0, 0.5, 1.0, 1.5]
        );
        let w = Sampling::Window {
            seconds: 0.96,
            seed: 3,
        };
        let t = targets(&w, 3.0, "a");
        assert_eq!(t.len(), 3);
        for (k, x) in t.iter().enumerate() {
            assert!(*x >= k as f64 * 0.96 && *x < (k + 1) as f64 * 0.96, "{t:?}");
        }
        assert_eq!(t, targets(&w, 3.0, "a"), "seeded");
        assert_ne!(t, targets(&w, 3.0, "b"), "per clip");
        assert_eq!(scaled(640, 480, 320), (320, 240));
        assert_eq!(scaled(100, 50, 320), (100, 50));
    }
}
