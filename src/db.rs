//! The run index, one SQLite file beside the objects (`index.sqlite`).
//!
//! SQLite rather than redb or sled: several processes share one cache (two runs started at once,
//! Slurm jobs, `status` while a run is going). redb holds an exclusive lock on its file for as
//! long as a process has it open, so a second process could not even read; sled is pre-1.0 and
//! unmaintained. SQLite in WAL mode lets readers and one writer at a time from any process work
//! together, commits survive kill -9, and the index can be inspected with the sqlite3 shell.
//!
//! What it holds: stage key -> object, per-item results, per-item errors, the stat cache
//! (path, size, mtime, inode -> content hash), the last state of each stage for `status`
//! reasons, run history, the cluster jobs `pipeline submit` sent (id, key, dependencies,
//! last state seen), each artifact's input keys (`lineage`, for invalidating what was computed
//! from a corrupt object) and the artifacts to compute again on the next run (`retry`: their
//! items failed on a corrupt or missing object or an I/O error, or `--retry-failed` asked).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use stages::ItemError;

pub struct Db {
    pub conn: Connection,
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub key: String,
    pub stage: String,
    pub kind: String,
    pub stage_id: String,
    pub object: String,
    pub rows: i64,
    pub bytes: i64,
    pub schema: String,
    pub failed_items: i64,
    pub created: f64,
}

/// How an artifact was computed where that is not in its key: the device a model ran on, its
/// libtorch threads, the GPUs the run held and the host. Kept for libtorch stages only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Runtime {
    pub device: String,
    pub threads: i64,
    pub gpus: String,
    pub host: String,
}

/// One batch job sent to a cluster: a stage, or the array of a stage's shards.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub key: String,
    pub stage: String,
    pub pipeline: String,
    /// `stage` (computes and records the artifact) or `shards` (an array computing items).
    pub role: String,
    pub tasks: i64,
    /// Ids of the jobs this one waits for, comma-separated.
    pub deps: String,
    pub log: String,
    pub submitted: f64,
    /// The scheduler's last word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    pub state: String,
    pub reason: String,
    pub done_tasks: i64,
}

/// Present when the cache is used by processes on several hosts.
const SHARED_MARK: &str = "index.journal";

