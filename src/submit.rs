//! `pipeline submit`: the DAG as Slurm batch jobs that share the content-addressed cache.
//!
//! One job per stale stage, running `pipeline exec STAGE` on a compute node; a per-clip stage
//! with `shards: K` first runs as a K-task array (`exec --shard i/K`) that fills the item
//! cache, then its own job gathers the items into the artifact. Jobs wait for their inputs'
//! jobs with `afterok`. Every job id is recorded in the run index the moment `sbatch` returns,
//! so `status` and the next `submit` know what is queued; what finished is in the cache, so a
//! crash of the submitting process loses nothing, and the next `submit` sends only stages that
//! are neither fresh nor queued.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value as J};
use stages::Mode as StageMode;

use crate::config::{scalar_text, Plan};
use crate::db::{now, Db, Job};
use crate::keys::short;
use crate::run::{Env, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL};
use crate::slurm;

pub struct SubmitOpts {
    pub targets: Vec<String>,
    /// The pipeline file and the `--set` overrides, passed on to every job.
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// At most this many job tasks (an array's tasks count one each) queued or running.
    pub max_jobs: Option<usize>,
    /// `sbatch` calls per second at most.
    pub submit_rate: f64,
    /// Shards for per-clip stages that do not set `resources.shards`.
    pub shards: Option<usize>,
    pub dry_run: bool,
    pub watch: bool,
    pub json: bool,
}

/// The cluster resources one stage asks for.
#[derive(Debug, Default, Clone)]
struct Res {
    cpus: Option<u64>,
    mem: Option<String>,
    time: Option<String>,
    gpus: Option<u64>,
    partition: Option<String>,
    shards: usize,
    parallel: Option<u64>,
}

fn resources(plan: &Plan, idx: usize, opts: &SubmitOpts, per_item: bool) -> Res {
    let r = &plan.stages[idx].resources;
    let text = |k: &str| r.get(k).map(scalar_text);
    let num = |k: &str| r.get(k).and_then(J::as_u64);
    let shards = num("shards")
        .map(|n| n as usize)
        .or(opts.shards)
        .unwrap_or(1);
    Res {
        cpus: num("cpus"),
        mem: text("mem"),
        time: text("time"),
        gpus: num("gpus"),
        partition: opts.partition.clone().or_else(|| text("partition")),
        // Only per-clip stages split; a table stage runs as one job whatever it asks.
        shards: if per_item { shards } else { 1 },
        parallel: num("parallel"),
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A job name and file name from a stage name: `fusion[seed=1,fusion=concat]` ->
/// `fusion.seed-1.fusion-concat`.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            '[' | ',' => '.',
            '=' => '-',
            ']' => '\0',
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' => c,
            _ => '_',
        })
        .filter(|&c| c != '\0')
        .collect();
    s.chars().take(120).collect()
}

struct Script {
    text: String,
    log: String,
}

