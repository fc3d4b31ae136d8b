//! Layers that several networks share: multi-head (cross-)attention, the bidirectional LSTM,
//! padding masks, sine-cosine positions, and parameter counting.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// A bidirectional LSTM over `[B, T, i]` batches, hidden `h` per direction.
pub fn bilstm(vs: nn::Path, i: i64, h: i64) -> nn::LSTM {
    nn::lstm(
        vs,
        i,
        h,
        nn::RNNConfig {
            bidirectional: true,
            batch_first: true,
            ..Default::default()
        },
    )
}

/// Multi-head attention with its own Q, K, V and output projections; queries and keys/values may
/// come from different sequences (cross-modal attention) of different lengths and widths.
#[derive(Debug)]
pub struct Mha {
    heads: i64,
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
}

impl Mha {
    /// Queries of width `d`, keys/values of width `kv`; output width `d`.
    pub fn new(vs: nn::Path, d: i64, kv: i64, heads: i64) -> Self {
        let l = |n: &str, i: i64| nn::linear(&vs / n, i, d, Default::default());
        Mha {
            heads,
            q: l("q", d),
            k: l("k", kv),
            v: l("v", kv),
            o: l("o", d),
        }
    }
    /// `x` `[B, Tq, d]` attends over `y` `[B, Tk, kv]`; `key_mask` `[B, Tk]` (1 = attend), if
    /// any, hides padded steps.
    pub fn forward_t(
        &self,
        x: &Tensor,
        y: &Tensor,
        key_mask: Option<&Tensor>,
        p: f64,
        train: bool,
    ) -> Tensor {
        let (b, tq, d) = x.size3().expect("[B, T, D]");
        let tk = y.size()[1];
        let dh = d / self.heads;
        let split = |z: Tensor, t: i64| z.view([b, t, self.heads, dh]).transpose(1, 2);
        let (q, k, v) = (
            split(self.q.forward(x), tq),
            split(self.k.forward(y), tk),
            split(self.v.forward(y), tk),
        );
        let mut s = q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt();
        if let Some(m) = key_mask {
            let hide = m.view([b, 1, 1, tk]).le(0.0);
            s = s.masked_fill(&hide, -1e9);
        }
        let a = s.softmax(-1, Kind::Float).dropout(p, train);
        let z = a.matmul(&v).transpose(1, 2).contiguous().view([b, tq, d]);
        self.o.forward(&z)
    }
}

/// 1 for the steps of `x` `[B, T, D]` that hold values, 0 for the all-zero rows that `pad`
/// appends: `[B, T]`.
pub fn row_mask(x: &Tensor) -> Tensor {
    x.abs()
        .sum_dim_intlist(-1, false, Kind::Float)
        .gt(0.0)
        .to_kind(Kind::Float)
}

/// Mean over time of `x` `[B, T, D]` on the steps where `m` `[B, T]` is 1.
pub fn masked_mean(x: &Tensor, m: &Tensor) -> Tensor {
    let w = m.unsqueeze(-1);
    (x * &w).sum_dim_intlist(1, false, Kind::Float)
        / w.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
}

/// The Transformer's sine-cosine position table `[t, d]`: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
/// PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
pub fn sinusoid(t: i64, d: i64) -> Tensor {
    let mut v = vec![0f32; (t * d) as usize];
    for pos in 0..t {
        for i in 0..d {
            let angle = pos as f64 / 10000f64.powf((2 * (i / 2)) as f64 / d as f64);
            v[(pos * d + i) as usize] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
    Tensor::from_slice(&v).view([t, d])
}

/// Trainable parameter count of a var store.
pub fn n_params(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Parameter counts of PyTorch-layout layers, for the tests that derive a model's size by hand.
///   Conv1d(i, o, k): i*o*k + o.
///   BiLSTM(i, h): 2 directions x (4h*i + 4h*h + 2*4h)  (weight_ih, weight_hh, b_ih, b_hh).
///   Linear(i, o): i*o + o.  LayerNorm(d): 2d.  BatchNorm(d): 2d (running stats untrained).
#[cfg(test)]
pub(crate) mod counts {
    pub fn conv(i: i64, o: i64, k: i64) -> i64 {
        i * o * k + o
    }
    pub fn bilstm(i: i64, h: i64) -> i64 {
        2 * (4 * h * i + 4 * h * h + 8 * h)
    }
    pub fn lin(i: i64, o: i64) -> i64 {
        i * o + o
    }
}
