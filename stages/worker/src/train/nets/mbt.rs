//! MER-SEM-MBT (paper 002): audio and visual CNN backbones trained end to end inside the model,
//! with text-guided semantic enhancement modules (SEM) between their convolution groups, a
//! multimodal bottleneck Transformer (MBT) across the audio and visual token sequences, and an
//! attention-weighted decision fusion of the audio, visual and text scores.
//!
//! - Audio: one token per 960 ms log-mel patch (`[T, 96 * n_mels]` rows), a VGGish-shaped CNN of
//!   four groups (conv; conv; 2 x conv; 2 x conv, each group ending in a 2 x 2 max pool; widths
//!   w, 2w, 4w, 8w), global average pooled, then VGGish's FC + ReLU to its 128-d embedding.
//! - Vision: one token per sampled face (`[T, C * S * S]` rows), the four-group face-emotion CNN
//!   of facial-emotion-recognition's NetworkV2 (reflection pad, 3 x 3 conv with strides 1, 2, 2, 2,
//!   batch norm, ReLU; 32 to 256 channels), whose pretrained weights can be loaded.
//! - Frozen leading groups (`freeze_audio`, `freeze_vision`) also run in eval mode: their batch
//!   norms keep the pretrained running statistics instead of drifting with the batches.
//! - Text: the sentence vector (`[1, d_t]`), the key and value of every SEM and the input of the
//!   text decision.
//!
//! SEM after group g: Q = Conv1x1(F) over the H x W positions, k = W_k t, v = W_v t; a spatial
//! softmax of Q k / sqrt(C) weights v at each position (E), F' = ReLU(Conv1x1(F + LN(E))).
//!
//! MBT layer: bottleneck tokens B (N_b of them) attend to each modality and the results are
//! summed, B' = LN(B + sum_m MHA(B, X_m)); each modality then attends to B':
//! X_m' = LN(X_m + MHA(X_m, B')), X_m'' = LN(X_m' + FFN(X_m')). Without MBT (`mbt: false`, the
//! paper's "MER" and unimodal rows) each modality gets a self-attention layer instead.
//!
//! Decision: S_m = MLP(masked mean of X_m) for audio and vision and MLP(t) for text;
//! S' = tanh(W_1 S_m), alpha = softmax over modalities of w_2 . S', output sum_m alpha_m S_m.

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::train::nets::layers::{masked_mean, row_mask, sinusoid, Mha};

pub struct MbtCfg {
    pub d: i64,
    pub heads: i64,
    pub layers: i64,
    pub bottleneck: i64,
    pub mbt: bool,
    /// Groups (1-4) followed by a SEM, per backbone.
    pub sem_audio: Vec<i64>,
    pub sem_vision: Vec<i64>,
    /// SEMs at all (they need the text input).
    pub sem: bool,
    /// The text's own scores join the decision fusion.
    pub text_decision: bool,
    pub n_mels: i64,
    pub audio_width: i64,
    pub image_channels: i64,
    pub dropout: f64,
    /// Leading groups of each backbone that do not train: they also run in eval mode, so a
    /// frozen batch norm keeps its pretrained running statistics.
    pub freeze_audio: i64,
    pub freeze_vision: i64,
}

/// Width of VGGish's embedding layer, the FC that follows its convolutions.
pub const VGGISH_EMBEDDING: i64 = 128;

/// Variable groups: the optimizer gives backbones their own learning rates.
pub const VISION_GROUP: usize = 1;
pub const AUDIO_GROUP: usize = 2;

#[derive(Debug)]
struct Sem {
    q: nn::Conv2D,
    k: nn::Linear,
    v: nn::Linear,
    ln: nn::LayerNorm,
    o: nn::Conv2D,
}

