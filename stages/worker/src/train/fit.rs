//! The training loop every network shares: Adam(W), seeded batches, reduce-on-plateau, and
//! the best epoch kept by the selection rule; the params every training stage reads.

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

use crate::train::checkpoint::{safetensors_bytes, Epoch, Trained};
use crate::train::dataset::{Dataset, Task};
use crate::{Params, StageError};

/// A small deterministic generator for batch order (xorshift64*), independent of libtorch's.
pub(crate) struct Shuffle(u64);

impl Shuffle {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn permute(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

use crate::metrics::emotion::classification as metrics;

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

/// Clips per forward pass outside training: bounds memory on big datasets and big inputs
/// (end-to-end CNNs see every patch and face of every clip).
pub(crate) const EVAL_CHUNK: i64 = 64;

/// `f` over `idx` in chunks, the results concatenated along the first axis on the CPU. The
/// dataset stays on the CPU; a model on a GPU gets each chunk moved there ([`on`]).
pub fn chunked(idx: &[i64], f: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let parts: Vec<Tensor> = idx
        .chunks(EVAL_CHUNK as usize)
        .map(|c| f(&Tensor::from_slice(c)).to_device(Device::Cpu))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Tensors moved to `dev` (a no-op on the CPU).
pub fn on(dev: Device, xs: Vec<Tensor>) -> Vec<Tensor> {
    xs.into_iter().map(|x| x.to_device(dev)).collect()
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
    progress: &dyn stages::Progress,
) -> Result<Trained, StageError> {
    let mut opt = optimizer(vs, cfg)?;
    let task = ds.task;
    let select = cfg.select.unwrap_or(match task {
        Task::Classify { .. } => Select::Acc,
        Task::MultiLabel { .. } => Select::F1,
        Task::Regress { .. } => Select::Loss,
    });
    let dev = vs.device();
    let y = ds.targets();
    let train_idx = ds.idx_of("train");
    let valid_idx = ds.idx_of("valid");
    let mut shuffle =
        Shuffle(0x9e37_79b9_7f4a_7c15 ^ (cfg.seed as u64).wrapping_mul(0x1000_0000_01b3));
    let mut curve = Vec::new();
    // (valid acc, valid f1, valid loss, epoch, weights) of the best epoch so far.
    type Best = (f64, f64, f64, i64, Vec<(String, Tensor)>);
    let mut best: Option<Best> = None;
    let logits_of = |idx: &[i64]| {
        chunked(idx, &|i| {
            forward(
                &on(dev, ds.rows(i)),
                &y.index_select(0, i).to_device(dev),
                false,
            )
            .0
        })
    };
    let mut plateau = Plateau {
        lr: cfg.lr,
        best: f64::INFINITY,
        bad_epochs: 0,
        rule: cfg.plateau,
    };
    let mut since_best = 0i64;
    for epoch in 1..=cfg.epochs {
        let order: Vec<i64> = shuffle
            .permute(train_idx.len())
            .into_iter()
            .map(|k| train_idx[k])
            .collect();
        let (tloss, tacc, tf1) = train_epoch(
            &mut opt,
            ds,
            (&y, &order),
            cfg.batch as usize,
            (main_weight, aux_y),
            forward,
            dev,
        );
        let (vloss, vacc, vf1) = validate(ds, (&y, &valid_idx), (main_weight, aux_y), forward, dev);
        curve.push(Epoch {
            epoch,
            train_loss: tloss,
            train_acc: tacc,
            train_f1: tf1,
            valid_loss: vloss,
            valid_acc: vacc,
            valid_f1: vf1,
        });
        progress.epoch(epoch as usize, cfg.epochs as usize, vloss);
        if let Some(new_lr) = plateau.step(vloss) {
            opt.set_lr(new_lr);
            for &(g, glr) in &cfg.group_lr {
                opt.set_lr_group(g, glr * new_lr / cfg.lr);
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
                // On the CPU, where the checkpoint is written from.
                .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).copy()))
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

/// Adam, or AdamW with `cfg.adamw`'s weight decay, at `cfg.lr` and each group's own rate.
fn optimizer(vs: &nn::VarStore, cfg: &TrainCfg) -> Result<nn::Optimizer, StageError> {
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
    Ok(opt)
}

/// One pass over the training clips, in `order` (dataset indices), `batch` at a time: the
/// mean loss, and the accuracy and F1 of the batches' outputs as they came (training mode).
fn train_epoch(
    opt: &mut nn::Optimizer,
    ds: &Dataset,
    (y, order): (&Tensor, &[i64]),
    batch: usize,
    (main_weight, aux_y): (f64, &[Tensor]),
    forward: &Forward,
    dev: Device,
) -> (f64, f64, f64) {
    let mut total = 0.0;
    let mut outs = Vec::new();
    for ids in order.chunks(batch) {
        let idx = Tensor::from_slice(ids);
        let yb = y.index_select(0, &idx).to_device(dev);
        let (logits, aux) = forward(&on(dev, ds.rows(&idx)), &yb, true);
        outs.push(logits.detach().to_device(Device::Cpu));
        let loss = total_loss(ds, (&logits, aux), (&yb, &idx), main_weight, aux_y);
        opt.backward_step(&loss);
        total += loss.double_value(&[]) * ids.len() as f64;
    }
    if outs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (acc, f1) = tch::no_grad(|| valid_scores(ds, order, &Tensor::cat(&outs, 0)));
    (total / order.len() as f64, acc, f1)
}

/// The validation loss (the loss training minimises, auxiliary heads and terms included, so
/// that a multi-task model is selected on what it was trained for), accuracy and F1.
fn validate(
    ds: &Dataset,
    (y, valid_idx): (&Tensor, &[i64]),
    (main_weight, aux_y): (f64, &[Tensor]),
    forward: &Forward,
    dev: Device,
) -> (f64, f64, f64) {
    tch::no_grad(|| {
        let (mut parts, mut loss) = (Vec::new(), 0.0);
        for c in valid_idx.chunks(EVAL_CHUNK as usize) {
            let idx = Tensor::from_slice(c);
            let yb = y.index_select(0, &idx).to_device(dev);
            let (logits, aux) = forward(&on(dev, ds.rows(&idx)), &yb, false);
            let l = total_loss(ds, (&logits, aux), (&yb, &idx), main_weight, aux_y);
            loss += l.double_value(&[]) * c.len() as f64;
            parts.push(logits.to_device(Device::Cpu));
        }
        let logits = Tensor::cat(&parts, 0);
        let (acc, f1) = valid_scores(ds, valid_idx, &logits);
        (loss / valid_idx.len().max(1) as f64, acc, f1)
    })
}

/// Reduce-on-plateau: after more than `patience` epochs without a lower validation loss, the
/// learning rate is multiplied by `factor`.
struct Plateau {
    lr: f64,
    best: f64,
    bad_epochs: i64,
    /// (factor, patience); None: a constant rate.
    rule: Option<(f64, i64)>,
}

impl Plateau {
    /// The new learning rate, when this epoch's loss lowers it.
    fn step(&mut self, vloss: f64) -> Option<f64> {
        let (factor, patience) = self.rule?;
        if vloss < self.best * (1.0 - 1e-4) {
            (self.best, self.bad_epochs) = (vloss, 0);
            return None;
        }
        self.bad_epochs += 1;
        if self.bad_epochs <= patience {
            return None;
        }
        self.lr *= factor;
        self.bad_epochs = 0;
        Some(self.lr)
    }
}

/// The weighted training objective of a batch: the main task's loss plus every auxiliary
/// head's and term's. `batch` is (targets of the batch, their indices into the dataset).
pub(crate) fn total_loss(
    ds: &Dataset,
    (logits, aux): (&Tensor, Vec<Aux>),
    (yb, idx): (&Tensor, &Tensor),
    main_weight: f64,
    aux_y: &[Tensor],
) -> Tensor {
    let mut loss = ds.loss(logits, yb) * main_weight;
    for a in aux {
        match a {
            Aux::Head(w, l, k) => {
                let yk = aux_y[k].index_select(0, idx).to_device(l.device());
                loss += ds.task.loss(&l, &yk) * w
            }
            Aux::Loss(l) => loss += l,
        }
    }
    loss
}

/// Validation accuracy and macro F1; multi-label: the averages of per-class binary accuracy and
/// F1 at probability 0.5.
pub(crate) fn valid_scores(ds: &Dataset, idx: &[i64], logits: &Tensor) -> (f64, f64) {
    let task = ds.task;
    if let Task::MultiLabel { classes } = task {
        let probs = rows_of(&task.outputs_of(logits));
        let truth: Vec<Vec<f32>> = idx.iter().map(|&i| ds.flags[i as usize].clone()).collect();
        let rows: Vec<usize> = (0..idx.len()).collect();
        let b = crate::metrics::emotion::per_class(&truth, &probs, &rows, classes as usize);
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

pub(crate) fn rows_of(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_device(Device::Cpu);
    (0..t.size()[0])
        .map(|i| Vec::try_from(t.get(i)).unwrap_or_default())
        .collect()
}

/// Predicted classes of a batch of model outputs.
pub(crate) fn predictions(task: Task, out: &Tensor) -> Vec<i64> {
    rows_of(&task.outputs_of(out))
        .iter()
        .map(|o| task.predict(o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
