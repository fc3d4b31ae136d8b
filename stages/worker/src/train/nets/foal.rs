//! Foal-Net (paper 004): align before fuse. Audio and video token sequences are aligned by a
//! batch-contrastive loss (AVEL) and a hard-negative matching task (MEM), then fused by stacked
//! two-way cross-attention for emotion classification.
//!
//! - Inputs: cached pretrained feature sequences (audio `[T_a, D_a]`, video `[T_v, D_v]`). Each
//!   passes a trainable input layer (Linear, GELU) into the model width: Z^a, Z^v. The paper's
//!   losses act on its encoders' outputs; with frozen cached features they act on these layers,
//!   or the alignment could not reach the classifier at all.
//! - Fusion, `layers` times: F^a <- LN(MHA(F^a, F^v) + F^a), F^v <- LN(MHA(F^v, F^a) + F^v), both
//!   from the previous layer's outputs; average-pooled over time, concatenated, an MLP classifier.
//! - AVEL: E^m = l2-normalised MLP_m(mean_t Z^m) (two linear layers, `projection` units, dropout),
//!   C^{a2v} = eps E^a E^v^T, C^{v2a} its transpose; targets C~_ij = 1 when clips i and j of the
//!   batch share the label. L_a = -1/2 sum_ij (logsoftmax(C^{a2v})_ij + logsoftmax(C^{v2a})_ij)
//!   C~_ij / N.
//! - MEM: for each clip the most similar clip of another label is its hard negative; the fusion
//!   runs on (Z^a, Z^v_neg) and (Z^a_neg, Z^v) as well, and a matching head per query modality
//!   tells positive pairs (1) from negative ones (0) by cross-entropy; L_m is the mean of the two.
//!   Clips whose batch holds no other label have no negative and sit out.
//! - Loss: L_ce + L_a + lambda L_m.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::train::nets::layers::{masked_mean as pool, row_mask, Mha};

pub struct FoalCfg {
    pub d: i64,
    pub heads: i64,
    pub layers: i64,
    pub projection: i64,
    pub projection_dropout: f64,
    pub dropout: f64,
    pub avel: bool,
    pub mem: bool,
    pub lambda: f64,
    pub scale: f64,
}

#[derive(Debug)]
pub struct FoalNet {
    input: [nn::Linear; 2],
    layers: Vec<[(Mha, nn::LayerNorm); 2]>,
    proj: [(nn::Linear, nn::Linear); 2],
    matching: [nn::Linear; 2],
    cls: (nn::Linear, nn::Linear),
    c: FoalCfgCopy,
}

#[derive(Debug, Clone, Copy)]
struct FoalCfgCopy {
    dropout: f64,
    projection_dropout: f64,
    avel: bool,
    mem: bool,
    lambda: f64,
    scale: f64,
}

impl FoalNet {
    /// `dims`: the audio and video feature widths, in that order.
    pub fn new(
        vs: &nn::Path,
        dims: [i64; 2],
        outputs: i64,
        c: &FoalCfg,
    ) -> Result<Self, crate::StageError> {
        if c.d % c.heads != 0 {
            return Err(format!("d_model {} is not a multiple of heads {}", c.d, c.heads).into());
        }
        let lin = |p: nn::Path, i: i64, o: i64| nn::linear(p, i, o, Default::default());
        let ln = |p: nn::Path| nn::layer_norm(p, vec![c.d], Default::default());
        Ok(FoalNet {
            input: [
                lin(vs / "in_a", dims[0], c.d),
                lin(vs / "in_v", dims[1], c.d),
            ],
            layers: (0..c.layers.max(1))
                .map(|l| {
                    let p = vs / format!("layer{l}");
                    [
                        (Mha::new(&p / "a2v", c.d, c.d, c.heads), ln(&p / "ln_a")),
                        (Mha::new(&p / "v2a", c.d, c.d, c.heads), ln(&p / "ln_v")),
                    ]
                })
                .collect(),
            proj: [
                (
                    lin(vs / "proj_a" / "a", c.d, c.projection),
                    lin(vs / "proj_a" / "b", c.projection, c.projection),
                ),
                (
                    lin(vs / "proj_v" / "a", c.d, c.projection),
                    lin(vs / "proj_v" / "b", c.projection, c.projection),
                ),
            ],
            matching: [lin(vs / "match_a", c.d, 2), lin(vs / "match_v", c.d, 2)],
            cls: (
                lin(vs / "cls_a", 2 * c.d, c.d),
                lin(vs / "cls_b", c.d, outputs),
            ),
            c: FoalCfgCopy {
                dropout: c.dropout,
                projection_dropout: c.projection_dropout,
                avel: c.avel,
                mem: c.mem,
                lambda: c.lambda,
                scale: c.scale,
            },
        })
    }

    /// Z^m and its step mask.
    fn encode(&self, xs: &[Tensor]) -> [(Tensor, Tensor); 2] {
        [0, 1].map(|m| (self.input[m].forward(&xs[m]).gelu("none"), row_mask(&xs[m])))
    }

    /// The fusion of (Z^a, Z^v): pooled F_out^a and F_out^v.
    fn fuse(&self, a: &(Tensor, Tensor), v: &(Tensor, Tensor), train: bool) -> (Tensor, Tensor) {
        let p = self.c.dropout;
        let (mut fa, mut fv) = (a.0.shallow_clone(), v.0.shallow_clone());
        for [(att_a, ln_a), (att_v, ln_v)] in &self.layers {
            let na = ln_a.forward(&(att_a.forward_t(&fa, &fv, Some(&v.1), p, train) + &fa));
            let nv = ln_v.forward(&(att_v.forward_t(&fv, &fa, Some(&a.1), p, train) + &fv));
            (fa, fv) = (na, nv);
        }
        (pool(&fa, &a.1), pool(&fv, &v.1))
    }

