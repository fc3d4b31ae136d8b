//! `train_joint`: one multimodal network trained end to end on cached feature sequences, with
//! the multimodal label: SMP (paper 001) or CM-MSF (paper 003). Its table has the same long
//! format as the other training stages (curve, checkpoint, predictions), so `evaluate`,
//! `export_hidden` and `aggregate` read it unchanged.
//!
//! Inputs: one to three per-clip feature stages (their modality letters in `names`, default
//! `vat`), then labels, then split. `modalities` trains on a subset (the papers' unimodal and
//! bimodal ablations) without changing the inputs.

use serde_json::json;
use tch::nn;
use tch::{Device, Tensor};

use crate::cmmsf::{CmMsf, CmMsfCfg};
use crate::params::{ParamSpec, ParamType};
use crate::smp::{Smp, SmpCfg, Terms};
use crate::train::{curve_report, dataset, fit, model_table, TrainCfg};
use crate::{Output, Params, RunCtx, Stage, StageError};

pub struct TrainJoint;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "model",
        ParamType::Enum(&["smp", "cm_msf"]),
        None,
        "smp: attention-BiLSTMs + SMP modules (paper 001); cm_msf: dual encoders + cascaded cross-modal encoder + mask-gated fusion (paper 003)",
    ),
    ParamSpec::new(
        "names",
        ParamType::Str,
        Some("\"vat\""),
        "the feature inputs' modalities, one letter each in input order (v, a, t)",
    ),
    ParamSpec::new(
        "modalities",
        ParamType::Str,
        Some("\"\""),
        "train on these modalities only (`va`, `t`, ...; empty: all inputs)",
    ),
    ParamSpec::new(
        "label",
        ParamType::Str,
        Some("\"y\""),
        "labels column: the score `y` (regression, L1 loss: MMSA's metrics) or classes (acc2, acc3, ...)",
    ),
    ParamSpec::new("classes", ParamType::Int, Some("3"), "number of classes (classification)"),
    ParamSpec::new("lr", ParamType::Float, Some("0.00001"), "Adam learning rate (both papers: 1e-5)"),
    ParamSpec::new("epochs", ParamType::Int, Some("100"), "training epochs; the best-on-valid epoch's weights are kept"),
    ParamSpec::new("batch_size", ParamType::Int, Some("32"), "clips per step (SMP 64, CM-MSF 32)"),
    ParamSpec::new("seed", ParamType::Int, Some("1"), "weight init and batch order"),
    ParamSpec::new("threads", ParamType::Int, Some("1"), "libtorch threads"),
    ParamSpec::new(
        "plateau_factor",
        ParamType::Float,
        Some("0.0"),
        "multiply the learning rate by this when the validation loss stops improving (0: constant; CM-MSF: 0.1)",
    ),
    ParamSpec::new("plateau_patience", ParamType::Int, Some("10"), "epochs without improvement before that"),
    ParamSpec::new("dropout", ParamType::Float, Some("0.3"), "dropout (CM-MSF: 0.3)"),
    ParamSpec::new("d_model", ParamType::Int, Some("0"), "model width (0: SMP 64, CM-MSF 100 = its BiLSTM hidden size)"),
    ParamSpec::new(
        "heads",
        ParamType::Int,
        Some("0"),
        "attention heads of the SMP modules / the cross-modal attention (0: SMP 4, CM-MSF 5); a divisor of d_model",
    ),
    ParamSpec::new(
        "terms",
        ParamType::Enum(&["all", "pairs", "unimodal"]),
        Some("\"all\""),
        "SMP: the FC reads F_x and F_xy (all), only F_xy (pairs) or only F_x (unimodal)",
    ),
    ParamSpec::new("ffn", ParamType::Int, Some("0"), "SMP: inner width of the FFN (0: 2 x d_model)"),
    ParamSpec::new("hidden", ParamType::Int, Some("64"), "SMP: attention-BiLSTM size per direction"),
    ParamSpec::new("kernel", ParamType::Int, Some("3"), "SMP: kernel of the 1-D conv that mixes the two branches"),
    ParamSpec::new("layers", ParamType::Int, Some("8"), "CM-MSF: cascade depth N"),
    ParamSpec::new("encoder_layers", ParamType::Int, Some("5"), "CM-MSF: layers of each Transformer encoder"),
    ParamSpec::new("encoder_heads", ParamType::Int, Some("5"), "CM-MSF: heads of each Transformer encoder; a divisor of d_model"),
    ParamSpec::new("text_encoders", ParamType::Str, Some("\"linear+lstm\""), "CM-MSF: text encoders, one or two of linear, lstm, bigru, transformer (BERT vectors + LSTM)"),
    ParamSpec::new("audio_encoders", ParamType::Str, Some("\"transformer+bigru\""), "CM-MSF: audio encoders (mel spectrogram: Transformer + BiGRU)"),
    ParamSpec::new("vision_encoders", ParamType::Str, Some("\"linear+transformer\""), "CM-MSF: vision encoders (CNN frame vectors + Transformer)"),
    ParamSpec::new("cascade_lstm", ParamType::Bool, Some("true"), "CM-MSF: the BiLSTM in each cascade layer (false: Table 6's \"(-) BiLSTM\")"),
    ParamSpec::new("mgf", ParamType::Bool, Some("true"), "CM-MSF: mask-gated fusion (false: Table 6's \"(-) MGF\")"),
    ParamSpec::new("mask_threshold", ParamType::Float, Some("0.5"), "CM-MSF: audio/vision steps whose norm is below this x the clip's mean are masked"),
];

