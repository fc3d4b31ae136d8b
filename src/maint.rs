//! Cache upkeep: `gc` and `verify`.

use arrow::array::Array;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config;
use crate::db::Db;
use crate::keys::short;
use crate::registry::Registry;
use crate::run::Env;
use crate::store::Store;

/// Keeps what the pipelines in `<root>/pipeline/` would use now, what the last `keep_runs`
/// runs used (with their `--set`s) and what live runs, `exec`s and unfinished cluster jobs
/// planned (their leases); drops every other artifact, object, cached item, temp file of a
/// dead writer and object set aside as corrupt.
pub fn gc(reg: &Registry, root: &Path, cache: &Path, keep_runs: i64, dry_run: bool) -> Result<i32> {
    let store = Store::open(cache)?;
    // Exclusive: no run plans or takes its lease while gc decides and deletes.
    let guard = crate::lease::gc_lock(cache)?;
    guard.lock().context("waiting for runs that are planning")?;
    let mut db = Db::open(cache)?;
    let mut keep_keys: HashSet<String> = db.recent_run_keys(keep_runs)?.into_iter().collect();
    let mut keep_ids: HashSet<String> = HashSet::new();
    let open_jobs = open_jobs(&db);
    let leases = crate::lease::live(&db, &open_jobs)?;
    let live = leases.count;
    keep_keys.extend(leases.keys);
    keep_ids.extend(leases.stage_ids);
    // A live owner may have stored an object and not yet recorded it: objects written since
    // the oldest live lease was taken stay (with a second of slack for file-time granularity).
    let young_since = leases
        .oldest
        .map(|t| std::time::UNIX_EPOCH + Duration::from_secs_f64((t - 1.0).max(0.0)));
    keep_keys.extend(
        db.jobs()?
            .into_iter()
            .filter(|j| open_jobs.contains(&j.id))
            .map(|j| j.key),
    );
    let files = pipeline_files(root)?;
    for f in &files {
        live_keys(
            reg,
            root,
            cache,
            &mut db,
            f,
            (&mut keep_keys, &mut keep_ids),
        )?;
    }
    let artifacts = db.artifacts()?;
    for a in &artifacts {
        if keep_keys.contains(&a.key) {
            keep_ids.insert(a.stage_id.clone());
        }
    }
    let drop_artifacts: Vec<_> = artifacts
        .iter()
        .filter(|a| !keep_keys.contains(&a.key))
        .collect();
    let mut keep_objects: HashSet<String> = artifacts
        .iter()
        .filter(|a| keep_keys.contains(&a.key))
        .map(|a| a.object.clone())
        .collect();
    // Items of sharded stages live in objects of their own, referenced from the item cache;
    // tables in parts in part objects; `command` outputs in blobs.
    keep_objects.extend(shard_objects(&db, &keep_ids)?);
    keep_objects.extend(owned(&db, "SELECT stage_id, object FROM parts", &keep_ids)?);
    let owners: HashSet<String> = keep_ids.union(&keep_keys).cloned().collect();
    keep_objects.extend(owned(&db, "SELECT owner, hash FROM blob_refs", &owners)?);
    let drop_objects: Vec<_> = store
        .objects()?
        .into_iter()
        .filter(|(h, _)| !keep_objects.contains(h.as_str()))
        .filter(|(_, p)| {
            young_since.is_none_or(|since| {
                p.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < since)
            })
        })
        .collect();
    let object_bytes: u64 = drop_objects
        .iter()
        .filter_map(|(_, p)| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    let item_count = dropped_items(&db, &keep_ids)?;
    let mut temps = store.dead_temps();
    temps.extend(set_aside(cache));
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb}: {} artifact(s), {} object(s) ({:.1} MiB), {item_count} cached item(s), {} dead temp or set-aside file(s); kept {} artifact(s) from {} pipeline(s), the last {keep_runs} run(s) and {live} live run(s) or job(s)",
        drop_artifacts.len(),
        drop_objects.len(),
        object_bytes as f64 / 1048576.0,
        temps.len(),
        artifacts.len() - drop_artifacts.len(),
        files.len()
    );
    if dry_run {
        for a in &drop_artifacts {
            println!("  artifact {} ({})", short(&a.key), a.stage);
        }
        return Ok(0);
    }
    let tx = db
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("starting gc's deletions in the index")?;
    for a in &drop_artifacts {
        tx.execute("DELETE FROM artifacts WHERE key = ?1", [&a.key])?;
        tx.execute("DELETE FROM item_errors WHERE key = ?1", [&a.key])?;
        tx.execute("DELETE FROM runtime WHERE key = ?1", [&a.key])?;
        let _ = std::fs::remove_file(store.lock_path(&a.key));
    }
    let ids: Vec<String> = {
        let mut st = tx.prepare("SELECT DISTINCT stage_id FROM items")?;
        let v = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        v
    };
    for id in ids.iter().filter(|i| !keep_ids.contains(*i)) {
        tx.execute("DELETE FROM items WHERE stage_id = ?1", [id])?;
    }
    for (table, col, keep) in [
        ("parts", "stage_id", &keep_ids),
        ("blob_refs", "owner", &owners),
    ] {
        let gone: Vec<String> = {
            let mut st = tx.prepare(&format!("SELECT DISTINCT {col} FROM {table}"))?;
            let v = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            v.into_iter().filter(|o| !keep.contains(o)).collect()
        };
        for o in gone {
            tx.execute(&format!("DELETE FROM {table} WHERE {col} = ?1"), [o])?;
        }
    }
    tx.commit()?;
    for (_, p) in &drop_objects {
        std::fs::remove_file(p).with_context(|| p.display().to_string())?;
    }
    for t in &temps {
        let _ = std::fs::remove_file(t);
    }
    // Shrinks the WAL; another connection's checkpoint at the same moment makes SQLite give up
    // at once ("database is locked"), and the next one will do it.
    let _ = db.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    Ok(0)
}

