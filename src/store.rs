//! The content-addressed object store: `objects/<2 hex>/<blake3 of content>.parquet` for tables,
//! `.bin` beside them for blobs (files a `command` stage wrote, kept as they are).
//!
//! A per-item stage's table is stored in parts (see [`crate::run::parts`]) once it has more
//! than one: its object is then a small table of part objects, marked `pipeline.parts` in its
//! metadata, and [`Store::get_table`] hands out the parts' rows as one table.
//! Every file is written to a temp file in the same folder, fsynced, renamed into place and the
//! folder fsynced, so a reader sees the whole object or none of it, even after kill -9 or a
//! power cut. Objects are immutable; the same content always lands on the same name.
//!
//! Every read checks the bytes against the name before anything decodes them: a flipped bit,
//! a truncated or a vanished file is an [`ObjectFault`], never data. A corrupt file is moved
//! to `corrupt/` at once, so the next run sees it as missing and computes it again.

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
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::keys::short;

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

    /// Where a blob lives: beside the tables, with `.bin` for an extension.
    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.root
            .join("objects")
            .join(&hash[..2])
            .join(format!("{hash}.bin"))
    }

    /// Moves a finished file into the store as a blob, read-only: hashed, fsynced, renamed
    /// (copied where the file is on another file system), the folder fsynced. Returns (BLAKE3,
    /// size).
    pub fn adopt_blob(&self, path: &Path) -> Result<(String, u64)> {
        let mut h = blake3::Hasher::new();
        h.update_mmap(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let hash = h.finalize().to_hex().to_string();
        let dest = self.blob_path(&hash);
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = f.metadata()?.len();
        if dest.exists() {
            drop(f);
            fs::remove_file(path)?;
            return Ok((hash, size));
        }
        let mut perms = f.metadata()?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(path, perms)?;
        f.sync_all()?;
        drop(f);
        let dir = dest.parent().context("blob path has a parent")?;
        fs::create_dir_all(dir)?;
        if fs::rename(path, &dest).is_err() {
            // Another file system (a scratch folder elsewhere): the bytes go through a temp file.
            write_atomic(&dest, &fs::read(path)?)?;
            let mut p = fs::metadata(&dest)?.permissions();
            p.set_readonly(true);
            fs::set_permissions(&dest, p)?;
            fs::remove_file(path)?;
            return Ok((hash, size));
        }
        File::open(dir)?.sync_all()?;
        Ok((hash, size))
    }

    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// Writes a table as a zstd Parquet object with `meta` as its key-value metadata; returns
    /// (content hash, bytes).
    pub fn put_table(
        &self,
        table: &RecordBatch,
        meta: &[(String, String)],
    ) -> Result<(String, u64)> {
        let bytes = encode_parquet(table, meta)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let path = self.object_path(&hash);
        if !path.exists() {
            write_atomic(&path, &bytes)?;
        }
        Ok((hash, bytes.len() as u64))
    }

    /// The table stored under `hash`, once its bytes hash to that name (a table in parts:
    /// its parts' rows, each part checked the same way).
    pub fn get_table(&self, hash: &str) -> Result<Arc<RecordBatch>> {
        self.get_table_and_metadata(hash).map(|(t, _)| t)
    }

    /// The table stored under `hash` and its `pipeline.*` metadata (see
    /// [`crate::run::provenance`]), from one checked read of its bytes.
    pub fn get_table_and_metadata(
        &self,
        hash: &str,
    ) -> Result<(Arc<RecordBatch>, crate::run::provenance::Metadata)> {
        let bytes = bytes::Bytes::from(self.read_checked(hash)?);
        let at = || format!("decoding object {}", self.object_path(hash).display());
        let meta = parquet_metadata(bytes.clone()).with_context(at)?;
        let table = decode_parquet(bytes).with_context(at)?;
        if !meta.iter().any(|(k, _)| k == PARTS_KEY) {
            return Ok((Arc::new(table), meta));
        }
        let objects = crate::run::parts::objects_of(&table).with_context(at)?;
        let mut parts = Vec::with_capacity(objects.len());
        for o in &objects {
            let b = bytes::Bytes::from(self.read_checked(o)?);
            parts.push(
                decode_parquet(b)
                    .with_context(|| format!("decoding part {}", self.object_path(o).display()))?,
            );
        }
        let schema = parts
            .first()
            .map(|p| p.schema())
            .context("a table in parts without parts")?;
        let whole = arrow::compute::concat_batches(&schema, &parts).with_context(|| {
            format!("joining the parts of {}", self.object_path(hash).display())
        })?;
        Ok((Arc::new(whole), meta))
    }

    /// The objects of a table in parts, or None for a table in one object.
    pub fn parts_of(&self, hash: &str) -> Result<Option<Vec<String>>> {
        let bytes = bytes::Bytes::from(self.read_checked(hash)?);
        let meta = parquet_metadata(bytes.clone())?;
        if !meta.iter().any(|(k, _)| k == PARTS_KEY) {
            return Ok(None);
        }
        Ok(Some(crate::run::parts::objects_of(&decode_parquet(
            bytes,
        )?)?))
    }

    /// An object's bytes, checked against its name. A corrupt object is set aside in
    /// `corrupt/` (kept for a look, removed by `gc`).
    pub fn read_checked(&self, hash: &str) -> Result<Vec<u8>, ObjectFault> {
        let path = self.object_path(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ObjectFault::Missing {
                    object: hash.to_string(),
                    path,
                })
            }
            Err(source) => {
                return Err(ObjectFault::Io {
                    object: hash.to_string(),
                    path,
                    source,
                })
            }
        };
        let got = blake3::hash(&bytes).to_hex().to_string();
        if got != hash {
            let aside = self.root.join("corrupt").join(format!("{hash}.parquet"));
            let moved = fs::create_dir_all(aside.parent().expect("has a parent"))
                .and_then(|_| fs::rename(&path, &aside))
                .is_ok();
            return Err(ObjectFault::Corrupt {
                object: hash.to_string(),
                got,
                path: if moved { aside } else { path },
            });
        }
        Ok(bytes)
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
                if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| {
                    n.strip_suffix(".parquet")
                        .or_else(|| n.strip_suffix(".bin"))
                }) {
                    out.push((stem.to_string(), p.clone()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Temp files whose writer is gone (see [`crate::lease::temp_is_dead`]).
    pub fn dead_temps(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join("objects"), self.root.join("tmp")];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    let age = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    crate::lease::temp_is_dead(n, age)
                }) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// The metadata key that marks a table in parts; its value is the number of parts.
pub const PARTS_KEY: &str = "pipeline.parts";

/// A zstd Parquet file of `table`, with `meta` as key-value metadata (in the order given, so
/// the same table and metadata give the same bytes).
pub fn encode_parquet(table: &RecordBatch, meta: &[(String, String)]) -> Result<Vec<u8>> {
    let kv = meta
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect::<Vec<_>>();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_key_value_metadata((!kv.is_empty()).then_some(kv))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, table.schema(), Some(props))?;
    w.write(table)?;
    w.close()?;
    Ok(buf)
}

