//! `train_unimodal`: Uni2Mul's stage one, one encoder trained on one modality's sequences.

use serde_json::json;
use tch::nn::{self};
use tch::Tensor;

use crate::train::checkpoint::model_table;
use crate::train::dataset::dataset;
use crate::train::fit::{fit, Select, TrainCfg};
use crate::train::nets::uni2mul::Encoder;
use crate::{Kind, Output, RunCtx, Stage, StageError};

/// `train_unimodal`: one encoder on one modality's padded feature sequences, labelled with
/// that modality's labels (IUA) or the multimodal one (IMA), as the `labels` input was made.
pub struct TrainUnimodal;

impl Stage for TrainUnimodal {
    fn decl(&self) -> &dyn Kind {
        &stages::train::TrainUnimodal
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let mut cfg = TrainCfg::from(p)?;
        cfg.select = Select::param(p)?;
        let _torch = crate::torch::training(cfg.seed, p.i64("threads")?);
        let dev = crate::torch::device(p.str("device")?)?;
        let classes = p.i64("classes")?;
        let mut ds = dataset(
            ctx,
            &[0],
            (1, 2),
            p.str("modality")?,
            p.str("label")?,
            classes,
            None,
        )?;
        let standardized = ds.standardize_all(p.bool("standardize")?);
        let (t, d) = (ds.x[0].size()[1], ds.x[0].size()[2]);
        let arch = p.str("model")?;
        let mut vs = nn::VarStore::new(dev);
        let enc = Encoder::new(&vs.root(), arch, t, d, ds.task.outputs())
            .map_err(|e| StageError::param("model", e.to_string()))?;
        let fwd = |x: &[Tensor], _: &Tensor, train: bool| (enc.forward_t(&x[0], train), Vec::new());
        let trained = fit(&mut vs, &ds, &cfg, 1.0, &[], &fwd, ctx.progress)?;
        let hidden = tch::no_grad(|| enc.hidden_t(&ds.x[0].to_device(dev), false));
        let config = json!({"model": arch, "steps": t, "dim": d, "outputs": ds.task.outputs(),
                            "hidden": enc.hidden, "standardize": standardized});
        Ok(Output {
            table: model_table(&ds, &trained, config, Some(&hidden))?,
            errors: vec![],
        })
    }
}
