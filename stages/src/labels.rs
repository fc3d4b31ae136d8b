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

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64_col, f64s, i64s, opt_f64, str_col, strings};
use crate::{ItemError, Output, RunCtx, Stage, StageError};

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

const SIMS2: &[f64] = &[-1.01, 0.0, 1.01];
const SIMS3: &[f64] = &[-1.01, -0.1, 0.1, 1.01];
const SIMS5: &[f64] = &[-1.01, -0.7, -0.1, 0.1, 0.7, 1.01];

/// MMSA's `(edge_i, edge_i+1]` binning after clipping to [-1, 1].
pub fn sims_bin(y: f64, edges: &[f64]) -> i64 {
    let y = y.clamp(-1.0, 1.0);
    (0..edges.len() - 1)
        .find(|&i| y > edges[i] && y <= edges[i + 1])
        .unwrap_or(0) as i64
}

/// numpy's round (half to even) after clipping to [-r, r], shifted to start at 0.
pub fn mosi_round(y: f64, r: f64) -> i64 {
    (y.clamp(-r, r).round_ties_even() + r) as i64
}

/// (acc2, acc2_pos, acc3, acc5, acc7) class ids; None where the scale does not define one.
pub fn classes(scale: &str, y: f64) -> [Option<i64>; 5] {
    match scale {
        "sims" => [
            Some(sims_bin(y, SIMS2)),
            None,
            Some(sims_bin(y, SIMS3)),
            Some(sims_bin(y, SIMS5)),
            None,
        ],
        _ => [
            Some((y >= 0.0) as i64),
            (y != 0.0).then_some((y > 0.0) as i64),
            None,
            Some(mosi_round(y, 2.0)),
            Some(mosi_round(y, 3.0)),
        ],
    }
}

impl Stage for Labels {
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

/// CH-SIMS's `annotation` classes (MMSA's three-way edges); MOSI by the sign of the score.
pub fn three_way(scale: &str, y: f64) -> &'static str {
    const NAMES: [&str; 3] = ["Negative", "Neutral", "Positive"];
    NAMES[three_way_id(scale, y) as usize]
}

/// [`three_way`] as a class id: 0 negative, 1 neutral, 2 positive.
pub fn three_way_id(scale: &str, y: f64) -> i64 {
    match scale {
        "sims" => sims_bin(y, SIMS3),
        _ if y < 0.0 => 0,
        _ if y > 0.0 => 2,
        _ => 1,
    }
}

/// Names of [`mmsa_metrics`]'s values, in order.
pub const MMSA_METRICS: [&str; 9] = [
    "acc2",
    "acc2_pos",
    "acc3",
    "acc5",
    "acc7",
    "f1_acc2",
    "f1_acc2_pos",
    "mae",
    "corr",
];

/// MMSA's regression metrics (metricsTop.py) of predicted against true scores: Acc-2
/// (negative/non-negative, MMSA's `Has0_acc_2`; CH-SIMS: y <= 0 / y > 0), Acc-2 on non-zero
/// labels (MOSI's `Non0_acc_2`), Acc-3 (CH-SIMS), Acc-5, Acc-7 (MOSI), the weighted F1 of both
/// Acc-2s (`Has0_F1_score`, `Non0_F1_score`), MAE and Pearson's r. CH-SIMS clips
/// both to [-1, 1] before everything, as MMSA does; MOSI's MAE and r use the raw predictions.
/// None where the scale does not define a metric (or r is undefined: constant predictions).
pub fn mmsa_metrics(scale: &str, truth: &[f64], pred: &[f64]) -> [Option<f64>; 9] {
    let clip = |v: &[f64]| -> Vec<f64> {
        if scale == "sims" {
            v.iter().map(|x| x.clamp(-1.0, 1.0)).collect()
        } else {
            v.to_vec()
        }
    };
    let (t, p) = (clip(truth), clip(pred));
    let mut out = [None; 9];
    let ct: Vec<[Option<i64>; 5]> = t.iter().map(|&y| classes(scale, y)).collect();
    let cp: Vec<[Option<i64>; 5]> = p.iter().map(|&y| classes(scale, y)).collect();
    for k in 0..5 {
        // A prediction of exactly 0 is "not positive" for the non-zero Acc-2, as in MMSA.
        let pairs: Vec<(i64, i64)> = ct
            .iter()
            .zip(&cp)
            .filter_map(|(a, b)| a[k].map(|x| (x, b[k].unwrap_or(0))))
            .collect();
        if !pairs.is_empty() {
            let right = pairs.iter().filter(|(a, b)| a == b).count();
            out[k] = Some(right as f64 / pairs.len() as f64);
        }
    }
    for (k, slot) in [(0, 5), (1, 6)] {
        let (a2t, a2p): (Vec<i64>, Vec<i64>) = ct
            .iter()
            .zip(&cp)
            .filter_map(|(a, b)| a[k].map(|x| (x, b[k].unwrap_or(0))))
            .unzip();
        if !a2t.is_empty() {
            out[slot] = Some(weighted_f1(&a2t, &a2p));
        }
    }
    let n = t.len() as f64;
    if n > 0.0 {
        out[7] = Some(t.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n);
        let (mt, mp) = (t.iter().sum::<f64>() / n, p.iter().sum::<f64>() / n);
        let cov: f64 = t.iter().zip(&p).map(|(a, b)| (a - mt) * (b - mp)).sum();
        let vt: f64 = t.iter().map(|a| (a - mt).powi(2)).sum();
        let vp: f64 = p.iter().map(|b| (b - mp).powi(2)).sum();
        // A constant prediction has no correlation; its variance can come out a rounding error
        // above zero rather than zero.
        if vt > 1e-12 * n && vp > 1e-12 * n {
            out[8] = Some(cov / (vt * vp).sqrt());
        }
    }
    out
}

