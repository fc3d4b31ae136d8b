//! Media stages: FFmpeg probing and decoding, 16 kHz audio, MTCNN face crops.

pub mod audio;
pub mod decode;
pub mod face;
pub mod ffmpeg;
pub mod mtcnn;
pub mod probe;

/// FFmpeg's version as its own build names it (`av_version_info`, e.g. Debian's
/// `5.1.6-0+deb12u1`) with libavcodec's, and OpenCV's.
pub fn note_libraries() {
    // SAFETY: av_version_info returns a static NUL-terminated string (or null).
    let info = unsafe {
        let p = ffmpeg_next::ffi::av_version_info();
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    let codec = ffmpeg_next::codec::version();
    let ffmpeg = format!(
        "{} (libavcodec {}.{}.{})",
        info.unwrap_or_else(|| "unknown".into()),
        codec >> 16,
        (codec >> 8) & 0xff,
        codec & 0xff
    );
    stages::runtime::linked_library("ffmpeg", ffmpeg);
    if let Ok(v) = opencv::core::get_version_string() {
        stages::runtime::linked_library("opencv", v);
    }
}
