//! `probe` (per clip): opens each clip with FFmpeg (libavformat) and records its container
//! duration and stream layout. It is the cheapest stage that reads every media file, so it is
//! where unreadable or truncated clips are first named.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::record_batch::RecordBatch;
use ffmpeg_next as ffmpeg;

use crate::media::ffmpeg::init_ffmpeg;
use crate::table::{batch, f64s, i64s, opt_strings, str_col};
use crate::{resolve, ItemError, Kind, RunCtx, Stage};

pub struct Probe;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct MediaInfo {
    pub duration_s: Option<f64>,
    pub video_codec: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<f64>,
    pub audio_codec: Option<String>,
    pub sample_rate: Option<i64>,
    pub channels: Option<i64>,
}

pub fn probe_file(path: &std::path::Path) -> Result<MediaInfo, crate::StageError> {
    init_ffmpeg();
    let ctx = ffmpeg::format::input(path).map_err(|e| format!("cannot open as media: {e}"))?;
    let mut info = MediaInfo {
        duration_s: (ctx.duration() > 0)
            .then(|| ctx.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)),
        ..Default::default()
    };
    if let Some(s) = ctx.streams().best(ffmpeg::media::Type::Video) {
        let par = s.parameters();
        info.video_codec = Some(par.id().name().to_string());
        let dec = ffmpeg::codec::context::Context::from_parameters(par)
            .and_then(|c| c.decoder().video())
            .map_err(|e| format!("video stream has no usable decoder: {e}"))?;
        info.width = Some(i64::from(dec.width()));
        info.height = Some(i64::from(dec.height()));
        let r = s.avg_frame_rate();
        info.fps = (r.denominator() != 0 && r.numerator() > 0).then(|| f64::from(r));
    }
    if let Some(s) = ctx.streams().best(ffmpeg::media::Type::Audio) {
        let par = s.parameters();
        info.audio_codec = Some(par.id().name().to_string());
        let dec = ffmpeg::codec::context::Context::from_parameters(par)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| format!("audio stream has no usable decoder: {e}"))?;
        info.sample_rate = Some(i64::from(dec.rate()));
        info.channels = Some(i64::from(dec.channels()));
    }
    if info.video_codec.is_none() && info.audio_codec.is_none() {
        return Err("no audio or video stream".into());
    }
    Ok(info)
}

impl Stage for Probe {
    fn decl(&self) -> &dyn Kind {
        &stages::media::Probe
    }
    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let t: &Arc<RecordBatch> = &ctx.inputs[0];
        let fail = |field: &str, reason: String| {
            let id = str_col(t, "clip_id")
                .map(|c| c.value(row).to_string())
                .unwrap_or_default();
            ItemError::new(id, field, reason)
        };
        let paths = str_col(t, "media_path").map_err(|e| fail("media_path", e.to_string()))?;
        let path = resolve(ctx.root, paths.value(row));
        let m = probe_file(&path)
            .map_err(|e| fail("media_path", format!("{}: {e}", path.display())))?;
        let has = |b: bool| -> Arc<dyn Array> { Arc::new(BooleanArray::from(vec![b])) };
        batch(vec![
            ("duration_s", f64s(vec![m.duration_s])),
            ("has_video", has(m.video_codec.is_some())),
            ("video_codec", opt_strings(vec![m.video_codec])),
            ("width", i64s(vec![m.width])),
            ("height", i64s(vec![m.height])),
            ("fps", f64s(vec![m.fps])),
            ("has_audio", has(m.audio_codec.is_some())),
            ("audio_codec", opt_strings(vec![m.audio_codec])),
            ("sample_rate", i64s(vec![m.sample_rate])),
            ("channels", i64s(vec![m.channels])),
        ])
        .map_err(|e| fail("", e.to_string()))
    }
}
