//! `compare`: a paper's direction (IUA beats IMA, the Conformer beats the other fusions, ...)
//! tested on the gathered `evaluate` variants. The variants are split by the values of one
//! matrix axis (`axis`); the paper's better value (`better`) is paired with each other value
//! on every remaining axis (the seed, and whatever else the inputs vary), and the paired
//! differences get a mean, a sample sd and a 95% t-interval. The verdict: `holds` when the
//! interval lies above 0 (the paper's direction), `fails` when it lies below, else
//! `inconclusive`. One pair (a single seed) has no interval and is always inconclusive.

use std::collections::BTreeMap;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;

use crate::metrics::bootstrap::{interval, Outcomes, Pair};
use crate::metrics::common::{fmt_metric, mean_sd, parse_variant, METRICS};
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64_col, f64s, i64s, opt_strings, str_col, strings};
use crate::{Kind, Output, Params, RunCtx, Stage, StageError};

pub struct Compare;

/// One evaluated model: its metric, and its per-clip outcomes where `evaluate` kept them.
type Model = (f64, Option<Outcomes>);

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "axis",
        ParamType::Str,
        None,
        "the matrix axis whose values are compared (source, fusion, multitask, ...), or `stage` to compare whole input stages (a model and its ablation) paired on every axis",
    ),
    ParamSpec::new(
        "better",
        ParamType::Str,
        None,
        "the value the paper reports as better; compared with each other value of the axis",
    ),
    ParamSpec::new(
        "metric",
        ParamType::Str,
        Some("\"acc\""),
        "the metric compared (a column of the evaluate tables: acc, f1_weighted, ua, corr, mae, ...); for mae lower is better",
    ),
    ParamSpec::new("split", ParamType::Str, Some("\"test\""), "which split's metrics"),
    ParamSpec::new(
        "claim",
        ParamType::Str,
        Some("\"\""),
        "the paper's claim in words, for the report",
    ),
];

/// One comparison: `better` against `other`, over `diffs` (better - other, in the metric's
/// favourable direction).
struct Row {
    other: String,
    a: Vec<f64>,
    b: Vec<f64>,
    diffs: Vec<f64>,
    /// The paired bootstrap's 95% interval, where every pair has per-clip outcomes.
    boot: Option<(f64, f64)>,
}

impl Kind for Compare {
    fn kind(&self) -> &'static str {
        "compare"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "a paper's direction: paired differences over seeds of gathered evaluate variants, a 95% t-interval and a verdict, and a paired bootstrap over clips and seeds"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (2, usize::MAX)
    }
    fn reports(&self) -> bool {
        true
    }
    fn markdown(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let claim = p.str("claim").ok().filter(|c| !c.is_empty());
        let mut s = claim.map(|c| format!("Claim: {c}\n\n")).unwrap_or_default();
        s.push_str(&format!(
            "| {} | n | {} | other | difference (95% t-interval) | verdict | bootstrap over clips and seeds (95%) |\n|---|---|---|---|---|---|---|\n",
            str_col(t, "better").ok()?.value(0),
            p.str("metric").ok()?
        ));
        for line in self.lines(t)? {
            s.push_str(&format!("| {} |\n", line.join(" | ")));
        }
        Some(s)
    }
    fn report(&self, _p: &Params, t: &RecordBatch) -> Option<String> {
        let mut s = String::new();
        for line in self.lines(t)? {
            s.push_str(&line.join("  "));
            s.push('\n');
        }
        Some(s.trim_end().to_string())
    }
}

