//! Per-item (per-clip) work: which items an input row stands for, which are cached, computing
//! the rest on the rayon pool, and cluster shards.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rayon::prelude::*;
use stages::{ItemError, RunCtx, Stage};

use super::panic_text;
use super::parts::{Part, PartRef};
use crate::db::Db;
use crate::keys::{short, StageKey};
use crate::report::Reporter;
use crate::store::{decode_ipc, encode_ipc, Store};

/// What every item of one per-item stage run shares.
pub(super) struct ItemRun<'a> {
    pub stage: &'a dyn Stage,
    pub ctx: &'a RunCtx<'a>,
    pub rep: &'a Reporter,
    pub name: &'a str,
    pub key: &'a StageKey,
    pub id_column: &'a str,
    pub reads: &'a [&'a str],
    /// Where parts of the stage's table go, and a sharded stage's items, each an object.
    pub store: &'a Store,
    pub sharded: bool,
    /// The column of an item's rows that names blobs ([`stages::Kind::blob_column`]).
    pub blob_column: Option<&'a str>,
    /// The columns each item's rows must have.
    pub writes: &'a [&'a str],
    /// The stage run's progress (also the stage's own, inside a batch).
    pub progress: &'a super::stage::Progress<'a>,
    /// What a sharded item's object says of itself ([`super::provenance::of_items`]).
    pub item_meta: &'a [(String, String)],
}

