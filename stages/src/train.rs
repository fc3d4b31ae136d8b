//! Training stages on tch: `train_unimodal` (Uni2Mul stage one), `export_hidden`,
//! `train_fusion` (stage two) and `evaluate`.
//!
//! A training stage's table is long-format, one artifact per trained model:
//! - `part = curve`: one row per epoch (`epoch`, `train_loss`, `valid_loss`, `valid_acc`,
//!   `valid_f1`, `best`). No timings: the same key gives the same bytes;
//! - `part = checkpoint`: one row, the best-on-valid weights as safetensors bytes
//!   (`checkpoint`) and the model's shape (`config`, JSON);
//! - `part = prediction`: one row per clip (`clip_id`, `split`, `y`, `pred`, `probs`,
//!   `score`, `pred_score`, `hidden`) from the best weights.
//!
//! `label` picks the task. An integer column of the labels table (acc3, acc2, class, ...) is
//! classification on cross-entropy. The continuous `y` is MMSA-style regression: one output, L1
//! loss, the best epoch by validation loss; `score`/`pred_score` hold the true and predicted
//! values, and `y`/`pred` their three-way classes (CH-SIMS's edges, MOSI's sign) so that
//! confusion matrices and plots work for both.
//!
//! So `df[df.part == "curve"]` is the training curve, and the checkpoint file is
//! `open("m.safetensors", "wb").write(df.checkpoint.dropna().iloc[0])`.
//!
//! Training is deterministic for a seed on CPU: weights from `tch::manual_seed`, batches from a
//! seeded shuffle, and libtorch's CPU kernels reduce in a fixed order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, Float32Array, Int64Array, ListArray, StringArray,
};
use arrow::record_batch::RecordBatch;
use serde_json::json;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::audio::f32_lists;
use crate::nets::{Encoder, Fusion, ATTENTIONS, ENCODERS, FUSIONS};
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, col, f64s, i64s, str_col, strings};
use crate::{Output, Params, RunCtx, Stage, StageError};

/// Clips with features, a label and a split, in a fixed order.
pub struct Dataset {
    pub ids: Vec<String>,
    pub split: Vec<String>,
    pub task: Task,
    /// The target: a class id, or a continuous score.
    pub y: Vec<f64>,
    /// Class ids: the target's, or the score's three-way class.
    pub cls: Vec<i64>,
    /// One `[N, T, D]` tensor per feature input.
    pub x: Vec<Tensor>,
    /// Multi-label targets, one 0/1 flag per class and clip (empty for other tasks).
    pub flags: Vec<Vec<f32>>,
    /// Multi-label: each class's negatives / positives among the training clips, the weight of
    /// its positive term in the loss (MER-SEM-MBT's "weighted by the ratio of the number of
    /// positive and negative samples").
    pub pos_weight: Vec<f64>,
}

impl Dataset {
    /// The training target of every clip: class ids, scores or multi-label flags.
    fn targets(&self) -> Tensor {
        match self.task {
            Task::MultiLabel { classes } => {
                let v: Vec<f32> = self.flags.iter().flatten().copied().collect();
                Tensor::from_slice(&v).view([self.ids.len() as i64, classes])
            }
            t => t.target(&self.y),
        }
    }
    /// The task's loss of a batch's outputs against its targets.
    pub fn loss(&self, out: &Tensor, y: &Tensor) -> Tensor {
        match self.task {
            Task::MultiLabel { .. } => {
                let w: Vec<f32> = self.pos_weight.iter().map(|&w| w as f32).collect();
                out.binary_cross_entropy_with_logits::<Tensor>(
                    y,
                    None,
                    Some(Tensor::from_slice(&w)),
                    tch::Reduction::Mean,
                )
            }
            t => t.loss(out, y),
        }
    }
}

/// Per-dimension mean and standard deviation of one feature input, fitted on the training
/// clips. Features arrive on very different scales (L2-normalised embeddings near 0.06 per
/// dimension, log-mel in dB near -40), and at the papers' learning rates the first layers
/// barely move on the small ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A dimension whose training values barely vary is centred but not scaled up.
const MIN_STD: f64 = 1e-6;

impl Standardizer {
    /// Fitted on the rows of `x` `[N, T, D]` at `idx` that hold values: the all-zero steps that
    /// `pad` appends are padding, not observations.
    pub fn fit(x: &Tensor, idx: &[i64]) -> Standardizer {
        let d = x.size()[2];
        let xs = x
            .index_select(0, &Tensor::from_slice(idx))
            .to_kind(Kind::Double)
            .view([-1, d]);
        let m = crate::nets::row_mask(&xs.unsqueeze(1)).view([-1, 1]);
        let n = m.sum(Kind::Double).clamp_min(1.0);
        let mean = (&xs * &m).sum_dim_intlist(0, false, Kind::Double) / &n;
        let dev = (&xs - &mean) * &m;
        let var = (&dev * &dev).sum_dim_intlist(0, false, Kind::Double) / &n;
        let std = var.sqrt();
        let std = std.where_self(&std.gt(MIN_STD), &std.ones_like());
        let v = |t: Tensor| -> Vec<f32> {
            Vec::<f64>::try_from(t)
                .unwrap_or_default()
                .into_iter()
                .map(|x| x as f32)
                .collect()
        };
        Standardizer {
            mean: v(mean),
            std: v(std),
        }
    }
    /// `(x - mean) / std` on the steps that hold values; padding stays zero.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let mask = crate::nets::row_mask(x).unsqueeze(-1);
        let mean = Tensor::from_slice(&self.mean);
        let std = Tensor::from_slice(&self.std);
        (x - mean) / std * mask
    }
    pub fn to_json(&self) -> serde_json::Value {
        json!({"mean": self.mean, "std": self.std})
    }
    pub fn from_json(v: &serde_json::Value) -> Option<Standardizer> {
        let list = |k: &str| -> Option<Vec<f32>> {
            v.get(k)?
                .as_array()?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect()
        };
        let s = Standardizer {
            mean: list("mean")?,
            std: list("std")?,
        };
        (s.mean.len() == s.std.len()).then_some(s)
    }
}

impl Dataset {
    /// Indices of the clips of one split.
    pub fn idx_of(&self, split: &str) -> Vec<i64> {
        self.split
            .iter()
            .enumerate()
            .filter(|(_, x)| *x == split)
            .map(|(i, _)| i as i64)
            .collect()
    }
    /// Standardises feature input `k`: with the given statistics (a frozen encoder's, fitted
    /// when it was trained), else with statistics fitted on this dataset's training split.
    /// Returns what was applied, for the checkpoint's config.
    pub fn standardize(&mut self, k: usize, given: Option<Standardizer>) -> Standardizer {
        let s = given.unwrap_or_else(|| Standardizer::fit(&self.x[k], &self.idx_of("train")));
        self.x[k] = tch::no_grad(|| s.apply(&self.x[k]));
        s
    }
    /// Every feature input standardised on the training split when `on`; the config entry.
    pub fn standardize_all(&mut self, on: bool) -> serde_json::Value {
        if !on {
            return serde_json::Value::Null;
        }
        let used: Vec<Standardizer> = (0..self.x.len())
            .map(|k| self.standardize(k, None))
            .collect();
        standardize_json(&used)
    }
}

/// The `standardize` entry of a checkpoint config.
pub fn standardize_json(used: &[Standardizer]) -> serde_json::Value {
    serde_json::Value::Array(used.iter().map(Standardizer::to_json).collect())
}

/// Row index by clip id, steps, width, and the rows' values back to back.
type Matrices = (HashMap<String, usize>, i64, i64, Vec<f32>);