/// The cluster jobs that have not ended, brought up to date from Slurm where it answers (else
/// as last recorded).
fn open_jobs(db: &Db) -> HashSet<String> {
    let recorded = || -> HashSet<String> {
        db.jobs()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| !crate::slurm::is_terminal(&j.state))
            .map(|j| j.id)
            .collect()
    };
    if recorded().is_empty() {
        return HashSet::new();
    }
    if let Err(e) = crate::slurm::available().and_then(|_| crate::submit::refresh(db)) {
        eprintln!("warning: cluster job states not refreshed ({e:#}); keeping what the recorded ones need");
    }
    recorded()
}

/// Objects moved aside as corrupt by reads.
fn set_aside(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("corrupt"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The pipelines of `<root>/pipeline/`.
fn pipeline_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("pipeline");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "reading {} (run gc from the project root or pass --root)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Adds the keys and stage identities that pipeline `f` would use now.
fn live_keys(
    reg: &Registry,
    root: &Path,
    cache: &Path,
    db: &mut Db,
    f: &Path,
    (keys, ids): (&mut HashSet<String>, &mut HashSet<String>),
) -> Result<()> {
    let plan = config::load(f, root, &[], reg)?;
    let env = Env {
        plan: &plan,
        reg,
        cache: cache.to_path_buf(),
        store: Store::open(cache)?,
        pipeline_id: f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned(),
    };
    let all: Vec<usize> = (0..plan.stages.len()).collect();
    for p in env.plan_state(db, &all)? {
        if let Ok(k) = p.key {
            keys.insert(k.key);
            ids.insert(k.stage_id);
        }
    }
    Ok(())
}

/// The objects that the kept stages' sharded items are stored in.
fn shard_objects(db: &Db, keep_ids: &HashSet<String>) -> Result<Vec<String>> {
    let mut st = db.conn.prepare(
        "SELECT stage_id, data FROM items WHERE substr(data, 1, 6) = CAST('shard:' AS BLOB)",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, data) = r?;
        if keep_ids.contains(&id) {
            if let Some((obj, _, _)) = crate::run::parse_shard_ref(&data) {
                out.push(obj);
            }
        }
    }
    Ok(out)
}

/// The second column of `sql`'s rows whose first column is in `keep`.
fn owned(db: &Db, sql: &str, keep: &HashSet<String>) -> Result<Vec<String>> {
    let mut st = db.conn.prepare(sql)?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (owner, obj) = r?;
        if keep.contains(&owner) {
            out.push(obj);
        }
    }
    Ok(out)
}

