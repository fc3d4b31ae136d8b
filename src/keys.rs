//! Cache keys. A stage's key is BLAKE3 over its kind, code version, the canonical values of the
//! params it declares, the content hashes of the external files it declares, and the keys of its
//! inputs. Keys are computed for the whole plan before anything runs, so `status`, `--dry-run`
//! and a no-op rerun never execute a stage.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;
use serde_json::{json, Value as J};
use stages::{FileHashes, FileInfo, PlanCtx};

use crate::config::Plan;
use crate::db::Db;
use crate::error::KeyError;
use crate::registry::Registry;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageKey {
    pub key: String,
    /// The stage's identity without its inputs: per-item results are cached under it.
    pub stage_id: String,
    pub files: Arc<FileHashes>,
    /// What went into the key, kept for `status` to explain why a stage is stale.
    pub manifest: J,
}

pub fn digest(domain: &str, v: &J) -> String {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    h.update(&[0]);
    // serde_json's Map is ordered by key, so this text is canonical.
    h.update(v.to_string().as_bytes());
    h.finalize().to_hex().to_string()
}

/// Content hashes of files, through the stat cache: a file whose (size, mtime, inode) has not
/// changed since it was last hashed is not read again.
pub fn hash_files(db: &mut Db, paths: &[PathBuf]) -> Result<FileHashes> {
    // A dataset's media are hundreds of thousands of files: stat them on every core, look them
    // up in one pass, and build the map from sorted entries.
    let stats: Vec<Option<(u64, i64, u64)>> = paths
        .par_iter()
        .map(|p| {
            std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| {
                (
                    m.size(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.ino(),
                )
            })
        })
        .collect();
    let keys: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let known = db.stat_lookup_many(&keys)?;
    let mut out: Vec<(PathBuf, Option<FileInfo>)> = Vec::with_capacity(paths.len());
    let mut misses = Vec::new();
    for ((p, st), k) in paths.iter().zip(stats).zip(known) {
        match (st, k) {
            (None, _) => out.push((p.clone(), None)),
            (Some((size, mtime, ino)), Some((s, m, i, hash)))
                if s == size && m == mtime && i == ino =>
            {
                out.push((p.clone(), Some(FileInfo { hash, size })))
            }
            (Some((size, mtime, ino)), _) => misses.push((p.clone(), size, mtime, ino)),
        }
    }
    let hashed: Vec<_> = misses
        .into_par_iter()
        .map(|(p, size, mtime, ino)| {
            let h = hash_file(&p);
            (p, size, mtime, ino, h)
        })
        .collect();
    let mut rows = Vec::new();
    for (p, size, mtime, ino, h) in hashed {
        match h {
            Ok(hash) => {
                rows.push((
                    p.to_string_lossy().into_owned(),
                    size,
                    mtime,
                    ino,
                    hash.clone(),
                ));
                out.push((p, Some(FileInfo { hash, size })));
            }
            Err(_) => out.push((p, None)),
        }
    }
    db.stat_store(&rows)?;
    // Byte order first (cheap), so that the map's own sort finds one run already in order.
    out.par_sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    Ok(out.into_iter().collect())
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(p)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Keys for the selected stages (indices into `plan.stages`, in plan order). A stage whose key
/// cannot be computed (its manifest is unreadable, say) gets the reason instead, and so do its
/// dependents.
pub fn compute(
    plan: &Plan,
    reg: &Registry,
    db: &mut Db,
    selected: &[usize],
) -> Result<BTreeMap<usize, Result<StageKey, KeyError>>> {
    let mut out: BTreeMap<usize, Result<StageKey, KeyError>> = BTreeMap::new();
    for &i in selected {
        let s = &plan.stages[i];
        let stage = reg.get(&s.kind).expect("validated kind");
        let mut input_keys = Vec::new();
        let mut upstream_err = None;
        for name in &s.inputs {
            match out.get(&plan.index[name]) {
                Some(Ok(k)) => input_keys.push(json!({"name": name, "key": k.key})),
                Some(Err(_)) => {
                    upstream_err = Some(format!("input `{name}` could not be planned"));
                    break;
                }
                None => unreachable!("inputs are selected with their dependents"),
            }
        }
        if let Some(e) = upstream_err {
            out.insert(i, Err(KeyError(e)));
            continue;
        }
        let files = match stage.external_files(&PlanCtx {
            params: &s.params,
            root: &plan.root,
        }) {
            Ok(f) => f,
            Err(e) => {
                out.insert(i, Err(KeyError(e.to_string())));
                continue;
            }
        };
        let hashes = hash_files(db, &files)?;
        // A path param naming one of the declared files (a model, a tokenizer) is keyed by the
        // file's content, not its name: the same weights under another path or on another
        // machine give the same key.
        let mut params_map = s.params.0.clone();
        // How a stage runs (its device) is not what it computes.
        for spec in stage.params().iter().filter(|p| !p.keyed) {
            params_map.remove(spec.name);
        }
        for spec in stage.params().iter().filter(|p| p.keyed_if_set) {
            let default = spec.default.and_then(|d| serde_json::from_str::<J>(d).ok());
            if params_map.get(spec.name) == default.as_ref() {
                params_map.remove(spec.name);
            }
        }
        let mut by_content = std::collections::BTreeSet::new();
        for spec in stage.params() {
            if spec.ty != stages::ParamType::Path {
                continue;
            }
            let Some(v) = params_map.get_mut(spec.name) else {
                continue;
            };
            let Some(path) = v.as_str().filter(|p| !p.is_empty()) else {
                continue;
            };
            let full = stages::resolve(&plan.root, path);
            if let Some(Some(info)) = hashes.get(&full) {
                *v = json!({"content": info.hash});
                by_content.insert(full);
            }
        }
        let file_list: Vec<J> = hashes
            .iter()
            .filter(|(p, _)| !by_content.contains(*p))
            .map(|(p, info)| {
                let rel = p
                    .strip_prefix(&plan.root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned();
                json!([rel, info.as_ref().map(|i| i.hash.as_str())])
            })
            .collect();
        let file_list = J::Array(file_list);
        let files_digest = digest("files", &file_list);
        let params = J::Object(params_map.into_iter().collect());
        let identity = json!({
            "kind": s.kind,
            "version": stage.version(),
            "params": params,
            "files": files_digest,
        });
        let stage_id = digest("stage", &identity);
        let key = digest("key", &json!({"stage": stage_id, "inputs": input_keys}));
        let manifest = json!({
            "kind": s.kind,
            "version": stage.version(),
            "params": params,
            "inputs": input_keys,
            "files": file_list,
        });
        out.insert(
            i,
            Ok(StageKey {
                key,
                stage_id,
                files: Arc::new(hashes),
                manifest,
            }),
        );
    }
    Ok(out)
}

/// Human reasons why `now` differs from the stage's last recorded manifest.
pub fn reasons(old: &J, now: &J) -> Vec<String> {
    let mut r = Vec::new();
    if old["kind"] != now["kind"] {
        r.push(format!("kind changed {} -> {}", old["kind"], now["kind"]));
    }
    if old["version"] != now["version"] {
        r.push(format!(
            "code version changed {} -> {}",
            old["version"], now["version"]
        ));
    }
    let empty = serde_json::Map::new();
    let (op, np) = (
        old["params"].as_object().unwrap_or(&empty),
        now["params"].as_object().unwrap_or(&empty),
    );
    for (k, v) in np {
        match op.get(k) {
            Some(o) if o != v => r.push(format!("param {k} changed {o} -> {v}")),
            None => r.push(format!("param {k} added ({v})")),
            _ => {}
        }
    }
    for k in op.keys().filter(|k| !np.contains_key(*k)) {
        r.push(format!("param {k} removed"));
    }
    let names = |j: &J| -> Vec<(String, String)> {
        j.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        (
                            x["name"].as_str().unwrap_or("").to_string(),
                            x["key"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (oi, ni) = (names(&old["inputs"]), names(&now["inputs"]));
    for (n, k) in &ni {
        match oi.iter().find(|(on, _)| on == n) {
            Some((_, ok)) if ok != k => {
                r.push(format!("input {n} changed {} -> {}", short(ok), short(k)))
            }
            None => r.push(format!("input {n} added")),
            _ => {}
        }
    }
    for (n, _) in oi.iter().filter(|(n, _)| !ni.iter().any(|(m, _)| m == n)) {
        r.push(format!("input {n} removed"));
    }
    let files = |j: &J| -> BTreeMap<String, J> {
        j.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| (x[0].as_str().unwrap_or("").to_string(), x[1].clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (of, nf) = (files(&old["files"]), files(&now["files"]));
    let mut changed: Vec<String> = Vec::new();
    for (p, h) in &nf {
        match of.get(p) {
            Some(o) if o != h => changed.push(if h.is_null() {
                format!("{p} (now missing)")
            } else {
                format!("{p} (content)")
            }),
            None => changed.push(format!("{p} (new)")),
            _ => {}
        }
    }
    changed.extend(
        of.keys()
            .filter(|p| !nf.contains_key(*p))
            .map(|p| format!("{p} (removed)")),
    );
    if !changed.is_empty() {
        let n = changed.len();
        let shown: Vec<String> = changed.into_iter().take(5).collect();
        r.push(format!(
            "{n} external file(s) changed: {}{}",
            shown.join(", "),
            if n > 5 { ", ..." } else { "" }
        ));
    }
    r
}

pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}
