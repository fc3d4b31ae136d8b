//! `summary`: how many clips each split holds per class, from the `labels` and `split` tables.
//! Clips that a split lists but `labels` left out (an IEMOCAP category outside the kept
//! classes) are counted as `(no class)`, so the totals add up to the dataset.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, Int64Array, UInt64Array};
use arrow::record_batch::RecordBatch;

use crate::params::{ParamSpec, ParamType};
use crate::table::{batch, col, i64s, str_col, strings, u64s};
use crate::{Kind, Output, Params, Role, RunCtx, Stage, StageError};

pub struct Summary;

const PARAMS: &[ParamSpec] = &[ParamSpec::new(
    "target",
    ParamType::Enum(&["m", "t", "a", "v"]),
    Some("\"m\""),
    "which label to count: m (multimodal) or one modality's",
)];

pub const NO_CLASS: &str = "(no class)";
const SPLITS: [&str; 3] = ["train", "valid", "test"];

impl Kind for Summary {
    fn kind(&self) -> &'static str {
        "summary"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "clips per split (and fold) and class; inputs: labels, split"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn writes(&self, _params: &Params) -> &'static [&'static str] {
        &["split", "class_name", "clips"]
    }
    fn roles(&self) -> &'static [Role] {
        const R: &[Role] = &[
            Role::one("labels", "a labels stage").reading(crate::LABELS_READ),
            Role::one("split", "a split stage").reading(crate::SPLIT_READ),
        ];
        R
    }
    fn reports(&self) -> bool {
        true
    }
    fn report(&self, params: &Params, t: &RecordBatch) -> Option<String> {
        let fold = col::<Int64Array>(t, "fold").ok()?;
        let split = str_col(t, "split").ok()?;
        let class = str_col(t, "class_name").ok()?;
        let clips = col::<UInt64Array>(t, "clips").ok()?;
        let classes: BTreeSet<&str> = (0..t.num_rows()).map(|i| class.value(i)).collect();
        // `(no class)` last, after the real classes.
        let mut classes: Vec<&str> = classes.into_iter().filter(|c| *c != NO_CLASS).collect();
        if (0..t.num_rows()).any(|i| class.value(i) == NO_CLASS) {
            classes.push(NO_CLASS);
        }
        let folds: BTreeSet<i64> = (0..t.num_rows()).map(|i| fold.value(i)).collect();
        let mut rows: Vec<(String, Vec<u64>)> = Vec::new();
        for i in 0..t.num_rows() {
            let name = if folds.len() > 1 {
                format!("fold {} {}", fold.value(i), split.value(i))
            } else {
                split.value(i).to_string()
            };
            if rows.last().is_none_or(|r| r.0 != name) {
                rows.push((name, vec![0; classes.len()]));
            }
            let c = classes.iter().position(|c| *c == class.value(i))?;
            rows.last_mut()?.1[c] += clips.value(i);
        }
        if folds.len() == 1 {
            let mut total = vec![0; classes.len()];
            for r in &rows {
                for (t, v) in total.iter_mut().zip(&r.1) {
                    *t += v;
                }
            }
            rows.push(("all".into(), total));
        }
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
        let widths: Vec<usize> = classes.iter().map(|c| c.chars().count().max(6)).collect();
        let mut out = format!(
            "  clips per split and class (target {})\n  {:<w0$}",
            params.str("target").unwrap_or("m"),
            "split"
        );
        for (c, w) in classes.iter().zip(&widths) {
            out += &format!("  {c:>w$}");
        }
        out += "   total\n";
        for (name, v) in &rows {
            out += &format!("  {name:<w0$}");
            for (x, w) in v.iter().zip(&widths) {
                out += &format!("  {x:>w$}");
            }
            out += &format!("  {:>6}\n", v.iter().sum::<u64>());
        }
        Some(out.trim_end().to_string())
    }
}

impl Stage for Summary {
    fn decl(&self) -> &dyn Kind {
        self
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let target = ctx.params.str("target")?;
        let (labels, split) = (&ctx.inputs[0], &ctx.inputs[1]);
        let (l_id, l_target, l_name) = (
            str_col(labels, "clip_id")?,
            str_col(labels, "target")?,
            str_col(labels, "class_name")?,
        );
        let class_of: HashMap<&str, &str> = (0..labels.num_rows())
            .filter(|&i| l_target.value(i) == target)
            .map(|i| (l_id.value(i), l_name.value(i)))
            .collect();
        let (s_id, s_split) = (str_col(split, "clip_id")?, str_col(split, "split")?);
        let s_fold = col::<Int64Array>(split, "fold")?;
        let mut counts: BTreeMap<(i64, usize, &str), u64> = BTreeMap::new();
        for i in 0..split.num_rows() {
            let fold = if s_fold.is_null(i) {
                0
            } else {
                s_fold.value(i)
            };
            let sp = s_split.value(i);
            let order = SPLITS.iter().position(|s| *s == sp).unwrap_or(SPLITS.len());
            let class = class_of.get(s_id.value(i)).copied().unwrap_or(NO_CLASS);
            *counts.entry((fold, order, class)).or_default() += 1;
        }
        let split_name = |o: usize| SPLITS.get(o).copied().unwrap_or("other");
        let table = batch(vec![
            ("fold", i64s(counts.keys().map(|k| Some(k.0)).collect())),
            (
                "split",
                strings(&counts.keys().map(|k| split_name(k.1)).collect::<Vec<_>>()),
            ),
            (
                "class_name",
                strings(&counts.keys().map(|k| k.2).collect::<Vec<_>>()),
            ),
            ("clips", u64s(counts.values().copied().collect())),
        ])?;
        Ok(Output {
            table,
            errors: Vec::new(),
        })
    }
}
