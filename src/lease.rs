//! Leases: what a live run, `exec` or cluster submission has planned, which `gc` never
//! collects.
//!
//! A lease is a row in the index with the keys and stage identities a process planned, its
//! host, pid and the pid's start time (so a reused pid is not taken for the owner), and a
//! heartbeat the owner refreshes while it lives. It is dropped when the owner exits; after
//! kill -9 it is dead because its process is gone (same host) or its heartbeat stopped (other
//! hosts). A submission's lease names its cluster jobs and lives while any of them has not
//! ended.
//!
//! Taking a lease and planning happen under a shared lock on `locks/gc.lock`, and `gc` holds it
//! exclusively while it decides and deletes, so a run either is seen by gc or sees what gc left.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::params;

use crate::db::{now, Db};

/// How often a lease's owner says it is alive.
const BEAT: Duration = Duration::from_secs(10);
/// A lease of another host whose heartbeat is older than this is dead.
const STALE_SECS: f64 = 120.0;

/// The lock `gc` holds exclusively and planners share.
pub fn gc_lock(cache: &Path) -> Result<File> {
    let p = cache.join("locks").join("gc.lock");
    std::fs::create_dir_all(cache.join("locks"))?;
    File::create(&p).with_context(|| format!("creating {}", p.display()))
}

/// A held lease; dropping it releases it (a submission's stays for its jobs).
pub struct Lease {
    id: i64,
    db: Arc<std::sync::Mutex<Db>>,
    /// Dropped to stop the heartbeat at once.
    stop: Option<std::sync::mpsc::Sender<()>>,
    beat: Option<JoinHandle<()>>,
    keep: bool,
}

/// This host's name, as leases and run records give it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// When a process started, in clock ticks since boot (field 22 of /proc/PID/stat); None if it
/// is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

impl Lease {
    /// Takes a lease on `keys` (stage key, stage identity) for this process.
    pub fn take(cache: &Path, keys: &[(String, String)]) -> Result<Lease> {
        let mut db = Db::open(cache)?;
        let pid = std::process::id();
        let tx = db
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO leases(host, pid, start, taken, heartbeat, jobs) VALUES (?1, ?2, ?3, ?4, ?4, '')",
            params![hostname(), pid, start_time(pid).unwrap_or(0) as i64, now()],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx.prepare("INSERT INTO lease_keys VALUES (?1, ?2, ?3)")?;
            for (k, sid) in keys {
                st.execute(params![id, k, sid])?;
            }
        }
        tx.commit()?;
        let db = Arc::new(std::sync::Mutex::new(db));
        let (stop, stopped) = std::sync::mpsc::channel();
        let beat = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("lease".into())
                .spawn(move || heartbeat(id, &db, &stopped))?
        };
        Ok(Lease {
            id,
            db,
            stop: Some(stop),
            beat: Some(beat),
            keep: false,
        })
    }

    /// Hands the lease to cluster jobs: it outlives this process while any of `ids` has not
    /// ended.
    pub fn hand_to_jobs(mut self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.db.lock().unwrap().conn.execute(
            "UPDATE leases SET jobs = ?2 WHERE id = ?1",
            params![self.id, ids.join(",")],
        )?;
        self.keep = true;
        Ok(())
    }
}

fn heartbeat(id: i64, db: &std::sync::Mutex<Db>, stopped: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(BEAT) {
        // A busy index only delays the beat; the next one tries again.
        let _ = db.lock().unwrap().conn.execute(
            "UPDATE leases SET heartbeat = ?2 WHERE id = ?1",
            params![id, now()],
        );
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.beat.take() {
            let _ = t.join();
        }
        if !self.keep {
            let db = self.db.lock().unwrap();
            let _ = db
                .conn
                .execute("DELETE FROM lease_keys WHERE lease = ?1", [self.id]);
            let _ = db
                .conn
                .execute("DELETE FROM leases WHERE id = ?1", [self.id]);
        }
    }
}

/// One lease as the index has it.
struct Row {
    id: i64,
    taken: f64,
    host: String,
    pid: u32,
    start: u64,
    heartbeat: f64,
    jobs: String,
}

/// Whether a lease's owner still lives: its process on this host (the same pid started at the
/// same time), a recent heartbeat on another, or an unfinished cluster job of its own.
fn alive(r: &Row, host: &str, open_jobs: &std::collections::HashSet<String>) -> bool {
    if r.jobs.split(',').any(|j| open_jobs.contains(j)) {
        return true;
    }
    if r.host == host {
        start_time(r.pid).is_some_and(|s| r.start == 0 || s == r.start)
    } else {
        now() - r.heartbeat < STALE_SECS
    }
}

/// What the live leases hold: the keys and stage identities planned, how many leases, and
/// when the oldest was taken (its owner's objects are newer than that).
#[derive(Default)]
pub struct Live {
    pub keys: Vec<String>,
    pub stage_ids: Vec<String>,
    pub count: usize,
    pub oldest: Option<f64>,
}

/// The live leases; dead ones are removed. `open_jobs`: the cluster jobs that have not ended.
pub fn live(db: &Db, open_jobs: &std::collections::HashSet<String>) -> Result<Live> {
    let rows: Vec<Row> = {
        let mut st = db
            .conn
            .prepare("SELECT id, taken, host, pid, start, heartbeat, jobs FROM leases")?;
        let v = st
            .query_map([], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    taken: r.get(1)?,
                    host: r.get(2)?,
                    pid: r.get::<_, i64>(3)? as u32,
                    start: r.get::<_, i64>(4)? as u64,
                    heartbeat: r.get(5)?,
                    jobs: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        v
    };
    let host = hostname();
    let mut out = Live::default();
    for r in rows {
        if !alive(&r, &host, open_jobs) {
            db.conn
                .execute("DELETE FROM lease_keys WHERE lease = ?1", [r.id])?;
            db.conn
                .execute("DELETE FROM leases WHERE id = ?1", [r.id])?;
            continue;
        }
        out.count += 1;
        out.oldest = Some(out.oldest.map_or(r.taken, |o: f64| o.min(r.taken)));
        let mut st = db
            .conn
            .prepare_cached("SELECT key, stage_id FROM lease_keys WHERE lease = ?1")?;
        for kv in st.query_map([r.id], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (k, s): (String, String) = kv?;
            out.keys.push(k);
            out.stage_ids.push(s);
        }
    }
    Ok(out)
}

/// Whether the process that wrote a temp file (`.tmp-PID-SEQ` or `.tmp-PID-SEQ-HOST`) is gone.
/// A file of another host is judged by age, as its process cannot be seen from here.
pub fn temp_is_dead(name: &str, age: Duration) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
    let _seq = parts.next();
    let host = parts.next();
    match (pid, host) {
        (Some(pid), None) => start_time(pid).is_none(),
        (Some(pid), Some(h)) if h == hostname() => start_time(pid).is_none(),
        _ => age >= Duration::from_secs(3600),
    }
}
