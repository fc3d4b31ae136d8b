//! `aggregate`: mean and standard deviation over seeds (or any matrix axis) of the `evaluate`
//! variants it gathers, one row per remaining combination of axes.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, f64_col, f64s, i64s, str_col, strings};
use crate::{Output, Params, RunCtx, Stage, StageError};

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
];

const METRICS: [&str; 3] = ["acc", "f1_macro", "f1_weighted"];

/// `name[a=1,b=x]` -> (name, [(a, 1), (b, x)]).
pub fn parse_variant(name: &str) -> (String, Vec<(String, String)>) {
    match name.split_once('[') {
        Some((base, rest)) => {
            let axes = rest
                .trim_end_matches(']')
                .split(',')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            (base.to_string(), axes)
        }
        None => (name.to_string(), Vec::new()),
    }
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

/// Each row's cells: its axis values, `n`, and every metric as `mean <pm> sd` in %.
fn rows(t: &RecordBatch, axes: &[String], pm: &str) -> Option<Vec<Vec<String>>> {
    let n = crate::table::col::<arrow::array::Int64Array>(t, "n").ok()?;
    let mut out = Vec::with_capacity(t.num_rows());
    for r in 0..t.num_rows() {
        let mut cells: Vec<String> = axes
            .iter()
            .map(|a| {
                str_col(t, a)
                    .map(|c| c.value(r).to_string())
                    .unwrap_or_default()
            })
            .collect();
        cells.push(n.value(r).to_string());
        for c in METRICS {
            let m = f64_col(t, &format!("{c}_mean")).ok()?.value(r);
            let s = f64_col(t, &format!("{c}_sd")).ok()?.value(r);
            cells.push(format!("{:.2} {pm} {:.2}", 100.0 * m, 100.0 * s));
        }
        out.push(cells);
    }
    Some(out)
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

impl Stage for Aggregate {
    fn kind(&self) -> &'static str {
        "aggregate"
    }
    fn version(&self) -> u32 {
        1
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
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let over = ctx.params.str("over")?;
        let want = ctx.params.str("split")?;
        // Group key: the other axes, in name order.
        let mut groups: BTreeMap<Vec<(String, String)>, Vec<[f64; 3]>> = BTreeMap::new();
        for (t, name) in ctx.inputs.iter().zip(ctx.input_names) {
            let (_, axes) = parse_variant(name);
            let key: Vec<(String, String)> = axes.into_iter().filter(|(k, _)| k != over).collect();
            let split = str_col(t, "split")?;
            let row = (0..t.num_rows())
                .find(|&r| split.value(r) == want)
                .ok_or_else(|| StageError::Input(format!("{name} has no `{want}` split")))?;
            let mut m = [0.0; 3];
            for (k, c) in METRICS.iter().enumerate() {
                m[k] = f64_col(t, c)?.value(row);
            }
            groups.entry(key).or_default().push(m);
        }
        let axes: Vec<String> = groups
            .keys()
            .next()
            .map(|k| k.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        let mut cols: Vec<(String, arrow::array::ArrayRef)> = Vec::new();
        for (i, a) in axes.iter().enumerate() {
            let v: Vec<String> = groups
                .keys()
                .map(|k| k.get(i).map(|x| x.1.clone()).unwrap_or_default())
                .collect();
            cols.push((a.clone(), strings(&v)));
        }
        cols.push((
            "n".into(),
            i64s(groups.values().map(|v| Some(v.len() as i64)).collect()),
        ));
        for (k, c) in METRICS.iter().enumerate() {
            let stats: Vec<(f64, f64)> = groups
                .values()
                .map(|v| mean_sd(&v.iter().map(|m| m[k]).collect::<Vec<_>>()))
                .collect();
            cols.push((
                format!("{c}_mean"),
                f64s(stats.iter().map(|s| Some(s.0)).collect()),
            ));
            cols.push((
                format!("{c}_sd"),
                f64s(stats.iter().map(|s| Some(s.1)).collect()),
            ));
        }
        let table = batch(cols.iter().map(|(n, a)| (n.as_str(), a.clone())).collect())?;
        Ok(Output {
            table,
            errors: vec![],
        })
    }
    fn reports(&self) -> bool {
        true
    }
    fn markdown(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let axes = axis_columns(t);
        let mut out = format!(
            "{} split, mean ± sd over `{}` (%)\n\n| {} | n | Acc | F1 (macro) | F1 (weighted) |\n|{}---|---|---|---|\n",
            p.str("split").ok()?,
            p.str("over").ok()?,
            axes.join(" | "),
            "---|".repeat(axes.len())
        );
        for cells in rows(t, &axes, "±")? {
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        Some(out)
    }
    fn report(&self, p: &Params, t: &RecordBatch) -> Option<String> {
        let axes = axis_columns(t);
        let mut out = format!(
            "{} split, mean +- sd over `{}`\n{}  n  acc              F1(macro)        F1(weighted)",
            p.str("split").ok()?,
            p.str("over").ok()?,
            axes.join("  ")
        );
        for line in rows(t, &axes, "+-")? {
            out.push('\n');
            out.push_str(&line.join("  "));
        }
        Some(out)
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
}
