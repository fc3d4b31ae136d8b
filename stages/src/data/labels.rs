//! `labels`: continuous sentiment -> classes with MMSA's bins, in long form: one row per clip and
//! target (`m` multimodal, `t`/`a`/`v` per modality).
//!
//! With `source: ima` every target takes the multimodal label; with `source: iua` the modality
//! targets take label_T/label_A/label_V (Uni2Mul's independent unimodal annotations).
//!
//! Bins follow MMSA's metricsTop.py exactly:
//! - CH-SIMS (`scale: sims`), values clipped to [-1, 1], class i when edge_i < y <= edge_i+1:
//!   Acc-2 edges [-1.01, 0, 1.01] (so 0 is negative), Acc-3 [-1.01, -0.1, 0.1, 1.01],
//!   Acc-5 [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01].
//! - CMU-MOSI/MOSEI (`scale: mosi`), values in [-3, 3]: Acc-2 negative/non-negative (y >= 0),
//!   Acc-2 negative/positive (y > 0, undefined for y == 0), Acc-5 round(clip(y, -2, 2)),
//!   Acc-7 round(clip(y, -3, 3)), rounding half to even like numpy.
//! - Categories (`scale: categorical`, IEMOCAP): the `emotion` column, renamed by `merge`
//!   (`exc=hap` folds excited into happy), class i is the i-th of `classes`; clips of any other
//!   category are left out (counted by `summary`, not errors).
//!
//! `class_name` names the three-way class (CH-SIMS's annotation column: Negative / Neutral /
//! Positive; MOSI by the sign) or the category.
//!
//! - Multi-label (`scale: multilabel`, MER-SEM-MBT): `flags` holds one 0/1 value per category of
//!   `classes` (after `merge`); the emotion column may name several categories, separated by `;`
//!   (CMU-MOSEI's emotions). IEMOCAP's one category per utterance gives one-hot flags, as in the
//!   six-emotion setting of Dai et al. (2021). Clips with none of the categories are left out.

use arrow::array::Array;

use crate::metrics::mmsa::{classes, three_way};
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64_col, f64s, i64s, opt_f64, str_col, strings};
use crate::{ItemError, Kind, Output, RunCtx, Stage, StageError};

pub struct Labels;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "scale",
        ParamType::Enum(&["sims", "mosi", "categorical", "multilabel"]),
        Some("\"sims\""),
        "sims: [-1, 1] (CH-SIMS); mosi: [-3, 3] (CMU-MOSI/MOSEI); categorical: the emotion column; multilabel: one flag per category of `classes` from the emotion column (several categories separated by `;`)",
    ),
    ParamSpec::new(
        "classes",
        ParamType::StrList,
        Some("[\"neu\", \"hap\", \"ang\", \"sad\"]"),
        "categorical: the kept categories, in class-id order (IEMOCAP's 4-class setting)",
    ),
    ParamSpec::new(
        "merge",
        ParamType::StrList,
        Some("[\"exc=hap\"]"),
        "categorical: `from=to` renames applied before `classes` (excited -> happy)",
    ),
    ParamSpec::new(
        "source",
        ParamType::Enum(&["ima", "iua"]),
        Some("\"ima\""),
        "ima: every target uses the multimodal label; iua: modality targets use label_T/A/V",
    ),
];

impl Kind for Labels {
    fn kind(&self) -> &'static str {
        "labels"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "continuous labels -> MMSA classes per target (m, t, a, v) from IMA or IUA sources"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
}

