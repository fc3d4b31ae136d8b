//! Uni2Mul's networks (paper 000, SPEC.md §4) in tch: the stage-one unimodal encoders with
//! their Table 2 alternatives, and the stage-two fusion heads on X_M = [H_V : H_A : H_T].
//!
//! Inputs are `[B, T, D]` sequences (T = 10 frames, 128 audio steps, 36 tokens). Convolutions
//! use Keras' default `valid` padding, as the paper's Keras code would; activations the paper
//! leaves unnamed are ReLU. LSTMs follow PyTorch's layout (two bias vectors per gate set).

use tch::nn::{self, Module, ModuleT, RNN};
use tch::{Kind, Tensor};

use crate::train::nets::layers::{bilstm, Mha};
pub use stages::train::{ATTENTIONS, ENCODERS, FUSIONS};

fn relu_conv(vs: nn::Path, i: i64, o: i64, k: i64, stride: i64) -> nn::Conv1D {
    nn::conv1d(
        vs,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            ..Default::default()
        },
    )
}

/// Output length of a `valid` convolution.
fn conv_len(t: i64, k: i64, stride: i64) -> i64 {
    (t - k) / stride + 1
}

/// The paper's attention (eqs. 9 and 12): Que = W_Que·R, Key = W_Key·R,
/// score = softmax(W_attn·tanh(Que·Keyᵀ)) over the key axis, R_attn = score·(W_Val·Key) (Val =
/// Key). W_attn is a dense layer on the key axis, so it needs a fixed length. The text encoder's
/// Que and Key are its two kernel-1 convolutions (eq. 12's W·X + b), so there `project` is
/// false and only W_Val is added here; elsewhere W_Que and W_Key are bias-free, as in eq. 9.
#[derive(Debug)]
struct TanhAttention {
    w: nn::Linear,
    q: Option<nn::Linear>,
    k: Option<nn::Linear>,
    val: nn::Linear,
}

fn no_bias() -> nn::LinearConfig {
    nn::LinearConfig {
        bias: false,
        ..Default::default()
    }
}

impl TanhAttention {
    /// `t` steps of width `d`; `project`: learn W_Que and W_Key here.
    fn new(vs: nn::Path, t: i64, d: i64, project: bool) -> Self {
        let proj = |n: &str| nn::linear(&vs / n, d, d, no_bias());
        TanhAttention {
            w: nn::linear(&vs / "w_attn", t, t, Default::default()),
            q: project.then(|| proj("w_que")),
            k: project.then(|| proj("w_key")),
            val: proj("w_val"),
        }
    }
    fn forward(&self, q: &Tensor, k: &Tensor) -> Tensor {
        let (q, k) = match (&self.q, &self.k) {
            (Some(wq), Some(wk)) => (wq.forward(q), wk.forward(k)),
            _ => (q.shallow_clone(), k.shallow_clone()),
        };
        let s = q.matmul(&k.transpose(1, 2)).tanh();
        let a = self.w.forward(&s).softmax(-1, Kind::Float);
        a.matmul(&self.val.forward(&k))
    }
}

/// Final hidden states of a bidirectional LSTM, forward and backward concatenated.
fn bilstm_last(lstm: &nn::LSTM, x: &Tensor) -> Tensor {
    let (_, state) = lstm.seq(x);
    let h = state.h(); // [2, B, H]
    Tensor::cat(&[h.get(0), h.get(1)], 1)
}

/// A stage-one encoder: `[B, T, D]` -> H `[B, hidden]`, plus its classifier.
#[derive(Debug)]
pub struct Encoder {
    arch: String,
    convs: Vec<nn::Conv1D>,
    attn: Option<TanhAttention>,
    lstm: Option<nn::LSTM>,
    dropout: f64,
    pub hidden: i64,
    pub head: nn::Linear,
}