/// sklearn's `f1_score(average="weighted")` over the classes that occur in `t`.
fn weighted_f1(t: &[i64], p: &[i64]) -> f64 {
    let mut labels: Vec<i64> = t.iter().chain(p).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let n = t.len() as f64;
    labels
        .iter()
        .map(|&c| {
            let support = t.iter().filter(|&&x| x == c).count() as f64;
            let predicted = p.iter().filter(|&&x| x == c).count() as f64;
            let tp = t
                .iter()
                .zip(p)
                .filter(|(a, b)| **a == c && **b == c)
                .count() as f64;
            if support + predicted > 0.0 {
                support / n * 2.0 * tp / (support + predicted)
            } else {
                0.0
            }
        })
        .sum()
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
        cols.push(("flags", crate::audio::f32_lists(out_f)));
    }
    let table = batch(cols)?;
    Ok(Output { table, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmsa_metrics_on_fixed_vectors() {
        // CH-SIMS: truth [-0.8, -0.2, 0, 0.6, 1.0], predictions [-0.9, 0.05, 0.2, 0.8, 1.4]
        // (clipped to 1.0). Acc-2 classes: t [0,0,0,1,1], p [0,1,1,1,1] -> 3/5. Acc-3: t
        // [0,0,1,2,2], p [0,1,2,2,2] -> 3/5. Acc-5: t [0,1,2,3,4], p [0,2,3,4,4] -> 2/5.
        // MAE: (0.1 + 0.25 + 0.2 + 0.2 + 0)/5 = 0.15. Weighted F1 of Acc-2: class 0 (support 3,
        // predicted 1, tp 1): F1 0.5; class 1 (support 2, predicted 4, tp 2): F1 2/3;
        // 3/5 * 0.5 + 2/5 * 2/3 = 0.5666...
        let m = mmsa_metrics(
            "sims",
            &[-0.8, -0.2, 0.0, 0.6, 1.0],
            &[-0.9, 0.05, 0.2, 0.8, 1.4],
        );
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        assert!(close(m[0], 0.6) && close(m[2], 0.6) && close(m[3], 0.4));
        assert!(m[1].is_none() && m[4].is_none());
        assert!(close(m[5], 0.3 + 0.8 / 3.0));
        assert!(m[6].is_none(), "CH-SIMS has no non-zero Acc-2");
        assert!(close(m[7], 0.15));
        // numpy.corrcoef of the clipped vectors.
        assert!(
            (m[8].unwrap() - 0.9799574437169486).abs() < 1e-12,
            "{:?}",
            m[8]
        );
        // MOSI: Acc-2 (y >= 0) t [0,1,1,1], p [0,1,1,1]; the non-zero Acc-2 leaves out the zero
        // label and counts a zero prediction as negative: t [0,1,1], p [0,0,1]. Acc-5: t
        // [0,2,3,4], p [1,2,2,4] (0.5 rounds to 0, 3.2 clips to 2). Acc-7: t [1,3,4,6], p
        // [2,3,3,6]. MAE and r on the raw values: 0.775, numpy.corrcoef 0.8911739584486796.
        let m = mmsa_metrics("mosi", &[-2.0, 0.0, 1.0, 2.6], &[-1.0, 0.5, 0.0, 3.2]);
        assert!(close(m[0], 1.0) && close(m[1], 2.0 / 3.0));
        assert!(m[2].is_none() && close(m[3], 0.5) && close(m[4], 0.5));
        assert!((m[7].unwrap() - 0.775).abs() < 1e-12);
        assert!((m[8].unwrap() - 0.8911739584486796).abs() < 1e-12);
    }

    /// MMSA's reference formulas (thuiar/MMSA, src/MMSA/utils/metricsTop.py:
    /// `__eval_mosei_regression` for MOSI/MOSEI, `__eval_sims_regression` for CH-SIMS), run
    /// with numpy 2.4 and scikit-learn 1.9 on these vectors, gave the values asserted here.
    #[test]
    fn mmsa_metrics_match_metricstop_py() {
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        // MOSI: Has0_acc_2 0.6, Has0_F1_score 0.6166666666666666, Non0_acc_2 0.625,
        // Non0_F1_score 0.6309523809523809, Mult_acc_5 0.5, Mult_acc_7 0.4, MAE 1.0,
        // Corr 0.5872074562267132.
        let m = mmsa_metrics(
            "mosi",
            &[-2.4, -1.2, -0.6, 0.0, 0.0, 0.4, 1.0, 1.8, 2.6, 3.0],
            &[-1.9, -0.2, 0.3, 0.0, -0.5, 1.1, -0.1, 2.7, -1.4, 3.4],
        );
        assert!(close(m[0], 0.6) && close(m[5], 0.6166666666666666));
        assert!(close(m[1], 0.625) && close(m[6], 0.6309523809523809));
        assert!(m[2].is_none() && close(m[3], 0.5) && close(m[4], 0.4));
        assert!(close(m[7], 1.0) && close(m[8], 0.5872074562267132));
        // CH-SIMS: Mult_acc_2 0.9, Mult_acc_3 0.7, Mult_acc_5 0.5, F1_score 0.901010101010101,
        // MAE 0.23, Corr 0.8845437022941721 (predictions clipped to [-1, 1] first).
        let m = mmsa_metrics(
            "sims",
            &[-1.0, -0.8, -0.4, -0.1, 0.0, 0.0, 0.2, 0.6, 0.8, 1.0],
            &[-0.6, -1.3, 0.1, -0.05, 0.0, -0.2, 0.5, 0.65, 0.3, 0.9],
        );
        assert!(close(m[0], 0.9) && close(m[2], 0.7) && close(m[3], 0.5));
        assert!(close(m[5], 0.901010101010101));
        assert!((m[7].unwrap() - 0.23).abs() < 1e-12 && close(m[8], 0.8845437022941721));
        assert!(m[1].is_none() && m[4].is_none() && m[6].is_none());
    }

    #[test]
    fn sims_bins_match_mmsa() {
        // MMSA: two classes {[-1.0, 0.0], (0.0, 1.0]}
        assert_eq!(sims_bin(0.0, SIMS2), 0);
        assert_eq!(sims_bin(0.01, SIMS2), 1);
        assert_eq!(sims_bin(-1.0, SIMS2), 0);
        // three classes {[-1.0, -0.1], (-0.1, 0.1], (0.1, 1.0]}
        assert_eq!(sims_bin(-0.1, SIMS3), 0);
        assert_eq!(sims_bin(0.1, SIMS3), 1);
        assert_eq!(sims_bin(0.2, SIMS3), 2);
        // five classes, edges -0.7/-0.1/0.1/0.7
        let got: Vec<i64> = [-1.0, -0.7, -0.4, 0.0, 0.4, 0.7, 0.8, 1.5]
            .iter()
            .map(|&y| sims_bin(y, SIMS5))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn three_way_names_follow_the_bins() {
        assert_eq!(three_way("sims", -0.1), "Negative");
        assert_eq!(three_way("sims", 0.0), "Neutral");
        assert_eq!(three_way("sims", 0.1), "Neutral");
        assert_eq!(three_way("sims", 0.2), "Positive");
        assert_eq!(three_way("mosi", -0.2), "Negative");
        assert_eq!(three_way("mosi", 0.0), "Neutral");
        assert_eq!(three_way("mosi", 2.4), "Positive");
    }

    #[test]
    fn mosi_rounding_is_half_to_even() {
        // np.round(0.5) == 0, np.round(1.5) == 2, np.round(-2.5) == -2
        assert_eq!(mosi_round(0.5, 3.0), 3);
        assert_eq!(mosi_round(1.5, 3.0), 5);
        assert_eq!(mosi_round(-2.5, 3.0), 1);
        assert_eq!(mosi_round(2.6, 2.0), 4);
        assert_eq!(classes("mosi", 0.0)[1], None);
        assert_eq!(classes("mosi", 0.0)[0], Some(1));
    }
}
