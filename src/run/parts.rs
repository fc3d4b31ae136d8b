//! A per-item stage's table in parts, so that a rerun after k changed items writes O(k) rows.
//!
//! The rows of the stage's table (in input order) are cut into runs of about [`PART_ROWS`]
//! items. Where a cut falls depends only on the item id at it (a row starts a part when its
//! id's hash is 0 modulo `PART_ROWS`), so adding or removing a clip moves one cut at most.
//! A part's identity is the stage id and the identities and ids of its items: a part whose
//! items are all cached as they were is found in the index (`parts`) and reused without being
//! read. Only the parts that hold a changed item are assembled from the item cache and written.
//!
//! A table with more than one part is stored as a small table of part objects (`part`, `rows`,
//! `bytes`), marked `pipeline.parts` in its metadata; [`crate::store::Store::get_table`]
//! hands out the parts' rows as one table.

use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};

/// About how many items a part holds.
pub const PART_ROWS: u64 = 1024;

/// `PART_ROWS`, or for the tests that look at parts on a few dozen clips,
/// `PIPELINE_TEST_PART_ROWS`. Never set in normal use.
fn part_rows() -> u64 {
    static ROWS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("PIPELINE_TEST_PART_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(PART_ROWS)
    })
}

/// One part of a stage's table: its rows of the input, and its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub rows: Range<usize>,
    pub ident: String,
}

/// A stored part: (object, rows, bytes).
pub type PartRef = (String, u64, u64);

fn starts_part(id: &str, every: u64) -> bool {
    let h = blake3::hash(id.as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    n % every == 0
}

/// Cuts the rows of a per-item stage's input into parts.
pub fn plan(stage_id: &str, ids: &StringArray, items: &[String]) -> Vec<Part> {
    plan_every(stage_id, ids, items, part_rows())
}

/// [`plan`] with about `every` items a part; a part holds at most four times that, whatever
/// its ids: what a rerun rewrites at worst per changed item.
fn plan_every(stage_id: &str, ids: &StringArray, items: &[String], every: u64) -> Vec<Part> {
    let n = items.len();
    let most = 4 * every as usize;
    let mut cuts = vec![0];
    let mut last = 0;
    for r in 1..n {
        if r - last >= most || starts_part(ids.value(r), every) {
            cuts.push(r);
            last = r;
        }
    }
    cuts.push(n);
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let mut h = blake3::Hasher::new();
            h.update(stage_id.as_bytes());
            for (r, item) in items.iter().enumerate().take(w[1]).skip(w[0]) {
                h.update(&[0]);
                h.update(item.as_bytes());
                h.update(&[0]);
                h.update(ids.value(r).as_bytes());
            }
            Part {
                rows: w[0]..w[1],
                ident: h.finalize().to_hex().to_string(),
            }
        })
        .collect()
}

/// The table that stands for a table in parts.
pub fn manifest(parts: &[PartRef]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter(vec![
        (
            "part",
            Arc::new(StringArray::from_iter_values(parts.iter().map(|p| &p.0))) as ArrayRef,
        ),
        (
            "rows",
            Arc::new(UInt64Array::from_iter_values(parts.iter().map(|p| p.1))) as ArrayRef,
        ),
        (
            "bytes",
            Arc::new(UInt64Array::from_iter_values(parts.iter().map(|p| p.2))) as ArrayRef,
        ),
    ])?)
}

/// The part objects a manifest lists, in order.
pub fn objects_of(manifest: &RecordBatch) -> Result<Vec<String>> {
    let col = manifest
        .column_by_name("part")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("a table in parts without a `part` column"))?;
    Ok(col.iter().flatten().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> StringArray {
        StringArray::from_iter_values((0..n).map(|i| format!("clip{i:06}")))
    }

    #[test]
    fn one_changed_item_changes_one_part_and_an_insert_moves_one_cut() {
        let n = 20_000;
        let ids = ids(n);
        let items: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
        let plan =
            |s: &str, ids: &StringArray, items: &[String]| plan_every(s, ids, items, PART_ROWS);
        let a = plan("s", &ids, &items);
        assert!(a.len() > 5, "{}", a.len());
        assert_eq!(a.first().unwrap().rows.start, 0);
        assert_eq!(a.last().unwrap().rows.end, n);
        assert!(a.windows(2).all(|w| w[0].rows.end == w[1].rows.start));
        assert!(a.iter().all(|p| p.rows.len() <= 4 * PART_ROWS as usize));
        let mut changed = items.clone();
        changed[12_345] = "other".into();
        let b = plan("s", &ids, &changed);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!((a.len(), differ), (b.len(), 1));
        // A clip added in the middle: every part but the one it joins is as before.
        let mut ids2: Vec<String> = ids.iter().flatten().map(str::to_string).collect();
        let mut items2 = items.clone();
        ids2.insert(5_000, "new".into());
        items2.insert(5_000, "hn".into());
        let c = plan("s", &StringArray::from(ids2), &items2);
        let same = c
            .iter()
            .filter(|p| a.iter().any(|q| q.ident == p.ident))
            .count();
        assert!(same + 2 >= a.len(), "{same} of {}", a.len());
        // Another stage's parts never share an identity.
        assert!(plan("t", &ids, &items)
            .iter()
            .all(|p| a.iter().all(|q| q.ident != p.ident)));
    }
}
