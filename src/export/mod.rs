//! `pipeline export`: a stage's data out of the cache, in the formats notebooks and other
//! tools load: one Parquet or CSV table with the clip id (a per-clip stage's items gathered
//! from their objects), or numpy arrays (`.npy`: a feature stage's clips padded to one
//! length, their lengths, and an index of clip ids).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};

mod mmsa;
pub mod pickle;

pub use mmsa::{export_mmsa, MmsaStages};

use crate::db::Db;
use crate::run::Env;
use crate::store::{encode_parquet, write_atomic};
use stages::features::matrix::Matrix;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Csv,
    Npy,
    /// MMSA's feature pickle, from --text, --audio, --vision, --labels and --split
    Mmsa,
}

/// Writes stage `name`'s data into `out` in `format`; returns the files written.
pub fn export(env: &Env, name: &str, format: Format, out: &Path) -> Result<Vec<PathBuf>> {
    let (table, id_column, meta) = gathered_with_meta(env, name)?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let base = file_stem(name);
    let mut files = match format {
        Format::Parquet => {
            let p = out.join(format!("{base}.parquet"));
            write_atomic(&p, &encode_parquet(&table, &meta)?)?;
            return Ok(vec![p]);
        }
        Format::Csv => {
            let p = out.join(format!("{base}.csv"));
            write_atomic(&p, csv(&table)?.as_bytes())?;
            vec![p]
        }
        Format::Npy => npy(&table, &id_column, out, &base)?,
        Format::Mmsa => bail!("--format mmsa takes --text, --audio, --vision, --labels, --split"),
    };
    // CSV and numpy files have nowhere to keep it: the stage's metadata goes beside them.
    let p = out.join(format!("{base}.provenance.json"));
    let text = serde_json::to_string_pretty(&provenance(&meta))? + "\n";
    write_atomic(&p, text.as_bytes())?;
    files.push(p);
    Ok(files)
}

