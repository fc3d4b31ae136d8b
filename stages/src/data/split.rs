//! `split`: assigns clips to train/valid/test, as rows (clip_id, fold, split).
//!
//! - `manifest`: the manifest's mode column (CH-SIMS and MOSI ship one).
//! - `ratio`: seeded ratios. Each clip (or group, with `group_column`) is ranked by
//!   BLAKE3(seed, id), so adding a clip never moves the others to another split.
//! - `logo`: leave-one-group-out folds (IEMOCAP sessions, speakers): fold k tests group k and
//!   trains on the rest; `valid_share` of the rest (ranked by BLAKE3(seed, id), so the same
//!   clips in every fold they train in) validates instead of training.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, i64s, opt_str, str_col, strings};
use crate::{ItemError, Kind, Output, RunCtx, Stage, StageError};

pub struct Split;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "method",
        ParamType::Enum(&["manifest", "ratio", "logo"]),
        Some("\"manifest\""),
        "manifest: the mode column; ratio: seeded ratios; logo: leave-one-group-out folds",
    ),
    ParamSpec::new(
        "ratios",
        ParamType::FloatList,
        Some("[0.7, 0.1, 0.2]"),
        "ratio: train, valid, test fractions",
    ),
    ParamSpec::new("seed", ParamType::Int, Some("1"), "ratio, logo: shuffling seed"),
    ParamSpec::new(
        "valid_share",
        ParamType::Float,
        Some("0.0"),
        "logo: share of each fold's non-test clips that validate (model selection) instead of training",
    ),
    ParamSpec::new(
        "group_column",
        ParamType::Str,
        Some("\"\""),
        "ratio: keep each group in one split (empty: split clips); logo: the group column (default `group`)",
    ),
];

fn normalise_mode(m: &str) -> Option<&'static str> {
    match m.trim().to_ascii_lowercase().as_str() {
        "train" | "training" => Some("train"),
        "valid" | "val" | "validation" | "dev" => Some("valid"),
        "test" | "testing" => Some("test"),
        _ => None,
    }
}

fn rank_key(seed: i64, id: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(id.as_bytes());
    *h.finalize().as_bytes()
}

/// Cuts `n` ranked units into train/valid/test counts by cumulative rounding, so the three
/// always add up to `n`.
fn cut(n: usize, ratios: &[f64]) -> [usize; 3] {
    let total: f64 = ratios.iter().sum();
    let c1 = ((ratios[0] / total) * n as f64).round() as usize;
    let c2 = (((ratios[0] + ratios[1]) / total) * n as f64).round() as usize;
    [c1.min(n), c2.min(n), n]
}

impl Kind for Split {
    fn kind(&self) -> &'static str {
        "split"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "train/valid/test assignment: manifest column, seeded ratios, or leave-one-group-out folds"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (1, 1)
    }
    fn writes(&self, _params: &crate::Params) -> &'static [&'static str] {
        &["clip_id", "fold", "split"]
    }
}

impl Stage for Split {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let t = &ctx.inputs[0];
        let mut errors = Vec::new();
        let rows = match ctx.params.str("method")? {
            "manifest" => by_manifest(t, &mut errors)?,
            "ratio" => by_ratio(ctx, t)?,
            _ => leave_one_group_out(ctx, t)?,
        };
        let table = batch(vec![
            (
                "clip_id",
                strings(&rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()),
            ),
            ("fold", i64s(rows.iter().map(|r| Some(r.1)).collect())),
            (
                "split",
                strings(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            ),
        ])?;
        Ok(Output { table, errors })
    }
}

