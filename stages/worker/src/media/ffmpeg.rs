//! FFmpeg set-up shared by the media stages.

use std::sync::Once;

use ffmpeg_next as ffmpeg;

static INIT: Once = Once::new();

pub fn init_ffmpeg() {
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        // Damaged inputs are reported per clip; libav's own console chatter would only
        // interleave with progress output.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}
