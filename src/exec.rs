//! Running a plan: decide fresh/stale from keys, then execute stale stages in dependency order,
//! `-j` at a time, with per-item work on the rayon pool.
//!
//! Crash safety: an artifact is recorded only after its object is durably in place, and each
//! finished item is committed on its own, so after kill -9 a rerun reuses every finished stage
//! and item. Concurrency: a stage is computed under an exclusive lock on its key, so a second
//! process waits and then reuses the first one's artifact instead of computing it again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rayon::prelude::*;
use serde_json::json;
use stages::{ItemError, Mode as StageMode, RunCtx, Stage};

use crate::config::Plan;
use crate::db::{now, Artifact, Db};
use crate::keys::{self, short, StageKey};
use crate::registry::Registry;
use crate::report::Reporter;
use crate::store::{decode_ipc, encode_ipc, Store};

pub struct RunOpts {
    pub targets: Vec<String>,
    pub jobs: usize,
    pub keep_going: bool,
    pub dry_run: bool,
    pub argv: String,
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;

/// The planned state of one selected stage.
pub struct Planned {
    pub idx: usize,
    pub key: Result<StageKey, String>,
    pub artifact: Option<Artifact>,
}

pub struct Env<'a> {
    pub plan: &'a Plan,
    pub reg: &'a Registry,
    pub cache: PathBuf,
    pub store: Store,
    /// The pipeline's name in the index (its path relative to the project root).
    pub pipeline_id: String,
}

impl Env<'_> {
    /// Keys and cache state for the selected stages, without running anything.
    pub fn plan_state(&self, db: &mut Db, selected: &[usize]) -> Result<Vec<Planned>> {
        let keys = keys::compute(self.plan, self.reg, db, selected)?;
        let mut out = Vec::new();
        for (idx, key) in keys {
            let artifact = match &key {
                Ok(k) => db
                    .artifact(&k.key)?
                    .filter(|a| self.store.object_path(&a.object).exists()),
                Err(_) => None,
            };
            out.push(Planned { idx, key, artifact });
        }
        Ok(out)
    }
}

/// What became of one stage in this run: its name, key, and result.
type Finished = (String, Option<String>, Result<StageRun, String>);

struct Done {
    idx: usize,
    result: Result<StageRun, String>,
}

struct StageRun {
    outcome: &'static str,
    secs: f64,
    computed: usize,
    reused: usize,
    errors: Vec<ItemError>,
}