fn script(
    env: &Env,
    opts: &SubmitOpts,
    name: &str,
    key: &str,
    res: &Res,
    array: Option<usize>,
    deps: &[String],
) -> Result<Script> {
    let bin = std::env::current_exe()?;
    let logs = env.cache.join("logs");
    let tag = format!("{}-{}", slug(name), &key[..8]);
    let log = match array {
        Some(_) => logs.join(format!("{tag}-%A_%a.out")),
        None => logs.join(format!("{tag}-%j.out")),
    };
    let mut t = String::from("#!/bin/bash\n");
    let mut sb = |line: String| {
        let _ = writeln!(t, "#SBATCH {line}");
    };
    let role = if array.is_some() { "shards" } else { "stage" };
    sb(format!(
        "--job-name=pl-{tag}{}",
        if array.is_some() { "-shards" } else { "" }
    ));
    sb(format!("--output=\"{}\"", log.display()));
    if let Some(c) = res.cpus {
        sb(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &res.mem {
        sb(format!("--mem={m}"));
    }
    if let Some(tl) = &res.time {
        sb(format!("--time={tl}"));
    }
    if let Some(g) = res.gpus.filter(|&g| g > 0) {
        sb(format!("--gres=gpu:{g}"));
    }
    if let Some(p) = &res.partition {
        sb(format!("--partition={p}"));
    }
    if let Some(a) = &opts.account {
        sb(format!("--account={a}"));
    }
    if let Some(k) = array {
        let limit = res.parallel.map(|l| format!("%{l}")).unwrap_or_default();
        sb(format!("--array=0-{}{limit}", k - 1));
    }
    if !deps.is_empty() {
        sb(format!("--dependency=afterok:{}", deps.join(":")));
        // Sites without DependencyParameters=kill_invalid_depend would otherwise keep a job
        // whose input failed pending for ever; `status`/`submit` cancel such jobs as well.
        if std::env::var_os("PIPELINE_TEST_KEEP_INVALID_DEP").is_none() {
            sb("--kill-on-invalid-dep=yes".into());
        }
    }
    let _ = writeln!(t, "# pipeline: {role} job of stage {name}, key {key}");
    let _ = writeln!(t, "set -eu");
    let _ = writeln!(t, "cd {}", sh_quote(&env.plan.root.to_string_lossy()));
    // One allocation's CPUs, not the node's: rayon and libtorch would otherwise start a thread
    // per core of the whole node.
    let _ = writeln!(
        t,
        "export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}} RAYON_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}} OMP_WAIT_POLICY=PASSIVE"
    );
    let mut cmd = vec![
        sh_quote(&bin.to_string_lossy()),
        "--cache".into(),
        sh_quote(&env.cache.to_string_lossy()),
        "exec".into(),
        sh_quote(name),
        "-p".into(),
        sh_quote(&opts.file.to_string_lossy()),
    ];
    for s in &opts.sets {
        cmd.push("--set".into());
        cmd.push(sh_quote(s));
    }
    cmd.push("--expect-key".into());
    cmd.push(key.to_string());
    if let Some(k) = array {
        cmd.push("--shard".into());
        cmd.push(format!("\"$SLURM_ARRAY_TASK_ID/{k}\""));
    }
    let _ = writeln!(t, "exec {}", cmd.join(" "));
    Ok(Script {
        text: t,
        log: log.to_string_lossy().into_owned(),
    })
}

/// Brings the recorded state of every unfinished job up to date, and cancels the queued
/// dependents of jobs that failed (not every cluster does that itself). Returns the jobs whose
/// state changed.
pub fn refresh(db: &Db) -> Result<Vec<Job>> {
    let jobs = db.jobs()?;
    let open: Vec<&Job> = jobs
        .iter()
        .filter(|j| !slurm::is_terminal(&j.state))
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = open.iter().map(|j| j.id.clone()).collect();
    let states = slurm::query(&ids)?;
    let mut changed = Vec::new();
    let mut now_state: HashMap<String, String> = jobs
        .iter()
        .map(|j| (j.id.clone(), j.state.clone()))
        .collect();
    for j in &open {
        let (state, reason, done) = match states.get(&j.id) {
            Some(tasks) => slurm::summarize(tasks, j.tasks as usize),
            // Neither squeue nor sacct knows it: purged without accounting.
            None => (
                "LOST".into(),
                "the scheduler no longer knows this job".into(),
                0,
            ),
        };
        if state != j.state || reason != j.reason || done as i64 != j.done_tasks {
            db.set_job_state(&j.id, &state, &reason, done as i64)?;
            let mut j2 = (*j).clone();
            j2.state = state.clone();
            j2.reason = reason;
            j2.done_tasks = done as i64;
            changed.push(j2);
        }
        now_state.insert(j.id.clone(), state);
    }
    // Cancel what waits on a failure, transitively.
    let failed: HashSet<String> = now_state
        .iter()
        .filter(|(_, s)| slurm::is_terminal(s) && *s != "COMPLETED")
        .map(|(i, _)| i.clone())
        .collect();
    let mut doomed: Vec<(Job, String)> = Vec::new();
    let mut bad = failed.clone();
    loop {
        let mut grew = false;
        for j in &jobs {
            if slurm::is_terminal(&now_state[&j.id]) || bad.contains(&j.id) {
                continue;
            }
            if let Some(d) = j.deps.split(',').find(|d| bad.contains(*d)) {
                bad.insert(j.id.clone());
                doomed.push((j.clone(), d.to_string()));
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    if !doomed.is_empty() {
        let ids: Vec<String> = doomed.iter().map(|(j, _)| j.id.clone()).collect();
        slurm::scancel(&ids)?;
        for (j, d) in doomed {
            let reason = format!("input job {d} failed");
            db.set_job_state(&j.id, "CANCELLED", &reason, j.done_tasks)?;
            let mut j2 = j.clone();
            j2.state = "CANCELLED".into();
            j2.reason = reason;
            changed.push(j2);
        }
    }
    Ok(changed)
}

/// The latest job recorded for a key, if any.
pub fn latest_jobs(db: &Db) -> Result<HashMap<String, Job>> {
    let mut out = HashMap::new();
    for j in db.jobs()? {
        if j.role == "stage" || !out.contains_key(&j.key) {
            out.insert(j.key.clone(), j);
        }
    }
    // An array still running matters more than its gather job, which only waits.
    for j in db.jobs()? {
        if j.role == "shards" && !slurm::is_terminal(&j.state) {
            out.insert(j.key.clone(), j);
        }
    }
    Ok(out)
}

/// A job's state in the words `status` uses: queued, running, failed, cancelled, done.
pub fn word(j: &Job) -> &'static str {
    match j.state.as_str() {
        "COMPLETED" => "done",
        "RUNNING" | "COMPLETING" | "CONFIGURING" => "running",
        "CANCELLED" => "cancelled",
        s if slurm::is_terminal(s) => "failed",
        _ => "queued",
    }
}

pub fn describe(j: &Job) -> String {
    let mut s = format!("job {}", j.id);
    if j.role == "shards" {
        s.push_str(&format!(", {}/{} shards done", j.done_tasks, j.tasks));
    }
    if !j.reason.is_empty() && j.reason != "None" {
        s.push_str(&format!(", {}", j.reason));
    }
    if matches!(word(j), "failed" | "cancelled") || j.state == "LOST" {
        s.push_str(&format!(
            ", log {}",
            j.log.replace("%A", &j.id).replace("%j", &j.id)
        ));
    }
    s
}

enum Slot {
    /// Its artifact is in the cache, or its job will produce it: dependents wait for the job.
    Ready(Option<String>),
    /// Not submitted in this pass (job limit); dependents wait too.
    Deferred,
    /// Cannot run: its key, or an input, failed.
    Blocked(String),
}

struct Session<'a> {
    env: &'a Env<'a>,
    opts: &'a SubmitOpts,
    order: Vec<usize>,
    keys: HashMap<usize, Result<String, String>>,
    per_item: HashMap<usize, bool>,
    /// Stages this session submitted; each is submitted at most once per session.
    sent: HashSet<usize>,
    last_sbatch: Option<Instant>,
    jobs_sent: usize,
}

impl Session<'_> {
    fn say(&self, mut v: J, text: String) {
        if self.opts.json {
            if let Some(o) = v.as_object_mut() {
                o.insert("schema".into(), crate::report::JSON_SCHEMA.into());
            }
            println!("{v}");
        } else {
            println!("{text}");
        }
    }

    /// One pass over the stages in dependency order, submitting what is stale and has room.
    /// Returns how many stages still wait for room.
    fn pass(&mut self, db: &mut Db) -> Result<usize> {
        let env = self.env;
        let plan = env.plan;
        let latest = latest_jobs(db)?;
        let mut active: usize = db
            .jobs()?
            .iter()
            .filter(|j| !slurm::is_terminal(&j.state))
            .map(|j| (j.tasks - j.done_tasks).max(1) as usize)
            .sum();
        let mut slot: HashMap<usize, Slot> = HashMap::new();
        let mut deferred = 0;
        for &idx in &self.order.clone() {
            let s = &plan.stages[idx];
            let key = match &self.keys[&idx] {
                Err(e) => {
                    slot.insert(idx, Slot::Blocked(format!("cannot plan: {e}")));
                    continue;
                }
                Ok(k) => k.clone(),
            };
            let fresh = db
                .fresh_artifact(&key)?
                .is_some_and(|a| env.store.object_path(&a.object).exists());
            if fresh {
                slot.insert(idx, Slot::Ready(None));
                continue;
            }
            let job = latest.get(&key);
            if let Some(j) = job.filter(|j| !slurm::is_terminal(&j.state)) {
                // Dependents wait for the job that records the artifact.
                let id = if j.role == "shards" {
                    db.jobs()?
                        .into_iter()
                        .find(|g| {
                            g.key == key
                                && g.role == "stage"
                                && g.deps.split(',').any(|d| d == j.id)
                        })
                        .map(|g| g.id)
                        .unwrap_or_else(|| j.id.clone())
                } else {
                    j.id.clone()
                };
                slot.insert(idx, Slot::Ready(Some(id)));
                continue;
            }
            if self.sent.contains(&idx) {
                let why = job
                    .map(|j| format!("its job {}", describe(j)))
                    .unwrap_or_else(|| "its job ended without an artifact".into());
                slot.insert(idx, Slot::Blocked(why));
                continue;
            }
            let mut deps = Vec::new();
            let mut wait = None;
            for n in &s.inputs {
                let j = plan.index[n];
                match slot.get(&j) {
                    Some(Slot::Ready(Some(id))) => deps.push(id.clone()),
                    Some(Slot::Ready(None)) => {}
                    Some(Slot::Deferred) | None => wait = Some(Slot::Deferred),
                    Some(Slot::Blocked(_)) => {
                        wait = Some(Slot::Blocked(format!("input `{n}` cannot run")))
                    }
                }
            }
            if let Some(w) = wait {
                if matches!(w, Slot::Deferred) {
                    deferred += 1;
                }
                slot.insert(idx, w);
                continue;
            }
            deps.sort();
            deps.dedup();
            let res = resources(plan, idx, self.opts, self.per_item[&idx]);
            let cost = if res.shards > 1 { res.shards + 1 } else { 1 };
            if let Some(m) = self.opts.max_jobs {
                if active + cost > m && !self.opts.dry_run {
                    deferred += 1;
                    slot.insert(idx, Slot::Deferred);
                    continue;
                }
            }
            let id = self.send(db, idx, &key, &res, deps)?;
            active += cost;
            slot.insert(idx, Slot::Ready(Some(id)));
        }
        for idx in self.order.clone() {
            if let Some(Slot::Blocked(why)) = slot.get(&idx) {
                if self.sent.insert(idx) || why.starts_with("cannot plan") {
                    let name = &plan.stages[idx].name;
                    self.say(
                        json!({"event": "blocked", "stage": name, "reason": why}),
                        format!("blocked    {name}  ({why})"),
                    );
                }
            }
        }
        Ok(deferred)
    }

    fn pace(&mut self) {
        if self.opts.submit_rate > 0.0 {
            let gap = Duration::from_secs_f64(1.0 / self.opts.submit_rate);
            if let Some(t) = self.last_sbatch {
                let el = t.elapsed();
                if el < gap {
                    std::thread::sleep(gap - el);
                }
            }
        }
        self.last_sbatch = Some(Instant::now());
    }

    /// Submits one stage (its shard array first, if split); returns the id dependents wait on.
    fn send(
        &mut self,
        db: &Db,
        idx: usize,
        key: &str,
        res: &Res,
        deps: Vec<String>,
    ) -> Result<String> {
        let env = self.env;
        let name = env.plan.stages[idx].name.clone();
        self.sent.insert(idx);
        let dir = env.cache.join("slurm");
        if !self.opts.dry_run {
            std::fs::create_dir_all(env.cache.join("logs"))?;
            std::fs::create_dir_all(&dir)?;
        }
        let mut stage_deps = deps.clone();
        let mut array_id = None;
        if res.shards > 1 {
            let sc = script(env, self.opts, &name, key, res, Some(res.shards), &deps)?;
            let id = self.sbatch_or_print(&dir, &name, key, "shards", &sc, &deps)?;
            self.record(
                db,
                (&id, key, &name),
                ("shards", res.shards),
                &deps,
                &sc.log,
            )?;
            stage_deps = vec![id.clone()];
            array_id = Some(id);
        }
        let sc = script(env, self.opts, &name, key, res, None, &stage_deps)?;
        let id = self.sbatch_or_print(&dir, &name, key, "stage", &sc, &stage_deps)?;
        self.record(db, (&id, key, &name), ("stage", 1), &stage_deps, &sc.log)?;
        if !self.opts.dry_run {
            let after = if deps.is_empty() {
                String::new()
            } else {
                format!("  after {}", deps.join(","))
            };
            let arr = array_id
                .as_ref()
                .map(|a| format!(" (array {a}: {} shards)", res.shards))
                .unwrap_or_default();
            self.say(
                json!({"event": "submitted", "stage": name, "key": key, "job": id, "array": array_id, "shards": res.shards, "after": deps}),
                format!("submitted  {name}  job {id}{arr}{after}"),
            );
        }
        Ok(id)
    }

    fn sbatch_or_print(
        &mut self,
        dir: &Path,
        name: &str,
        key: &str,
        role: &str,
        sc: &Script,
        deps: &[String],
    ) -> Result<String> {
        if self.opts.dry_run {
            let id = format!(
                "<{}{}>",
                name,
                if role == "shards" { " shards" } else { "" }
            );
            let _ = deps;
            println!(
                "# --- {role} job of {name} (key {})\n{}",
                short(key),
                sc.text
            );
            return Ok(id);
        }
        let path = dir.join(format!("{}-{}-{role}.sh", slug(name), &key[..12]));
        crate::store::write_atomic(&path, sc.text.as_bytes())?;
        self.pace();
        let id = slurm::sbatch(&path)
            .map_err(|e| anyhow!("submitting {name} ({}): {e:#}", path.display()))?;
        self.jobs_sent += 1;
        Ok(id)
    }

    /// Files a submitted job: (job id, stage key, stage name), (role, array tasks), the jobs it
    /// waits for, its log.
    fn record(
        &self,
        db: &Db,
        (id, key, name): (&str, &str, &str),
        (role, tasks): (&str, usize),
        deps: &[String],
        log: &str,
    ) -> Result<()> {
        if self.opts.dry_run {
            return Ok(());
        }
        db.put_job(&Job {
            id: id.to_string(),
            key: key.to_string(),
            stage: name.to_string(),
            pipeline: self.env.pipeline_id.clone(),
            role: role.to_string(),
            tasks: tasks as i64,
            deps: deps.join(","),
            log: log.to_string(),
            submitted: now(),
            state: "PENDING".into(),
            reason: String::new(),
            done_tasks: 0,
        })
    }
}

impl Session<'_> {
    /// `--watch`: polls Slurm, reports each job's change and the counts, and submits what waited
    /// for room, until no job is open.
    fn watch(&mut self, db: &mut Db, mut deferred: usize, t0: Instant) -> Result<()> {
        let poll = std::env::var("PIPELINE_POLL_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(2.0);
        let mut last_counts = String::new();
        loop {
            std::thread::sleep(Duration::from_secs_f64(poll));
            for j in refresh(db)? {
                self.say(
                    json!({"event": "job", "job": j.id, "stage": j.stage, "role": j.role, "state": j.state, "word": word(&j), "reason": j.reason, "done_tasks": j.done_tasks, "tasks": j.tasks, "log": j.log}),
                    format!("{:<10} {}{}  {}", word(&j), j.stage, if j.role == "shards" { " (shards)" } else { "" }, describe(&j)),
                );
            }
            if deferred > 0 {
                deferred = self.pass(db)?;
            }
            let jobs = db.jobs()?;
            let open = jobs
                .iter()
                .filter(|j| !slurm::is_terminal(&j.state))
                .count();
            let mut n: BTreeMap<&str, usize> = BTreeMap::new();
            for j in latest_jobs(db)?.values() {
                *n.entry(word(j)).or_default() += 1;
            }
            let counts = format!(
                "{} queued, {} running, {} done, {} failed, {} cancelled",
                n.get("queued").unwrap_or(&0),
                n.get("running").unwrap_or(&0),
                n.get("done").unwrap_or(&0),
                n.get("failed").unwrap_or(&0),
                n.get("cancelled").unwrap_or(&0)
            );
            if counts != last_counts && !self.opts.json {
                println!("[{:>4.0}s] {counts}", t0.elapsed().as_secs_f64());
            }
            last_counts = counts;
            if open == 0 && deferred == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// Stages in an order where every input comes before its dependents.
fn topo(plan: &Plan, selected: &[usize]) -> Vec<usize> {
    let want: HashSet<usize> = selected.iter().copied().collect();
    let mut done: HashSet<usize> = HashSet::new();
    let mut order = Vec::new();
    while order.len() < want.len() {
        let before = order.len();
        for &i in selected {
            if done.contains(&i) {
                continue;
            }
            if plan.stages[i]
                .inputs
                .iter()
                .all(|n| done.contains(&plan.index[n]) || !want.contains(&plan.index[n]))
            {
                done.insert(i);
                order.push(i);
            }
        }
        if order.len() == before {
            break; // a cycle, which config validation rules out
        }
    }
    order
}

/// The command-line values that go into batch scripts, checked before anything is submitted.
fn check_script_values(env: &Env, opts: &SubmitOpts) -> crate::Result<()> {
    for (flag, v) in [
        ("--partition", &opts.partition),
        ("--account", &opts.account),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !crate::config::valid_partition(v)) {
            return Err(crate::Error::Usage(format!(
                "{flag} {v:?}: expected letters, digits, `_ . -` (and `,` between several)"
            )));
        }
    }
    // Paths go into `#SBATCH --output=` in double quotes: nothing that would end them.
    let cache = env.cache.to_string_lossy();
    if cache
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(crate::Error::Usage(format!(
            "cache folder {cache:?}: batch scripts cannot name a path with control characters, \
             quotes or backslashes; use another --cache"
        )));
    }
    Ok(())
}

pub fn submit(env: &Env, opts: &SubmitOpts) -> crate::Result<i32> {
    check_script_values(env, opts)?;
    let plan = env.plan;
    let selected = plan.select(&opts.targets)?;
    if !opts.dry_run {
        slurm::available()?;
        Db::make_shared(&env.cache)?;
    }
    let mut db = Db::open(&env.cache)?;
    let (planned, lease) = env.plan_leased(&mut db, &selected)?;
    let submitting = crate::db::now();
    let mut keys = HashMap::new();
    let mut per_item = HashMap::new();
    let mut fresh = 0;
    for p in &planned {
        let s = &plan.stages[p.idx];
        let stage = env.reg.get(&s.kind).expect("validated kind");
        per_item.insert(p.idx, !matches!(stage.mode(&s.params), StageMode::Table));
        keys.insert(
            p.idx,
            p.key
                .as_ref()
                .map(|k| k.key.clone())
                .map_err(|e| e.to_string()),
        );
        fresh += usize::from(p.artifact.is_some());
    }
    if !opts.dry_run {
        refresh(&db)?;
    }
    let mut sess = Session {
        env,
        opts,
        order: topo(plan, &selected),
        keys,
        per_item,
        sent: HashSet::new(),
        last_sbatch: None,
        jobs_sent: 0,
    };
    let t0 = Instant::now();
    let deferred = sess.pass(&mut db)?;
    // What the jobs need stays leased while any of them has not ended.
    let sent: Vec<String> = db
        .jobs()?
        .into_iter()
        .filter(|j| j.submitted >= submitting)
        .map(|j| j.id)
        .collect();
    lease.hand_to_jobs(&sent)?;
    let queued_before = |db: &Db| -> Result<usize> {
        Ok(db
            .jobs()?
            .iter()
            .filter(|j| j.role == "stage" && !slurm::is_terminal(&j.state))
            .count())
    };
    if !opts.dry_run {
        let q = queued_before(&db)?;
        sess.say(
            json!({"event": "submit", "fresh": fresh, "stages": selected.len(), "jobs_submitted": sess.jobs_sent, "queued": q, "waiting_for_room": deferred}),
            format!(
                "{} of {} stages fresh; {} job(s) submitted; {q} stage job(s) queued or running{}",
                fresh,
                selected.len(),
                sess.jobs_sent,
                if deferred > 0 {
                    format!("; {deferred} stage(s) wait for room under --max-jobs (submit again, or --watch)")
                } else {
                    String::new()
                }
            ),
        );
    }
    if opts.dry_run || !opts.watch {
        return Ok(EXIT_OK);
    }
    sess.watch(&mut db, deferred, t0)?;
    // The outcome is what the cache holds now.
    let planned = env.plan_state(&mut db, &selected)?;
    let missing: Vec<&str> = planned
        .iter()
        .filter(|p| p.artifact.is_none())
        .map(|p| plan.stages[p.idx].name.as_str())
        .collect();
    let partial = planned
        .iter()
        .filter(|p| p.artifact.as_ref().is_some_and(|a| a.failed_items > 0))
        .count();
    let code = if !missing.is_empty() {
        EXIT_FAILED
    } else if partial > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    };
    sess.say(
        json!({"summary": {"done": planned.len() - missing.len(), "not_done": missing, "partial": partial, "exit_code": code, "secs": t0.elapsed().as_secs_f64()}}),
        if missing.is_empty() {
            format!("all {} stages done in {:.1}s", planned.len(), t0.elapsed().as_secs_f64())
        } else {
            format!(
                "{} of {} stages not done: {} (`pipeline status` shows why; `pipeline submit` sends them again)",
                missing.len(),
                planned.len(),
                missing.join(", ")
            )
        },
    );
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quoting_survive_the_shell() {
        assert_eq!(
            slug("fusion[seed=1,fusion=concat]"),
            "fusion.seed-1.fusion-concat"
        );
        assert_eq!(sh_quote("a=b"), "a=b");
        assert_eq!(sh_quote("x[y=1]"), "'x[y=1]'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let sh = |q: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        for s in ["it's a $HOME `x`", "fusion[a=1,b=2]", "vars.seeds=1..5"] {
            assert_eq!(sh(&sh_quote(s)), s);
        }
    }
}
