//! The content-addressed object store: `objects/<2 hex>/<blake3 of content>.parquet`.
//! Every file is written to a temp file in the same folder, fsynced, renamed into place and the
//! folder fsynced, so a reader sees the whole object or none of it, even after kill -9 or a
//! power cut. Objects are immutable; the same content always lands on the same name.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["objects", "locks", "tmp"] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating cache folder {}", root.join(d).display()))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn object_path(&self, hash: &str) -> PathBuf {
        self.root
            .join("objects")
            .join(&hash[..2])
            .join(format!("{hash}.parquet"))
    }

    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// Writes a table as a zstd Parquet object; returns (content hash, bytes).
    pub fn put_table(&self, table: &RecordBatch) -> Result<(String, u64)> {
        let bytes = encode_parquet(table)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let path = self.object_path(&hash);
        if !path.exists() {
            write_atomic(&path, &bytes)?;
        }
        Ok((hash, bytes.len() as u64))
    }

    pub fn get_table(&self, hash: &str) -> Result<Arc<RecordBatch>> {
        read_parquet(&self.object_path(hash)).map(Arc::new)
    }

    /// Every object file, with its name's hash.
    pub fn objects(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let top = self.root.join("objects");
        for d in fs::read_dir(&top).with_context(|| top.display().to_string())? {
            let d = d?.path();
            if !d.is_dir() {
                continue;
            }
            for f in fs::read_dir(&d)? {
                let p = f?.path();
                if let Some(stem) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".parquet"))
                {
                    out.push((stem.to_string(), p.clone()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Temp files left behind by killed writers, older than `min_age`.
    pub fn stale_temps(&self, min_age: std::time::Duration) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join("objects"), self.root.join("tmp")];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp-"))
                    && e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|a| a >= min_age)
                {
                    out.push(p);
                }
            }
        }
        out
    }
}

pub fn encode_parquet(table: &RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, table.schema(), Some(props))?;
    w.write(table)?;
    w.close()?;
    Ok(buf)
}

pub fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("reading {}", path.display()))?;
    let schema = b.schema().clone();
    let batches = b
        .with_batch_size(65536)
        .build()?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// temp file in the same folder -> write -> fsync -> rename -> fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("object path has a parent")?;
    fs::create_dir_all(dir)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Arrow IPC bytes for one item's rows (kept in the index; small and fast to decode).
pub fn encode_ipc(table: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &table.schema())?;
    w.write(table)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

pub fn decode_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = r.schema();
    let batches = r.collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}