pub fn run(env: &Env, opts: &RunOpts, rep: &Reporter) -> Result<i32> {
    let started = Instant::now();
    let plan = env.plan;
    let selected = plan.select(&opts.targets).map_err(|e| anyhow!(e))?;
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &selected)?;

    if opts.dry_run {
        for p in &planned {
            let s = &plan.stages[p.idx];
            let (state, why) = match (&p.key, &p.artifact) {
                (Err(e), _) => ("error", vec![e.clone()]),
                (Ok(_), Some(_)) => ("cached", vec![]),
                (Ok(k), None) => ("run", explain(&db, &env.pipeline_id, &s.name, k)?),
            };
            if rep.is_json() {
                rep.event(json!({"event": "plan", "stage": s.name, "state": state, "key": p.key.as_ref().ok().map(|k| &k.key), "reasons": why}));
            } else {
                println!(
                    "{state:<6} {}{}",
                    s.name,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", why.join("; "))
                    }
                );
            }
        }
        return Ok(EXIT_OK);
    }

    let run_id = db.begin_run(&env.pipeline_id, &opts.argv)?;
    let mut results: BTreeMap<usize, Finished> = BTreeMap::new();
    let mut todo: Vec<usize> = Vec::new();
    let mut keyof: HashMap<usize, StageKey> = HashMap::new();
    for p in planned {
        let name = plan.stages[p.idx].name.clone();
        match (p.key, p.artifact) {
            (Err(e), _) => {
                results.insert(p.idx, (name, None, Err(e)));
            }
            (Ok(k), Some(a)) => {
                let errors = if a.failed_items > 0 {
                    db.item_errors(&a.key)?
                } else {
                    Vec::new()
                };
                update_state(&db, &env.pipeline_id, &name, &k)?;
                results.insert(
                    p.idx,
                    (
                        name,
                        Some(k.key.clone()),
                        Ok(StageRun {
                            outcome: "cached",
                            secs: 0.0,
                            computed: 0,
                            reused: 0,
                            errors,
                        }),
                    ),
                );
                keyof.insert(p.idx, k);
            }
            (Ok(k), None) => {
                keyof.insert(p.idx, k);
                todo.push(p.idx);
            }
        }
    }
    for (name, _, r) in results.values() {
        match r {
            Ok(sr) if sr.errors.is_empty() => rep.stage_done(name, "cached", &json!({}), ""),
            Ok(sr) => rep.stage_done(
                name,
                "cached",
                &json!({"failed": sr.errors.len()}),
                &format!(
                    "({} items failed earlier; see `pipeline show {name}`)",
                    sr.errors.len()
                ),
            ),
            Err(e) => {
                rep.stage_done(name, "failed", &json!({"error": e}), e);
            }
        }
    }

    let tables: Mutex<HashMap<String, Arc<RecordBatch>>> = Mutex::new(HashMap::new());
    let (tx, rx) = mpsc::channel::<Done>();
    let mut running = 0usize;
    let mut stop = results.values().any(|r| r.2.is_err()) && !opts.keep_going;
    std::thread::scope(|scope| -> Result<()> {
        loop {
            // Start every stage whose inputs are all done, up to -j.
            let mut i = 0;
            while i < todo.len() && running < opts.jobs.max(1) && !stop {
                let idx = todo[i];
                let s = &plan.stages[idx];
                let inputs: Vec<usize> = s.inputs.iter().map(|n| plan.index[n]).collect();
                if inputs
                    .iter()
                    .any(|j| results.get(j).is_some_and(|r| r.2.is_err()))
                {
                    let bad = inputs
                        .iter()
                        .find(|j| results.get(j).is_some_and(|r| r.2.is_err()))
                        .unwrap();
                    let msg = format!("skipped: input `{}` failed", plan.stages[*bad].name);
                    rep.stage_done(&s.name, "skipped", &json!({"error": msg}), &msg);
                    results.insert(
                        idx,
                        (
                            s.name.clone(),
                            keyof.get(&idx).map(|k| k.key.clone()),
                            Err(msg),
                        ),
                    );
                    todo.remove(i);
                    continue;
                }
                if inputs
                    .iter()
                    .all(|j| results.get(j).is_some_and(|r| r.2.is_ok()))
                {
                    todo.remove(i);
                    running += 1;
                    let tx = tx.clone();
                    let key = keyof[&idx].clone();
                    let input_keys: Vec<String> =
                        inputs.iter().map(|j| keyof[j].key.clone()).collect();
                    let tables = &tables;
                    scope.spawn(move || {
                        // A panic inside a stage (a library's assertion) fails that stage like
                        // an error would; otherwise the run would wait for it forever.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            execute(env, rep, idx, &key, &input_keys, tables, None)
                                .map_err(|e| format!("{e:#}"))
                        }))
                        .unwrap_or_else(|p| Err(format!("the stage panicked: {}", panic_text(&p))));
                        let _ = tx.send(Done { idx, result });
                    });
                    continue;
                }
                i += 1;
            }
            if running == 0 {
                break;
            }
            let d = rx.recv().expect("workers hold a sender");
            running -= 1;
            let name = plan.stages[d.idx].name.clone();
            let key = keyof.get(&d.idx).map(|k| k.key.clone());
            match &d.result {
                Ok(sr) => {
                    let text = if sr.computed + sr.reused > 0 || !sr.errors.is_empty() {
                        format!(
                            "{:.2}s  {} computed, {} reused, {} failed",
                            sr.secs,
                            sr.computed,
                            sr.reused,
                            sr.errors.len()
                        )
                    } else {
                        format!("{:.2}s", sr.secs)
                    };
                    rep.stage_done(&name, sr.outcome, &json!({"secs": sr.secs, "computed": sr.computed, "reused": sr.reused, "failed": sr.errors.len(), "key": key}), &text);
                }
                Err(e) => {
                    rep.stage_done(&name, "failed", &json!({"error": e}), e);
                    if !opts.keep_going {
                        stop = true;
                    }
                }
            }
            results.insert(d.idx, (name, key, d.result));
        }
        Ok(())
    })?;
    for idx in todo {
        let name = plan.stages[idx].name.clone();
        rep.stage_done(
            &name,
            "skipped",
            &json!({"error": "not started: an earlier stage failed"}),
            "not started: an earlier stage failed (use --keep-going to run independent stages)",
        );
        results.insert(
            idx,
            (
                name,
                keyof.get(&idx).map(|k| k.key.clone()),
                Err("not started".into()),
            ),
        );
    }

    // Summary, history, exit code.
    let mut ran = Vec::new();
    let mut cached = Vec::new();
    let mut failed = Vec::new();
    let mut partial = Vec::new();
    let mut failed_items = 0;
    for (name, key, r) in results.values() {
        match r {
            Ok(sr) => {
                if sr.outcome == "cached" {
                    cached.push(name.clone())
                } else {
                    ran.push(name.clone())
                }
                if !sr.errors.is_empty() {
                    partial.push(name.clone());
                    failed_items += sr.errors.len();
                }
                db.record_stage(
                    run_id,
                    name,
                    key.as_deref(),
                    sr.outcome,
                    sr.secs,
                    (sr.computed, sr.reused, sr.errors.len()),
                    None,
                )?;
            }
            Err(e) => {
                failed.push(name.clone());
                db.record_stage(
                    run_id,
                    name,
                    key.as_deref(),
                    "failed",
                    0.0,
                    (0, 0, 0),
                    Some(e),
                )?;
            }
        }
    }
    let code = if !failed.is_empty() {
        EXIT_FAILED
    } else if !partial.is_empty() {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    };
    db.end_run(run_id, code)?;
    let secs = started.elapsed().as_secs_f64();
    print_reports(env, &db, &results, rep)?;
    if rep.is_json() {
        rep.event(json!({"summary": {"ran": ran, "cached": cached, "failed": failed, "partial": partial, "failed_items": failed_items, "exit_code": code, "secs": secs, "run": run_id}}));
    } else {
        let mut s = format!(
            "{} ran, {} cached, {} failed",
            ran.len(),
            cached.len(),
            failed.len()
        );
        if failed_items > 0 {
            s.push_str(&format!(
                "; {failed_items} item(s) failed in {} (partial; `pipeline show STAGE` lists them)",
                partial.join(", ")
            ));
        }
        println!("{s} in {secs:.3}s");
    }
    Ok(code)
}