impl Stage for Compare {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let (axis, better, metric) = (p.str("axis")?, p.str("better")?, p.str("metric")?);
        if !METRICS.iter().any(|m| m.0 == metric) {
            return Err(StageError::param(
                "metric",
                format!(
                    "unknown metric `{metric}` (one of {})",
                    METRICS.iter().map(|m| m.0).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        // Lower is better for an error.
        let sign = if metric == "mae" { -1.0 } else { 1.0 };
        let want = p.str("split")?;
        // value of `axis` -> (the other axes, as the pairing key) -> metric
        let mut by: BTreeMap<String, BTreeMap<String, Model>> = BTreeMap::new();
        for (t, name) in ctx.inputs.iter().zip(ctx.input_names) {
            let (base, axes) = parse_variant(name);
            // `stage` compares whole stages (a model and its ablation), paired on every axis.
            let v = if axis == "stage" {
                Some(base)
            } else {
                axes.iter().find(|(k, _)| k == axis).map(|x| x.1.clone())
            };
            let Some(v) = v else {
                return Err(StageError::Input(format!(
                    "{name} has no `{axis}` axis to compare"
                )));
            };
            let key: Vec<String> = axes
                .iter()
                .filter(|(k, _)| k != axis)
                .map(|(k, x)| format!("{k}={x}"))
                .collect();
            let x = value(t, want, metric).ok_or_else(|| {
                StageError::Input(format!("{name} has no `{metric}` on the `{want}` split"))
            })?;
            let outcomes = Outcomes::read(t, want);
            by.entry(v)
                .or_default()
                .insert(key.join(","), (x, outcomes));
        }
        let Some(best) = by.get(better) else {
            return Err(StageError::param(
                "better",
                format!(
                    "no input has {axis}={better} (the inputs have {})",
                    by.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let mut rows = Vec::new();
        for (other, vals) in by.iter().filter(|(k, _)| *k != better) {
            let mut row = Row {
                other: other.clone(),
                a: vec![],
                b: vec![],
                diffs: vec![],
                boot: None,
            };
            let mut pairs = Some(Vec::new());
            for (key, (a, ao)) in best {
                if let Some((b, bo)) = vals.get(key) {
                    row.a.push(*a);
                    row.b.push(*b);
                    row.diffs.push(sign * (a - b));
                    let pair = ao
                        .as_ref()
                        .zip(bo.as_ref())
                        .and_then(|(x, y)| Pair::new(x, y));
                    pairs = pairs.zip(pair).map(|(mut v, p)| {
                        v.push(p);
                        v
                    });
                }
            }
            row.boot = pairs.and_then(|p| interval(&p, metric, sign));
            if row.diffs.is_empty() {
                return Err(StageError::Input(format!(
                    "{axis}={better} and {axis}={other} share no variant to pair"
                )));
            }
            rows.push(row);
        }
        Ok(Output {
            table: table(&rows, axis, better, metric)?,
            errors: vec![],
        })
    }
}

impl Compare {
    /// Per row: the compared pair, n, both means, the difference with its interval, the verdict.
    fn lines(&self, t: &RecordBatch) -> Option<Vec<Vec<String>>> {
        let metric = str_col(t, "metric").ok()?.value(0).to_string();
        let m = METRICS.iter().find(|m| m.0 == metric)?;
        let f = |c: &str, r: usize| crate::table::opt_f64(f64_col(t, c).ok()?, r);
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| fmt_metric(m, v));
        let (axis, better, other) = (
            str_col(t, "axis").ok()?,
            str_col(t, "better").ok()?,
            str_col(t, "other").ok()?,
        );
        let n = crate::table::col::<arrow::array::Int64Array>(t, "n").ok()?;
        let verdict = str_col(t, "verdict").ok()?;
        let boot = str_col(t, "boot_verdict").ok();
        Some(
            (0..t.num_rows())
                .map(|r| {
                    vec![
                        format!("{}={}", axis.value(r), better.value(r)),
                        n.value(r).to_string(),
                        format!(
                            "{} vs {}",
                            show(f("mean_better", r)),
                            show(f("mean_other", r))
                        ),
                        other.value(r).to_string(),
                        format!(
                            "{} [{}, {}]",
                            show(f("diff", r)),
                            show(f("ci_low", r)),
                            show(f("ci_high", r))
                        ),
                        verdict.value(r).to_string(),
                        match (f("boot_low", r), f("boot_high", r), boot) {
                            (Some(lo), Some(hi), Some(b)) if !b.is_null(r) => {
                                format!("[{}, {}] {}", show(Some(lo)), show(Some(hi)), b.value(r))
                            }
                            _ => "-".to_string(),
                        },
                    ]
                })
                .collect(),
        )
    }
}

/// `metric` on split `split` of an evaluate table.
fn value(t: &RecordBatch, split: &str, metric: &str) -> Option<f64> {
    let s = str_col(t, "split").ok()?;
    let r = (0..t.num_rows()).find(|&r| s.value(r) == split)?;
    let c = f64_col(t, metric).ok()?;
    (!c.is_null(r)).then(|| c.value(r))
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom: exact to three
/// decimals up to 30, then the Cornish-Fisher expansion around the normal quantile.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if (1..=30).contains(&df) {
        return T[df - 1];
    }
    let (z, d) = (1.959_964f64, df.max(1) as f64);
    z + (z.powi(3) + z) / (4.0 * d)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
}

/// A comparison's mean difference, its 95% t-interval (None for one pair) and its verdict.
pub type Verdict = (f64, Option<(f64, f64)>, &'static str);

/// Mean difference, its 95% t-interval (None for one pair) and the verdict.
pub fn verdict(diffs: &[f64]) -> Verdict {
    let (mean, sd) = mean_sd(diffs);
    if diffs.len() < 2 {
        return (mean, None, "inconclusive");
    }
    let half = t975(diffs.len() - 1) * sd / (diffs.len() as f64).sqrt();
    let (lo, hi) = (mean - half, mean + half);
    (mean, Some((lo, hi)), judge(lo, hi))
}

/// The verdict of an interval of differences taken in the paper's direction.
pub fn judge(lo: f64, hi: f64) -> &'static str {
    if lo > 0.0 {
        "holds"
    } else if hi < 0.0 {
        "fails"
    } else {
        "inconclusive"
    }
}

fn table(rows: &[Row], axis: &str, better: &str, metric: &str) -> Result<RecordBatch, StageError> {
    let n = rows.len();
    let stats: Vec<Verdict> = rows.iter().map(|r| verdict(&r.diffs)).collect();
    let mean = |v: &Vec<f64>| Some(mean_sd(v).0);
    batch(vec![
        ("axis", strings(&vec![axis; n])),
        ("better", strings(&vec![better; n])),
        (
            "other",
            strings(&rows.iter().map(|r| r.other.as_str()).collect::<Vec<_>>()),
        ),
        ("metric", strings(&vec![metric; n])),
        (
            "n",
            i64s(rows.iter().map(|r| Some(r.diffs.len() as i64)).collect()),
        ),
        (
            "mean_better",
            f64s(rows.iter().map(|r| mean(&r.a)).collect()),
        ),
        (
            "mean_other",
            f64s(rows.iter().map(|r| mean(&r.b)).collect()),
        ),
        ("diff", f64s(stats.iter().map(|s| Some(s.0)).collect())),
        (
            "diff_sd",
            f64s(rows.iter().map(|r| Some(mean_sd(&r.diffs).1)).collect()),
        ),
        (
            "ci_low",
            f64s(stats.iter().map(|s| s.1.map(|c| c.0)).collect()),
        ),
        (
            "ci_high",
            f64s(stats.iter().map(|s| s.1.map(|c| c.1)).collect()),
        ),
        (
            "verdict",
            strings(&stats.iter().map(|s| s.2).collect::<Vec<_>>()),
        ),
        (
            "boot_low",
            f64s(rows.iter().map(|r| r.boot.map(|b| b.0)).collect()),
        ),
        (
            "boot_high",
            f64s(rows.iter().map(|r| r.boot.map(|b| b.1)).collect()),
        ),
        (
            "boot_verdict",
            opt_strings(
                rows.iter()
                    .map(|r| r.boot.map(|(lo, hi)| judge(lo, hi).to_string()))
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(4), 2.776);
        // scipy.stats.t.ppf(0.975, 40) = 2.0211, (0.975, 120) = 1.9799
        assert!((t975(40) - 2.0211).abs() < 1e-3);
        assert!((t975(120) - 1.9799).abs() < 1e-3);
    }

    #[test]
    fn verdicts_follow_the_interval() {
        // Differences 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3) = 2.484.
        let (m, ci, v) = verdict(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        let (lo, hi) = ci.unwrap();
        assert!((lo - (2.0 - 2.484)).abs() < 1e-3 && (hi - 4.484).abs() < 1e-3);
        assert_eq!(v, "inconclusive");
        assert_eq!(verdict(&[1.0, 1.1, 0.9, 1.0]).2, "holds");
        assert_eq!(verdict(&[-1.0, -1.1, -0.9, -1.0]).2, "fails");
        assert_eq!(verdict(&[5.0]).2, "inconclusive");
    }
}
