//! One stage run: under its key's lock, inputs loaded, the stage computed whole or item by
//! item, its artifact stored and recorded.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use arrow::array::RecordBatch;
use serde_json::json;
use stages::{ItemError, Mode as StageMode, Params, RunCtx, Stage};

use super::items::{run_items, Body, ItemRun, Shard, StoreShards};
use super::{machine_cpus, Env, Job, Outcome, StageRun, Tables, EXIT_FAILED, EXIT_OK};
use crate::db::{now, Artifact, Db};
use crate::keys::{self, short, StageKey};
use crate::report::Reporter;
use crate::store::Store;

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
) -> crate::Result<i32> {
    let plan = env.plan;
    let Some(&idx) = plan.index.get(name) else {
        let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(crate::Error::Target(format!(
            "no stage `{name}` in {}{}",
            plan.file.display(),
            crate::config::did_you_mean(name, names.into_iter())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        )));
    };
    let selected = plan.select(&[name.to_string()])?;
    let mut db = Db::open(&env.cache)?;
    let (planned, _lease) = env.plan_leased(&mut db, &selected)?;
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
            return Err(anyhow!(
                "{name}: its key is now {} but the job was submitted for {}: the pipeline, its \
                 params or its input files changed after `submit`; submit again",
                short(&key.key),
                short(want)
            )
            .into());
        }
    }
    let s = &plan.stages[idx];
    let mut input_keys = Vec::new();
    for n in &s.inputs {
        let j = plan.index[n];
        if !present[&j] {
            return Err(anyhow!(
                "{name}: input `{n}` (key {}) is not in the cache at {}; run or submit it first",
                short(&keyof[&j].key),
                env.cache.display()
            )
            .into());
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
    let tables = Tables::default();
    let mut job = Job::new(env, idx, &key, &input_keys);
    job.shard = shard;
    job.gpus = allocated_gpus(env, idx, rep)?;
    let res = dispatch(env, rep, &job, &tables);
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
    let state = db.stage_state(pipeline, stage)?;
    if state.is_some() {
        if let Some(why) = db.retry_reason(&k.key)? {
            return Ok(vec![why]);
        }
    }
    Ok(match state {
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

/// A cluster job computes on the GPUs its allocation holds (Slurm sets CUDA_VISIBLE_DEVICES);
/// without one, `device: cuda` is refused as `run` refuses it.
fn allocated_gpus(env: &Env, idx: usize, rep: &Reporter) -> crate::Result<Vec<String>> {
    let gpus = super::gpus::detect(None)?;
    if gpus.is_empty() {
        super::gpus::plan_asks(env, &[idx], 0, rep)?;
    }
    Ok(gpus)
}

/// A stage run for `execute`: built by the engine from its plan, or read by a worker process.
impl Job {
    pub(super) fn new(env: &Env, idx: usize, key: &StageKey, input_keys: &[String]) -> Job {
        let s = &env.plan.stages[idx];
        let decl = env.reg.get(&s.kind).expect("validated kind");
        Job {
            cache: env.cache.clone(),
            root: env.plan.root.clone(),
            plan_file: env.plan.file.clone(),
            line: s.line,
            pipeline_id: env.pipeline_id.clone(),
            name: s.name.clone(),
            kind: s.kind.clone(),
            version: decl.version(),
            params: s.params.0.clone(),
            inputs: s.inputs.clone(),
            key: key.clone(),
            input_keys: input_keys.to_vec(),
            shard: None,
            cpus: machine_cpus(),
            threads: super::cpus_asked(env, idx).unwrap_or_else(machine_cpus),
            gpus: Vec::new(),
        }
    }
}

/// Runs a job where its kind computes: in this process for the kinds the engine links, else in
/// a worker process.
pub(super) fn dispatch(env: &Env, rep: &Reporter, job: &Job, tables: &Tables) -> Result<StageRun> {
    match env.reg.local(&job.kind) {
        // Per-item work on a pool of the CPUs the scheduler gave the stage.
        Some(stage) => rayon::ThreadPoolBuilder::new()
            .num_threads(job.cpus.max(1))
            .build()?
            .install(|| execute(job, stage, rep, tables)),
        None => super::worker::run(job, rep),
    }
}

/// Computes and records one stage run: under its key's lock, unless another process recorded
/// it meanwhile.
pub fn execute(job: &Job, stage: &dyn Stage, rep: &Reporter, tables: &Tables) -> Result<StageRun> {
    let t0 = Instant::now();
    let (key, shard) = (&job.key, job.shard);
    let store = Store::open(&job.cache)?;
    let mut db = Db::open(&job.cache)?;
    // Shards of one stage run side by side; only whoever records the artifact takes the lock.
    let lock = File::create(store.lock_path(&key.key))?;
    if shard.is_none() {
        lock.lock().context("locking the stage key")?;
    }
    if db
        .fresh_artifact(&key.key)?
        .is_some_and(|a| store.object_path(&a.object).exists())
    {
        // Another process computed it while we waited for the lock.
        let errors = db.item_errors(&key.key)?;
        update_state(&db, &job.pipeline_id, &job.name, key)?;
        return Ok(StageRun::cached(t0.elapsed().as_secs_f64(), errors));
    }
    let inputs = load_inputs(&store, &db, job, tables)?;
    let shards = StoreShards::new(&store);
    let progress = Progress::new(rep, &job.name);
    let params = Params(job.params.clone());
    let ctx = RunCtx {
        params: &params,
        root: &job.root,
        inputs,
        input_names: &job.inputs,
        files: &key.files,
        shards: &shards,
        blobs: &shards,
        progress: &progress,
    };
    let mode = stage.decl().mode(&params);
    let writes = stage.decl().writes(&params);
    if shard.is_some() && matches!(mode, StageMode::Table) {
        anyhow::bail!(
            "{}: a `{}` stage computes one table, not per-clip items, so it cannot be split into shards",
            job.name,
            job.kind
        );
    }
    let (body, errors, computed, reused) = match mode {
        StageMode::Table => {
            rep.stage_start(&job.name, &key.key, None);
            let out = stage.run(&ctx);
            if out.is_err() {
                mark_inputs(&db, job, &shards, &ctx.inputs)?;
            }
            let out = out
                .and_then(|out| stages::check_writes(writes, &out.table).map(|_| out))
                .map_err(|e| {
                    anyhow!(
                        "{} ({}:{}): {e}",
                        job.name,
                        job.plan_file.display(),
                        job.line
                    )
                })?;
            // Per-item stages report their failures as they happen; here, unless all failed
            // (then the stage's failure says it once).
            if out.table.num_rows() > 0 {
                for e in &out.errors {
                    rep.item_error(&job.name, e);
                }
            }
            (Body::Whole(out.table), out.errors, 0, 0)
        }
        StageMode::PerItem { id_column, reads } | StageMode::Sharded { id_column, reads } => {
            let run = ItemRun {
                stage,
                ctx: &ctx,
                rep,
                name: &job.name,
                key,
                id_column,
                reads,
                store: &store,
                sharded: matches!(mode, StageMode::Sharded { .. }),
                blob_column: stage.decl().blob_column(&params),
                writes,
                progress: &progress,
                item_meta: &super::provenance::of_items(job, stage),
            };
            let recheck = db.retry_reason(&key.key)?.is_some();
            run_items(&run, &mut db, shard, recheck)?
        }
    };
    let outcome = if shard.is_some() {
        // The items are in the index; the job that gathers them records the artifact.
        Outcome::Shard
    } else {
        if !errors.is_empty() && body.rows() == 0 {
            // Nothing to record: what reads it would run on an empty table.
            mark_inputs(&db, job, &shards, &ctx.inputs)?;
            return Err(all_failed(job, &errors));
        }
        let meta = super::provenance::of_stage(job, stage);
        if let (Body::Whole(t), Some(c)) = (&body, stage.decl().blob_column(&params)) {
            // A whole-table stage's blobs are kept as long as its artifact.
            if let Some(names) = t
                .column_by_name(c)
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            {
                db.put_blob_refs(&key.key, names.iter().flatten())?;
            }
        }
        record_artifact(&store, &mut db, job, (&body, &errors), &meta)?;
        mark_faults(&db, job, &shards, &errors, &ctx.inputs)?;
        update_state(&db, &job.pipeline_id, &job.name, key)?;
        // A table in parts stays on disk: whoever reads it next loads it.
        if let Body::Whole(table) = body {
            tables
                .lock()
                .unwrap()
                .insert(key.key.clone(), Arc::new(table));
        }
        Outcome::Ran
    };
    drop(lock);
    Ok(StageRun {
        outcome,
        secs: t0.elapsed().as_secs_f64(),
        computed,
        reused,
        errors,
    })
}

/// A stage none of whose items (clips) succeeded: one message, with the first failure.
fn all_failed(job: &Job, errors: &[ItemError]) -> anyhow::Error {
    let e = &errors[0];
    let field = if e.field.is_empty() {
        String::new()
    } else {
        format!(" [{}]", e.field)
    };
    anyhow!(
        "{} ({}:{}): all {} item(s) failed, the first: {}{field}: {}",
        job.name,
        job.plan_file.display(),
        job.line,
        errors.len(),
        e.item,
        e.reason
    )
}

/// Items that failed on a fault of the cache rather than of their clip are tried again by the
/// next run: this stage is marked for it, and so is each sharded input whose item object could
/// not be read (its object is gone from the store by now, so that input recomputes the item).
fn mark_faults(
    db: &Db,
    job: &Job,
    shards: &StoreShards,
    errors: &[ItemError],
    inputs: &[Arc<RecordBatch>],
) -> Result<()> {
    let n = errors.iter().filter(|e| shards.is_fault(e)).count();
    if n == 0 {
        return Ok(());
    }
    db.mark_retry(
        &job.key.key,
        &format!(
            "{n} item(s) failed on a corrupt or missing object or an I/O error: retrying them"
        ),
    )?;
    mark_inputs(db, job, shards, inputs)
}

/// Marks each input that names an object or blob that could not be read (in any of its string
/// columns: a sharded stage's `object`, a `command` stage's `data_hash`) to compute it again.
fn mark_inputs(
    db: &Db,
    job: &Job,
    shards: &StoreShards,
    inputs: &[Arc<RecordBatch>],
) -> Result<()> {
    let faults = shards.faults.lock().unwrap().clone();
    if faults.is_empty() {
        return Ok(());
    }
    for (k, t) in job.input_keys.iter().zip(inputs) {
        let names = t
            .columns()
            .iter()
            .filter_map(|c| c.as_any().downcast_ref::<arrow::array::StringArray>());
        let mut hit = false;
        for c in names {
            hit |= c.iter().flatten().any(|o| faults.iter().any(|f| f == o));
        }
        if hit {
            db.mark_retry(
                k,
                "an item object or blob was corrupt or missing: computing it again",
            )?;
        }
    }
    Ok(())
}

/// The input tables, from this run's memory where an earlier stage left them, else the store.
fn load_inputs(
    store: &Store,
    db: &Db,
    job: &Job,
    tables: &Tables,
) -> Result<Vec<Arc<RecordBatch>>> {
    let mut inputs = Vec::new();
    for (k, name) in job.input_keys.iter().zip(&job.inputs) {
        let cached = tables.lock().unwrap().get(k).cloned();
        let t = match cached {
            Some(t) => t,
            None => {
                let a = db.artifact(k)?.ok_or_else(|| {
                    anyhow!("input artifact {} vanished from the index", short(k))
                })?;
                let t = store
                    .get_table(&a.object)
                    .with_context(|| format!("{}: input `{name}` (key {})", job.name, short(k)))?;
                tables.lock().unwrap().insert(k.clone(), t.clone());
                t
            }
        };
        inputs.push(t);
    }
    Ok(inputs)
}

/// A stage run's progress on the run's reporter: a training's epochs, and a per-item stage's
/// items, stored (`done`) and, inside a batch still computing, computed (`pending`).
pub(super) struct Progress<'a> {
    rep: &'a Reporter,
    name: &'a str,
    pub done: AtomicUsize,
    pub pending: AtomicUsize,
    pub total: AtomicUsize,
}

impl<'a> Progress<'a> {
    fn new(rep: &'a Reporter, name: &'a str) -> Self {
        Progress {
            rep,
            name,
            done: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        }
    }

    /// One more item stored: it leaves `pending` if it was counted there.
    pub fn stored(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
        self.done.fetch_add(1, Ordering::Relaxed);
        self.show();
    }

    pub fn show(&self) {
        let n = self.done.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        self.rep.progress(self.name, n.min(total), total);
    }
}

impl stages::Progress for Progress<'_> {
    fn epoch(&self, epoch: usize, epochs: usize, valid_loss: f64) {
        self.rep.epoch(self.name, (epoch, epochs), valid_loss);
    }
    fn batch(&self, computed: usize) {
        self.pending.store(computed, Ordering::Relaxed);
        self.show();
    }
}

/// Stores the table as an object (a table in parts: the table of its parts), then records it
/// in the index: the artifact exists only once its object is durably in place.
fn record_artifact(
    store: &Store,
    db: &mut Db,
    job: &Job,
    (body, errors): (&Body, &[ItemError]),
    meta: &[(String, String)],
) -> Result<()> {
    let (key, s) = (&job.key, job);
    let (object, bytes, schema) = match body {
        Body::Whole(table) => {
            let (o, b) = store.put_table(table, meta)?;
            (o, b, table.schema())
        }
        Body::Parts { parts, schema } => {
            let mut meta = meta.to_vec();
            meta.push((crate::store::PARTS_KEY.to_string(), parts.len().to_string()));
            let (o, b) = store.put_table(&super::parts::manifest(parts)?, &meta)?;
            (
                o,
                b + parts.iter().map(|p| p.2).sum::<u64>(),
                schema.clone(),
            )
        }
    };
    let schema = schema
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
            rows: body.rows() as i64,
            bytes: bytes as i64,
            schema,
            failed_items: errors.len() as i64,
            created: now(),
        },
        errors,
        runtime_of(job).as_ref(),
        &job.input_keys,
    )
}

/// How a libtorch stage computed (see [`crate::db::Runtime`]); None for the others.
fn runtime_of(job: &Job) -> Option<crate::db::Runtime> {
    let device = stages::runtime::devices();
    if device.is_empty() {
        return None;
    }
    // A training's libtorch threads are its keyed `threads` param.
    let threads = job.params.get("threads").and_then(|t| t.as_i64());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    Some(crate::db::Runtime {
        device,
        threads: threads.unwrap_or(job.threads as i64),
        gpus: job.gpus.join(","),
        host: host.trim().to_string(),
    })
}
