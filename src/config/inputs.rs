//! Inputs: each variant's input list resolved against every stage's variants (a shared axis
//! pairs variant with variant, a selector picks, other axes gather), and the kind's arity.

use super::declare::Decl;
use super::select::parse_selector;
use super::text::Written;
use super::{did_you_mean, scalar_text, ConfigError, Ctx, StageDef};
use crate::registry::Registry;

/// Every variant of every declaration with its inputs filled in and their count checked.
pub(super) fn resolve(
    cx: &Ctx,
    reg: &Registry,
    decls: Vec<Decl>,
) -> Result<Vec<StageDef>, ConfigError> {
    let resolved = decls
        .iter()
        .map(|d| inputs_of(cx, reg, &decls, d))
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

/// Input names under their role (`None`: a list, one unnamed group).
type Groups = Vec<(Option<&'static str>, Vec<String>)>;

/// The written inputs as groups in the kind's role order.
fn by_role(cx: &Ctx, reg: &Registry, d: &Decl) -> Result<Groups, ConfigError> {
    let at = ["stages", d.base.as_str(), "inputs"];
    let kind = &d.variants[0].kind;
    let roles = reg.get(kind).expect("kind checked when declared").roles();
    let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
    let listing = || {
        let r: Vec<String> = roles
            .iter()
            .map(|r| format!("{} ({})", r.name, r.doc))
            .collect();
        format!("inputs of `{kind}`: {}", r.join("; "))
    };
    match Written::of(d.spec) {
        None => Err(cx.err(
            &at,
            format!(
                "stage `{}`: `inputs` must be a list of stage names or a map from role to stage name(s)",
                d.base
            ),
            (!roles.is_empty()).then(listing),
        )),
        Some(Written::List(l)) => Ok(vec![(None, l)]),
        Some(Written::Roles(_)) if roles.is_empty() => Err(cx.err(
            &at,
            format!(
                "stage `{}`: kind `{kind}` has no named inputs; give them as a list",
                d.base
            ),
            None,
        )),
        Some(Written::Roles(given)) => {
            for (role, _) in &given {
                if !names.contains(&role.as_str()) {
                    let hint = did_you_mean(role, names.iter().copied())
                        .map(|h| format!("{h}; {}", listing()))
                        .unwrap_or_else(listing);
                    return Err(cx.err(
                        &["stages", d.base.as_str(), "inputs", role.as_str()],
                        format!(
                            "stage `{}`: `{role}` is not an input of kind `{kind}`",
                            d.base
                        ),
                        Some(hint),
                    ));
                }
            }
            let mut out = Vec::new();
            for r in roles {
                match given.iter().find(|(g, _)| g == r.name) {
                    Some((_, l)) => out.push((Some(r.name), l.clone())),
                    None if r.min == 0 => {}
                    None => {
                        return Err(cx.err(
                            &at,
                            format!("stage `{}`: input `{}` is missing", d.base, r.name),
                            Some(listing()),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The input names of each of `d`'s variants, in the kind's role order.
fn inputs_of(
    cx: &Ctx,
    reg: &Registry,
    decls: &[Decl],
    d: &Decl,
) -> Result<Vec<Vec<String>>, ConfigError> {
    let groups = by_role(cx, reg, d)?;
    let roles = reg.get(&d.variants[0].kind).expect("checked").roles();
    let mut per_variant = vec![Vec::new(); d.variants.len()];
    for (role, list) in &groups {
        let mut counts = vec![0usize; d.variants.len()];
        for input in list {
            let picked = resolve_one(cx, decls, d, input)?;
            for (vi, p) in picked.into_iter().enumerate() {
                counts[vi] += p.len();
                per_variant[vi].extend(p);
            }
        }
        let Some(r) = role.and_then(|n| roles.iter().find(|r| r.name == n)) else {
            continue;
        };
        if let Some((vi, n)) = counts
            .iter()
            .enumerate()
            .find(|(_, n)| !(r.min..=r.max).contains(*n))
        {
            let want = if r.min == r.max {
                format!("{}", r.min)
            } else {
                format!("{} to {}", r.min, r.max)
            };
            return Err(cx.err(
                &["stages", d.base.as_str(), "inputs", r.name],
                format!(
                    "stage `{}`: input `{}` takes {want} stage(s), got {n}",
                    d.variants[vi].name, r.name
                ),
                Some(format!("{}: {}", r.name, r.doc)),
            ));
        }
    }
    Ok(per_variant)
}

/// The variants of stage `input` (a name or selector) that each variant of `d` reads.
fn resolve_one(
    cx: &Ctx,
    decls: &[Decl],
    d: &Decl,
    input: &str,
) -> Result<Vec<Vec<String>>, ConfigError> {
    let at = ["stages", d.base.as_str(), "inputs"];
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
    let mut out = Vec::new();
    for v in &d.variants {
        let picked = pick(d, v, up, &sel);
        if picked.is_empty() {
            let names: Vec<&str> = up.variants.iter().map(|u| u.name.as_str()).collect();
            let msg = format!(
                "stage `{}`: input `{input}` selects no variant of `{ibase}`",
                v.name
            );
            return Err(cx.err(&at, msg, Some(format!("variants: {}", names.join(", ")))));
        }
        out.push(picked);
    }
    Ok(out)
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
