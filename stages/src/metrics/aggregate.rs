//! `aggregate`: mean and standard deviation over seeds (or any matrix axis) of the `evaluate`
//! variants it gathers, one row per remaining combination of axes, over every metric the
//! inputs carry (classification and MMSA regression alike). Its report can pivot one axis into
//! columns, which is how the papers lay out their tables (rows: models, columns: IUA | IMA).

use arrow::array::Array;
use arrow::record_batch::RecordBatch;

use crate::metrics::common::{
    fmt_metric, header as metric_header, mean_sd, parse_variant, present_metrics, Metric, METRICS,
};
use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64_col, f64s, i64s, str_col, strings};
use crate::{Kind, Output, Params, RunCtx, Stage, StageError};

pub struct Aggregate;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "over",
        ParamType::Str,
        Some("\"seed\""),
        "the matrix axis to average over",
    ),
    ParamSpec::new(
        "split",
        ParamType::Str,
        Some("\"test\""),
        "which split's metrics",
    ),
    ParamSpec::new(
        "columns",
        ParamType::Str,
        Some("\"\""),
        "report: a matrix axis whose values become the table's columns (the papers' IUA | IMA)",
    ),
    ParamSpec::new(
        "metric",
        ParamType::Str,
        Some("\"acc\""),
        "report: the metric in the cells of a `columns` table",
    ),
];

/// `mean <pm> sd`, or the mean alone when one value made it (an sd of one value is no spread).
fn fmt_pm(m: &Metric, mean: f64, sd: f64, count: i64, pm: &str) -> String {
    if count < 2 {
        return fmt_metric(m, mean);
    }
    format!("{} {pm} {}", fmt_metric(m, mean), fmt_metric(m, sd))
}

/// How many variants define metric `m` in row `r`: its `_n` column, else the row's `n`.
fn metric_count(t: &RecordBatch, m: &Metric, r: usize) -> i64 {
    let int = |c: &str| crate::table::col::<arrow::array::Int64Array>(t, c).ok();
    int(&format!("{}_n", m.0))
        .or_else(|| int("n"))
        .map_or(0, |a| a.value(r))
}

/// The columns before `n`: the matrix axes a row stands for.
fn axis_columns(t: &RecordBatch) -> Vec<String> {
    t.schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .take_while(|n| n != "n")
        .collect()
}

/// Cell text of axis `a` in row `r`.
fn axis_value(t: &RecordBatch, a: &str, r: usize) -> String {
    str_col(t, a)
        .map(|c| c.value(r).to_string())
        .unwrap_or_default()
}

/// Each row's cells: its axis values, `n`, and every metric as `mean <pm> sd`.
fn rows(
    t: &RecordBatch,
    axes: &[String],
    metrics: &[Metric],
    pm: &str,
) -> Option<Vec<Vec<String>>> {
    let n = crate::table::col::<arrow::array::Int64Array>(t, "n").ok()?;
    let mut out = Vec::with_capacity(t.num_rows());
    for r in 0..t.num_rows() {
        let mut cells: Vec<String> = axes.iter().map(|a| axis_value(t, a, r)).collect();
        cells.push(n.value(r).to_string());
        for m in metrics {
            let mean = f64_col(t, &format!("{}_mean", m.0)).ok()?.value(r);
            let sd = f64_col(t, &format!("{}_sd", m.0)).ok()?.value(r);
            let count = metric_count(t, m, r);
            cells.push(
                fmt_pm(m, mean, sd, count, pm) + &count_suffix(t, m, r) + &base_suffix(t, m, r),
            );
        }
        out.push(cells);
    }
    Some(out)
}

