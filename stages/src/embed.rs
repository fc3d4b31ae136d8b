//! Pretrained-model kinds, declared: `embed` (a TorchScript model's features of faces, audio or
//! text) and `pixels` (a CNN's input), so that the engine plans and keys them without libtorch.
//! The worker computes them (`stages/worker/src/embed/`).

use std::path::PathBuf;

use crate::params::{ParamSpec, ParamType};
use crate::{resolve, Kind, Mode, Params, PlanCtx, StageError};

pub struct Embed;

/// An embedding's libtorch threads (and CPUs) unless `resources.cpus` says: fixed, so that
/// embeddings do not depend on the machine's core count; big enough that one model's forward
/// pass keeps a workstation busy, small enough that two embed stages run side by side.
pub const EMBED_THREADS: usize = 4;
pub struct Pixels;

impl Embed {
    /// The TorchScript file of param `model`.
    pub fn model_path(p: &Params, root: &std::path::Path) -> Result<PathBuf, StageError> {
        Ok(resolve(root, p.str("model")?))
    }
}

/// The image preprocessing params, shared by `embed` (vision) and `pixels`.
macro_rules! with_image_params {
    ($($p:expr),* $(,)?) => {
        &[
            $($p,)*
            ParamSpec::new("image_size", ParamType::IntList, Some("[224, 224]"), "vision: model input height and width"),
            ParamSpec::new("channels", ParamType::Enum(&["rgb", "bgr", "gray"]), Some("\"rgb\""), "vision: channel order (gray: ITU-R 601 luma, one channel)"),
            ParamSpec::new("interpolation", ParamType::Enum(&["area", "linear", "cubic"]), Some("\"area\""), "vision: resize filter (OpenCV)"),
            ParamSpec::new("scale", ParamType::Float, Some("0.00392156862745098"), "vision: pixel values are multiplied by this first (1/255)"),
            ParamSpec::new("mean", ParamType::FloatList, Some("[0.485, 0.456, 0.406]"), "vision: subtracted per channel after scaling"),
            ParamSpec::new("std", ParamType::FloatList, Some("[0.229, 0.224, 0.225]"), "vision: divided per channel after the mean"),
        ]
    };
}

const PARAMS: &[ParamSpec] = with_image_params![
    ParamSpec::new("model", ParamType::Path, None, "TorchScript file (scripts/models/export.py writes them)"),
    ParamSpec::new("modality", ParamType::Enum(&["vision", "audio", "text"]), None, "what the model reads"),
    crate::params::DEVICE,
    ParamSpec::new("batch_size", ParamType::Int, Some("32"), "model inputs (images, windows, texts) per forward pass").min(1.0),
    ParamSpec::new("pool", ParamType::Enum(&["none", "mean", "max", "cls"]), Some("\"mean\""), "reduce the clip's sequence: none keeps [T x D]; cls takes its first step"),
    ParamSpec::new("normalize", ParamType::Enum(&["none", "l2"]), Some("\"none\""), "scale the output vectors (after pooling) to unit length"),
    ParamSpec::new("output_index", ParamType::Int, Some("0"), "which element of a tuple output to use"),
    // audio
    ParamSpec::new("frontend", ParamType::Enum(&["none", "mel", "logmel"]), Some("\"none\""), "audio from a waveform: none feeds samples [B, n]; mel/logmel feed [B, frames, n_mels]"),
    ParamSpec::new("n_mels", ParamType::Int, Some("40"), "audio front end: mel bands").min(1.0),
    ParamSpec::new("n_fft", ParamType::Int, Some("400"), "audio front end: FFT size in samples").min(1.0),
    ParamSpec::new("hop_length", ParamType::Int, Some("160"), "audio front end: hop in samples").min(1.0),
    ParamSpec::new("window", ParamType::Int, Some("0"), "audio: window length in model steps (samples, or front-end/feature frames); 0: the whole clip at once"),
    ParamSpec::new("hop", ParamType::Int, Some("0"), "audio: steps between window starts (0: window)"),
    ParamSpec::new("min_coverage", ParamType::Float, Some("0.0"), "audio: keep a zero-padded last window only if the clip covers this share of it"),
    // text
    ParamSpec::new("tokenizer", ParamType::Path, Some("\"\""), "text: tokenizer.json (HF tokenizers format)"),
    ParamSpec::new("max_length", ParamType::Int, Some("128"), "text: tokens kept, special tokens included"),
    ParamSpec::new("special_tokens", ParamType::Bool, Some("true"), "text: add the tokenizer's begin/end tokens ([CLS] ... [SEP])"),
    ParamSpec::new("text_inputs", ParamType::StrList, Some("[\"input_ids\", \"attention_mask\"]"), "text: the model's inputs, in order (input_ids, attention_mask, token_type_ids)"),
    ParamSpec::new("column", ParamType::Str, Some("\"text\""), "text: the input table's transcript column"),
];

const PIXEL_PARAMS: &[ParamSpec] = with_image_params![];

impl Kind for Pixels {
    fn kind(&self) -> &'static str {
        "pixels"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["opencv"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: face crops/frames resized and normalised into rows of pixels (a CNN's input)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PIXEL_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::MATRIX
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::Sharded {
            id_column: "clip_id",
            reads: &["object"],
        }
    }
}

impl Kind for Embed {
    fn kind(&self) -> &'static str {
        "embed"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch", "opencv"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: a pretrained TorchScript model's features of face crops/frames, audio or text"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::features::MATRIX
    }
    fn mode(&self, params: &Params) -> Mode {
        // Text reads the transcript of the clips table; the others a sharded stage's items.
        let text = params.str("modality").is_ok_and(|m| m == "text");
        Mode::Sharded {
            id_column: "clip_id",
            reads: if text {
                &["clip_id", "text"]
            } else {
                &["object"]
            },
        }
    }
    fn cpus(&self, _params: &Params) -> Option<usize> {
        Some(EMBED_THREADS)
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        let model = Self::model_path(ctx.params, ctx.root)?;
        let mut files = vec![model];
        if ctx.params.str("modality")? == "text" {
            let t = ctx.params.str("tokenizer")?;
            if t.is_empty() {
                return Err(StageError::param(
                    "tokenizer",
                    "text models need a tokenizer.json",
                ));
            }
            files.push(resolve(ctx.root, t));
        }
        // Missing files fail the stage once, not every clip.
        if let Some(f) = files.iter().find(|f| !f.is_file()) {
            return Err(StageError::Input(format!(
                "{} not found; `make models` exports the bundled models, \
                 scripts/models/export.py others",
                f.display()
            )));
        }
        if ctx.params.i64("batch_size")? < 1 {
            return Err(StageError::param("batch_size", "must be >= 1"));
        }
        Ok(files)
    }
}
