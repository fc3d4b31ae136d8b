//! Training kinds, declared: their params (typed, with defaults), inputs and reports, so that the
//! engine plans, keys and reports them without libtorch. The worker trains
//! (`stages/worker/src/train/`, one file per kind, the networks under `nets/`, one file each).
//!
//! Every training stage writes the same long table: `part` `curve` rows (one per epoch, `best`
//! marking the kept one), a `checkpoint` row (safetensors bytes and the config JSON) and
//! `prediction` rows; [`tables`] reads it back.

pub mod joint;
pub mod tables;

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{col, str_col};
use crate::{Kind, Params, Role, StageError};
use tables::curve_report;

pub use joint::TrainJoint;

pub struct TrainUnimodal;
pub struct ExportHidden;
pub struct TrainFusion;
pub struct LinearProbe;

/// A training on one table of features: `train_unimodal`, `linear_probe`.
const TRAIN_ROLES: &[Role] = &[
    Role::one(
        "features",
        "per-clip features (a pad, segment or embed stage)",
    )
    .reading(crate::features::MATRIX),
    Role::one("labels", "a labels stage").reading(crate::LABELS_READ),
    Role::one("split", "a split stage").reading(crate::SPLIT_READ),
];

/// What reading a trained model takes from its training table.
const MODEL_READ: &[&str] = &["part", "checkpoint", "config"];

/// Stage two reads stage one's three encoders, their features and the labels.
const FUSION_ROLES: &[Role] = &[
    Role::one(
        "vision_model",
        "the vision encoder (a train_unimodal stage)",
    )
    .reading(MODEL_READ),
    Role::one("audio_model", "the audio encoder (a train_unimodal stage)").reading(MODEL_READ),
    Role::one("text_model", "the text encoder (a train_unimodal stage)").reading(MODEL_READ),
    Role::one("vision", "the vision encoder's features").reading(crate::features::MATRIX),
    Role::one("audio", "the audio encoder's features").reading(crate::features::MATRIX),
    Role::one("text", "the text encoder's features").reading(crate::features::MATRIX),
    Role::one(
        "labels",
        "a labels stage (per-modality labels for the auxiliary heads)",
    )
    .reading(crate::LABELS_READ),
    Role::one("split", "a split stage").reading(crate::SPLIT_READ),
];

/// The classes of `export_hidden`'s figure (CH-SIMS's three).
const NAMES: [&str; 3] = ["Negative", "Neutral", "Positive"];

/// Encoder architectures (Table 2).
pub const ENCODERS: &[&str] = &[
    "cnn_lstm",
    "cnn",
    "cnn_attn_lstm",
    "cnn_attn_bilstm",
    "bilstm",
    "cnn_bilstm",
    "cnn_attn",
    "attn_bilstm",
];

/// Fusion types (Table 3).
pub const FUSIONS: &[&str] = &["concat", "attention", "transformer", "conformer"];

/// Self-attention kinds of the fusion heads (`train_fusion`'s `attention`).
pub const ATTENTIONS: &[&str] = &["tanh", "scaled"];

pub const COMMON: [ParamSpec; 10] = [
    ParamSpec::new(
        "label",
        ParamType::Str,
        Some("\"acc3\""),
        "labels column to predict: classes (acc2, acc3, acc5, acc7, class) or the score `y` (MMSA regression)",
    ),
    ParamSpec::new(
        "classes",
        ParamType::Int,
        Some("3"),
        "number of classes (classification)",
    ).min(1.0),
    ParamSpec::new("lr", ParamType::Float, Some("0.0001"), "Adam learning rate").positive(),
    ParamSpec::new(
        "epochs",
        ParamType::Int,
        Some("30"),
        "training epochs; the best-on-valid epoch's weights are kept",
    ).min(1.0),
    ParamSpec::new("batch_size", ParamType::Int, Some("32"), "clips per step").min(1.0),
    ParamSpec::new(
        "seed",
        ParamType::Int,
        Some("1"),
        "weight init and batch order",
    ),
    ParamSpec::new(
        "threads",
        ParamType::Int,
        Some("1"),
        "libtorch threads; these small models train fastest on one",
    ).min(1.0),
    crate::params::DEVICE,
    ParamSpec::new(
        "select",
        ParamType::Enum(&["val_loss", "acc", "f1"]),
        Some("\"val_loss\""),
        "the kept epoch: lowest validation loss (the weighted sum of every head's loss that training minimises), or best validation accuracy / macro F1",
    ),
    ParamSpec::new(
        "standardize",
        ParamType::Bool,
        Some("true"),
        "standardise each feature dimension with the training split's mean and sd (padding steps stay zero)",
    ),
];

const UNI_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "modality",
        ParamType::Enum(&["v", "a", "t", "m"]),
        None,
        "whose labels to learn: v, a, t (IUA with labels source iua) or m",
    ),
    ParamSpec::new(
        "model",
        ParamType::Enum(ENCODERS),
        None,
        "encoder (Uni2Mul: v cnn_lstm, a cnn_attn_bilstm, t cnn_attn)",
    ),
    COMMON[0],
    COMMON[1],
    COMMON[2],
    COMMON[3],
    COMMON[4],
    COMMON[5],
    COMMON[6],
    COMMON[7],
    COMMON[8],
    COMMON[9],
];

