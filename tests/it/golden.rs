//! Same cache, same artifacts across the engine's renovation (kind declarations in a light
//! crate, media/embedding/training stages in a worker process): the default pipeline and a
//! reduced Uni2Mul study on a 12-clip demo (one seed, 2 epochs, one model per modality, one
//! libtorch thread) give exactly the keys and objects recorded in `golden/artifacts.json` with
//! the engine as it was before (commit 4c1536f, one process, libtorch linked).
//!
//! To record again with another build: `PIPELINE_GOLDEN_BIN=/path/to/pipeline cargo test --test
//! it golden` writes the file from that binary's run instead of checking.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

const FILE: &str = "tests/it/golden/artifacts.json";

fn uni2mul() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("pipeline/uni2mul.yaml"))
        .unwrap()
        .replace(
            ": data/models",
            &format!(": {}/data/models", root.display()),
        );
    for (k, v) in [
        ("seeds", "[1]"),
        ("epochs", "2"),
        ("threads", "1"),
        ("fusions", "[concat, conformer]"),
        ("vision_models", "[cnn_lstm]"),
        ("audio_models", "[cnn_attn_bilstm]"),
        ("text_models", "[cnn_attn]"),
    ] {
        let head = format!("\n  {k}: ");
        let at = text.find(&head).unwrap_or_else(|| panic!("no var {k}"));
        let end = at + 1 + text[at + 1..].find('\n').unwrap();
        text.replace_range(at..end, &format!("{head}{v}"));
    }
    text
}

/// Runs both pipelines with `bin` in a fresh project; its artifacts as key -> (stage, object).
fn artifacts(bin: &str) -> BTreeMap<String, (String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = std::fs::read_to_string(root.join("pipeline/default.yaml"))
        .unwrap()
        .replace(
            "models: data/models",
            &format!("models: {}/data/models", root.display()),
        );
    let p = Project::with_demo(&default, 12, 7, &[]);
    std::fs::write(p.root().join("pipeline/uni2mul.yaml"), uni2mul()).unwrap();
    for file in ["pipeline/default.yaml", "pipeline/uni2mul.yaml"] {
        ensure_worker();
        let o = std::process::Command::new(bin)
            .args(["run", "all", "-p", file, "--set", "vars.data=data"])
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
    }
    let db = pipeline::db::Db::open(&p.root().join("cache")).unwrap();
    db.artifacts()
        .unwrap()
        .into_iter()
        .map(|a| (a.key, (a.stage, a.object)))
        .collect()
}

#[test]
fn default_and_uni2mul_artifacts_match_the_engine_before_the_worker_split() {
    if let Ok(bin) = std::env::var("PIPELINE_GOLDEN_BIN") {
        let got = artifacts(&bin);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE);
        std::fs::write(path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE)).unwrap();
    let want: BTreeMap<String, (String, String)> = serde_json::from_str(&text).unwrap();
    let got = artifacts(BIN);
    let mut diffs = Vec::new();
    for (key, (stage, object)) in &want {
        match got.get(key) {
            None => diffs.push(format!("{stage}: key {} not produced", &key[..12])),
            Some((_, o)) if o != object => diffs.push(format!(
                "{stage}: object {} instead of {}",
                &o[..12],
                &object[..12]
            )),
            _ => {}
        }
    }
    for (key, (stage, _)) in &got {
        if !want.contains_key(key) {
            diffs.push(format!("{stage}: new key {}", &key[..12]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} artifacts differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}