impl Encoder {
    /// `steps` x `dim` inputs, `classes` outputs. The paper's choices: vision `cnn_lstm`,
    /// audio `cnn_attn_bilstm`, text `cnn_attn`.
    pub fn new(
        vs: &nn::Path,
        arch: &str,
        steps: i64,
        dim: i64,
        classes: i64,
    ) -> Result<Self, crate::StageError> {
        let mut convs = Vec::new();
        let mut attn = None;
        let mut lstm = None;
        let mut dropout = 0.0;
        let hidden = match arch {
            "cnn" | "cnn_lstm" | "cnn_attn_lstm" => {
                // Three convolutions, 64 filters, kernels 3, 1, 3, stride 1.
                convs.push(relu_conv(vs / "conv1", dim, 64, 3, 1));
                convs.push(relu_conv(vs / "conv2", 64, 64, 1, 1));
                convs.push(relu_conv(vs / "conv3", 64, 64, 3, 1));
                let t = conv_len(conv_len(steps, 3, 1), 3, 1);
                if t < 1 {
                    return Err(format!("{steps} steps are too few for three convolutions").into());
                }
                if arch == "cnn_attn_lstm" {
                    attn = Some(TanhAttention::new(vs / "attn", t, 64, true));
                }
                if arch != "cnn" {
                    lstm = Some(bilstm(vs / "lstm", 64, 32));
                }
                64
            }
            "cnn_attn_bilstm" | "cnn_bilstm" => {
                // One convolution, 64 filters, kernel 3, stride 2; BiLSTM 32, dropout 0.5.
                convs.push(relu_conv(vs / "conv1", dim, 64, 3, 2));
                let t = conv_len(steps, 3, 2);
                if t < 1 {
                    return Err(format!("{steps} steps are too few for the convolution").into());
                }
                if arch == "cnn_attn_bilstm" {
                    attn = Some(TanhAttention::new(vs / "attn", t, 64, true));
                }
                lstm = Some(bilstm(vs / "lstm", 64, 32));
                dropout = 0.5;
                64
            }
            "bilstm" => {
                lstm = Some(bilstm(vs / "lstm", dim, 32));
                dropout = 0.5;
                64
            }
            "attn_bilstm" => {
                attn = Some(TanhAttention::new(vs / "attn", steps, dim, true));
                lstm = Some(bilstm(vs / "lstm", dim, 32));
                dropout = 0.5;
                64
            }
            "cnn_attn" => {
                // Q and K from two convolutions, 64 filters, kernel 1, stride 1;
                // H = [GAP(Q) : GAP(R_attn)].
                convs.push(relu_conv(vs / "conv_q", dim, 64, 1, 1));
                convs.push(relu_conv(vs / "conv_k", dim, 64, 1, 1));
                attn = Some(TanhAttention::new(vs / "attn", steps, 64, false));
                128
            }
            other => {
                return Err(
                    format!("unknown encoder `{other}` (one of {})", ENCODERS.join(", ")).into(),
                )
            }
        };
        let head = nn::linear(vs / "head", hidden, classes, Default::default());
        Ok(Encoder {
            arch: arch.to_string(),
            convs,
            attn,
            lstm,
            dropout,
            hidden,
            head,
        })
    }

    /// H for a batch `[B, T, D]`.
    pub fn hidden_t(&self, x: &Tensor, train: bool) -> Tensor {
        let conv =
            |c: &nn::Conv1D, x: &Tensor| c.forward(&x.transpose(1, 2)).relu().transpose(1, 2);
        if self.arch == "cnn_attn" {
            let q = conv(&self.convs[0], x);
            let k = conv(&self.convs[1], x);
            let r = self.attn.as_ref().expect("attention").forward(&q, &k);
            return Tensor::cat(
                &[
                    q.mean_dim(1, false, Kind::Float),
                    r.mean_dim(1, false, Kind::Float),
                ],
                1,
            );
        }
        let mut h = x.shallow_clone();
        for c in &self.convs {
            h = conv(c, &h);
        }
        if let Some(a) = &self.attn {
            h = a.forward(&h, &h);
        }
        let h = match &self.lstm {
            Some(l) => bilstm_last(l, &h),
            None => h.mean_dim(1, false, Kind::Float),
        };
        h.dropout(self.dropout, train)
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.hidden_t(x, train))
    }
}

