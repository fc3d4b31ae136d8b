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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value as J;
use serde_yaml_ng::Value as Y;
use stages::{ParamSpec, Params, Stage};

use crate::locate::line_of;
use crate::registry::Registry;

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.msg
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

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
}

impl Plan {
    pub fn get(&self, name: &str) -> Option<&StageDef> {
        self.index.get(name).map(|&i| &self.stages[i])
    }

    /// The named stages (base names select every variant) and everything upstream of them,
    /// in plan order.
    pub fn select(&self, targets: &[String]) -> Result<Vec<usize>, String> {
        if targets.is_empty() || targets.iter().any(|t| t == "all") {
            return Ok((0..self.stages.len()).collect());
        }
        let mut want = vec![false; self.stages.len()];
        let mut stack = Vec::new();
        for t in targets {
            let hits: Vec<usize> = self
                .stages
                .iter()
                .enumerate()
                .filter(|(_, s)| &s.name == t || &s.base == t)
                .map(|(i, _)| i)
                .collect();
            if hits.is_empty() {
                let names: Vec<&str> = self.stages.iter().map(|s| s.base.as_str()).collect();
                return Err(format!(
                    "no stage `{t}` in {}{}",
                    self.file.display(),
                    did_you_mean(t, names.iter().copied())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default()
                ));
            }
            stack.extend(hits);
        }
        while let Some(i) = stack.pop() {
            if !want[i] {
                want[i] = true;
                stack.extend(self.stages[i].inputs.iter().map(|n| self.index[n]));
            }
        }
        Ok((0..self.stages.len()).filter(|&i| want[i]).collect())
    }
}

