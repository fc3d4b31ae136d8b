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

use crate::params::{ParamSpec, ParamType};
use crate::train::checkpoint::model_table;
use crate::train::dataset::dataset;
use crate::train::fit::{chunked, curve_report, fit, Aux, Select, TrainCfg};
use crate::train::nets::cmmsf::{CmMsf, CmMsfCfg};
use crate::train::nets::foal::{FoalCfg, FoalNet};
use crate::train::nets::mbt::{MbtCfg, MerSemMbt};
use crate::train::nets::smp::{Smp, SmpCfg, Terms};
use crate::{Output, Params, PlanCtx, RunCtx, Stage, StageError};

pub struct TrainJoint;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "model",
        ParamType::Enum(MODELS),
        None,
        "smp: attention-BiLSTMs + SMP modules (paper 001); cm_msf: dual encoders + cascaded cross-modal encoder + mask-gated fusion (paper 003); mer_sem_mbt: CNN backbones with SEMs + bottleneck Transformer + decision fusion on log-mel patches and faces (paper 002); foal_net: AVEL/MEM alignment + cross-attention fusion (paper 004)",
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
    ParamSpec::new("lr", ParamType::Float, Some("0.00001"), "learning rate (SMP, CM-MSF: 1e-5; MER-SEM-MBT, Foal-Net: 1e-4)"),
    ParamSpec::new("optimizer", ParamType::Enum(&["adam", "adamw"]), Some("\"adam\""), "Adam, or AdamW (Foal-Net)"),
    ParamSpec::new("weight_decay", ParamType::Float, Some("0.01"), "AdamW's decoupled weight decay (PyTorch's default)"),
    ParamSpec::new("select", ParamType::Enum(&["auto", "acc", "f1", "loss"]), Some("\"auto\""), "the kept epoch: best validation accuracy, macro / average F1, or lowest validation loss (every weighted term training minimises; auto: acc for classes, f1 for multi-label, loss for scores)"),
    ParamSpec::new("standardize", ParamType::Bool, Some("true"), "standardise each feature dimension with the training split's mean and sd (padding steps stay zero); MER-SEM-MBT's pretrained CNNs read raw log-mel and pixels, so its study turns this off"),
    ParamSpec::new("patience", ParamType::Int, Some("0"), "early stopping: epochs without a better kept epoch (0: train every epoch)"),
    ParamSpec::new("fold", ParamType::Int, Some("-1"), "the split's fold to train (leave-one-session-out; -1: a split with one fold)"),
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
    ParamSpec::new("mask_threshold", ParamType::Float, Some("0.5"), "CM-MSF: audio/vision steps whose level (audio in dB: mean power; else the norm) is below this x the clip's mean are masked"),
    ParamSpec::new("mask_audio_db", ParamType::Bool, Some("true"), "CM-MSF: the audio input is a spectrogram in dB, whose steps' level for the mask is their mean power (false: the vector norm, for embeddings)"),
    ParamSpec::new("sem_audio", ParamType::Str, Some("\"2,4\""), "MER-SEM-MBT: audio CNN groups (1-4) followed by a SEM (VGGish's conv2 and conv4); empty: none"),
    ParamSpec::new("sem_vision", ParamType::Str, Some("\"3,4\""), "MER-SEM-MBT: visual CNN groups (1-4) followed by a SEM (the third and the last); empty: none"),
    ParamSpec::new("sem", ParamType::Bool, Some("true"), "MER-SEM-MBT: SEMs at the sem_audio / sem_vision positions (false: none; needs the text input)"),
    ParamSpec::new("text_decision", ParamType::Bool, Some("true"), "MER-SEM-MBT: the text's own scores join the decision fusion (false: text only guides the SEMs)"),
    ParamSpec::new("mbt", ParamType::Bool, Some("true"), "MER-SEM-MBT: the bottleneck Transformer (false: a self-attention layer per modality, late fusion)"),
    ParamSpec::new("mbt_layers", ParamType::Int, Some("2"), "MER-SEM-MBT: MBT (or self-attention) layers"),
    ParamSpec::new("bottleneck", ParamType::Int, Some("4"), "MER-SEM-MBT: bottleneck tokens N_b"),
    ParamSpec::new("n_mels", ParamType::Int, Some("64"), "MER-SEM-MBT: mel bands of an audio patch (its rows hold frames x n_mels values)"),
    ParamSpec::new("audio_width", ParamType::Int, Some("16"), "MER-SEM-MBT: channels of the audio CNN's first group (VGGish: 64; doubled per group)"),
    ParamSpec::new("image_channels", ParamType::Int, Some("1"), "MER-SEM-MBT: channels of a face image (1: grey, the face CNN's input)"),
    ParamSpec::new("vision_weights", ParamType::Path, Some("\"\""), "MER-SEM-MBT: the face CNN's pretrained weights (safetensors of NetworkV2's state dict; empty: random init)"),
    ParamSpec::new("freeze_audio", ParamType::Int, Some("2"), "MER-SEM-MBT: leading audio CNN groups kept fixed (the paper: VGGish's first two)"),
    ParamSpec::new("freeze_vision", ParamType::Int, Some("2"), "MER-SEM-MBT: leading visual CNN groups kept fixed"),
    ParamSpec::new("audio_lr", ParamType::Float, Some("0.00001"), "MER-SEM-MBT: learning rate of the audio CNN (the paper: 1e-5)"),
    ParamSpec::new("vision_lr", ParamType::Float, Some("0.00001"), "MER-SEM-MBT: learning rate of the visual CNN (the paper: 1e-5)"),
    ParamSpec::new("avel", ParamType::Bool, Some("true"), "Foal-Net: audio-video emotion alignment (contrastive, label-aware)"),
    ParamSpec::new("mem", ParamType::Bool, Some("true"), "Foal-Net: emotion label matching with in-batch hard negatives"),
    ParamSpec::new("lambda", ParamType::Float, Some("0.01"), "Foal-Net: weight of the matching loss"),
    ParamSpec::new("temperature", ParamType::Float, Some("14.285714"), "Foal-Net: the similarity scale eps (CLIP's 1/0.07)"),
    ParamSpec::new("projection", ParamType::Int, Some("512"), "Foal-Net: units of the AVEL projection layers"),
    ParamSpec::new("projection_dropout", ParamType::Float, Some("0.5"), "Foal-Net: dropout of the AVEL projections"),
    ParamSpec::new("fusion_layers", ParamType::Int, Some("2"), "Foal-Net: cross-attention layers"),
];

