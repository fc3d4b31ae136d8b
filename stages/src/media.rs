//! Media kinds, declared: their params, per-clip mode and external files, so that the engine
//! plans and keys them without FFmpeg or OpenCV. The worker computes them
//! (`stages/worker/src/media/`).

use std::path::PathBuf;

use crate::params::{ParamSpec, ParamType};
use crate::{resolve, Kind, Mode, Params, PlanCtx, StageError};

/// MTCNN's three networks, as `make setup` exports them.
pub const MTCNN_FILES: [&str; 3] = ["pnet.onnx", "rnet.onnx", "onet.onnx"];

pub struct Probe;
pub struct Audio;
pub struct Decode;
pub struct FaceCrop;

const AUDIO_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "sample_rate",
        ParamType::Int,
        Some("16000"),
        "output rate in Hz",
    )
    .range(1000.0, 384000.0),
    ParamSpec::new(
        "normalize",
        ParamType::Enum(&["none", "peak"]),
        Some("\"none\""),
        "peak: scale so the loudest sample sits at `peak_db` dBFS",
    ),
    ParamSpec::new(
        "peak_db",
        ParamType::Float,
        Some("-3.0"),
        "target peak for normalize: peak",
    ),
    ParamSpec::new(
        "seconds",
        ParamType::Float,
        Some("0.0"),
        "crop or zero-pad every clip to this length (0: keep each clip's length)",
    ),
    ParamSpec::new(
        "crop",
        ParamType::Enum(&["start", "center"]),
        Some("\"start\""),
        "which part a longer clip keeps when `seconds` is set",
    ),
    ParamSpec::new(
        "min_seconds",
        ParamType::Float,
        Some("0.5"),
        "fail clips shorter than this (before crop/pad)",
    ),
    ParamSpec::new(
        "max_seconds",
        ParamType::Float,
        Some("0.0"),
        "fail clips longer than this (0: no limit)",
    ),
    ParamSpec::new(
        "wav",
        ParamType::Bool,
        Some("false"),
        "also store each clip as a 16-bit PCM WAV file (a `wav` binary column) for outside tools",
    ),
    ParamSpec::new(
        "allow_silent",
        ParamType::Bool,
        Some("false"),
        "accept clips whose peak is below -80 dBFS",
    ),
];

const DECODE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "sampling",
        ParamType::Enum(&["uniform", "fps", "window", "all"]),
        Some("\"uniform\""),
        "which frames: uniform N, every 1/fps s, one random per window, or all",
    ),
    ParamSpec::new(
        "frames",
        ParamType::Int,
        Some("10"),
        "uniform: frames per clip (a clip with fewer gives each of its frames once)",
    )
    .range(1.0, 1e6),
    ParamSpec::new(
        "fps",
        ParamType::Float,
        Some("1.0"),
        "fps: frames per second",
    )
    .range(1e-3, 1000.0),
    ParamSpec::new(
        "window_ms",
        ParamType::Int,
        Some("960"),
        "window: window length",
    )
    .min(1.0),
    ParamSpec::new(
        "seed",
        ParamType::Int,
        Some("0"),
        "window: seed of the random pick",
    ),
    ParamSpec::new(
        "max_side",
        ParamType::Int,
        Some("0"),
        "shrink frames so the longer side is at most this (0: keep)",
    ),
];

