//! One stage declaration of the YAML -> its checked matrix variants (inputs still unresolved).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as J;
use serde_yaml_ng::{Mapping, Value as Y};
use stages::Kind;

use super::matrix::{cartesian, matrix_values};
use super::params::{check_params, param_names};
use super::resources::check_resources;
use super::vars::substitute;
use super::{
    did_you_mean, json_map, key_str, line_of, scalar_text, to_json, ConfigError, Ctx, StageDef,
    STAGE_KEYS,
};
use crate::registry::Registry;

/// A declared stage and its variants, before inputs are resolved.
pub(super) struct Decl<'a> {
    pub base: String,
    pub spec: &'a Mapping,
    pub axes: Vec<String>,
    pub variants: Vec<StageDef>,
}

/// What every stage declaration is read against.
pub(super) struct Top<'a> {
    pub cx: &'a Ctx<'a>,
    pub reg: &'a Registry,
    pub stage_map: &'a Mapping,
    pub vars: &'a J,
    /// The pipeline's default cluster resources.
    pub resources: &'a BTreeMap<String, J>,
}

/// The parts of one declaration every variant shares.
struct Shared<'a> {
    base: &'a str,
    kind: &'a str,
    stage: &'a dyn Kind,
    spec: &'a Mapping,
    raw_params: Mapping,
    resources: BTreeMap<String, J>,
    desc: Option<String>,
    line: usize,
}

impl<'a> Top<'a> {
    fn err(&self, base: &str, sub: &[&str], msg: String, hint: Option<String>) -> ConfigError {
        let mut p = vec!["stages", base];
        p.extend_from_slice(sub);
        self.cx.err(&p, msg, hint)
    }

    pub fn declare(&self, base: String, v: &'a Y) -> Result<Decl<'a>, ConfigError> {
        let (spec, kind, stage) = self.header(&base, v)?;
        let axes = self.axes(&base, spec)?;
        let raw_params = match spec.get("params") {
            None | Some(Y::Null) => Mapping::new(),
            Some(Y::Mapping(m)) => m.clone(),
            Some(_) => {
                let msg = "`params` must be a mapping".into();
                return Err(self.err(&base, &["params"], msg, None));
            }
        };
        let shared = Shared {
            base: &base,
            kind: &kind,
            stage,
            spec,
            raw_params,
            resources: self.stage_resources(&base, spec)?,
            desc: spec
                .get("desc")
                .and_then(|d| d.as_str())
                .map(str::to_string),
            line: line_of(self.cx.text, &["stages", &base]),
        };
        let variants = cartesian(&axes)
            .into_iter()
            .map(|combo| self.variant(&shared, combo))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Decl {
            axes: axes.into_iter().map(|(a, _)| a).collect(),
            base,
            spec,
            variants,
        })
    }

    /// The stage's name, keys and kind checked: its mapping, kind name and kind.
    fn header(
        &self,
        base: &str,
        v: &'a Y,
    ) -> Result<(&'a Mapping, String, &'a dyn Kind), ConfigError> {
        if !valid_name(base, NAME_CHARS) {
            let msg = format!(
                "stage name {:?}: a stage name is one or more of {NAME_CHARS_DOC}",
                base
            );
            return Err(self.err(base, &[], msg, None));
        }
        let Y::Mapping(spec) = v else {
            let msg = format!("stage `{base}` must be a mapping with `kind:`");
            return Err(self.err(base, &[], msg, None));
        };
        for sk in spec.keys() {
            let sk = key_str(sk);
            if !STAGE_KEYS.contains(&sk.as_str()) {
                let hint = format!(
                    "{}stage keys are {}",
                    did_you_mean(&sk, STAGE_KEYS.iter().copied())
                        .map(|h| format!("{h}; "))
                        .unwrap_or_default(),
                    STAGE_KEYS.join(", ")
                );
                let msg = format!("stage `{base}`: unknown key `{sk}`");
                return Err(self.err(base, &[&sk], msg, Some(hint)));
            }
        }
        let kinds = self.reg.kinds();
        let Some(Y::String(kind)) = spec.get("kind") else {
            let msg = format!("stage `{base}` has no `kind:`");
            let hint = format!("known kinds: {}", kinds.join(", "));
            return Err(self.err(base, &[], msg, Some(hint)));
        };
        let Some(stage) = self.reg.get(kind) else {
            let hint = format!(
                "{}known kinds: {}",
                did_you_mean(kind, kinds.iter().copied())
                    .map(|h| format!("{h}; "))
                    .unwrap_or_default(),
                kinds.join(", ")
            );
            let msg = format!("stage `{base}`: unknown kind `{kind}`");
            return Err(self.err(base, &["kind"], msg, Some(hint)));
        };
        Ok((spec, kind.clone(), stage))
    }

    /// The matrix axes and their values.
    fn axes(&self, base: &str, spec: &Mapping) -> Result<Vec<(String, Vec<J>)>, ConfigError> {
        match spec.get("matrix") {
            None | Some(Y::Null) => Ok(Vec::new()),
            Some(Y::Mapping(m)) => {
                let mut axes = Vec::new();
                for (ak, av) in m {
                    let a = key_str(ak);
                    let vals = matrix_values(av, self.vars).map_err(|e| {
                        let msg = format!("matrix axis `{a}`: {e}");
                        self.err(base, &["matrix", &a], msg, None)
                    })?;
                    axes.push((a, vals));
                }
                let n = axes
                    .iter()
                    .try_fold(1u128, |n, (_, v)| n.checked_mul(v.len() as u128))
                    .unwrap_or(u128::MAX);
                super::matrix::check_cap(n).map_err(|e| {
                    let msg = format!("stage `{base}`: its matrix spans {e}");
                    self.err(base, &["matrix"], msg, None)
                })?;
                Ok(axes)
            }
            Some(_) => Err(self.err(
                base,
                &["matrix"],
                "`matrix` must map axis names to lists".into(),
                Some("matrix: {seed: [1, 2, 3], fusion: [concat, conformer]}".into()),
            )),
        }
    }