/// Position-wise feed-forward module of the Conformer: LN -> Linear(d, 2d) -> Swish -> dropout
/// -> Linear(2d, d) -> dropout, added back at half weight.
#[derive(Debug)]
struct FeedForward {
    ln: nn::LayerNorm,
    a: nn::Linear,
    b: nn::Linear,
}

impl FeedForward {
    fn new(vs: nn::Path, d: i64) -> Self {
        FeedForward {
            ln: nn::layer_norm(&vs / "ln", vec![d], Default::default()),
            a: nn::linear(&vs / "a", d, 2 * d, Default::default()),
            b: nn::linear(&vs / "b", 2 * d, d, Default::default()),
        }
    }
    fn forward_t(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        let y = self.a.forward(&self.ln.forward(x)).silu().dropout(p, train);
        self.b.forward(&y).dropout(p, train)
    }
}

/// Multi-head self-attention.
#[derive(Debug)]
struct Mhsa(Mha);

impl Mhsa {
    fn new(vs: nn::Path, d: i64, heads: i64) -> Self {
        Mhsa(Mha::new(vs, d, d, heads))
    }
    fn forward_t(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        self.0.forward_t(x, x, None, p, train)
    }
}

/// Eq. 16's multi-head attention: per head, score = softmax(W_attn·tanh(Que·Keyᵀ)) with
/// Que = W_Que·R and Key = W_Key·R, R_attn = score·(W_Val·Key); the heads concatenated and
/// projected by W_MHA. W_attn is one dense layer on the key axis shared by the heads (the
/// equation gives it no head index). No biases: the equation has none.
#[derive(Debug)]
struct TanhMhsa {
    heads: i64,
    q: nn::Linear,
    k: nn::Linear,
    val: nn::Linear,
    w: nn::Linear,
    o: nn::Linear,
}

impl TanhMhsa {
    fn new(vs: nn::Path, t: i64, d: i64, heads: i64) -> Self {
        let l = |n: &str| nn::linear(&vs / n, d, d, no_bias());
        TanhMhsa {
            heads,
            q: l("w_que"),
            k: l("w_key"),
            val: l("w_val"),
            w: nn::linear(&vs / "w_attn", t, t, Default::default()),
            o: l("w_mha"),
        }
    }
    fn forward_t(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("[B, T, D]");
        let dh = d / self.heads;
        let split = |z: Tensor| z.view([b, t, self.heads, dh]).transpose(1, 2);
        let key = self.k.forward(x);
        let (q, v) = (split(self.q.forward(x)), split(self.val.forward(&key)));
        let s = q.matmul(&split(key).transpose(-2, -1)).tanh();
        let a = self
            .w
            .forward(&s)
            .softmax(-1, Kind::Float)
            .dropout(p, train);
        let z = a.matmul(&v).transpose(1, 2).contiguous().view([b, t, d]);
        self.o.forward(&z)
    }
}

/// The fusion's self-attention: the paper's (eq. 16) or the Transformer's scaled dot product.
#[derive(Debug)]
enum SelfAttention {
    Tanh(TanhMhsa),
    Scaled(Mhsa),
}

impl SelfAttention {
    fn forward_t(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        match self {
            SelfAttention::Tanh(a) => a.forward_t(x, p, train),
            SelfAttention::Scaled(a) => a.forward_t(x, p, train),
        }
    }
}

