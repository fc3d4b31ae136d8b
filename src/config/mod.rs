//! Pipeline YAML -> validated, matrix-expanded stage list.
//!
//! ```yaml
//! vars:
//!   data: data/demo
//! stages:
//!   ingest:
//!     kind: ingest
//!     params: {root: "${data}"}
//!   train:
//!     kind: train_fusion
//!     inputs: [features]
//!     matrix: {fusion: [concat, conformer], seed: 1..5}   # or seed: ${seeds}
//! ```
//! Everything that can be wrong with a pipeline is found here, before anything runs, and
//! reported with file, line and a hint.

mod columns;
mod declare;
mod inputs;
mod matrix;
mod order;
mod params;
mod resources;
mod select;
mod text;
mod vars;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value as J;
use serde_yaml_ng::Value as Y;
use stages::Params;

use crate::locate::line_of;
use crate::registry::Registry;

pub use crate::error::ConfigError;
pub use resources::{valid_partition, RESOURCE_KEYS};
pub use text::{did_you_mean, scalar_text};
use text::{json_map, key_str, to_json};

/// One stage after matrix expansion.
#[derive(Debug, Clone)]
pub struct StageDef {
    /// `train` or, for a matrix variant, `train[fusion=concat,seed=1]`.
    pub name: String,
    pub base: String,
    pub kind: String,
    pub variant: Vec<(String, J)>,
    pub params: Params,
    pub inputs: Vec<String>,
    pub resources: BTreeMap<String, J>,
    pub desc: Option<String>,
    /// Where the stage is declared, for messages about it.
    pub line: usize,
}

#[derive(Debug)]
pub struct Plan {
    pub file: PathBuf,
    /// Relative paths in params are resolved against this folder (the project root).
    pub root: PathBuf,
    /// Topologically ordered; ties keep the order of the YAML.
    pub stages: Vec<StageDef>,
    pub index: HashMap<String, usize>,
    /// The `--set` overrides it was planned with, as given.
    pub sets: Vec<String>,
    /// Its variables, overrides applied.
    pub vars: J,
}

impl Plan {
    pub fn get(&self, name: &str) -> Option<&StageDef> {
        self.index.get(name).map(|&i| &self.stages[i])
    }
}

pub(super) const STAGE_KEYS: &[&str] = &["kind", "inputs", "params", "matrix", "resources", "desc"];

pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub fn err(&self, path: &[&str], msg: impl Into<String>, hint: Option<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: line_of(self.text, path),
            msg: msg.into(),
            hint,
        }
    }
}

/// Reads, expands and validates a pipeline file. `sets` are `STAGE.PARAM=VALUE` or
/// `vars.NAME=VALUE` overrides from the command line.
pub fn load(
    file: &Path,
    root: &Path,
    sets: &[String],
    reg: &Registry,
) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: 0,
        msg: format!("cannot read pipeline: {e}"),
        hint: Some("pass another file with -p, or create pipeline/default.yaml".into()),
    })?;
    parse(file, &text, root, sets, reg)
}

pub fn parse(
    file: &Path,
    text: &str,
    root: &Path,
    sets: &[String],
    reg: &Registry,
) -> Result<Plan, ConfigError> {
    let cx = Ctx { file, text };
    let doc = read_doc(&cx, sets)?;
    let vars = match doc.get("vars") {
        None | Some(Y::Null) => J::Object(Default::default()),
        Some(v @ Y::Mapping(_)) => to_json(v),
        Some(_) => return Err(cx.err(&["vars"], "`vars` must be a mapping", None)),
    };
    // Cluster resources every stage gets unless it says otherwise (`pipeline submit`).
    let resources = match doc.get("resources") {
        None | Some(Y::Null) => BTreeMap::new(),
        Some(v @ Y::Mapping(_)) => {
            let m = json_map(to_json(v));
            resources::check_resources(&m)
                .map_err(|(k, msg)| cx.err(&["resources", &k], msg, None))?;
            m
        }
        Some(_) => return Err(cx.err(&["resources"], "`resources` must be a mapping", None)),
    };
    let Some(Y::Mapping(stage_map)) = doc.get("stages") else {
        return Err(cx.err(
            &["stages"],
            "no `stages:` mapping",
            Some(
                "stages:\n    ingest:\n      kind: ingest\n      params: {root: data/demo}".into(),
            ),
        ));
    };
    // Expand every stage declaration into its variants; inputs are resolved afterwards, once
    // every variant name is known.
    let top = declare::Top {
        cx: &cx,
        reg,
        stage_map,
        vars: &vars,
        resources: &resources,
    };
    let decls = stage_map
        .iter()
        .map(|(k, v)| top.declare(key_str(k), v))
        .collect::<Result<Vec<_>, _>>()?;
    let stages_out = inputs::resolve(&cx, reg, decls)?;
    let stages_out = order::toposort(&cx, stages_out)?;
    let index = stages_out
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    columns::check(file, &stages_out, &index, reg)?;
    Ok(Plan {
        file: file.to_path_buf(),
        root: root.to_path_buf(),
        stages: stages_out,
        index,
        sets: sets.to_vec(),
        vars,
    })
}

