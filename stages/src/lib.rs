//! The stage library's light half: every stage kind's declaration ([`Kind`]: a code version,
//! typed params, inputs, per-clip mode, external files and reports), and the kinds that compute
//! without FFmpeg, OpenCV or libtorch ([`Stage`]: data, features, metrics). The engine links
//! this crate to plan, key and report; the worker (`stages/worker`) links it too and adds the
//! media, embedding and training computations. Scheduling, caching and storage belong to the
//! engine.

pub mod params;
pub mod table;

pub mod data;
pub mod embed;
pub mod features;
pub mod media;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

pub use params::{ParamSpec, ParamType, Params};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("param `{name}`: {msg}")]
    Param { name: String, msg: String },
    #[error("input: {0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Other(String),
}

/// Messages from helpers that only have words to say (a bad frame, an unknown device).
impl From<String> for StageError {
    fn from(msg: String) -> Self {
        StageError::Other(msg)
    }
}

impl From<&str> for StageError {
    fn from(msg: &str) -> Self {
        StageError::Other(msg.to_string())
    }
}

impl StageError {
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        StageError::Param {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A per-item failure: the item is left out of the stage's table and the run reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemError {
    pub item: String,
    pub field: String,
    pub reason: String,
}

impl ItemError {
    pub fn new(
        item: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ItemError {
            item: item.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a whole-table stage returns.
pub struct Output {
    pub table: RecordBatch,
    pub errors: Vec<ItemError>,
}

/// How a stage computes.
pub enum Mode {
    /// One call over the whole input.
    Table,
    /// One call per row of the first input. The engine caches each item by the hash of the
    /// `reads` columns of its row (and of further inputs' rows with the same id), so a change
    /// to any other column does not recompute it.
    PerItem {
        id_column: &'static str,
        reads: &'static [&'static str],
    },
    /// Per item as above, but each item's rows are stored as an object of their own and the
    /// stage's table is an index: the id column, `object` (the item's content hash), `rows`
    /// and `bytes`. For outputs too big to hold for a whole dataset at once (frames,
    /// waveforms, spectrograms): a run keeps only the items in flight in memory, and a
    /// consumer reads one item's rows with [`RunCtx::shard`].
    Sharded {
        id_column: &'static str,
        reads: &'static [&'static str],
    },
}

/// Reads the rows of one item of a sharded stage by its object hash.
pub trait ShardReader: Sync {
    fn read(&self, object: &str) -> Result<Arc<RecordBatch>, StageError>;
}

/// Files the cache owns, each named by the BLAKE3 of its bytes and never written again: a
/// `command` stage's outputs. A stage hands the engine a finished file instead of its bytes,
/// so an item's output is moved, not copied, and a later stage reads it in place.
pub trait Blobs: Sync {
    /// A folder on the cache's file system for a stage's scratch files, so that adopting one
    /// is a rename.
    fn scratch(&self) -> &Path;
    /// Moves a finished file into the cache (read-only from then on); returns its BLAKE3 and
    /// size. The file is gone from `path` afterwards.
    fn adopt(&self, path: &Path) -> Result<(String, u64), StageError>;
    /// The cached file with this hash, once it is there with this size: a path to read, never
    /// to write.
    fn open(&self, hash: &str, size: u64) -> Result<PathBuf, StageError>;
    /// A blob that was written to after it was handed out: it is set aside, so that the next
    /// run computes it again.
    fn damaged(&self, hash: &str);
}

/// Content hashes of the external files a stage declared, as the engine computed them.
/// `None` means the file was missing or unreadable.
pub type FileHashes = BTreeMap<PathBuf, Option<FileInfo>>;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileInfo {
    pub hash: String,
    pub size: u64,
}

/// One named input of a kind with several. A pipeline names its inputs by role
/// (`inputs: {features: audio_seq, labels: labels, split: split}`); the engine hands the stage
/// its inputs in the order the roles are declared, a role of several in the order written.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub name: &'static str,
    /// How many stages the role takes (a gathered matrix input counts each variant).
    pub min: usize,
    pub max: usize,
    pub doc: &'static str,
    /// The columns the kind reads from this role's tables (a sharded input's item rows); the
    /// plan checks them against what the input's kind produces.
    pub reads: &'static [&'static str],
}

impl Role {
    pub const fn one(name: &'static str, doc: &'static str) -> Role {
        Role {
            name,
            min: 1,
            max: 1,
            doc,
            reads: &[],
        }
    }
    pub const fn many(name: &'static str, min: usize, max: usize, doc: &'static str) -> Role {
        Role {
            name,
            min,
            max,
            doc,
            reads: &[],
        }
    }
    /// The role, reading `columns` from its tables.
    pub const fn reading(self, columns: &'static [&'static str]) -> Role {
        Role {
            reads: columns,
            ..self
        }
    }
}

