//! The CM-MSF network (paper 003, SPEC.md §4): two parallel encoders per modality aligned by
//! cross-attention, a cascaded cross-modal encoder over the ordered modality pairs, mask-gated
//! fusion and a regression/classification head.
//!
//! - Encoders (per modality, one or two of): `linear` (the pretrained features projected to d:
//!   BERT's token vectors, the face CNN's frame vectors), `lstm`, `bigru` (directions summed) and
//!   `transformer` (post-norm layers, sine-cosine positions, FFN 4d). The paper's choices: text
//!   BERT + LSTM, audio Transformer + BiGRU on the mel spectrogram, vision CNN + Transformer.
//! - Alignment of two encoders' outputs A, B: C_a = MHA(A, B), C_b = MHA(B, A),
//!   H = W [C_a : C_b]; then U = FC(ReLU(W_o H + b)) for one encoder or two.
//! - Cascade, per ordered pair i -> j, N layers: Z = LN(X + MHA(X, U_j)); Z = LN(Z + Conv1d(Z));
//!   X = BiLSTM(Z) with hidden d and the directions summed (the paper's hidden size 100 is d).
//!   Each modality's pair outputs are joined and projected back to d (eq. 12).
//! - MGF: a step mask per modality (text: the token is there; audio and vision: the step's level
//!   is above `mask_threshold` x the clip's mean level, the adaptive threshold; the level of a
//!   dB spectrogram step is its mean power, of other steps their norm), gate
//!   G = sigmoid(W_g U + b_g), F = U ⊙ G ⊙ mask, a GRU over F, H = GRU(F) + F; pooled by a
//!   masked mean. Without MGF, U is pooled the same way.
//! - Head: F = ReLU(W_F [H_A : H_T : H_V] + b_F), dropout, y = W_y F + b_y.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use crate::train::nets::layers::{sinusoid, Mha};

pub const ENCODERS: &[&str] = &["linear", "lstm", "bigru", "transformer"];

#[derive(Clone, Debug)]
pub struct CmMsfCfg {
    pub d: i64,
    /// Cross-modal attention heads (the paper's sweep: 5 best).
    pub heads: i64,
    /// Cascade depth N (the paper's sweep: 8 best).
    pub layers: i64,
    pub encoder_layers: i64,
    pub encoder_heads: i64,
    pub dropout: f64,
    pub cascade_lstm: bool,
    pub mgf: bool,
    pub mask_threshold: f64,
    /// The audio input is a spectrogram in dB: its steps' level is their mean power
    /// (10^(dB/10)) rather than their vector norm, so that silence (large negative dB, a large
    /// norm) is what the mask drops.
    pub audio_db: bool,
    /// Per input, its one or two encoders.
    pub encoders: Vec<Vec<String>>,
}

#[derive(Debug)]
struct EncoderLayer {
    attn: Mha,
    ln1: nn::LayerNorm,
    ff_a: nn::Linear,
    ff_b: nn::Linear,
    ln2: nn::LayerNorm,
}

#[derive(Debug)]
enum SeqEncoder {
    Linear(nn::Linear),
    Lstm(nn::LSTM),
    BiGru(nn::GRU),
    Transformer(nn::Linear, Vec<EncoderLayer>),
}

