//! What every object says of itself: Parquet key-value metadata under `pipeline.*`, so that a
//! file taken out of the cache still tells which stage made it, from what, and with what.
//!
//! A stage's artifact carries its name, kind, code version, key, stage id, the params as they
//! were keyed, its inputs' keys, the external files it read (models, tokenizers, manifests) with
//! their BLAKE3, the tool's version and, for kinds that compute with FFmpeg, OpenCV or libtorch,
//! those libraries' versions. A per-item object is shared by every stage run with the same stage
//! id, whatever its name or inputs, so it carries only what the stage id fixes (no name, key or
//! inputs) and the item's id: reusing it never needs a rewrite.

use serde_json::{json, Value as J};
use stages::Stage;

use super::Job;

/// Above this many external files (a dataset's media), the list is given by count and digest.
const LISTED_FILES: usize = 32;

pub type Metadata = Vec<(String, String)>;

/// The metadata of a stage's artifact.
pub fn of_stage(job: &Job, stage: &dyn Stage) -> Metadata {
    let m = &job.key.manifest;
    let mut out: Metadata = of_items(job, stage)
        .into_iter()
        .filter(|(k, _)| k != "pipeline.files")
        .collect();
    out.extend([
        ("pipeline.files".to_string(), files(job).to_string()),
        ("pipeline.stage".to_string(), job.name.clone()),
        ("pipeline.key".to_string(), job.key.key.clone()),
        (
            "pipeline.inputs".to_string(),
            m.get("inputs").cloned().unwrap_or(J::Null).to_string(),
        ),
    ]);
    out.sort();
    out
}

/// The metadata every per-item object of the stage run shares: what its stage id fixes. Its
/// external files are given by content alone, since the same stage id may read them under
/// another path.
pub fn of_items(job: &Job, stage: &dyn Stage) -> Metadata {
    let m = &job.key.manifest;
    let mut out = vec![
        ("pipeline.kind".to_string(), job.kind.clone()),
        ("pipeline.kind_version".to_string(), job.version.to_string()),
        ("pipeline.stage_id".to_string(), job.key.stage_id.clone()),
        (
            "pipeline.params".to_string(),
            m.get("params").cloned().unwrap_or(J::Null).to_string(),
        ),
        ("pipeline.files".to_string(), contents(job).to_string()),
        (
            "pipeline.tool".to_string(),
            format!("pipeline {}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let libs = stages::runtime::library_versions(stage.decl().libraries());
    if !libs.is_empty() {
        out.push(("pipeline.libraries".to_string(), json!(libs).to_string()));
    }
    out.sort();
    out
}

/// The BLAKE3 of each external file the stage read, sorted; a digest of them above
/// [`LISTED_FILES`].
fn contents(job: &Job) -> J {
    let mut hashes: Vec<&str> = job
        .key
        .files
        .values()
        .flatten()
        .map(|i| i.hash.as_str())
        .collect();
    hashes.sort_unstable();
    if hashes.len() <= LISTED_FILES {
        return json!(hashes
            .into_iter()
            .map(|h| json!({"blake3": h}))
            .collect::<Vec<_>>());
    }
    json!({
        "count": hashes.len(),
        "blake3_of_list": crate::keys::digest("files", &json!(hashes)),
    })
}

/// The external files the stage read, by path under the project root, with their BLAKE3.
fn files(job: &Job) -> J {
    let listed: Vec<J> = job
        .key
        .files
        .iter()
        .map(|(p, info)| {
            let rel = p.strip_prefix(&job.root).unwrap_or(p);
            json!({"path": rel.to_string_lossy(), "blake3": info.as_ref().map(|i| &i.hash)})
        })
        .collect();
    if listed.len() <= LISTED_FILES {
        return J::Array(listed);
    }
    json!({
        "count": listed.len(),
        "blake3_of_list": crate::keys::digest("files", &J::Array(listed)),
    })
}
