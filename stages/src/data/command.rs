//! `command`: runs a shell command of the user's, per clip or once over a whole table, and keeps
//! what it writes. It is how a script the stage library does not have (an OpenFace binary, an
//! in-house feature extractor, a training script) joins a pipeline and gets the same caching as
//! the built-in stages: the command line, the content of the files listed in `deps` and the
//! inputs make the key, and per clip only the clips whose input changed run again.
//!
//! The command runs under `sh -c` in the project root, with these placeholders replaced by
//! shell-quoted paths:
//! - `{in}`: per item, the item's input file (a clip's media for `from: media`, else the file
//!   the previous `command` stage wrote for the clip, in the cache); per table, a folder
//!   holding one such file per input row, named by its id. `{in1}`, `{in2}`, ... are the
//!   further inputs' folders.
//! - `{out}`: per item, the file to write; per table, a folder to fill. Each file in it becomes
//!   a row whose id is its path inside the folder.
//! - `{id}`: per item, the clip id.
//!
//! What a command writes is moved into the cache as it is (a blob named by its BLAKE3), not
//! copied, and a later command reads it in place: per item `{in}` is the cached file itself,
//! per table `{in}` is a folder of hard links to the cached files (copies where the folder is
//! on another file system). Inputs are read-only: a command that writes to one fails, the file
//! is set aside and computed again by the next run. Media files are linked symbolically.
//!
//! Every stage of this kind outputs the id column, `data_hash` (the BLAKE3 of the file, which
//! names it in the cache) and `bytes`, so commands chain; `pipeline show STAGE --path` lists
//! the files.

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};

use arrow::array::{Array, ArrayRef, UInt64Array};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, str_col, strings, u64s};
use crate::{resolve, ItemError, Kind, Mode, Output, PlanCtx, RunCtx, Stage, StageError};

pub struct Command;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "cmd",
        ParamType::Str,
        None,
        "shell command, run in the project root; {in}, {out}, {id} and {in1}.. are replaced by quoted paths",
    ),
    ParamSpec::new(
        "per",
        ParamType::Enum(&["item", "table"]),
        Some("\"item\""),
        "item: once per clip of the first input, cached per clip; table: once over whole inputs",
    ),
    ParamSpec::new(
        "from",
        ParamType::Enum(&["data", "media"]),
        Some("\"data\""),
        "what {in} holds: data (the bytes a previous command stage kept) or media (ingest's media file)",
    ),
    ParamSpec::new(
        "deps",
        ParamType::StrList,
        Some("[]"),
        "files the command reads besides its inputs (scripts, configs): their content is part of the key",
    ),
    ParamSpec::new(
        "id_column",
        ParamType::Str,
        Some("\"clip_id\""),
        "the id column of the inputs and of the output",
    ),
];

/// How many bytes of a failed command's stderr an error quotes.
const STDERR_TAIL: usize = 2000;

impl Kind for Command {
    fn kind(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "a shell command per clip or per table (sh -c, {in}/{out}/{id}); keeps the bytes it writes"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 8)
    }
    fn produces(&self, params: &crate::Params) -> Option<Vec<&'static str>> {
        Some(vec![id_column_static(params), "data_hash", "bytes"])
    }
    fn blob_column(&self, _params: &crate::Params) -> Option<&'static str> {
        Some("data_hash")
    }
    fn mode(&self, params: &crate::Params) -> Mode {
        if params.str("per").unwrap_or("item") == "table" {
            return Mode::Table;
        }
        // The id column is a param, but what an item reads is fixed by `from`: the id is already
        // the item's key in the engine, and `data_hash` stands for `data`.
        match params.str("from").unwrap_or("data") {
            "media" => Mode::PerItem {
                id_column: id_column_static(params),
                reads: &["media_path", "media_hash"],
            },
            _ => Mode::PerItem {
                id_column: id_column_static(params),
                reads: &["data_hash"],
            },
        }
    }
    fn external_files(&self, ctx: &PlanCtx) -> Result<Vec<PathBuf>, StageError> {
        let deps = ctx.params.str_list("deps")?;
        let files: Vec<PathBuf> = deps.iter().map(|d| resolve(ctx.root, d)).collect();
        if let Some(f) = files.iter().find(|f| !f.is_file()) {
            return Err(StageError::param(
                "deps",
                format!("{} is not a file", f.display()),
            ));
        }
        Ok(files)
    }
}