/// The YAML document with merge keys applied, its top level checked, and `--set` applied.
fn read_doc(cx: &Ctx, sets: &[String]) -> Result<Y, ConfigError> {
    let mut doc: Y = serde_yaml_ng::from_str(cx.text).map_err(|e| ConfigError {
        file: cx.file.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        msg: format!("invalid YAML: {e}"),
        hint: Some("check indentation and quoting around this line".into()),
    })?;
    // YAML merge keys (`params: {<<: *base, mgf: false}`) let ablations share a stage's params.
    doc.apply_merge().map_err(|e| ConfigError {
        file: cx.file.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        msg: format!("YAML merge key: {e}"),
        hint: Some("`<<` takes an alias of a mapping (`<<: *name`) or a list of them".into()),
    })?;
    let Some(top) = doc.as_mapping_mut() else {
        return Err(cx.err(
            &[],
            "a pipeline is a mapping with `stages:` (and optional `vars:`)",
            None,
        ));
    };
    for k in top.keys() {
        let k = key_str(k);
        if k != "vars" && k != "stages" && k != "resources" {
            return Err(cx.err(
                &[&k],
                format!("unknown top-level key `{k}`"),
                Some("a pipeline has `vars:`, `stages:` and optional `resources:`".into()),
            ));
        }
    }
    vars::apply_sets(cx, &mut doc, sets)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(y: &str) -> Result<Plan, ConfigError> {
        plan_with_sets(y, &[])
    }

    fn plan_with_sets(y: &str, sets: &[String]) -> Result<Plan, ConfigError> {
        parse(
            Path::new("p.yaml"),
            y,
            Path::new("."),
            sets,
            &Registry::new(),
        )
    }

    #[test]
    fn resources_default_per_pipeline_and_override_per_stage() {
        let yaml = "resources: {cpus: 2, mem: 4G}\nstages:\n  ingest:\n    kind: ingest\n    params: {root: d}\n  s:\n    kind: split\n    inputs: [ingest]\n    resources: {cpus: 8, time: \"1-02:00:00\", shards: 4}\n";
        let p = plan(yaml).unwrap();
        let r = |n: &str| serde_json::to_string(&p.get(n).unwrap().resources).unwrap();
        assert_eq!(r("ingest"), r#"{"cpus":2,"mem":"4G"}"#);
        assert_eq!(
            r("s"),
            r#"{"cpus":8,"mem":"4G","shards":4,"time":"1-02:00:00"}"#
        );
        for (bad, msg) in [
            ("cpus: 8", "cpus: 0"),
            ("time: \"1-02:00:00\"", "time: \"2h\""),
            ("shards: 4", "gpu: 1"),
        ] {
            let e = plan(&yaml.replace(bad, msg)).unwrap_err();
            assert_eq!(e.line, 9, "{e}");
            assert!(e.to_string().contains("resource"), "{e}");
        }
    }

    #[test]
    fn matrix_axes_from_vars() {
        let yaml = "vars: {seeds: 1..3, methods: [ratio]}\nstages:\n  ingest:\n    kind: ingest\n    params: {root: d}\n  s:\n    kind: split\n    inputs: [ingest]\n    matrix: {seed: \"${seeds}\", method: \"${methods}\"}\n";
        let names = |p: &Plan| -> Vec<String> {
            p.stages
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| n.starts_with("s["))
                .collect()
        };
        let p = plan(yaml).unwrap();
        assert_eq!(names(&p).len(), 3);
        let one = plan_with_sets(yaml, &["vars.seeds=2".to_string()]).unwrap();
        assert_eq!(names(&one), vec!["s[seed=2,method=ratio]".to_string()]);
        let e = plan(&yaml.replace("${methods}", "${nothing}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`${nothing}` is not defined under vars"), "{e}");
    }

    #[test]
    fn merge_keys_share_params_between_stages() {
        let yaml = "stages:\n  ingest:\n    kind: ingest\n    params: {root: d}\n  a:\n    kind: split\n    inputs: [ingest]\n    params: &base {method: ratio, seed: 3}\n  b:\n    kind: split\n    inputs: [ingest]\n    params: {<<: *base, seed: 4}\n";
        let p = plan(yaml).unwrap();
        let get = |n: &str| {
            p.stages
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .params
                .clone()
        };
        assert_eq!(get("a").i64("seed").unwrap(), 3);
        assert_eq!(get("b").i64("seed").unwrap(), 4);
        assert_eq!(get("b").str("method").unwrap(), "ratio");
    }

    #[test]
    fn matrix_pairs_same_axes_and_gathers_others() {
        let p = plan(
            "stages:\n  ingest:\n    kind: ingest\n    params: {root: d}\n  s:\n    kind: split\n    inputs: [ingest]\n    matrix: {seed: 1..3, method: [ratio]}\n  l:\n    kind: labels\n    inputs: [ingest]\n",
        )
        .unwrap();
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"s[seed=2,method=ratio]"), "{names:?}");
        let s2 = p.get("s[seed=2,method=ratio]").unwrap();
        assert_eq!(s2.params.0["seed"], J::from(2));
        assert_eq!(s2.inputs, vec!["ingest"]);
    }

    #[test]
    fn errors_have_lines_and_hints() {
        let e = plan("stages:\n  ingest:\n    kind: ingets\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.hint.unwrap().contains("did you mean `ingest`"));
        let e = plan(
            "stages:\n  ingest:\n    kind: ingest\n    params:\n      root: d\n      layuot: csv\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        let e = plan(
            "stages:\n  ingest:\n    kind: ingest\n    params:\n      root: d\n      layout: 3\n",
        )
        .unwrap_err();
        assert!(e.msg.contains("expected one of mmsa, csv"), "{e}");
        let e = plan(
            "vars: {a: 1}\nstages:\n  ingest:\n    kind: ingest\n    params:\n      root: ${b}\n",
        )
        .unwrap_err();
        assert!(e.msg.contains("unknown variable"), "{e}");
        assert_eq!(e.line, 6);
        let e = plan("stages:\n  a:\n    kind: labels\n    inputs: [b]\n  b:\n    kind: labels\n    inputs: [a]\n").unwrap_err();
        assert!(e.msg.starts_with("cycle: "), "{e}");
    }

    #[test]
    fn a_joint_network_reads_only_its_own_params() {
        let y = |params: &str| {
            format!(
                "stages:\n  ingest:\n    kind: ingest\n    params: {{root: d}}\n  labels:\n    kind: labels\n    inputs: [ingest]\n  split:\n    kind: split\n    inputs: [ingest]\n  m:\n    kind: train_joint\n    inputs: [feat, labels, split]\n    params: {params}\n  audio:\n    kind: audio\n    inputs: [ingest]\n  feat:\n    kind: mfcc\n    inputs: [audio]\n"
            )
        };
        let p = plan(&y("{model: smp, names: v}")).unwrap();
        let m = &p.get("m").unwrap().params.0;
        assert!(m.contains_key("terms") && m.contains_key("lr"));
        assert!(
            !m.contains_key("layers") && !m.contains_key("avel"),
            "{m:?}"
        );
        let e = plan(&y("{model: smp, names: v, layers: 2}")).unwrap_err();
        assert!(
            e.msg
                .contains("param `layers` is not read by kind `train_joint` with model \"smp\""),
            "{e}"
        );
        assert_eq!(e.line, 14, "{e}");
    }

    #[test]
    fn inputs_by_role_in_role_order_and_named_errors() {
        let y = |inputs: &str| {
            format!(
                "stages:\n  ingest:\n    kind: ingest\n    params: {{root: d}}\n  labels:\n    kind: labels\n    inputs: [ingest]\n  split:\n    kind: split\n    inputs: [ingest]\n  t:\n    kind: train_unimodal\n    params: {{modality: v, model: cnn}}\n    inputs:\n{inputs}\n  audio:\n    kind: audio\n    inputs: [ingest]\n  feat:\n    kind: mfcc\n    inputs: [audio]\n"
            )
        };
        // Written in any order, handed over in the kind's: the same as the positional list.
        let p = plan(&y(
            "      split: split\n      labels: labels\n      features: feat",
        ))
        .unwrap();
        assert_eq!(p.get("t").unwrap().inputs, ["feat", "labels", "split"]);
        let e = plan(&y(
            "      features: feat\n      lables: labels\n      split: split",
        ))
        .unwrap_err();
        assert_eq!(e.line, 16, "{e}");
        assert!(
            e.msg
                .contains("`lables` is not an input of kind `train_unimodal`"),
            "{e}"
        );
        assert!(
            e.hint.as_deref().unwrap().contains("did you mean `labels`"),
            "{e:?}"
        );
        let e = plan(&y("      features: feat\n      labels: labels")).unwrap_err();
        assert!(e.msg.contains("input `split` is missing"), "{e}");
        assert_eq!(e.line, 14, "{e}");
        let e = plan(&y(
            "      features: [ingest, labels]\n      labels: labels\n      split: split",
        ))
        .unwrap_err();
        assert!(
            e.msg.contains("input `features` takes 1 stage(s), got 2"),
            "{e}"
        );
        // A kind whose inputs are one list has no roles to name.
        let e = plan("stages:\n  ingest:\n    kind: ingest\n    params: {root: d}\n  labels:\n    kind: labels\n    inputs: {clips: ingest}\n").unwrap_err();
        assert!(e.msg.contains("has no named inputs"), "{e}");
    }

    #[test]
    fn typed_whole_reference_and_interpolation() {
        let p = plan("vars: {seed: 7, d: data}\nstages:\n  ingest:\n    kind: ingest\n    params: {root: \"${d}/sims\"}\n  s:\n    kind: split\n    inputs: [ingest]\n    params: {seed: \"${seed}\"}\n").unwrap();
        assert_eq!(p.get("s").unwrap().params.0["seed"], J::from(7));
        assert_eq!(
            p.get("ingest").unwrap().params.0["root"],
            J::from("data/sims")
        );
    }
}