/// What a training reads from a labels stage and a split stage.
pub const LABELS_READ: &[&str] = &["clip_id", "target", "y"];
pub const SPLIT_READ: &[&str] = &["clip_id", "split"];

/// What a stage sees while it plans: its params and the project root that relative paths are
/// resolved against.
pub struct PlanCtx<'a> {
    pub params: &'a Params,
    pub root: &'a Path,
}

/// What a whole-table stage says while it computes, for the progress display.
pub trait Progress: Sync {
    /// A training finished epoch `epoch` of at most `epochs`, with this validation loss.
    fn epoch(&self, epoch: usize, epochs: usize, valid_loss: f64);
    /// A batched stage ([`Stage::run_batch`]) has computed `computed` of the current call's
    /// items, so that progress moves while a long batch runs.
    fn batch(&self, _computed: usize) {}
}

/// Progress nobody watches (tests, tools).
pub struct NoProgress;

impl Progress for NoProgress {
    fn epoch(&self, _: usize, _: usize, _: f64) {}
}

/// What a stage sees while it runs.
pub struct RunCtx<'a> {
    pub params: &'a Params,
    pub root: &'a Path,
    /// Input tables in declaration order (a gathered matrix input contributes one per variant).
    pub inputs: Vec<Arc<RecordBatch>>,
    /// The inputs' stage names, `name[axis=value,...]` for matrix variants, in the same order.
    pub input_names: &'a [String],
    pub files: &'a FileHashes,
    pub shards: &'a dyn ShardReader,
    pub blobs: &'a dyn Blobs,
    pub progress: &'a dyn Progress,
}

impl RunCtx<'_> {
    /// One item's rows from a sharded input: `input` indexes `inputs`, `row` that index table.
    pub fn shard(&self, input: usize, row: usize) -> Result<Arc<RecordBatch>, StageError> {
        let t = self
            .inputs
            .get(input)
            .ok_or_else(|| format!("no input {input}"))?;
        let objects = table::str_col(t, "object").map_err(|e| {
            format!("input {input} is not a sharded stage's index (no `object` column): {e}")
        })?;
        self.shards.read(objects.value(row)).map_err(|e| {
            let name = self.input_names.get(input).map_or("?", |n| n.as_str());
            StageError::from(format!("input `{name}`: {e}"))
        })
    }
}

/// What the engine knows of a stage kind without computing it: everything that goes into its
/// key, and how to show a finished table.
pub trait Kind: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Bump when the stage's output for the same inputs changes; it is part of every cache key.
    fn version(&self) -> u32;
    fn about(&self) -> &'static str;
    fn params(&self) -> &'static [ParamSpec];
    /// The params declared for a stage given these values. Most kinds declare one list; a kind
    /// whose `model` picks a network declares that network's own, so that one network's param
    /// never enters another's key.
    fn params_for(&self, _given: &BTreeMap<String, serde_json::Value>) -> Vec<&'static ParamSpec> {
        self.params().iter().collect()
    }
    /// The column of its output whose values name [`Blobs`] (files in the cache), if any: the
    /// engine keeps those files as long as the rows that name them.
    fn blob_column(&self, _params: &Params) -> Option<&'static str> {
        None
    }
    /// Minimum and maximum number of input tables.
    fn arity(&self) -> (usize, usize);
    /// The native libraries the kind computes with (`ffmpeg`, `opencv`, `libtorch`): their
    /// versions go into its artifacts' metadata.
    fn libraries(&self) -> &'static [&'static str] {
        &[]
    }
    /// The columns the kind writes (per item for a per-item kind: the item's rows, before the
    /// engine adds the id column); empty where they depend on the data (a manifest's columns).
    /// The engine refuses output that lacks one, so a declaration cannot drift from the code.
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &[]
    }
    /// The named inputs of a kind with several different ones, in input order; empty for a
    /// kind whose inputs are one list (one stage, or several alike).
    fn roles(&self) -> &'static [Role] {
        &[]
    }
    fn mode(&self, _params: &Params) -> Mode {
        Mode::Table
    }
    /// For a whole-table kind without roles: the columns it reads from every input (a sharded
    /// input's item rows), checked at plan time like a role's `reads`.
    fn table_reads(&self, _params: &Params) -> &'static [&'static str] {
        &[]
    }
    /// The columns of the stage's table, where they are known before it runs (None: they
    /// depend on the data). A per-clip stage's first input must have every column it reads
    /// (`Mode`'s `reads`); the plan checks that against this. By default: a sharded stage's
    /// index (id, `object`, `rows`, `bytes`), else the id column and `writes`.
    fn produces(&self, params: &Params) -> Option<Vec<&'static str>> {
        let writes = self.writes(params);
        match self.mode(params) {
            Mode::Sharded { id_column, .. } => Some(vec![id_column, "object", "rows", "bytes"]),
            _ if writes.is_empty() => None,
            Mode::PerItem { id_column, .. } => Some(
                std::iter::once(id_column)
                    .chain(writes.iter().copied())
                    .collect(),
            ),
            Mode::Table => Some(writes.to_vec()),
        }
    }
    /// The CPUs a run takes when its `resources:` do not say. For a libtorch kind that is also
    /// its intra-op thread count, so it is a fixed number: a float sum split over another
    /// thread count adds in another order, and results must not depend on the machine. `None`:
    /// the machine's, for per-item work on a thread pool (whose size changes no result).
    fn cpus(&self, params: &Params) -> Option<usize> {
        match self.mode(params) {
            Mode::Table => Some(params.i64("threads").map_or(1, |t| t.max(1) as usize)),
            _ => None,
        }
    }
    /// Whether it runs libtorch on a `device` param, and so may be given GPUs.
    fn uses_device(&self) -> bool {
        self.params().iter().any(|p| p.name == "device")
    }
    /// Files outside the cache that the output depends on (manifests, media, model weights).
    fn external_files(&self, _ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        Ok(Vec::new())
    }
    /// A short human-readable account of a finished table, printed at the end of a run that
    /// selected this stage (dataset counts, metrics). Most stages have none.
    fn report(&self, _params: &Params, _table: &RecordBatch) -> Option<String> {
        None
    }
    /// Whether [`Stage::report`] is worth loading the table for.
    fn reports(&self) -> bool {
        false
    }
    /// A Markdown section for `pipeline report` (tables of results); defaults to the plain
    /// report in a code block.
    fn markdown(&self, params: &Params, table: &RecordBatch) -> Option<String> {
        self.report(params, table)
            .map(|r| format!("```\n{r}\n```\n"))
    }
    /// PNG figures for `pipeline report`, by file stem.
    fn figures(
        &self,
        _params: &Params,
        _table: &RecordBatch,
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        Vec::new()
    }
    /// Figures over the runs of one matrix stage that differ only in seed or fold (named
    /// tables), which a report draws where it leaves the variants themselves out.
    fn figures_over(
        &self,
        _params: &Params,
        _tables: &[(String, &RecordBatch)],
    ) -> Vec<(String, Result<Vec<u8>, StageError>)> {
        Vec::new()
    }
}

