//! Test projects: a temp folder with pipeline/, a dataset of real clips, and the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

/// Builds `pipeline-worker` beside `BIN`, once per test binary: it is another package's binary,
/// so cargo does not build it for this one's tests, and a stale one would run old stage code.
pub fn ensure_worker() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "-p", "pipeline-worker"]);
        if Path::new(BIN)
            .parent()
            .is_some_and(|d| d.ends_with("release"))
        {
            c.arg("--release");
        }
        let st = c.status().expect("cargo");
        assert!(st.success(), "building pipeline-worker failed");
    });
}

pub const PIPELINE: &str = "\
vars:
  data: data
  unused: 1
stages:
  ingest:
    kind: ingest
    params: {root: \"${data}\"}
  labels:
    kind: labels
    inputs: [ingest]
    params: {scale: sims, source: iua}
  split:
    kind: split
    inputs: [ingest]
    params: {method: manifest}
  probe:
    kind: probe
    inputs: [ingest]
";

/// One dataset of `n` clips per size, encoded once per test binary and copied into each project.
fn fixture(n: usize) -> PathBuf {
    static DIRS: OnceLock<std::sync::Mutex<Vec<(usize, PathBuf)>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut d = dirs.lock().unwrap();
    if let Some((_, p)) = d.iter().find(|(k, _)| *k == n) {
        return p.clone();
    }
    let dir = std::env::temp_dir().join(format!("pipeline-fixture-{}-{n}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixture.sh");
    let st = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .arg(n.to_string())
        .status()
        .expect("bash");
    assert!(st.success(), "fixture generation failed");
    d.push((n, dir.clone()));
    dir
}

pub struct Project {
    pub tmp: tempfile::TempDir,
}

impl Project {
    pub fn new(n: usize) -> Project {
        Self::with_pipeline(n, PIPELINE)
    }

    pub fn with_pipeline(n: usize, yaml: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("pipeline")).unwrap();
        std::fs::write(tmp.path().join("pipeline/default.yaml"), yaml).unwrap();
        let st = Command::new("cp")
            .arg("-r")
            .arg(fixture(n))
            .arg(tmp.path().join("data"))
            .status()
            .unwrap();
        assert!(st.success());
        Project { tmp }
    }

    /// A project whose `data/` is written by the demo generator (scripts/demo/make-demo.sh)
    /// with `args` after OUT N SEED.
    pub fn with_demo(yaml: &str, n: usize, seed: u64, args: &[&str]) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("pipeline")).unwrap();
        std::fs::write(tmp.path().join("pipeline/default.yaml"), yaml).unwrap();
        make_demo(&tmp.path().join("data"), n, seed, args);
        Project { tmp }
    }

    /// The table a stage's artifact holds, read back from its Parquet file.
    pub fn table(&self, stage: &str) -> arrow::record_batch::RecordBatch {
        self.table_with(stage, &[])
    }

    /// As [`Project::table`], with more arguments to `show` (`--set`s).
    pub fn table_with(&self, stage: &str, args: &[&str]) -> arrow::record_batch::RecordBatch {
        let mut a = vec!["show", stage, "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("show {stage}: {}", String::from_utf8_lossy(&out.stderr)));
        read_parquet(Path::new(
            v["artifact"].as_str().expect("stage is computed"),
        ))
    }

    /// One stored object (a sharded stage's item) by its hash.
    pub fn object(&self, hash: &str) -> arrow::record_batch::RecordBatch {
        read_parquet(
            &self
                .root()
                .join("cache/objects")
                .join(&hash[..2])
                .join(format!("{hash}.parquet")),
        )
    }

    /// A stage's failed items as (item, field, reason), sorted.
    pub fn failed_items(&self, stage: &str) -> Vec<(String, String, String)> {
        self.failed_items_with(stage, &[])
    }

    pub fn failed_items_with(&self, stage: &str, args: &[&str]) -> Vec<(String, String, String)> {
        let mut a = vec!["show", stage, "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut e: Vec<_> = v["failed_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let f = |k: &str| e[k].as_str().unwrap().to_string();
                (f("item"), f("field"), f("reason"))
            })
            .collect();
        e.sort();
        e
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        ensure_worker();
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.root())
            .env_remove("PIPELINE_CACHE");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `pipeline run --json ARGS`, returning (exit code, events, summary).
    pub fn run_json(&self, args: &[&str]) -> (i32, Vec<Value>, Value) {
        let mut a = vec!["run", "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let events = json_lines(&out.stdout);
        let summary = events
            .iter()
            .rev()
            .find_map(|e| e.get("summary").cloned())
            .unwrap_or_else(|| {
                panic!(
                    "no summary; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (out.status.code().unwrap_or(-1), events, summary)
    }

    pub fn objects(&self) -> Vec<String> {
        let mut v = Vec::new();
        let top = self.root().join("cache/objects");
        for d in std::fs::read_dir(top).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.ends_with(".parquet") {
                    v.push(n);
                }
            }
        }
        v.sort();
        v
    }

    /// Replace one clip with a different, valid clip.
    pub fn change_clip(&self, rel: &str, freq: u32) {
        let out = self.root().join("data/Raw").join(rel);
        let st = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-threads",
                "1",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=96x64:rate=25:duration=1",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!(
                "sine=frequency={freq}:sample_rate=16000:duration=1"
            ))
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

pub fn json_lines(b: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// The stages a `run --json` computed (not those it found cached), sorted.
pub fn ran(events: &[Value]) -> Vec<String> {
    let mut r: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "stage_done" && e["outcome"] == "ran")
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect();
    r.sort();
    r
}

pub fn stage_done<'a>(events: &'a [Value], stage: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "stage_done" && e["stage"] == stage)
        .unwrap_or_else(|| panic!("no stage_done for {stage}"))
}

