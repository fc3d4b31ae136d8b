//! `pipeline run`: decide fresh/stale from keys, then execute the stale stages in dependency
//! order, `-j` at a time, each on a thread of its own, and record the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use super::gpus::{self, Ask, Pool};
use super::holds::Holds;
use super::stage::{dispatch, explain, update_state};
use super::{
    cpus_asked, cpus_of, panic_text, Env, Finished, Job, Outcome, Planned, RunOpts, StageRun,
    Tables, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL,
};
use crate::db::Db;
use crate::keys::StageKey;
use crate::report::Reporter;

pub fn run(env: &Env, opts: &RunOpts, rep: &Reporter) -> crate::Result<i32> {
    let started = Instant::now();
    let selected = env.plan.select(&opts.targets)?;
    let mut db = Db::open(&env.cache)?;
    let (mut planned, _lease) = if opts.dry_run {
        (env.plan_state(&mut db, &selected)?, None)
    } else {
        let (p, l) = env.plan_leased(&mut db, &selected)?;
        (p, Some(l))
    };
    if opts.retry_failed {
        retry_failed(&db, &mut planned, opts.dry_run)?;
    }
    if opts.dry_run {
        print_plan(env, &db, &planned, rep)?;
        return Ok(EXIT_OK);
    }
    let mut book = Book::seed(env, &db, planned)?;
    let mut pool = gpus::Pool::new(opts.gpus.clone());
    let asks = gpus::plan_asks(env, &book.todo, pool.len(), rep)?;
    if rep.verbosity() == crate::report::Verbosity::Verbose && !rep.is_json() {
        for &i in &book.todo {
            let s = &env.plan.stages[i];
            let why = explain(&db, &env.pipeline_id, &s.name, &book.keyof[&i])?;
            rep.line(&format!("why    {}  ({})", s.name, why.join("; ")));
        }
    }
    let run_id = db.begin_run(&env.pipeline_id, &opts.argv)?;
    db.put_run_info(run_id, &env.plan.sets, &crate::runs::plan_params(env.plan))?;
    book.report_cached(rep);
    book.schedule(env, opts, (&mut pool, &asks), rep)?;
    book.skip_unstarted(env, rep);
    let summary = book.record(&db, run_id)?;
    db.end_run(run_id, summary.code)?;
    let secs = started.elapsed().as_secs_f64();
    super::reports::print_reports(env, &db, &book.results, rep)?;
    summary.print(rep, run_id, secs);
    Ok(summary.code)
}

/// `--retry-failed`: a cached stage with failed items is computed again (its finished items
/// are reused, so only the failed ones are tried).
fn retry_failed(db: &Db, planned: &mut [Planned], dry_run: bool) -> Result<()> {
    for p in planned.iter_mut() {
        if let Some(a) = p.artifact.as_ref().filter(|a| a.failed_items > 0) {
            if !dry_run {
                db.mark_retry(
                    &a.key,
                    &format!("--retry-failed: {} item(s) failed earlier", a.failed_items),
                )?;
            }
            p.artifact = None;
        }
    }
    Ok(())
}

/// `--dry-run`: each selected stage's state and, for a stale one, why it would run.
fn print_plan(env: &Env, db: &Db, planned: &[Planned], rep: &Reporter) -> Result<()> {
    let items = super::forecast::forecast(env, db, planned)?;
    for p in planned {
        let s = &env.plan.stages[p.idx];
        let (state, why) = match (&p.key, &p.artifact) {
            (Err(e), _) => ("error", vec![e.to_string()]),
            (Ok(_), Some(_)) => ("cached", vec![]),
            (Ok(k), None) => {
                let mut why = explain(db, &env.pipeline_id, &s.name, k)?;
                why.extend(items.get(&p.idx).map(|i| i.text()));
                ("run", why)
            }
        };
        if rep.is_json() {
            rep.event(json!({"event": "plan", "stage": s.name, "state": state, "key": p.key.as_ref().ok().map(|k| &k.key), "reasons": why}));
        } else if why.is_empty() {
            println!("{state:<6} {}", s.name);
        } else {
            println!("{state:<6} {}  ({})", s.name, why.join("; "));
        }
    }
    Ok(())
}

/// A stage that finished on a worker thread.
struct Done {
    idx: usize,
    /// The CPUs it held.
    need: usize,
    /// The GPUs it held.
    gpus: Vec<usize>,
    result: Result<StageRun, String>,
}

/// Whether a stage can start: its inputs all finished, one of them failed, or not yet.
enum Ready {
    Go(Vec<String>),
    Blocked(String),
    Wait,
}

/// What a run knows of its selected stages: the finished ones, those still to run, and every
/// key that could be computed.
struct Book {
    results: BTreeMap<usize, Finished>,
    todo: Vec<usize>,
    keyof: HashMap<usize, StageKey>,
}