/// The `frames` x `dim` matrix of every item of a sharded feature input, by clip id. All items
/// must have one shape (a `pad` stage makes them so).
fn matrices(ctx: &RunCtx, input: usize) -> Result<Matrices, StageError> {
    let t = &ctx.inputs[input];
    let ids = str_col(t, "clip_id")?;
    let objects = str_col(t, "object").map_err(|_| {
        StageError::Input(format!(
            "input {input} is not a per-clip feature stage (pad, embed, logmel)"
        ))
    })?;
    let mut index = HashMap::new();
    let mut values = Vec::new();
    let mut shape: Option<(i64, i64)> = None;
    for r in 0..t.num_rows() {
        let item = ctx
            .shards
            .read(objects.value(r))
            .map_err(StageError::Input)?;
        let frames = col::<Int64Array>(&item, "frames")?.value(0);
        let dim = col::<Int64Array>(&item, "dim")?.value(0);
        match shape {
            None => shape = Some((frames, dim)),
            Some(s) if s != (frames, dim) => {
                return Err(StageError::Input(format!(
                    "clip {}: {frames} x {dim} features where others have {} x {}; pad the sequences to one length first",
                    ids.value(r),
                    s.0,
                    s.1
                )))
            }
            _ => {}
        }
        let l = col::<ListArray>(&item, "values")?.value(0);
        let v = l
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| StageError::Input("values are not f32".into()))?;
        index.insert(ids.value(r).to_string(), index.len());
        values.extend_from_slice(v.values());
    }
    let (t_, d) = shape.ok_or_else(|| StageError::Input(format!("input {input} has no clips")))?;
    Ok((index, t_, d, values))
}

/// What a model learns: classes (cross-entropy) or a continuous score (L1 loss, as MMSA trains
/// CH-SIMS and MOSI regression) on a scale's range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Task {
    Classify {
        classes: i64,
    },
    Regress {
        scale: &'static str,
    },
    /// Independent binary targets, one per class (MER-SEM-MBT's six emotion flags).
    MultiLabel {
        classes: i64,
    },
}

impl Task {
    /// The labels table's column `label`: integers are classes, floats a score. A score table
    /// with Acc-3 classes is CH-SIMS's [-1, 1], otherwise MOSI's [-3, 3].
    fn of(lt: &RecordBatch, label: &str, classes: i64) -> Result<Task, StageError> {
        let c = lt.column_by_name(label).ok_or_else(|| {
            StageError::param("label", format!("the labels table has no column `{label}`"))
        })?;
        match c.data_type() {
            arrow::datatypes::DataType::Int64 => Ok(Task::Classify { classes }),
            arrow::datatypes::DataType::List(_) => {
                let l = col::<ListArray>(lt, label)?;
                let n = (0..l.len())
                    .find(|&i| !l.is_null(i))
                    .map_or(0, |i| l.value(i).len() as i64);
                Ok(Task::MultiLabel { classes: n })
            }
            arrow::datatypes::DataType::Float64 => {
                let sims = col::<Int64Array>(lt, "acc3").is_ok_and(|a| a.null_count() < a.len());
                Ok(Task::Regress {
                    scale: if sims { "sims" } else { "mosi" },
                })
            }
            t => Err(StageError::param(
                "label",
                format!("column `{label}` is {t}, not a class id or a score"),
            )),
        }
    }
    /// Width of the model's output layer.
    pub fn outputs(self) -> i64 {
        match self {
            Task::Classify { classes } | Task::MultiLabel { classes } => classes,
            Task::Regress { .. } => 1,
        }
    }
    /// Classes of [`Dataset::cls`] and of predictions.
    pub fn classes(self) -> usize {
        match self {
            Task::Classify { classes } | Task::MultiLabel { classes } => classes.max(1) as usize,
            Task::Regress { .. } => 3,
        }
    }
    fn class_of(self, y: f64) -> i64 {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => y as i64,
            Task::Regress { scale } => crate::labels::three_way_id(scale, y),
        }
    }
    fn target(self, y: &[f64]) -> Tensor {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => {
                Tensor::from_slice(&y.iter().map(|&v| v as i64).collect::<Vec<_>>())
            }
            Task::Regress { .. } => {
                Tensor::from_slice(&y.iter().map(|&v| v as f32).collect::<Vec<_>>())
            }
        }
    }
    fn loss(self, out: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => out.cross_entropy_for_logits(y),
            Task::Regress { .. } => out.squeeze_dim(-1).l1_loss(y, tch::Reduction::Mean),
        }
    }
    /// Per clip: class probabilities (independent ones for multi-label), or the one predicted
    /// score.
    fn outputs_of(self, out: &Tensor) -> Tensor {
        match self {
            Task::Classify { .. } => out.softmax(-1, Kind::Float),
            Task::MultiLabel { .. } => out.sigmoid().to_kind(Kind::Float),
            Task::Regress { .. } => out.to_kind(Kind::Float),
        }
    }
    /// Predicted class from one row of [`Task::outputs_of`].
    fn predict(self, out: &[f32]) -> i64 {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |x| x.0 as i64),
            Task::Regress { .. } => self.class_of(out.first().copied().unwrap_or(0.0) as f64),
        }
    }
    fn config(self) -> serde_json::Value {
        match self {
            Task::Classify { classes } => json!({"task": "classify", "classes": classes}),
            Task::Regress { scale } => json!({"task": "regress", "scale": scale, "classes": 3}),
            Task::MultiLabel { classes } => json!({"task": "multilabel", "classes": classes}),
        }
    }
}

/// Joins feature inputs `feats`, the labels table (rows of `target`, column `label`) and the
/// split table on clip id. Clips missing from any of them are left out.
pub fn dataset(
    ctx: &RunCtx,
    feats: &[usize],
    (labels, split): (usize, usize),
    target: &str,
    label: &str,
    classes: i64,
    fold: Option<i64>,
) -> Result<Dataset, StageError> {
    let task = Task::of(&ctx.inputs[labels], label, classes)?;
    let flags = match task {
        Task::MultiLabel { .. } => flag_map(&ctx.inputs[labels], target, label)?,
        _ => HashMap::new(),
    };
    let y = if flags.is_empty() {
        label_map(&ctx.inputs[labels], target, label)?
    } else {
        // The first positive class stands for the clip in `y`/`pred` (IEMOCAP's one-hot
        // flags make it the clip's category).
        flags
            .iter()
            .map(|(k, f)| {
                let c = f.iter().position(|&v| v > 0.5).unwrap_or(0);
                (k.clone(), c as f64)
            })
            .collect()
    };
    let st = &ctx.inputs[split];
    let sid = str_col(st, "clip_id")?;
    let ssplit = str_col(st, "split")?;
    let sfold = col::<Int64Array>(st, "fold").ok();
    let folds: std::collections::BTreeSet<i64> = sfold
        .map(|f| (0..f.len()).map(|i| f.value(i)).collect())
        .unwrap_or_default();
    if fold.is_none() && folds.len() > 1 {
        return Err(StageError::param(
            "fold",
            format!(
                "the split has {} folds ({:?}); train one of them (a matrix over `fold` trains all)",
                folds.len(),
                folds
            ),
        ));
    }
    if let Some(k) = fold.filter(|k| !folds.contains(k)) {
        return Err(StageError::param(
            "fold",
            format!("the split has no fold {k} (it has {folds:?})"),
        ));
    }
    let mut mats = Vec::new();
    for &f in feats {
        mats.push(matrices(ctx, f)?);
    }
    let mut ds = Dataset {
        ids: vec![],
        split: vec![],
        task,
        y: vec![],
        cls: vec![],
        x: vec![],
        flags: vec![],
        pos_weight: vec![],
    };
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for r in 0..st.num_rows() {
        if let (Some(k), Some(f)) = (fold, sfold) {
            if f.value(r) != k {
                continue;
            }
        }
        let id = sid.value(r);
        let Some(&label) = y.get(id) else { continue };
        let idx: Option<Vec<usize>> = mats.iter().map(|m| m.0.get(id).copied()).collect();
        let Some(idx) = idx else { continue };
        ds.ids.push(id.to_string());
        ds.split.push(ssplit.value(r).to_string());
        ds.y.push(label);
        ds.cls.push(task.class_of(label));
        if let Some(f) = flags.get(id) {
            ds.flags.push(f.clone());
        }
        rows.push(idx);
    }
    if let Task::MultiLabel { classes } = task {
        for c in 0..classes as usize {
            let (mut pos, mut n) = (0usize, 0usize);
            for (f, s) in ds.flags.iter().zip(&ds.split) {
                if s == "train" {
                    n += 1;
                    pos += (f[c] > 0.5) as usize;
                }
            }
            // A class without positives in training gets weight 1 rather than infinity.
            ds.pos_weight.push(if pos == 0 {
                1.0
            } else {
                (n - pos) as f64 / pos as f64
            });
        }
    }
    for (k, (_, t, d, values)) in mats.iter().enumerate() {
        let per = (t * d) as usize;
        let mut v = Vec::with_capacity(rows.len() * per);
        for r in &rows {
            v.extend_from_slice(&values[r[k] * per..(r[k] + 1) * per]);
        }
        ds.x.push(Tensor::from_slice(&v).view([rows.len() as i64, *t, *d]));
    }
    for s in ["train", "valid"] {
        if !ds.split.iter().any(|x| x == s) {
            return Err(StageError::Input(format!(
                "no `{s}` clips with features and labels"
            )));
        }
    }
    Ok(ds)
}