/// Runs the demo generator; panics with its output when it fails.
pub fn make_demo(out: &Path, n: usize, seed: u64, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo/make-demo.sh");
    let o = Command::new("bash")
        .arg(script)
        .arg(out)
        .arg(n.to_string())
        .arg(seed.to_string())
        .args(args)
        .output()
        .expect("bash");
    assert!(
        o.status.success(),
        "demo generation failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// String column `name` of `t` as owned values (nulls as None).
pub fn strs(t: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<String>> {
    use arrow::array::Array;
    let c = t
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = c
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect()
}

pub fn f64s(t: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<f64>> {
    use arrow::array::Array;
    let a = t
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .clone();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect()
}

/// A Parquet file of the cache, as a reader outside it sees it; a table in parts is read part
/// by part, from the objects beside it.
pub fn read_parquet(path: &Path) -> arrow::record_batch::RecordBatch {
    let Some(parts) = part_objects(path) else {
        return read_one_parquet(path);
    };
    let objects = path.parent().unwrap().parent().unwrap();
    let parts: Vec<_> = parts
        .iter()
        .map(|h| read_parquet(&objects.join(&h[..2]).join(format!("{h}.parquet"))))
        .collect();
    arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap()
}

/// The part objects a table in parts lists (its metadata says `pipeline.parts`), or None for a
/// table in one file.
pub fn part_objects(path: &Path) -> Option<Vec<String>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let parted = b
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|k| k.key == "pipeline.parts"));
    parted.then(|| {
        strs(&read_one_parquet(path), "part")
            .into_iter()
            .flatten()
            .collect()
    })
}

fn read_one_parquet(path: &Path) -> arrow::record_batch::RecordBatch {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The bytes a `command` stage wrote for each row, in row order (its `data_hash` names a file
/// of the cache).
pub fn command_outputs(p: &Project, stage: &str) -> Vec<String> {
    strs(&p.table(stage), "data_hash")
        .into_iter()
        .map(|h| {
            let h = h.unwrap();
            let f = p
                .root()
                .join("cache/objects")
                .join(&h[..2])
                .join(format!("{h}.bin"));
            String::from_utf8(std::fs::read(&f).unwrap()).unwrap()
        })
        .collect()
}

/// Column `name` of `t` as its concrete Arrow array type.
pub fn typed<T: arrow::array::Array + Clone + 'static>(
    t: &arrow::record_batch::RecordBatch,
    name: &str,
) -> T {
    t.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
        .clone()
}

/// The pids of `pipeline-worker` processes whose parent is `parent`.
pub fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let ppid: u32 = rest
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && stat.contains("(pipeline-worke") {
            out.push(pid);
        }
    }
    out
}

impl Project {
    /// Runs `stage` (and what it needs) and returns its table.
    pub fn table_after_run(&self, stage: &str) -> arrow::record_batch::RecordBatch {
        let out = self.run(&["run", stage]);
        assert!(out.status.success(), "{out:?}");
        self.table(stage)
    }
}
