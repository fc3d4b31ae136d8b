//! The run history: `pipeline runs`, `pipeline metrics diff`, and the overrides that reading
//! commands take over from the last run of the same pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Result};
use rusqlite::OptionalExtension;
use serde_json::{json, Value as J};

use crate::config::Plan;
use crate::db::Db;
use crate::store::Store;

/// Every stage's params as `stage.param` -> value: what `metrics diff` compares.
pub fn plan_params(plan: &Plan) -> J {
    let mut m = serde_json::Map::new();
    for s in &plan.stages {
        for (k, v) in &s.params.0 {
            m.insert(format!("{}.{k}", s.name), v.clone());
        }
    }
    J::Object(m)
}

/// One run as `pipeline runs` shows it.
#[derive(serde::Serialize)]
pub struct Run {
    pub id: i64,
    pub started: f64,
    pub finished: Option<f64>,
    pub pipeline: String,
    pub command: String,
    pub sets: Vec<String>,
    pub exit_code: Option<i64>,
    /// Stage outcomes: ran, cached, failed, shard.
    pub stages: BTreeMap<String, i64>,
}

fn read_runs(db: &Db, pipeline: Option<&str>, limit: i64) -> Result<Vec<Run>> {
    let mut st = db.conn.prepare(
        "SELECT r.id, r.started, r.finished, r.pipeline, r.argv, r.exit_code, i.sets
         FROM runs r LEFT JOIN run_info i ON i.run_id = r.id
         WHERE ?1 IS NULL OR r.pipeline = ?1 ORDER BY r.id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(rusqlite::params![pipeline, limit], |r| {
        Ok(Run {
            id: r.get(0)?,
            started: r.get(1)?,
            finished: r.get(2)?,
            pipeline: r.get(3)?,
            command: r.get(4)?,
            exit_code: r.get(5)?,
            sets: r
                .get::<_, Option<String>>(6)?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            stages: BTreeMap::new(),
        })
    })?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut counts = db.conn.prepare_cached(
        "SELECT outcome, COUNT(*) FROM run_stages WHERE run_id = ?1 GROUP BY outcome",
    )?;
    for r in &mut out {
        for c in counts.query_map([r.id], |x| Ok((x.get(0)?, x.get(1)?)))? {
            let (o, n): (String, i64) = c?;
            r.stages.insert(o, n);
        }
    }
    out.reverse();
    Ok(out)
}

/// `pipeline runs`: the last `limit` runs, oldest first.
pub fn list(cache: &Path, pipeline: Option<&str>, limit: i64, as_json: bool) -> Result<i32> {
    let db = Db::open(cache)?;
    let runs = read_runs(&db, pipeline, limit)?;
    if as_json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(0);
    }
    let mut rows = vec![[
        "run",
        "started (UTC)",
        "exit",
        "ran",
        "cached",
        "failed",
        "pipeline",
        "overrides",
    ]
    .map(String::from)
    .to_vec()];
    for r in &runs {
        let n = |k: &str| r.stages.get(k).copied().unwrap_or(0);
        let sets: Vec<String> = r.sets.iter().map(|s| format!("--set {s}")).collect();
        rows.push(vec![
            r.id.to_string(),
            utc(r.started),
            r.exit_code.map_or("-".to_string(), |c| c.to_string()),
            (n("ran") + n("shard")).to_string(),
            n("cached").to_string(),
            n("failed").to_string(),
            r.pipeline.clone(),
            sets.join(" "),
        ]);
    }
    print!("{}", crate::metrics::aligned(&rows));
    Ok(0)
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time, in UTC.
pub fn utc(t: f64) -> String {
    let secs = t as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The overrides of the last `run` of `pipeline`, with its id; None when there is no index yet
/// or no such run.
pub fn last_sets(cache: &Path, pipeline: &str) -> Result<Option<(i64, Vec<String>)>> {
    if !cache.join("index.sqlite").exists() {
        return Ok(None);
    }
    let db = Db::open(cache)?;
    let row: Option<(i64, String)> = db
        .conn
        .query_row(
            "SELECT r.id, i.sets FROM runs r JOIN run_info i ON i.run_id = r.id
             WHERE r.pipeline = ?1 ORDER BY r.id DESC LIMIT 1",
            [pipeline],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(id, s)| (id, serde_json::from_str(&s).unwrap_or_default())))
}

/// `pipeline metrics diff [A [B]]`: the params that differ between two runs and each metric's
/// values and change. Without ids, the last two runs of `pipeline`; with one, that run against
/// the last.
pub fn diff(cache: &Path, pipeline: &str, ids: &[i64], as_json: bool) -> Result<i32> {
    let db = Db::open(cache)?;
    let store = Store::open(cache)?;
    let (a, b) = match ids {
        [a, b] => (*a, *b),
        [a] => (*a, last_run(&db, pipeline, 0)?),
        [] => (last_run(&db, pipeline, 1)?, last_run(&db, pipeline, 0)?),
        _ => return Err(anyhow!("metrics diff takes at most two run ids")),
    };
    let (pa, pb) = (run_params(&db, a)?, run_params(&db, b)?);
    let names: BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    let params: Vec<(String, J, J)> = names
        .into_iter()
        .filter(|k| pa.get(*k) != pb.get(*k))
        .map(|k| {
            let v = |m: &serde_json::Map<String, J>| m.get(k).cloned().unwrap_or(J::Null);
            (k.clone(), v(&pa), v(&pb))
        })
        .collect();
    let (ma, mb) = (
        crate::metrics::run_metrics(&db, &store, a)?,
        crate::metrics::run_metrics(&db, &store, b)?,
    );
    let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    if as_json {
        let metrics: Vec<J> = names
            .iter()
            .map(|k| {
                let (x, y) = (ma.get(*k).copied(), mb.get(*k).copied());
                let delta = x.zip(y).map(|(x, y)| y - x);
                json!({"metric": k, "a": x, "b": y, "delta": delta})
            })
            .collect();
        let ps: Vec<J> = params
            .iter()
            .map(|(k, x, y)| json!({"param": k, "a": x, "b": y}))
            .collect();
        println!(
            "{}",
            json!({"a": a, "b": b, "params": ps, "metrics": metrics})
        );
        return Ok(0);
    }
    println!("run {a} -> run {b}");
    if params.is_empty() {
        println!("\nno param differs");
    } else {
        let mut rows = vec![vec![
            "param".to_string(),
            format!("run {a}"),
            format!("run {b}"),
        ]];
        rows.extend(
            params
                .iter()
                .map(|(k, x, y)| vec![k.clone(), x.to_string(), y.to_string()]),
        );
        print!("\n{}", crate::metrics::aligned(&rows));
    }
    if names.is_empty() {
        println!("\nneither run recorded an evaluated model (evaluate, linear_probe)");
        return Ok(0);
    }
    let mut rows = vec![vec![
        "stage/split/metric".to_string(),
        format!("run {a}"),
        format!("run {b}"),
        "change".to_string(),
    ]];
    for k in names {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let (x, y) = (ma.get(k).copied(), mb.get(k).copied());
        let change = x
            .zip(y)
            .map_or("-".to_string(), |(x, y)| format!("{:+.4}", y - x));
        rows.push(vec![k.clone(), cell(x), cell(y), change]);
    }
    print!("\n{}", crate::metrics::aligned(&rows));
    Ok(0)
}

/// The id of the `back`-th last run of `pipeline` (0: the last).
fn last_run(db: &Db, pipeline: &str, back: i64) -> Result<i64> {
    db.conn
        .query_row(
            "SELECT r.id FROM runs r JOIN run_info i ON i.run_id = r.id
             WHERE r.pipeline = ?1 ORDER BY r.id DESC LIMIT 1 OFFSET ?2",
            rusqlite::params![pipeline, back],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| {
            anyhow!(
                "{pipeline} has fewer than {} recorded run(s); `pipeline runs` lists them",
                back + 1
            )
        })
}

fn run_params(db: &Db, run: i64) -> Result<serde_json::Map<String, J>> {
    let text: Option<String> = db
        .conn
        .query_row(
            "SELECT params FROM run_info WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .optional()?;
    let text =
        text.ok_or_else(|| anyhow!("no run {run} with recorded params (`pipeline runs`)"))?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}
