//! `evaluate`: a trained model's metrics per split, beside the majority-class baseline on the
//! same split, with the per-clip outcomes that the paired bootstrap reads.

use arrow::array::{Array, Float32Array, Int64Array, ListArray};
use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, col, f32_lists, f64s, i64s, str_col, strings};
use crate::train::checkpoint::*;
use crate::train::fit::*;
use crate::{Output, Params, RunCtx, Stage, StageError};

/// Row `r`'s majority-class baseline of each metric, formatted ("-" where the baseline has no
/// value, e.g. Corr of a constant); None for a table without baseline columns.
fn baseline_cells(
    t: &RecordBatch,
    metrics: &[crate::metrics::common::Metric],
    r: usize,
) -> Option<Vec<String>> {
    t.column_by_name("base_acc")?;
    Some(
        metrics
            .iter()
            .map(|m| {
                crate::table::f64_col(t, &format!("base_{}", m.0))
                    .ok()
                    .and_then(|a| crate::table::opt_f64(a, r))
                    .map_or("-".to_string(), |v| {
                        crate::metrics::common::fmt_metric(m, v)
                    })
            })
            .collect(),
    )
}

/// The majority-class baseline of a model's predictions table: the most frequent class of its
/// training clips, and for scores their median (the best constant under MMSA's L1 loss).
struct Baseline {
    major: i64,
    median: Option<f64>,
    classes: usize,
    scale: Option<&'static str>,
}

impl Baseline {
    fn of(t: &RecordBatch, classes: usize, scale: Option<&str>) -> Result<Baseline, StageError> {
        let part = str_col(t, "part")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let score = crate::table::f64_col(t, "score")?;
        let train: Vec<usize> = (0..t.num_rows())
            .filter(|&r| part.value(r) == "prediction" && split.value(r) == "train")
            .collect();
        let mut counts = vec![0usize; classes];
        for &r in &train {
            if let Some(c) = counts.get_mut(y.value(r) as usize) {
                *c += 1;
            }
        }
        // Ties go to the lower class id, as numpy's argmax does.
        let major = (0..classes).rev().max_by_key(|&c| counts[c]).unwrap_or(0) as i64;
        let mut s: Vec<f64> = train
            .iter()
            .filter(|&&r| !score.is_null(r))
            .map(|&r| score.value(r))
            .collect();
        s.sort_by(f64::total_cmp);
        let median = (!s.is_empty()).then(|| {
            let m = s.len() / 2;
            if s.len() % 2 == 1 {
                s[m]
            } else {
                (s[m - 1] + s[m]) / 2.0
            }
        });
        Ok(Baseline {
            major,
            median,
            classes,
            scale: match scale {
                Some("sims") => Some("sims"),
                Some(_) => Some("mosi"),
                None => None,
            },
        })
    }
    /// The baseline's metrics on clips with classes `ys` (and scores `scores`).
    fn scores(&self, ys: &[i64], scores: &[f64]) -> Vec<(String, Option<f64>)> {
        let pred = vec![self.major; ys.len()];
        let (acc, f1, wf1, _) = metrics(ys, &pred, self.classes);
        let (ua, wa) = crate::metrics::emotion::ua_wa(ys, &pred);
        let mut out: Vec<(String, Option<f64>)> = [
            ("acc", acc),
            ("f1_macro", f1),
            ("f1_weighted", wf1),
            ("ua", ua),
            ("wa", wa),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), Some(*v)))
        .collect();
        if let (Some(scale), Some(m)) = (self.scale, self.median) {
            let m = crate::metrics::mmsa::mmsa_metrics(scale, scores, &vec![m; scores.len()]);
            for (name, v) in crate::metrics::mmsa::MMSA_METRICS.iter().zip(m) {
                out.push((name.to_string(), v));
            }
        }
        out
    }
}

/// Multi-label models: the test split's binary scores per class (the paper's Table 2 layout).
fn per_class_table(p: &Params, t: &RecordBatch) -> Option<String> {
    let split = str_col(t, "split").ok()?;
    let r = (0..t.num_rows()).find(|&r| split.value(r) == "test")?;
    let get = |c: &str| -> Option<Vec<f32>> {
        let l = col::<ListArray>(t, c).ok()?.value(r);
        Some(l.as_any().downcast_ref::<Float32Array>()?.values().to_vec())
    };
    let (acc, wa, f1) = (get("class_acc")?, get("class_wa")?, get("class_f1")?);
    if acc.is_empty() {
        return None;
    }
    let names = p.str_list("names").unwrap_or_default();
    let mut s =
        String::from("\nPer class, test split:\n\n| class | Acc | WA | F1 |\n|---|---|---|---|\n");
    for c in 0..acc.len() {
        let name = names
            .get(c)
            .filter(|_| names.len() == acc.len())
            .cloned()
            .unwrap_or_else(|| c.to_string());
        s.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:.3} |\n",
            acc[c], wa[c], f1[c]
        ));
    }
    Some(s)
}

