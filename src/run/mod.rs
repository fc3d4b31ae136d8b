//! Running a plan: decide fresh/stale from keys, then execute stale stages in dependency order,
//! `-j` at a time, with per-item work on the rayon pool.
//!
//! Crash safety: an artifact is recorded only after its object is durably in place, and each
//! finished item is committed on its own, so after kill -9 a rerun reuses every finished stage
//! and item. Concurrency: a stage is computed under an exclusive lock on its key, so a second
//! process waits and then reuses the first one's artifact instead of computing it again.

pub mod forecast;
pub mod gpus;
mod holds;
mod items;
pub mod parts;
pub mod provenance;
mod reports;
mod scheduler;
mod stage;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value as J;
use stages::ItemError;

use crate::config::Plan;
use crate::db::{Artifact, Db};
use crate::keys::{self, StageKey};
use crate::registry::Registry;
use crate::store::Store;

pub use items::{parse_shard_ref, Shard};
pub use scheduler::run;
pub use stage::{exec_stage, execute, explain};

/// Tables this process already holds, by key, so that a stage reads its inputs from memory when
/// an earlier stage of the same run left them there.
pub type Tables = Mutex<HashMap<String, Arc<RecordBatch>>>;

/// One stage run, as the engine hands it to whoever computes it (itself, or a worker process
/// reading it as JSON): everything needed to compute, store and record it.
#[derive(Serialize, Deserialize)]
pub struct Job {
    pub cache: PathBuf,
    pub root: PathBuf,
    /// The pipeline file and the stage's line in it, for messages.
    pub plan_file: PathBuf,
    pub line: usize,
    pub pipeline_id: String,
    pub name: String,
    pub kind: String,
    /// The kind's code version the key was computed with: a worker built from other sources
    /// than the engine refuses the job rather than store under a key that does not describe it.
    pub version: u32,
    pub params: BTreeMap<String, J>,
    pub inputs: Vec<String>,
    pub key: StageKey,
    pub input_keys: Vec<String>,
    pub shard: Option<Shard>,
    /// Threads for its per-item work (the CPUs the scheduler gave it).
    pub cpus: usize,
    /// libtorch's intra-op threads: the CPUs asked, a fixed number per kind, never the cores
    /// that happen to be free (a training sets its own from its `threads` param).
    #[serde(default)]
    pub threads: usize,
    /// The GPUs it holds, as `CUDA_VISIBLE_DEVICES` names them; none: it sees no GPU.
    #[serde(default)]
    pub gpus: Vec<String>,
}

pub struct RunOpts {
    pub targets: Vec<String>,
    pub jobs: usize,
    /// CPUs the stages running at once share: each takes its `resources.cpus`.
    pub cpus: usize,
    /// GPUs they share: each takes its `resources.gpus`.
    pub gpus: Vec<String>,
    pub keep_going: bool,
    /// Compute the selected stages that have failed items again, retrying just those items.
    pub retry_failed: bool,
    pub dry_run: bool,
    pub argv: String,
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_PARTIAL: i32 = 3;

/// The planned state of one selected stage.
pub struct Planned {
    pub idx: usize,
    pub key: Result<StageKey, crate::error::KeyError>,
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
        db.read_snapshot(|db| {
            let mut out = Vec::with_capacity(keys.len());
            for (idx, key) in keys {
                let artifact = match &key {
                    Ok(k) => db
                        .fresh_artifact(&k.key)?
                        .filter(|a| self.store.object_path(&a.object).exists()),
                    Err(_) => None,
                };
                out.push(Planned { idx, key, artifact });
            }
            Ok(out)
        })
    }
}

impl Env<'_> {
    /// [`Env::plan_state`] under the gc lock, with a lease on every key planned, so that `gc`
    /// collects none of them while the lease is held.
    pub fn plan_leased(
        &self,
        db: &mut Db,
        selected: &[usize],
    ) -> Result<(Vec<Planned>, crate::lease::Lease)> {
        let guard = crate::lease::gc_lock(&self.cache)?;
        guard.lock_shared().context("waiting for a running gc")?;
        let planned = self.plan_state(db, selected)?;
        let keys: Vec<(String, String)> = planned
            .iter()
            .filter_map(|p| p.key.as_ref().ok())
            .map(|k| (k.key.clone(), k.stage_id.clone()))
            .collect();
        let lease = crate::lease::Lease::take(&self.cache, &keys)?;
        Ok((planned, lease))
    }
}

/// What became of one stage in this run: its name, key, and result.
pub(crate) type Finished = (String, Option<String>, Result<StageRun, String>);

#[derive(Serialize, Deserialize)]
pub struct StageRun {
    pub outcome: Outcome,
    pub secs: f64,
    pub computed: usize,
    pub reused: usize,
    pub errors: Vec<ItemError>,
}

impl StageRun {
    /// A stage whose artifact was already there (with the item errors it was recorded with).
    pub fn cached(secs: f64, errors: Vec<ItemError>) -> StageRun {
        StageRun {
            outcome: Outcome::Cached,
            secs,
            computed: 0,
            reused: 0,
            errors,
        }
    }
}

/// How a stage that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Computed now and recorded.
    Ran,
    /// Its artifact was in the cache (or another process recorded it while this one waited).
    Cached,
    /// One shard's items computed for a cluster job; the artifact comes later.
    Shard,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Shard => "shard",
        }
    }
}

/// The CPUs this process may use.
pub fn machine_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPUs a stage asks: its `resources.cpus`, else its kind's fixed count (a training its
/// `threads`, an embedding [`stages::embed::EMBED_THREADS`]); None: the whole machine, for
/// per-item work on a thread pool.
pub fn cpus_asked(env: &Env, idx: usize) -> Option<usize> {
    let s = &env.plan.stages[idx];
    let asked = s.resources.get("cpus").and_then(|v| v.as_u64());
    let kind = env.reg.get(&s.kind).expect("validated kind");
    asked.map(|n| n as usize).or_else(|| kind.cpus(&s.params))
}

/// The CPUs a stage run holds while it runs: what it asks, never more than there are.
pub fn cpus_of(env: &Env, idx: usize, total: usize) -> usize {
    cpus_asked(env, idx).unwrap_or(total).clamp(1, total.max(1))
}

/// The GPUs a stage asks: its `resources.gpus` (and `gpu_share`), else one for a libtorch
/// kind whose device is not `cpu` when the machine has any (`have`), else none.
pub fn gpus_asked(env: &Env, idx: usize, have: usize) -> gpus::Ask {
    let s = &env.plan.stages[idx];
    let kind = env.reg.get(&s.kind).expect("validated kind");
    let n = |k: &str| {
        s.resources
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
    };
    let on_gpu = kind.uses_device() && s.params.str("device").is_ok_and(|d| d != "cpu");
    gpus::Ask {
        gpus: n("gpus").unwrap_or(usize::from(on_gpu && have > 0)),
        share: n("gpu_share").unwrap_or(1).max(1),
    }
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
pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}