/// `pipeline.*` metadata as one JSON object, the values that are JSON as JSON.
pub fn provenance(meta: &[(String, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = meta
        .iter()
        .map(|(k, v)| {
            let value = match v.chars().next() {
                Some('{' | '[') => serde_json::from_str(v).unwrap_or_else(|_| v.clone().into()),
                _ => v.clone().into(),
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// A file name from a stage name (`split[seed=1]` -> `split.seed-1`).
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' | ',' => '.',
            '=' => '-',
            c if c.is_ascii_alphanumeric() || "_-.".contains(c) => c,
            _ => '_',
        })
        .filter(|&c| c != ']')
        .collect()
}

/// The stage's table; for a sharded stage, every item's rows (each with its id) read from the
/// item objects, in the index's order. Also the id column's name.
fn gathered(env: &Env, name: &str) -> Result<(RecordBatch, String)> {
    gathered_with_meta(env, name).map(|(t, id, _)| (t, id))
}

/// A stage's data, its id column, and its artifact's `pipeline.*` metadata.
type Gathered = (RecordBatch, String, crate::run::provenance::Metadata);

/// [`gathered`], and the `pipeline.*` metadata of the stage's artifact.
fn gathered_with_meta(env: &Env, name: &str) -> Result<Gathered> {
    let idx = *env
        .plan
        .index
        .get(name)
        .ok_or_else(|| anyhow!("no stage `{name}` in {}", env.plan.file.display()))?;
    let mut db = Db::open(&env.cache)?;
    let planned = env.plan_state(&mut db, &env.plan.select(&[name.to_string()])?)?;
    let a = planned
        .into_iter()
        .find(|p| p.idx == idx)
        .and_then(|p| p.artifact)
        .ok_or_else(|| anyhow!("`{name}` is not computed; `pipeline run {name}` first"))?;
    let (t, meta) = env.store.get_table_and_metadata(&a.object)?;
    let s = &env.plan.stages[idx];
    let kind = env.reg.get(&s.kind).expect("validated kind");
    let mode = kind.mode(&s.params);
    let id_column = match mode {
        stages::Mode::PerItem { id_column, .. } | stages::Mode::Sharded { id_column, .. } => {
            id_column.to_string()
        }
        stages::Mode::Table => "clip_id".to_string(),
    };
    if !matches!(mode, stages::Mode::Sharded { .. }) {
        return Ok((Arc::unwrap_or_clone(t), id_column, meta));
    }
    let objects = t
        .column_by_name("object")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("`{name}`'s index has no `object` column"))?;
    let mut parts = Vec::with_capacity(objects.len());
    for r in 0..objects.len() {
        parts.push(env.store.get_table(objects.value(r))?);
    }
    let Some(first) = parts.first() else {
        return Ok((Arc::unwrap_or_clone(t), id_column, meta));
    };
    let schema = first.schema();
    let all = arrow::compute::concat_batches(&schema, parts.iter().map(|p| p.as_ref()))
        .with_context(|| format!("`{name}`'s items have different columns"))?;
    Ok((all, id_column, meta))
}

/// RFC 4180 CSV: a header, then each row; a list shows as `[a, b, ...]`, bytes as hex.
fn csv(t: &RecordBatch) -> Result<String> {
    let opts = FormatOptions::default().with_null("");
    let fmts = t
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let names: Vec<String> = t
        .schema()
        .fields()
        .iter()
        .map(|f| quote(f.name()))
        .collect();
    out.push_str(&names.join(","));
    out.push('\n');
    for r in 0..t.num_rows() {
        let cells: Vec<String> = fmts
            .iter()
            .map(|f| quote(&f.value(r).to_string()))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// A feature stage's clips as `BASE.npy` (clips x longest x dim, float32, zero-padded),
/// `BASE.lengths.npy` (int64, each clip's frames) and `BASE.index.csv` (row, clip id).
fn npy(t: &RecordBatch, id_column: &str, out: &Path, base: &str) -> Result<Vec<PathBuf>> {
    let clips = clip_matrices(t, id_column)?;
    let (order, mats): (Vec<String>, Vec<Matrix>) = clips.into_iter().unzip();
    let (values, longest, dim) = padded(&order, &mats)?;
    let values: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lengths: Vec<u8> = mats
        .iter()
        .flat_map(|m| (m.frames as i64).to_le_bytes())
        .collect();
    let x = out.join(format!("{base}.npy"));
    write_atomic(&x, &npy_file("<f4", &[mats.len(), longest, dim], &values))?;
    let l = out.join(format!("{base}.lengths.npy"));
    write_atomic(&l, &npy_file("<i8", &[mats.len()], &lengths))?;
    let i = out.join(format!("{base}.index.csv"));
    let mut index = format!("row,{id_column}\n");
    for (k, id) in order.iter().enumerate() {
        let _ = writeln!(index, "{k},{id}");
    }
    write_atomic(&i, index.as_bytes())?;
    Ok(vec![x, l, i])
}

/// Clips' matrices zero-padded to the longest: (values, longest, dim).
fn padded(order: &[String], mats: &[Matrix]) -> Result<(Vec<f32>, usize, usize)> {
    let dim = mats.first().map_or(0, |m| m.dim);
    if let Some((k, m)) = mats.iter().enumerate().find(|(_, m)| m.dim != dim) {
        bail!(
            "clip {} has {} values per frame, the first {dim}",
            order[k],
            m.dim
        );
    }
    let longest = mats.iter().map(|m| m.frames).max().unwrap_or(0);
    let mut values = Vec::with_capacity(mats.len() * longest * dim);
    for m in mats {
        values.extend_from_slice(&m.values);
        values.resize(values.len() + (longest - m.frames) * dim, 0.0);
    }
    Ok((values, longest, dim))
}

/// A feature table's clips (several rows for a segmented clip), each as a matrix, in order of
/// first appearance.
fn clip_matrices(t: &RecordBatch, id_column: &str) -> Result<Vec<(String, Matrix)>> {
    let ids = t
        .column_by_name(id_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| anyhow!("no `{id_column}` column to index the clips by"))?;
    // A clip's rows (several for a segmented clip) in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut rows_of: std::collections::HashMap<String, Vec<u32>> = Default::default();
    for r in 0..ids.len() {
        let id = ids.value(r).to_string();
        rows_of
            .entry(id.clone())
            .or_insert_with(|| {
                order.push(id.clone());
                Vec::new()
            })
            .push(r as u32);
    }
    let mut mats = Vec::with_capacity(order.len());
    for id in &order {
        let take = arrow::array::UInt32Array::from(rows_of[id].clone());
        let cols = t
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &take, None))
            .collect::<Result<Vec<_>, _>>()?;
        let clip = RecordBatch::try_new(t.schema(), cols)?;
        let m = stages::features::matrix::matrix_of(&clip).map_err(|e| {
            anyhow!("clip {id}: {e} (npy needs a feature stage: frames, dim, values)")
        })?;
        mats.push((id.clone(), m));
    }
    Ok(mats)
}

/// An `.npy` file (format 1.0): magic, header dict padded to 64 bytes, little-endian data.
fn npy_file(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}
