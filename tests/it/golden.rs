//! Same cache, same artifacts across the engine's renovation (kind declarations in a light
//! crate, media/embedding/training stages in a worker process, inputs by role, each joint
//! network's own params): the default pipeline, a reduced Uni2Mul study and a reduced SMP study
//! on a 12-clip demo (one seed, 2 epochs, one libtorch thread for inference) give the content
//! recorded in `golden/artifacts.json` with the engine as it was before (commit 4c1536f: one
//! process, libtorch linked, positional inputs, `train_joint` keyed over every network's params).
//!
//! What is compared is each artifact's content (its columns and rows, a sharded stage's items
//! resolved), not its file: artifacts now carry Parquet metadata (stage, key, params, versions)
//! that the recording's did not, and training tables gained `train_acc` and `train_f1` beside
//! the curve the recording holds, which are left out here.
//!
//! Keys stay the same, except where they changed by design: a `train_joint` stage's key no
//! longer covers the other networks' params, an `embed` stage's no longer covers its `device`
//! (where it runs is recorded beside the artifact), and the training kinds' versions went up
//! with their new curve columns, so these and what reads them have new keys over the same
//! content. A key covers the content of the model files it reads, and a TorchScript export is
//! not byte-identical from one `make models` to the next, so keys are compared only where the
//! models are the recorded ones; content is compared everywhere.
//!
//! To record again: `PIPELINE_GOLDEN_BIN=/old/target/release/pipeline
//! PIPELINE_GOLDEN_SRC=/old/checkout cargo test --test it golden` writes the file from that
//! binary's run of that checkout's pipeline files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::*;

const FILE: &str = "tests/it/golden/artifacts.json";

/// Per pipeline file, per stage: (key, content digest).
type Golden = BTreeMap<String, BTreeMap<String, (String, String)>>;

#[derive(Serialize, Deserialize)]
struct Recording {
    /// The model files' content hashes, by path under `data/models`.
    models: BTreeMap<String, String>,
    pipelines: Golden,
}

/// Columns a stage's table gained after the recording, by design.
const ADDED: &[&str] = &["train_acc", "train_f1"];

/// What an object holds, whatever its file: BLAKE3 over its fields and rows as Arrow IPC
/// (without metadata), the columns in [`ADDED`] left out. A sharded stage's index (`object`,
/// `rows`, `bytes` per item) stands for its items' content, not their files.
fn content(cache: &Path, object: &str) -> String {
    let path = cache
        .join("objects")
        .join(&object[..2])
        .join(format!("{object}.parquet"));
    let t = read_parquet(&path);
    let names: Vec<&str> = t
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut h = blake3::Hasher::new();
    if names.len() == 4 && names[1..] == ["object", "rows", "bytes"] {
        let ids = strs(&t, names[0]);
        let objects = strs(&t, "object");
        for (id, o) in ids.iter().zip(&objects) {
            h.update(id.as_deref().unwrap_or("").as_bytes());
            h.update(content(cache, o.as_deref().unwrap()).as_bytes());
        }
        return h.finalize().to_hex().to_string();
    }
    let keep: Vec<usize> = (0..names.len())
        .filter(|&i| !ADDED.contains(&names[i]))
        .collect();
    let fields: Vec<arrow::datatypes::Field> = keep
        .iter()
        .map(|&i| {
            let f = t.schema_ref().field(i);
            arrow::datatypes::Field::new(f.name(), f.data_type().clone(), f.is_nullable())
        })
        .collect();
    let columns = keep.iter().map(|&i| t.column(i).clone()).collect();
    let bare = arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap();
    h.update(&pipeline::store::encode_ipc(&bare).unwrap());
    h.finalize().to_hex().to_string()
}

/// The content hash of every model file the pipelines read.
fn model_hashes() -> BTreeMap<String, String> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models");
    let mut out = BTreeMap::new();
    for dir in ["embed", "mtcnn"] {
        for e in std::fs::read_dir(models.join(dir)).unwrap().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let name = format!("{dir}/{}", e.file_name().to_string_lossy());
            out.insert(name, blake3::hash(&bytes).to_hex().to_string());
        }
    }
    out
}

/// A study file from `src` with some vars replaced. Model paths stay relative: the project's
/// `data/models` links to the repository's, so keys do not depend on where either lives.
fn study(src: &Path, file: &str, vars: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(src.join("pipeline").join(file)).unwrap();
    for (k, v) in vars {
        let head = format!("\n  {k}: ");
        let at = text.find(&head).unwrap_or_else(|| panic!("no var {k}"));
        let end = at + 1 + text[at + 1..].find('\n').unwrap();
        text.replace_range(at..end, &format!("{head}{v}"));
    }
    // Inference on one libtorch thread, as recorded: a stage's threads are its CPUs now (the
    // engine of the recording took OMP_NUM_THREADS, below).
    text + "resources: {cpus: 1}\n"
}