    /// The pipeline's resources with the stage's own on top.
    fn stage_resources(
        &self,
        base: &str,
        spec: &Mapping,
    ) -> Result<BTreeMap<String, J>, ConfigError> {
        let mut resources = self.resources.clone();
        match spec.get("resources") {
            None | Some(Y::Null) => {}
            Some(v @ Y::Mapping(_)) => {
                let own = json_map(to_json(v));
                check_resources(&own).map_err(|(k, msg)| {
                    let msg = format!("stage `{base}`: {msg}");
                    self.err(base, &["resources", &k], msg, None)
                })?;
                resources.extend(own);
            }
            Some(_) => {
                let msg = "`resources` must be a mapping".into();
                return Err(self.err(base, &["resources"], msg, None));
            }
        }
        Ok(resources)
    }

    /// Whether an input of the stage also has matrix axis `a`: then this stage's variants pair
    /// with that input's.
    fn paired(&self, spec: &Mapping, a: &str) -> bool {
        let Some(ins) = super::text::Written::of(spec) else {
            return false;
        };
        ins.all().into_iter().any(|i| {
            let up = i.split('[').next().unwrap_or(i);
            matches!(
                self.stage_map.get(up).and_then(|u| u.get("matrix")),
                Some(Y::Mapping(m)) if m.contains_key(a)
            )
        })
    }

    /// One combination of axis values -> a stage with its params substituted and checked.
    fn variant(&self, sh: &Shared, combo: Vec<(String, J)>) -> Result<StageDef, ConfigError> {
        let base = sh.base;
        let matrix: BTreeMap<String, J> = combo.iter().cloned().collect();
        if let Some((a, v)) = combo
            .iter()
            .find(|(a, v)| !valid_name(a, NAME_CHARS) || !valid_name(&scalar_text(v), VALUE_CHARS))
        {
            let msg = format!(
                "stage `{base}`: matrix axis {a:?} = {:?}: axis names use {NAME_CHARS_DOC}, and values \
                 {VALUE_CHARS_DOC}, as they become part of the variant's name",
                scalar_text(v)
            );
            return Err(self.err(base, &["matrix"], msg, None));
        }
        let name = if combo.is_empty() {
            base.to_string()
        } else {
            let axes: Vec<String> = combo
                .iter()
                .map(|(k, v)| format!("{k}={}", scalar_text(v)))
                .collect();
            format!("{base}[{}]", axes.join(","))
        };
        let mut used_axes = BTreeSet::new();
        let mut given: BTreeMap<String, J> = BTreeMap::new();
        for (pk, pv) in &sh.raw_params {
            let pk = key_str(pk);
            let v = substitute(&to_json(pv), self.vars, &matrix, &mut used_axes).map_err(
                |(msg, hint)| {
                    let msg = format!("stage `{base}`, param `{pk}`: {msg}");
                    self.err(base, &["params", &pk], msg, hint)
                },
            )?;
            given.insert(pk, v);
        }
        for (a, v) in &combo {
            if sh.stage.params().iter().any(|p| p.name == a) && !given.contains_key(a) {
                given.insert(a.clone(), v.clone());
                used_axes.insert(a.clone());
            }
        }
        if let Some((a, _)) = combo
            .iter()
            .find(|(a, _)| !used_axes.contains(a) && !self.paired(sh.spec, a))
        {
            let kind = sh.kind;
            return Err(self.err(
                base,
                &["matrix", a],
                format!("stage `{base}`: matrix axis `{a}` is not a param of kind `{kind}`, no param uses ${{matrix.{a}}} and no input has it"),
                Some(format!("params of `{kind}`: {}", param_names(sh.stage.params()))),
            ));
        }
        let params = check_params(sh.stage, &given).map_err(|(p, msg, hint)| {
            let sub: Vec<&str> = if p.is_empty() {
                vec!["params"]
            } else {
                vec!["params", &p]
            };
            self.err(base, &sub, format!("stage `{base}`: {msg}"), hint)
        })?;
        Ok(StageDef {
            name,
            base: base.to_string(),
            kind: sh.kind.to_string(),
            variant: combo,
            params,
            inputs: Vec::new(),
            resources: sh.resources.clone(),
            desc: sh.desc.clone(),
            line: sh.line,
        })
    }
}

/// What a stage name (and a matrix axis name) is made of. A variant is named
/// `base[axis=value,...]`; these names reach file names and cluster batch scripts, so they
/// hold no spaces, quotes or control characters.
pub const NAME_CHARS: &str = "_.-";
pub const NAME_CHARS_DOC: &str = "letters, digits, `_`, `.` and `-`";
/// What a matrix value may hold besides letters and digits (`linear+lstm`, `1e-3`, a path,
/// a list such as `3,4`).
pub const VALUE_CHARS: &str = "_.-+/:@,";
pub const VALUE_CHARS_DOC: &str = "letters, digits and `_ . - + / : @ ,`";

pub fn valid_name(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}