impl SeqEncoder {
    fn new(vs: nn::Path, kind: &str, dim: i64, c: &CmMsfCfg) -> Result<Self, crate::StageError> {
        let d = c.d;
        let rnn = |bidirectional| nn::RNNConfig {
            bidirectional,
            batch_first: true,
            ..Default::default()
        };
        Ok(match kind {
            "linear" => SeqEncoder::Linear(nn::linear(&vs / "proj", dim, d, Default::default())),
            "lstm" => SeqEncoder::Lstm(nn::lstm(&vs / "lstm", dim, d, rnn(false))),
            "bigru" => SeqEncoder::BiGru(nn::gru(&vs / "gru", dim, d, rnn(true))),
            "transformer" => {
                if d % c.encoder_heads != 0 {
                    return Err(format!(
                        "d {d} is not a multiple of encoder_heads {}",
                        c.encoder_heads
                    )
                    .into());
                }
                let layers = (0..c.encoder_layers)
                    .map(|l| {
                        let p = &vs / format!("layer{l}");
                        EncoderLayer {
                            attn: Mha::new(&p / "attn", d, d, c.encoder_heads),
                            ln1: nn::layer_norm(&p / "ln1", vec![d], Default::default()),
                            ff_a: nn::linear(&p / "ff_a", d, 4 * d, Default::default()),
                            ff_b: nn::linear(&p / "ff_b", 4 * d, d, Default::default()),
                            ln2: nn::layer_norm(&p / "ln2", vec![d], Default::default()),
                        }
                    })
                    .collect();
                SeqEncoder::Transformer(
                    nn::linear(&vs / "proj", dim, d, Default::default()),
                    layers,
                )
            }
            o => {
                return Err(
                    format!("unknown encoder `{o}` (one of {})", ENCODERS.join(", ")).into(),
                )
            }
        })
    }
    fn forward_t(&self, x: &Tensor, mask: &Tensor, p: f64, train: bool) -> Tensor {
        match self {
            SeqEncoder::Linear(l) => l.forward(x),
            SeqEncoder::Lstm(l) => l.seq(x).0,
            SeqEncoder::BiGru(g) => {
                let (y, _) = g.seq(x);
                let (b, t, w) = y.size3().expect("[B, T, 2d]");
                y.view([b, t, 2, w / 2])
                    .sum_dim_intlist(2, false, Kind::Float)
            }
            SeqEncoder::Transformer(proj, layers) => {
                let (t, d) = (x.size()[1], proj.ws.size()[0]);
                let mut h = proj.forward(x) + sinusoid(t, d).to_device(x.device());
                for l in layers {
                    let a = l.attn.forward_t(&h, &h, Some(mask), p, train);
                    h = l.ln1.forward(&(&h + a.dropout(p, train)));
                    let f = l.ff_b.forward(&l.ff_a.forward(&h).relu().dropout(p, train));
                    h = l.ln2.forward(&(&h + f.dropout(p, train)));
                }
                h
            }
        }
    }
}

/// One modality's encoders, their alignment and the projection to U.
#[derive(Debug)]
struct Unimodal {
    encoders: Vec<SeqEncoder>,
    align: Option<(Mha, Mha, nn::Linear)>,
    w_o: nn::Linear,
    fc: nn::Linear,
}

impl Unimodal {
    fn new(
        vs: nn::Path,
        kinds: &[String],
        dim: i64,
        c: &CmMsfCfg,
    ) -> Result<Self, crate::StageError> {
        if kinds.is_empty() || kinds.len() > 2 {
            return Err(format!("{} encoders; give one or two, `+`-separated", kinds.len()).into());
        }
        let encoders = kinds
            .iter()
            .enumerate()
            .map(|(k, e)| SeqEncoder::new(&vs / format!("enc{k}_{e}"), e, dim, c))
            .collect::<Result<Vec<_>, _>>()?;
        let d = c.d;
        let align = (kinds.len() == 2).then(|| {
            (
                Mha::new(&vs / "align_ab", d, d, c.heads),
                Mha::new(&vs / "align_ba", d, d, c.heads),
                nn::linear(&vs / "align_w", 2 * d, d, Default::default()),
            )
        });
        Ok(Unimodal {
            encoders,
            align,
            w_o: nn::linear(&vs / "w_o", d, d, Default::default()),
            fc: nn::linear(&vs / "fc", d, d, Default::default()),
        })
    }
    fn forward_t(&self, x: &Tensor, mask: &Tensor, p: f64, train: bool) -> Tensor {
        let e: Vec<Tensor> = self
            .encoders
            .iter()
            .map(|enc| enc.forward_t(x, mask, p, train))
            .collect();
        let h = match &self.align {
            Some((ab, ba, w)) => {
                let ca = ab.forward_t(&e[0], &e[1], Some(mask), p, train);
                let cb = ba.forward_t(&e[1], &e[0], Some(mask), p, train);
                w.forward(&Tensor::cat(&[ca, cb], 2))
            }
            None => e[0].shallow_clone(),
        };
        self.fc
            .forward(&self.w_o.forward(&h).relu())
            .dropout(p, train)
    }
}

#[derive(Debug)]
struct CascadeLayer {
    attn: Mha,
    ln1: nn::LayerNorm,
    conv: nn::Conv1D,
    ln2: nn::LayerNorm,
    lstm: Option<nn::LSTM>,
}