const FUSION_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "fusion",
        ParamType::Enum(FUSIONS),
        Some("\"conformer\""),
        "fusion head on X_M = [H_V : H_A : H_T]",
    ),
    ParamSpec::new(
        "attention",
        ParamType::Enum(ATTENTIONS),
        Some("\"tanh\""),
        "self-attention of the attention/transformer/conformer fusions: the paper's eq. 16 (tanh) or the scaled dot product",
    ),
    ParamSpec::new(
        "multitask",
        ParamType::Bool,
        Some("true"),
        "also train V, A, T heads on their own labels (loss weights in `weights`)",
    ),
    ParamSpec::new(
        "weights",
        ParamType::FloatList,
        Some("[0.3, 0.2, 0.2, 0.3]"),
        "multi-task loss weights M, V, A, T",
    ),
    ParamSpec::new(
        "pretrained",
        ParamType::Bool,
        Some("true"),
        "load the stage-one encoders and freeze them (false: the paper's \"w/o pre-train\")",
    ),
    COMMON[0],
    COMMON[1],
    COMMON[2],
    COMMON[3],
    COMMON[4],
    COMMON[5],
    COMMON[6],
    COMMON[7],
    COMMON[8],
    COMMON[9],
];

const PROBE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "target",
        ParamType::Str,
        Some("\"m\""),
        "whose labels: m (multimodal), or t, a, v (a labels stage with source iua)",
    ),
    ParamSpec::new(
        "label",
        ParamType::Str,
        Some("\"acc3\""),
        "labels column of class ids (acc2, acc3, acc5, class, ...)",
    ),
    ParamSpec::new("classes", ParamType::Int, Some("3"), "number of classes"),
    ParamSpec::new(
        "l2",
        ParamType::FloatList,
        Some("[0.0001, 0.001, 0.01, 0.1, 1.0]"),
        "L2 weights tried; the best on the validation split is kept",
    ),
    ParamSpec::new(
        "iterations",
        ParamType::Int,
        Some("400"),
        "accelerated gradient steps per fit",
    ),
    ParamSpec::new(
        "fold",
        ParamType::Int,
        Some("-1"),
        "the split's fold (leave-one-session-out; -1: a split with one fold)",
    ),
];

impl Kind for TrainUnimodal {
    fn kind(&self) -> &'static str {
        "train_unimodal"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch"]
    }
    fn version(&self) -> u32 {
        5
    }
    fn about(&self) -> &'static str {
        "stage one: an encoder + classifier on one modality's features (inputs: features, labels, split)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        UNI_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        tables::TRAINING
    }
    fn roles(&self) -> &'static [Role] {
        TRAIN_ROLES
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        curve_report(t)
    }
    fn figures(&self, _p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures(t)
    }
    fn figures_over(
        &self,
        _p: &Params,
        tables: &[(String, &RecordBatch)],
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures_over(tables)
    }
}

impl Kind for ExportHidden {
    fn reports(&self) -> bool {
        true
    }
    fn table_reads(&self, _params: &Params) -> &'static [&'static str] {
        &["part", "clip_id", "split", "y", "hidden"]
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let d = col::<Int64Array>(t, "dim").ok()?;
        Some(format!(
            "{} clips, {}-d hidden vectors",
            t.num_rows(),
            if t.num_rows() > 0 { d.value(0) } else { 0 }
        ))
    }
    fn figures(
        &self,
        _p: &Params,
        t: &RecordBatch,
    ) -> Vec<(String, Result<Vec<u8>, crate::StageError>)> {
        let (Ok(y), Ok(v)) = (col::<Int64Array>(t, "y"), col::<ListArray>(t, "values")) else {
            return Vec::new();
        };
        let rows: Vec<Vec<f32>> = (0..t.num_rows())
            .map(|r| {
                let l = v.value(r);
                l.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        let pts: Vec<(f64, f64, i64)> = crate::metrics::figures::pca2(&rows)
            .into_iter()
            .zip(y.values().iter())
            .map(|((a, b), &c)| (a, b, c))
            .collect();
        let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        vec![(
            "hidden-pca".to_string(),
            crate::metrics::figures::scatter_png(
                &pts,
                &names,
                "hidden vectors, first two principal components",
            ),
        )]
    }
    fn kind(&self) -> &'static str {
        "export_hidden"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per clip: a trained encoder's hidden vector H (input: a train_unimodal stage)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &["clip_id", "split", "y", "frames", "dim", "values"]
    }
}

impl Kind for TrainFusion {
    fn kind(&self) -> &'static str {
        "train_fusion"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch"]
    }
    fn version(&self) -> u32 {
        6
    }
    fn about(&self) -> &'static str {
        "stage two: fuse three encoders' H vectors (inputs: train_unimodal V, A, T; their features V, A, T; labels; split)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        FUSION_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (8, 8)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        tables::TRAINING
    }
    fn roles(&self) -> &'static [Role] {
        FUSION_ROLES
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        curve_report(t)
    }
    fn figures(&self, _p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures(t)
    }
    fn figures_over(
        &self,
        _p: &Params,
        tables: &[(String, &RecordBatch)],
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures_over(tables)
    }
}

impl Kind for LinearProbe {
    fn kind(&self) -> &'static str {
        "linear_probe"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch"]
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "per split: a linear probe's Acc, F1, UA on mean-pooled features, beside the majority-class baseline (inputs: features, labels, split)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PROBE_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &["split", "acc", "base_acc", "ua", "base_ua"]
    }
    fn roles(&self) -> &'static [Role] {
        TRAIN_ROLES
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let f = |c: &str, r: usize| crate::table::f64_col(t, c).ok().map(|a| a.value(r));
        let mut s = format!(
            "{:<7} {:>9} {:>9} {:>9} {:>9}",
            "split", "probe", "majority", "probe UA", "maj. UA"
        );
        for r in 0..t.num_rows() {
            s.push_str(&format!(
                "\n{:<7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                split.value(r),
                100.0 * f("acc", r)?,
                100.0 * f("base_acc", r)?,
                100.0 * f("ua", r)?,
                100.0 * f("base_ua", r)?
            ));
        }
        Some(s)
    }
}