const STAGE_KEYS: &[&str] = &["kind", "inputs", "params", "matrix", "resources", "desc"];

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: &[&str], msg: impl Into<String>, hint: Option<String>) -> ConfigError {
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
    let mut doc: Y = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        msg: format!("invalid YAML: {e}"),
        hint: Some("check indentation and quoting around this line".into()),
    })?;
    // YAML merge keys (`params: {<<: *base, mgf: false}`) let ablations share a stage's params.
    doc.apply_merge().map_err(|e| ConfigError {
        file: file.to_path_buf(),
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
    apply_sets(&cx, &mut doc, sets)?;

    let vars = match doc.get("vars") {
        None | Some(Y::Null) => J::Object(Default::default()),
        Some(v @ Y::Mapping(_)) => to_json(v),
        Some(_) => return Err(cx.err(&["vars"], "`vars` must be a mapping", None)),
    };
    // Cluster resources every stage gets unless it says otherwise (`pipeline submit`).
    let default_resources = match doc.get("resources") {
        None | Some(Y::Null) => BTreeMap::new(),
        Some(v @ Y::Mapping(_)) => {
            let m = json_map(to_json(v));
            check_resources(&m).map_err(|(k, msg)| cx.err(&["resources", &k], msg, None))?;
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
    struct Decl<'a> {
        base: String,
        spec: &'a serde_yaml_ng::Mapping,
        axes: Vec<String>,
        variants: Vec<StageDef>,
    }
    let mut decls: Vec<Decl> = Vec::new();
    for (k, v) in stage_map {
        let base = key_str(k);
        let at = |sub: &[&str]| -> Vec<String> {
            let mut p = vec!["stages".to_string(), base.clone()];
            p.extend(sub.iter().map(|s| s.to_string()));
            p
        };
        let err = |sub: &[&str], msg: String, hint: Option<String>| {
            let p = at(sub);
            let p: Vec<&str> = p.iter().map(|s| s.as_str()).collect();
            cx.err(&p, msg, hint)
        };
        if base.contains(['[', ']', ',', '=']) || base.trim().is_empty() {
            return Err(err(
                &[],
                format!("stage name `{base}` may not contain [ ] , ="),
                None,
            ));
        }
        let Y::Mapping(spec) = v else {
            return Err(err(
                &[],
                format!("stage `{base}` must be a mapping with `kind:`"),
                None,
            ));
        };
        for sk in spec.keys() {
            let sk = key_str(sk);
            if !STAGE_KEYS.contains(&sk.as_str()) {
                return Err(err(
                    &[&sk],
                    format!("stage `{base}`: unknown key `{sk}`"),
                    Some(format!(
                        "{}stage keys are {}",
                        did_you_mean(&sk, STAGE_KEYS.iter().copied())
                            .map(|h| format!("{h}; "))
                            .unwrap_or_default(),
                        STAGE_KEYS.join(", ")
                    )),
                ));
            }
        }
        let kind = match spec.get("kind") {
            Some(Y::String(s)) => s.clone(),
            _ => {
                return Err(err(
                    &[],
                    format!("stage `{base}` has no `kind:`"),
                    Some(format!("known kinds: {}", reg.kinds().join(", "))),
                ))
            }
        };
        let Some(stage) = reg.get(&kind) else {
            return Err(err(
                &["kind"],
                format!("stage `{base}`: unknown kind `{kind}`"),
                Some(format!(
                    "{}known kinds: {}",
                    did_you_mean(&kind, reg.kinds().into_iter())
                        .map(|h| format!("{h}; "))
                        .unwrap_or_default(),
                    reg.kinds().join(", ")
                )),
            ));
        };
        let line = line_of(text, &["stages", &base]);
        let axes = match spec.get("matrix") {
            None | Some(Y::Null) => Vec::new(),
            Some(Y::Mapping(m)) => {
                let mut axes = Vec::new();
                for (ak, av) in m {
                    let a = key_str(ak);
                    let vals = matrix_values(av, &vars).map_err(|e| {
                        err(&["matrix", &a], format!("matrix axis `{a}`: {e}"), None)
                    })?;
                    axes.push((a, vals));
                }
                axes
            }
            Some(_) => {
                return Err(err(
                    &["matrix"],
                    "`matrix` must map axis names to lists".into(),
                    Some("matrix: {seed: [1, 2, 3], fusion: [concat, conformer]}".into()),
                ))
            }
        };
        let raw_params = match spec.get("params") {
            None | Some(Y::Null) => serde_yaml_ng::Mapping::new(),
            Some(Y::Mapping(m)) => m.clone(),
            Some(_) => return Err(err(&["params"], "`params` must be a mapping".into(), None)),
        };
        let mut resources = default_resources.clone();
        match spec.get("resources") {
            None | Some(Y::Null) => {}
            Some(v @ Y::Mapping(_)) => {
                let own = json_map(to_json(v));
                check_resources(&own).map_err(|(k, msg)| {
                    err(&["resources", &k], format!("stage `{base}`: {msg}"), None)
                })?;
                resources.extend(own);
            }
            Some(_) => {
                return Err(err(
                    &["resources"],
                    "`resources` must be a mapping".into(),
                    None,
                ))
            }
        }
        let desc = spec
            .get("desc")
            .and_then(|d| d.as_str())
            .map(str::to_string);

        let mut variants = Vec::new();
        for combo in cartesian(&axes) {
            let matrix: BTreeMap<String, J> = combo.iter().cloned().collect();
            let name = if combo.is_empty() {
                base.clone()
            } else {
                format!(
                    "{base}[{}]",
                    combo
                        .iter()
                        .map(|(k, v)| format!("{k}={}", scalar_text(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            let mut used_axes = std::collections::BTreeSet::new();
            let mut given: BTreeMap<String, J> = BTreeMap::new();
            for (pk, pv) in &raw_params {
                let pk = key_str(pk);
                let v = substitute(&to_json(pv), &vars, &matrix, &mut used_axes).map_err(
                    |(msg, hint)| {
                        err(
                            &["params", &pk],
                            format!("stage `{base}`, param `{pk}`: {msg}"),
                            hint,
                        )
                    },
                )?;
                given.insert(pk, v);
            }
            for (a, v) in &combo {
                if stage.params().iter().any(|p| p.name == a) && !given.contains_key(a) {
                    given.insert(a.clone(), v.clone());
                    used_axes.insert(a.clone());
                }
            }
            // An axis an input also has pairs this stage's variants with that input's.
            let paired = |a: &str| -> bool {
                let Some(Y::Sequence(ins)) = spec.get("inputs") else {
                    return false;
                };
                ins.iter().filter_map(|i| i.as_str()).any(|i| {
                    let up = i.split('[').next().unwrap_or(i);
                    matches!(
                        stage_map.get(up).and_then(|u| u.get("matrix")),
                        Some(Y::Mapping(m)) if m.contains_key(a)
                    )
                })
            };
            if let Some((a, _)) = combo
                .iter()
                .find(|(a, _)| !used_axes.contains(a) && !paired(a))
            {
                return Err(err(
                    &["matrix", a],
                    format!("stage `{base}`: matrix axis `{a}` is not a param of kind `{kind}`, no param uses ${{matrix.{a}}} and no input has it"),
                    Some(format!("params of `{kind}`: {}", param_names(stage.params()))),
                ));
            }
            let params = check_params(stage, &given).map_err(|(p, msg, hint)| {
                let sub: Vec<&str> = if p.is_empty() {
                    vec!["params"]
                } else {
                    vec!["params", &p]
                };
                err(&sub, format!("stage `{base}`: {msg}"), hint)
            })?;
            variants.push(StageDef {
                name,
                base: base.clone(),
                kind: kind.clone(),
                variant: combo,
                params,
                inputs: Vec::new(),
                resources: resources.clone(),
                desc: desc.clone(),
                line,
            });
        }
        decls.push(Decl {
            base,
            spec,
            axes: axes.iter().map(|(a, _)| a.clone()).collect(),
            variants,
        });
    }

    // Resolve inputs against the expanded variants.
    let bases: Vec<String> = decls.iter().map(|d| d.base.clone()).collect();
    let mut resolved: Vec<Vec<Vec<String>>> = Vec::new();
    for d in &decls {
        let list: Vec<String> = match d.spec.get("inputs") {
            None | Some(Y::Null) => Vec::new(),
            Some(Y::String(s)) => vec![s.clone()],
            Some(Y::Sequence(seq)) => seq.iter().map(|v| scalar_text(&to_json(v))).collect(),
            Some(_) => {
                return Err(cx.err(
                    &["stages", &d.base, "inputs"],
                    format!("stage `{}`: `inputs` must be a list of stage names", d.base),
                    None,
                ))
            }
        };
        let mut per_variant = vec![Vec::new(); d.variants.len()];
        for input in &list {
            let (ibase, sel) = parse_selector(input).map_err(|e| {
                cx.err(
                    &["stages", &d.base, "inputs"],
                    format!("stage `{}`: input `{input}`: {e}", d.base),
                    None,
                )
            })?;
            let Some(up) = decls.iter().find(|u| u.base == ibase) else {
                return Err(cx.err(
                    &["stages", &d.base, "inputs"],
                    format!(
                        "stage `{}`: input `{ibase}` is not a stage in this pipeline",
                        d.base
                    ),
                    Some(
                        did_you_mean(&ibase, bases.iter().map(|s| s.as_str()))
                            .unwrap_or_else(|| format!("stages: {}", bases.join(", "))),
                    ),
                ));
            };
            for (vi, v) in d.variants.iter().enumerate() {
                let picked: Vec<String> = up
                    .variants
                    .iter()
                    .filter(|u| {
                        u.variant.iter().all(|(a, val)| {
                            if let Some((_, want)) = sel.iter().find(|(k, _)| k == a) {
                                scalar_text(val) == *want
                            } else if d.axes.contains(a) {
                                // Same axis on both sides: pair variant with variant.
                                v.variant.iter().any(|(b, bv)| b == a && bv == val)
                            } else {
                                true
                            }
                        })
                    })
                    .map(|u| u.name.clone())
                    .collect();
                if picked.is_empty() {
                    return Err(cx.err(
                        &["stages", &d.base, "inputs"],
                        format!(
                            "stage `{}`: input `{input}` selects no variant of `{ibase}`",
                            v.name
                        ),
                        Some(format!(
                            "variants: {}",
                            up.variants
                                .iter()
                                .map(|u| u.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    ));
                }
                per_variant[vi].extend(picked);
            }
        }
        resolved.push(per_variant);
    }
    let mut stages_out: Vec<StageDef> = Vec::new();
    for (d, ins) in decls.into_iter().zip(resolved) {
        for (mut v, inputs) in d.variants.into_iter().zip(ins) {
            let stage = reg.get(&v.kind).expect("kind checked above");
            let (lo, hi) = stage.arity();
            if inputs.len() < lo || inputs.len() > hi {
                let want = if lo == hi {
                    format!("{lo}")
                } else if hi == usize::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo} to {hi}")
                };
                return Err(cx.err(
                    &[
                        "stages",
                        &d.base,
                        if inputs.is_empty() { "kind" } else { "inputs" },
                    ],
                    format!(
                        "stage `{}`: kind `{}` takes {want} input(s), got {}",
                        v.name,
                        v.kind,
                        inputs.len()
                    ),
                    Some(format!("inputs: [{}]", inputs.join(", "))),
                ));
            }
            v.inputs = inputs;
            stages_out.push(v);
        }
    }
    let stages_out = toposort(&cx, stages_out)?;
    let index = stages_out
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    Ok(Plan {
        file: file.to_path_buf(),
        root: root.to_path_buf(),
        stages: stages_out,
        index,
    })
}

fn toposort(cx: &Ctx, stages: Vec<StageDef>) -> Result<Vec<StageDef>, ConfigError> {
    let pos: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut state = vec![0u8; stages.len()]; // 0 new, 1 on stack, 2 done
    let mut order = Vec::with_capacity(stages.len());
    fn visit(
        i: usize,
        stages: &[StageDef],
        pos: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        if state[i] == 2 {
            return Ok(());
        }
        if state[i] == 1 {
            let start = path.iter().position(|&p| p == i).unwrap_or(0);
            let mut cycle = path[start..].to_vec();
            cycle.push(i);
            return Err(cycle);
        }
        state[i] = 1;
        path.push(i);
        for inp in &stages[i].inputs {
            visit(pos[inp.as_str()], stages, pos, state, order, path)?;
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..stages.len() {
        let mut path = Vec::new();
        if let Err(cycle) = visit(i, &stages, &pos, &mut state, &mut order, &mut path) {
            let names: Vec<&str> = cycle.iter().map(|&c| stages[c].name.as_str()).collect();
            let first = &stages[cycle[0]];
            return Err(cx.err(
                &["stages", &first.base, "inputs"],
                format!("cycle: {}", names.join(" -> ")),
                Some("a stage cannot depend on its own output; remove one of these inputs".into()),
            ));
        }
    }
    let mut slots: Vec<Option<StageDef>> = stages.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().expect("each once"))
        .collect())
}

fn check_params(
    stage: &dyn Stage,
    given: &BTreeMap<String, J>,
) -> Result<Params, (String, String, Option<String>)> {
    let specs = stage.params();
    for k in given.keys() {
        if !specs.iter().any(|p| p.name == k) {
            let names = specs.iter().map(|p| p.name);
            return Err((
                k.clone(),
                format!("unknown param `{k}` for kind `{}`", stage.kind()),
                Some(format!(
                    "{}params of `{}`: {}",
                    did_you_mean(k, names)
                        .map(|h| format!("{h}; "))
                        .unwrap_or_default(),
                    stage.kind(),
                    param_names(specs)
                )),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for p in specs {
        let v = match given.get(p.name) {
            Some(v) => p.ty.check(v).map_err(|e| {
                (
                    p.name.to_string(),
                    format!("param `{}`: {e}", p.name),
                    Some(p.doc.to_string()),
                )
            })?,
            None => match p.default_value() {
                Some(d) => d,
                None => {
                    return Err((
                        String::new(),
                        format!("missing required param `{}` ({})", p.name, p.ty.describe()),
                        Some(format!("{}: {}", p.name, p.doc)),
                    ))
                }
            },
        };
        out.insert(p.name.to_string(), v);
    }
    Ok(Params(out))
}

fn param_names(specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        "(none)".into()
    } else {
        specs.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
    }
}

fn apply_sets(cx: &Ctx, doc: &mut Y, sets: &[String]) -> Result<(), ConfigError> {
    for s in sets {
        let bad = |msg: String| ConfigError {
            file: cx.file.to_path_buf(),
            line: 0,
            msg: format!("--set {s}: {msg}"),
            hint: Some("use --set STAGE.PARAM=VALUE or --set vars.NAME=VALUE".into()),
        };
        let Some((path, value)) = s.split_once('=') else {
            return Err(bad("no `=`".into()));
        };
        let Some((head, name)) = path.split_once('.') else {
            return Err(bad("no `.` between stage and param".into()));
        };
        let value: Y =
            serde_yaml_ng::from_str(value).map_err(|e| bad(format!("value is not YAML: {e}")))?;
        let top = doc.as_mapping_mut().expect("checked mapping");
        if head == "vars" {
            let vars = top
                .entry(Y::from("vars"))
                .or_insert_with(|| Y::Mapping(Default::default()));
            if vars.is_null() {
                *vars = Y::Mapping(Default::default());
            }
            let Some(m) = vars.as_mapping_mut() else {
                return Err(bad("`vars` is not a mapping".into()));
            };
            m.insert(Y::from(name), value);
            continue;
        }
        let Some(Y::Mapping(stages)) = top.get_mut("stages") else {
            return Err(bad("the pipeline has no stages".into()));
        };
        let known: Vec<String> = stages.keys().map(key_str).collect();
        let Some(Y::Mapping(stage)) = stages.get_mut(head) else {
            return Err(bad(format!(
                "no stage `{head}`{}",
                did_you_mean(head, known.iter().map(|s| s.as_str()))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            )));
        };
        let params = stage
            .entry(Y::from("params"))
            .or_insert_with(|| Y::Mapping(Default::default()));
        if params.is_null() {
            *params = Y::Mapping(Default::default());
        }
        let Some(pm) = params.as_mapping_mut() else {
            return Err(bad(format!("stage `{head}`: params is not a mapping")));
        };
        pm.insert(Y::from(name), value);
    }
    Ok(())
}

/// Replaces `${name}` references. A string that is exactly one reference takes the referenced
/// value with its type (so `seed: ${seed}` stays an integer).
fn substitute(
    v: &J,
    vars: &J,
    matrix: &BTreeMap<String, J>,
    used: &mut std::collections::BTreeSet<String>,
) -> Result<J, (String, Option<String>)> {
    match v {
        J::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            let mut whole: Option<J> = None;
            while let Some(start) = rest.find("${") {
                let Some(end) = rest[start..].find('}') else {
                    return Err((format!("unclosed `${{` in `{s}`"), None));
                };
                let name = rest[start + 2..start + end].trim();
                let val = lookup(name, vars, matrix, used)?;
                if start == 0 && end + 1 == rest.len() && out.is_empty() {
                    whole = Some(val.clone());
                }
                out.push_str(&rest[..start]);
                out.push_str(&scalar_text(&val));
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            Ok(whole.unwrap_or(J::String(out)))
        }
        J::Array(a) => a
            .iter()
            .map(|x| substitute(x, vars, matrix, used))
            .collect::<Result<_, _>>()
            .map(J::Array),
        J::Object(m) => {
            let mut o = serde_json::Map::new();
            for (k, x) in m {
                o.insert(k.clone(), substitute(x, vars, matrix, used)?);
            }
            Ok(J::Object(o))
        }
        other => Ok(other.clone()),
    }
}

fn lookup(
    name: &str,
    vars: &J,
    matrix: &BTreeMap<String, J>,
    used: &mut std::collections::BTreeSet<String>,
) -> Result<J, (String, Option<String>)> {
    if let Some(axis) = name.strip_prefix("matrix.") {
        return match matrix.get(axis) {
            Some(v) => {
                used.insert(axis.to_string());
                Ok(v.clone())
            }
            None => Err((
                format!("unknown matrix axis in `${{{name}}}`"),
                Some(if matrix.is_empty() {
                    "this stage has no `matrix:`".into()
                } else {
                    format!(
                        "axes: {}",
                        matrix.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }),
            )),
        };
    }
    let path = name.strip_prefix("vars.").unwrap_or(name);
    let mut cur = vars;
    for part in path.split('.') {
        match cur.get(part) {
            Some(n) => cur = n,
            None => {
                let known: Vec<&str> = vars
                    .as_object()
                    .map(|m| m.keys().map(|k| k.as_str()).collect())
                    .unwrap_or_default();
                return Err((
                    format!("unknown variable `${{{name}}}`"),
                    Some(
                        did_you_mean(path, known.iter().copied()).unwrap_or_else(|| {
                            format!(
                                "defined under vars: {}",
                                if known.is_empty() {
                                    "(none)".into()
                                } else {
                                    known.join(", ")
                                }
                            )
                        }),
                    ),
                ));
            }
        }
    }
    Ok(cur.clone())
}

/// An axis's values: a list, an integer range `a..b`, or `${var}` naming either, so that
/// `--set vars.seeds=1..2` shrinks a grid from the command line.
fn matrix_values(v: &Y, vars: &J) -> Result<Vec<J>, String> {
    if let Some(name) = v
        .as_str()
        .and_then(|s| s.strip_prefix("${"))
        .and_then(|s| s.strip_suffix('}'))
    {
        let val = vars
            .get(name)
            .ok_or_else(|| format!("`${{{name}}}` is not defined under vars"))?;
        let y: Y = serde_json::from_value(val.clone()).map_err(|e| e.to_string())?;
        // One value is a one-value axis: `--set vars.seeds=3`.
        if matches!(y, Y::Number(_) | Y::Bool(_)) || matches!(&y, Y::String(s) if !s.contains(".."))
        {
            return Ok(vec![val.clone()]);
        }
        return matrix_values(&y, &J::Null).map_err(|e| format!("vars.{name} = {val}: {e}"));
    }
    match v {
        Y::Sequence(s) if !s.is_empty() => Ok(s.iter().map(to_json).collect()),
        Y::String(s) if s.contains("..") => {
            let (a, b) = s.split_once("..").expect("checked");
            let (a, b) = (a.trim().parse::<i64>(), b.trim().parse::<i64>());
            match (a, b) {
                (Ok(a), Ok(b)) if a <= b => Ok((a..=b).map(J::from).collect()),
                _ => Err(format!("`{s}` is not an integer range like 1..5")),
            }
        }
        _ => Err("give a non-empty list, or an integer range like 1..5".into()),
    }
}

fn cartesian(axes: &[(String, Vec<J>)]) -> Vec<Vec<(String, J)>> {
    let mut out: Vec<Vec<(String, J)>> = vec![Vec::new()];
    for (a, vals) in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                vals.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((a.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

fn parse_selector(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some(open) = s.find('[') else {
        return Ok((s.trim().to_string(), Vec::new()));
    };
    if !s.ends_with(']') {
        return Err("expected `name[axis=value,...]`".into());
    }
    let mut sel = Vec::new();
    for part in s[open + 1..s.len() - 1].split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or("expected `axis=value` inside [ ]")?;
        sel.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((s[..open].trim().to_string(), sel))
}

pub fn scalar_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_map(v: J) -> BTreeMap<String, J> {
    match v {
        J::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// What a stage may ask of a cluster, and the form each value takes.
pub const RESOURCE_KEYS: &[(&str, &str)] = &[
    ("cpus", "CPUs per task, an integer >= 1"),
    ("mem", "memory per node, such as 4G or 500M"),
    ("time", "a time limit: minutes, or [D-]HH:MM:SS"),
    ("gpus", "GPUs per node, an integer >= 0"),
    ("partition", "the partition's name"),
    (
        "shards",
        "array tasks a per-clip stage is split into, an integer >= 1",
    ),
    ("parallel", "array tasks running at once, an integer >= 1"),
];

fn check_resources(m: &BTreeMap<String, J>) -> Result<(), (String, String)> {
    for (k, v) in m {
        let Some((_, what)) = RESOURCE_KEYS.iter().find(|(n, _)| n == k) else {
            let names: Vec<&str> = RESOURCE_KEYS.iter().map(|(n, _)| *n).collect();
            return Err((
                k.clone(),
                format!(
                    "unknown resource `{k}`{}; resources are {}",
                    did_you_mean(k, names.iter().copied())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    names.join(", ")
                ),
            ));
        };
        let ok = match k.as_str() {
            "cpus" | "shards" | "parallel" => v.as_u64().is_some_and(|n| n >= 1),
            "gpus" => v.as_u64().is_some(),
            "mem" => v.as_u64().is_some() || v.as_str().is_some_and(valid_mem),
            "time" => v.as_u64().is_some() || v.as_str().is_some_and(valid_time),
            _ => v.as_str().is_some_and(|s| !s.is_empty()),
        };
        if !ok {
            return Err((k.clone(), format!("resource `{k}` = {v}: expected {what}")));
        }
    }
    Ok(())
}

fn valid_mem(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= s.len() && digits.parse::<u64>().is_ok()
}

fn valid_time(s: &str) -> bool {
    let (days, hms) = match s.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, s),
    };
    days.is_none_or(|d| d.parse::<u32>().is_ok())
        && !hms.is_empty()
        && hms.split(':').count() <= 3
        && hms.split(':').all(|p| p.parse::<u32>().is_ok())
}

fn key_str(k: &Y) -> String {
    match k {
        Y::String(s) => s.clone(),
        other => scalar_text(&to_json(other)),
    }
}

fn to_json(v: &Y) -> J {
    match v {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        Y::String(s) => J::String(s.clone()),
        Y::Sequence(s) => J::Array(s.iter().map(to_json).collect()),
        Y::Mapping(m) => J::Object(m.iter().map(|(k, v)| (key_str(k), to_json(v))).collect()),
        Y::Tagged(t) => to_json(&t.value),
    }
}

/// "did you mean `x`?" when a known name is within a small edit distance.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (levenshtein(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
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
    fn typed_whole_reference_and_interpolation() {
        let p = plan("vars: {seed: 7, d: data}\nstages:\n  ingest:\n    kind: ingest\n    params: {root: \"${d}/sims\"}\n  s:\n    kind: split\n    inputs: [ingest]\n    params: {seed: \"${seed}\"}\n").unwrap();
        assert_eq!(p.get("s").unwrap().params.0["seed"], J::from(7));
        assert_eq!(
            p.get("ingest").unwrap().params.0["root"],
            J::from("data/sims")
        );
    }
}