fn shared_index(cache: &Path) -> bool {
    std::env::var("PIPELINE_INDEX_JOURNAL").is_ok_and(|v| v.eq_ignore_ascii_case("delete"))
        || cache.join(SHARED_MARK).exists()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the stat cache knows of a file: (size, mtime in ns, inode, BLAKE3).
pub type StatRow = (u64, i64, u64, String);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS artifacts(
  key TEXT PRIMARY KEY, stage TEXT NOT NULL, kind TEXT NOT NULL, stage_id TEXT NOT NULL,
  object TEXT NOT NULL, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, schema TEXT NOT NULL,
  failed_items INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runtime(
  key TEXT PRIMARY KEY, device TEXT NOT NULL, threads INTEGER NOT NULL, gpus TEXT NOT NULL,
  host TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item_errors(
  key TEXT NOT NULL, item TEXT NOT NULL, field TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS item_errors_key ON item_errors(key);
CREATE TABLE IF NOT EXISTS items(
  stage_id TEXT NOT NULL, item TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL,
  PRIMARY KEY(stage_id, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts(
  stage_id TEXT NOT NULL, part TEXT NOT NULL, object TEXT NOT NULL, rows INTEGER NOT NULL,
  bytes INTEGER NOT NULL, PRIMARY KEY(stage_id, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_refs(
  owner TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY(owner, hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stat_cache(
  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
  hash TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs(
  id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, pipeline TEXT NOT NULL,
  argv TEXT NOT NULL, exit_code INTEGER);
CREATE TABLE IF NOT EXISTS run_stages(
  run_id INTEGER NOT NULL, stage TEXT NOT NULL, key TEXT, outcome TEXT NOT NULL, secs REAL,
  computed INTEGER, reused INTEGER, failed INTEGER, message TEXT);
CREATE INDEX IF NOT EXISTS run_stages_run ON run_stages(run_id);
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, key TEXT NOT NULL, stage TEXT NOT NULL, pipeline TEXT NOT NULL,
  role TEXT NOT NULL, tasks INTEGER NOT NULL, deps TEXT NOT NULL, log TEXT NOT NULL,
  submitted REAL NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, done_tasks INTEGER NOT NULL,
  updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);
CREATE TABLE IF NOT EXISTS lineage(
  key TEXT NOT NULL, input TEXT NOT NULL, PRIMARY KEY(key, input)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lineage_input ON lineage(input);
CREATE TABLE IF NOT EXISTS retry(
  key TEXT PRIMARY KEY, reason TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases(
  id INTEGER PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, start INTEGER NOT NULL,
  taken REAL NOT NULL, heartbeat REAL NOT NULL, jobs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lease_keys(
  lease INTEGER NOT NULL, key TEXT NOT NULL, stage_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS lease_keys_lease ON lease_keys(lease);
CREATE TABLE IF NOT EXISTS run_info(
  run_id INTEGER PRIMARY KEY, sets TEXT NOT NULL, params TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stage_state(
  pipeline TEXT NOT NULL, stage TEXT NOT NULL, key TEXT NOT NULL, manifest TEXT NOT NULL,
  updated REAL NOT NULL, PRIMARY KEY(pipeline, stage)) WITHOUT ROWID;
";

/// The index this process opened last, for recovering it when a query finds it damaged.
static OPENED: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

/// Whether an error is SQLite finding its file damaged (or not a database at all).
pub fn is_corrupt(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rusqlite::Error::SqliteFailure(f, _)) = err.downcast_ref::<rusqlite::Error>() {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Moves a damaged index (and its WAL and shared-memory files) aside, so that the next open
/// starts a fresh one; returns where it went. The objects stay: what a fresh index forgets is
/// computed again, and lands on the same objects.
pub fn set_aside(index: &Path) -> Result<std::path::PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = index.with_file_name(format!("index.sqlite.damaged-{stamp}"));
    std::fs::rename(index, &aside)
        .with_context(|| format!("moving the damaged index {} aside", index.display()))?;
    for ext in ["-wal", "-shm"] {
        let side = std::path::PathBuf::from(format!("{}{ext}", index.display()));
        let _ = std::fs::rename(&side, format!("{}{ext}", aside.display()));
    }
    Ok(aside)
}

/// After a command failed on a damaged index: moves it aside and says so. Returns the message,
/// or None when the error was not that.
pub fn recover_from(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if !is_corrupt(e) {
        return None;
    }
    let index = OPENED.lock().unwrap().clone()?;
    Some(match set_aside(&index) {
        Ok(aside) => format!(
            "the run index {} is damaged; it was moved to {} and the next command starts a \
             fresh one (cached objects stay; what the index forgot is recomputed onto them). \
             Run the command again.",
            index.display(),
            aside.display()
        ),
        Err(err) => format!(
            "the run index {} is damaged and could not be moved aside ({err:#}); move or \
             delete it, and run the command again",
            index.display()
        ),
    })
}

impl Db {
    /// Opens the cache's index, creating it if needed. A damaged index is moved aside with a
    /// warning and a fresh one started, so that no command is stuck on it.
    pub fn open(cache: &Path) -> Result<Db> {
        let path = cache.join("index.sqlite");
        match Db::open_once(cache) {
            Err(e) if path.exists() && is_corrupt(e.as_ref()) => {
                let aside = set_aside(&path)?;
                eprintln!(
                    "warning: the run index {} is damaged ({e:#}); it was moved to {} and a \
                     fresh, empty index started: cached objects stay, and stages are computed \
                     again onto them",
                    path.display(),
                    aside.display()
                );
                Db::open_once(cache)
            }
            r => r,
        }
    }

    fn open_once(cache: &Path) -> Result<Db> {
        let path = cache.join("index.sqlite");
        *OPENED.lock().unwrap() = Some(path.clone());
        let conn = Connection::open(&path)
            .with_context(|| format!("opening run index {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(120))?;
        let db = Db { conn };
        let shared = shared_index(cache);
        db.with_retry(|c| {
            if shared {
                // Processes on several hosts (cluster jobs on a shared file system): WAL's
                // shared-memory index only works within one host, the rollback journal works
                // wherever POSIX locks do. FULL sync, because in this mode NORMAL can lose the
                // database, not just the last commits, on a power cut.
                c.pragma_update(None, "journal_mode", "DELETE")?;
                c.pragma_update(None, "synchronous", "FULL")
            } else {
                // WAL: readers never block the writer; NORMAL sync: a commit survives a process
                // crash (kill -9), only the last commits can be lost on a power cut, and
                // artifacts are fsynced on their own before they are recorded.
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "NORMAL")
            }
        })?;
        db.with_retry(|c| c.execute_batch(SCHEMA))?;
        // A damaged page anywhere in the schema, or a torn header, shows here rather than
        // half-way through a command.
        db.with_retry(|c| {
            c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        })?;
        Ok(db)
    }

    /// Switches this cache's index to the multi-host mode for good (`pipeline submit` does
    /// this): every process that opens it afterwards uses the rollback journal.
    pub fn make_shared(cache: &Path) -> Result<()> {
        if shared_index(cache) {
            return Ok(());
        }
        let path = cache.join("index.sqlite");
        let conn = Connection::open(&path)
            .with_context(|| format!("opening run index {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .context("switching the run index to the rollback journal")?;
        if !mode.eq_ignore_ascii_case("delete") {
            anyhow::bail!(
                "could not switch {} to the rollback journal (it is `{mode}`): stop other \
                 `pipeline` processes on this cache and submit again",
                path.display()
            );
        }
        drop(conn);
        crate::store::write_atomic(&cache.join(SHARED_MARK), b"delete\n")?;
        Ok(())
    }

    /// Schema set-up by two processes at once can meet a lock that busy_timeout does not wait
    /// for (a WAL-mode switch); retry briefly.
    fn with_retry<T>(&self, f: impl Fn(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut wait = 5;
        loop {
            match f(&self.conn) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && wait < 5000 =>
                {
                    std::thread::sleep(Duration::from_millis(wait));
                    wait *= 2;
                }
                r => return Ok(r?),
            }
        }
    }

    pub fn artifact(&self, key: &str) -> Result<Option<Artifact>> {
        Ok(self
            .conn
            .prepare_cached("SELECT key, stage, kind, stage_id, object, rows, bytes, schema, failed_items, created FROM artifacts WHERE key = ?1")?
            .query_row([key], row_artifact)
            .optional()?)
    }

    pub fn artifacts(&self) -> Result<Vec<Artifact>> {
        let mut st = self.conn.prepare("SELECT key, stage, kind, stage_id, object, rows, bytes, schema, failed_items, created FROM artifacts")?;
        let rows = st
            .query_map([], row_artifact)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The artifact under `key` unless it is marked to be computed again.
    /// Runs `f`'s reads in one read transaction: one snapshot, and the database's file lock
    /// taken once rather than per query (planning a 100k-variant matrix reads 2 rows per
    /// variant). `f` must only read: a write inside could not upgrade a stale snapshot.
    pub fn read_snapshot<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        // A read transaction has nothing to keep: ending it either way is the same.
        let end = self
            .conn
            .execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let out = out?;
        end?;
        Ok(out)
    }

    pub fn fresh_artifact(&self, key: &str) -> Result<Option<Artifact>> {
        if self.retry_reason(key)?.is_some() {
            return Ok(None);
        }
        self.artifact(key)
    }

    /// Why the artifact under `key` is to be computed again, if it is.
    pub fn retry_reason(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT reason FROM retry WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Makes the next run compute the artifact under `key` again (its cached items are kept).
    pub fn mark_retry(&self, key: &str, reason: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO retry VALUES (?1, ?2)")?
            .execute([key, reason])?;
        Ok(())
    }

    /// The keys of the artifacts computed from the artifact under `key`.
    pub fn consumers(&self, key: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT key FROM lineage WHERE input = ?1")?;
        let rows = st
            .query_map([key], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Records an artifact with its item errors, how it computed and the keys of its inputs,
    /// in one transaction; a retry mark on it is cleared.
    pub fn put_artifact(
        &mut self,
        a: &Artifact,
        errors: &[ItemError],
        runtime: Option<&Runtime>,
        inputs: &[String],
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO artifacts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                a.key,
                a.stage,
                a.kind,
                a.stage_id,
                a.object,
                a.rows,
                a.bytes,
                a.schema,
                a.failed_items,
                a.created
            ],
        )?;
        tx.execute("DELETE FROM item_errors WHERE key = ?1", [&a.key])?;
        tx.execute("DELETE FROM runtime WHERE key = ?1", [&a.key])?;
        tx.execute("DELETE FROM retry WHERE key = ?1", [&a.key])?;
        for i in inputs {
            tx.execute(
                "INSERT OR IGNORE INTO lineage VALUES (?1, ?2)",
                params![a.key, i],
            )?;
        }
        if let Some(r) = runtime {
            tx.execute(
                "INSERT INTO runtime VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.key, r.device, r.threads, r.gpus, r.host],
            )?;
        }
        {
            let mut st = tx.prepare("INSERT INTO item_errors VALUES (?1, ?2, ?3, ?4)")?;
            for e in errors {
                st.execute(params![a.key, e.item, e.field, e.reason])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn item_errors(&self, key: &str) -> Result<Vec<ItemError>> {
        let mut st = self.conn.prepare_cached(
            "SELECT item, field, reason FROM item_errors WHERE key = ?1 ORDER BY rowid",
        )?;
        let rows = st
            .query_map([key], |r| {
                Ok(ItemError::new(
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn runtime(&self, key: &str) -> Result<Option<Runtime>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT device, threads, gpus, host FROM runtime WHERE key = ?1")?;
        let r = st
            .query_row([key], |r| {
                Ok(Runtime {
                    device: r.get(0)?,
                    threads: r.get(1)?,
                    gpus: r.get(2)?,
                    host: r.get(3)?,
                })
            })
            .optional()?;
        Ok(r)
    }

    pub fn delete_artifact(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM runtime WHERE key = ?1", [key])?;
        self.conn
            .execute("DELETE FROM artifacts WHERE key = ?1", [key])?;
        self.conn
            .execute("DELETE FROM item_errors WHERE key = ?1", [key])?;
        self.conn
            .execute("DELETE FROM retry WHERE key = ?1", [key])?;
        Ok(())
    }

    pub fn get_item(&self, stage_id: &str, item: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT data FROM items WHERE stage_id = ?1 AND item = ?2")?
            .query_row([stage_id, item], |r| r.get(0))
            .optional()?)
    }

    pub fn put_item(&self, stage_id: &str, item: &str, data: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO items VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![stage_id, item, data, now()])?;
        Ok(())
    }

    /// A stored part of a per-item stage's table (see [`crate::run::parts`]): (object, rows,
    /// bytes).
    pub fn get_part(&self, stage_id: &str, part: &str) -> Result<Option<(String, u64, u64)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT object, rows, bytes FROM parts WHERE stage_id = ?1 AND part = ?2",
            )?
            .query_row([stage_id, part], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .optional()?)
    }

    pub fn put_part(
        &self,
        stage_id: &str,
        part: &str,
        (object, rows, bytes): (&str, u64, u64),
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO parts VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![stage_id, part, object, rows as i64, bytes as i64])?;
        Ok(())
    }

    /// Records that `owner` (a stage id for cached items, an artifact key for a whole table)
    /// names these blobs, so that `gc` keeps them while it keeps the owner.
    pub fn put_blob_refs<'a>(
        &self,
        owner: &str,
        hashes: impl Iterator<Item = &'a str>,
    ) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO blob_refs VALUES (?1, ?2)")?;
        for h in hashes {
            st.execute([owner, h])?;
        }
        Ok(())
    }

    pub fn stat_lookup(&self, path: &str) -> Result<Option<StatRow>> {
        Ok(self
            .conn
            .prepare_cached("SELECT size, mtime_ns, ino, hash FROM stat_cache WHERE path = ?1")?
            .query_row([path], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                    r.get(3)?,
                ))
            })
            .optional()?)
    }

    /// [`Db::stat_lookup`] for many paths at once: above a few hundred, one pass over the
    /// whole stat cache in one read transaction costs less than a query per path.
    pub fn stat_lookup_many(&self, paths: &[String]) -> Result<Vec<Option<StatRow>>> {
        if paths.len() < 512 {
            return paths.iter().map(|p| self.stat_lookup(p)).collect();
        }
        let want: std::collections::HashMap<&str, usize> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut out = vec![None; paths.len()];
        let mut st = self
            .conn
            .prepare_cached("SELECT path, size, mtime_ns, ino, hash FROM stat_cache")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let path = r.get_ref(0)?.as_str()?;
            if let Some(&i) = want.get(path) {
                out[i] = Some((
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get(4)?,
                ));
            }
        }
        Ok(out)
    }

    pub fn stat_store(&mut self, rows: &[(String, u64, i64, u64, String)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st =
                tx.prepare_cached("INSERT OR REPLACE INTO stat_cache VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (p, size, mtime, ino, hash) in rows {
                st.execute(params![p, *size as i64, mtime, *ino as i64, hash])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn stage_state(&self, pipeline: &str, stage: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT key, manifest FROM stage_state WHERE pipeline = ?1 AND stage = ?2",
            )?
            .query_row([pipeline, stage], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn set_stage_state(
        &self,
        pipeline: &str,
        stage: &str,
        key: &str,
        manifest: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO stage_state VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![pipeline, stage, key, manifest, now()])?;
        Ok(())
    }

    pub fn begin_run(&self, pipeline: &str, argv: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs(started, pipeline, argv) VALUES (?1, ?2, ?3)",
            params![now(), pipeline, argv],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// One stage's line in run `run`'s history: its (outcome, seconds), its (computed, reused,
    /// failed) item counts and, for a failure, the message.
    pub fn record_stage(
        &self,
        run: i64,
        (stage, key): (&str, Option<&str>),
        (outcome, secs): (&str, f64),
        counts: (usize, usize, usize),
        message: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO run_stages VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?
            .execute(params![
                run,
                stage,
                key,
                outcome,
                secs,
                counts.0 as i64,
                counts.1 as i64,
                counts.2 as i64,
                message
            ])?;
        Ok(())
    }

    /// What a `run` was planned with: its `--set` overrides and every stage's params
    /// (`stage.param` -> value), for `pipeline runs` and `metrics diff`.
    pub fn put_run_info(
        &self,
        run: i64,
        sets: &[String],
        params: &serde_json::Value,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO run_info VALUES (?1, ?2, ?3)",
            params![run, serde_json::to_string(sets)?, params.to_string()],
        )?;
        Ok(())
    }

    pub fn end_run(&self, run: i64, code: i32) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished = ?1, exit_code = ?2 WHERE id = ?3",
            params![now(), code, run],
        )?;
        Ok(())
    }

    /// Keys used by the last `n` runs, which `gc` keeps.
    pub fn recent_run_keys(&self, n: i64) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT key FROM run_stages WHERE key IS NOT NULL AND run_id IN (SELECT id FROM runs ORDER BY id DESC LIMIT ?1)",
        )?;
        let rows = st
            .query_map([n], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }
}

impl Db {
    pub fn put_job(&self, j: &Job) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                j.id,
                j.key,
                j.stage,
                j.pipeline,
                j.role,
                j.tasks,
                j.deps,
                j.log,
                j.submitted,
                j.state,
                j.reason,
                j.done_tasks,
                now()
            ])?;
        Ok(())
    }

    /// Every job recorded, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        let mut st = self.conn.prepare(
            "SELECT id, key, stage, pipeline, role, tasks, deps, log, submitted, state, reason, done_tasks FROM jobs ORDER BY submitted, rowid",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(Job {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    stage: r.get(2)?,
                    pipeline: r.get(3)?,
                    role: r.get(4)?,
                    tasks: r.get(5)?,
                    deps: r.get(6)?,
                    log: r.get(7)?,
                    submitted: r.get(8)?,
                    state: r.get(9)?,
                    reason: r.get(10)?,
                    done_tasks: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn set_job_state(&self, id: &str, state: &str, reason: &str, done: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = ?2, reason = ?3, done_tasks = ?4, updated = ?5 WHERE id = ?1",
            )?
            .execute(params![id, state, reason, done, now()])?;
        Ok(())
    }
}

fn row_artifact(r: &rusqlite::Row) -> rusqlite::Result<Artifact> {
    Ok(Artifact {
        key: r.get(0)?,
        stage: r.get(1)?,
        kind: r.get(2)?,
        stage_id: r.get(3)?,
        object: r.get(4)?,
        rows: r.get(5)?,
        bytes: r.get(6)?,
        schema: r.get(7)?,
        failed_items: r.get(8)?,
        created: r.get(9)?,
    })
}