/// The network a param belongs to; None: every network reads it.
fn network_of(param: &str) -> Option<&'static str> {
    Some(match param {
        "terms" | "ffn" | "hidden" | "kernel" => "smp",
        "layers" | "encoder_layers" | "encoder_heads" | "text_encoders" | "audio_encoders"
        | "vision_encoders" | "cascade_lstm" | "mgf" | "mask_threshold" | "mask_audio_db" => {
            "cm_msf"
        }
        "sem_audio" | "sem_vision" | "sem" | "text_decision" | "mbt" | "mbt_layers"
        | "bottleneck" | "n_mels" | "audio_width" | "image_channels" | "vision_weights"
        | "freeze_audio" | "freeze_vision" | "audio_lr" | "vision_lr" => "mer_sem_mbt",
        "avel" | "mem" | "lambda" | "temperature" | "projection" | "projection_dropout"
        | "fusion_layers" => "foal_net",
        _ => return None,
    })
}

const MODELS: &[&str] = &["smp", "cm_msf", "mer_sem_mbt", "foal_net"];

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

/// A built network of any kind.
enum Net {
    Smp(Smp),
    CmMsf(CmMsf),
    Mbt(MerSemMbt),
    Foal(FoalNet),
}

/// Group numbers from "2,4".
fn positions(p: &Params, name: &str) -> Result<Vec<i64>, StageError> {
    p.str(name)?
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| match x.parse::<i64>() {
            Ok(g) if (1..=4).contains(&g) => Ok(g),
            _ => Err(StageError::param(name, format!("`{x}` is not a group 1-4"))),
        })
        .collect()
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
            "mer_sem_mbt" => {
                let c = MbtCfg {
                    d: or(p.i64("d_model")?, 64),
                    heads: or(p.i64("heads")?, 8),
                    layers: p.i64("mbt_layers")?.max(1),
                    bottleneck: p.i64("bottleneck")?,
                    mbt: p.bool("mbt")?,
                    sem_audio: positions(p, "sem_audio")?,
                    sem_vision: positions(p, "sem_vision")?,
                    sem: p.bool("sem")?,
                    text_decision: p.bool("text_decision")?,
                    n_mels: p.i64("n_mels")?,
                    audio_width: p.i64("audio_width")?.max(1),
                    image_channels: p.i64("image_channels")?.max(1),
                    dropout: p.f64("dropout")?,
                    freeze_audio: p.i64("freeze_audio")?,
                    freeze_vision: p.i64("freeze_vision")?,
                };
                MerSemMbt::new(vs, names, dims, outputs, &c)
                    .map(Net::Mbt)
                    .map_err(bad)
            }
            "foal_net" => {
                let (Some(a), Some(v)) = (
                    names.iter().position(|&m| m == 'a'),
                    names.iter().position(|&m| m == 'v'),
                ) else {
                    return Err(StageError::param(
                        "modalities",
                        "Foal-Net fuses audio and video: it needs both",
                    ));
                };
                if names.len() != 2 || (a, v) != (0, 1) {
                    return Err(StageError::param(
                        "names",
                        "Foal-Net reads the audio input, then the video input (`av`)",
                    ));
                }
                let c = FoalCfg {
                    d: or(p.i64("d_model")?, 256),
                    heads: or(p.i64("heads")?, 4),
                    layers: p.i64("fusion_layers")?,
                    projection: p.i64("projection")?,
                    projection_dropout: p.f64("projection_dropout")?,
                    dropout: p.f64("dropout")?,
                    avel: p.bool("avel")?,
                    mem: p.bool("mem")?,
                    lambda: p.f64("lambda")?,
                    scale: p.f64("temperature")?,
                };
                FoalNet::new(vs, [dims[0], dims[1]], outputs, &c)
                    .map(Net::Foal)
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
                    audio_db: p.bool("mask_audio_db")?,
                    encoders,
                };
                CmMsf::new(vs, names, dims, outputs, &c)
                    .map(Net::CmMsf)
                    .map_err(bad)
            }
        }
    }
    fn forward_t(&self, xs: &[Tensor], y: &Tensor, train: bool) -> (Tensor, Vec<Aux>) {
        match self {
            Net::Smp(m) => (m.forward_t(xs, train), vec![]),
            Net::CmMsf(m) => (m.forward_t(xs, train), vec![]),
            Net::Mbt(m) => (m.forward_t(xs, train), vec![]),
            Net::Foal(m) => {
                let (logits, aux) = m.forward_t(xs, y, train);
                (logits, aux.into_iter().map(Aux::Loss).collect())
            }
        }
    }
    fn hidden_t(&self, xs: &[Tensor], train: bool) -> Tensor {
        match self {
            Net::Smp(m) => m.hidden_t(xs, train),
            Net::CmMsf(m) => m.hidden_t(xs, train),
            Net::Mbt(m) => m.hidden_t(xs, train),
            Net::Foal(m) => m.hidden_t(xs, train),
        }
    }
}

