//! `train_fusion`: Uni2Mul's stage two, the fusion of three encoders' H vectors.

use serde_json::json;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use crate::train::checkpoint::{load_safetensors, model_table};
use crate::train::dataset::{dataset, label_map, Dataset, Standardizer};
use crate::train::fit::{chunked, fit, Aux, Select, TrainCfg};
use crate::train::nets::uni2mul::{Encoder, Fusion};
use crate::{Kind, Output, RunCtx, Stage, StageError};
use stages::train::tables::checkpoint_of;

/// `train_fusion`: Uni2Mul stage two. Inputs: the three `train_unimodal` stages (V, A, T), their
/// three feature stages, labels, split. With `pretrained` the encoders carry their stage-one
/// weights and are frozen; without, the same encoders start untrained and learn jointly.
pub struct TrainFusion;

impl Stage for TrainFusion {
    fn decl(&self) -> &dyn Kind {
        &stages::train::TrainFusion
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let mut cfg = TrainCfg::from(p)?;
        cfg.select = Select::param(p)?;
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let dev = crate::torch::device(p.str("device")?)?;
        let label = p.str("label")?;
        let classes = p.i64("classes")?;
        let mut ds = dataset(ctx, &[3, 4, 5], (6, 7), "m", label, classes, None)?;
        let outputs = ds.task.outputs();
        let pretrained = p.bool("pretrained")?;
        let standardized = fusion_standardize(ctx, &mut ds, pretrained, p.bool("standardize")?)?;
        let multitask = p.bool("multitask")?;
        let w = p.f64_list("weights")?;
        if w.len() != 4 {
            return Err(StageError::param("weights", "four weights: M, V, A, T"));
        }
        let aux_y = aux_labels(ctx, &ds, label)?;
        let mut vs = nn::VarStore::new(dev);
        let mut frozen = nn::VarStore::new(dev);
        let store = if pretrained { &frozen } else { &vs };
        let encoders = build_encoders(ctx, &ds, store, outputs)?;
        if pretrained {
            load_frozen(ctx, &ds, &mut frozen, &encoders, outputs)?;
        }
        let features: i64 = encoders.iter().map(|e| e.1.hidden).sum();
        let fusion = Fusion::new(
            &(vs.root() / "fusion"),
            p.str("fusion")?,
            features,
            outputs,
            p.str("attention")?,
        )
        .map_err(|e| StageError::Input(e.to_string()))?;
        // Multi-task heads on each H; with frozen encoders these are new, trainable heads.
        let heads: Vec<nn::Linear> = encoders
            .iter()
            .zip(["v", "a", "t"])
            .map(|(e, n)| {
                nn::linear(
                    vs.root() / "aux" / n,
                    e.1.hidden,
                    outputs,
                    Default::default(),
                )
            })
            .collect();
        let main_w = if multitask { w[0] } else { 1.0 };
        if pretrained {
            cache_hidden(&mut ds, &encoders, dev);
        }
        let fwd = |x: &[Tensor], _: &Tensor, train: bool| {
            let hs: Vec<Tensor> = if pretrained {
                x.iter().map(|h| h.shallow_clone()).collect()
            } else {
                encoders
                    .iter()
                    .zip(x)
                    .map(|(e, xi)| e.1.hidden_t(xi, train))
                    .collect()
            };
            let logits = fusion.forward_t(&Tensor::cat(&hs, 1), train);
            let aux = if multitask {
                heads
                    .iter()
                    .zip(&hs)
                    .enumerate()
                    .map(|(k, (h, hk))| Aux::Head(w[k + 1], h.forward(hk), k))
                    .collect()
            } else {
                Vec::new()
            };
            (logits, aux)
        };
        let trained = fit(&mut vs, &ds, &cfg, main_w, &aux_y, &fwd, ctx.progress)?;
        let xm = tch::no_grad(|| {
            let hs: Vec<Tensor> = if pretrained {
                ds.x.iter().map(|h| h.shallow_clone()).collect()
            } else {
                encoders
                    .iter()
                    .zip(&ds.x)
                    .map(|(e, xi)| e.1.hidden_t(&xi.to_device(dev), false))
                    .collect()
            };
            Tensor::cat(&hs, 1).to_device(Device::Cpu)
        });
        let config = json!({"fusion": p.str("fusion")?, "features": features, "outputs": outputs,
                            "encoders": encoders.iter().map(|e| e.1.hidden).collect::<Vec<_>>(),
                            "standardize": standardized});
        Ok(Output {
            table: model_table(&ds, &trained, config, Some(&xm))?,
            errors: vec![],
        })
    }
}

/// Unimodal labels for the auxiliary heads (inputs 6: labels), aligned with the dataset's clips.
fn aux_labels(ctx: &RunCtx, ds: &Dataset, label: &str) -> Result<Vec<Tensor>, StageError> {
    let mut aux_y = Vec::new();
    for target in ["v", "a", "t"] {
        let by = label_map(&ctx.inputs[6], target, label)?;
        let ys: Vec<f64> = ds
            .ids
            .iter()
            .map(|i| by.get(i).copied().unwrap_or(0.0))
            .collect();
        aux_y.push(ds.task.target(&ys));
    }
    Ok(aux_y)
}

