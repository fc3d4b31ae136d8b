//! `evaluate`: a trained model's metrics per split, beside the majority-class baseline on the
//! same split, with the per-clip outcomes that the paired bootstrap reads.

use arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, ListArray, StringArray,
};
use arrow::record_batch::RecordBatch;

use crate::metrics::bootstrap::Outcomes;
use crate::metrics::emotion::classification as metrics;
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, col, f32_lists, f64s, i64s, str_col, strings};
use crate::train::tables::checkpoint_of;
use crate::{Kind, Output, Params, RunCtx, Stage, StageError};

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
    let mut s = String::from(
        "\nPer class, test split:\n\n| class | Acc (%) | WA (%) | F1 (%) |\n|---|---|---|---|\n",
    );
    for c in 0..acc.len() {
        let name = names
            .get(c)
            .filter(|_| names.len() == acc.len())
            .cloned()
            .unwrap_or_else(|| c.to_string());
        s.push_str(&format!(
            "| {name} | {:.2} | {:.2} | {:.2} |\n",
            100.0 * acc[c],
            100.0 * wa[c],
            100.0 * f1[c]
        ));
    }
    Some(s)
}

/// The test split's confusion matrix (rows true, columns predicted), if the table has one.
fn test_confusion(t: &RecordBatch) -> Option<Vec<Vec<i64>>> {
    let (split, cms) = (
        str_col(t, "split").ok()?,
        col::<ListArray>(t, "confusion").ok()?,
    );
    let r = (0..t.num_rows()).find(|&r| split.value(r) == "test")?;
    let l = cms.value(r);
    let v = l.as_any().downcast_ref::<Float32Array>()?.values().to_vec();
    let k = (v.len() as f64).sqrt() as usize;
    Some(
        v.chunks(k.max(1))
            .map(|c| c.iter().map(|&x| x as i64).collect())
            .collect(),
    )
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

impl Kind for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    /// A training stage's table (its prediction rows).
    fn table_reads(&self, _params: &Params) -> &'static [&'static str] {
        &["part", "clip_id", "split", "y", "pred"]
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
            metrics
                .iter()
                .map(crate::metrics::common::header)
                .collect::<Vec<_>>()
                .join(" | "),
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
    fn figures(&self, p: &Params, t: &RecordBatch) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        let Some(cm) = test_confusion(t) else {
            return Vec::new();
        };
        let names = p.str_list("names").unwrap_or_default();
        vec![(
            "confusion-test".to_string(),
            crate::metrics::figures::confusion_png(&cm, &names, "confusion matrix, test split"),
        )]
    }
    /// The test split's confusion matrices of several runs (seeds, folds), summed.
    fn figures_over(
        &self,
        p: &Params,
        tables: &[(String, &RecordBatch)],
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        let mut sum: Option<Vec<Vec<i64>>> = None;
        for (_, t) in tables {
            let Some(cm) = test_confusion(t) else {
                return Vec::new();
            };
            match &mut sum {
                None => sum = Some(cm),
                Some(s) if s.len() == cm.len() => {
                    for (a, b) in s.iter_mut().zip(&cm) {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    }
                }
                Some(_) => return Vec::new(),
            }
        }
        let Some(cm) = sum else {
            return Vec::new();
        };
        let names = p.str_list("names").unwrap_or_default();
        let title = format!("confusion matrix, test split, {} runs summed", tables.len());
        vec![(
            "confusion-test".to_string(),
            crate::metrics::figures::confusion_png(&cm, &names, &title),
        )]
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let split = str_col(t, "split").ok()?;
        let metrics = crate::metrics::common::present_metrics(t, None);
        let mut s = format!(
            "{:<7} {}",
            "split",
            metrics
                .iter()
                .map(|m| format!("{:>18}", crate::metrics::common::header(m)))
                .collect::<String>()
        );
        for r in 0..t.num_rows() {
            s.push_str(&format!("\n{:<7} ", split.value(r)));
            for m in &metrics {
                let v = crate::table::f64_col(t, m.0).ok()?.value(r);
                s.push_str(&format!("{:>18}", crate::metrics::common::fmt_metric(m, v)));
            }
            if let Some(b) = baseline_cells(t, &metrics, r) {
                s.push_str(&format!("\n{:<7} ", "  major."));
                for c in b {
                    s.push_str(&format!("{c:>18}"));
                }
            }
        }
        Some(s)
    }
}