/// Hash of the columns an item reads, in its row: the item's cache identity within the stage.
/// A stage with further inputs (`concat`) reads each one's row of the same id too, so those rows
/// are part of the identity; an input without the id column counts whole.
pub(super) fn item_hashes(
    inputs: &[Arc<RecordBatch>],
    id_column: &str,
    reads: &[&str],
) -> Result<Vec<String>> {
    let t = &inputs[0];
    let opts = FormatOptions::default().with_null("\u{0}null");
    for c in reads {
        t.column_by_name(c)
            .ok_or_else(|| anyhow!("input has no column `{c}` that this stage reads"))?;
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
    // Rows in chunks on the thread pool: a dataset is hundreds of thousands of rows.
    let starts: Vec<usize> = (0..t.num_rows()).step_by(HASH_CHUNK).collect();
    let chunks = starts
        .par_iter()
        .map(|&start| -> Result<Vec<String>> {
            let fmts = reads
                .iter()
                .map(|c| {
                    let col = t.column_by_name(c).expect("checked above");
                    Ok((c, ArrayFormatter::try_new(col.as_ref(), &opts)?))
                })
                .collect::<Result<Vec<_>>>()?;
            let end = (start + HASH_CHUNK).min(t.num_rows());
            Ok((start..end)
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
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Rows per task when hashing items.
const HASH_CHUNK: usize = 8192;

/// What a per-item stage run made of its table: the table itself where it is one part, else
/// its parts (see [`super::parts`]).
pub(super) enum Body {
    Whole(RecordBatch),
    Parts {
        parts: Vec<PartRef>,
        schema: Arc<Schema>,
    },
}

impl Body {
    pub fn rows(&self) -> usize {
        match self {
            Body::Whole(t) => t.num_rows(),
            Body::Parts { parts, .. } => parts.iter().map(|p| p.1 as usize).sum(),
        }
    }
}

/// A per-item stage run: its table, its failed items, and how many items it computed and
/// reused.
pub(super) type ItemsDone = (Body, Vec<ItemError>, usize, usize);

pub(super) fn run_items(
    job: &ItemRun,
    db: &mut Db,
    shard: Option<Shard>,
    recheck: bool,
) -> Result<ItemsDone> {
    let (ctx, key, id_column) = (job.ctx, job.key, job.id_column);
    let t = ctx
        .inputs
        .first()
        .ok_or_else(|| anyhow!("a per-item stage needs an input"))?
        .clone();
    let ids = t
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("input has no string column `{id_column}`"))?;
    let hashes = item_hashes(&ctx.inputs, id_column, job.reads)?;
    let n = t.num_rows();
    let parts = super::parts::plan(&key.stage_id, ids, &hashes);
    // Parts whose items are all cached as they were are reused without being read; a shard
    // (a cluster task) and a stage marked for retry look at every item.
    let mut stored: Vec<Option<PartRef>> = vec![None; parts.len()];
    if shard.is_none() && !recheck && parts.len() > 1 {
        for (p, slot) in parts.iter().zip(stored.iter_mut()) {
            *slot = db
                .get_part(&key.stage_id, &p.ident)?
                .filter(|(o, _, _)| job.store.object_path(o).exists());
        }
    }
    let mut open = Vec::new();
    for (p, slot) in parts.iter().zip(&stored) {
        if slot.is_none() {
            open.extend(p.rows.clone());
        }
    }
    if let Some(sh) = shard {
        open.retain(|&r| sh.owns(r));
    }
    let mut missing = Vec::new();
    for &r in &open {
        let cached = db.get_item(&key.stage_id, &hashes[r])?;
        if cached.is_none_or(|b| item_row(job, &b, recheck).is_none()) {
            missing.push(r);
        }
    }
    let total = shard.map_or(n, |sh| (0..n).filter(|&r| sh.owns(r)).count());
    let reused = total - missing.len();
    job.rep.stage_start(job.name, &key.key, Some(total));
    let computed = compute_rows(job, db, ids, (&hashes, &missing), (reused, total));
    let computed_ok = computed.iter().filter(|(_, r)| r.is_ok()).count();
    let mut failed: HashMap<usize, ItemError> = computed
        .into_iter()
        .filter_map(|(r, res)| res.err().map(|e| (r, e)))
        .collect();
    if shard.is_some() {
        // A shard computes its own rows and reports only on them; the stage's job gathers.
        let body = Body::Whole(RecordBatch::new_empty(t.schema()));
        return Ok((body, failed.into_values().collect(), computed_ok, reused));
    }
    let body = assemble(job, db, (ids, &hashes), (&parts, stored), &failed)?;
    let mut errors: Vec<(usize, ItemError)> = failed.drain().collect();
    errors.sort_by_key(|(r, _)| *r);
    let errors = errors.into_iter().map(|(_, e)| e).collect();
    Ok((body, errors, computed_ok, reused))
}

/// The stage's table from its parts: the reused ones as they are, the others assembled from
/// the item cache (the failed items left out), written and, where whole, recorded for reuse.
fn assemble(
    job: &ItemRun,
    db: &Db,
    (ids, hashes): (&StringArray, &[String]),
    (parts, mut stored): (&[Part], Vec<Option<PartRef>>),
    failed: &HashMap<usize, ItemError>,
) -> Result<Body> {
    let mut schema = None;
    for (p, slot) in parts.iter().zip(stored.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let mut rows = Vec::new();
        for r in p.rows.clone().filter(|r| !failed.contains_key(r)) {
            let b = db
                .get_item(&job.key.stage_id, &hashes[r])?
                .and_then(|b| item_row(job, &b, false))
                .ok_or_else(|| {
                    anyhow!("item {} left the cache while its stage ran", ids.value(r))
                })?;
            rows.push(with_id(ids.value(r), job.id_column, &b)?);
        }
        let Some(first) = rows.first() else { continue };
        let table = arrow::compute::concat_batches(&first.schema(), &rows)
            .context("items returned different schemas")?;
        drop(rows);
        if parts.len() == 1 {
            return Ok(Body::Whole(table));
        }
        schema = Some(table.schema());
        let mut meta = job.item_meta.to_vec();
        meta.push(("pipeline.part".to_string(), p.ident.clone()));
        let (obj, size) = job.store.put_table(&table, &meta)?;
        let r = (obj, table.num_rows() as u64, size);
        if !p.rows.clone().any(|r| failed.contains_key(&r)) {
            db.put_part(&job.key.stage_id, &p.ident, (&r.0, r.1, r.2))?;
        }
        *slot = Some(r);
    }
    let parts: Vec<PartRef> = stored.into_iter().flatten().collect();
    let schema = match (schema, parts.first()) {
        (Some(s), _) => s,
        (None, Some(p)) => job.store.get_table(&p.0)?.schema(),
        (None, None) => {
            return Ok(Body::Whole(RecordBatch::new_empty(Arc::new(Schema::new(
                vec![Field::new(job.id_column, DataType::Utf8, false)],
            )))))
        }
    };
    Ok(Body::Parts { parts, schema })
}

/// A cached item's rows (without the id column), or None where it must be computed again: its
/// bytes are damaged, its object is gone (gc, verify --fix), or (looking closely, for a stage
/// marked for retry) a blob it names is gone.
fn item_row(job: &ItemRun, bytes: &[u8], close: bool) -> Option<RecordBatch> {
    if job.sharded {
        let (obj, rows, size) = parse_shard_ref(bytes)?;
        if !job.store.object_path(&obj).exists() {
            return None;
        }
        return index_row(&obj, rows, size).ok();
    }
    let b = checked_item(bytes)?;
    if close {
        if let Some(c) = job.blob_column {
            let names = b
                .column_by_name(c)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())?;
            if names
                .iter()
                .flatten()
                .any(|h| !job.store.blob_path(h).exists())
            {
                return None;
            }
        }
    }
    Some(b)
}

/// Caches one computed item: small items as an IPC blob in the index, sharded ones as an object
/// of their own (id column included, so the file stands alone) with a reference in the index.
/// The blobs a non-sharded item names are recorded as the stage's, so that `gc` keeps them.
fn store_item(
    job: &ItemRun,
    writer: &Mutex<&mut Db>,
    (item, id): (&str, &str),
    b: RecordBatch,
) -> Result<()> {
    let (key, id_column) = (job.key, job.id_column);
    match job.sharded {
        false => {
            let bytes = sealed_item(&encode_ipc(&b)?);
            let db = writer.lock().unwrap();
            if let Some(names) = job
                .blob_column
                .and_then(|c| b.column_by_name(c))
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            {
                db.put_blob_refs(&key.stage_id, names.iter().flatten())?;
            }
            db.put_item(&key.stage_id, item, &bytes)?;
            Ok(())
        }
        true => {
            let store = job.store;
            let full = with_id(id, id_column, &b)?;
            drop(b);
            let mut meta = job.item_meta.to_vec();
            meta.push(("pipeline.item".to_string(), id.to_string()));
            let (obj, size) = store.put_table(&full, &meta)?;
            let rows = full.num_rows();
            writer.lock().unwrap().put_item(
                &key.stage_id,
                item,
                format!("shard:{obj}:{rows}:{size}").as_bytes(),
            )?;
            Ok(())
        }
    }
}

/// An item's bytes in the index: `b3` and the BLAKE3 of the Arrow IPC bytes that follow, so a
/// damaged row is recomputed rather than used.
fn sealed_item(ipc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ipc.len() + 34);
    out.extend_from_slice(b"b3");
    out.extend_from_slice(blake3::hash(ipc).as_bytes());
    out.extend_from_slice(ipc);
    out
}

/// The rows of a sealed item, or None (computed again) when its bytes do not match their hash
/// or were stored before items carried one.
fn checked_item(bytes: &[u8]) -> Option<RecordBatch> {
    let body = bytes.strip_prefix(b"b3")?;
    let (sum, ipc) = body.split_at_checked(32)?;
    if blake3::hash(ipc).as_bytes() != sum {
        log_once_damaged_item();
        return None;
    }
    decode_ipc(ipc).ok()
}

fn log_once_damaged_item() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!("warning: a cached item in the run index does not match its checksum; computing it again")
    });
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
/// each finished item at once (and letting go of its rows) and reporting progress from
/// `reused` of `n`.
fn compute_rows(
    job: &ItemRun,
    db: &mut Db,
    ids: &StringArray,
    (hashes, missing): (&[String], &[usize]),
    (reused, n): (usize, usize),
) -> Vec<(usize, Result<(), ItemError>)> {
    let (stage, ctx, rep, name) = (job.stage, job.ctx, job.rep, job.name);
    job.progress.done.store(reused, Ordering::Relaxed);
    job.progress.total.store(n, Ordering::Relaxed);
    job.progress.show();
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
        // An item without a declared column is not cached: its kind's code and declaration
        // disagree.
        let res = res
            .and_then(|b| {
                stages::check_writes(job.writes, &b)
                    .map(|_| b)
                    .map_err(|e| ItemError::new("", "", e.to_string()))
            })
            .map_err(|mut e| {
                if e.item.is_empty() {
                    e.item = id.clone();
                }
                e
            });
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let res = match res {
            Ok(b) => store_item(job, &writer, (&hashes[r], &id), b)
                .map_err(|e| ItemError::new(&id, "", format!("{STORE_FAILED}: {e:#}"))),
            Err(e) => {
                rep.item_error(name, &e);
                Err(e)
            }
        };
        job.progress.stored();
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
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
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

/// Item objects for the stages that read a sharded input, checked on the way; the objects that
/// could not be handed out are remembered, so that the run marks what needs computing again.
pub(super) struct StoreShards<'a> {
    pub store: &'a Store,
    pub faults: Mutex<Vec<String>>,
    scratch: std::path::PathBuf,
}

