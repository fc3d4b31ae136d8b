//! Inputs: each variant's input list resolved against every stage's variants (a shared axis
//! pairs variant with variant, a selector picks, other axes gather), and the kind's arity.

use serde_yaml_ng::Value as Y;

use super::declare::Decl;
use super::select::parse_selector;
use super::{did_you_mean, scalar_text, to_json, ConfigError, Ctx, StageDef};
use crate::registry::Registry;

/// Every variant of every declaration with its inputs filled in and their count checked.
pub(super) fn resolve(
    cx: &Ctx,
    reg: &Registry,
    decls: Vec<Decl>,
) -> Result<Vec<StageDef>, ConfigError> {
    let resolved = decls
        .iter()
        .map(|d| inputs_of(cx, &decls, d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (d, ins) in decls.into_iter().zip(resolved) {
        for (mut v, inputs) in d.variants.into_iter().zip(ins) {
            check_arity(cx, reg, &d.base, &v, &inputs)?;
            v.inputs = inputs;
            out.push(v);
        }
    }
    Ok(out)
}

/// The input names of each of `d`'s variants.
fn inputs_of(cx: &Ctx, decls: &[Decl], d: &Decl) -> Result<Vec<Vec<String>>, ConfigError> {
    let at = ["stages", d.base.as_str(), "inputs"];
    let list: Vec<String> = match d.spec.get("inputs") {
        None | Some(Y::Null) => Vec::new(),
        Some(Y::String(s)) => vec![s.clone()],
        Some(Y::Sequence(seq)) => seq.iter().map(|v| scalar_text(&to_json(v))).collect(),
        Some(_) => {
            let msg = format!("stage `{}`: `inputs` must be a list of stage names", d.base);
            return Err(cx.err(&at, msg, None));
        }
    };
    let mut per_variant = vec![Vec::new(); d.variants.len()];
    for input in &list {
        let (ibase, sel) = parse_selector(input).map_err(|e| {
            cx.err(
                &at,
                format!("stage `{}`: input `{input}`: {e}", d.base),
                None,
            )
        })?;
        let Some(up) = decls.iter().find(|u| u.base == ibase) else {
            let bases: Vec<&str> = decls.iter().map(|d| d.base.as_str()).collect();
            let msg = format!(
                "stage `{}`: input `{ibase}` is not a stage in this pipeline",
                d.base
            );
            let hint = did_you_mean(&ibase, bases.iter().copied())
                .unwrap_or_else(|| format!("stages: {}", bases.join(", ")));
            return Err(cx.err(&at, msg, Some(hint)));
        };
        for (vi, v) in d.variants.iter().enumerate() {
            let picked = pick(d, v, up, &sel);
            if picked.is_empty() {
                let names: Vec<&str> = up.variants.iter().map(|u| u.name.as_str()).collect();
                let msg = format!(
                    "stage `{}`: input `{input}` selects no variant of `{ibase}`",
                    v.name
                );
                return Err(cx.err(&at, msg, Some(format!("variants: {}", names.join(", ")))));
            }
            per_variant[vi].extend(picked);
        }
    }
    Ok(per_variant)
}

/// The variants of `up` that variant `v` of `d` reads: those matching the selector, paired on
/// the axes both stages have, all of the others.
fn pick(d: &Decl, v: &StageDef, up: &Decl, sel: &[(String, String)]) -> Vec<String> {
    up.variants
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
        .collect()
}

fn check_arity(
    cx: &Ctx,
    reg: &Registry,
    base: &str,
    v: &StageDef,
    inputs: &[String],
) -> Result<(), ConfigError> {
    let stage = reg.get(&v.kind).expect("kind checked when declared");
    let (lo, hi) = stage.arity();
    if (lo..=hi).contains(&inputs.len()) {
        return Ok(());
    }
    let want = if lo == hi {
        format!("{lo}")
    } else if hi == usize::MAX {
        format!("at least {lo}")
    } else {
        format!("{lo} to {hi}")
    };
    let field = if inputs.is_empty() { "kind" } else { "inputs" };
    Err(cx.err(
        &["stages", base, field],
        format!(
            "stage `{}`: kind `{}` takes {want} input(s), got {}",
            v.name,
            v.kind,
            inputs.len()
        ),
        Some(format!("inputs: [{}]", inputs.join(", "))),
    ))
}