impl Stage for Command {
    fn decl(&self) -> &dyn Kind {
        self
    }

    fn run_item(&self, ctx: &RunCtx, row: usize) -> Result<RecordBatch, ItemError> {
        let t = &ctx.inputs[0];
        let id_col = ctx.params.str("id_column").unwrap_or("clip_id");
        let id = str_col(t, id_col)
            .map(|c| c.value(row).to_string())
            .unwrap_or_default();
        let fail = |field: &str, reason: String| ItemError::new(&id, field, reason);
        if ctx.inputs.len() > 1 {
            return Err(fail(
                "",
                "per: item takes one input; use per: table to combine several".into(),
            ));
        }
        let cmd = ctx
            .params
            .str("cmd")
            .map_err(|e| fail("cmd", e.to_string()))?;
        let dir = scratch(ctx).map_err(|e| fail("", e.to_string()))?;
        let (input, stamp) = match ctx.params.str("from").unwrap_or("data") {
            "media" => {
                let paths =
                    str_col(t, "media_path").map_err(|e| fail("media_path", e.to_string()))?;
                (resolve(ctx.root, paths.value(row)), None)
            }
            _ => {
                let (hash, size) = blob_of(t, row).map_err(|e| fail("data_hash", e))?;
                let p = ctx
                    .blobs
                    .open(hash, size)
                    .map_err(|e| fail("data_hash", e.to_string()))?;
                let stamp = Stamp::of(&p).map_err(|e| fail("", e.to_string()))?;
                (p, Some((hash, stamp)))
            }
        };
        let out = dir.path().join("out");
        let line = substitute(
            cmd,
            &[("in", input.as_path()), ("out", out.as_path())],
            Some(&id),
        );
        let ran = run_shell(&line, ctx.root);
        if let Some((hash, stamp)) = stamp {
            if !stamp.same(&input) {
                ctx.blobs.damaged(hash);
                return Err(fail("cmd", wrote_input(&input)));
            }
        }
        ran.map_err(|e| fail("cmd", e))?;
        if !out.is_file() {
            return Err(fail("cmd", "wrote no {out} file".into()));
        }
        let blob = ctx.blobs.adopt(&out).map_err(|e| fail("", e.to_string()))?;
        data_rows(None, vec![blob]).map_err(|e| fail("", e.to_string()))
    }

    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let cmd = ctx.params.str("cmd")?;
        let id_col = ctx.params.str("id_column")?;
        let from = ctx.params.str("from")?;
        let dir = scratch(ctx)?;
        let mut places: Vec<(String, PathBuf)> = Vec::new();
        let mut linked = Vec::new();
        for (k, t) in ctx.inputs.iter().enumerate() {
            let folder = dir.path().join(format!("in{k}"));
            linked.extend(materialise(ctx, t, &folder, id_col, from)?);
            let name = if k == 0 {
                "in".to_string()
            } else {
                format!("in{k}")
            };
            places.push((name, folder));
        }
        let out = dir.path().join("out");
        std::fs::create_dir(&out).map_err(|e| StageError::io(&out, e))?;
        places.push(("out".into(), out.clone()));
        let subs: Vec<(&str, &Path)> = places
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        let line = substitute(cmd, &subs, None);
        let ran = run_shell(&line, ctx.root);
        let written: Vec<&Linked> = linked
            .par_iter()
            .filter(|l| !l.stamp.same(&l.path))
            .collect();
        if let Some(first) = written.first() {
            for l in &written {
                ctx.blobs.damaged(&l.hash);
            }
            return Err(StageError::param(
                "cmd",
                format!(
                    "{} ({} input file(s) written)",
                    wrote_input(&first.path),
                    written.len()
                ),
            ));
        }
        ran.map_err(|e| StageError::param("cmd", e))?;
        let mut files = Vec::new();
        collect_files(&out, &out, &mut files)?;
        files.sort();
        let blobs = files
            .par_iter()
            .map(|(_, path)| ctx.blobs.adopt(path))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = files.into_iter().map(|(rel, _)| rel).collect();
        let table = data_rows(Some((id_col, ids)), blobs)?;
        Ok(Output {
            table,
            errors: Vec::new(),
        })
    }
}