    fn classify(&self, fa: &Tensor, fv: &Tensor, train: bool) -> Tensor {
        let h = self.cls.0.forward(&Tensor::cat(&[fa, fv], 1)).relu();
        self.cls.1.forward(&h.dropout(self.c.dropout, train))
    }

    /// Logits, and in training the weighted alignment and matching loss for the batch's labels.
    pub fn forward_t(&self, xs: &[Tensor], y: &Tensor, train: bool) -> (Tensor, Option<Tensor>) {
        let [a, v] = self.encode(xs);
        let (fa, fv) = self.fuse(&a, &v, train);
        let logits = self.classify(&fa, &fv, train);
        if !train || !(self.c.avel || self.c.mem) {
            return (logits, None);
        }
        let n = y.size()[0];
        let same = y
            .unsqueeze(1)
            .eq_tensor(&y.unsqueeze(0))
            .to_kind(Kind::Float);
        let emb = |m: usize, z: &(Tensor, Tensor)| {
            let h = self.proj[m].0.forward(&pool(&z.0, &z.1)).relu();
            let e = self.proj[m]
                .1
                .forward(&h.dropout(self.c.projection_dropout, train));
            &e / e
                .norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-8)
        };
        let a2v = emb(0, &a).matmul(&emb(1, &v).transpose(0, 1)) * self.c.scale;
        let v2a = a2v.transpose(0, 1);
        let mut loss = logits.zeros_like().sum(Kind::Float);
        if self.c.avel {
            let t = |c: &Tensor| (c.log_softmax(1, Kind::Float) * &same).sum(Kind::Float);
            loss -= (t(&a2v) + t(&v2a)) * 0.5 / n as f64;
        }
        if self.c.mem {
            // Hard negatives by the alignment similarities, without letting the choice itself
            // carry gradients.
            let others = same.lt(0.5);
            let has = others.any_dim(1, false);
            if bool::try_from(has.any()).unwrap_or(false) {
                let keep = has.nonzero().squeeze_dim(1);
                let hard = |c: &Tensor| {
                    c.detach()
                        .masked_fill(&others.logical_not(), f64::NEG_INFINITY)
                        .argmax(1, false)
                };
                let (neg_v, neg_a) = (hard(&a2v), hard(&v2a));
                let sel = |z: &(Tensor, Tensor), idx: &Tensor| {
                    (z.0.index_select(0, idx), z.1.index_select(0, idx))
                };
                let (na, _) = self.fuse(&a, &sel(&v, &neg_v), train);
                let (_, nv) = self.fuse(&sel(&a, &neg_a), &v, train);
                let k = keep.size()[0];
                let target = Tensor::cat(
                    &[
                        Tensor::ones([k], (Kind::Int64, y.device())),
                        Tensor::zeros([k], (Kind::Int64, y.device())),
                    ],
                    0,
                );
                let ce = |m: usize, pos: &Tensor, neg: &Tensor| {
                    let both =
                        Tensor::cat(&[pos.index_select(0, &keep), neg.index_select(0, &keep)], 0);
                    self.matching[m]
                        .forward(&both)
                        .cross_entropy_for_logits(&target)
                };
                let lm = (ce(0, &fa, &na) + ce(1, &fv, &nv)) * 0.5;
                loss += lm * self.c.lambda;
            }
        }
        (logits, Some(loss))
    }

    /// The fused, pooled audio and video features side by side.
    pub fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        let [a, v] = self.encode(xs);
        let (fa, fv) = self.fuse(&a, &v, train);
        Tensor::cat(&[fa, fv], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn net(vs: &nn::VarStore, avel: bool, mem: bool) -> FoalNet {
        let c = FoalCfg {
            d: 32,
            heads: 4,
            layers: 2,
            projection: 16,
            projection_dropout: 0.5,
            dropout: 0.1,
            avel,
            mem,
            lambda: 0.01,
            scale: 10.0,
        };
        FoalNet::new(&vs.root(), [12, 8], 4, &c).unwrap()
    }

    #[test]
    fn auxiliary_losses_follow_the_switches_and_the_batch_labels() {
        tch::manual_seed(0);
        let xs = [
            Tensor::randn([6, 5, 12], (Kind::Float, Device::Cpu)),
            Tensor::randn([6, 3, 8], (Kind::Float, Device::Cpu)),
        ];
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 3]);
        let vs = nn::VarStore::new(Device::Cpu);
        let base = net(&vs, false, false);
        let (logits, aux) = base.forward_t(&xs, &y, true);
        assert_eq!(logits.size(), vec![6, 4]);
        assert!(aux.is_none());
        let vs = nn::VarStore::new(Device::Cpu);
        let both = net(&vs, true, true);
        let l = f64::try_from(both.forward_t(&xs, &y, true).1.unwrap()).unwrap();
        assert!(l.is_finite() && l > 0.0, "{l}");
        // One label for the whole batch: every pair is a positive, nothing to match against.
        let vs = nn::VarStore::new(Device::Cpu);
        let mem = net(&vs, false, true);
        let one = Tensor::zeros([6], (Kind::Int64, Device::Cpu));
        let l = f64::try_from(mem.forward_t(&xs, &one, true).1.unwrap()).unwrap();
        assert_eq!(l, 0.0);
        assert!(
            both.forward_t(&xs, &y, false).1.is_none(),
            "no auxiliary loss in evaluation"
        );
    }
}