/// The aggregate as a two-way table: the other axes down, the values of `across` along, one
/// metric's `mean <pm> sd` in the cells (blank where a combination was not run).
fn pivot(
    t: &RecordBatch,
    across: &str,
    metric: &str,
    pm: &str,
) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let m = METRICS.iter().find(|m| m.0 == metric)?;
    let axes: Vec<String> = axis_columns(t)
        .into_iter()
        .filter(|a| a != across)
        .collect();
    str_col(t, across).ok()?;
    let mean = f64_col(t, &format!("{metric}_mean")).ok()?;
    let sd = f64_col(t, &format!("{metric}_sd")).ok()?;
    let mut cols: Vec<String> = Vec::new();
    let mut keys: Vec<Vec<String>> = Vec::new();
    let mut cells: std::collections::HashMap<(usize, usize), String> = Default::default();
    for r in 0..t.num_rows() {
        let c = axis_value(t, across, r);
        let ci = cols.iter().position(|x| *x == c).unwrap_or_else(|| {
            cols.push(c);
            cols.len() - 1
        });
        let k: Vec<String> = axes.iter().map(|a| axis_value(t, a, r)).collect();
        let ki = keys.iter().position(|x| *x == k).unwrap_or_else(|| {
            keys.push(k);
            keys.len() - 1
        });
        if !mean.is_null(r) {
            let count = metric_count(t, m, r);
            let cell = fmt_pm(m, mean.value(r), sd.value(r), count, pm)
                + &count_suffix(t, m, r)
                + &base_suffix(t, m, r);
            cells.insert((ki, ci), cell);
        }
    }
    let mut header = axes;
    header.extend(cols.iter().map(|c| format!("{across}={c}")));
    let body = keys
        .into_iter()
        .enumerate()
        .map(|(ki, mut k)| {
            k.extend((0..cols.len()).map(|ci| cells.remove(&(ki, ci)).unwrap_or_default()));
            k
        })
        .collect();
    Some((header, body))
}

