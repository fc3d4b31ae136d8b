//! `command`: runs a shell command of the user's, per clip or once over a whole table, and keeps
//! what it writes. It is how a script the stage library does not have (an OpenFace binary, an
//! in-house feature extractor, a training script) joins a pipeline and gets the same caching as
//! the built-in stages: the command line, the content of the files listed in `deps` and the
//! inputs make the key, and per clip only the clips whose input changed run again.
//!
//! The command runs under `sh -c` in the project root, with these placeholders replaced by
//! shell-quoted paths:
//! - `{in}`: per item, the item's input file (a clip's media for `from: media`, else the bytes
//!   the previous `command` stage kept for the clip); per table, a folder holding one such file
//!   per input row, named by its id. `{in1}`, `{in2}`, ... are the further inputs' folders.
//! - `{out}`: per item, the file to write; per table, a folder to fill. Each file in it becomes
//!   a row whose id is its path inside the folder.
//! - `{id}`: per item, the clip id.
//!
//! Every stage of this kind outputs the id column, `data` (the bytes), `data_hash` (BLAKE3)
//! and `bytes`, so commands chain.

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray};
use arrow::record_batch::RecordBatch;

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
        1
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
        Some(vec![id_column_static(params), "data", "data_hash", "bytes"])
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
        let dir = tempfile::Builder::new()
            .prefix("pipeline-cmd-")
            .tempdir()
            .map_err(|e| fail("", format!("temp folder: {e}")))?;
        let input = match ctx.params.str("from").unwrap_or("data") {
            "media" => {
                let paths =
                    str_col(t, "media_path").map_err(|e| fail("media_path", e.to_string()))?;
                resolve(ctx.root, paths.value(row))
            }
            _ => {
                let data = binary_col(t).map_err(|e| fail("data", e))?;
                let p = dir.path().join("in");
                std::fs::write(&p, data.value(row))
                    .map_err(|e| fail("", format!("{}: {e}", p.display())))?;
                p
            }
        };
        let out = dir.path().join("out");
        let line = substitute(
            cmd,
            &[("in", input.as_path()), ("out", out.as_path())],
            Some(&id),
        );
        run_shell(&line, ctx.root).map_err(|e| fail("cmd", e))?;
        let bytes =
            std::fs::read(&out).map_err(|e| fail("cmd", format!("wrote no {{out}} file: {e}")))?;
        data_rows(None, vec![bytes]).map_err(|e| fail("", e.to_string()))
    }

    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let cmd = ctx.params.str("cmd")?;
        let id_col = ctx.params.str("id_column")?;
        let from = ctx.params.str("from")?;
        let dir = tempfile::Builder::new()
            .prefix("pipeline-cmd-")
            .tempdir()
            .map_err(|e| StageError::Other(format!("temp folder: {e}")))?;
        let mut places: Vec<(String, PathBuf)> = Vec::new();
        for (k, t) in ctx.inputs.iter().enumerate() {
            let folder = dir.path().join(format!("in{k}"));
            materialise(t, &folder, id_col, from, ctx.root)?;
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
        run_shell(&line, ctx.root).map_err(|e| StageError::param("cmd", e))?;
        let mut files = Vec::new();
        collect_files(&out, &out, &mut files)?;
        files.sort();
        let mut ids = Vec::new();
        let mut blobs = Vec::new();
        for (rel, path) in files {
            blobs.push(std::fs::read(&path).map_err(|e| StageError::io(&path, e))?);
            ids.push(rel);
        }
        let table = data_rows(Some((id_col, ids)), blobs)?;
        Ok(Output {
            table,
            errors: Vec::new(),
        })
    }
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

fn binary_col(t: &RecordBatch) -> Result<&BinaryArray, String> {
    t.column_by_name("data")
        .ok_or("input has no `data` column: it is not a command stage's output (use `from: media` after ingest)")?
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| "input column `data` is not binary".to_string())
}

/// Writes one file per row of `t` into `folder`, named by the row's id.
fn materialise(
    t: &RecordBatch,
    folder: &Path,
    id_col: &str,
    from: &str,
    root: &Path,
) -> Result<(), StageError> {
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
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
        }
        Ok(p)
    };
    if from == "media" {
        let paths = str_col(t, "media_path")?;
        for r in 0..t.num_rows() {
            let target = resolve(root, paths.value(r));
            let p = name(r)?;
            std::os::unix::fs::symlink(&target, &p).map_err(|e| StageError::io(&p, e))?;
        }
        return Ok(());
    }
    let data = binary_col(t).map_err(StageError::Input)?;
    for r in 0..t.num_rows() {
        let p = name(r)?;
        std::fs::write(&p, data.value(r)).map_err(|e| StageError::io(&p, e))?;
    }
    Ok(())
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

/// The output table: an optional id column (per item the engine adds it), `data`,
/// `data_hash`, `bytes`.
fn data_rows(
    ids: Option<(&str, Vec<String>)>,
    blobs: Vec<Vec<u8>>,
) -> Result<RecordBatch, StageError> {
    let hashes: Vec<String> = blobs
        .iter()
        .map(|b| blake3::hash(b).to_hex().to_string())
        .collect();
    let sizes: Vec<u64> = blobs.iter().map(|b| b.len() as u64).collect();
    let data: ArrayRef = Arc::new(BinaryArray::from_iter_values(blobs.iter()));
    let mut cols: Vec<(&str, ArrayRef)> = Vec::new();
    if let Some((name, ids)) = &ids {
        cols.push((name, strings(ids)));
    }
    cols.push(("data", data));
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
