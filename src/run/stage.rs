//! One stage run: under its key's lock, inputs loaded, the stage computed whole or item by
//! item, its artifact stored and recorded.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use arrow::array::RecordBatch;
use serde_json::json;
use stages::{ItemError, Mode as StageMode, RunCtx};

use super::items::{run_items, ItemRun, Shard, StoreShards};
use super::{Env, Outcome, StageRun, EXIT_FAILED, EXIT_OK};
use crate::db::{now, Artifact, Db};
use crate::keys::{self, short, StageKey};
use crate::report::Reporter;

/// `pipeline exec`: one stage, on its own, whose inputs are already in the cache: what a
/// cluster job runs. With `shard`, only that shard's items are computed and cached; the
/// stage's own job gathers them into the artifact afterwards. A partial stage (some items
/// failed) exits 0, so that jobs depending on it start; its errors are in the artifact's
/// record as with `run`.
pub fn exec_stage(
    env: &Env,
    name: &str,
    expect_key: Option<&str>,
    shard: Option<Shard>,
    rep: &Reporter,
) -> Result<i32> {
    let plan = env.plan;
    let Some(&idx) = plan.index.get(name) else {
        let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no stage `{name}` in {}{}",
            plan.file.display(),
            crate::config::did_you_mean(name, names.into_iter())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
    };
    let selected = plan.select(&[name.to_string()]).map_err(|e| anyhow!(e))?;
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &selected)?;
    let mut keyof: HashMap<usize, StageKey> = HashMap::new();
    let mut present: HashMap<usize, bool> = HashMap::new();
    for p in planned {
        let k = p
            .key
            .map_err(|e| anyhow!("{}: cannot compute its key: {e}", plan.stages[p.idx].name))?;
        present.insert(p.idx, p.artifact.is_some());
        keyof.insert(p.idx, k);
    }
    let key = keyof[&idx].clone();
    if let Some(want) = expect_key {
        if want != key.key {
            anyhow::bail!(
                "{name}: its key is now {} but the job was submitted for {}: the pipeline, its \
                 params or its input files changed after `submit`; submit again",
                short(&key.key),
                short(want)
            );
        }
    }
    let s = &plan.stages[idx];
    let mut input_keys = Vec::new();
    for n in &s.inputs {
        let j = plan.index[n];
        if !present[&j] {
            anyhow::bail!(
                "{name}: input `{n}` (key {}) is not in the cache at {}; run or submit it first",
                short(&keyof[&j].key),
                env.cache.display()
            );
        }
        input_keys.push(keyof[&j].key.clone());
    }
    let run_id = db.begin_run(
        &env.pipeline_id,
        &std::env::args().collect::<Vec<_>>().join(" "),
    )?;
    if present[&idx] && shard.is_none() {
        rep.stage_done(name, Outcome::Cached.as_str(), &json!({"key": key.key}), "");
        db.record_stage(
            run_id,
            (name, Some(&key.key)),
            ("cached", 0.0),
            (0, 0, 0),
            None,
        )?;
        db.end_run(run_id, EXIT_OK)?;
        return Ok(EXIT_OK);
    }
    let tables = Mutex::new(HashMap::new());
    let res = execute(env, rep, idx, &key, &input_keys, &tables, shard);
    let label = match shard {
        Some(sh) => format!("{name} shard {}/{}", sh.index, sh.count),
        None => name.to_string(),
    };
    let code = match &res {
        Ok(sr) => {
            rep.stage_done(
                &label,
                sr.outcome.as_str(),
                &json!({"secs": sr.secs, "computed": sr.computed, "reused": sr.reused, "failed": sr.errors.len(), "key": key.key}),
                &format!(
                    "{:.2}s  {} computed, {} reused, {} failed",
                    sr.secs,
                    sr.computed,
                    sr.reused,
                    sr.errors.len()
                ),
            );
            db.record_stage(
                run_id,
                (name, Some(&key.key)),
                (sr.outcome.as_str(), sr.secs),
                (sr.computed, sr.reused, sr.errors.len()),
                None,
            )?;
            EXIT_OK
        }
        Err(e) => {
            let msg = format!("{e:#}");
            rep.stage_done(&label, "failed", &json!({"error": msg}), &msg);
            db.record_stage(
                run_id,
                (name, Some(&key.key)),
                ("failed", 0.0),
                (0, 0, 0),
                Some(&msg),
            )?;
            EXIT_FAILED
        }
    };
    db.end_run(run_id, code)?;
    Ok(code)
}

pub(super) fn update_state(db: &Db, pipeline: &str, stage: &str, k: &StageKey) -> Result<()> {
    match db.stage_state(pipeline, stage)? {
        Some((old, _)) if old == k.key => Ok(()),
        _ => db.set_stage_state(pipeline, stage, &k.key, &k.manifest.to_string()),
    }
}

/// Why a stage will run: what changed since it last ran, or that it never did.
pub fn explain(db: &Db, pipeline: &str, stage: &str, k: &StageKey) -> Result<Vec<String>> {
    Ok(match db.stage_state(pipeline, stage)? {
        None => vec!["never run".into()],
        Some((old_key, _)) if old_key == k.key => vec!["artifact missing from the cache".into()],
        Some((_, m)) => {
            let old: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
            let r = keys::reasons(&old, &k.manifest);
            if r.is_empty() {
                vec!["key changed".into()]
            } else {
                r
            }
        }
    })
}

