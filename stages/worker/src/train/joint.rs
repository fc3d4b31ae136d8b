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
use tch::Tensor;

use crate::train::checkpoint::model_table;
use crate::train::dataset::dataset;
use crate::train::fit::{chunked, fit, on, Aux, Select, TrainCfg};
use crate::train::nets::cmmsf::{CmMsf, CmMsfCfg};
use crate::train::nets::foal::{FoalCfg, FoalNet};
use crate::train::nets::mbt::{MbtCfg, MerSemMbt};
use crate::train::nets::smp::{Smp, SmpCfg, Terms};
use crate::{Kind, Output, Params, RunCtx, Stage, StageError};

pub struct TrainJoint;

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
        let bad = |e: StageError| StageError::param("model", e.to_string());
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
                        .map_err(|e| StageError::param("terms", e.to_string()))?,
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
    fn decl(&self) -> &dyn Kind {
        &stages::train::TrainJoint
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
        let dev = crate::torch::device(p.str("device")?)?;
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
        let mut vs = nn::VarStore::new(dev);
        let net = Net::build(&vs.root(), p, &names, &dims, ds.task.outputs())?;
        let mut pretrained = 0;
        if let Net::Mbt(_) = net {
            let w = p.str("vision_weights")?;
            if !w.is_empty() && names.contains(&'v') {
                pretrained =
                    crate::train::nets::mbt::load_face_weights(&vs, &crate::resolve(ctx.root, w))
                        .map_err(|e| StageError::param("vision_weights", e.to_string()))?;
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
        let trained = fit(&mut vs, &ds, &cfg, 1.0, &[], &fwd, ctx.progress)?;
        let all: Vec<i64> = (0..ds.ids.len() as i64).collect();
        let hidden = tch::no_grad(|| chunked(&all, &|i| net.hidden_t(&on(dev, ds.rows(i)), false)));
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
}