impl Sem {
    fn new(vs: nn::Path, c: i64, dt: i64) -> Self {
        let one = |n: &str| nn::conv2d(&vs / n, c, c, 1, Default::default());
        Sem {
            q: one("q"),
            k: nn::linear(&vs / "k", dt, c, Default::default()),
            v: nn::linear(&vs / "v", dt, c, Default::default()),
            ln: nn::layer_norm(&vs / "ln", vec![c], Default::default()),
            o: one("o"),
        }
    }
    /// `f` `[B, C, H, W]`, `t` `[B, d_t]`.
    fn forward(&self, f: &Tensor, t: &Tensor) -> Tensor {
        let (b, c, h, w) = f.size4().expect("[B, C, H, W]");
        let q = self.q.forward(f).view([b, c, h * w]);
        let k = self.k.forward(t).unsqueeze(-1);
        let s = (q * k).sum_dim_intlist(1, false, Kind::Float) / (c as f64).sqrt();
        let a = s.softmax(-1, Kind::Float);
        let e = a.unsqueeze(-1) * self.v.forward(t).unsqueeze(1);
        let e = self.ln.forward(&e).transpose(1, 2).view([b, c, h, w]);
        self.o.forward(&(f + e)).relu()
    }
}

/// One convolution group of a backbone.
#[derive(Debug)]
enum Group {
    /// VGG: 3 x 3 convs (padding 1) with ReLU, then a 2 x 2 max pool.
    Vgg(Vec<nn::Conv2D>),
    /// NetworkV2: reflection pad, 3 x 3 conv with a stride, batch norm, ReLU.
    Face(Box<(nn::Conv2D, nn::BatchNorm)>),
}

impl Group {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Group::Vgg(convs) => {
                let mut y = x.shallow_clone();
                for c in convs {
                    y = c.forward(&y).relu();
                }
                y.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            }
            Group::Face(cb) => {
                cb.1.forward_t(&cb.0.forward(&x.reflection_pad2d([1, 1, 1, 1])), train)
                    .relu()
            }
        }
    }
}

#[derive(Debug)]
struct Backbone {
    groups: Vec<Group>,
    sems: Vec<Option<Sem>>,
    /// Leading groups run in eval mode (frozen).
    frozen: usize,
    /// VGGish's FC + ReLU to its 128-d embedding, after the pooled convolutions.
    fc: Option<nn::Linear>,
    out: i64,
}

impl Backbone {
    fn vggish(vs: &nn::Path, sem_vs: &nn::Path, w: i64, sem: &[i64], dt: Option<i64>) -> Backbone {
        let widths = [w, 2 * w, 4 * w, 8 * w];
        let convs_per = [1, 1, 2, 2];
        let pad = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut groups = Vec::new();
        let mut cin = 1;
        for g in 0..4 {
            let gp = vs / format!("g{}", g + 1);
            let convs = (0..convs_per[g])
                .map(|k| {
                    let c = nn::conv2d(&gp / format!("conv{k}"), cin, widths[g], 3, pad);
                    cin = widths[g];
                    c
                })
                .collect();
            groups.push(Group::Vgg(convs));
        }
        let sems = Self::sems(sem_vs, &widths, sem, dt);
        // VGGish flattens its last map into FC 4096 -> 4096 -> 128; on global-average-pooled
        // maps of any clip length one FC to the 128-d embedding keeps its output width.
        let fc = nn::linear(vs / "fc", widths[3], VGGISH_EMBEDDING, Default::default());
        Backbone {
            groups,
            sems,
            frozen: 0,
            fc: Some(fc),
            out: VGGISH_EMBEDDING,
        }
    }
    fn face(
        vs: &nn::Path,
        sem_vs: &nn::Path,
        channels: i64,
        sem: &[i64],
        dt: Option<i64>,
    ) -> Backbone {
        let widths = [32, 64, 128, 256];
        let mut groups = Vec::new();
        let mut cin = channels;
        for (g, &w) in widths.iter().enumerate() {
            let gp = vs / format!("g{}", g + 1);
            let cfg = nn::ConvConfig {
                stride: if g == 0 { 1 } else { 2 },
                ..Default::default()
            };
            groups.push(Group::Face(Box::new((
                nn::conv2d(&gp / "conv", cin, w, 3, cfg),
                nn::batch_norm2d(&gp / "bn", w, Default::default()),
            ))));
            cin = w;
        }
        let sems = Self::sems(sem_vs, &widths, sem, dt);
        Backbone {
            groups,
            sems,
            frozen: 0,
            fc: None,
            out: widths[3],
        }
    }
    /// SEMs are new layers: they live outside the backbone's variable group and train at the
    /// model's rate.
    fn sems(vs: &nn::Path, widths: &[i64; 4], sem: &[i64], dt: Option<i64>) -> Vec<Option<Sem>> {
        (1..=4)
            .map(|g| {
                dt.filter(|_| sem.contains(&g))
                    .map(|dt| Sem::new(vs / format!("g{g}"), widths[g as usize - 1], dt))
            })
            .collect()
    }
    /// `x` `[B, C, H, W]`, `t` `[B, d_t]` -> `[B, out]` (global average pool).
    fn forward_t(&self, x: &Tensor, t: Option<&Tensor>, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        for (k, (g, s)) in self.groups.iter().zip(&self.sems).enumerate() {
            y = g.forward_t(&y, train && k >= self.frozen);
            if let (Some(s), Some(t)) = (s, t) {
                y = s.forward(&y, t);
            }
        }
        let y = y.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        match &self.fc {
            Some(fc) => fc.forward(&y).relu(),
            None => y,
        }
    }
}