/// A temp folder on the cache's file system, so that what a command writes moves in by rename.
fn scratch(ctx: &RunCtx) -> Result<tempfile::TempDir, StageError> {
    let at = ctx.blobs.scratch();
    tempfile::Builder::new()
        .prefix("pipeline-cmd-")
        .tempdir_in(at)
        .map_err(|e| StageError::io(at, e))
}

fn wrote_input(path: &Path) -> String {
    format!(
        "the command wrote to its input {}: inputs are read-only files of the cache (write to \
         {{out}}); the file was set aside and is computed again by the next run",
        path.display()
    )
}

/// What a file looked like when a command got it: a write changes its size or mtime.
#[derive(Clone, Copy)]
struct Stamp {
    len: u64,
    mtime: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, StageError> {
        let m = std::fs::metadata(path).map_err(|e| StageError::io(path, e))?;
        Ok(Stamp {
            len: m.len(),
            mtime: m.modified().ok(),
        })
    }
    /// Whether the file is as it was; one the command removed or replaced is (the cached file
    /// behind it is untouched).
    fn same(&self, path: &Path) -> bool {
        match std::fs::symlink_metadata(path) {
            Ok(m) => m.len() == self.len && m.modified().ok() == self.mtime,
            Err(_) => true,
        }
    }
}

/// A cached file put in a per-table command's input folder.
struct Linked {
    hash: String,
    path: PathBuf,
    stamp: Stamp,
}

/// The engine wants a `'static` id column name; the common ones need no allocation and any
/// other is interned once per distinct name.
fn id_column_static(params: &crate::Params) -> &'static str {
    match params.str("id_column").unwrap_or("clip_id") {
        "clip_id" => "clip_id",
        "id" => "id",
        other => {
            static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
            let mut names = NAMES.lock().unwrap();
            if let Some(n) = names.iter().find(|n| **n == other) {
                return n;
            }
            let leaked: &'static str = Box::leak(other.to_string().into_boxed_str());
            names.push(leaked);
            leaked
        }
    }
}

/// The blob (hash, size) a previous command stage wrote for a row.
fn blob_of(t: &RecordBatch, row: usize) -> Result<(&str, u64), String> {
    let hashes = str_col(t, "data_hash").map_err(|_| {
        "input has no `data_hash` column: it is not a command stage's output (use `from: media` after ingest)".to_string()
    })?;
    let sizes = t
        .column_by_name("bytes")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or("input has no u64 column `bytes`")?;
    Ok((hashes.value(row), sizes.value(row)))
}