fn md_table(header: &[String], body: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for cells in body {
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// One table row's axis values, and per gathered variant its metrics and their majority-class
/// baselines.
type Group = (
    Vec<(String, String)>,
    Vec<[Option<f64>; METRICS.len()]>,
    Vec<[Option<f64>; METRICS.len()]>,
);

/// Metric values of row `row` of `t`, from columns named `prefix` + metric.
fn metric_row(t: &RecordBatch, row: usize, prefix: &str) -> [Option<f64>; METRICS.len()] {
    let mut m = [None; METRICS.len()];
    for (k, c) in METRICS.iter().enumerate() {
        m[k] = f64_col(t, &format!("{prefix}{}", c.0))
            .ok()
            .filter(|a| !a.is_null(row))
            .map(|a| a.value(row));
    }
    m
}

/// ` (n=k)` when fewer than the row's variants define metric `m`.
fn count_suffix(t: &RecordBatch, m: &Metric, r: usize) -> String {
    let n = crate::table::col::<arrow::array::Int64Array>(t, "n").ok();
    let k = crate::table::col::<arrow::array::Int64Array>(t, &format!("{}_n", m.0)).ok();
    match (n, k) {
        (Some(n), Some(k)) if k.value(r) < n.value(r) => format!(" (n={})", k.value(r)),
        _ => String::new(),
    }
}

/// ` [b]`: a cell's majority-class baseline, when the table has one.
fn base_suffix(t: &RecordBatch, m: &Metric, r: usize) -> String {
    f64_col(t, &format!("{}_base", m.0))
        .ok()
        .and_then(|a| crate::table::opt_f64(a, r))
        .map_or(String::new(), |b| format!(" [{}]", fmt_metric(m, b)))
}

impl Kind for Aggregate {
    fn kind(&self) -> &'static str {
        "aggregate"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "mean +- sd over seeds of gathered evaluate variants"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    fn reports(&self) -> bool {
        true
    }
    fn markdown(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let axes = axis_columns(t);
        let metrics = present_metrics(t, Some("_mean"));
        let mut out = format!(
            "{} split, mean ± sd over `{}`{}\n\n",
            p.str("split").ok()?,
            p.str("over").ok()?,
            if t.column_by_name("acc_base").is_some() {
                "; [the majority-class baseline on the same clips]"
            } else {
                ""
            }
        );
        let across = p.str("columns").ok()?;
        if !across.is_empty() {
            let metric = p.str("metric").ok()?;
            if let Some((header, body)) = pivot(t, across, metric, "±") {
                let name = METRICS
                    .iter()
                    .find(|m| m.0 == metric)
                    .map_or(metric.to_string(), metric_header);
                out.push_str(&format!("{name}:\n\n"));
                out.push_str(&md_table(&header, &body));
                out.push_str("\nAll metrics:\n\n");
            }
        }
        let mut header = axes.clone();
        header.push("n".into());
        header.extend(metrics.iter().map(metric_header));
        out.push_str(&md_table(&header, &rows(t, &axes, &metrics, "±")?));
        Some(out)
    }
    fn report(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let across = p.str("columns").ok()?;
        let (header, body) = if across.is_empty() {
            let axes = axis_columns(t);
            let metrics = present_metrics(t, Some("_mean"));
            let mut header = axes.clone();
            header.push("n".into());
            header.extend(metrics.iter().map(metric_header));
            (header, rows(t, &axes, &metrics, "+-")?)
        } else {
            pivot(t, across, p.str("metric").ok()?, "+-")?
        };
        let mut width = vec![0; header.len()];
        for cells in std::iter::once(&header).chain(&body) {
            for (w, c) in width.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let what = if across.is_empty() {
            String::new()
        } else {
            let metric = p.str("metric").ok()?;
            let m = METRICS.iter().find(|m| m.0 == metric)?;
            format!("{}, ", metric_header(m))
        };
        let base = if t.column_by_name("acc_base").is_some() {
            " [majority-class baseline]"
        } else {
            ""
        };
        let mut out = format!(
            "{} split, {what}mean +- sd over `{}`{base}\n{}",
            p.str("split").ok()?,
            p.str("over").ok()?,
            line(&header)
        );
        for cells in &body {
            out.push('\n');
            out.push_str(&line(cells));
        }
        Some(out)
    }
}

impl Stage for Aggregate {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let over = ctx.params.str("over")?;
        let want = ctx.params.str("split")?;
        // Inputs from several stages (Table 2: one per modality) get a `stage` axis.
        let bases: Vec<String> = ctx.input_names.iter().map(|n| parse_variant(n).0).collect();
        let several = bases.iter().any(|b| *b != bases[0]);
        // Groups in the order their first variant comes, which is the matrix's own order.
        let mut groups: Vec<Group> = Vec::new();
        for ((t, name), base) in ctx.inputs.iter().zip(ctx.input_names).zip(&bases) {
            let (_, axes) = parse_variant(name);
            let mut key: Vec<(String, String)> = Vec::new();
            if several {
                key.push(("stage".into(), base.clone()));
            }
            key.extend(axes.into_iter().filter(|(k, _)| k != over));
            let split = str_col(t, "split")?;
            let row = (0..t.num_rows())
                .find(|&r| split.value(r) == want)
                .ok_or_else(|| StageError::Input(format!("{name} has no `{want}` split")))?;
            let (m, b) = (metric_row(t, row, ""), metric_row(t, row, "base_"));
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => {
                    g.1.push(m);
                    g.2.push(b);
                }
                None => groups.push((key, vec![m], vec![b])),
            }
        }
        // Axis names in first-seen order over all groups (stages may have different axes).
        let mut axes: Vec<String> = Vec::new();
        for (k, _, _) in &groups {
            for (a, _) in k {
                if !axes.contains(a) {
                    axes.push(a.clone());
                }
            }
        }
        let mut cols: Vec<(String, arrow::array::ArrayRef)> = Vec::new();
        for a in &axes {
            let v: Vec<String> = groups
                .iter()
                .map(|(k, _, _)| {
                    k.iter()
                        .find(|x| x.0 == *a)
                        .map(|x| x.1.clone())
                        .unwrap_or_default()
                })
                .collect();
            cols.push((a.clone(), strings(&v)));
        }
        cols.push((
            "n".into(),
            i64s(groups.iter().map(|g| Some(g.1.len() as i64)).collect()),
        ));
        for (k, c) in METRICS.iter().enumerate() {
            if !groups.iter().any(|g| g.1.iter().any(|m| m[k].is_some())) {
                continue;
            }
            let stats: Vec<Option<(f64, f64)>> = groups
                .iter()
                .map(|g| {
                    let v: Vec<f64> = g.1.iter().filter_map(|m| m[k]).collect();
                    (!v.is_empty()).then(|| mean_sd(&v))
                })
                .collect();
            cols.push((
                format!("{}_mean", c.0),
                f64s(stats.iter().map(|s| s.map(|s| s.0)).collect()),
            ));
            cols.push((
                format!("{}_sd", c.0),
                f64s(stats.iter().map(|s| s.map(|s| s.1)).collect()),
            ));
            // A metric can be undefined for some variants (Corr of constant predictions): its
            // own count, next to the row's `n`.
            cols.push((
                format!("{}_n", c.0),
                i64s(
                    groups
                        .iter()
                        .map(|g| Some(g.1.iter().filter(|m| m[k].is_some()).count() as i64))
                        .collect(),
                ),
            ));
            if groups.iter().any(|g| g.2.iter().any(|m| m[k].is_some())) {
                let base: Vec<Option<f64>> = groups
                    .iter()
                    .map(|g| {
                        let v: Vec<f64> = g.2.iter().filter_map(|m| m[k]).collect();
                        (!v.is_empty()).then(|| mean_sd(&v).0)
                    })
                    .collect();
                cols.push((format!("{}_base", c.0), f64s(base)));
            }
        }
        let table = batch(cols.iter().map(|(n, a)| (n.as_str(), a.clone())).collect())?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_and_stats() {
        let (b, a) = parse_variant("evaluate[fusion=concat,seed=3]");
        assert_eq!(b, "evaluate");
        assert_eq!(
            a,
            vec![
                ("fusion".into(), "concat".into()),
                ("seed".into(), "3".into())
            ]
        );
        assert_eq!(parse_variant("x"), ("x".to_string(), vec![]));
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        // sample sd of 1..4: sqrt(5/3)
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    /// One seed per row: the mean alone, no "± 0.00"; units on the metric columns only.
    #[test]
    fn one_value_has_no_spread_and_units_sit_on_their_columns() {
        let t = batch(vec![
            ("model", strings(&["a", "b"])),
            ("n", i64s(vec![Some(1), Some(3)])),
            ("acc_mean", f64s(vec![Some(0.5), Some(0.6)])),
            ("acc_sd", f64s(vec![Some(0.0), Some(0.1)])),
            ("mae_mean", f64s(vec![Some(0.25), Some(0.3)])),
            ("mae_sd", f64s(vec![Some(0.0), Some(0.02)])),
        ])
        .unwrap();
        let mut p = Params::default();
        for (k, v) in [
            ("over", "seed"),
            ("split", "test"),
            ("columns", ""),
            ("metric", "acc"),
        ] {
            p.0.insert(k.into(), serde_json::json!(v));
        }
        let md = Aggregate.markdown(&p, &t).unwrap();
        assert!(md.contains("| model | n | Acc (%) | MAE |"), "{md}");
        assert!(md.contains("| a | 1 | 50.00 | 0.250 |"), "{md}");
        assert!(
            md.contains("| b | 3 | 60.00 ± 10.00 | 0.300 ± 0.020 |"),
            "{md}"
        );
        assert!(
            md.starts_with("test split, mean ± sd over `seed`\n"),
            "{md}"
        );
        let text = Aggregate.report(&p, &t).unwrap();
        assert!(
            text.contains("60.00 +- 10.00") && !text.contains("50.00 +-"),
            "{text}"
        );
    }
}
