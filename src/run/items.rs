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
    /// Where a sharded stage's items go, each an object of its own.
    pub shard_store: Option<&'a Store>,
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

pub(super) fn run_items(
    job: &ItemRun,
    db: &mut Db,
    shard: Option<Shard>,
) -> Result<(RecordBatch, Vec<ItemError>, usize, usize)> {
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
    let mut slots: Vec<Option<Result<RecordBatch, ItemError>>> = vec![None; n];
    let mut missing = Vec::new();
    for (r, h) in hashes.iter().enumerate() {
        let cached = match (db.get_item(&key.stage_id, h)?, job.shard_store) {
            (Some(bytes), None) => checked_item(&bytes),
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
    job.rep.stage_start(job.name, &key.key, Some(total));
    let computed = compute_rows(job, db, ids, (&hashes, &missing), (reused, total));
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
    job: &ItemRun,
    writer: &Mutex<&mut Db>,
    (item, id): (&str, &str),
    b: RecordBatch,
) -> Result<RecordBatch> {
    let (key, id_column) = (job.key, job.id_column);
    match job.shard_store {
        None => {
            let bytes = sealed_item(&encode_ipc(&b)?);
            writer
                .lock()
                .unwrap()
                .put_item(&key.stage_id, item, &bytes)?;
            Ok(b)
        }
        Some(store) => {
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
            index_row(&obj, rows, size)
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
/// each finished item at once and reporting progress from `reused` of `n`.
fn compute_rows(
    job: &ItemRun,
    db: &mut Db,
    ids: &StringArray,
    (hashes, missing): (&[String], &[usize]),
    (reused, n): (usize, usize),
) -> Vec<(usize, Result<RecordBatch, ItemError>)> {
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
            Ok(b) => match store_item(job, &writer, (&hashes[r], &id), b) {
                Ok(b) => Ok(b),
                Err(e) => Err(ItemError::new(&id, "", format!("{STORE_FAILED}: {e:#}"))),
            },
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
}

impl<'a> StoreShards<'a> {
    pub fn new(store: &'a Store) -> Self {
        StoreShards {
            store,
            faults: Mutex::new(Vec::new()),
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
