//! Read-only views: `status`, `show`, `dag`.

use anyhow::{anyhow, Result};
use serde_json::json;

use crate::db::Db;
use crate::keys::short;
use crate::run::{explain, Env};

pub fn status(env: &Env, targets: &[String], as_json: bool, clips: bool) -> crate::Result<i32> {
    let selected = env.plan.select(targets)?;
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &selected)?;
    let items = crate::run::forecast::forecast(env, &db, &planned)?;
    // Cluster jobs: only asked about when some were submitted and are not finished.
    let refreshed = crate::submit::refresh(&db);
    let jobs = crate::submit::latest_jobs(&db)?;
    // One read snapshot for every stage's reasons (see `Db::read_snapshot`).
    let rows = db.read_snapshot(|db| {
        let mut rows = Vec::new();
        for p in &planned {
            let s = &env.plan.stages[p.idx];
            let (state, reasons, key) = match (&p.key, &p.artifact) {
                (Err(e), _) => ("stale", vec![format!("cannot plan: {e}")], None),
                (Ok(k), Some(a)) => {
                    let r = if a.failed_items > 0 {
                        vec![format!(
                            "{} item(s) failed; see `pipeline show {}`",
                            a.failed_items, s.name
                        )]
                    } else {
                        vec![]
                    };
                    ("fresh", r, Some(k.key.clone()))
                }
                (Ok(k), None) => {
                    let r = explain(db, &env.pipeline_id, &s.name, k)?;
                    let state = if r == ["never run"] {
                        "never-run"
                    } else {
                        "stale"
                    };
                    let mut r = if state == "never-run" { vec![] } else { r };
                    r.extend(items.get(&p.idx).map(|i| i.text()));
                    (state, r, Some(k.key.clone()))
                }
            };
            // A stage not in the cache that was submitted: what its job is doing.
            let (state, reasons, job) = match key.as_ref().and_then(|k| jobs.get(k)) {
                Some(j) if state != "fresh" => {
                    let w = crate::submit::word(j);
                    let mut r = reasons;
                    r.insert(0, crate::submit::describe(j));
                    let st = if w == "done" { state } else { w };
                    (st, r, Some(j))
                }
                _ => (state, reasons, None),
            };
            rows.push((
                s.name.clone(),
                state,
                reasons,
                key,
                job.cloned(),
                items.get(&p.idx),
            ));
        }
        Ok(rows)
    })?;
    if let Err(e) = &refreshed {
        eprintln!("warning: could not ask the cluster about submitted jobs: {e:#}");
    }
    if as_json {
        let stages: Vec<_> = rows
            .iter()
            .map(|(n, st, r, k, j, i)| {
                let job = j.as_ref().map(|j| {
                    json!({"id": j.id, "role": j.role, "state": j.state, "reason": j.reason,
                           "done_tasks": j.done_tasks, "tasks": j.tasks, "log": j.log})
                });
                json!({"name": n, "state": st, "reasons": r, "key": k, "job": job, "items": i})
            })
            .collect();
        println!("{}", json!({"stages": stages}));
    } else {
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (n, st, r, k, _, i) in &rows {
            let k = k.as_deref().map(short).unwrap_or("-");
            println!("{n:<w$}  {st:<9}  {k}");
            for reason in r {
                println!("{:<w$}    - {reason}", "");
            }
            if let Some(c) = i.and_then(|i| i.clips.as_ref()).filter(|_| clips) {
                for (what, list) in [
                    ("new", &c.new),
                    ("changed", &c.changed),
                    ("removed", &c.removed),
                    ("failed", &c.failed),
                ] {
                    if !list.is_empty() {
                        println!("{:<w$}    {what}: {}", "", list.join(" "));
                    }
                }
            }
        }
    }
    Ok(0)
}

/// `pipeline show`: one stage's artifact, or why there is none.
pub fn show(env: &Env, name: &str, nrows: usize, as_json: bool) -> crate::Result<i32> {
    if env.plan.get(name).is_none() {
        let variants: Vec<&str> = env
            .plan
            .stages
            .iter()
            .filter(|s| s.base == name)
            .map(|s| s.name.as_str())
            .collect();
        let names = env.plan.stages.iter().map(|s| s.name.as_str());
        return Err(crate::Error::Target(if variants.is_empty() {
            format!(
                "no stage `{name}` in {}{}",
                env.plan.file.display(),
                crate::config::did_you_mean(name, names)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "`{name}` is a matrix stage; show one variant: {}",
                variants.join(", ")
            )
        }));
    }
    Ok(show_stage(env, name, nrows, as_json)?)
}