/// Which inputs to train on, as (input index, modality letter).
fn used(p: &Params, inputs: usize) -> Result<Vec<(usize, char)>, StageError> {
    let names: Vec<char> = p.str("names")?.chars().collect();
    if names.len() != inputs {
        return Err(StageError::param(
            "names",
            format!("{} letters for {inputs} feature inputs", names.len()),
        ));
    }
    if let Some(c) = names.iter().find(|c| !"vat".contains(**c)) {
        return Err(StageError::param(
            "names",
            format!("`{c}` is not one of v, a, t"),
        ));
    }
    let want = p.str("modalities")?;
    if let Some(c) = want.chars().find(|c| !names.contains(c)) {
        return Err(StageError::param(
            "modalities",
            format!(
                "`{c}` is not among the inputs' modalities `{}`",
                p.str("names")?
            ),
        ));
    }
    Ok(names
        .iter()
        .enumerate()
        .filter(|(_, c)| want.is_empty() || want.contains(**c))
        .map(|(k, c)| (k, *c))
        .collect())
}

/// A built network of either kind.
enum Net {
    Smp(Smp),
    CmMsf(CmMsf),
}

impl Net {
    fn build(
        vs: &nn::Path,
        p: &Params,
        names: &[char],
        dims: &[i64],
        outputs: i64,
    ) -> Result<Net, StageError> {
        let or = |v: i64, d: i64| if v > 0 { v } else { d };
        let bad = |e: String| StageError::param("model", e);
        match p.str("model")? {
            "smp" => {
                let d = or(p.i64("d_model")?, 64);
                let c = SmpCfg {
                    d,
                    heads: or(p.i64("heads")?, 4),
                    ffn: or(p.i64("ffn")?, 2 * d),
                    hidden: p.i64("hidden")?,
                    kernel: p.i64("kernel")?,
                    dropout: p.f64("dropout")?,
                    terms: Terms::parse(p.str("terms")?)
                        .map_err(|e| StageError::param("terms", e))?,
                };
                Smp::new(vs, names, dims, outputs, &c)
                    .map(Net::Smp)
                    .map_err(bad)
            }
            _ => {
                let encoders = names
                    .iter()
                    .map(|m| {
                        let key = match m {
                            't' => "text_encoders",
                            'a' => "audio_encoders",
                            _ => "vision_encoders",
                        };
                        Ok(p.str(key)?
                            .split('+')
                            .map(|s| s.trim().to_string())
                            .collect())
                    })
                    .collect::<Result<Vec<Vec<String>>, StageError>>()?;
                let c = CmMsfCfg {
                    d: or(p.i64("d_model")?, 100),
                    heads: or(p.i64("heads")?, 5),
                    layers: p.i64("layers")?.max(0),
                    encoder_layers: p.i64("encoder_layers")?.max(0),
                    encoder_heads: p.i64("encoder_heads")?.max(1),
                    dropout: p.f64("dropout")?,
                    cascade_lstm: p.bool("cascade_lstm")?,
                    mgf: p.bool("mgf")?,
                    mask_threshold: p.f64("mask_threshold")?,
                    encoders,
                };
                CmMsf::new(vs, names, dims, outputs, &c)
                    .map(Net::CmMsf)
                    .map_err(bad)
            }
        }
    }
    fn forward_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        match self {
            Net::Smp(m) => m.forward_t(xs, train),
            Net::CmMsf(m) => m.forward_t(xs, train),
        }
    }
    fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        match self {
            Net::Smp(m) => m.hidden_t(xs, train),
            Net::CmMsf(m) => m.hidden_t(xs, train),
        }
    }
}

impl Stage for TrainJoint {
    fn kind(&self) -> &'static str {
        "train_joint"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "a multimodal network end to end on feature sequences: SMP or CM-MSF (inputs: 1-3 features, labels, split)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (3, 5)
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let mut cfg = TrainCfg::from(p)?;
        let factor = p.f64("plateau_factor")?;
        if factor > 0.0 {
            cfg.plateau = Some((factor, p.i64("plateau_patience")?));
        }
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let k = ctx.inputs.len() - 2;
        let used = used(p, k)?;
        let feats: Vec<usize> = used.iter().map(|u| u.0).collect();
        let names: Vec<char> = used.iter().map(|u| u.1).collect();
        let ds = dataset(
            ctx,
            &feats,
            k,
            k + 1,
            "m",
            p.str("label")?,
            p.i64("classes")?,
        )?;
        let dims: Vec<i64> = ds.x.iter().map(|x| x.size()[2]).collect();
        let steps: Vec<i64> = ds.x.iter().map(|x| x.size()[1]).collect();
        if p.str("model")? == "smp" && steps.iter().any(|&t| t != steps[0]) {
            return Err(StageError::Input(format!(
                "SMP needs one sequence length for all modalities, got {steps:?}; pad them to one (the paper: 32)"
            )));
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = Net::build(&vs.root(), p, &names, &dims, ds.task.outputs())?;
        let n_params = crate::nets::n_params(&vs);
        let fwd = |x: &[Tensor], train: bool| (net.forward_t(x, train), Vec::new());
        let trained = fit(&mut vs, &ds, &cfg, 1.0, &[], &fwd)?;
        let hidden = tch::no_grad(|| net.hidden_t(&ds.x, false));
        let config = json!({
            "model": p.str("model")?,
            "modalities": names.iter().collect::<String>(),
            "steps": steps,
            "dims": dims,
            "outputs": ds.task.outputs(),
            "parameters": n_params,
        });
        Ok(Output {
            table: model_table(&ds, &trained, config, Some(&hidden))?,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &arrow::record_batch::RecordBatch) -> Option<String> {
        curve_report(t)
    }
}