/// The three stage-one encoders (inputs 0-2) built in `store`, each with its checkpoint bytes,
/// after checking that they were trained on features of the fusion's shapes.
fn build_encoders(
    ctx: &RunCtx,
    ds: &Dataset,
    store: &nn::VarStore,
    outputs: i64,
) -> Result<Vec<(Vec<u8>, Encoder)>, StageError> {
    let mut encoders = Vec::new();
    for (k, name) in ["v", "a", "t"].iter().enumerate() {
        let (bytes, c) = checkpoint_of(&ctx.inputs[k])?;
        let arch = c["model"].as_str().unwrap_or_default().to_string();
        let (t, d) = (ds.x[k].size()[1], ds.x[k].size()[2]);
        if c["steps"].as_i64() != Some(t) || c["dim"].as_i64() != Some(d) {
            return Err(StageError::Input(format!(
                "encoder {name} was trained on {} x {} features, input {} has {t} x {d}",
                c["steps"],
                c["dim"],
                k + 3
            )));
        }
        // Only H is used here, so stage one may have had another task (classes for a
        // regression fusion); its own head keeps its shape to load.
        let enc_out = c["outputs"].as_i64().unwrap_or(outputs);
        let enc = Encoder::new(&(store.root() / *name), &arch, t, d, enc_out)
            .map_err(|e| StageError::Input(e.to_string()))?;
        encoders.push((bytes, enc));
    }
    Ok(encoders)
}

/// Stage-one weights under each encoder's prefix of `frozen`, then frozen.
fn load_frozen(
    ctx: &RunCtx,
    ds: &Dataset,
    frozen: &mut nn::VarStore,
    encoders: &[(Vec<u8>, Encoder)],
    outputs: i64,
) -> Result<(), StageError> {
    let mut named = Vec::new();
    for (k, name) in ["v", "a", "t"].iter().enumerate() {
        let mut one = nn::VarStore::new(Device::Cpu);
        let c = checkpoint_of(&ctx.inputs[k])?.1;
        let _ = Encoder::new(
            &one.root(),
            c["model"].as_str().unwrap_or_default(),
            ds.x[k].size()[1],
            ds.x[k].size()[2],
            c["outputs"].as_i64().unwrap_or(outputs),
        )
        .map_err(|e| StageError::Input(e.to_string()))?;
        load_safetensors(&mut one, &encoders[k].0)?;
        for (n, t) in one.variables() {
            named.push((format!("{name}.{n}"), t));
        }
    }
    tch::no_grad(|| {
        let vars = frozen.variables();
        for (n, t) in &named {
            if let Some(v) = vars.get(n) {
                v.shallow_clone().copy_(t);
            }
        }
    });
    frozen.freeze();
    Ok(())
}

/// Frozen encoders run in eval mode, so their H is a constant of the clip: computed once, the
/// training steps read it as the dataset's inputs instead of recomputing it.
fn cache_hidden(ds: &mut Dataset, encoders: &[(Vec<u8>, Encoder)], dev: Device) {
    let all: Vec<i64> = (0..ds.ids.len() as i64).collect();
    let hs: Vec<Tensor> = tch::no_grad(|| {
        encoders
            .iter()
            .zip(&ds.x)
            .map(|(e, xi)| {
                chunked(&all, &|i| {
                    e.1.hidden_t(&xi.index_select(0, i).to_device(dev), false)
                })
            })
            .collect()
    });
    ds.x = hs;
}

/// Standardises the fusion's three feature inputs. Frozen (pre-trained) encoders get exactly
/// the statistics they were trained with, or raw features if they were trained on raw ones,
/// whatever `on` says; encoders trained here follow `on`.
fn fusion_standardize(
    ctx: &RunCtx,
    ds: &mut Dataset,
    pretrained: bool,
    on: bool,
) -> Result<serde_json::Value, StageError> {
    if !pretrained {
        return Ok(ds.standardize_all(on));
    }
    let mut used = Vec::new();
    for k in 0..3 {
        let (_, c) = checkpoint_of(&ctx.inputs[k])?;
        match c["standardize"].get(0).and_then(Standardizer::from_json) {
            Some(s) if s.mean.len() as i64 != ds.x[k].size()[2] => {
                return Err(StageError::Input(format!(
                    "encoder {k} was standardised over {} dimensions, its features have {}",
                    s.mean.len(),
                    ds.x[k].size()[2]
                )))
            }
            Some(s) => used.push(Some(ds.standardize(k, Some(s)))),
            None => used.push(None),
        }
    }
    Ok(if used.iter().all(Option::is_none) {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(
            used.iter()
                .map(|s| {
                    s.as_ref()
                        .map_or(serde_json::Value::Null, Standardizer::to_json)
                })
                .collect(),
        )
    })
}