fn show_stage(env: &Env, name: &str, nrows: usize, as_json: bool) -> Result<i32> {
    let s = env.plan.get(name).expect("checked by show");
    let selected = env
        .plan
        .select(std::slice::from_ref(&s.name))
        .map_err(|e| anyhow!(e))?;
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &selected)?;
    let p = planned
        .iter()
        .find(|p| p.idx == env.plan.index[&s.name])
        .expect("selected");
    let key = p
        .key
        .as_ref()
        .map_err(|e| anyhow!("cannot plan {name}: {e}"))?;
    // An artifact marked for retry is still shown, with why the next run computes it again.
    let retry = db.retry_reason(&key.key)?;
    let marked = match retry {
        Some(_) => db
            .artifact(&key.key)?
            .filter(|a| env.store.object_path(&a.object).exists()),
        None => None,
    };
    let Some(a) = p.artifact.as_ref().or(marked.as_ref()) else {
        let why = explain(&db, &env.pipeline_id, &s.name, key)?;
        if as_json {
            println!(
                "{}",
                json!({"stage": s.name, "kind": s.kind, "key": key.key, "state": "not computed", "reasons": why})
            );
        } else {
            println!(
                "stage   {}\nkind    {}\nkey     {}\nstate   not computed ({})",
                s.name,
                s.kind,
                key.key,
                why.join("; ")
            );
        }
        return Ok(0);
    };
    let errors = db.item_errors(&a.key)?;
    let runtime = db.runtime(&a.key)?;
    let path = env.store.object_path(&a.object);
    let (table, meta) = env.store.get_table_and_metadata(&a.object)?;
    if as_json {
        let meta = crate::export::provenance(&meta);
        let errs: Vec<_> = errors
            .iter()
            .map(|e| json!({"item": e.item, "field": e.field, "reason": e.reason}))
            .collect();
        println!(
            "{}",
            json!({"stage": s.name, "kind": s.kind, "key": a.key, "state": if retry.is_some() { "retry" } else { "fresh" }, "retry": retry, "artifact": path, "rows": a.rows,
                   "bytes": a.bytes, "schema": a.schema, "failed_items": errs, "params": s.params.0, "runtime": runtime,
                   "metadata": meta})
        );
        return Ok(0);
    }
    println!("stage     {}", s.name);
    println!("kind      {}", s.kind);
    println!("key       {}", a.key);
    println!("artifact  {}", path.display());
    if let Some(r) = &retry {
        println!("retry     the next run computes it again: {r}");
    }
    println!("rows      {}  ({} bytes, Parquet zstd)", a.rows, a.bytes);
    println!("params    {}", serde_json::to_string(&s.params.0)?);
    if let Some(r) = &runtime {
        let gpus = if r.gpus.is_empty() {
            String::new()
        } else {
            format!(", GPUs {}", r.gpus)
        };
        println!(
            "computed  on {}, {} libtorch thread(s){gpus}, host {}",
            r.device, r.threads, r.host
        );
    }
    if let Some(d) = &s.desc {
        println!("desc      {d}");
    }
    if !s.resources.is_empty() {
        println!("resources {}", serde_json::to_string(&s.resources)?);
    }
    println!("schema");
    for f in table.schema().fields() {
        println!("  {}: {}", f.name(), f.data_type());
    }
    print_metadata(&meta);
    if !errors.is_empty() {
        println!("failed items ({})", errors.len());
        for e in &errors {
            println!("  {} [{}]: {}", e.item, e.field, e.reason);
        }
    }
    if nrows > 0 && table.num_rows() > 0 {
        let head = table.slice(0, nrows.min(table.num_rows()));
        println!("first {} rows", head.num_rows());
        println!("{}", arrow::util::pretty::pretty_format_batches(&[head])?);
    }
    Ok(0)
}

/// The artifact's own Parquet metadata, as a reader of the file outside the cache sees it.
fn print_metadata(meta: &[(String, String)]) {
    if meta.is_empty() {
        println!("metadata  none (written before artifacts carried it)");
        return;
    }
    println!("metadata (Parquet key-value)");
    let width = meta.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in meta {
        println!("  {k:<width$}  {v}");
    }
}

/// `pipeline show STAGE --path`: the artifact's path, then for a per-clip stage stored an
/// object per clip, a line per clip: its id and its object's path.
pub fn show_paths(env: &Env, name: &str) -> crate::Result<i32> {
    if env.plan.get(name).is_none() {
        return show(env, name, 0, false);
    }
    let idx = env.plan.index[name];
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &env.plan.select(&[name.to_string()])?)?;
    let Some(a) = planned
        .into_iter()
        .find(|p| p.idx == idx)
        .and_then(|p| p.artifact)
    else {
        return Err(anyhow!("`{name}` is not computed; `pipeline run {name}` first").into());
    };
    println!("{}", env.store.object_path(&a.object).display());
    let t = env.store.get_table(&a.object)?;
    let s = &env.plan.stages[idx];
    let blobs = env.reg.get(&s.kind).and_then(|k| k.blob_column(&s.params));
    let (objects, path): (_, &dyn Fn(&str) -> std::path::PathBuf) = match blobs {
        Some(c) => (stages::table::str_col(&t, c), &|h| env.store.blob_path(h)),
        None => (stages::table::str_col(&t, "object"), &|h| {
            env.store.object_path(h)
        }),
    };
    let (Ok(objects), Some(ids)) = (
        objects,
        t.schema().fields().first().map(|f| f.name().clone()),
    ) else {
        return Ok(0);
    };
    let ids = stages::table::str_col(&t, &ids).map_err(|e| anyhow!("{e}"))?;
    for r in 0..t.num_rows() {
        println!("{}\t{}", ids.value(r), path(objects.value(r)).display());
    }
    Ok(0)
}