pub(super) fn execute(
    env: &Env,
    rep: &Reporter,
    idx: usize,
    key: &StageKey,
    input_keys: &[String],
    tables: &Mutex<HashMap<String, Arc<RecordBatch>>>,
    shard: Option<Shard>,
) -> Result<StageRun> {
    let t0 = Instant::now();
    let s = &env.plan.stages[idx];
    let stage = env.reg.get(&s.kind).expect("validated kind");
    let mut db = Db::open(&env.cache)?;
    // Shards of one stage run side by side; only whoever records the artifact takes the lock.
    let lock = File::create(env.store.lock_path(&key.key))?;
    if shard.is_none() {
        lock.lock().context("locking the stage key")?;
    }
    if db
        .artifact(&key.key)?
        .is_some_and(|a| env.store.object_path(&a.object).exists())
    {
        // Another process computed it while we waited for the lock.
        let errors = db.item_errors(&key.key)?;
        update_state(&db, &env.pipeline_id, &s.name, key)?;
        return Ok(StageRun::cached(t0.elapsed().as_secs_f64(), errors));
    }
    let inputs = load_inputs(env, &db, input_keys, tables)?;
    let shards = StoreShards(&env.store);
    let ctx = RunCtx {
        params: &s.params,
        root: &env.plan.root,
        inputs,
        input_names: &s.inputs,
        files: &key.files,
        shards: &shards,
    };
    let mode = stage.mode(&s.params);
    if shard.is_some() && matches!(mode, StageMode::Table) {
        anyhow::bail!(
            "{}: a `{}` stage computes one table, not per-clip items, so it cannot be split into shards",
            s.name,
            s.kind
        );
    }
    let (table, errors, computed, reused) = match mode {
        StageMode::Table => {
            rep.stage_start(&s.name, &key.key, None);
            let out = stage
                .run(&ctx)
                .map_err(|e| anyhow!("{} ({}:{}): {e}", s.name, env.plan.file.display(), s.line))?;
            (out.table, out.errors, 0, 0)
        }
        StageMode::PerItem { id_column, reads } | StageMode::Sharded { id_column, reads } => {
            let job = ItemRun {
                stage,
                ctx: &ctx,
                rep,
                name: &s.name,
                key,
                id_column,
                reads,
                shard_store: matches!(mode, StageMode::Sharded { .. }).then_some(&env.store),
            };
            run_items(&job, &mut db, shard)?
        }
    };
    if shard.is_some() {
        // The items are in the index; the job that gathers them records the artifact.
        return Ok(StageRun {
            outcome: Outcome::Shard,
            secs: t0.elapsed().as_secs_f64(),
            computed,
            reused,
            errors,
        });
    }
    if matches!(stage.mode(&s.params), StageMode::Table) {
        // Per-item stages report their failures as they happen.
        for e in &errors {
            rep.item_error(&s.name, e);
        }
    }
    record_artifact(env, &mut db, idx, key, (&table, &errors))?;
    update_state(&db, &env.pipeline_id, &s.name, key)?;
    tables
        .lock()
        .unwrap()
        .insert(key.key.clone(), Arc::new(table));
    drop(lock);
    Ok(StageRun {
        outcome: Outcome::Ran,
        secs: t0.elapsed().as_secs_f64(),
        computed,
        reused,
        errors,
    })
}

/// The input tables, from this run's memory where an earlier stage left them, else the store.
fn load_inputs(
    env: &Env,
    db: &Db,
    input_keys: &[String],
    tables: &Mutex<HashMap<String, Arc<RecordBatch>>>,
) -> Result<Vec<Arc<RecordBatch>>> {
    let mut inputs = Vec::new();
    for k in input_keys {
        let cached = tables.lock().unwrap().get(k).cloned();
        let t = match cached {
            Some(t) => t,
            None => {
                let a = db.artifact(k)?.ok_or_else(|| {
                    anyhow!("input artifact {} vanished from the index", short(k))
                })?;
                let t = env.store.get_table(&a.object)?;
                tables.lock().unwrap().insert(k.clone(), t.clone());
                t
            }
        };
        inputs.push(t);
    }
    Ok(inputs)
}

/// Stores the table as an object, then records it in the index: the artifact exists only once
/// its object is durably in place.
fn record_artifact(
    env: &Env,
    db: &mut Db,
    idx: usize,
    key: &StageKey,
    (table, errors): (&RecordBatch, &[ItemError]),
) -> Result<()> {
    let s = &env.plan.stages[idx];
    let (object, bytes) = env.store.put_table(table)?;
    let schema = table
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ");
    db.put_artifact(
        &Artifact {
            key: key.key.clone(),
            stage: s.name.clone(),
            kind: s.kind.clone(),
            stage_id: key.stage_id.clone(),
            object,
            rows: table.num_rows() as i64,
            bytes: bytes as i64,
            schema,
            failed_items: errors.len() as i64,
            created: now(),
        },
        errors,
    )
}