/// A kind's computation. The engine runs the ones in [`registry::local`] in its own process;
/// the worker runs every kind.
pub trait Stage: Send + Sync {
    /// The kind this computes.
    fn decl(&self) -> &dyn Kind;
    /// Whole-table computation (`Mode::Table`).
    fn run(&self, _ctx: &RunCtx) -> Result<Output, StageError> {
        Err(StageError::Other(format!(
            "stage kind `{}` computes per item",
            self.decl().kind()
        )))
    }
    /// Per-item computation (`Mode::PerItem`): `row` indexes the first input. The engine adds
    /// the id column to the returned rows. An `Err` is recorded against the item.
    fn run_item(&self, _ctx: &RunCtx, _row: usize) -> Result<RecordBatch, ItemError> {
        Err(ItemError::new(
            "",
            "",
            format!("stage kind `{}` computes whole tables", self.decl().kind()),
        ))
    }
    /// How many items a per-item stage wants per [`Stage::run_batch`] call. `None` (most stages)
    /// runs items one by one, several at once on the thread pool; `Some` hands the stage
    /// batches one after another, for stages whose work is batched inside (a model's forward
    /// pass on a whole batch of clips) and already uses every core.
    fn batch_items(&self, _params: &Params) -> Option<usize> {
        None
    }
    /// Several items at once (see [`Stage::batch_items`]); one result per row, in order.
    fn run_batch(&self, ctx: &RunCtx, rows: &[usize]) -> Vec<Result<RecordBatch, ItemError>> {
        rows.iter().map(|&r| self.run_item(ctx, r)).collect()
    }
}

/// The declared columns `table` lacks, if any: `Err` names them.
pub fn check_writes(declared: &[&str], table: &RecordBatch) -> Result<(), StageError> {
    let missing: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|c| table.column_by_name(c).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StageError::Other(format!(
            "the output lacks column(s) the kind declares: {}",
            missing.join(", ")
        )))
    }
}

/// Resolves a path param against the project root.
pub fn resolve(root: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_without_a_declared_column_is_refused() {
        let t = table::batch(vec![("frames", table::i64s(vec![Some(1)]))]).unwrap();
        assert!(check_writes(&["frames"], &t).is_ok());
        let e = check_writes(features::MATRIX, &t).unwrap_err().to_string();
        assert_eq!(
            e,
            "the output lacks column(s) the kind declares: dim, values"
        );
    }

    #[test]
    fn every_declared_kind_is_listed_once() {
        let kinds = registry::kinds();
        let mut names: Vec<&str> = kinds.iter().map(|k| k.kind()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a kind declared twice");
        for s in registry::local() {
            assert!(names.contains(&s.decl().kind()));
        }
    }
}