/// The stages' own accounts of what they produced (dataset counts, metrics), in plan order,
/// for every selected stage that finished, whether it ran now or was cached. On a terminal a
/// grid's variants are left out where several of one stage ran (their aggregates, and
/// `pipeline report --variants`, cover them); JSON output has them all.
fn print_reports(
    env: &Env,
    db: &Db,
    results: &BTreeMap<usize, Finished>,
    rep: &Reporter,
) -> Result<()> {
    let mut per_base: HashMap<&str, usize> = HashMap::new();
    for idx in results.keys() {
        *per_base
            .entry(env.plan.stages[*idx].base.as_str())
            .or_default() += 1;
    }
    let mut skipped = 0;
    for (idx, (name, key, r)) in results {
        let (Ok(_), Some(key)) = (r, key) else {
            continue;
        };
        let s = &env.plan.stages[*idx];
        let Some(stage) = env.reg.get(&s.kind) else {
            continue;
        };
        if !rep.is_json() && s.name != s.base && per_base[s.base.as_str()] > 1 {
            skipped += usize::from(stage.reports());
            continue;
        }
        // Loading the table costs a read, so only for kinds that report at all.
        if !stage.reports() {
            continue;
        }
        let Some(a) = db.artifact(key)? else { continue };
        let table = env.store.get_table(&a.object)?;
        if let Some(text) = stage.report(&s.params, &table) {
            if rep.is_json() {
                rep.event(json!({"event": "report", "stage": name, "text": text}));
            } else {
                println!("{name}:\n{text}");
            }
        }
    }
    if skipped > 0 {
        println!(
            "({skipped} matrix variants' reports left out: `pipeline report --variants` has them)"
        );
    }
    Ok(())
}

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
        rep.stage_done(name, "cached", &json!({"key": key.key}), "");
        db.record_stage(run_id, name, Some(&key.key), "cached", 0.0, (0, 0, 0), None)?;
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
                sr.outcome,
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
                name,
                Some(&key.key),
                sr.outcome,
                sr.secs,
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
                name,
                Some(&key.key),
                "failed",
                0.0,
                (0, 0, 0),
                Some(&msg),
            )?;
            EXIT_FAILED
        }
    };
    db.end_run(run_id, code)?;
    Ok(code)
}

