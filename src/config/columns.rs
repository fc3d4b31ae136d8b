//! Wiring checked at plan time: a per-clip stage's first input must have the columns it reads,
//! where the input's kind says what it produces (`Kind::produces`). `face` fed from `ingest`,
//! a `command` stage reading `logmel` or `pad` reading a `command` stage are config errors at
//! the stage's line, with the kinds that produce what is missing.

use stages::Mode;

use super::{ConfigError, StageDef};
use crate::registry::Registry;

pub(super) fn check(
    file: &std::path::Path,
    stages: &[StageDef],
    index: &std::collections::HashMap<String, usize>,
    reg: &Registry,
) -> Result<(), ConfigError> {
    for s in stages {
        let kind = reg.get(&s.kind).expect("validated kind");
        let (Mode::PerItem { reads, .. } | Mode::Sharded { reads, .. }) = kind.mode(&s.params)
        else {
            continue;
        };
        let Some(first) = s.inputs.first() else {
            continue;
        };
        let up = &stages[index[first]];
        let Some(has) = reg
            .get(&up.kind)
            .expect("validated kind")
            .produces(&up.params)
        else {
            continue;
        };
        let missing: Vec<&str> = reads.iter().copied().filter(|c| !has.contains(c)).collect();
        if missing.is_empty() {
            continue;
        }
        let makers: Vec<&str> = reg
            .all()
            .filter(|k| {
                k.produces(&stages::Params(default_params(*k)))
                    .is_some_and(|p| missing.iter().all(|c| p.contains(c)))
            })
            .map(|k| k.kind())
            .collect();
        let cols: Vec<String> = missing.iter().map(|c| format!("`{c}`")).collect();
        return Err(ConfigError {
            file: file.to_path_buf(),
            line: s.line,
            msg: format!(
                "stage `{}` ({}) reads {} from its input `{}`, a `{}` stage, which has no such column",
                s.name,
                s.kind,
                cols.join(", "),
                up.name,
                up.kind
            ),
            hint: Some(if makers.is_empty() {
                format!("`{}` produces: {}", up.kind, has.join(", "))
            } else {
                format!(
                    "kinds that produce it: {}; `{}` produces: {}",
                    makers.join(", "),
                    up.kind,
                    has.join(", ")
                )
            }),
        });
    }
    Ok(())
}

/// A kind's params at their defaults, for asking what it produces in general.
fn default_params(k: &dyn stages::Kind) -> std::collections::BTreeMap<String, serde_json::Value> {
    k.params()
        .iter()
        .filter_map(|p| {
            let v = serde_json::from_str(p.default?).ok()?;
            Some((p.name.to_string(), v))
        })
        .collect()
}
