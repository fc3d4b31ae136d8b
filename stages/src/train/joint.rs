//! `train_joint`'s declaration: the params of its four networks, each network's its own, so that
//! one network's param never enters another's key.

use crate::params::{ParamSpec, ParamType};
use crate::train::tables::curve_report;
use crate::{Kind, Params, PlanCtx, Role, StageError};

pub struct TrainJoint;

const ROLES: &[Role] = &[
    Role::many(
        "features",
        1,
        3,
        "one to three per-clip feature stages, their modality letters in `names` (default vat)",
    )
    .reading(crate::features::MATRIX),
    Role::one("labels", "a labels stage").reading(crate::LABELS_READ),
    Role::one("split", "a split stage").reading(crate::SPLIT_READ),
];

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
    ParamSpec::new("lr", ParamType::Float, Some("0.00001"), "learning rate (SMP, CM-MSF: 1e-5; MER-SEM-MBT, Foal-Net: 1e-4)").positive(),
    ParamSpec::new("optimizer", ParamType::Enum(&["adam", "adamw"]), Some("\"adam\""), "Adam, or AdamW (Foal-Net)"),
    ParamSpec::new("weight_decay", ParamType::Float, Some("0.01"), "AdamW's decoupled weight decay (PyTorch's default)"),
    ParamSpec::new("select", ParamType::Enum(&["auto", "acc", "f1", "loss"]), Some("\"auto\""), "the kept epoch: best validation accuracy, macro / average F1, or lowest validation loss (every weighted term training minimises; auto: acc for classes, f1 for multi-label, loss for scores)"),
    ParamSpec::new("standardize", ParamType::Bool, Some("true"), "standardise each feature dimension with the training split's mean and sd (padding steps stay zero); MER-SEM-MBT's pretrained CNNs read raw log-mel and pixels, so its study turns this off"),
    ParamSpec::new("patience", ParamType::Int, Some("0"), "early stopping: epochs without a better kept epoch (0: train every epoch)"),
    ParamSpec::new("fold", ParamType::Int, Some("-1"), "the split's fold to train (leave-one-session-out; -1: a split with one fold)"),
    ParamSpec::new("epochs", ParamType::Int, Some("100"), "training epochs; the best-on-valid epoch's weights are kept").min(1.0),
    ParamSpec::new("batch_size", ParamType::Int, Some("32"), "clips per step (SMP 64, CM-MSF 32)").min(1.0),
    ParamSpec::new("seed", ParamType::Int, Some("1"), "weight init and batch order"),
    ParamSpec::new("threads", ParamType::Int, Some("1"), "libtorch threads").min(1.0),
    crate::params::DEVICE,
    ParamSpec::new(
        "plateau_factor",
        ParamType::Float,
        Some("0.0"),
        "multiply the learning rate by this when the validation loss stops improving (0: constant; CM-MSF: 0.1)",
    ),
    ParamSpec::new("plateau_patience", ParamType::Int, Some("10"), "epochs without improvement before that"),
    ParamSpec::new("dropout", ParamType::Float, Some("0.3"), "dropout (CM-MSF: 0.3)").range(0.0, 0.99),
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

pub const MODELS: &[&str] = &["smp", "cm_msf", "mer_sem_mbt", "foal_net"];

impl Kind for TrainJoint {
    fn kind(&self) -> &'static str {
        "train_joint"
    }
    fn libraries(&self) -> &'static [&'static str] {
        &["libtorch"]
    }
    fn version(&self) -> u32 {
        4
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
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        crate::train::tables::TRAINING
    }
    fn roles(&self) -> &'static [Role] {
        ROLES
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
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, _p: &Params, t: &arrow::record_batch::RecordBatch) -> Option<String> {
        curve_report(t)
    }
    fn figures(
        &self,
        _p: &Params,
        t: &arrow::record_batch::RecordBatch,
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures(t)
    }
    fn figures_over(
        &self,
        _p: &Params,
        tables: &[(String, &arrow::record_batch::RecordBatch)],
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        crate::train::tables::curve_figures_over(tables)
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