impl Stage for Evaluate {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = Predictions::of(&ctx.inputs[0])?;
        let baseline = Baseline::of(p.t, p.classes, p.scale.as_deref())?;
        // Multi-label: each emotion's majority flag on the training split, for every clip.
        let base_flags = p.multi.then(|| {
            let train = p.rows_of("train");
            crate::metrics::emotion::majority_flags(&p.targets, &train, p.classes)
        });
        let scores: Vec<SplitScores> = ["train", "valid", "test"]
            .into_iter()
            .filter_map(|s| {
                let keep = p.rows_of(s);
                (!keep.is_empty()).then(|| p.score_split(s, &keep, &baseline, base_flags.as_ref()))
            })
            .collect();
        let cols = columns(&scores, p.classes, p.multi);
        let table = batch(cols.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
}

/// A training stage's predictions table, read once.
struct Predictions<'a> {
    t: &'a RecordBatch,
    part: &'a StringArray,
    split: &'a StringArray,
    clip_id: &'a StringArray,
    y: &'a Int64Array,
    pred: &'a Int64Array,
    score: &'a Float64Array,
    pred_score: &'a Float64Array,
    classes: usize,
    /// The label scale of a regression model.
    scale: Option<String>,
    multi: bool,
    /// Multi-label: each clip's flags and predicted probabilities.
    targets: Vec<Vec<f32>>,
    probs: Vec<Vec<f32>>,
}