#[derive(Debug)]
struct Ffn(nn::Linear, nn::Linear);

impl Ffn {
    fn new(vs: nn::Path, d: i64) -> Self {
        Ffn(
            nn::linear(&vs / "a", d, 2 * d, Default::default()),
            nn::linear(&vs / "b", 2 * d, d, Default::default()),
        )
    }
    fn forward_t(&self, x: &Tensor, p: f64, train: bool) -> Tensor {
        self.1
            .forward(&self.0.forward(x).relu().dropout(p, train))
            .dropout(p, train)
    }
}

/// Per modality: attention (to the bottleneck or to itself), LN, FFN, LN.
#[derive(Debug)]
struct Side {
    att: Mha,
    ln1: nn::LayerNorm,
    ffn: Ffn,
    ln2: nn::LayerNorm,
}

impl Side {
    fn new(vs: nn::Path, d: i64, heads: i64) -> Self {
        Side {
            att: Mha::new(&vs / "att", d, d, heads),
            ln1: nn::layer_norm(&vs / "ln1", vec![d], Default::default()),
            ffn: Ffn::new(&vs / "ffn", d),
            ln2: nn::layer_norm(&vs / "ln2", vec![d], Default::default()),
        }
    }
    fn forward_t(
        &self,
        x: &Tensor,
        kv: &Tensor,
        mask: Option<&Tensor>,
        p: f64,
        train: bool,
    ) -> Tensor {
        let a = self.att.forward_t(x, kv, mask, p, train).dropout(p, train);
        let y = self.ln1.forward(&(x + a));
        self.ln2.forward(&(&y + self.ffn.forward_t(&y, p, train)))
    }
}

#[derive(Debug)]
struct Layer {
    /// MBT's compression: the bottleneck attends to each modality.
    compress: Vec<Mha>,
    ln_b: Option<nn::LayerNorm>,
    sides: Vec<Side>,
}

#[derive(Debug)]
pub struct MerSemMbt {
    names: Vec<char>,
    audio: Option<(Backbone, nn::Linear)>,
    vision: Option<(Backbone, nn::Linear)>,
    n_mels: i64,
    channels: i64,
    bottleneck: Option<Tensor>,
    layers: Vec<Layer>,
    heads_av: Vec<(nn::Linear, nn::Linear)>,
    head_t: Option<(nn::Linear, nn::Linear)>,
    fuse: (nn::Linear, nn::Linear),
    d: i64,
    dropout: f64,
}

