//! The training set of a model: feature inputs, labels and split joined on clip id, the task
//! (classes, scores, flags) and feature standardisation fitted on the training clips.

use std::collections::HashMap;

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::table::{col, str_col};
use crate::{RunCtx, StageError};

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
    /// Every feature input's rows `idx`.
    pub fn rows(&self, idx: &Tensor) -> Vec<Tensor> {
        self.x.iter().map(|x| x.index_select(0, idx)).collect()
    }

    /// The training target of every clip: class ids, scores or multi-label flags.
    pub(crate) fn targets(&self) -> Tensor {
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
                    Some(Tensor::from_slice(&w).to_device(out.device())),
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
pub(crate) const MIN_STD: f64 = 1e-6;

impl Standardizer {
    /// Fitted on the rows of `x` `[N, T, D]` at `idx` that hold values: the all-zero steps that
    /// `pad` appends are padding, not observations.
    pub fn fit(x: &Tensor, idx: &[i64]) -> Standardizer {
        let d = x.size()[2];
        let xs = x
            .index_select(0, &Tensor::from_slice(idx))
            .to_kind(Kind::Double)
            .view([-1, d]);
        let m = crate::train::nets::layers::row_mask(&xs.unsqueeze(1)).view([-1, 1]);
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
        let mask = crate::train::nets::layers::row_mask(x).unsqueeze(-1);
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
pub(crate) type Matrices = (HashMap<String, usize>, i64, i64, Vec<f32>);

/// The `frames` x `dim` matrix of every item of a sharded feature input, by clip id. All items
/// must have one shape (a `pad` stage makes them so).
pub(crate) fn matrices(ctx: &RunCtx, input: usize) -> Result<Matrices, StageError> {
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
            .map_err(|e| StageError::Input(e.to_string()))?;
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
    pub(crate) fn of(lt: &RecordBatch, label: &str, classes: i64) -> Result<Task, StageError> {
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
    pub(crate) fn class_of(self, y: f64) -> i64 {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => y as i64,
            Task::Regress { scale } => crate::metrics::mmsa::three_way_id(scale, y),
        }
    }
    pub(crate) fn target(self, y: &[f64]) -> Tensor {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => {
                Tensor::from_slice(&y.iter().map(|&v| v as i64).collect::<Vec<_>>())
            }
            Task::Regress { .. } => {
                Tensor::from_slice(&y.iter().map(|&v| v as f32).collect::<Vec<_>>())
            }
        }
    }
    pub(crate) fn loss(self, out: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => out.cross_entropy_for_logits(y),
            Task::Regress { .. } => out.squeeze_dim(-1).l1_loss(y, tch::Reduction::Mean),
        }
    }
    /// Per clip: class probabilities (independent ones for multi-label), or the one predicted
    /// score.
    pub(crate) fn outputs_of(self, out: &Tensor) -> Tensor {
        match self {
            Task::Classify { .. } => out.softmax(-1, Kind::Float),
            Task::MultiLabel { .. } => out.sigmoid().to_kind(Kind::Float),
            Task::Regress { .. } => out.to_kind(Kind::Float),
        }
    }
    /// Predicted class from one row of [`Task::outputs_of`].
    pub(crate) fn predict(self, out: &[f32]) -> i64 {
        match self {
            Task::Classify { .. } | Task::MultiLabel { .. } => out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |x| x.0 as i64),
            Task::Regress { .. } => self.class_of(out.first().copied().unwrap_or(0.0) as f64),
        }
    }
    pub(crate) fn config(self) -> serde_json::Value {
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
pub(crate) fn label_map(
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
pub(crate) fn flag_map(
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
