//! A stage's given params against its kind's declared ones: names, types, defaults.

use std::collections::BTreeMap;

use serde_json::Value as J;
use stages::{Kind, ParamSpec, Params};

use super::did_you_mean;

pub(super) fn check_params(
    stage: &dyn Kind,
    given: &BTreeMap<String, J>,
) -> Result<Params, (String, String, Option<String>)> {
    let specs = stage.params_for(given);
    for k in given.keys() {
        if !specs.iter().any(|p| p.name == k) {
            let names = specs.iter().map(|p| p.name);
            let msg = if stage.params().iter().any(|p| p.name == k) {
                let model = given.get("model").map(|m| format!(" with model {m}"));
                format!(
                    "param `{k}` is not read by kind `{}`{}",
                    stage.kind(),
                    model.unwrap_or_default()
                )
            } else {
                format!("unknown param `{k}` for kind `{}`", stage.kind())
            };
            return Err((
                k.clone(),
                msg,
                Some(format!(
                    "{}params of `{}`: {}",
                    did_you_mean(k, names)
                        .map(|h| format!("{h}; "))
                        .unwrap_or_default(),
                    stage.kind(),
                    param_names(specs.iter().copied())
                )),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for p in specs.iter().copied() {
        let v = match given.get(p.name) {
            Some(v) => p.check(v).map_err(|e| {
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
                        format!("missing required param `{}` ({})", p.name, p.describe()),
                        Some(format!("{}: {}", p.name, p.doc)),
                    ))
                }
            },
        };
        out.insert(p.name.to_string(), v);
    }
    Ok(Params(out))
}

pub(super) fn param_names<'a>(specs: impl IntoIterator<Item = &'a ParamSpec>) -> String {
    let names: Vec<&str> = specs.into_iter().map(|p| p.name).collect();
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}