/// Puts one file per row of `t` into `folder`, named by the row's id: a symbolic link to the
/// clip's media, or a hard link to (else a copy of) the cached file a command wrote. Returns
/// the cached files, to check after the command that none was written to.
fn materialise(
    ctx: &RunCtx,
    t: &RecordBatch,
    folder: &Path,
    id_col: &str,
    from: &str,
) -> Result<Vec<Linked>, StageError> {
    std::fs::create_dir(folder).map_err(|e| StageError::io(folder, e))?;
    let ids = str_col(t, id_col).ok();
    let name = |r: usize| -> Result<PathBuf, StageError> {
        let n = ids.map_or_else(|| r.to_string(), |c| c.value(r).to_string());
        // Ids become file names: a path inside the folder is fine, leaving it is not.
        let rel = Path::new(&n);
        if n.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(StageError::Input(format!(
                "row {r}: id `{n}` cannot be a file name"
            )));
        }
        let p = folder.join(rel);
        if let Some(parent) = p.parent().filter(|p| *p != folder) {
            std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
        }
        Ok(p)
    };
    if from == "media" {
        let paths = str_col(t, "media_path")?;
        for r in 0..t.num_rows() {
            let target = resolve(ctx.root, paths.value(r));
            let p = name(r)?;
            std::os::unix::fs::symlink(&target, &p).map_err(|e| StageError::io(&p, e))?;
        }
        return Ok(Vec::new());
    }
    (0..t.num_rows())
        .into_par_iter()
        .map(|r| {
            let (hash, size) = blob_of(t, r).map_err(StageError::Input)?;
            let src = ctx.blobs.open(hash, size)?;
            let p = name(r)?;
            if std::fs::hard_link(&src, &p).is_err() {
                // Another file system: a copy, which a write cannot reach the cache through.
                std::fs::copy(&src, &p).map_err(|e| StageError::io(&p, e))?;
            }
            Ok(Linked {
                hash: hash.to_string(),
                stamp: Stamp::of(&p)?,
                path: p,
            })
        })
        .collect()
}

fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), StageError> {
    for e in std::fs::read_dir(dir).map_err(|e| StageError::io(dir, e))? {
        let e = e.map_err(|e| StageError::io(dir, e))?;
        let p = e.path();
        let ft = e.file_type().map_err(|e| StageError::io(&p, e))?;
        if ft.is_dir() {
            collect_files(base, &p, out)?;
        } else if ft.is_file() {
            let rel = p.strip_prefix(base).unwrap_or(&p).to_string_lossy().into();
            out.push((rel, p));
        }
    }
    Ok(())
}

/// The output table: an optional id column (per item the engine adds it), `data_hash` (the
/// blob) and `bytes`.
fn data_rows(
    ids: Option<(&str, Vec<String>)>,
    blobs: Vec<(String, u64)>,
) -> Result<RecordBatch, StageError> {
    let (hashes, sizes): (Vec<String>, Vec<u64>) = blobs.into_iter().unzip();
    let mut cols: Vec<(&str, ArrayRef)> = Vec::new();
    if let Some((name, ids)) = &ids {
        cols.push((name, strings(ids)));
    }
    cols.push(("data_hash", strings(&hashes)));
    cols.push(("bytes", u64s(sizes)));
    batch(cols)
}

/// Single-quotes a value for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces `{name}` placeholders; anything else in braces (shell `${var}`, awk programs) is
/// left as written.
fn substitute(cmd: &str, paths: &[(&str, &Path)], id: Option<&str>) -> String {
    let mut out = String::with_capacity(cmd.len() + 64);
    let mut rest = cmd;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name = after.find('}').map(|close| &after[..close]);
        let value = name.and_then(|n| {
            if n == "id" {
                id.map(quote)
            } else {
                paths
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, p)| quote(&p.to_string_lossy()))
            }
        });
        match (name, value) {
            (Some(n), Some(v)) => {
                out.push_str(&v);
                rest = &after[n.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs `line` under `sh -c` in `cwd`; a failure quotes the end of stderr.
fn run_shell(line: &str, cwd: &Path) -> Result<(), String> {
    // `output` captures only stderr here: stdout is explicitly discarded.
    let done = Proc::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("could not run sh: {e}"))?;
    let status = done.status;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&done.stderr);
    let tail = text.trim_end();
    let mut start = tail.len().saturating_sub(STDERR_TAIL);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    let tail = &tail[start..];
    Err(format!(
        "`{line}` exited with {status}{}{tail}",
        if tail.is_empty() { "" } else { ": " }
    ))
}