const EVAL_PARAMS: &[ParamSpec] = &[ParamSpec::new(
    "names",
    ParamType::StrList,
    Some(r#"["Negative", "Neutral", "Positive"]"#),
    "class names in figures",
)];

/// `evaluate`: accuracy, macro and weighted F1 and the confusion matrix per split, from a
/// training stage's predictions; for a regression model also MMSA's metrics of the scores
/// (`acc2`, `acc2_pos`, `acc3`, `acc5`, `acc7`, `f1_acc2`, `f1_acc2_pos`, `mae`, `corr`; null where the
/// scale has none). The class count and scale come from the model's checkpoint config.
pub struct Evaluate;

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        7
    }
    fn about(&self) -> &'static str {
        "per split: Acc, macro/weighted F1, UA, WA, confusion matrix of a training stage, and its per-clip outcomes; multi-label: per-class and average binary Acc, WA, F1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        EVAL_PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let t = &ctx.inputs[0];
        let (_, config) = checkpoint_of(t)?;
        let classes = config["classes"].as_i64().unwrap_or(3).max(1) as usize;
        let scale = config["scale"]
            .as_str()
            .filter(|_| config["task"] == "regress");
        let part = str_col(t, "part")?;
        let split = str_col(t, "split")?;
        let y = col::<Int64Array>(t, "y")?;
        let pred = col::<Int64Array>(t, "pred")?;
        let score = crate::table::f64_col(t, "score")?;
        let pred_score = crate::table::f64_col(t, "pred_score")?;
        let multi = config["task"] == "multilabel";
        let lists_of = |name: &str| -> Result<Vec<Vec<f32>>, StageError> {
            let l = col::<ListArray>(t, name)?;
            Ok((0..t.num_rows())
                .map(|r| {
                    l.value(r)
                        .as_any()
                        .downcast_ref::<Float32Array>()
                        .map(|a| a.values().to_vec())
                        .unwrap_or_default()
                })
                .collect())
        };
        let (targets, probs) = if multi {
            (lists_of("targets")?, lists_of("probs")?)
        } else {
            (vec![], vec![])
        };
        let baseline = Baseline::of(t, classes, scale)?;
        // Multi-label: each emotion's majority flag on the training split, for every clip.
        let base_flags = multi.then(|| {
            let train: Vec<usize> = (0..t.num_rows())
                .filter(|&r| part.value(r) == "prediction" && split.value(r) == "train")
                .collect();
            crate::metrics::emotion::majority_flags(&targets, &train, classes)
        });
        let mut base: Vec<Vec<(String, Option<f64>)>> = Vec::new();
        let mut rows = Vec::new();
        let mut mmsa: Vec<[Option<f64>; 9]> = Vec::new();
        // UA, WA; multi-label: the averages of per-class binary Acc, WA, F1 and the per-class values.
        let mut single: Vec<[Option<f64>; 2]> = Vec::new();
        let mut per_class: Vec<[Vec<f32>; 3]> = Vec::new();
        let clip_id = str_col(t, "clip_id")?;
        let mut outcomes: Vec<crate::metrics::bootstrap::Outcomes> = Vec::new();
        for s in ["train", "valid", "test"] {
            let keep: Vec<usize> = (0..t.num_rows())
                .filter(|&r| part.value(r) == "prediction" && split.value(r) == s)
                .collect();
            if keep.is_empty() {
                continue;
            }
            let ys: Vec<i64> = keep.iter().map(|&r| y.value(r)).collect();
            let ps: Vec<i64> = keep.iter().map(|&r| pred.value(r)).collect();
            let scores: Vec<f64> = keep.iter().map(|&r| score.value(r)).collect();
            outcomes.push(crate::metrics::bootstrap::Outcomes {
                ids: keep.iter().map(|&r| clip_id.value(r).to_string()).collect(),
                y: ys.clone(),
                pred: ps.clone(),
                score: scores.clone(),
                pred_score: keep.iter().map(|&r| pred_score.value(r)).collect(),
                classes,
                scale: scale.map(str::to_string),
            });
            base.push(match &base_flags {
                Some(flags) => {
                    let b = crate::metrics::emotion::per_class(&targets, flags, &keep, classes);
                    let avg = |f: fn(&crate::metrics::emotion::Binary) -> f64| {
                        Some(b.iter().map(f).sum::<f64>() / b.len().max(1) as f64)
                    };
                    vec![
                        ("avg_acc".to_string(), avg(|x| x.acc)),
                        ("avg_wa".to_string(), avg(|x| x.wa)),
                        ("avg_f1".to_string(), avg(|x| x.f1)),
                    ]
                }
                None => baseline.scores(&ys, &scores),
            });
            let (acc, f1, wf1, cm) = metrics(&ys, &ps, classes);
            if multi {
                let b = crate::metrics::emotion::per_class(&targets, &probs, &keep, classes);
                per_class.push([
                    b.iter().map(|x| x.acc as f32).collect(),
                    b.iter().map(|x| x.wa as f32).collect(),
                    b.iter().map(|x| x.f1 as f32).collect(),
                ]);
                single.push([None, None]);
            } else {
                let (ua, wa) = crate::metrics::emotion::ua_wa(&ys, &ps);
                single.push([Some(ua), Some(wa)]);
                per_class.push(Default::default());
            }
            rows.push((
                s,
                ys.len() as i64,
                acc,
                f1,
                wf1,
                cm.into_iter().flatten().collect::<Vec<i64>>(),
            ));
            mmsa.push(match scale {
                Some(scale) => crate::metrics::mmsa::mmsa_metrics(
                    scale,
                    &keep.iter().map(|&r| score.value(r)).collect::<Vec<_>>(),
                    &keep
                        .iter()
                        .map(|&r| pred_score.value(r))
                        .collect::<Vec<_>>(),
                ),
                None => [None; 9],
            });
        }
        let cms: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| r.5.iter().map(|&v| v as f32).collect())
            .collect();
        let mut cols = vec![
            (
                "split",
                strings(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            ),
            ("clips", i64s(rows.iter().map(|r| Some(r.1)).collect())),
            ("acc", f64s(rows.iter().map(|r| Some(r.2)).collect())),
            ("f1_macro", f64s(rows.iter().map(|r| Some(r.3)).collect())),
            (
                "f1_weighted",
                f64s(rows.iter().map(|r| Some(r.4)).collect()),
            ),
            ("classes", i64s(vec![Some(classes as i64); rows.len()])),
            ("confusion", f32_lists(cms)),
        ];
        for (k, name) in crate::metrics::mmsa::MMSA_METRICS.iter().enumerate() {
            cols.push((name, f64s(mmsa.iter().map(|m| m[k]).collect())));
        }
        cols.push(("ua", f64s(single.iter().map(|m| m[0]).collect())));
        cols.push(("wa", f64s(single.iter().map(|m| m[1]).collect())));
        let avg = |v: &Vec<f32>| {
            (!v.is_empty()).then(|| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64)
        };
        for (k, (a, c)) in [
            ("avg_acc", "class_acc"),
            ("avg_wa", "class_wa"),
            ("avg_f1", "class_f1"),
        ]
        .into_iter()
        .enumerate()
        {
            cols.push((a, f64s(per_class.iter().map(|m| avg(&m[k])).collect())));
            cols.push((
                c,
                f32_lists(per_class.iter().map(|m| m[k].clone()).collect()),
            ));
        }
        let mut names: Vec<&String> = base.iter().flatten().map(|(k, _)| k).collect();
        names.sort();
        names.dedup();
        let base_cols: Vec<(String, arrow::array::ArrayRef)> = names
            .iter()
            .map(|&name| {
                let v = base
                    .iter()
                    .map(|b| b.iter().find(|(k, _)| k == name).and_then(|x| x.1))
                    .collect();
                (format!("base_{name}"), f64s(v))
            })
            .collect();
        for (k, v) in &base_cols {
            cols.push((k.as_str(), v.clone()));
        }
        if multi {
            // Single-label scores of the flags' argmax would only confuse the tables.
            for (name, col) in cols.iter_mut() {
                if ["acc", "f1_macro", "f1_weighted"].contains(name) {
                    *col = f64s(vec![None; rows.len()]);
                }
            }
        }
        // Per clip, so that `compare` can bootstrap over clips as well as seeds.
        let o = &outcomes;
        let clip_cols = [
            (
                "clip_ids",
                crate::table::str_lists(&o.iter().map(|x| x.ids.clone()).collect::<Vec<_>>()),
            ),
            (
                "y_true",
                crate::table::i64_lists(&o.iter().map(|x| x.y.clone()).collect::<Vec<_>>()),
            ),
            (
                "y_pred",
                crate::table::i64_lists(&o.iter().map(|x| x.pred.clone()).collect::<Vec<_>>()),
            ),
            (
                "score_true",
                crate::table::f64_lists(&o.iter().map(|x| x.score.clone()).collect::<Vec<_>>()),
            ),
            (
                "score_pred",
                crate::table::f64_lists(
                    &o.iter().map(|x| x.pred_score.clone()).collect::<Vec<_>>(),
                ),
            ),
            (
                "scale",
                crate::table::opt_strings(o.iter().map(|x| x.scale.clone()).collect()),
            ),
        ];
        cols.extend(clip_cols);
        let table = batch(cols)?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn markdown(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let n = col::<Int64Array>(t, "clips").ok()?;
        let per_class = per_class_table(p, t).unwrap_or_default();
        let metrics = crate::metrics::common::present_metrics(t, None);
        let mut s = format!(
            "| split | clips | {} |\n|---|---|{}\n",
            metrics.iter().map(|m| m.1).collect::<Vec<_>>().join(" | "),
            "---|".repeat(metrics.len())
        );
        for r in 0..t.num_rows() {
            let cells: Vec<String> = metrics
                .iter()
                .map(|m| {
                    Some(crate::metrics::common::fmt_metric(
                        m,
                        crate::table::f64_col(t, m.0).ok()?.value(r),
                    ))
                })
                .collect::<Option<_>>()?;
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                split.value(r),
                n.value(r),
                cells.join(" | ")
            ));
            if let Some(b) = baseline_cells(t, &metrics, r) {
                s.push_str(&format!(
                    "| {} (majority) | | {} |\n",
                    split.value(r),
                    b.join(" | ")
                ));
            }
        }
        s.push_str(&per_class);
        Some(s)
    }
    fn figures(&self, p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, String>)> {
        let names = p.str_list("names").unwrap_or_default();
        let (Ok(split), Ok(cms)) = (str_col(t, "split"), col::<ListArray>(t, "confusion")) else {
            return Vec::new();
        };
        (0..t.num_rows())
            .filter(|&r| split.value(r) == "test")
            .map(|r| {
                let l = cms.value(r);
                let v = l
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default();
                let k = (v.len() as f64).sqrt() as usize;
                let cm: Vec<Vec<i64>> = v
                    .chunks(k.max(1))
                    .map(|c| c.iter().map(|&x| x as i64).collect())
                    .collect();
                (
                    "confusion-test".to_string(),
                    crate::metrics::figures::confusion_png(
                        &cm,
                        &names,
                        "confusion matrix, test split",
                    ),
                )
            })
            .collect()
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let metrics = crate::metrics::common::present_metrics(t, None);
        let mut s = format!(
            "{:<7} {}",
            "split",
            metrics
                .iter()
                .map(|m| format!("{:>15}", m.1))
                .collect::<String>()
        );
        for r in 0..t.num_rows() {
            s.push_str(&format!("\n{:<7} ", split.value(r)));
            for m in &metrics {
                let v = crate::table::f64_col(t, m.0).ok()?.value(r);
                s.push_str(&format!("{:>15}", crate::metrics::common::fmt_metric(m, v)));
            }
            if let Some(b) = baseline_cells(t, &metrics, r) {
                s.push_str(&format!("\n{:<7} ", "  major."));
                for c in b {
                    s.push_str(&format!("{c:>15}"));
                }
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_sklearn_on_a_fixed_vector() {
        // sklearn.metrics on y = [0,0,1,1,2,2,2], p = [0,1,1,1,2,0,2]:
        //   accuracy 5/7; per-class F1 0.5, 0.8, 0.8; macro 0.7; weighted (2*.5+2*.8+3*.8)/7.
        let (acc, f1, wf1, cm) = metrics(&[0, 0, 1, 1, 2, 2, 2], &[0, 1, 1, 1, 2, 0, 2], 3);
        assert!((acc - 5.0 / 7.0).abs() < 1e-12);
        assert!((f1 - 0.7).abs() < 1e-12);
        assert!((wf1 - (1.0 + 1.6 + 2.4) / 7.0).abs() < 1e-12);
        assert_eq!(cm, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 2]]);
    }
}