impl<'a> Predictions<'a> {
    fn of(t: &'a RecordBatch) -> Result<Predictions<'a>, StageError> {
        let (_, config) = checkpoint_of(t)?;
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
        let scale = (config["task"] == "regress")
            .then(|| config["scale"].as_str().map(str::to_string))
            .flatten();
        Ok(Predictions {
            t,
            part: str_col(t, "part")?,
            split: str_col(t, "split")?,
            clip_id: str_col(t, "clip_id")?,
            y: col::<Int64Array>(t, "y")?,
            pred: col::<Int64Array>(t, "pred")?,
            score: crate::table::f64_col(t, "score")?,
            pred_score: crate::table::f64_col(t, "pred_score")?,
            classes: config["classes"].as_i64().unwrap_or(3).max(1) as usize,
            scale,
            multi,
            targets,
            probs,
        })
    }

    /// The prediction rows of one split.
    fn rows_of(&self, s: &str) -> Vec<usize> {
        (0..self.t.num_rows())
            .filter(|&r| self.part.value(r) == "prediction" && self.split.value(r) == s)
            .collect()
    }

    /// One split's metrics, its baseline's, and its per-clip outcomes.
    fn score_split(
        &self,
        s: &'static str,
        keep: &[usize],
        baseline: &Baseline,
        base_flags: Option<&Vec<Vec<f32>>>,
    ) -> SplitScores {
        use crate::metrics::emotion::{per_class, ua_wa};
        let ys: Vec<i64> = keep.iter().map(|&r| self.y.value(r)).collect();
        let ps: Vec<i64> = keep.iter().map(|&r| self.pred.value(r)).collect();
        let scores: Vec<f64> = keep.iter().map(|&r| self.score.value(r)).collect();
        let pred_scores: Vec<f64> = keep.iter().map(|&r| self.pred_score.value(r)).collect();
        let base = match base_flags {
            Some(flags) => {
                let b = per_class(&self.targets, flags, keep, self.classes);
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
        };
        let (acc, f1, wf1, cm) = metrics(&ys, &ps, self.classes);
        let (single, per_class) = if self.multi {
            let b = per_class(&self.targets, &self.probs, keep, self.classes);
            let per: [Vec<f32>; 3] = [
                b.iter().map(|x| x.acc as f32).collect(),
                b.iter().map(|x| x.wa as f32).collect(),
                b.iter().map(|x| x.f1 as f32).collect(),
            ];
            ([None, None], per)
        } else {
            let (ua, wa) = ua_wa(&ys, &ps);
            ([Some(ua), Some(wa)], Default::default())
        };
        let mmsa = match self.scale.as_deref() {
            Some(scale) => crate::metrics::mmsa::mmsa_metrics(scale, &scores, &pred_scores),
            None => [None; 9],
        };
        SplitScores {
            split: s,
            clips: ys.len() as i64,
            acc,
            f1,
            wf1,
            cm: cm.into_iter().flatten().collect(),
            mmsa,
            single,
            per_class,
            base,
            outcomes: Outcomes {
                ids: keep
                    .iter()
                    .map(|&r| self.clip_id.value(r).to_string())
                    .collect(),
                y: ys,
                pred: ps,
                score: scores,
                pred_score: pred_scores,
                classes: self.classes,
                scale: self.scale.clone(),
            },
        }
    }
}

/// One split's scores.
struct SplitScores {
    split: &'static str,
    clips: i64,
    acc: f64,
    f1: f64,
    wf1: f64,
    /// The confusion matrix, row-major.
    cm: Vec<i64>,
    mmsa: [Option<f64>; 9],
    /// UA, WA (single-label).
    single: [Option<f64>; 2],
    /// Multi-label: per-class binary Acc, WA, F1.
    per_class: [Vec<f32>; 3],
    /// The majority-class baseline's metrics on the same clips.
    base: Vec<(String, Option<f64>)>,
    outcomes: Outcomes,
}

/// The evaluation table: one row per split.
fn columns(rows: &[SplitScores], classes: usize, multi: bool) -> Vec<(String, ArrayRef)> {
    let f = |g: fn(&SplitScores) -> Option<f64>| f64s(rows.iter().map(g).collect());
    let mut cols: Vec<(String, ArrayRef)> = vec![
        (
            "split".into(),
            strings(&rows.iter().map(|r| r.split).collect::<Vec<_>>()),
        ),
        (
            "clips".into(),
            i64s(rows.iter().map(|r| Some(r.clips)).collect()),
        ),
        ("acc".into(), f(|r| Some(r.acc))),
        ("f1_macro".into(), f(|r| Some(r.f1))),
        ("f1_weighted".into(), f(|r| Some(r.wf1))),
        (
            "classes".into(),
            i64s(vec![Some(classes as i64); rows.len()]),
        ),
        (
            "confusion".into(),
            f32_lists(
                rows.iter()
                    .map(|r| r.cm.iter().map(|&v| v as f32).collect())
                    .collect(),
            ),
        ),
    ];
    for (k, name) in crate::metrics::mmsa::MMSA_METRICS.iter().enumerate() {
        cols.push((
            name.to_string(),
            f64s(rows.iter().map(|r| r.mmsa[k]).collect()),
        ));
    }
    cols.push(("ua".into(), f(|r| r.single[0])));
    cols.push(("wa".into(), f(|r| r.single[1])));
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
        cols.push((
            a.into(),
            f64s(rows.iter().map(|r| avg(&r.per_class[k])).collect()),
        ));
        let lists = rows.iter().map(|r| r.per_class[k].clone()).collect();
        cols.push((c.into(), f32_lists(lists)));
    }
    let mut names: Vec<&String> = rows.iter().flat_map(|r| &r.base).map(|(k, _)| k).collect();
    names.sort();
    names.dedup();
    for name in names {
        let v = rows
            .iter()
            .map(|r| r.base.iter().find(|(k, _)| k == name).and_then(|x| x.1))
            .collect();
        cols.push((format!("base_{name}"), f64s(v)));
    }
    if multi {
        // Single-label scores of the flags' argmax would only confuse the tables.
        for (name, col) in cols.iter_mut() {
            if ["acc", "f1_macro", "f1_weighted"].contains(&name.as_str()) {
                *col = f64s(vec![None; rows.len()]);
            }
        }
    }
    cols.extend(clip_columns(rows));
    cols
}

/// Per clip, so that `compare` can bootstrap over clips as well as seeds.
fn clip_columns(rows: &[SplitScores]) -> Vec<(String, ArrayRef)> {
    use crate::table::{f64_lists, i64_lists, opt_strings, str_lists};
    let o: Vec<&Outcomes> = rows.iter().map(|r| &r.outcomes).collect();
    vec![
        (
            "clip_ids".into(),
            str_lists(&o.iter().map(|x| x.ids.clone()).collect::<Vec<_>>()),
        ),
        (
            "y_true".into(),
            i64_lists(&o.iter().map(|x| x.y.clone()).collect::<Vec<_>>()),
        ),
        (
            "y_pred".into(),
            i64_lists(&o.iter().map(|x| x.pred.clone()).collect::<Vec<_>>()),
        ),
        (
            "score_true".into(),
            f64_lists(&o.iter().map(|x| x.score.clone()).collect::<Vec<_>>()),
        ),
        (
            "score_pred".into(),
            f64_lists(&o.iter().map(|x| x.pred_score.clone()).collect::<Vec<_>>()),
        ),
        (
            "scale".into(),
            opt_strings(o.iter().map(|x| x.scale.clone()).collect()),
        ),
    ]
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