impl CascadeLayer {
    fn new(vs: nn::Path, c: &CmMsfCfg) -> Self {
        let d = c.d;
        CascadeLayer {
            attn: Mha::new(&vs / "attn", d, d, c.heads),
            ln1: nn::layer_norm(&vs / "ln1", vec![d], Default::default()),
            conv: nn::conv1d(
                &vs / "conv",
                d,
                d,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            ),
            ln2: nn::layer_norm(&vs / "ln2", vec![d], Default::default()),
            lstm: c
                .cascade_lstm
                .then(|| crate::train::nets::layers::bilstm(&vs / "lstm", d, d)),
        }
    }
    fn forward_t(&self, x: &Tensor, y: &Tensor, ymask: &Tensor, p: f64, train: bool) -> Tensor {
        let a = self.attn.forward_t(x, y, Some(ymask), p, train);
        let z = self.ln1.forward(&(x + a.dropout(p, train)));
        let cz = self.conv.forward(&z.transpose(1, 2)).transpose(1, 2).relu();
        let z = self.ln2.forward(&(&z + cz.dropout(p, train)));
        match &self.lstm {
            Some(l) => {
                let (h, _) = l.seq(&z);
                let (b, t, w) = h.size3().expect("[B, T, 2d]");
                h.view([b, t, 2, w / 2])
                    .sum_dim_intlist(2, false, Kind::Float)
            }
            None => z,
        }
    }
}

/// Masked mean over time: `[B, T, d]`, `[B, T]` -> `[B, d]`.
fn masked_mean(h: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.unsqueeze(-1);
    (h * &m).sum_dim_intlist(1, false, Kind::Float)
        / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
}

#[derive(Debug)]
struct Gate {
    g: nn::Linear,
    gru: nn::GRU,
}

#[derive(Debug)]
pub struct CmMsf {
    cfg: CmMsfCfg,
    /// Whether input k is text (its mask is token presence).
    text: Vec<bool>,
    /// Whether input k is audio in dB (its level is power, not norm).
    db: Vec<bool>,
    uni: Vec<Unimodal>,
    /// Per target modality i: for each other modality j, the N cascade layers of i -> j.
    cascade: Vec<Vec<(usize, Vec<CascadeLayer>)>>,
    merge: Vec<Option<nn::Linear>>,
    gates: Vec<Option<Gate>>,
    fuse: nn::Linear,
    pub features: i64,
    pub head: nn::Linear,
}

impl CmMsf {
    /// `names[k]` is input k's modality letter, `dims[k]` its width.
    pub fn new(
        vs: &nn::Path,
        names: &[char],
        dims: &[i64],
        outputs: i64,
        c: &CmMsfCfg,
    ) -> Result<CmMsf, crate::StageError> {
        let d = c.d;
        if d % c.heads != 0 {
            return Err(format!("d {d} is not a multiple of heads {}", c.heads).into());
        }
        let n = names.len();
        let mut uni = Vec::new();
        for k in 0..n {
            uni.push(
                Unimodal::new(vs / format!("uni_{}", names[k]), &c.encoders[k], dims[k], c)
                    .map_err(|e| format!("modality {}: {e}", names[k]))?,
            );
        }
        let mut cascade = Vec::new();
        let mut merge = Vec::new();
        for i in 0..n {
            let mut per = Vec::new();
            for j in (0..n).filter(|&j| j != i) {
                let layers = (0..c.layers)
                    .map(|l| {
                        CascadeLayer::new(
                            vs / format!("cascade_{}{}", names[i], names[j]) / format!("layer{l}"),
                            c,
                        )
                    })
                    .collect();
                per.push((j, layers));
            }
            merge.push((!per.is_empty()).then(|| {
                nn::linear(
                    vs / format!("merge_{}", names[i]),
                    per.len() as i64 * d,
                    d,
                    Default::default(),
                )
            }));
            cascade.push(per);
        }
        let gates = names
            .iter()
            .map(|m| {
                c.mgf.then(|| Gate {
                    g: nn::linear(vs / format!("gate_{m}"), d, d, Default::default()),
                    gru: nn::gru(
                        vs / format!("gru_{m}"),
                        d,
                        d,
                        nn::RNNConfig {
                            batch_first: true,
                            ..Default::default()
                        },
                    ),
                })
            })
            .collect();
        let features = n as i64 * d;
        Ok(CmMsf {
            cfg: c.clone(),
            text: names.iter().map(|&m| m == 't').collect(),
            db: names.iter().map(|&m| m == 'a' && c.audio_db).collect(),
            uni,
            cascade,
            merge,
            gates,
            fuse: nn::linear(vs / "fuse", features, d, Default::default()),
            features: d,
            head: nn::linear(vs / "head", d, outputs, Default::default()),
        })
    }