impl<'a> StoreShards<'a> {
    pub fn new(store: &'a Store) -> Self {
        StoreShards {
            store,
            faults: Mutex::new(Vec::new()),
            scratch: store.root.join("tmp"),
        }
    }

    /// Whether an item error came from an object that could not be read, or from storing the
    /// item: a fault of the cache, not of the clip, so the next run tries the item again.
    pub fn is_fault(&self, e: &ItemError) -> bool {
        e.reason.starts_with(STORE_FAILED)
            || self
                .faults
                .lock()
                .unwrap()
                .iter()
                .any(|o| e.reason.contains(short(o)))
    }
}

impl stages::ShardReader for StoreShards<'_> {
    fn read(&self, object: &str) -> std::result::Result<Arc<RecordBatch>, stages::StageError> {
        self.store.get_table(object).map_err(|e| {
            if let Some(f) = e.downcast_ref::<crate::store::ObjectFault>() {
                self.faults.lock().unwrap().push(f.object().to_string());
            } else {
                // Undecodable although its hash matched: a writer bug, but never data.
                self.faults.lock().unwrap().push(object.to_string());
            }
            format!("{e:#}").into()
        })
    }
}

/// Blobs for the stages that write files (`command`), checked by size on the way out: a blob
/// that is gone or has another size is a fault of the cache, remembered like a bad object.
impl stages::Blobs for StoreShards<'_> {
    fn scratch(&self) -> &std::path::Path {
        &self.scratch
    }

    fn adopt(&self, path: &std::path::Path) -> Result<(String, u64), stages::StageError> {
        self.store
            .adopt_blob(path)
            .map_err(|e| format!("{STORE_FAILED}: {e:#}").into())
    }

    fn open(&self, hash: &str, size: u64) -> Result<std::path::PathBuf, stages::StageError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{hash}` does not name a blob").into());
        }
        let path = self.store.blob_path(hash);
        let why = match std::fs::metadata(&path) {
            Ok(m) if m.len() == size => return Ok(path),
            Ok(m) => {
                // Set aside, so that the next run finds it missing and computes it again.
                let aside = self.store.root.join("corrupt").join(format!("{hash}.bin"));
                let _ = std::fs::create_dir_all(self.store.root.join("corrupt"));
                let _ = std::fs::rename(&path, &aside);
                format!(
                    "blob {} has {} bytes, not {size}; it was moved to {} and the next run \
                     recomputes it",
                    short(hash),
                    m.len(),
                    aside.display()
                )
            }
            Err(e) => format!(
                "blob {} could not be read ({}): {e}; the next run recomputes it",
                short(hash),
                path.display()
            ),
        };
        self.faults.lock().unwrap().push(hash.to_string());
        Err(why.into())
    }

    fn damaged(&self, hash: &str) {
        if hash.len() == 64 {
            let aside = self.store.root.join("corrupt").join(format!("{hash}.bin"));
            let _ = std::fs::create_dir_all(self.store.root.join("corrupt"));
            let _ = std::fs::rename(self.store.blob_path(hash), aside);
            self.faults.lock().unwrap().push(hash.to_string());
        }
    }
}

/// How an item error from storing a computed item starts.
const STORE_FAILED: &str = "could not store the item";

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