const FACE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "models",
        ParamType::Path,
        Some("\"data/models/mtcnn\""),
        "folder with MTCNN's pnet.onnx, rnet.onnx, onet.onnx (make setup fetches them)",
    ),
    ParamSpec::new(
        "min_face_size",
        ParamType::Int,
        Some("20"),
        "smallest face searched, pixels",
    )
    .min(1.0),
    ParamSpec::new(
        "scale_factor",
        ParamType::Float,
        Some("0.709"),
        "image pyramid step",
    )
    .range(0.1, 0.95),
    ParamSpec::new(
        "thresholds",
        ParamType::FloatList,
        Some("[0.6, 0.7, 0.7]"),
        "P-, R- and O-Net score thresholds",
    )
    .range(0.0, 1.0),
    ParamSpec::new(
        "crop_size",
        ParamType::Int,
        Some("160"),
        "side of the square crops (112, 160, 224, ...)",
    )
    .range(8.0, 1024.0),
    ParamSpec::new(
        "margin",
        ParamType::Int,
        Some("0"),
        "pixels of context around the box, in crop pixels (facenet-pytorch's margin)",
    ),
    ParamSpec::new(
        "align",
        ParamType::Bool,
        Some("false"),
        "warp the 5 landmarks onto the standard template instead of cropping the box",
    ),
    ParamSpec::new(
        "select",
        ParamType::Enum(&["largest", "most_confident", "all"]),
        Some("\"largest\""),
        "which faces of a frame to keep",
    ),
    ParamSpec::new(
        "no_face",
        ParamType::Enum(&["drop", "keep", "fail"]),
        Some("\"drop\""),
        "a frame without a face: drop it (SMP), keep an empty row, or fail the clip",
    ),
];

impl FaceCrop {
    /// The folder holding [`MTCNN_FILES`].
    pub fn models(params: &Params, root: &std::path::Path) -> Result<PathBuf, StageError> {
        Ok(resolve(root, params.str("models")?))
    }
}

impl Kind for Audio {
    fn kind(&self) -> &'static str {
        "audio"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["ffmpeg"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: mono f32 waveform at one rate (FFmpeg resampler), optional peak normalisation and crop/pad"
    }
    fn params(&self) -> &'static [ParamSpec] {
        AUDIO_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &["sample_rate", "source_seconds", "peak_dbfs", "samples"]
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::Sharded {
            id_column: "clip_id",
            reads: &[
                "media_path",
                "media_hash",
                "audio_path",
                "audio_hash",
                "start_s",
                "end_s",
            ],
        }
    }
}

impl Kind for Decode {
    fn kind(&self) -> &'static str {
        "decode"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["ffmpeg"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: RGB frames picked by time (uniform N, fps, one per window, all), FFmpeg + swscale"
    }
    fn params(&self) -> &'static [ParamSpec] {
        DECODE_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &["frame", "target_s", "pts_s", "width", "height", "rgb"]
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::Sharded {
            id_column: "clip_id",
            reads: &["clip_id", "media_path", "media_hash", "start_s", "end_s"],
        }
    }
}

impl Kind for FaceCrop {
    fn kind(&self) -> &'static str {
        "face"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["opencv"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: MTCNN faces in the decoded frames, with boxes, landmarks and square crops"
    }
    fn params(&self) -> &'static [ParamSpec] {
        FACE_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &[
            "frame",
            "pts_s",
            "face",
            "prob",
            "x1",
            "y1",
            "x2",
            "y2",
            "landmarks",
            "crop_size",
            "crop",
        ]
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::Sharded {
            id_column: "clip_id",
            reads: &["object"],
        }
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        // The weights' content hashes go into the key: other weights, other faces.
        let dir = Self::models(ctx.params, ctx.root)?;
        let files: Vec<PathBuf> = MTCNN_FILES.iter().map(|f| dir.join(f)).collect();
        // Missing weights fail the stage once, rather than every clip.
        if let Some(f) = files.iter().find(|f| !f.is_file()) {
            return Err(StageError::Input(format!(
                "MTCNN weights {} not found (param `models`); `make setup` fetches them",
                f.display()
            )));
        }
        Ok(files)
    }
}

impl Kind for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["ffmpeg"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: container duration, video size/fps/codec, audio rate/channels/codec (FFmpeg)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &[
            "duration_s",
            "has_video",
            "video_codec",
            "width",
            "height",
            "fps",
            "has_audio",
            "audio_codec",
            "sample_rate",
            "channels",
        ]
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::PerItem {
            id_column: "clip_id",
            reads: &["media_path", "media_hash"],
        }
    }
}