/// The pipelines and the targets each runs.
fn pipelines(src: &Path) -> Vec<(&'static str, String, Vec<&'static str>)> {
    let uni2mul = [
        ("data", "data"),
        ("seeds", "[1]"),
        ("epochs", "2"),
        ("threads", "1"),
        ("fusions", "[concat, conformer]"),
        ("vision_models", "[cnn_lstm]"),
        ("audio_models", "[cnn_attn_bilstm]"),
        ("text_models", "[cnn_attn]"),
    ];
    let smp = [
        ("data", "data"),
        ("frames", "6"),
        ("steps", "8"),
        ("epochs", "2"),
        ("seeds", "[1]"),
        ("vision_channels", "[face+au, au]"),
    ];
    vec![
        (
            "default.yaml",
            study(src, "default.yaml", &[("data", "data")]),
            vec!["all"],
        ),
        (
            "uni2mul.yaml",
            study(src, "uni2mul.yaml", &uni2mul),
            vec!["all"],
        ),
        (
            "smp.yaml",
            study(src, "smp.yaml", &smp),
            vec!["table_main", "table_fig6", "table_bimodal"],
        ),
    ]
}

/// Runs the pipelines with `bin` in a fresh project; what each stage of each holds.
fn artifacts(bin: &str, src: &Path) -> (Project, Golden) {
    let p = Project::with_demo("stages: {}\n", 12, 7, &[]);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models");
    std::os::unix::fs::symlink(models, p.root().join("data/models")).unwrap();
    let mut out = Golden::new();
    for (file, text, targets) in pipelines(src) {
        let path = p.root().join("pipeline").join(file);
        std::fs::write(&path, text).unwrap();
        ensure_worker();
        let o = std::process::Command::new(bin)
            .arg("run")
            .args(&targets)
            .args(["-p", path.to_str().unwrap()])
            .current_dir(p.root())
            .env_remove("PIPELINE_CACHE")
            // Inference on one thread: a matrix product split over another thread count sums
            // in another order.
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{bin} run {file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let plan = pipeline::config::load(&path, p.root(), &[], &Default::default()).unwrap();
        let db = pipeline::db::Db::open(&p.root().join("cache")).unwrap();
        let id = format!("pipeline/{file}");
        let stages = out.entry(file.to_string()).or_default();
        for s in &plan.stages {
            let Some((key, _)) = db.stage_state(&id, &s.name).unwrap() else {
                continue; // not a target's upstream
            };
            let object = db.artifact(&key).unwrap().expect("recorded").object;
            let digest = content(&p.root().join("cache"), &object);
            stages.insert(s.name.clone(), (key, digest));
        }
    }
    (p, out)
}

/// The kinds whose keys changed by design since the recording (see the module's docs).
const REKEYED: &[&str] = &["train_joint", "embed", "train_unimodal", "train_fusion"];

/// The stages of `file` whose key covers a [`REKEYED`] kind's stage (they, and what reads
/// them).
fn rekeyed_by_design(p: &Project, file: &str) -> BTreeSet<String> {
    let path: PathBuf = p.root().join("pipeline").join(file);
    let plan = pipeline::config::load(&path, p.root(), &[], &Default::default()).unwrap();
    let mut out = BTreeSet::new();
    for s in &plan.stages {
        // Plan order is topological: inputs come first.
        if REKEYED.contains(&s.kind.as_str()) || s.inputs.iter().any(|i| out.contains(i)) {
            out.insert(s.name.clone());
        }
    }
    out
}

#[test]
fn artifacts_match_the_engine_before_the_renovation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(bin) = std::env::var("PIPELINE_GOLDEN_BIN") {
        let src = std::env::var("PIPELINE_GOLDEN_SRC").map_or(root.to_path_buf(), PathBuf::from);
        let (_, pipelines) = artifacts(&bin, &src);
        let rec = Recording {
            models: model_hashes(),
            pipelines,
        };
        let text = serde_json::to_string_pretty(&rec).unwrap() + "\n";
        std::fs::write(root.join(FILE), text).unwrap();
        return;
    }
    let rec: Recording =
        serde_json::from_str(&std::fs::read_to_string(root.join(FILE)).unwrap()).unwrap();
    let same_models = rec.models == model_hashes();
    if !same_models {
        eprintln!(
            "the model files are not the recorded ones (another `make models`): keys not compared"
        );
    }
    let want = rec.pipelines;
    let (p, got) = artifacts(BIN, root);
    let mut diffs = Vec::new();
    let mut rekeyed = Vec::new();
    for (file, stages) in &want {
        let by_design = rekeyed_by_design(&p, file);
        for (stage, (key, digest)) in stages {
            let Some((k, o)) = got.get(file).and_then(|g| g.get(stage)) else {
                diffs.push(format!("{file} {stage}: not run"));
                continue;
            };
            if o != digest {
                diffs.push(format!(
                    "{file} {stage}: content {:.12} instead of {:.12}",
                    o, digest
                ));
            }
            match (k == key || !same_models, by_design.contains(stage)) {
                (true, _) => {}
                (false, true) => rekeyed.push(format!("{file} {stage}: {:.12} -> {:.12}", key, k)),
                (false, false) => diffs.push(format!("{file} {stage}: key changed")),
            }
        }
        let extra = got[file].keys().filter(|s| !stages.contains_key(*s));
        diffs.extend(extra.map(|s| format!("{file} {s}: not in the recording")));
    }
    // The note of the renovation lists these.
    eprintln!(
        "keys changed by design, same content:\n{}",
        rekeyed.join("\n")
    );
    assert!(
        !rekeyed.is_empty() || !same_models,
        "the embed, train_joint and training keys were expected to change"
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