impl MerSemMbt {
    /// `names`: the inputs' modalities (`a`, `v`, `t`), `dims` their row widths.
    pub fn new(
        vs: &nn::Path,
        names: &[char],
        dims: &[i64],
        outputs: i64,
        c: &MbtCfg,
    ) -> Result<MerSemMbt, crate::StageError> {
        if c.d % c.heads != 0 {
            return Err(format!("d_model {} is not a multiple of heads {}", c.d, c.heads).into());
        }
        let dim = |m: char| names.iter().position(|&n| n == m).map(|k| dims[k]);
        let dt = dim('t');
        let sem_dt = dt.filter(|_| c.sem);
        let audio = match dim('a') {
            Some(w) => {
                if c.n_mels < 1 || w % c.n_mels != 0 {
                    return Err(format!(
                        "audio rows of {w} values are not patches of {} mel bands",
                        c.n_mels
                    )
                    .into());
                }
                let mut bb = Backbone::vggish(
                    &(vs.set_group(AUDIO_GROUP) / "audio"),
                    &(vs / "sem_audio"),
                    c.audio_width,
                    &c.sem_audio,
                    sem_dt,
                );
                bb.frozen = c.freeze_audio.clamp(0, 4) as usize;
                let proj = nn::linear(vs / "audio_proj", bb.out, c.d, Default::default());
                Some((bb, proj))
            }
            None => None,
        };
        let vision = match dim('v') {
            Some(w) => {
                let side = ((w / c.image_channels.max(1)) as f64).sqrt() as i64;
                if side * side * c.image_channels != w {
                    return Err(format!(
                        "vision rows of {w} values are not square images of {} channel(s)",
                        c.image_channels
                    )
                    .into());
                }
                let mut bb = Backbone::face(
                    &(vs.set_group(VISION_GROUP) / "vision"),
                    &(vs / "sem_vision"),
                    c.image_channels,
                    &c.sem_vision,
                    sem_dt,
                );
                bb.frozen = c.freeze_vision.clamp(0, 4) as usize;
                let proj = nn::linear(vs / "vision_proj", bb.out, c.d, Default::default());
                Some((bb, proj))
            }
            None => None,
        };
        let av = audio.is_some() as usize + vision.is_some() as usize;
        let mbt = c.mbt && av == 2;
        let layers = (0..c.layers)
            .map(|l| {
                let lp = vs / format!("layer{l}");
                Layer {
                    compress: if mbt {
                        (0..av)
                            .map(|m| Mha::new(&lp / format!("compress{m}"), c.d, c.d, c.heads))
                            .collect()
                    } else {
                        Vec::new()
                    },
                    ln_b: mbt.then(|| nn::layer_norm(&lp / "ln_b", vec![c.d], Default::default())),
                    sides: (0..av)
                        .map(|m| Side::new(&lp / format!("side{m}"), c.d, c.heads))
                        .collect(),
                }
            })
            .collect();
        let bottleneck =
            mbt.then(|| vs.randn("bottleneck", &[1, c.bottleneck.max(1), c.d], 0.0, 0.02));
        let mlp = |p: nn::Path, i: i64| {
            (
                nn::linear(&p / "a", i, c.d, Default::default()),
                nn::linear(&p / "b", c.d, outputs, Default::default()),
            )
        };
        let heads_av = (0..av).map(|m| mlp(vs / format!("head{m}"), c.d)).collect();
        let head_t = dt
            .filter(|_| c.text_decision)
            .map(|dt| mlp(vs / "head_t", dt));
        Ok(MerSemMbt {
            names: names.to_vec(),
            audio,
            vision,
            n_mels: c.n_mels,
            channels: c.image_channels,
            bottleneck,
            layers,
            heads_av,
            head_t,
            fuse: (
                nn::linear(vs / "fuse_w1", outputs, outputs, Default::default()),
                nn::linear(vs / "fuse_w2", outputs, 1, Default::default()),
            ),
            d: c.d,
            dropout: c.dropout,
        })
    }