/// (clip id, fold, split) rows.
type Rows = Vec<(String, i64, &'static str)>;

/// The split each clip's `mode` column names.
fn by_manifest(t: &RecordBatch, errors: &mut Vec<ItemError>) -> Result<Rows, StageError> {
    let ids = str_col(t, "clip_id")?;
    let mut rows: Rows = Vec::new();
    let modes = str_col(t, "mode")?;
    for i in 0..t.num_rows() {
        let id = ids.value(i);
        match opt_str(modes, i).map(|m| (m, normalise_mode(m))) {
            Some((_, Some(s))) => rows.push((id.to_string(), 0, s)),
            Some((m, None)) => errors.push(ItemError::new(
                id,
                "mode",
                format!("`{m}` is not train, valid or test"),
            )),
            None => errors.push(ItemError::new(id, "mode", "empty split")),
        }
    }
    Ok(rows)
}

/// Seeded fractions of the clips (or of the groups in `group_column`).
fn by_ratio(ctx: &RunCtx, t: &RecordBatch) -> Result<Rows, StageError> {
    let ids = str_col(t, "clip_id")?;
    let group_param = ctx.params.str("group_column")?;
    let mut rows: Rows = Vec::new();
    let ratios = ctx.params.f64_list("ratios")?;
    if ratios.len() != 3 || ratios.iter().any(|r| *r < 0.0) || ratios.iter().sum::<f64>() <= 0.0 {
        return Err(StageError::param(
            "ratios",
            "needs three non-negative fractions (train, valid, test)",
        ));
    }
    let seed = ctx.params.i64("seed")?;
    let groups = if group_param.is_empty() {
        None
    } else {
        Some(str_col(t, group_param)?)
    };
    let unit = |i: usize| match groups {
        Some(g) => g.value(i).to_string(),
        None => ids.value(i).to_string(),
    };
    let mut units: Vec<String> = (0..t.num_rows()).map(unit).collect();
    units.sort();
    units.dedup();
    units.sort_by_cached_key(|u| rank_key(seed, u));
    let [c1, c2, _] = cut(units.len(), &ratios);
    let which: BTreeMap<String, &'static str> = units
        .into_iter()
        .enumerate()
        .map(|(k, u)| {
            (
                u,
                if k < c1 {
                    "train"
                } else if k < c2 {
                    "valid"
                } else {
                    "test"
                },
            )
        })
        .collect();
    for i in 0..t.num_rows() {
        rows.push((ids.value(i).to_string(), 0, which[&unit(i)]));
    }
    Ok(rows)
}

/// One fold per group: its clips are the test split, a seeded share of the rest is valid.
fn leave_one_group_out(ctx: &RunCtx, t: &RecordBatch) -> Result<Rows, StageError> {
    let ids = str_col(t, "clip_id")?;
    let group_param = ctx.params.str("group_column")?;
    let mut rows: Rows = Vec::new();
    let col = if group_param.is_empty() {
        "group"
    } else {
        group_param
    };
    let groups = str_col(t, col)?;
    let mut names: Vec<&str> = (0..t.num_rows()).map(|i| groups.value(i)).collect();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        return Err(StageError::Input(format!(
            "leave-one-group-out needs at least two groups in `{col}`, found {}",
            names.len()
        )));
    }
    let share = ctx.params.f64("valid_share")?;
    if !(0.0..1.0).contains(&share) {
        return Err(StageError::param("valid_share", "needs 0 <= share < 1"));
    }
    let seed = ctx.params.i64("seed")?;
    for (fold, g) in names.iter().enumerate() {
        let mut rest: Vec<usize> = (0..t.num_rows())
            .filter(|&i| groups.value(i) != *g)
            .collect();
        rest.sort_by_cached_key(|&i| rank_key(seed, ids.value(i)));
        let n_valid = (share * rest.len() as f64).round() as usize;
        let valid: std::collections::HashSet<usize> = rest.into_iter().take(n_valid).collect();
        for i in 0..t.num_rows() {
            let s = if groups.value(i) == *g {
                "test"
            } else if valid.contains(&i) {
                "valid"
            } else {
                "train"
            };
            rows.push((ids.value(i).to_string(), fold as i64, s));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_adds_up() {
        for n in [0, 1, 2, 7, 100, 2281] {
            let [a, b, c] = cut(n, &[0.7, 0.1, 0.2]);
            assert!(a <= b && b <= c && c == n);
        }
        assert_eq!(cut(100, &[0.7, 0.1, 0.2]), [70, 80, 100]);
    }
}
