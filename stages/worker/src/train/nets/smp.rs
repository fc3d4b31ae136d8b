//! The SMP network (paper 001, SPEC.md §4): per-modality attention-BiLSTMs, Symmetric Mutual
//! Promotion modules for the modality pairs, and one FC on [F_v, F_a, F_t, F_va, F_vt, F_at].
//!
//! Sizes the paper leaves open are params: `d` (SMP width), `heads`, `ffn` (inner FFN width),
//! `hidden` (BiLSTM size per direction) and the 1-D conv's `kernel`. The paper's "Pool" after
//! each SMP module is a mean over time.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use crate::train::nets::layers::{bilstm, sinusoid, Mha};

/// What the final FC reads: every term, only the bimodal F_xy, or only the unimodal F_x.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Terms {
    All,
    Pairs,
    Unimodal,
}

impl Terms {
    pub fn parse(s: &str) -> Result<Terms, crate::StageError> {
        match s {
            "all" => Ok(Terms::All),
            "pairs" => Ok(Terms::Pairs),
            "unimodal" => Ok(Terms::Unimodal),
            o => Err(format!("terms `{o}`: one of all, pairs, unimodal").into()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SmpCfg {
    pub d: i64,
    pub heads: i64,
    pub ffn: i64,
    pub hidden: i64,
    pub kernel: i64,
    pub dropout: f64,
    pub terms: Terms,
}

/// BiLSTM over the sequence, then additive attention pooling: e_t = uᵀ tanh(W s_t + b),
/// F = Σ softmax(e)_t s_t.
#[derive(Debug)]
struct AttnBiLstm {
    lstm: nn::LSTM,
    w: nn::Linear,
    u: nn::Linear,
}

impl AttnBiLstm {
    fn new(vs: nn::Path, dim: i64, hidden: i64) -> Self {
        let h2 = 2 * hidden;
        AttnBiLstm {
            lstm: bilstm(&vs / "lstm", dim, hidden),
            w: nn::linear(&vs / "w", h2, h2, Default::default()),
            u: nn::linear(
                &vs / "u",
                h2,
                1,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            ),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let (s, _) = self.lstm.seq(x); // [B, T, 2h]
        let e = self.u.forward(&self.w.forward(&s).tanh()); // [B, T, 1]
        let a = e.softmax(1, Kind::Float);
        (s * a).sum_dim_intlist(1, false, Kind::Float)
    }
}

/// One branch: LN(MHCA(X, Y) + X) -> LN(MHSA(.) + .) -> LN(FFN(.) + .).
#[derive(Debug)]
struct Branch {
    cross: Mha,
    ln1: nn::LayerNorm,
    own: Mha,
    ln2: nn::LayerNorm,
    ff_a: nn::Linear,
    ff_b: nn::Linear,
    ln3: nn::LayerNorm,
}

impl Branch {
    fn new(vs: nn::Path, c: &SmpCfg) -> Self {
        let ln = |n: &str| nn::layer_norm(&vs / n, vec![c.d], Default::default());
        Branch {
            cross: Mha::new(&vs / "cross", c.d, c.d, c.heads),
            ln1: ln("ln1"),
            own: Mha::new(&vs / "self", c.d, c.d, c.heads),
            ln2: ln("ln2"),
            ff_a: nn::linear(&vs / "ff_a", c.d, c.ffn, Default::default()),
            ff_b: nn::linear(&vs / "ff_b", c.ffn, c.d, Default::default()),
            ln3: ln("ln3"),
        }
    }
    fn forward_t(&self, x: &Tensor, y: &Tensor, p: f64, train: bool) -> Tensor {
        let h = self
            .ln1
            .forward(&(x + self.cross.forward_t(x, y, None, p, train).dropout(p, train)));
        let h = self
            .ln2
            .forward(&(&h + self.own.forward_t(&h, &h, None, p, train).dropout(p, train)));
        let f = self
            .ff_b
            .forward(&self.ff_a.forward(&h).relu())
            .dropout(p, train);
        self.ln3.forward(&(&h + f))
    }
}

/// One SMP module for the pair (x, y): both projected to d with sine-cosine positions; the
/// left branch queries with x, the right with y; their outputs side by side, mixed by a 1-D
/// conv to F_xy `[B, T, d]`, then pooled over time.
#[derive(Debug)]
struct SmpModule {
    proj_x: nn::Linear,
    proj_y: nn::Linear,
    left: Branch,
    right: Branch,
    conv: nn::Conv1D,
}

impl SmpModule {
    fn new(vs: nn::Path, dx: i64, dy: i64, c: &SmpCfg) -> Self {
        SmpModule {
            proj_x: nn::linear(&vs / "proj_x", dx, c.d, Default::default()),
            proj_y: nn::linear(&vs / "proj_y", dy, c.d, Default::default()),
            left: Branch::new(&vs / "left", c),
            right: Branch::new(&vs / "right", c),
            conv: nn::conv1d(
                &vs / "conv",
                2 * c.d,
                c.d,
                c.kernel,
                nn::ConvConfig {
                    padding: c.kernel / 2,
                    ..Default::default()
                },
            ),
        }
    }
    fn forward_t(&self, x: &Tensor, y: &Tensor, p: f64, train: bool) -> Tensor {
        let (t, d) = (x.size()[1], self.proj_x.ws.size()[0]);
        let pe = sinusoid(t, d).to_device(x.device());
        let a = self.proj_x.forward(x) + &pe;
        let b = self.proj_y.forward(y) + &pe;
        let l = self.left.forward_t(&a, &b, p, train);
        let r = self.right.forward_t(&b, &a, p, train);
        let f = self
            .conv
            .forward(&Tensor::cat(&[l, r], 2).transpose(1, 2))
            .transpose(1, 2);
        f.mean_dim(1, false, Kind::Float)
    }
}

/// The whole model over the modalities it was built for (inputs in the same order).
#[derive(Debug)]
pub struct Smp {
    intra: Vec<AttnBiLstm>,
    pairs: Vec<(usize, usize, SmpModule)>,
    dropout: f64,
    pub features: i64,
    pub head: nn::Linear,
}

impl Smp {
    /// `dims[k]` is input k's width, `names[k]` its modality letter; all inputs have one length.
    pub fn new(
        vs: &nn::Path,
        names: &[char],
        dims: &[i64],
        outputs: i64,
        c: &SmpCfg,
    ) -> Result<Smp, crate::StageError> {
        if c.d % c.heads != 0 {
            return Err(format!("d {} is not a multiple of heads {}", c.d, c.heads).into());
        }
        if c.kernel % 2 == 0 {
            return Err(format!("kernel {} must be odd to keep the length", c.kernel).into());
        }
        let uni = c.terms != Terms::Pairs || names.len() == 1;
        let intra: Vec<AttnBiLstm> = if uni {
            names
                .iter()
                .zip(dims)
                .map(|(n, &d)| AttnBiLstm::new(vs / format!("intra_{n}"), d, c.hidden))
                .collect()
        } else {
            Vec::new()
        };
        let mut pairs = Vec::new();
        if c.terms != Terms::Unimodal {
            for i in 0..names.len() {
                for j in i + 1..names.len() {
                    let name = format!("smp_{}{}", names[i], names[j]);
                    pairs.push((i, j, SmpModule::new(vs / name, dims[i], dims[j], c)));
                }
            }
        }
        let features = intra.len() as i64 * 2 * c.hidden + pairs.len() as i64 * c.d;
        Ok(Smp {
            head: nn::linear(vs / "head", features, outputs, Default::default()),
            intra,
            pairs,
            dropout: c.dropout,
            features,
        })
    }

    /// The concatenated terms `[B, features]` the FC reads.
    pub fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        let mut terms: Vec<Tensor> = self
            .intra
            .iter()
            .zip(xs)
            .map(|(m, x)| m.forward(x))
            .collect();
        for (i, j, m) in &self.pairs {
            terms.push(m.forward_t(&xs[*i], &xs[*j], self.dropout, train));
        }
        Tensor::cat(&terms, 1)
    }

    pub fn forward_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        self.head
            .forward(&self.hidden_t(xs, train).dropout(self.dropout, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::nets::layers::n_params;
    use tch::{Device, Kind};

    use crate::train::nets::layers::counts::{bilstm, lin};

    const CFG: SmpCfg = SmpCfg {
        d: 64,
        heads: 4,
        ffn: 128,
        hidden: 64,
        kernel: 3,
        dropout: 0.1,
        terms: Terms::All,
    };

    #[test]
    fn smp_has_the_derived_parameter_count_and_shapes() {
        // Widths of the SMP pipeline: vision 256 (face CNN) + 20 (geometry), audio 40 (MFCC)
        // + 256 (speaker encoder), text 384 (MiniLM); d 64, 4 heads, FFN 128, BiLSTM 64.
        let (dv, da, dt, d, h) = (276, 296, 384, 64, 64);
        // Attention-BiLSTM: BiLSTM + W (128 x 128) + u (128, no bias).
        let attn = |i: i64| bilstm(i, h) + lin(2 * h, 2 * h) + 2 * h;
        // Branch: MHCA + MHSA (4 projections each) + 3 LayerNorms + FFN 64 -> 128 -> 64.
        let branch = 2 * 4 * lin(d, d) + 3 * 2 * d + lin(d, 128) + lin(128, d);
        assert_eq!(branch, 50_240);
        // SMP module: two input projections, left and right branches, conv 128 -> 64 (k 3).
        let module = |x: i64, y: i64| lin(x, d) + lin(y, d) + 2 * branch + (2 * d * d * 3 + d);
        // FC on [F_v, F_a, F_t (128 each), F_va, F_vt, F_at (64 each)] -> 1 score.
        let want = attn(dv)
            + attn(da)
            + attn(dt)
            + module(dv, da)
            + module(dv, dt)
            + module(da, dt)
            + lin(3 * 128 + 3 * 64, 1);
        // 191,744 + 201,984 + 247,040 + 161,856 + 167,488 + 168,768 + 577 = 1,139,457.
        assert_eq!(want, 1_139_457);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Smp::new(&vs.root(), &['v', 'a', 't'], &[dv, da, dt], 1, &CFG).unwrap();
        assert_eq!(n_params(&vs), want);
        let xs: Vec<Tensor> = [dv, da, dt]
            .iter()
            .map(|&w| Tensor::randn([4, 32, w], (Kind::Float, Device::Cpu)))
            .collect();
        assert_eq!(m.hidden_t(&xs, false).size(), [4, 576]);
        assert_eq!(m.forward_t(&xs, true).size(), [4, 1]);

        // Table V's bimodal V+A: F_va alone (161,856 + 65 = 161,921) or F_v + F_a + F_va
        // (191,744 + 201,984 + 161,856 + 321 = 555,905).
        for (terms, want) in [(Terms::Pairs, 161_921), (Terms::All, 555_905)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let c = SmpCfg { terms, ..CFG };
            let m = Smp::new(&vs.root(), &['v', 'a'], &[dv, da], 1, &c).unwrap();
            assert_eq!(n_params(&vs), want, "{terms:?}");
            assert_eq!(m.forward_t(&xs[..2], false).size(), [4, 1]);
        }
    }

    #[test]
    fn smp_rejects_sizes_that_do_not_fit() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = SmpCfg { heads: 5, ..CFG };
        assert!(Smp::new(&vs.root(), &['v', 'a'], &[8, 8], 3, &c).is_err());
        let c = SmpCfg { kernel: 2, ..CFG };
        assert!(Smp::new(&vs.root(), &['v', 'a'], &[8, 8], 3, &c).is_err());
    }
}
