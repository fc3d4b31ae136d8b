//! Wiring checked at plan time: a stage's inputs must have the columns it reads, where each
//! input's kind says what it produces (`Kind::produces`). A per-clip stage reads its first
//! input's table (a sharded input's index); a whole-table kind reads each role's tables (or, with
//! no roles, every input's: `Kind::table_reads`), a sharded input through its items' rows.
//! `face` fed from `ingest`, a `command` stage reading `logmel`, `pad` reading a `command`
//! stage, a training given raw `audio` as its features or `evaluate` given features are config
//! errors at the stage's line, with the kinds that produce what is missing.

use stages::{Kind, Mode, Params};

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
        for (input, reads, items) in wanted(kind, s) {
            let up = &stages[index[input]];
            let up_kind = reg.get(&up.kind).expect("validated kind");
            let has = if items {
                data_columns(up_kind, &up.params)
            } else {
                up_kind.produces(&up.params)
            };
            let Some(has) = has else {
                continue;
            };
            let missing: Vec<&str> = reads.iter().copied().filter(|c| !has.contains(c)).collect();
            if !missing.is_empty() {
                return Err(wiring_error(file, (s, up), &missing, &has, reg, items));
            }
        }
    }
    Ok(())
}

/// Per input of `s`: the columns read from it, and whether they are read from its rows (a
/// sharded input's items) rather than its table.
fn wanted<'a>(kind: &dyn Kind, s: &'a StageDef) -> Vec<(&'a str, &'static [&'static str], bool)> {
    if let Mode::PerItem { reads, .. } | Mode::Sharded { reads, .. } = kind.mode(&s.params) {
        return s
            .inputs
            .first()
            .map(|i| (i.as_str(), reads, false))
            .into_iter()
            .collect();
    }
    let roles = kind.roles();
    if roles.is_empty() {
        let reads = kind.table_reads(&s.params);
        return s.inputs.iter().map(|i| (i.as_str(), reads, true)).collect();
    }
    roles_of(roles, s.inputs.len())
        .into_iter()
        .zip(&s.inputs)
        .map(|(r, i)| (i.as_str(), r.reads, true))
        .collect()
}

/// Each of `n` inputs' role, in the kinds' role order: roles take one input each, except one
/// that takes what is left (the plan has checked the counts). Empty when that cannot be told.
fn roles_of(roles: &[stages::Role], n: usize) -> Vec<&stages::Role> {
    let fixed = roles
        .iter()
        .filter(|r| r.min == r.max)
        .map(|r| r.min)
        .sum::<usize>();
    let open: Vec<&stages::Role> = roles.iter().filter(|r| r.min != r.max).collect();
    if open.len() > 1 || (open.is_empty() && fixed != n) || n < fixed {
        return Vec::new();
    }
    roles
        .iter()
        .flat_map(|r| {
            let count = if r.min == r.max { r.min } else { n - fixed };
            std::iter::repeat_n(r, count)
        })
        .collect()
}

/// The columns of a stage's rows: a sharded stage's items (id and `writes`), else its table.
fn data_columns(k: &dyn Kind, params: &Params) -> Option<Vec<&'static str>> {
    match k.mode(params) {
        Mode::Sharded { id_column, .. } => {
            let writes = k.writes(params);
            (!writes.is_empty()).then(|| {
                std::iter::once(id_column)
                    .chain(writes.iter().copied())
                    .collect()
            })
        }
        _ => k.produces(params),
    }
}

fn wiring_error(
    file: &std::path::Path,
    (s, up): (&StageDef, &StageDef),
    missing: &[&str],
    has: &[&str],
    reg: &Registry,
    items: bool,
) -> ConfigError {
    let makers: Vec<&str> = reg
        .all()
        .filter(|k| {
            let params = Params(default_params(*k));
            let cols = if items {
                data_columns(*k, &params)
            } else {
                k.produces(&params)
            };
            cols.is_some_and(|p| missing.iter().all(|c| p.contains(c)))
        })
        .map(|k| k.kind())
        .collect();
    let cols: Vec<String> = missing.iter().map(|c| format!("`{c}`")).collect();
    ConfigError {
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
    }
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