/// Clip id -> label (a class id or a score) for one target (`m`, `t`, `a`, `v`) of a labels
/// table.
fn label_map(
    lt: &RecordBatch,
    target: &str,
    label: &str,
) -> Result<HashMap<String, f64>, StageError> {
    let lid = str_col(lt, "clip_id")?;
    let ltarget = str_col(lt, "target")?;
    let lval = lt
        .column_by_name(label)
        .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Float64).ok())
        .ok_or_else(|| {
            StageError::param(
                "label",
                format!("the labels table has no numeric column `{label}`"),
            )
        })?;
    let lval = lval
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .expect("cast to f64");
    let mut y = HashMap::new();
    for r in 0..lt.num_rows() {
        if ltarget.value(r) == target && !lval.is_null(r) {
            y.insert(lid.value(r).to_string(), lval.value(r));
        }
    }
    if y.is_empty() {
        return Err(StageError::Input(format!(
            "the labels table has no `{label}` labels for target `{target}`"
        )));
    }
    Ok(y)
}

/// Clip id -> 0/1 flags per class of a multi-label list column for one target.
fn flag_map(
    lt: &RecordBatch,
    target: &str,
    label: &str,
) -> Result<HashMap<String, Vec<f32>>, StageError> {
    let lid = str_col(lt, "clip_id")?;
    let ltarget = str_col(lt, "target")?;
    let l = col::<ListArray>(lt, label)?;
    let mut y = HashMap::new();
    for r in 0..lt.num_rows() {
        if ltarget.value(r) != target || l.is_null(r) {
            continue;
        }
        let v = l.value(r);
        let f = arrow::compute::cast(&v, &arrow::datatypes::DataType::Float32)?;
        let f = f
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("cast to f32");
        y.insert(lid.value(r).to_string(), f.values().to_vec());
    }
    if y.is_empty() {
        return Err(StageError::Input(format!(
            "the labels table has no `{label}` flags for target `{target}`"
        )));
    }
    Ok(y)
}

/// A small deterministic generator for batch order (xorshift64*), independent of libtorch's.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn permute(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

pub use crate::metrics::classification as metrics;

/// What `fit` keeps: the epoch with the best validation accuracy (ties: lower loss), the best
/// average per-class F1 (multi-label), or the lowest validation loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Select {
    Acc,
    F1,
    Loss,
}

pub struct TrainCfg {
    pub lr: f64,
    pub epochs: i64,
    pub batch: i64,
    pub seed: i64,
    /// Reduce-on-plateau: (factor, patience) on the validation loss, as PyTorch's
    /// `ReduceLROnPlateau(mode="min", threshold=1e-4)`.
    pub plateau: Option<(f64, i64)>,
    /// AdamW with this weight decay instead of Adam.
    pub adamw: Option<f64>,
    /// Learning rates of variable groups other than 0 (`nn::Path::set_group`): backbones
    /// fine-tuned more gently than the layers on top.
    pub group_lr: Vec<(usize, f64)>,
    /// None: the task's default (Acc for classes, F1 for multi-label, Loss for scores).
    pub select: Option<Select>,
    /// Stop after this many epochs without a better selected epoch.
    pub patience: Option<i64>,
}

impl Select {
    /// The `select` param: `val_loss` (or `loss`), `acc`, `f1`; `auto` leaves it to the task.
    pub fn param(p: &Params) -> Result<Option<Select>, StageError> {
        Ok(match p.str("select")? {
            "val_loss" | "loss" => Some(Select::Loss),
            "acc" => Some(Select::Acc),
            "f1" => Some(Select::F1),
            _ => None,
        })
    }
}

impl TrainCfg {
    pub(crate) fn from(p: &Params) -> Result<Self, StageError> {
        let c = TrainCfg {
            lr: p.f64("lr")?,
            epochs: p.i64("epochs")?,
            batch: p.i64("batch_size")?,
            seed: p.i64("seed")?,
            plateau: None,
            adamw: None,
            group_lr: Vec::new(),
            select: None,
            patience: None,
        };
        if c.epochs < 1 || c.batch < 1 || c.lr <= 0.0 {
            return Err(StageError::param(
                "epochs",
                "epochs and batch_size must be >= 1 and lr > 0",
            ));
        }
        Ok(c)
    }
}

/// A term a model adds to the main loss of a training batch.
pub enum Aux {
    /// (weight, logits of an auxiliary head, index into `fit`'s `aux_y`): multi-task training.
    Head(f64, Tensor, usize),
    /// A loss the model computed itself from the batch and its targets (contrastive terms).
    Loss(Tensor),
}

/// What a model reports for one batch, given its inputs, its targets and whether it trains:
/// logits for the main target, plus auxiliary terms.
pub type Forward<'a> = dyn Fn(&[Tensor], &Tensor, bool) -> (Tensor, Vec<Aux>) + 'a;

/// epoch, train loss, valid loss, valid acc, valid macro F1 (multi-label: the averages of the
/// per-class binary accuracy and F1).
pub type Epoch = (i64, f64, f64, f64, f64);

pub struct Trained {
    pub curve: Vec<Epoch>,
    pub best_epoch: i64,
    pub checkpoint: Vec<u8>,
    /// Per clip: class probabilities, or the predicted score.
    pub outputs: Vec<Vec<f32>>,
}

/// Clips per forward pass outside training: bounds memory on big datasets and big inputs
/// (end-to-end CNNs see every patch and face of every clip).
const EVAL_CHUNK: i64 = 64;