fn update_state(db: &Db, pipeline: &str, stage: &str, k: &StageKey) -> Result<()> {
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

fn execute(
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
        return Ok(StageRun {
            outcome: "cached",
            secs: t0.elapsed().as_secs_f64(),
            computed: 0,
            reused: 0,
            errors,
        });
    }
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
        StageMode::PerItem { id_column, reads } => run_items(
            stage, &ctx, &mut db, rep, &s.name, key, id_column, reads, None, shard,
        )?,
        StageMode::Sharded { id_column, reads } => run_items(
            stage,
            &ctx,
            &mut db,
            rep,
            &s.name,
            key,
            id_column,
            reads,
            Some(&env.store),
            shard,
        )?,
    };
    if shard.is_some() {
        // The items are in the index; the job that gathers them records the artifact.
        return Ok(StageRun {
            outcome: "shard",
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
    let (object, bytes) = env.store.put_table(&table)?;
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
        &errors,
    )?;
    update_state(&db, &env.pipeline_id, &s.name, key)?;
    tables
        .lock()
        .unwrap()
        .insert(key.key.clone(), Arc::new(table));
    drop(lock);
    Ok(StageRun {
        outcome: "ran",
        secs: t0.elapsed().as_secs_f64(),
        computed,
        reused,
        errors,
    })
}

/// Hash of the columns an item reads, in its row: the item's cache identity within the stage.
/// A stage with further inputs (`concat`) reads each one's row of the same id too, so those rows
/// are part of the identity; an input without the id column counts whole.
fn item_hashes(
    inputs: &[Arc<RecordBatch>],
    id_column: &str,
    reads: &[&str],
) -> Result<Vec<String>> {
    let t = &inputs[0];
    let opts = FormatOptions::default().with_null("\u{0}null");
    let mut fmts = Vec::new();
    for c in reads {
        let col = t
            .column_by_name(c)
            .ok_or_else(|| anyhow!("input has no column `{c}` that this stage reads"))?;
        fmts.push((c, ArrayFormatter::try_new(col.as_ref(), &opts)?));
    }
    // Per further input: its rows' text by id, or the whole table's text.
    let mut others: Vec<Result<HashMap<String, String>, String>> = Vec::new();
    for u in &inputs[1..] {
        let cols = u
            .schema()
            .fields()
            .iter()
            .zip(u.columns())
            .map(|(f, c)| {
                Ok((
                    f.name().clone(),
                    ArrayFormatter::try_new(c.as_ref(), &opts)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let row_text = |r: usize| -> String {
            cols.iter()
                .map(|(n, f)| format!("{n}\u{0}{}\u{0}", f.value(r)))
                .collect()
        };
        match u
            .column_by_name(id_column)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        {
            Some(ids) => others.push(Ok((0..u.num_rows())
                .map(|r| (ids.value(r).to_string(), row_text(r)))
                .collect())),
            None => others.push(Err((0..u.num_rows()).map(row_text).collect())),
        }
    }
    let ids = t
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>());
    Ok((0..t.num_rows())
        .map(|r| {
            let mut h = blake3::Hasher::new();
            for (c, f) in &fmts {
                h.update(c.as_bytes());
                h.update(&[0]);
                h.update(f.value(r).to_string().as_bytes());
                h.update(&[0]);
            }
            for (k, o) in others.iter().enumerate() {
                h.update(format!("\u{0}input{}\u{0}", k + 1).as_bytes());
                match o {
                    Ok(m) => {
                        let row = ids.and_then(|i| m.get(i.value(r)));
                        h.update(row.map_or("\u{0}absent", |s| s.as_str()).as_bytes());
                    }
                    Err(all) => {
                        h.update(all.as_bytes());
                    }
                }
            }
            h.finalize().to_hex().to_string()
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn run_items(
    stage: &dyn Stage,
    ctx: &RunCtx,
    db: &mut Db,
    rep: &Reporter,
    name: &str,
    key: &StageKey,
    id_column: &str,
    reads: &[&str],
    shard_store: Option<&Store>,
    shard: Option<Shard>,
) -> Result<(RecordBatch, Vec<ItemError>, usize, usize)> {
    let t = ctx
        .inputs
        .first()
        .ok_or_else(|| anyhow!("a per-item stage needs an input"))?
        .clone();
    let ids = t
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("input has no string column `{id_column}`"))?;
    let hashes = item_hashes(&ctx.inputs, id_column, reads)?;
    let n = t.num_rows();
    let mut slots: Vec<Option<Result<RecordBatch, ItemError>>> = vec![None; n];
    let mut missing = Vec::new();
    for (r, h) in hashes.iter().enumerate() {
        let cached = match (db.get_item(&key.stage_id, h)?, shard_store) {
            (Some(bytes), None) => Some(decode_ipc(&bytes)?),
            // A shard whose object was deleted (gc, verify --fix) is computed again.
            (Some(bytes), Some(store)) => parse_shard_ref(&bytes)
                .filter(|(obj, _, _)| store.object_path(obj).exists())
                .map(|(obj, rows, size)| index_row(&obj, rows, size))
                .transpose()?,
            (None, _) => None,
        };
        match cached {
            Some(b) => slots[r] = Some(Ok(b)),
            None => missing.push(r),
        }
    }
    // A shard computes its own rows and reports only on them.
    if let Some(sh) = shard {
        missing.retain(|&r| sh.owns(r));
    }
    let total = shard.map_or(n, |sh| (0..n).filter(|&r| sh.owns(r)).count());
    let reused = total - missing.len();
    rep.stage_start(name, &key.key, Some(total));
    let computed = compute_rows(
        stage,
        ctx,
        db,
        rep,
        name,
        key,
        (ids, id_column),
        &hashes,
        &missing,
        shard_store,
        (reused, total),
    );
    if shard.is_some() {
        let computed_ok = computed.iter().filter(|(_, r)| r.is_ok()).count();
        let errors = computed.into_iter().filter_map(|(_, r)| r.err()).collect();
        let empty = RecordBatch::new_empty(t.schema());
        return Ok((empty, errors, computed_ok, reused));
    }
    let computed_ok = computed.iter().filter(|(_, r)| r.is_ok()).count();
    for (r, res) in computed {
        slots[r] = Some(res);
    }
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    for (r, slot) in slots.into_iter().enumerate() {
        match slot.expect("every row filled") {
            Ok(b) => parts.push(with_id(ids.value(r), id_column, &b)?),
            Err(e) => errors.push(e),
        }
    }
    let table = match parts.first() {
        Some(first) => {
            let schema = first.schema();
            arrow::compute::concat_batches(&schema, &parts)
                .context("items returned different schemas")?
        }
        None => RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
            id_column,
            DataType::Utf8,
            false,
        )]))),
    };
    Ok((table, errors, computed_ok, reused))
}

/// Caches one computed item: small items as an IPC blob in the index, sharded ones as an object
/// of their own (id column included, so the file stands alone) with a reference in the index.
/// Returns what the stage's table gets for the item.
fn store_item(
    shard_store: Option<&Store>,
    writer: &Mutex<&mut Db>,
    key: &StageKey,
    item: &str,
    id: &str,
    id_column: &str,
    b: RecordBatch,
) -> Result<RecordBatch> {
    match shard_store {
        None => {
            let bytes = encode_ipc(&b)?;
            writer
                .lock()
                .unwrap()
                .put_item(&key.stage_id, item, &bytes)?;
            Ok(b)
        }
        Some(store) => {
            let full = with_id(id, id_column, &b)?;
            drop(b);
            let (obj, size) = store.put_table(&full)?;
            let rows = full.num_rows();
            writer.lock().unwrap().put_item(
                &key.stage_id,
                item,
                format!("shard:{obj}:{rows}:{size}").as_bytes(),
            )?;
            index_row(&obj, rows, size)
        }
    }
}

pub fn parse_shard_ref(b: &[u8]) -> Option<(String, usize, u64)> {
    let s = std::str::from_utf8(b).ok()?.strip_prefix("shard:")?;
    let mut it = s.split(':');
    let obj = it.next()?.to_string();
    Some((obj, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn index_row(obj: &str, rows: usize, size: u64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter(vec![
        ("object", Arc::new(StringArray::from(vec![obj])) as ArrayRef),
        (
            "rows",
            Arc::new(arrow::array::UInt64Array::from(vec![rows as u64])) as ArrayRef,
        ),
        (
            "bytes",
            Arc::new(arrow::array::UInt64Array::from(vec![size])) as ArrayRef,
        ),
    ])?)
}

/// Computes the given rows on the thread pool (in batches where the stage batches), caching
/// each finished item at once and reporting progress from `done.0` of `done.1`.
#[allow(clippy::too_many_arguments)]
fn compute_rows(
    stage: &dyn Stage,
    ctx: &RunCtx,
    db: &mut Db,
    rep: &Reporter,
    name: &str,
    key: &StageKey,
    (ids, id_column): (&StringArray, &str),
    hashes: &[String],
    missing: &[usize],
    shard_store: Option<&Store>,
    (reused, n): (usize, usize),
) -> Vec<(usize, Result<RecordBatch, ItemError>)> {
    let done = AtomicUsize::new(reused);
    rep.progress(name, reused, n);
    let delay = test_item_delay();
    let writer = Mutex::new(db);
    let catch = |rows: &[usize], f: &dyn Fn() -> Vec<Result<RecordBatch, ItemError>>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = panic_text(&p);
            rows.iter()
                .map(|_| Err(ItemError::new("", "", format!("stage panicked: {msg}"))))
                .collect()
        })
    };
    // Stores one computed item and reports it; runs on the thread pool.
    let finish = |r: usize, res: Result<RecordBatch, ItemError>| {
        let id = ids.value(r).to_string();
        let res = res.map_err(|mut e| {
            if e.item.is_empty() {
                e.item = id.clone();
            }
            e
        });
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let res = match res {
            Ok(b) => match store_item(shard_store, &writer, key, &hashes[r], &id, id_column, b) {
                Ok(b) => Ok(b),
                Err(e) => Err(ItemError::new(
                    &id,
                    "",
                    format!("could not store the item: {e:#}"),
                )),
            },
            Err(e) => {
                rep.item_error(name, &e);
                Err(e)
            }
        };
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        rep.progress(name, d, n);
        (r, res)
    };
    match stage.batch_items(ctx.params) {
        None => missing
            .par_iter()
            .map(|&r| {
                let res = catch(&[r], &|| vec![stage.run_item(ctx, r)])
                    .pop()
                    .expect("one result");
                finish(r, res)
            })
            .collect(),
        Some(b) => {
            let mut out = Vec::with_capacity(missing.len());
            for rows in missing.chunks(b.max(1)) {
                let mut res = catch(rows, &|| stage.run_batch(ctx, rows));
                if res.len() != rows.len() {
                    res = rows
                        .iter()
                        .map(|_| Err(ItemError::new("", "", "the stage lost items of a batch")))
                        .collect();
                }
                let pairs: Vec<_> = rows.iter().copied().zip(res).collect();
                out.extend(
                    pairs
                        .into_par_iter()
                        .map(|(r, res)| finish(r, res))
                        .collect::<Vec<_>>(),
                );
            }
            out
        }
    }
}

/// Shard `index` of `count`: the rows whose position modulo `count` is `index`, so long and
/// short clips spread evenly and each row's owner does not depend on what is cached.
#[derive(Clone, Copy, Debug)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    fn owns(&self, row: usize) -> bool {
        row % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (i, k) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: a shard is INDEX/COUNT, such as 0/4"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("`{s}`: bad index"))?;
        let count: usize = k.trim().parse().map_err(|_| format!("`{s}`: bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("`{s}`: the index must be below the count"));
        }
        Ok(Shard { index, count })
    }
}