/// Stage-two fusion over X_M `[B, F]` (F = sum of the encoders' hidden sizes).
///
/// - concat: X_M -> FC.
/// - attention / transformer / conformer: X_M is read as a sequence of F tokens, token i =
///   x_i·w_i + b_i with its own learned w_i, b_i in R^64 (a per-feature embedding: which hidden
///   unit a value came from is in the token itself, and b_i doubles as its position
///   embedding), then one MHSA (2 heads) / Transformer encoder layer / Conformer block, GAP
///   over tokens, FC.
#[derive(Debug)]
pub struct Fusion {
    kind: String,
    tokens: Option<(Tensor, Tensor)>,
    ln1: Option<nn::LayerNorm>,
    mhsa: Option<SelfAttention>,
    ff1: Option<FeedForward>,
    ff2: Option<FeedForward>,
    conv_ln: Option<nn::LayerNorm>,
    conv_a: Option<nn::Conv1D>,
    bn: Option<nn::BatchNorm>,
    conv_b: Option<nn::Conv1D>,
    ln_out: Option<nn::LayerNorm>,
    pub head: nn::Linear,
}

pub const FUSION_DIM: i64 = 64;
const FUSION_DROPOUT: f64 = 0.5;

impl Fusion {
    /// `attention`: one of [`ATTENTIONS`].
    pub fn new(
        vs: &nn::Path,
        kind: &str,
        features: i64,
        classes: i64,
        attention: &str,
    ) -> Result<Self, crate::StageError> {
        let d = FUSION_DIM;
        let mut f = Fusion {
            kind: kind.to_string(),
            tokens: None,
            ln1: None,
            mhsa: None,
            ff1: None,
            ff2: None,
            conv_ln: None,
            conv_a: None,
            bn: None,
            conv_b: None,
            ln_out: None,
            head: nn::linear(
                vs / "head",
                if kind == "concat" { features } else { d },
                classes,
                Default::default(),
            ),
        };
        match kind {
            "concat" => return Ok(f),
            "attention" | "transformer" | "conformer" => {}
            other => {
                return Err(
                    format!("unknown fusion `{other}` (one of {})", FUSIONS.join(", ")).into(),
                )
            }
        }
        // PyTorch's init of F separate Linear(1, 64) layers: U(-1, 1) for weight and bias.
        let u = nn::Init::Uniform { lo: -1.0, up: 1.0 };
        f.tokens = Some((
            vs.var("token_w", &[features, d], u),
            vs.var("token_b", &[features, d], u),
        ));
        f.mhsa = Some(match attention {
            "tanh" => SelfAttention::Tanh(TanhMhsa::new(vs / "mhsa", features, d, 2)),
            "scaled" => SelfAttention::Scaled(Mhsa::new(vs / "mhsa", d, 2)),
            other => {
                return Err(format!(
                    "unknown attention `{other}` (one of {})",
                    ATTENTIONS.join(", ")
                )
                .into())
            }
        });
        if kind != "attention" {
            f.ln1 = Some(nn::layer_norm(vs / "ln1", vec![d], Default::default()));
            f.ff1 = Some(FeedForward::new(vs / "ff1", d));
        }
        if kind == "conformer" {
            f.ff2 = Some(FeedForward::new(vs / "ff2", d));
            f.conv_ln = Some(nn::layer_norm(vs / "conv_ln", vec![d], Default::default()));
            // Conv module: LN -> conv (64 filters x 2 for GLU, kernel 3, same) -> GLU -> BN ->
            // Swish -> pointwise conv -> dropout, residual.
            f.conv_a = Some(nn::conv1d(
                vs / "conv_a",
                d,
                2 * d,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            ));
            f.bn = Some(nn::batch_norm1d(vs / "bn", d, Default::default()));
            f.conv_b = Some(nn::conv1d(vs / "conv_b", d, d, 1, Default::default()));
            f.ln_out = Some(nn::layer_norm(vs / "ln_out", vec![d], Default::default()));
        }
        Ok(f)
    }

