//! What a run would compute, item by item: for `status` and `--dry-run`, how many of a
//! per-clip stage's items are missing from the cache (exact where its inputs are computed, an
//! upper bound below a stage that must run first), and which clips are new, changed, removed or
//! failed since the stage last ran.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{Array, RecordBatch, StringArray};
use stages::Mode as StageMode;

use super::{Env, Planned};
use crate::db::Db;

/// One stale per-clip stage's items.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Items {
    /// Items to compute (at most this many when not `exact`).
    pub compute: usize,
    pub of: usize,
    pub exact: bool,
    /// By clip, where the inputs are computed.
    pub clips: Option<Clips>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Clips {
    /// Clips the stage never had.
    pub new: Vec<String>,
    /// Clips it had, whose input changed.
    pub changed: Vec<String>,
    /// Clips it had that its input no longer has.
    pub removed: Vec<String>,
    /// Clips that failed when it last ran.
    pub failed: Vec<String>,
}

impl Items {
    pub fn text(&self) -> String {
        let bound = if self.exact { "" } else { "at most " };
        format!("{bound}{} of {} items to compute", self.compute, self.of)
    }
}

/// The item forecast of every stale per-clip stage in `planned`, by stage index.
pub fn forecast(env: &Env, db: &Db, planned: &[Planned]) -> Result<HashMap<usize, Items>> {
    let state: HashMap<usize, &Planned> = planned.iter().map(|p| (p.idx, p)).collect();
    let mut out: HashMap<usize, Items> = HashMap::new();
    let mut sources: HashMap<usize, Option<Arc<RecordBatch>>> = HashMap::new();
    for p in planned {
        let (Ok(key), None) = (&p.key, &p.artifact) else {
            continue;
        };
        let s = &env.plan.stages[p.idx];
        let kind = env.reg.get(&s.kind).expect("validated kind");
        let mode = kind.mode(&s.params);
        let sharded = matches!(mode, StageMode::Sharded { .. });
        let (StageMode::PerItem { id_column, reads } | StageMode::Sharded { id_column, reads }) =
            mode
        else {
            continue;
        };
        let inputs: Vec<usize> = s.inputs.iter().map(|n| env.plan.index[n]).collect();
        let mut tables = Some(Vec::new());
        for i in &inputs {
            let t = match state.get(i).and_then(|q| q.artifact.as_ref()) {
                Some(a) => Some(env.store.get_table(&a.object)?),
                None => sources
                    .entry(*i)
                    .or_insert_with(|| source_table(env, state.get(i).copied()))
                    .clone(),
            };
            tables = tables.zip(t).map(|(mut v, t)| {
                v.push(t);
                v
            });
        }
        let items = match tables {
            Some(t) if !t.is_empty() => exact(
                env,
                db,
                (p.idx, &key.stage_id, sharded),
                &t,
                (id_column, reads),
            )?,
            // Below a stage that runs first: at most as many as that stage's items, or its rows.
            _ => {
                let first = inputs.first().and_then(|i| {
                    out.get(i).map(|f| f.of).or_else(|| {
                        state
                            .get(i)
                            .and_then(|q| q.artifact.as_ref())
                            .map(|a| a.rows as usize)
                    })
                });
                let Some(n) = first else { continue };
                Items {
                    compute: n,
                    of: n,
                    exact: false,
                    clips: None,
                }
            }
        };
        out.insert(p.idx, items);
    }
    Ok(out)
}

/// A stale source stage's table (a manifest read by `ingest`), computed in memory and not
/// stored, so that the first per-clip stage after it gets an exact count. None for any other
/// stage, or when it fails (the run will say why).
fn source_table(env: &Env, p: Option<&Planned>) -> Option<Arc<RecordBatch>> {
    let p = p?;
    let s = &env.plan.stages[p.idx];
    let key = p.key.as_ref().ok()?;
    let stage = env.reg.local(&s.kind)?;
    if !s.inputs.is_empty() || !matches!(stage.decl().mode(&s.params), StageMode::Table) {
        return None;
    }
    let reads = super::items::StoreShards::new(&env.store);
    let ctx = stages::RunCtx {
        params: &s.params,
        root: &env.plan.root,
        inputs: Vec::new(),
        input_names: &[],
        files: &key.files,
        shards: &reads,
        blobs: &reads,
        progress: &stages::NoProgress,
    };
    stage.run(&ctx).ok().map(|o| Arc::new(o.table))
}

/// Counts the missing items of a stage whose inputs are all computed, and names the clips.
fn exact(
    env: &Env,
    db: &Db,
    (idx, stage_id, sharded): (usize, &str, bool),
    tables: &[Arc<RecordBatch>],
    (id_column, reads): (&str, &[&str]),
) -> Result<Items> {
    let hashes = super::items::item_hashes(tables, id_column, reads)?;
    let ids = tables[0]
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow::anyhow!("input has no string column `{id_column}`"))?;
    let mut missing = Vec::new();
    for (r, h) in hashes.iter().enumerate() {
        let cached = match db.get_item(stage_id, h)? {
            None => false,
            Some(b) if sharded => super::parse_shard_ref(&b)
                .is_some_and(|(obj, _, _)| env.store.object_path(&obj).exists()),
            Some(_) => true,
        };
        if !cached {
            missing.push(ids.value(r).to_string());
        }
    }
    let clips = last_clips(env, db, idx, id_column)?.map(|(had, failed)| {
        let now: BTreeSet<&str> = (0..ids.len()).map(|r| ids.value(r)).collect();
        let (changed, new) = missing.iter().cloned().partition(|c| had.contains(c));
        Clips {
            new,
            changed,
            removed: had
                .iter()
                .filter(|c| !now.contains(c.as_str()))
                .cloned()
                .collect(),
            failed,
        }
    });
    Ok(Items {
        compute: missing.len(),
        of: hashes.len(),
        exact: true,
        clips: Some(clips.unwrap_or(Clips {
            new: missing,
            ..Clips::default()
        })),
    })
}

/// The clips of the stage's last artifact in this pipeline, and those that failed in it.
fn last_clips(
    env: &Env,
    db: &Db,
    idx: usize,
    id_column: &str,
) -> Result<Option<(BTreeSet<String>, Vec<String>)>> {
    let s = &env.plan.stages[idx];
    let Some((old, _)) = db.stage_state(&env.pipeline_id, &s.name)? else {
        return Ok(None);
    };
    let Some(a) = db
        .artifact(&old)?
        .filter(|a| env.store.object_path(&a.object).exists())
    else {
        return Ok(None);
    };
    let t = env.store.get_table(&a.object)?;
    let had = t
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .map(|ids| (0..ids.len()).map(|r| ids.value(r).to_string()).collect())
        .unwrap_or_default();
    let failed = db.item_errors(&old)?.into_iter().map(|e| e.item).collect();
    Ok(Some((had, failed)))
}