impl Stage for TrainJoint {
    fn kind(&self) -> &'static str {
        "train_joint"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "a multimodal network end to end on feature sequences or model inputs: SMP, CM-MSF, MER-SEM-MBT or Foal-Net (inputs: 1-3 features, labels, split)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn params_for(
        &self,
        given: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Vec<&'static ParamSpec> {
        let model = given.get("model").and_then(|m| m.as_str());
        // An unknown or missing model: all of them, so that the model's own error is the one shown.
        let Some(model) = model.filter(|m| MODELS.contains(m)) else {
            return PARAMS.iter().collect();
        };
        PARAMS
            .iter()
            .filter(|p| network_of(p.name).is_none_or(|n| n == model))
            .collect()
    }
    fn arity(&self) -> (usize, usize) {
        (3, 5)
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<std::path::PathBuf>, StageError> {
        if ctx.params.str("model")? != "mer_sem_mbt" {
            return Ok(vec![]);
        }
        let w = ctx.params.str("vision_weights")?;
        Ok(if w.is_empty() {
            vec![]
        } else {
            vec![crate::resolve(ctx.root, w)]
        })
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let model = p.str("model")?;
        let mut cfg = TrainCfg::from(p)?;
        let factor = p.f64("plateau_factor")?;
        if factor > 0.0 {
            cfg.plateau = Some((factor, p.i64("plateau_patience")?));
        }
        if p.str("optimizer")? == "adamw" {
            cfg.adamw = Some(p.f64("weight_decay")?);
        }
        cfg.select = Select::param(p)?;
        cfg.patience = Some(p.i64("patience")?).filter(|&n| n > 0);
        let fold = Some(p.i64("fold")?).filter(|&k| k >= 0);
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let k = ctx.inputs.len() - 2;
        let used = used(p, k)?;
        let feats: Vec<usize> = used.iter().map(|u| u.0).collect();
        let names: Vec<char> = used.iter().map(|u| u.1).collect();
        let mut ds = dataset(
            ctx,
            &feats,
            (k, k + 1),
            "m",
            p.str("label")?,
            p.i64("classes")?,
            fold,
        )?;
        let standardized = ds.standardize_all(p.bool("standardize")?);
        let dims: Vec<i64> = ds.x.iter().map(|x| x.size()[2]).collect();
        let steps: Vec<i64> = ds.x.iter().map(|x| x.size()[1]).collect();
        if model == "smp" && steps.iter().any(|&t| t != steps[0]) {
            return Err(StageError::Input(format!(
                "SMP needs one sequence length for all modalities, got {steps:?}; pad them to one (the paper: 32)"
            )));
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = Net::build(&vs.root(), p, &names, &dims, ds.task.outputs())?;
        let mut pretrained = 0;
        if let Net::Mbt(_) = net {
            let w = p.str("vision_weights")?;
            if !w.is_empty() && names.contains(&'v') {
                pretrained =
                    crate::train::nets::mbt::load_face_weights(&vs, &crate::resolve(ctx.root, w))
                        .map_err(|e| StageError::param("vision_weights", e))?;
            }
            crate::train::nets::mbt::freeze_groups(&vs, "audio", p.i64("freeze_audio")?);
            crate::train::nets::mbt::freeze_groups(&vs, "vision", p.i64("freeze_vision")?);
            cfg.group_lr = vec![
                (crate::train::nets::mbt::VISION_GROUP, p.f64("vision_lr")?),
                (crate::train::nets::mbt::AUDIO_GROUP, p.f64("audio_lr")?),
            ];
        }
        let n_params = crate::train::nets::layers::n_params(&vs);
        let fwd = |x: &[Tensor], y: &Tensor, train: bool| net.forward_t(x, y, train);
        let trained = fit(&mut vs, &ds, &cfg, 1.0, &[], &fwd)?;
        let all: Vec<i64> = (0..ds.ids.len() as i64).collect();
        let hidden = tch::no_grad(|| chunked(&all, &|i| net.hidden_t(&ds.rows(i), false)));
        let config = json!({
            "model": model,
            "modalities": names.iter().collect::<String>(),
            "steps": steps,
            "dims": dims,
            "outputs": ds.task.outputs(),
            "parameters": n_params,
            "pretrained_tensors": pretrained,
            "fold": fold,
            "standardize": standardized,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names_for(model: &str) -> Vec<&'static str> {
        let given = [("model".to_string(), serde_json::json!(model))].into();
        TrainJoint
            .params_for(&given)
            .iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn each_network_declares_only_its_own_params() {
        let smp = names_for("smp");
        assert!(smp.contains(&"terms") && smp.contains(&"lr") && smp.contains(&"dropout"));
        for other in ["layers", "mgf", "sem", "avel", "vision_weights"] {
            assert!(!smp.contains(&other), "{other}");
        }
        let cm = names_for("cm_msf");
        assert!(cm.contains(&"cascade_lstm") && !cm.contains(&"terms") && !cm.contains(&"lambda"));
        // Every param is common or belongs to one network, and each network's list is smaller
        // than the union.
        for m in MODELS {
            assert!(names_for(m).len() < PARAMS.len(), "{m}");
        }
        for p in PARAMS {
            let n = MODELS
                .iter()
                .filter(|m| names_for(m).contains(&p.name))
                .count();
            assert!(n == 1 || n == MODELS.len(), "{} is in {n} networks", p.name);
        }
        // A model the kind does not know: every param, so its own error shows.
        assert_eq!(names_for("lstm").len(), PARAMS.len());
    }
}