    pub fn forward_t(&self, xm: &Tensor, train: bool) -> Tensor {
        let p = FUSION_DROPOUT;
        if self.kind == "concat" {
            return self.head.forward(&xm.dropout(p, train));
        }
        let (w, b) = self.tokens.as_ref().expect("token embedding");
        let mut x = xm.unsqueeze(-1) * w + b;
        let mhsa = self.mhsa.as_ref().unwrap();
        match self.kind.as_str() {
            "attention" => {
                x = &x + mhsa.forward_t(&x, p, train).dropout(p, train);
            }
            "transformer" => {
                // Post-norm encoder layer: x = LN(x + MHSA(x)); x = x + FFN(x).
                x = self
                    .ln1
                    .as_ref()
                    .unwrap()
                    .forward(&(&x + mhsa.forward_t(&x, p, train).dropout(p, train)));
                x = &x + self.ff1.as_ref().unwrap().forward_t(&x, p, train);
            }
            _ => {
                // Conformer block: ½FFM -> MHSA (pre-norm) -> conv module -> ½FFM -> LN.
                x = &x + self.ff1.as_ref().unwrap().forward_t(&x, p, train) * 0.5;
                let n = self.ln1.as_ref().unwrap().forward(&x);
                x = &x + mhsa.forward_t(&n, p, train).dropout(p, train);
                let c = self.conv_ln.as_ref().unwrap().forward(&x).transpose(1, 2);
                let c = self.conv_a.as_ref().unwrap().forward(&c).glu(1);
                let c = self.bn.as_ref().unwrap().forward_t(&c, train).silu();
                let c = self.conv_b.as_ref().unwrap().forward(&c).dropout(p, train);
                x = &x + c.transpose(1, 2);
                x = &x + self.ff2.as_ref().unwrap().forward_t(&x, p, train) * 0.5;
                x = self.ln_out.as_ref().unwrap().forward(&x);
            }
        }
        self.head.forward(&x.mean_dim(1, false, Kind::Float))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn encoder(arch: &str, t: i64, d: i64) -> (nn::VarStore, Encoder) {
        let vs = nn::VarStore::new(Device::Cpu);
        let e = Encoder::new(&vs.root(), arch, t, d, 3).unwrap();
        (vs, e)
    }

    use crate::train::nets::layers::counts::{bilstm, conv, lin};
    use crate::train::nets::layers::n_params;

    #[test]
    fn paper_encoders_have_the_derived_parameter_counts_and_shapes() {
        let d = 512;
        // Vision CNN-LSTM on 10 x 512: convs 512->64 (k3), 64->64 (k1), 64->64 (k3), BiLSTM
        // 64->32, FC 64->3.
        //   98,368 + 4,160 + 12,352 + 25,088 + 195 = 140,163.
        let (vs, e) = encoder("cnn_lstm", 10, d);
        let want = conv(d, 64, 3) + conv(64, 64, 1) + conv(64, 64, 3) + bilstm(64, 32) + lin(64, 3);
        assert_eq!(want, 140_163);
        assert_eq!(n_params(&vs), want);
        let x = Tensor::randn([4, 10, d], (Kind::Float, Device::Cpu));
        assert_eq!(e.hidden_t(&x, false).size(), [4, 64]);
        assert_eq!(e.forward_t(&x, false).size(), [4, 3]);

        // Audio CNN-ATTN-BiLSTM on 128 x 512: conv 512->64 (k3, s2) gives 63 steps; eq. 9's
        // W_Que, W_Key, W_Val (64 x 64, no bias) and W_attn Dense(63, 63); BiLSTM 64->32;
        // FC 64->3.
        //   98,368 + 3 x 4,096 + 4,032 + 25,088 + 195 = 139,971.
        let (vs, e) = encoder("cnn_attn_bilstm", 128, d);
        let want = conv(d, 64, 3) + 3 * 64 * 64 + lin(63, 63) + bilstm(64, 32) + lin(64, 3);
        assert_eq!(want, 139_971);
        assert_eq!(n_params(&vs), want);
        let x = Tensor::randn([2, 128, d], (Kind::Float, Device::Cpu));
        assert_eq!(e.hidden_t(&x, true).size(), [2, 64]);

        // Text CNN-ATTN on 36 x 512: two convs 512->64 (k1) are eq. 12's Que and Key (W·X + b);
        // W_Val 64 x 64 (no bias); W_attn Dense(36, 36); H = [GAP(Q) : GAP(R)] (128); FC 128->3.
        //   32,832 x 2 + 4,096 + 1,332 + 387 = 71,479.
        let (vs, e) = encoder("cnn_attn", 36, d);
        let want = 2 * conv(d, 64, 1) + 64 * 64 + lin(36, 36) + lin(128, 3);
        assert_eq!(want, 71_479);
        assert_eq!(n_params(&vs), want);
        let x = Tensor::randn([3, 36, d], (Kind::Float, Device::Cpu));
        assert_eq!(e.hidden_t(&x, false).size(), [3, 128]);
    }

    #[test]
    fn table2_alternatives_have_the_derived_parameter_counts() {
        let d = 384;
        let cases: Vec<(&str, i64, i64)> = vec![
            // CNN: the three convs, GAP, FC 64->3.
            (
                "cnn",
                10,
                conv(d, 64, 3) + conv(64, 64, 1) + conv(64, 64, 3) + lin(64, 3),
            ),
            // CNN-ATTN-LSTM: + W_attn on the 6 steps left after two k3 convs, + BiLSTM.
            (
                "cnn_attn_lstm",
                10,
                conv(d, 64, 3)
                    + conv(64, 64, 1)
                    + conv(64, 64, 3)
                    + 3 * 64 * 64
                    + lin(6, 6)
                    + bilstm(64, 32)
                    + lin(64, 3),
            ),
            // BiLSTM straight on the input.
            ("bilstm", 128, bilstm(d, 32) + lin(64, 3)),
            // CNN-BiLSTM: conv k3 s2, BiLSTM.
            (
                "cnn_bilstm",
                128,
                conv(d, 64, 3) + bilstm(64, 32) + lin(64, 3),
            ),
            // ATTN-BiLSTM: W_attn on the 36 input steps, BiLSTM on the input width.
            (
                "attn_bilstm",
                36,
                3 * d * d + lin(36, 36) + bilstm(d, 32) + lin(64, 3),
            ),
        ];
        for (arch, t, want) in cases {
            let (vs, e) = encoder(arch, t, d);
            assert_eq!(n_params(&vs), want, "{arch}");
            let x = Tensor::randn([2, t, d], (Kind::Float, Device::Cpu));
            assert_eq!(e.forward_t(&x, true).size(), [2, 3], "{arch}");
        }
    }

    #[test]
    fn fusion_heads_have_the_derived_parameter_counts() {
        let f = 256; // X_M = [H_V 64 : H_A 64 : H_T 128]
        let dm = FUSION_DIM;
        let tokens = 2 * f * dm; // w_i and b_i, 64 each, for each of the 256 features
        let scaled = 4 * lin(dm, dm); // Q, K, V, O projections with biases
        let tanh = 4 * dm * dm + lin(f, f); // W_Que, W_Key, W_Val, W_MHA + W_attn on the keys
        let ffm = 2 * dm + lin(dm, 2 * dm) + lin(2 * dm, dm); // LN + two linears
        let head = lin(dm, 3);
        for (attention, mhsa) in [("tanh", tanh), ("scaled", scaled)] {
            let cases = vec![
                ("concat", lin(f, 3)),
                ("attention", tokens + mhsa + head),
                ("transformer", tokens + mhsa + 2 * dm + ffm + head),
                (
                    "conformer",
                    // FFM, LN + MHSA, conv module (LN, conv 64->128 k3, BN, conv 64->64 k1),
                    // FFM, final LN.
                    tokens
                        + ffm
                        + 2 * dm
                        + mhsa
                        + 2 * dm
                        + conv(dm, 2 * dm, 3)
                        + 2 * dm
                        + conv(dm, dm, 1)
                        + ffm
                        + 2 * dm
                        + head,
                ),
            ];
            for (kind, want) in cases {
                let vs = nn::VarStore::new(Device::Cpu);
                let fu = Fusion::new(&vs.root(), kind, f, 3, attention).unwrap();
                assert_eq!(n_params(&vs), want, "{kind} {attention}");
                let x = Tensor::randn([5, f], (Kind::Float, Device::Cpu));
                assert_eq!(fu.forward_t(&x, true).size(), [5, 3], "{kind}");
                assert_eq!(fu.forward_t(&x, false).size(), [5, 3], "{kind}");
            }
        }
        // The paper's conformer written out: tokens 32,768; FFM 16,704; LN 128; MHSA 16,384 +
        // 65,792; LN 128; conv module 24,704 + 128 + 4,160; FFM 16,704; LN 128; head 195:
        // 177,923.
        let vs = nn::VarStore::new(Device::Cpu);
        Fusion::new(&vs.root(), "conformer", f, 3, "tanh").unwrap();
        assert_eq!(n_params(&vs), 177_923);
    }

    /// Max absolute difference of two outputs.
    fn gap(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn fusion_tokens_know_which_feature_a_value_came_from() {
        tch::manual_seed(7);
        let f = 24;
        let x = Tensor::randn([4, f], (Kind::Float, Device::Cpu));
        let perm = Tensor::from_slice(&(0..f).rev().collect::<Vec<i64>>());
        let xp = x.index_select(1, &perm);
        for kind in ["attention", "transformer", "conformer"] {
            for attention in ATTENTIONS {
                let vs = nn::VarStore::new(Device::Cpu);
                let fu = Fusion::new(&vs.root(), kind, f, 3, attention).unwrap();
                let (a, b) = (fu.forward_t(&x, false), fu.forward_t(&xp, false));
                // A shared lift with near-zero position embeddings made this nearly 0: GAP over
                // tokens is blind to their order unless each token carries its feature.
                assert!(gap(&a, &b) > 1e-3, "{kind} {attention}: {}", gap(&a, &b));
            }
        }
    }

    #[test]
    fn tanh_attention_is_not_the_scaled_dot_product() {
        tch::manual_seed(3);
        let x = Tensor::randn([2, 16, FUSION_DIM], (Kind::Float, Device::Cpu));
        let vs = nn::VarStore::new(Device::Cpu);
        let t = TanhMhsa::new(vs.root() / "t", 16, FUSION_DIM, 2);
        // With W_attn the identity, eq. 16 is softmax(tanh(QKᵀ))·(W_Val·K); check it by hand.
        tch::no_grad(|| {
            t.w.ws
                .shallow_clone()
                .copy_(&Tensor::eye(16, (Kind::Float, Device::Cpu)));
            let _ = t.w.bs.as_ref().unwrap().shallow_clone().zero_();
        });
        let got = t.forward_t(&x, 0.0, false);
        let (q, k) = (t.q.forward(&x), t.k.forward(&x));
        let v = t.val.forward(&k);
        let heads: Vec<Tensor> = (0..2)
            .map(|h| {
                let s = |z: &Tensor| z.narrow(-1, h * 32, 32);
                let a = s(&q)
                    .matmul(&s(&k).transpose(-2, -1))
                    .tanh()
                    .softmax(-1, Kind::Float);
                a.matmul(&s(&v))
            })
            .collect();
        let want = t.o.forward(&Tensor::cat(&heads, -1));
        assert!(gap(&got, &want) < 1e-5, "{}", gap(&got, &want));
        let scaled = Mhsa::new(vs.root() / "s", FUSION_DIM, 2).forward_t(&x, 0.0, false);
        assert!(gap(&got, &scaled) > 1e-3);
    }
}