    fn input<'a>(&self, xs: &'a [Tensor], m: char) -> Option<&'a Tensor> {
        self.names.iter().position(|&n| n == m).map(|k| &xs[k])
    }

    /// Tokens `[B, T, d]` and the step mask `[B, T]` of a backbone's modality.
    fn tokens(
        &self,
        bb: &(Backbone, nn::Linear),
        x: &Tensor,
        text: Option<&Tensor>,
        image: [i64; 3],
        train: bool,
    ) -> (Tensor, Tensor) {
        let (b, t, _) = x.size3().expect("[B, T, D]");
        let mask = row_mask(x);
        let imgs = x.reshape([b * t, image[0], image[1], image[2]]);
        // Every patch or face of a clip is enhanced by the clip's sentence.
        let tt = text.map(|s| s.squeeze_dim(1).repeat_interleave_self_int(t, 0, None));
        let f = bb.0.forward_t(&imgs, tt.as_ref(), train).view([b, t, -1]);
        let pe = sinusoid(t, self.d);
        (bb.1.forward(&f) + pe, mask)
    }

    /// Per modality, the penultimate decision features `[B, d]` and the scores `[B, outputs]`.
    fn branches(&self, xs: &[Tensor], train: bool) -> Vec<(Tensor, Tensor)> {
        let p = self.dropout;
        let text = self.input(xs, 't');
        let mut seqs = Vec::new();
        if let (Some(bb), Some(x)) = (&self.audio, self.input(xs, 'a')) {
            let w = x.size()[2];
            seqs.push(self.tokens(bb, x, text, [1, w / self.n_mels, self.n_mels], train));
        }
        if let (Some(bb), Some(x)) = (&self.vision, self.input(xs, 'v')) {
            let w = x.size()[2];
            let s = ((w / self.channels) as f64).sqrt() as i64;
            seqs.push(self.tokens(bb, x, text, [self.channels, s, s], train));
        }
        let b = xs[0].size()[0];
        let mut bn = self
            .bottleneck
            .as_ref()
            .map(|t| t.expand([b, -1, -1], false));
        for layer in &self.layers {
            if let (Some(bt), Some(ln)) = (&bn, &layer.ln_b) {
                // Not in place: `bt` may be a view of the learned bottleneck tokens.
                let sum = layer
                    .compress
                    .iter()
                    .zip(&seqs)
                    .fold(bt.shallow_clone(), |acc, (att, (x, m))| {
                        acc + att.forward_t(bt, x, Some(m), p, train)
                    });
                bn = Some(ln.forward(&sum));
            }
            seqs = seqs
                .iter()
                .zip(&layer.sides)
                .map(|((x, m), side)| {
                    let y = match &bn {
                        Some(bt) => side.forward_t(x, bt, None, p, train),
                        None => side.forward_t(x, x, Some(m), p, train),
                    };
                    (y, m.shallow_clone())
                })
                .collect();
        }
        let mut out: Vec<(Tensor, Tensor)> = seqs
            .iter()
            .zip(&self.heads_av)
            .map(|((x, m), h)| {
                let z = h.0.forward(&masked_mean(x, m)).relu();
                let s = h.1.forward(&z.dropout(p, train));
                (z, s)
            })
            .collect();
        if let (Some(h), Some(t)) = (&self.head_t, text) {
            let z = h.0.forward(&t.squeeze_dim(1)).relu();
            let s = h.1.forward(&z.dropout(p, train));
            out.push((z, s));
        }
        out
    }

    pub fn forward_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        let scores: Vec<Tensor> = self.branches(xs, train).into_iter().map(|b| b.1).collect();
        let s = Tensor::stack(&scores, 1);
        let a = self
            .fuse
            .1
            .forward(&self.fuse.0.forward(&s).tanh())
            .softmax(1, Kind::Float);
        (s * a).sum_dim_intlist(1, false, Kind::Float)
    }

    /// The decision MLPs' hidden features side by side (the paper's t-SNE input).
    pub fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        let h: Vec<Tensor> = self.branches(xs, train).into_iter().map(|b| b.0).collect();
        Tensor::cat(&h, 1)
    }
}