/// How many cached items belong to stages that are not kept.
fn dropped_items(db: &Db, keep_ids: &HashSet<String>) -> Result<i64> {
    let mut n = 0i64;
    let mut st = db
        .conn
        .prepare("SELECT stage_id, COUNT(*) FROM items GROUP BY stage_id")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for r in rows {
        let (id, c) = r?;
        if !keep_ids.contains(&id) {
            n += c;
        }
    }
    Ok(n)
}

/// Re-hashes every object against its name and checks every artifact's object is present.
pub fn verify(cache: &Path, fix: bool) -> Result<i32> {
    let store = Store::open(cache)?;
    let db = Db::open(cache)?;
    let objects = store.objects()?;
    let mut corrupt = HashSet::new();
    for (hash, path) in &objects {
        let got = blake3::Hasher::new()
            .update_mmap(path)
            .map(|h| h.finalize().to_hex().to_string());
        match got {
            Ok(h) if &h == hash => {}
            Ok(h) => {
                println!(
                    "corrupt  {} (content hashes to {})",
                    path.display(),
                    short(&h)
                );
                corrupt.insert(hash.clone());
            }
            Err(e) => {
                println!("unreadable  {}: {e}", path.display());
                corrupt.insert(hash.clone());
            }
        }
    }
    let present: HashSet<&str> = objects.iter().map(|(h, _)| h.as_str()).collect();
    let whole = |h: &str| present.contains(h) && !corrupt.contains(h);
    let mut bad_artifacts = Vec::new();
    for a in db.artifacts()? {
        if !present.contains(a.object.as_str()) {
            println!(
                "missing  object {} of {} (key {})",
                short(&a.object),
                a.stage,
                short(&a.key)
            );
            bad_artifacts.push(a.key.clone());
        } else if corrupt.contains(&a.object) {
            bad_artifacts.push(a.key.clone());
        } else if let Some(parts) = store.parts_of(&a.object)? {
            // A table in parts is as bad as its worst part.
            if let Some(p) = parts.iter().find(|p| !whole(p)) {
                println!(
                    "missing  part {} of {} (key {})",
                    short(p),
                    a.stage,
                    short(&a.key)
                );
                bad_artifacts.push(a.key.clone());
            }
        }
    }
    // Blobs that cached items or tables name: where one is gone or corrupt, the items of its
    // owner are computed again (the owner is a stage id, or the key of a whole-table stage).
    let mut bad_owners = HashSet::new();
    let mut bad_blobs = HashSet::new();
    {
        let mut st = db.conn.prepare("SELECT owner, hash FROM blob_refs")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for r in rows {
            let (owner, h) = r?;
            if !whole(&h) {
                if !present.contains(h.as_str()) {
                    println!("missing  blob {}", short(&h));
                }
                bad_blobs.insert(h);
                bad_owners.insert(owner);
            }
        }
    }
    // Sharded stages: an index whose item object is missing or corrupt is as bad as a bad
    // table; the next run recomputes just those items.
    let mut bad_shards: HashSet<String> = corrupt.union(&bad_blobs).cloned().collect();
    {
        let mut st = db
            .conn
            .prepare("SELECT data FROM items WHERE substr(data, 1, 6) = CAST('shard:' AS BLOB)")?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        for r in rows {
            if let Some((obj, _, _)) = crate::run::parse_shard_ref(&r?) {
                if !present.contains(obj.as_str()) {
                    println!("missing  item object {}", short(&obj));
                    bad_shards.insert(obj);
                }
            }
        }
    }
    if !bad_shards.is_empty() {
        for a in db.artifacts()? {
            if bad_artifacts.contains(&a.key)
                || bad_owners.contains(&a.key)
                || !(a.schema.contains("object: Utf8") || a.schema.contains("data_hash: Utf8"))
                || !present.contains(a.object.as_str())
            {
                if bad_owners.contains(&a.key) && !bad_artifacts.contains(&a.key) {
                    bad_artifacts.push(a.key.clone());
                }
                continue;
            }
            let t = store.get_table(&a.object)?;
            let named = |c: &str| {
                t.column_by_name(c)
                    .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
                    .is_some_and(|o| o.iter().flatten().any(|h| bad_shards.contains(h)))
            };
            if named("object") || named("data_hash") {
                bad_artifacts.push(a.key.clone());
            }
        }
    }
    println!(
        "verified {} object(s): {} corrupt, {} artifact(s) affected",
        objects.len(),
        corrupt.len(),
        bad_artifacts.len()
    );
    if fix {
        let (derived, items) = drop_derived(&db, &bad_artifacts, &bad_shards)?;
        for k in &bad_artifacts {
            db.delete_artifact(k)?;
        }
        for o in &bad_owners {
            db.conn
                .execute("DELETE FROM items WHERE stage_id = ?1", [o])?;
        }
        // Parts that are gone or corrupt, or hold items computed again, are not reused.
        {
            let mut st = db
                .conn
                .prepare("SELECT stage_id, part, object FROM parts")?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (id, part, obj) in rows {
                if !whole(&obj) || bad_owners.contains(&id) {
                    db.conn.execute(
                        "DELETE FROM parts WHERE stage_id = ?1 AND part = ?2",
                        [&id, &part],
                    )?;
                }
            }
        }
        for (h, path) in &objects {
            if corrupt.contains(h) {
                let _ = std::fs::remove_file(path);
            }
        }
        if !bad_artifacts.is_empty() || !corrupt.is_empty() {
            println!(
                "fixed: {} artifact(s) dropped, and {derived} computed from them with {items} \
                 cached item(s); the next run recomputes them",
                bad_artifacts.len()
            );
        }
        return Ok(0);
    }
    Ok(if corrupt.is_empty() && bad_artifacts.is_empty() {
        0
    } else {
        1
    })
}

/// Drops what was computed from the bad artifacts: every artifact downstream of them (by the
/// index's lineage), and the cached items of their direct consumers that read a bad item
/// object (those items are cached under the object's name, which a recomputed object keeps;
/// further down, an item's identity is the content it read, so it cannot be reused wrongly).
/// Returns (artifacts, items) dropped.
fn drop_derived(db: &Db, bad: &[String], bad_objects: &HashSet<String>) -> Result<(usize, usize)> {
    let mut seen: HashSet<String> = bad.iter().cloned().collect();
    let mut queue: Vec<(String, bool)> = bad.iter().map(|k| (k.clone(), true)).collect();
    let (mut artifacts, mut items) = (0, 0);
    while let Some((k, direct)) = queue.pop() {
        for c in db.consumers(&k)? {
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(a) = db.artifact(&c)? {
                if direct && !bad_objects.is_empty() {
                    items += db
                        .conn
                        .execute("DELETE FROM items WHERE stage_id = ?1", [&a.stage_id])?;
                }
                db.delete_artifact(&c)?;
                artifacts += 1;
                println!("derived  {} ({}) from a bad artifact", short(&c), a.stage);
            }
            queue.push((c, false));
        }
    }
    Ok((artifacts, items))
}