    /// Step masks `[B, T]`: text steps that hold a token; audio/vision steps whose level is
    /// above `mask_threshold` x the clip's mean level over its steps (the adaptive threshold).
    /// The level is mean power for audio in dB, the vector norm otherwise; all-zero padding
    /// steps are never kept and do not count in the mean.
    fn mask(&self, k: usize, x: &Tensor) -> Tensor {
        let present = crate::train::nets::layers::row_mask(x); // [B, T]
        if self.text[k] {
            return present;
        }
        let level = if self.db[k] {
            (x * (std::f64::consts::LN_10 / 10.0))
                .exp()
                .mean_dim(-1, false, Kind::Float)
        } else {
            x.norm_scalaropt_dim(2.0, [-1].as_slice(), false)
        } * &present;
        let mean = level.sum_dim_intlist(1, true, Kind::Float)
            / present.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0);
        let m = level
            .gt_tensor(&(mean * self.cfg.mask_threshold))
            .to_kind(Kind::Float)
            * &present;
        // A silent clip keeps every step rather than none.
        let none = m.sum_dim_intlist(1, true, Kind::Float).eq(0.0);
        m.where_self(&none.logical_not(), &m.ones_like())
    }

    /// F `[B, d]` before the output layer.
    pub fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        let p = self.cfg.dropout;
        let masks: Vec<Tensor> = xs
            .iter()
            .enumerate()
            .map(|(k, x)| self.mask(k, x))
            .collect();
        let us: Vec<Tensor> = self
            .uni
            .iter()
            .zip(xs)
            .zip(&masks)
            .map(|((u, x), m)| u.forward_t(x, m, p, train))
            .collect();
        let mut pooled = Vec::new();
        for (i, per) in self.cascade.iter().enumerate() {
            let u = match &self.merge[i] {
                Some(merge) => {
                    let outs: Vec<Tensor> = per
                        .iter()
                        .map(|(j, layers)| {
                            let mut h = us[i].shallow_clone();
                            for l in layers {
                                h = l.forward_t(&h, &us[*j], &masks[*j], p, train);
                            }
                            h
                        })
                        .collect();
                    merge.forward(&Tensor::cat(&outs, 2))
                }
                None => us[i].shallow_clone(),
            };
            let h = match &self.gates[i] {
                Some(g) => {
                    let gate = g.g.forward(&u).sigmoid();
                    let f = u * gate * masks[i].unsqueeze(-1);
                    let (o, _) = g.gru.seq(&f);
                    o + f
                }
                None => u,
            };
            pooled.push(masked_mean(&h, &masks[i]));
        }
        self.fuse.forward(&Tensor::cat(&pooled, 1)).relu()
    }

    pub fn forward_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        self.head
            .forward(&self.hidden_t(xs, train).dropout(self.cfg.dropout, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::nets::layers::n_params;
    use tch::Device;

    use crate::train::nets::layers::counts::{bilstm, lin};

    fn cfg(layers: i64) -> CmMsfCfg {
        CmMsfCfg {
            d: 100,
            heads: 5,
            layers,
            encoder_layers: 5,
            encoder_heads: 5,
            dropout: 0.3,
            cascade_lstm: true,
            mgf: true,
            mask_threshold: 0.5,
            audio_db: true,
            encoders: vec![
                vec!["linear".into(), "transformer".into()],
                vec!["transformer".into(), "bigru".into()],
                vec!["linear".into(), "lstm".into()],
            ],
        }
    }

    #[test]
    fn cm_msf_has_the_derived_parameter_count_and_shapes() {
        // Widths: vision 256 (face CNN), audio 64 (log-mel bands), text 384 (MiniLM); d 100.
        let (dv, da, dt, d) = (256, 64, 384, 100);
        let mha = 4 * lin(d, d);
        // Transformer encoder layer: MHA + LN + FFN 100 -> 400 -> 100 + LN = 121,300.
        let tlayer = mha + 2 * d + lin(d, 4 * d) + lin(4 * d, d) + 2 * d;
        assert_eq!(tlayer, 121_300);
        let transformer = |i: i64| lin(i, d) + 5 * tlayer;
        let lstm = |i: i64| 4 * d * i + 4 * d * d + 8 * d;
        let bigru = |i: i64| 2 * (3 * d * i + 3 * d * d + 6 * d);
        // Two encoders' alignment (two MHAs + W on [C_a : C_b]), then W_o and FC.
        let uni = |enc: i64| enc + 2 * mha + lin(2 * d, d) + 2 * lin(d, d);
        let (uv, ua, ut) = (
            uni(lin(dv, d) + transformer(dv)),
            uni(transformer(da) + bigru(da)),
            uni(lin(dt, d) + lstm(dt)),
        );
        assert_eq!((uv, ua, ut), (779_000, 833_700, 354_000));
        // Cascade layer: MHA + LN + Conv1d(100, 100, 3) + LN + BiLSTM(100, 100) = 232,500.
        let layer = mha + 2 * d + (d * d * 3 + d) + 2 * d + bilstm(d, d);
        assert_eq!(layer, 232_500);
        // Per modality: merge of its two pair outputs (200 -> 100), gate (100 -> 100) and a
        // GRU(100, 100); fusion 300 -> 100, output 100 -> 1.
        let per_mod = lin(2 * d, d) + lin(d, d) + (3 * d * d * 2 + 6 * d);
        for (n, total) in [(2, 5_059_301), (8, 13_429_301)] {
            let want = uv + ua + ut + 6 * n * layer + 3 * per_mod + lin(3 * d, d) + lin(d, 1);
            assert_eq!(want, total, "N = {n}");
            let vs = nn::VarStore::new(Device::Cpu);
            CmMsf::new(&vs.root(), &['v', 'a', 't'], &[dv, da, dt], 1, &cfg(n)).unwrap();
            assert_eq!(n_params(&vs), want, "N = {n}");
        }
        // Table 6's "(-) BiLSTM" drops the cascade's BiLSTMs; "(-) MGF" the gates and GRUs.
        let vs = nn::VarStore::new(Device::Cpu);
        let c = CmMsfCfg {
            cascade_lstm: false,
            mgf: false,
            ..cfg(2)
        };
        let m = CmMsf::new(&vs.root(), &['v', 'a', 't'], &[dv, da, dt], 1, &c).unwrap();
        let want = 5_059_301 - 12 * bilstm(d, d) - 3 * (lin(d, d) + 3 * d * d * 2 + 6 * d);
        assert_eq!(n_params(&vs), want);
        // Lengths may differ per modality (15 Hz video, 12.5 Hz audio, tokens).
        let xs = vec![
            Tensor::randn([3, 15, dv], (Kind::Float, Device::Cpu)),
            Tensor::randn([3, 12, da], (Kind::Float, Device::Cpu)),
            Tensor::randn([3, 20, dt], (Kind::Float, Device::Cpu)),
        ];
        assert_eq!(m.forward_t(&xs, true).size(), [3, 1]);
        assert_eq!(m.hidden_t(&xs, false).size(), [3, d]);
    }

    #[test]
    fn masks_follow_tokens_and_the_adaptive_threshold() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = CmMsfCfg {
            encoders: vec![vec!["linear".into()], vec!["linear".into()]],
            ..cfg(1)
        };
        let m = CmMsf::new(&vs.root(), &['v', 't'], &[2, 2], 3, &c).unwrap();
        // Vision step norms 1, 3, 0.1, 4: mean 2.025, threshold 1.0125 -> steps 2 and 4 kept.
        let a = Tensor::from_slice(&[1f32, 0., 3., 0., 0.1, 0., 0., 4.]).view([1, 4, 2]);
        let got: Vec<f32> = Vec::try_from(m.mask(0, &a).view([-1])).unwrap();
        assert_eq!(got, vec![0., 1., 0., 1.]);
        // Audio in dB: speech at -20 dB, silence at -90 dB (a larger norm), one padding step.
        // Mean power over the three steps 0.0067, threshold 0.0033: the speech steps are kept.
        let ma = CmMsf::new(&(vs.root() / "a"), &['a', 't'], &[2, 2], 3, &c).unwrap();
        let a = Tensor::from_slice(&[-20f32, -20., -90., -90., -20., -20., 0., 0.]).view([1, 4, 2]);
        let got: Vec<f32> = Vec::try_from(ma.mask(0, &a).view([-1])).unwrap();
        assert_eq!(got, vec![1., 0., 1., 0.]);
        let mut plain = c.clone();
        plain.audio_db = false;
        let mn = CmMsf::new(&(vs.root() / "n"), &['a', 't'], &[2, 2], 3, &plain).unwrap();
        let got: Vec<f32> = Vec::try_from(mn.mask(0, &a).view([-1])).unwrap();
        assert_eq!(
            got,
            vec![0., 1., 0., 0.],
            "by norm, the silence would be the loud step"
        );
        // Text: a step is kept when it holds a token vector (padding is all zeros).
        let t = Tensor::from_slice(&[0.2f32, 0., 0., 0., 0., 0.01, 0., 0.]).view([1, 4, 2]);
        let got: Vec<f32> = Vec::try_from(m.mask(1, &t).view([-1])).unwrap();
        assert_eq!(got, vec![1., 0., 1., 0.]);
        // A silent clip keeps all of its steps.
        let z = Tensor::zeros([1, 3, 2], (Kind::Float, Device::Cpu));
        let got: Vec<f32> = Vec::try_from(m.mask(0, &z).view([-1])).unwrap();
        assert_eq!(got, vec![1., 1., 1.]);
    }
}