/// Copies facial-emotion-recognition's NetworkV2 weights (its state dict as safetensors:
/// `conv_k.1` conv, `conv_k.2` batch norm) into the vision backbone. Returns how many tensors
/// were copied.
pub fn load_face_weights(
    vs: &nn::VarStore,
    path: &std::path::Path,
) -> Result<usize, crate::StageError> {
    let named = Tensor::read_safetensors(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let vars = vs.variables();
    let mut copied = 0;
    for (k, t) in named {
        let mut parts = k.split('.');
        let (Some(group), Some(layer), Some(field)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(g) = group.strip_prefix("conv_") else {
            continue;
        };
        let module = match layer {
            "1" => "conv",
            "2" => "bn",
            _ => continue,
        };
        if field == "num_batches_tracked" {
            continue;
        }
        let name = format!("vision.g{g}.{module}.{field}");
        let v = vars
            .get(&name)
            .ok_or_else(|| format!("{}: `{k}` has no place in the backbone", path.display()))?;
        if v.size() != t.size() {
            return Err(format!(
                "{}: `{k}` is {:?}, the backbone's `{name}` {:?}",
                path.display(),
                t.size(),
                v.size()
            )
            .into());
        }
        tch::no_grad(|| v.shallow_clone().copy_(&t));
        copied += 1;
    }
    Ok(copied)
}

/// Stops training the first `n` groups of a backbone (`audio` or `vision`); a SEM after a
/// frozen group still trains.
pub fn freeze_groups(vs: &nn::VarStore, backbone: &str, n: i64) {
    for (name, v) in vs.variables() {
        let frozen = (1..=n).any(|g| name.starts_with(&format!("{backbone}.g{g}.")));
        if frozen {
            let _ = v.set_requires_grad(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg(mbt: bool, sem: bool) -> MbtCfg {
        MbtCfg {
            d: 64,
            heads: 8,
            layers: 1,
            bottleneck: 4,
            mbt,
            sem_audio: vec![2, 4],
            sem_vision: vec![3, 4],
            sem,
            text_decision: true,
            n_mels: 64,
            audio_width: 8,
            image_channels: 1,
            dropout: 0.1,
            freeze_audio: 0,
            freeze_vision: 2,
        }
    }

    #[test]
    fn frozen_groups_keep_their_batch_norm_statistics() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = MerSemMbt::new(&vs.root(), &['v'], &[48 * 48], 6, &cfg(false, false)).unwrap();
        let stats = |g: usize| -> Tensor {
            let vars = vs.variables();
            vars[&format!("vision.g{g}.bn.running_mean")].copy()
        };
        let before: Vec<Tensor> = (1..=4).map(stats).collect();
        let x = Tensor::randn([2, 3, 48 * 48], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let _ = net.forward_t(&[x], true);
        for g in 1..=4 {
            let moved = f64::try_from((stats(g) - &before[g - 1]).abs().max()).unwrap();
            // Groups 1 and 2 are frozen (cfg: freeze_vision 2); 3 and 4 train.
            assert_eq!(moved == 0.0, g <= 2, "group {g} moved by {moved}");
        }
    }

    #[test]
    fn the_audio_backbone_ends_in_vggish_s_128_d_embedding() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = MerSemMbt::new(&vs.root(), &['a'], &[96 * 64], 6, &cfg(false, false)).unwrap();
        let vars = vs.variables();
        // widths 8, 16, 32, 64 (audio_width 8): FC 64 -> 128.
        assert_eq!(vars["audio.fc.weight"].size(), [VGGISH_EMBEDDING, 64]);
        assert_eq!(vars["audio_proj.weight"].size(), [64, VGGISH_EMBEDDING]);
    }

    #[test]
    fn shapes_and_ablations() {
        tch::manual_seed(0);
        let xs = [
            Tensor::randn([2, 3, 96 * 64], (Kind::Float, Device::Cpu)),
            Tensor::randn([2, 3, 48 * 48], (Kind::Float, Device::Cpu)),
            Tensor::randn([2, 1, 384], (Kind::Float, Device::Cpu)),
        ];
        let mut counts = Vec::new();
        for (mbt, sem) in [(false, false), (false, true), (true, false), (true, true)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = MerSemMbt::new(
                &vs.root(),
                &['a', 'v', 't'],
                &[96 * 64, 48 * 48, 384],
                6,
                &cfg(mbt, sem),
            )
            .unwrap();
            assert_eq!(net.forward_t(&xs, true).size(), vec![2, 6]);
            assert_eq!(net.hidden_t(&xs, false).size(), vec![2, 3 * 64]);
            counts.push(crate::train::nets::layers::n_params(&vs));
        }
        // SEMs and MBT each add parameters of their own.
        assert!(counts[1] > counts[0] && counts[3] > counts[2] && counts[2] != counts[0]);
    }

    #[test]
    fn a_padded_step_does_not_change_the_output() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = MerSemMbt::new(
            &vs.root(),
            &['a', 'v'],
            &[96 * 64, 48 * 48],
            6,
            &cfg(true, false),
        )
        .unwrap();
        let a = Tensor::randn([1, 2, 96 * 64], (Kind::Float, Device::Cpu));
        let v = Tensor::randn([1, 2, 48 * 48], (Kind::Float, Device::Cpu));
        let pad = |x: &Tensor| {
            Tensor::cat(
                &[
                    x.shallow_clone(),
                    x.get(0).get(0).zeros_like().view([1, 1, -1]),
                ],
                1,
            )
        };
        let y1 = net.forward_t(&[a.shallow_clone(), v.shallow_clone()], false);
        let y2 = net.forward_t(&[pad(&a), pad(&v)], false);
        assert!(f64::try_from((y1 - y2).abs().max()).unwrap() < 1e-4);
    }
}