impl Book {
    /// Cached stages are finished from the start; stale ones wait in plan order.
    fn seed(env: &Env, db: &Db, planned: Vec<Planned>) -> Result<Book> {
        let mut book = Book {
            results: BTreeMap::new(),
            todo: Vec::new(),
            keyof: HashMap::new(),
        };
        for p in planned {
            let name = env.plan.stages[p.idx].name.clone();
            match (p.key, p.artifact) {
                (Err(e), _) => {
                    book.results.insert(p.idx, (name, None, Err(e.to_string())));
                }
                (Ok(k), Some(a)) => {
                    let errors = if a.failed_items > 0 {
                        db.item_errors(&a.key)?
                    } else {
                        Vec::new()
                    };
                    update_state(db, &env.pipeline_id, &name, &k)?;
                    let run = StageRun::cached(0.0, errors);
                    book.results
                        .insert(p.idx, (name, Some(k.key.clone()), Ok(run)));
                    book.keyof.insert(p.idx, k);
                }
                (Ok(k), None) => {
                    book.keyof.insert(p.idx, k);
                    book.todo.push(p.idx);
                }
            }
        }
        Ok(book)
    }

    fn report_cached(&self, rep: &Reporter) {
        for (name, _, r) in self.results.values() {
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
                Err(e) => rep.stage_done(name, "failed", &json!({"error": e}), e),
            }
        }
    }

    fn readiness(&self, env: &Env, idx: usize) -> Ready {
        let plan = env.plan;
        let inputs: Vec<usize> = plan.stages[idx]
            .inputs
            .iter()
            .map(|n| plan.index[n])
            .collect();
        let failed = |j: &&usize| self.results.get(*j).is_some_and(|r| r.2.is_err());
        if let Some(bad) = inputs.iter().find(failed) {
            return Ready::Blocked(format!(
                "skipped: input `{}` failed",
                plan.stages[*bad].name
            ));
        }
        if inputs
            .iter()
            .all(|j| self.results.get(j).is_some_and(|r| r.2.is_ok()))
        {
            return Ready::Go(inputs.iter().map(|j| self.keyof[j].key.clone()).collect());
        }
        Ready::Wait
    }

    /// The keys of stage `idx`'s inputs (those that could be planned).
    fn input_keys(&self, env: &Env, idx: usize) -> Vec<String> {
        env.plan.stages[idx]
            .inputs
            .iter()
            .filter_map(|n| self.keyof.get(&env.plan.index[n]).map(|k| k.key.clone()))
            .collect()
    }

    fn fail(&mut self, name: String, idx: usize, msg: String) {
        let key = self.keyof.get(&idx).map(|k| k.key.clone());
        self.results.insert(idx, (name, key, Err(msg)));
    }

    /// Starts every stage whose inputs are done, up to `-j` at a time and while the CPUs and
    /// GPUs it asks are free, until none is left.
    fn schedule(
        &mut self,
        env: &Env,
        opts: &RunOpts,
        (pool, asks): (&mut Pool, &HashMap<usize, Ask>),
        rep: &Reporter,
    ) -> Result<()> {
        let tables = Tables::default();
        let inputs_of: HashMap<usize, Vec<String>> = self
            .todo
            .iter()
            .map(|&i| (i, self.input_keys(env, i)))
            .collect();
        let mut holds = Holds::new(inputs_of.values().map(Vec::as_slice));
        let (tx, rx) = mpsc::channel::<Done>();
        let mut running = 0usize;
        let mut busy = 0usize;
        let mut stop = self.results.values().any(|r| r.2.is_err()) && !opts.keep_going;
        std::thread::scope(|scope| {
            loop {
                let mut i = 0;
                while i < self.todo.len() && running < opts.jobs.max(1) && !stop {
                    let idx = self.todo[i];
                    let need = cpus_of(env, idx, opts.cpus);
                    let input_keys = match self.readiness(env, idx) {
                        Ready::Wait => {
                            i += 1;
                            continue;
                        }
                        Ready::Blocked(msg) => {
                            let name = env.plan.stages[idx].name.clone();
                            rep.stage_done(&name, "skipped", &json!({"error": msg}), &msg);
                            self.fail(name, idx, msg);
                            self.todo.remove(i);
                            holds.done(&inputs_of[&idx], None, &tables);
                            continue;
                        }
                        // A stage waits for its CPUs, unless nothing runs.
                        Ready::Go(_) if running > 0 && busy + need > opts.cpus => {
                            i += 1;
                            continue;
                        }
                        Ready::Go(keys) => keys,
                    };
                    // A stage waits for its GPUs (the check before the run made sure that it
                    // fits once the others are done).
                    let Some(held) = pool.take(asks[&idx]) else {
                        i += 1;
                        continue;
                    };
                    let gpu_ids = pool.ids(&held);
                    self.todo.remove(i);
                    running += 1;
                    busy += need;
                    let (tx, key, tables) = (tx.clone(), self.keyof[&idx].clone(), &tables);
                    scope.spawn(move || {
                        // A panic inside a stage (a library's assertion) fails that stage like
                        // an error would; otherwise the run would wait for it forever.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut job = Job::new(env, idx, &key, &input_keys);
                            job.cpus = need;
                            job.threads = cpus_asked(env, idx).unwrap_or(need);
                            job.gpus = gpu_ids;
                            dispatch(env, rep, &job, tables).map_err(|e| format!("{e:#}"))
                        }))
                        .unwrap_or_else(|p| Err(format!("the stage panicked: {}", panic_text(&p))));
                        let _ = tx.send(Done {
                            idx,
                            need,
                            gpus: held,
                            result,
                        });
                    });
                }
                if running == 0 {
                    break;
                }
                let d = rx.recv().expect("workers hold a sender");
                running -= 1;
                busy -= d.need;
                pool.give_back(&d.gpus);
                let (idx, own) = (d.idx, self.keyof.get(&d.idx).map(|k| k.key.clone()));
                if !self.finish(env, rep, d) && !opts.keep_going {
                    stop = true;
                }
                holds.done(&inputs_of[&idx], own.as_deref(), &tables);
            }
        });
        Ok(())
    }

    /// Reports a finished stage and files its result; false if it failed.
    fn finish(&mut self, env: &Env, rep: &Reporter, d: Done) -> bool {
        let name = env.plan.stages[d.idx].name.clone();
        let key = self.keyof.get(&d.idx).map(|k| k.key.clone());
        let ok = d.result.is_ok();
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
                rep.stage_done(&name, sr.outcome.as_str(), &json!({"secs": sr.secs, "computed": sr.computed, "reused": sr.reused, "failed": sr.errors.len(), "key": key}), &text);
            }
            Err(e) => rep.stage_done(&name, "failed", &json!({"error": e}), e),
        }
        self.results.insert(d.idx, (name, key, d.result));
        ok
    }

    /// Stages left waiting because an earlier one failed (without `--keep-going`).
    fn skip_unstarted(&mut self, env: &Env, rep: &Reporter) {
        for idx in std::mem::take(&mut self.todo) {
            let name = env.plan.stages[idx].name.clone();
            rep.stage_done(
                &name,
                "skipped",
                &json!({"error": "not started: an earlier stage failed"}),
                "not started: an earlier stage failed (use --keep-going to run independent stages)",
            );
            self.fail(name, idx, "not started".into());
        }
    }

    /// Writes every stage's outcome to the run history; the run's summary and exit code.
    fn record(&self, db: &Db, run_id: i64) -> Result<Summary> {
        let mut sum = Summary::default();
        for (name, key, r) in self.results.values() {
            match r {
                Ok(sr) => {
                    if sr.outcome == Outcome::Cached {
                        sum.cached.push(name.clone())
                    } else {
                        sum.ran.push(name.clone())
                    }
                    if !sr.errors.is_empty() {
                        sum.partial.push(name.clone());
                        sum.failed_items += sr.errors.len();
                    }
                    let counts = (sr.computed, sr.reused, sr.errors.len());
                    let outcome = sr.outcome.as_str();
                    db.record_stage(
                        run_id,
                        (name, key.as_deref()),
                        (outcome, sr.secs),
                        counts,
                        None,
                    )?;
                }
                Err(e) => {
                    sum.failed.push(name.clone());
                    let key = key.as_deref();
                    db.record_stage(run_id, (name, key), ("failed", 0.0), (0, 0, 0), Some(e))?;
                }
            }
        }
        sum.code = if !sum.failed.is_empty() {
            EXIT_FAILED
        } else if !sum.partial.is_empty() {
            EXIT_PARTIAL
        } else {
            EXIT_OK
        };
        Ok(sum)
    }
}

#[derive(Default)]
struct Summary {
    ran: Vec<String>,
    cached: Vec<String>,
    failed: Vec<String>,
    partial: Vec<String>,
    failed_items: usize,
    code: i32,
}

impl Summary {
    fn print(&self, rep: &Reporter, run_id: i64, secs: f64) {
        if rep.is_json() {
            rep.event(json!({"summary": {"ran": self.ran, "cached": self.cached, "failed": self.failed, "partial": self.partial, "failed_items": self.failed_items, "exit_code": self.code, "secs": secs, "run": run_id}}));
            return;
        }
        let mut s = format!(
            "{} ran, {} cached, {} failed",
            self.ran.len(),
            self.cached.len(),
            self.failed.len()
        );
        if self.failed_items > 0 {
            s.push_str(&format!(
                "; {} item(s) failed in {} (partial; `pipeline show STAGE` lists them)",
                self.failed_items,
                self.partial.join(", ")
            ));
        }
        println!("{s} in {secs:.3}s");
    }
}