/// `f` over `idx` in chunks, the results concatenated along the first axis.
pub fn chunked(idx: &[i64], f: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let parts: Vec<Tensor> = idx
        .chunks(EVAL_CHUNK as usize)
        .map(|c| f(&Tensor::from_slice(c)))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Adam (or AdamW) on the task's loss; keeps the weights of the best epoch by `cfg.select`.
/// `aux_y[k]` are the labels of auxiliary head k.
pub fn fit(
    vs: &mut nn::VarStore,
    ds: &Dataset,
    cfg: &TrainCfg,
    main_weight: f64,
    aux_y: &[Tensor],
    forward: &Forward,
) -> Result<Trained, StageError> {
    let built = match cfg.adamw {
        Some(wd) => nn::AdamW {
            wd,
            ..Default::default()
        }
        .build(vs, cfg.lr),
        None => nn::Adam::default().build(vs, cfg.lr),
    };
    let mut opt = built.map_err(|e| StageError::Other(format!("optimizer: {e}")))?;
    // zero_grad registers the variables (and so their groups) with the optimizer.
    opt.zero_grad();
    for &(g, glr) in &cfg.group_lr {
        opt.set_lr_group(g, glr);
    }
    let task = ds.task;
    let select = cfg.select.unwrap_or(match task {
        Task::Classify { .. } => Select::Acc,
        Task::MultiLabel { .. } => Select::F1,
        Task::Regress { .. } => Select::Loss,
    });
    let y = ds.targets();
    let train_idx = ds.idx_of("train");
    let valid_idx = ds.idx_of("valid");
    let mut shuffle =
        Shuffle(0x9e37_79b9_7f4a_7c15 ^ (cfg.seed as u64).wrapping_mul(0x1000_0000_01b3));
    let mut curve = Vec::new();
    // (valid acc, valid f1, valid loss, epoch, weights) of the best epoch so far.
    type Best = (f64, f64, f64, i64, Vec<(String, Tensor)>);
    let mut best: Option<Best> = None;
    let take =
        |idx: &Tensor| -> Vec<Tensor> { ds.x.iter().map(|x| x.index_select(0, idx)).collect() };
    let logits_of =
        |idx: &[i64]| chunked(idx, &|i| forward(&take(i), &y.index_select(0, i), false).0);
    let (mut lr, mut plateau_best, mut bad_epochs) = (cfg.lr, f64::INFINITY, 0i64);
    let mut since_best = 0i64;
    for epoch in 1..=cfg.epochs {
        let order = shuffle.permute(train_idx.len());
        let mut total = 0.0;
        for chunk in order.chunks(cfg.batch as usize) {
            let ids: Vec<i64> = chunk.iter().map(|&k| train_idx[k]).collect();
            let idx = Tensor::from_slice(&ids);
            let yb = y.index_select(0, &idx);
            let (logits, aux) = forward(&take(&idx), &yb, true);
            let loss = total_loss(ds, (&logits, aux), (&yb, &idx), main_weight, aux_y);
            opt.backward_step(&loss);
            total += loss.double_value(&[]) * ids.len() as f64;
        }
        let (vloss, vacc, vf1) = tch::no_grad(|| {
            // The loss that training minimises, auxiliary heads and terms included, so that
            // a multi-task model is selected on what it was trained for.
            let (mut parts, mut loss) = (Vec::new(), 0.0);
            for c in valid_idx.chunks(EVAL_CHUNK as usize) {
                let idx = Tensor::from_slice(c);
                let yb = y.index_select(0, &idx);
                let (logits, aux) = forward(&take(&idx), &yb, false);
                let l = total_loss(ds, (&logits, aux), (&yb, &idx), main_weight, aux_y);
                loss += l.double_value(&[]) * c.len() as f64;
                parts.push(logits);
            }
            let logits = Tensor::cat(&parts, 0);
            let (acc, f1) = valid_scores(ds, &valid_idx, &logits);
            (loss / valid_idx.len().max(1) as f64, acc, f1)
        });
        curve.push((epoch, total / train_idx.len() as f64, vloss, vacc, vf1));
        if let Some((factor, patience)) = cfg.plateau {
            if vloss < plateau_best * (1.0 - 1e-4) {
                (plateau_best, bad_epochs) = (vloss, 0);
            } else {
                bad_epochs += 1;
                if bad_epochs > patience {
                    lr *= factor;
                    opt.set_lr(lr);
                    for &(g, glr) in &cfg.group_lr {
                        opt.set_lr_group(g, glr * lr / cfg.lr);
                    }
                    bad_epochs = 0;
                }
            }
        }
        let better = best.as_ref().is_none_or(|b| match select {
            Select::Acc => vacc > b.0 || (vacc == b.0 && vloss < b.2),
            Select::F1 => vf1 > b.1 || (vf1 == b.1 && vloss < b.2),
            Select::Loss => vloss < b.2,
        });
        if better {
            let snap = vs
                .variables()
                .into_iter()
                .map(|(k, v)| (k, v.detach().copy()))
                .collect();
            best = Some((vacc, vf1, vloss, epoch, snap));
            since_best = 0;
        } else {
            since_best += 1;
            if cfg.patience.is_some_and(|p| since_best >= p) {
                break;
            }
        }
    }
    let (_, _, _, best_epoch, snap) = best.expect("at least one epoch");
    tch::no_grad(|| {
        let vars = vs.variables();
        for (k, v) in &snap {
            if let Some(t) = vars.get(k) {
                t.shallow_clone().copy_(v);
            }
        }
    });
    let checkpoint = safetensors_bytes(&snap)?;
    let all: Vec<i64> = (0..ds.ids.len() as i64).collect();
    let out = tch::no_grad(|| task.outputs_of(&logits_of(&all)));
    Ok(Trained {
        curve,
        best_epoch,
        checkpoint,
        outputs: rows_of(&out),
    })
}

/// The weighted training objective of a batch: the main task's loss plus every auxiliary
/// head's and term's. `batch` is (targets of the batch, their indices into the dataset).
fn total_loss(
    ds: &Dataset,
    (logits, aux): (&Tensor, Vec<Aux>),
    (yb, idx): (&Tensor, &Tensor),
    main_weight: f64,
    aux_y: &[Tensor],
) -> Tensor {
    let mut loss = ds.loss(logits, yb) * main_weight;
    for a in aux {
        match a {
            Aux::Head(w, l, k) => loss += ds.task.loss(&l, &aux_y[k].index_select(0, idx)) * w,
            Aux::Loss(l) => loss += l,
        }
    }
    loss
}

/// Validation accuracy and macro F1; multi-label: the averages of per-class binary accuracy and
/// F1 at probability 0.5.
fn valid_scores(ds: &Dataset, idx: &[i64], logits: &Tensor) -> (f64, f64) {
    let task = ds.task;
    if let Task::MultiLabel { classes } = task {
        let probs = rows_of(&task.outputs_of(logits));
        let truth: Vec<Vec<f32>> = idx.iter().map(|&i| ds.flags[i as usize].clone()).collect();
        let rows: Vec<usize> = (0..idx.len()).collect();
        let b = crate::metrics::per_class(&truth, &probs, &rows, classes as usize);
        let n = classes.max(1) as f64;
        return (
            b.iter().map(|x| x.acc).sum::<f64>() / n,
            b.iter().map(|x| x.f1).sum::<f64>() / n,
        );
    }
    let pred = predictions(task, logits);
    let truth: Vec<i64> = idx.iter().map(|&i| ds.cls[i as usize]).collect();
    let (acc, f1, _, _) = metrics(&truth, &pred, task.classes());
    (acc, f1)
}

fn rows_of(t: &Tensor) -> Vec<Vec<f32>> {
    (0..t.size()[0])
        .map(|i| Vec::try_from(t.get(i)).unwrap_or_default())
        .collect()
}

/// Predicted classes of a batch of model outputs.
fn predictions(task: Task, out: &Tensor) -> Vec<i64> {
    rows_of(&task.outputs_of(out))
        .iter()
        .map(|o| task.predict(o))
        .collect()
}

fn safetensors_bytes(vars: &[(String, Tensor)]) -> Result<Vec<u8>, StageError> {
    let dir = tempfile_dir()?;
    let path = dir.join("weights.safetensors");
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &path)
        .map_err(|e| StageError::Other(format!("saving weights: {e}")))?;
    let b = std::fs::read(&path).map_err(|e| StageError::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(b)
}

fn load_safetensors(vs: &mut nn::VarStore, bytes: &[u8]) -> Result<(), StageError> {
    let dir = tempfile_dir()?;
    let path = dir.join("weights.safetensors");
    std::fs::write(&path, bytes).map_err(|e| StageError::io(&path, e))?;
    let r = vs
        .load(&path)
        .map_err(|e| StageError::Input(format!("loading a checkpoint: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn tempfile_dir() -> Result<std::path::PathBuf, StageError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "pipeline-ckpt-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).map_err(|e| StageError::io(&d, e))?;
    Ok(d)
}

/// The long-format table of a trained model (see the module docs).
pub(crate) fn model_table(
    ds: &Dataset,
    t: &Trained,
    config: serde_json::Value,
    hidden: Option<&Tensor>,
) -> Result<RecordBatch, StageError> {
    let nc = t.curve.len();
    let np = ds.ids.len();
    let n = nc + 1 + np;
    let mut part = vec!["curve"; nc];
    part.push("checkpoint");
    part.extend(std::iter::repeat_n("prediction", np));
    let curve_f = |f: fn(&Epoch) -> f64| -> ArrayRef {
        let mut v: Vec<Option<f64>> = t.curve.iter().map(|c| Some(f(c))).collect();
        v.resize(n, None);
        f64s(v)
    };
    let mut epoch: Vec<Option<i64>> = t.curve.iter().map(|c| Some(c.0)).collect();
    epoch.resize(n, None);
    let mut best: Vec<Option<bool>> = t.curve.iter().map(|c| Some(c.0 == t.best_epoch)).collect();
    best.resize(n, None);
    let mut ckpt = BinaryBuilder::new();
    let mut config = config;
    if let (Some(c), serde_json::Value::Object(t)) = (config.as_object_mut(), ds.task.config()) {
        c.extend(t);
    }
    let mut cfg: Vec<Option<String>> = vec![None; n];
    cfg[nc] = Some(config.to_string());
    for r in 0..n {
        if r == nc {
            ckpt.append_value(&t.checkpoint);
        } else {
            ckpt.append_null();
        }
    }
    let pre = |v: Vec<Option<String>>| -> Vec<Option<String>> {
        let mut out = vec![None; nc + 1];
        out.extend(v);
        out
    };
    let task = ds.task;
    let regress = matches!(task, Task::Regress { .. });
    let mut ys: Vec<Option<i64>> = vec![None; nc + 1];
    ys.extend(ds.cls.iter().map(|&y| Some(y)));
    let mut preds: Vec<Option<i64>> = vec![None; nc + 1];
    preds.extend(t.outputs.iter().map(|o| Some(task.predict(o))));
    let mut score: Vec<Option<f64>> = vec![None; nc + 1];
    let mut pred_score: Vec<Option<f64>> = vec![None; nc + 1];
    for (y, o) in ds.y.iter().zip(&t.outputs) {
        score.push(regress.then_some(*y));
        pred_score.push(regress.then(|| o.first().copied().unwrap_or(0.0) as f64));
    }
    let probs = if regress {
        vec![Vec::new(); np]
    } else {
        t.outputs.clone()
    };
    let lists = |rows: Vec<Vec<f32>>| -> ArrayRef {
        let mut all = vec![Vec::new(); nc + 1];
        all.extend(rows);
        f32_lists(all)
    };
    let hidden_rows: Vec<Vec<f32>> = match hidden {
        Some(h) => (0..np as i64)
            .map(|i| Vec::try_from(h.get(i)).unwrap_or_default())
            .collect(),
        None => vec![Vec::new(); np],
    };
    batch(vec![
        ("part", strings(&part)),
        ("epoch", i64s(epoch)),
        ("train_loss", curve_f(|c| c.1)),
        ("valid_loss", curve_f(|c| c.2)),
        ("valid_acc", curve_f(|c| c.3)),
        ("valid_f1", curve_f(|c| c.4)),
        ("best", Arc::new(BooleanArray::from(best)) as ArrayRef),
        ("checkpoint", Arc::new(ckpt.finish()) as ArrayRef),
        ("config", crate::table::opt_strings(cfg)),
        (
            "clip_id",
            crate::table::opt_strings(pre(ds.ids.iter().cloned().map(Some).collect())),
        ),
        (
            "split",
            crate::table::opt_strings(pre(ds.split.iter().cloned().map(Some).collect())),
        ),
        ("y", i64s(ys)),
        ("pred", i64s(preds)),
        ("probs", lists(probs)),
        ("score", f64s(score)),
        ("pred_score", f64s(pred_score)),
        ("hidden", lists(hidden_rows)),
        (
            "targets",
            lists(if ds.flags.is_empty() {
                vec![Vec::new(); np]
            } else {
                ds.flags.clone()
            }),
        ),
    ])
}

/// The checkpoint row of a training stage's table: (safetensors bytes, config).
fn checkpoint_of(t: &RecordBatch) -> Result<(Vec<u8>, serde_json::Value), StageError> {
    let part = str_col(t, "part")?;
    let ck = col::<arrow::array::BinaryArray>(t, "checkpoint")?;
    let cfg = str_col(t, "config")?;
    for r in 0..t.num_rows() {
        if part.value(r) == "checkpoint" {
            let c: serde_json::Value = serde_json::from_str(cfg.value(r))
                .map_err(|e| StageError::Input(format!("checkpoint config: {e}")))?;
            return Ok((ck.value(r).to_vec(), c));
        }
    }
    Err(StageError::Input(
        "the input is not a training stage's table (no checkpoint row)".into(),
    ))
}

const COMMON: [ParamSpec; 9] = [
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
    ),
    ParamSpec::new("lr", ParamType::Float, Some("0.0001"), "Adam learning rate"),
    ParamSpec::new(
        "epochs",
        ParamType::Int,
        Some("30"),
        "training epochs; the best-on-valid epoch's weights are kept",
    ),
    ParamSpec::new("batch_size", ParamType::Int, Some("32"), "clips per step"),
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
    ),
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

/// `train_unimodal`: one encoder on one modality's padded feature sequences, labelled with
/// that modality's labels (IUA) or the multimodal one (IMA), as the `labels` input was made.
pub struct TrainUnimodal;

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
];

impl Stage for TrainUnimodal {
    fn kind(&self) -> &'static str {
        "train_unimodal"
    }
    fn version(&self) -> u32 {
        4
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
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let mut cfg = TrainCfg::from(p)?;
        cfg.select = Select::param(p)?;
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let classes = p.i64("classes")?;
        let mut ds = dataset(
            ctx,
            &[0],
            (1, 2),
            p.str("modality")?,
            p.str("label")?,
            classes,
            None,
        )?;
        let standardized = ds.standardize_all(p.bool("standardize")?);
        let (t, d) = (ds.x[0].size()[1], ds.x[0].size()[2]);
        let arch = p.str("model")?;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let enc = Encoder::new(&vs.root(), arch, t, d, ds.task.outputs())
            .map_err(|e| StageError::param("model", e))?;
        let fwd = |x: &[Tensor], _: &Tensor, train: bool| (enc.forward_t(&x[0], train), Vec::new());
        let trained = fit(&mut vs, &ds, &cfg, 1.0, &[], &fwd)?;
        let hidden = tch::no_grad(|| enc.hidden_t(&ds.x[0], false));
        let config = json!({"model": arch, "steps": t, "dim": d, "outputs": ds.task.outputs(),
                            "hidden": enc.hidden, "standardize": standardized});
        Ok(Output {
            table: model_table(&ds, &trained, config, Some(&hidden))?,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        curve_report(t)
    }
}

pub(crate) fn curve_report(t: &RecordBatch) -> Option<String> {
    let part = str_col(t, "part").ok()?;
    let best = col::<BooleanArray>(t, "best").ok()?;
    let acc = crate::table::f64_col(t, "valid_acc").ok()?;
    let f1 = crate::table::f64_col(t, "valid_f1").ok()?;
    let ep = col::<Int64Array>(t, "epoch").ok()?;
    (0..t.num_rows())
        .find(|&r| part.value(r) == "curve" && best.value(r))
        .map(|r| {
            format!(
                "best epoch {}: valid acc {:.4}, macro F1 {:.4}",
                ep.value(r),
                acc.value(r),
                f1.value(r)
            )
        })
}

/// `export_hidden`: the per-clip hidden vectors (H) of a trained encoder, in the feature
/// layout (`frames` 1, `dim`, `values`) for plots and inspection.
pub struct ExportHidden;

impl ExportHidden {
    const NAMES: [&'static str; 3] = ["Negative", "Neutral", "Positive"];
}

impl Stage for ExportHidden {
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let d = col::<Int64Array>(t, "dim").ok()?;
        Some(format!(
            "{} clips, {}-d hidden vectors",
            t.num_rows(),
            if t.num_rows() > 0 { d.value(0) } else { 0 }
        ))
    }
    fn figures(&self, _p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, String>)> {
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
        let pts: Vec<(f64, f64, i64)> = crate::figures::pca2(&rows)
            .into_iter()
            .zip(y.values().iter())
            .map(|((a, b), &c)| (a, b, c))
            .collect();
        let names: Vec<String> = Self::NAMES.iter().map(|s| s.to_string()).collect();
        vec![(
            "hidden-pca".to_string(),
            crate::figures::scatter_png(
                &pts,
                &names,
                "hidden vectors, first two principal components",
            ),
        )]
    }
    fn kind(&self) -> &'static str {
        "export_hidden"
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
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let t = &ctx.inputs[0];
        let part = str_col(t, "part")?;
        let ids = str_col(t, "clip_id")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let hidden = col::<ListArray>(t, "hidden")?;
        let rows: Vec<usize> = (0..t.num_rows())
            .filter(|&r| part.value(r) == "prediction")
            .collect();
        let vals: Vec<Vec<f32>> = rows
            .iter()
            .map(|&r| {
                let l = hidden.value(r);
                l.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default()
            })
            .collect();
        let take_str = |a: &StringArray| -> Vec<String> {
            rows.iter().map(|&r| a.value(r).to_string()).collect()
        };
        let table = batch(vec![
            ("clip_id", strings(&take_str(ids))),
            ("split", strings(&take_str(split))),
            ("y", i64s(rows.iter().map(|&r| Some(y.value(r))).collect())),
            ("frames", i64s(vec![Some(1); rows.len()])),
            (
                "dim",
                i64s(vals.iter().map(|v| Some(v.len() as i64)).collect()),
            ),
            ("values", f32_lists(vals)),
        ])?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
}

/// `train_fusion`: Uni2Mul stage two. Inputs: the three `train_unimodal` stages (V, A, T), their
/// three feature stages, labels, split. With `pretrained` the encoders carry their stage-one
/// weights and are frozen; without, the same encoders start untrained and learn jointly.
pub struct TrainFusion;

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
];

impl Stage for TrainFusion {
    fn kind(&self) -> &'static str {
        "train_fusion"
    }
    fn version(&self) -> u32 {
        5
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
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let mut cfg = TrainCfg::from(p)?;
        cfg.select = Select::param(p)?;
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let label = p.str("label")?;
        let classes = p.i64("classes")?;
        let mut ds = dataset(ctx, &[3, 4, 5], (6, 7), "m", label, classes, None)?;
        let outputs = ds.task.outputs();
        let pretrained = p.bool("pretrained")?;
        let standardized = fusion_standardize(ctx, &mut ds, pretrained, p.bool("standardize")?)?;
        let multitask = p.bool("multitask")?;
        let w = p.f64_list("weights")?;
        if w.len() != 4 {
            return Err(StageError::param("weights", "four weights: M, V, A, T"));
        }
        // Unimodal labels for the auxiliary heads, aligned with the fusion dataset's clips.
        let mut aux_y = Vec::new();
        for target in ["v", "a", "t"] {
            let by = label_map(&ctx.inputs[6], target, label)?;
            let ys: Vec<f64> = ds
                .ids
                .iter()
                .map(|i| by.get(i).copied().unwrap_or(0.0))
                .collect();
            aux_y.push(ds.task.target(&ys));
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut frozen = nn::VarStore::new(Device::Cpu);
        let mut encoders = Vec::new();
        for (k, name) in ["v", "a", "t"].iter().enumerate() {
            let (bytes, c) = checkpoint_of(&ctx.inputs[k])?;
            let arch = c["model"].as_str().unwrap_or_default().to_string();
            let (t, d) = (ds.x[k].size()[1], ds.x[k].size()[2]);
            if c["steps"].as_i64() != Some(t) || c["dim"].as_i64() != Some(d) {
                return Err(StageError::Input(format!(
                    "encoder {name} was trained on {} x {} features, input {} has {t} x {d}",
                    c["steps"],
                    c["dim"],
                    k + 3
                )));
            }
            let store = if pretrained { &frozen } else { &vs };
            // Only H is used here, so stage one may have had another task (classes for a
            // regression fusion); its own head keeps its shape to load.
            let enc_out = c["outputs"].as_i64().unwrap_or(outputs);
            let enc = Encoder::new(&(store.root() / *name), &arch, t, d, enc_out)
                .map_err(StageError::Input)?;
            encoders.push((bytes, enc));
        }
        if pretrained {
            // Stage-one weights under each encoder's prefix, then frozen.
            let mut named = Vec::new();
            for (k, name) in ["v", "a", "t"].iter().enumerate() {
                let mut one = nn::VarStore::new(Device::Cpu);
                let c = checkpoint_of(&ctx.inputs[k])?.1;
                let _ = Encoder::new(
                    &one.root(),
                    c["model"].as_str().unwrap_or_default(),
                    ds.x[k].size()[1],
                    ds.x[k].size()[2],
                    c["outputs"].as_i64().unwrap_or(outputs),
                )
                .map_err(StageError::Input)?;
                load_safetensors(&mut one, &encoders[k].0)?;
                for (n, t) in one.variables() {
                    named.push((format!("{name}.{n}"), t));
                }
            }
            tch::no_grad(|| {
                let vars = frozen.variables();
                for (n, t) in &named {
                    if let Some(v) = vars.get(n) {
                        v.shallow_clone().copy_(t);
                    }
                }
            });
            frozen.freeze();
        }
        let features: i64 = encoders.iter().map(|e| e.1.hidden).sum();
        let fusion = Fusion::new(
            &(vs.root() / "fusion"),
            p.str("fusion")?,
            features,
            outputs,
            p.str("attention")?,
        )
        .map_err(StageError::Input)?;
        // Multi-task heads on each H; with frozen encoders these are new, trainable heads.
        let heads: Vec<nn::Linear> = encoders
            .iter()
            .zip(["v", "a", "t"])
            .map(|(e, n)| {
                nn::linear(
                    vs.root() / "aux" / n,
                    e.1.hidden,
                    outputs,
                    Default::default(),
                )
            })
            .collect();
        let main_w = if multitask { w[0] } else { 1.0 };
        // Frozen encoders run in eval mode, so their H is a constant of the clip: computed once
        // here, the training steps read it as the dataset's inputs instead of recomputing it.
        if pretrained {
            let all: Vec<i64> = (0..ds.ids.len() as i64).collect();
            let hs: Vec<Tensor> = tch::no_grad(|| {
                encoders
                    .iter()
                    .zip(&ds.x)
                    .map(|(e, xi)| chunked(&all, &|i| e.1.hidden_t(&xi.index_select(0, i), false)))
                    .collect()
            });
            ds.x = hs;
        }
        let fwd = |x: &[Tensor], _: &Tensor, train: bool| {
            let hs: Vec<Tensor> = if pretrained {
                x.iter().map(|h| h.shallow_clone()).collect()
            } else {
                encoders
                    .iter()
                    .zip(x)
                    .map(|(e, xi)| e.1.hidden_t(xi, train))
                    .collect()
            };
            let logits = fusion.forward_t(&Tensor::cat(&hs, 1), train);
            let aux = if multitask {
                heads
                    .iter()
                    .zip(&hs)
                    .enumerate()
                    .map(|(k, (h, hk))| Aux::Head(w[k + 1], h.forward(hk), k))
                    .collect()
            } else {
                Vec::new()
            };
            (logits, aux)
        };
        let trained = fit(&mut vs, &ds, &cfg, main_w, &aux_y, &fwd)?;
        let xm = tch::no_grad(|| {
            let hs: Vec<Tensor> = if pretrained {
                ds.x.iter().map(|h| h.shallow_clone()).collect()
            } else {
                encoders
                    .iter()
                    .zip(&ds.x)
                    .map(|(e, xi)| e.1.hidden_t(xi, false))
                    .collect()
            };
            Tensor::cat(&hs, 1)
        });
        let config = json!({"fusion": p.str("fusion")?, "features": features, "outputs": outputs,
                            "encoders": encoders.iter().map(|e| e.1.hidden).collect::<Vec<_>>(),
                            "standardize": standardized});
        Ok(Output {
            table: model_table(&ds, &trained, config, Some(&xm))?,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        curve_report(t)
    }
}

/// Standardises the fusion's three feature inputs. Frozen (pre-trained) encoders get exactly
/// the statistics they were trained with, or raw features if they were trained on raw ones,
/// whatever `on` says; encoders trained here follow `on`.
fn fusion_standardize(
    ctx: &RunCtx,
    ds: &mut Dataset,
    pretrained: bool,
    on: bool,
) -> Result<serde_json::Value, StageError> {
    if !pretrained {
        return Ok(ds.standardize_all(on));
    }
    let mut used = Vec::new();
    for k in 0..3 {
        let (_, c) = checkpoint_of(&ctx.inputs[k])?;
        match c["standardize"].get(0).and_then(Standardizer::from_json) {
            Some(s) if s.mean.len() as i64 != ds.x[k].size()[2] => {
                return Err(StageError::Input(format!(
                    "encoder {k} was standardised over {} dimensions, its features have {}",
                    s.mean.len(),
                    ds.x[k].size()[2]
                )))
            }
            Some(s) => used.push(Some(ds.standardize(k, Some(s)))),
            None => used.push(None),
        }
    }
    Ok(if used.iter().all(Option::is_none) {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(
            used.iter()
                .map(|s| {
                    s.as_ref()
                        .map_or(serde_json::Value::Null, Standardizer::to_json)
                })
                .collect(),
        )
    })
}

/// Row `r`'s majority-class baseline of each metric, formatted ("-" where the baseline has no
/// value, e.g. Corr of a constant); None for a table without baseline columns.
fn baseline_cells(
    t: &RecordBatch,
    metrics: &[crate::aggregate::Metric],
    r: usize,
) -> Option<Vec<String>> {
    t.column_by_name("base_acc")?;
    Some(
        metrics
            .iter()
            .map(|m| {
                crate::table::f64_col(t, &format!("base_{}", m.0))
                    .ok()
                    .and_then(|a| crate::table::opt_f64(a, r))
                    .map_or("-".to_string(), |v| crate::aggregate::fmt_metric(m, v))
            })
            .collect(),
    )
}

/// The majority-class baseline of a model's predictions table: the most frequent class of its
/// training clips, and for scores their median (the best constant under MMSA's L1 loss).
struct Baseline {
    major: i64,
    median: Option<f64>,
    classes: usize,
    scale: Option<&'static str>,
}

impl Baseline {
    fn of(t: &RecordBatch, classes: usize, scale: Option<&str>) -> Result<Baseline, StageError> {
        let part = str_col(t, "part")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let score = crate::table::f64_col(t, "score")?;
        let train: Vec<usize> = (0..t.num_rows())
            .filter(|&r| part.value(r) == "prediction" && split.value(r) == "train")
            .collect();
        let mut counts = vec![0usize; classes];
        for &r in &train {
            if let Some(c) = counts.get_mut(y.value(r) as usize) {
                *c += 1;
            }
        }
        // Ties go to the lower class id, as numpy's argmax does.
        let major = (0..classes).rev().max_by_key(|&c| counts[c]).unwrap_or(0) as i64;
        let mut s: Vec<f64> = train
            .iter()
            .filter(|&&r| !score.is_null(r))
            .map(|&r| score.value(r))
            .collect();
        s.sort_by(f64::total_cmp);
        let median = (!s.is_empty()).then(|| {
            let m = s.len() / 2;
            if s.len() % 2 == 1 {
                s[m]
            } else {
                (s[m - 1] + s[m]) / 2.0
            }
        });
        Ok(Baseline {
            major,
            median,
            classes,
            scale: match scale {
                Some("sims") => Some("sims"),
                Some(_) => Some("mosi"),
                None => None,
            },
        })
    }
    /// The baseline's metrics on clips with classes `ys` (and scores `scores`).
    fn scores(&self, ys: &[i64], scores: &[f64]) -> Vec<(String, Option<f64>)> {
        let pred = vec![self.major; ys.len()];
        let (acc, f1, wf1, _) = metrics(ys, &pred, self.classes);
        let (ua, wa) = crate::metrics::ua_wa(ys, &pred);
        let mut out: Vec<(String, Option<f64>)> = [
            ("acc", acc),
            ("f1_macro", f1),
            ("f1_weighted", wf1),
            ("ua", ua),
            ("wa", wa),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), Some(*v)))
        .collect();
        if let (Some(scale), Some(m)) = (self.scale, self.median) {
            let m = crate::labels::mmsa_metrics(scale, scores, &vec![m; scores.len()]);
            for (name, v) in crate::labels::MMSA_METRICS.iter().zip(m) {
                out.push((name.to_string(), v));
            }
        }
        out
    }
}

/// Multi-label models: the test split's binary scores per class (the paper's Table 2 layout).
fn per_class_table(p: &Params, t: &RecordBatch) -> Option<String> {
    let split = str_col(t, "split").ok()?;
    let r = (0..t.num_rows()).find(|&r| split.value(r) == "test")?;
    let get = |c: &str| -> Option<Vec<f32>> {
        let l = col::<ListArray>(t, c).ok()?.value(r);
        Some(l.as_any().downcast_ref::<Float32Array>()?.values().to_vec())
    };
    let (acc, wa, f1) = (get("class_acc")?, get("class_wa")?, get("class_f1")?);
    if acc.is_empty() {
        return None;
    }
    let names = p.str_list("names").unwrap_or_default();
    let mut s =
        String::from("\nPer class, test split:\n\n| class | Acc | WA | F1 |\n|---|---|---|---|\n");
    for c in 0..acc.len() {
        let name = names
            .get(c)
            .filter(|_| names.len() == acc.len())
            .cloned()
            .unwrap_or_else(|| c.to_string());
        s.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:.3} |\n",
            acc[c], wa[c], f1[c]
        ));
    }
    Some(s)
}