impl Stage for Labels {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let scale = ctx.params.str("scale")?;
        let source = ctx.params.str("source")?;
        if scale == "categorical" || scale == "multilabel" {
            return categorical(ctx, scale == "multilabel");
        }
        let t = &ctx.inputs[0];
        let ids = str_col(t, "clip_id")?;
        let m = f64_col(t, "label")?;
        let per = [
            ("t", f64_col(t, "label_T")?),
            ("a", f64_col(t, "label_A")?),
            ("v", f64_col(t, "label_V")?),
        ];
        let (lo, hi) = if scale == "sims" {
            (-1.0, 1.0)
        } else {
            (-3.0, 3.0)
        };
        let mut out: (Vec<String>, Vec<&str>, Vec<Option<f64>>) = Default::default();
        let mut cls: [Vec<Option<i64>>; 5] = Default::default();
        let mut errors = Vec::new();
        for i in 0..t.num_rows() {
            let id = ids.value(i);
            let Some(ym) = opt_f64(m, i) else {
                errors.push(ItemError::new(id, "label", "no multimodal label"));
                continue;
            };
            let mut targets = vec![("m", ym)];
            let mut missing = None;
            for (name, colm) in &per {
                let y = if source == "iua" {
                    opt_f64(colm, i)
                } else {
                    Some(ym)
                };
                match y {
                    Some(y) => targets.push((name, y)),
                    None => missing = Some(format!("label_{}", name.to_uppercase())),
                }
            }
            if let Some(field) = missing {
                errors.push(ItemError::new(
                    id,
                    field,
                    "source iua needs a unimodal label",
                ));
                continue;
            }
            if let Some((name, y)) = targets
                .iter()
                .find(|(_, y)| *y < lo - 1e-9 || *y > hi + 1e-9)
            {
                errors.push(ItemError::new(
                    id,
                    if *name == "m" {
                        "label".to_string()
                    } else {
                        format!("label_{}", name.to_uppercase())
                    },
                    format!("{y} is outside [{lo}, {hi}] for scale {scale}"),
                ));
                continue;
            }
            for (name, y) in targets {
                out.0.push(id.to_string());
                out.1.push(name);
                out.2.push(Some(y));
                for (k, c) in classes(scale, y).into_iter().enumerate() {
                    cls[k].push(c);
                }
            }
        }
        let names: Vec<&str> = out
            .2
            .iter()
            .map(|y| three_way(scale, y.unwrap_or(0.0)))
            .collect();
        let [acc2, acc2_pos, acc3, acc5, acc7] = cls;
        let n = out.0.len();
        let table = batch(vec![
            ("clip_id", strings(&out.0)),
            ("target", strings(&out.1)),
            ("y", f64s(out.2)),
            ("acc2", i64s(acc2)),
            ("acc2_pos", i64s(acc2_pos)),
            ("acc3", i64s(acc3)),
            ("acc5", i64s(acc5)),
            ("acc7", i64s(acc7)),
            ("class", i64s(vec![None; n])),
            ("class_name", strings(&names)),
        ])?;
        debug_assert!(table.column(0).null_count() == 0);
        Ok(Output { table, errors })
    }
}

fn categorical(ctx: &RunCtx, multi: bool) -> Result<Output, StageError> {
    let classes = ctx.params.str_list("classes")?;
    let mut merge = std::collections::HashMap::new();
    for m in ctx.params.str_list("merge")? {
        let (from, to) = m
            .split_once('=')
            .ok_or_else(|| StageError::param("merge", format!("`{m}` is not from=to")))?;
        merge.insert(from.trim().to_string(), to.trim().to_string());
    }
    if classes.is_empty() {
        return Err(StageError::param("classes", "needs at least one category"));
    }
    let t = &ctx.inputs[0];
    let ids = str_col(t, "clip_id")?;
    let emo = str_col(t, "emotion")?;
    let (mut out_id, mut out_t, mut out_c) = (vec![], vec![], vec![]);
    let (mut out_n, mut out_f): (Vec<String>, Vec<Vec<f32>>) = (vec![], vec![]);
    let mut errors = Vec::new();
    for i in 0..t.num_rows() {
        let Some(e) = crate::table::opt_str(emo, i) else {
            errors.push(ItemError::new(
                ids.value(i),
                "emotion",
                "no emotion category",
            ));
            continue;
        };
        let mut flags = vec![0f32; classes.len()];
        for e in e.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let e = merge.get(e).map(String::as_str).unwrap_or(e);
            if let Some(c) = classes.iter().position(|k| k == e) {
                flags[c] = 1.0;
            }
        }
        // The first listed category is the clip's class; a multi-label clip keeps them all.
        let Some(c) = flags.iter().position(|&f| f > 0.0) else {
            continue;
        };
        let name = if multi {
            classes
                .iter()
                .zip(&flags)
                .filter(|(_, &f)| f > 0.0)
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(";")
        } else {
            flags = vec![];
            classes[c].clone()
        };
        // A categorical corpus has one label per clip; every modality target shares it.
        for target in ["m", "t", "a", "v"] {
            out_id.push(ids.value(i));
            out_t.push(target);
            out_c.push(Some(c as i64));
            out_n.push(name.clone());
            out_f.push(flags.clone());
        }
    }
    let n = out_id.len();
    let mut cols = vec![
        ("clip_id", strings(&out_id)),
        ("target", strings(&out_t)),
        ("y", f64s(vec![None; n])),
        ("acc2", i64s(vec![None; n])),
        ("acc2_pos", i64s(vec![None; n])),
        ("acc3", i64s(vec![None; n])),
        ("acc5", i64s(vec![None; n])),
        ("acc7", i64s(vec![None; n])),
        ("class", i64s(out_c)),
        ("class_name", strings(&out_n)),
    ];
    if multi {
        cols.push(("flags", crate::table::f32_lists(out_f)));
    }
    let table = batch(cols)?;
    Ok(Output { table, errors })
}
