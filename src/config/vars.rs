//! `${vars}` and `${matrix.axis}` references, and `--set` overrides of the YAML.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as J;
use serde_yaml_ng::Value as Y;

use super::{did_you_mean, key_str, scalar_text, ConfigError, Ctx};

pub(super) fn apply_sets(cx: &Ctx, doc: &mut Y, sets: &[String]) -> Result<(), ConfigError> {
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
            // A misspelt variable would otherwise be set, never read, and the run would go on
            // with the value the YAML has.
            if !m.contains_key(name) {
                let known: Vec<String> = m.keys().map(key_str).collect();
                return Err(bad(format!(
                    "the pipeline defines no variable `{name}`{}",
                    did_you_mean(name, known.iter().map(|s| s.as_str()))
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_else(|| format!(
                            "; its variables are: {}",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ))
                )));
            }
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
pub(super) fn substitute(
    v: &J,
    vars: &J,
    matrix: &BTreeMap<String, J>,
    used: &mut BTreeSet<String>,
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

pub(super) fn lookup(
    name: &str,
    vars: &J,
    matrix: &BTreeMap<String, J>,
    used: &mut BTreeSet<String>,
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