struct StoreShards<'a>(&'a Store);

impl stages::ShardReader for StoreShards<'_> {
    fn read(&self, object: &str) -> std::result::Result<Arc<RecordBatch>, String> {
        self.0
            .get_table(object)
            .map_err(|e| format!("reading item object {}: {e:#}", short(object)))
    }
}

fn with_id(id: &str, id_column: &str, b: &RecordBatch) -> Result<RecordBatch> {
    let idcol: ArrayRef = Arc::new(StringArray::from(vec![id; b.num_rows()]));
    let mut fields = vec![Arc::new(Field::new(id_column, DataType::Utf8, false))];
    fields.extend(b.schema().fields().iter().cloned());
    let mut cols = vec![idcol];
    cols.extend(b.columns().iter().cloned());
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Fault injection for the crash tests: a pause after each computed item widens the window in
/// which a kill lands mid-stage. Never set in normal use.
fn test_item_delay() -> Option<std::time::Duration> {
    std::env::var("PIPELINE_TEST_ITEM_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

pub fn project_root_of(pipeline: &Path) -> PathBuf {
    // pipeline/foo.yaml lives one level below the project root.
    let parent = pipeline.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "pipeline") {
        parent
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    } else {
        parent.to_path_buf()
    }
}

/// The message of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use super::{item_hashes, Shard};
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;

    fn index(ids: &[&str], objects: &[&str]) -> Arc<RecordBatch> {
        let col = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        Arc::new(
            RecordBatch::try_from_iter([("clip_id", col(ids)), ("object", col(objects))]).unwrap(),
        )
    }

    #[test]
    fn an_item_is_recomputed_when_a_further_input_changes_its_row() {
        let first = index(&["a", "b"], &["1", "2"]);
        let second = index(&["b", "a"], &["x", "y"]);
        let h = item_hashes(&[first.clone(), second], "clip_id", &["object"]).unwrap();
        // Clip a's row in the second input changes; b's does not.
        let changed = index(&["b", "a"], &["x", "z"]);
        let h2 = item_hashes(&[first.clone(), changed], "clip_id", &["object"]).unwrap();
        assert_ne!(h[0], h2[0]);
        assert_eq!(h[1], h2[1]);
        // One input: the identity is the read columns alone, as before.
        let alone = item_hashes(&[first], "clip_id", &["object"]).unwrap();
        assert_ne!(alone[1], h[1]);
    }

    #[test]
    fn shards_cover_every_row_once() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for r in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(r)).count(), 1);
        }
        for bad in ["3/3", "1/0", "x/2", "2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