/// A Parquet file's own key-value metadata (Arrow's schema entry left out), in file order.
pub fn parquet_metadata(bytes: bytes::Bytes) -> Result<Vec<(String, String)>> {
    let reader = parquet::file::reader::SerializedFileReader::new(bytes)?;
    use parquet::file::reader::FileReader as _;
    let kv = reader.metadata().file_metadata().key_value_metadata();
    Ok(kv
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != "ARROW:schema")
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect())
}

/// Why an object's bytes were not handed out. Each of these heals by itself: the object is
/// gone from `objects/` afterwards, so the next run computes it again.
#[derive(Debug, thiserror::Error)]
pub enum ObjectFault {
    #[error(
        "object {} is corrupt: its bytes hash to {}, not to its name; it was moved to {} and \
         the next run recomputes it (`pipeline verify --fix` also drops what was computed from it)",
        short(object), short(got), path.display()
    )]
    Corrupt {
        object: String,
        got: String,
        path: PathBuf,
    },
    #[error(
        "object {} is missing from the cache ({}); the next run recomputes it",
        short(object), path.display()
    )]
    Missing { object: String, path: PathBuf },
    #[error("object {} could not be read ({}): {source}", short(object), path.display())]
    Io {
        object: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ObjectFault {
    pub fn object(&self) -> &str {
        match self {
            ObjectFault::Corrupt { object, .. }
            | ObjectFault::Missing { object, .. }
            | ObjectFault::Io { object, .. } => object,
        }
    }
}

fn decode_parquet<R: parquet::file::reader::ChunkReader + 'static>(r: R) -> Result<RecordBatch> {
    let b = ParquetRecordBatchReaderBuilder::try_new(r)?;
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
    // Writer's pid and host in the name: gc removes it once that process is gone.
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        crate::lease::hostname()
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