const EVAL_PARAMS: &[ParamSpec] = &[ParamSpec::new(
    "names",
    ParamType::StrList,
    Some(r#"["Negative", "Neutral", "Positive"]"#),
    "class names in figures",
)];

/// `evaluate`: accuracy, macro and weighted F1 and the confusion matrix per split, from a
/// training stage's predictions; for a regression model also MMSA's metrics of the scores
/// (`acc2`, `acc2_pos`, `acc3`, `acc5`, `acc7`, `f1_acc2`, `f1_acc2_pos`, `mae`, `corr`; null where the
/// scale has none). The class count and scale come from the model's checkpoint config.
pub struct Evaluate;

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        7
    }
    fn about(&self) -> &'static str {
        "per split: Acc, macro/weighted F1, UA, WA, confusion matrix of a training stage, and its per-clip outcomes; multi-label: per-class and average binary Acc, WA, F1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        EVAL_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let t = &ctx.inputs[0];
        let (_, config) = checkpoint_of(t)?;
        let classes = config["classes"].as_i64().unwrap_or(3).max(1) as usize;
        let scale = config["scale"]
            .as_str()
            .filter(|_| config["task"] == "regress");
        let part = str_col(t, "part")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let pred = col::<Int64Array>(t, "pred")?;
        let score = crate::table::f64_col(t, "score")?;
        let pred_score = crate::table::f64_col(t, "pred_score")?;
        let multi = config["task"] == "multilabel";
        let lists_of = |name: &str| -> Result<Vec<Vec<f32>>, StageError> {
            let l = col::<ListArray>(t, name)?;
            Ok((0..t.num_rows())
                .map(|r| {
                    l.value(r)
                        .as_any()
                        .downcast_ref::<Float32Array>()
                        .map(|a| a.values().to_vec())
                        .unwrap_or_default()
                })
                .collect())
        };
        let (targets, probs) = if multi {
            (lists_of("targets")?, lists_of("probs")?)
        } else {
            (vec![], vec![])
        };
        let baseline = Baseline::of(t, classes, scale)?;
        // Multi-label: each emotion's majority flag on the training split, for every clip.
        let base_flags = multi.then(|| {
            let train: Vec<usize> = (0..t.num_rows())
                .filter(|&r| part.value(r) == "prediction" && split.value(r) == "train")
                .collect();
            crate::metrics::majority_flags(&targets, &train, classes)
        });
        let mut base: Vec<Vec<(String, Option<f64>)>> = Vec::new();
        let mut rows = Vec::new();
        let mut mmsa: Vec<[Option<f64>; 9]> = Vec::new();
        // UA, WA; multi-label: the averages of per-class binary Acc, WA, F1 and the per-class values.
        let mut single: Vec<[Option<f64>; 2]> = Vec::new();
        let mut per_class: Vec<[Vec<f32>; 3]> = Vec::new();
        let clip_id = str_col(t, "clip_id")?;
        let mut outcomes: Vec<crate::bootstrap::Outcomes> = Vec::new();
        for s in ["train", "valid", "test"] {
            let keep: Vec<usize> = (0..t.num_rows())
                .filter(|&r| part.value(r) == "prediction" && split.value(r) == s)
                .collect();
            if keep.is_empty() {
                continue;
            }
            let ys: Vec<i64> = keep.iter().map(|&r| y.value(r)).collect();
            let ps: Vec<i64> = keep.iter().map(|&r| pred.value(r)).collect();
            let scores: Vec<f64> = keep.iter().map(|&r| score.value(r)).collect();
            outcomes.push(crate::bootstrap::Outcomes {
                ids: keep.iter().map(|&r| clip_id.value(r).to_string()).collect(),
                y: ys.clone(),
                pred: ps.clone(),
                score: scores.clone(),
                pred_score: keep.iter().map(|&r| pred_score.value(r)).collect(),
                classes,
                scale: scale.map(str::to_string),
            });
            base.push(match &base_flags {
                Some(flags) => {
                    let b = crate::metrics::per_class(&targets, flags, &keep, classes);
                    let avg = |f: fn(&crate::metrics::Binary) -> f64| {
                        Some(b.iter().map(f).sum::<f64>() / b.len().max(1) as f64)
                    };
                    vec![
                        ("avg_acc".to_string(), avg(|x| x.acc)),
                        ("avg_wa".to_string(), avg(|x| x.wa)),
                        ("avg_f1".to_string(), avg(|x| x.f1)),
                    ]
                }
                None => baseline.scores(&ys, &scores),
            });
            let (acc, f1, wf1, cm) = metrics(&ys, &ps, classes);
            if multi {
                let b = crate::metrics::per_class(&targets, &probs, &keep, classes);
                per_class.push([
                    b.iter().map(|x| x.acc as f32).collect(),
                    b.iter().map(|x| x.wa as f32).collect(),
                    b.iter().map(|x| x.f1 as f32).collect(),
                ]);
                single.push([None, None]);
            } else {
                let (ua, wa) = crate::metrics::ua_wa(&ys, &ps);
                single.push([Some(ua), Some(wa)]);
                per_class.push(Default::default());
            }
            rows.push((
                s,
                ys.len() as i64,
                acc,
                f1,
                wf1,
                cm.into_iter().flatten().collect::<Vec<i64>>(),
            ));
            mmsa.push(match scale {
                Some(scale) => crate::labels::mmsa_metrics(
                    scale,
                    &keep.iter().map(|&r| score.value(r)).collect::<Vec<_>>(),
                    &keep
                        .iter()
                        .map(|&r| pred_score.value(r))
                        .collect::<Vec<_>>(),
                ),
                None => [None; 9],
            });
        }
        let cms: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| r.5.iter().map(|&v| v as f32).collect())
            .collect();
        let mut cols = vec![
            (
                "split",
                strings(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            ),
            ("clips", i64s(rows.iter().map(|r| Some(r.1)).collect())),
            ("acc", f64s(rows.iter().map(|r| Some(r.2)).collect())),
            ("f1_macro", f64s(rows.iter().map(|r| Some(r.3)).collect())),
            (
                "f1_weighted",
                f64s(rows.iter().map(|r| Some(r.4)).collect()),
            ),
            ("classes", i64s(vec![Some(classes as i64); rows.len()])),
            ("confusion", f32_lists(cms)),
        ];
        for (k, name) in crate::labels::MMSA_METRICS.iter().enumerate() {
            cols.push((name, f64s(mmsa.iter().map(|m| m[k]).collect())));
        }
        cols.push(("ua", f64s(single.iter().map(|m| m[0]).collect())));
        cols.push(("wa", f64s(single.iter().map(|m| m[1]).collect())));
        let avg = |v: &Vec<f32>| {
            (!v.is_empty()).then(|| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64)
        };
        for (k, (a, c)) in [
            ("avg_acc", "class_acc"),
            ("avg_wa", "class_wa"),
            ("avg_f1", "class_f1"),
        ]
        .into_iter()
        .enumerate()
        {
            cols.push((a, f64s(per_class.iter().map(|m| avg(&m[k])).collect())));
            cols.push((
                c,
                f32_lists(per_class.iter().map(|m| m[k].clone()).collect()),
            ));
        }
        let mut names: Vec<&String> = base.iter().flatten().map(|(k, _)| k).collect();
        names.sort();
        names.dedup();
        let base_cols: Vec<(String, arrow::array::ArrayRef)> = names
            .iter()
            .map(|&name| {
                let v = base
                    .iter()
                    .map(|b| b.iter().find(|(k, _)| k == name).and_then(|x| x.1))
                    .collect();
                (format!("base_{name}"), f64s(v))
            })
            .collect();
        for (k, v) in &base_cols {
            cols.push((k.as_str(), v.clone()));
        }
        if multi {
            // Single-label scores of the flags' argmax would only confuse the tables.
            for (name, col) in cols.iter_mut() {
                if ["acc", "f1_macro", "f1_weighted"].contains(name) {
                    *col = f64s(vec![None; rows.len()]);
                }
            }
        }
        // Per clip, so that `compare` can bootstrap over clips as well as seeds.
        let o = &outcomes;
        let clip_cols = [
            (
                "clip_ids",
                crate::table::str_lists(&o.iter().map(|x| x.ids.clone()).collect::<Vec<_>>()),
            ),
            (
                "y_true",
                crate::table::i64_lists(&o.iter().map(|x| x.y.clone()).collect::<Vec<_>>()),
            ),
            (
                "y_pred",
                crate::table::i64_lists(&o.iter().map(|x| x.pred.clone()).collect::<Vec<_>>()),
            ),
            (
                "score_true",
                crate::table::f64_lists(&o.iter().map(|x| x.score.clone()).collect::<Vec<_>>()),
            ),
            (
                "score_pred",
                crate::table::f64_lists(
                    &o.iter().map(|x| x.pred_score.clone()).collect::<Vec<_>>(),
                ),
            ),
            (
                "scale",
                crate::table::opt_strings(o.iter().map(|x| x.scale.clone()).collect()),
            ),
        ];
        cols.extend(clip_cols);
        let table = batch(cols)?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn markdown(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let n = col::<Int64Array>(t, "clips").ok()?;
        let per_class = per_class_table(p, t).unwrap_or_default();
        let metrics = crate::aggregate::present_metrics(t, None);
        let mut s = format!(
            "| split | clips | {} |\n|---|---|{}\n",
            metrics.iter().map(|m| m.1).collect::<Vec<_>>().join(" | "),
            "---|".repeat(metrics.len())
        );
        for r in 0..t.num_rows() {
            let cells: Vec<String> = metrics
                .iter()
                .map(|m| {
                    Some(crate::aggregate::fmt_metric(
                        m,
                        crate::table::f64_col(t, m.0).ok()?.value(r),
                    ))
                })
                .collect::<Option<_>>()?;
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                split.value(r),
                n.value(r),
                cells.join(" | ")
            ));
            if let Some(b) = baseline_cells(t, &metrics, r) {
                s.push_str(&format!(
                    "| {} (majority) | | {} |\n",
                    split.value(r),
                    b.join(" | ")
                ));
            }
        }
        s.push_str(&per_class);
        Some(s)
    }
    fn figures(&self, p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, String>)> {
        let names = p.str_list("names").unwrap_or_default();
        let (Ok(split), Ok(cms)) = (str_col(t, "split"), col::<ListArray>(t, "confusion")) else {
            return Vec::new();
        };
        (0..t.num_rows())
            .filter(|&r| split.value(r) == "test")
            .map(|r| {
                let l = cms.value(r);
                let v = l
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default();
                let k = (v.len() as f64).sqrt() as usize;
                let cm: Vec<Vec<i64>> = v
                    .chunks(k.max(1))
                    .map(|c| c.iter().map(|&x| x as i64).collect())
                    .collect();
                (
                    "confusion-test".to_string(),
                    crate::figures::confusion_png(&cm, &names, "confusion matrix, test split"),
                )
            })
            .collect()
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let metrics = crate::aggregate::present_metrics(t, None);
        let mut s = format!(
            "{:<7} {}",
            "split",
            metrics
                .iter()
                .map(|m| format!("{:>15}", m.1))
                .collect::<String>()
        );
        for r in 0..t.num_rows() {
            s.push_str(&format!("\n{:<7} ", split.value(r)));
            for m in &metrics {
                let v = crate::table::f64_col(t, m.0).ok()?.value(r);
                s.push_str(&format!("{:>15}", crate::aggregate::fmt_metric(m, v)));
            }
            if let Some(b) = baseline_cells(t, &metrics, r) {
                s.push_str(&format!("\n{:<7} ", "  major."));
                for c in b {
                    s.push_str(&format!("{c:>15}"));
                }
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_sklearn_on_a_fixed_vector() {
        // sklearn.metrics on y = [0,0,1,1,2,2,2], p = [0,1,1,1,2,0,2]:
        //   accuracy 5/7; per-class F1 0.5, 0.8, 0.8; macro 0.7; weighted (2*.5+2*.8+3*.8)/7.
        let (acc, f1, wf1, cm) = metrics(&[0, 0, 1, 1, 2, 2, 2], &[0, 1, 1, 1, 2, 0, 2], 3);
        assert!((acc - 5.0 / 7.0).abs() < 1e-12);
        assert!((f1 - 0.7).abs() < 1e-12);
        assert!((wf1 - (1.0 + 1.6 + 2.4) / 7.0).abs() < 1e-12);
        assert_eq!(cm, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 2]]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = Shuffle(7).permute(50);
        let b = Shuffle(7).permute(50);
        let c = Shuffle(8).permute(50);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
}
