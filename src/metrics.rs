//! `pipeline metrics`: the metrics of every evaluated model (an `evaluate` or `linear_probe`
//! stage, each matrix variant on its own) and split, beside the majority-class baseline on the
//! same clips. Naming an `aggregate` or `compare` stage lists the models it gathers. `--json` prints one
//! object per model and split, for scripts and notebooks.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use serde_json::{json, Map, Value};

use crate::db::Db;
use crate::run::Env;

/// Stage kinds whose tables hold per-split metrics of one model.
const EVALUATED: [&str; 2] = ["evaluate", "linear_probe"];

/// One model's metrics on one split.
struct Line {
    stage: String,
    variant: Map<String, Value>,
    split: String,
    metrics: BTreeMap<&'static str, f64>,
    baseline: BTreeMap<&'static str, f64>,
}

pub fn metrics(env: &Env, targets: &[String], json_out: bool) -> Result<i32> {
    let chosen = select(env, targets)?;
    let mut db = Db::open(&env.cache)?;
    let all: Vec<usize> = (0..env.plan.stages.len()).collect();
    let planned = env.plan_state(&mut db, &all)?;
    let mut lines = Vec::new();
    let mut missing = Vec::new();
    for p in planned.iter().filter(|p| chosen.contains(&p.idx)) {
        let s = &env.plan.stages[p.idx];
        let Some(a) = &p.artifact else {
            missing.push(s.name.clone());
            continue;
        };
        let t = env.store.get_table(&a.object)?;
        let variant: Map<String, Value> = s.variant.iter().cloned().collect();
        lines.extend(lines_of(&s.base, &variant, &t));
    }
    if json_out {
        for l in &lines {
            let v = json!({"stage": l.stage, "variant": l.variant, "split": l.split,
                           "metrics": l.metrics, "baseline": l.baseline});
            println!("{v}");
        }
    } else {
        print!("{}", text_table(&lines));
    }
    if !missing.is_empty() {
        eprintln!(
            "not computed yet ({}): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(if lines.is_empty() && !missing.is_empty() {
        1
    } else {
        0
    })
}

/// The evaluated stages named (all of them when none are), an aggregate standing for its
/// inputs.
fn select(env: &Env, targets: &[String]) -> Result<Vec<usize>> {
    let plan = env.plan;
    let evaluated = |i: usize| EVALUATED.contains(&plan.stages[i].kind.as_str());
    if targets.is_empty() || targets.iter().any(|t| t == "all") {
        return Ok((0..plan.stages.len()).filter(|&i| evaluated(i)).collect());
    }
    let mut out: Vec<usize> = Vec::new();
    for t in targets {
        let hits: Vec<usize> = (0..plan.stages.len())
            .filter(|&i| plan.stages[i].base == *t || plan.stages[i].name == *t)
            .collect();
        if hits.is_empty() {
            bail!("no stage `{t}` in {}", plan.file.display());
        }
        for i in hits {
            let s = &plan.stages[i];
            if evaluated(i) {
                out.push(i);
            } else if s.kind == "aggregate" || s.kind == "compare" {
                out.extend(s.inputs.iter().filter_map(|n| plan.index.get(n).copied()));
            } else {
                bail!(
                    "stage `{}` is a {} stage: name an evaluate, linear_probe, aggregate or compare stage",
                    s.name,
                    s.kind
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn lines_of(stage: &str, variant: &Map<String, Value>, t: &RecordBatch) -> Vec<Line> {
    let Ok(split) = stages::table::str_col(t, "split") else {
        return Vec::new();
    };
    let value = |name: &str, r: usize| -> Option<f64> {
        let c = stages::table::f64_col(t, name).ok()?;
        (!c.is_null(r))
            .then(|| c.value(r))
            .filter(|v| v.is_finite())
    };
    (0..t.num_rows())
        .map(|r| {
            let mut metrics = BTreeMap::new();
            let mut baseline = BTreeMap::new();
            for m in stages::metrics::common::METRICS.iter() {
                if let Some(v) = value(m.0, r) {
                    metrics.insert(m.0, v);
                }
                if let Some(v) = value(&format!("base_{}", m.0), r) {
                    baseline.insert(m.0, v);
                }
            }
            Line {
                stage: stage.to_string(),
                variant: variant.clone(),
                split: split.value(r).to_string(),
                metrics,
                baseline,
            }
        })
        .collect()
}

fn variant_text(v: &Map<String, Value>) -> String {
    v.iter()
        .map(|(k, x)| match x {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Stage, variant, split, then each metric any line has (in the evaluation tables' order), as
/// `value [baseline]`; percentages for fractions.
fn text_table(lines: &[Line]) -> String {
    let metrics: Vec<&stages::metrics::common::Metric> = stages::metrics::common::METRICS
        .iter()
        .filter(|m| lines.iter().any(|l| l.metrics.contains_key(m.0)))
        .collect();
    let mut rows: Vec<Vec<String>> = vec![["stage", "variant", "split"]
        .iter()
        .map(|s| s.to_string())
        .chain(metrics.iter().map(|m| stages::metrics::common::header(m)))
        .collect()];
    for l in lines {
        let mut row = vec![l.stage.clone(), variant_text(&l.variant), l.split.clone()];
        for m in &metrics {
            let fmt = |v: f64| stages::metrics::common::fmt_metric(m, v);
            row.push(match (l.metrics.get(m.0), l.baseline.get(m.0)) {
                (Some(&v), Some(&b)) => format!("{} [{}]", fmt(v), fmt(b)),
                (Some(&v), None) => fmt(v),
                _ => "-".into(),
            });
        }
        rows.push(row);
    }
    let mut out = aligned(&rows);
    if !lines.is_empty() {
        out.push_str("[x]: the majority-class baseline on the same split (Acc, F1, UA in %)\n");
    }
    out
}

/// Every metric of the evaluated models a run used (ran or cached), as
/// `stage/split/metric` -> value, for `metrics diff`.
pub(crate) fn run_metrics(
    db: &Db,
    store: &crate::store::Store,
    run: i64,
) -> Result<BTreeMap<String, f64>> {
    let mut st = db
        .conn
        .prepare("SELECT stage, key FROM run_stages WHERE run_id = ?1 AND key IS NOT NULL")?;
    let rows = st
        .query_map([run], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = BTreeMap::new();
    for (stage, key) in rows {
        let Some(a) = db.artifact(&key)? else {
            continue;
        };
        if !EVALUATED.contains(&a.kind.as_str()) {
            continue;
        }
        let t = store.get_table(&a.object)?;
        for l in lines_of(&stage, &Map::new(), &t) {
            for (m, v) in &l.metrics {
                out.insert(format!("{}/{}/{m}", l.stage, l.split), *v);
            }
        }
    }
    Ok(out)
}

/// Rows as columns padded to their widest cell, two spaces apart.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    let mut width = vec![0usize; rows.iter().map(Vec::len).max().unwrap_or(0)];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
