//! Matrix axes: their values (lists, `a..b` ranges, `${var}`) and the variants they span.

use serde_json::Value as J;
use serde_yaml_ng::Value as Y;

use super::to_json;

/// An axis's values: a list, an integer range `a..b`, or `${var}` naming either, so that
/// `--set vars.seeds=1..2` shrinks a grid from the command line.
pub(super) fn matrix_values(v: &Y, vars: &J) -> Result<Vec<J>, String> {
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
                (Ok(a), Ok(b)) if a <= b => {
                    let n = (b as i128 - a as i128 + 1) as u128;
                    check_cap(n)?;
                    Ok((a..=b).map(J::from).collect())
                }
                _ => Err(format!("`{s}` is not an integer range like 1..5")),
            }
        }
        _ => Err("give a non-empty list, or an integer range like 1..5".into()),
    }
}

pub(super) fn cartesian(axes: &[(String, Vec<J>)]) -> Vec<Vec<(String, J)>> {
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

/// The most variants one stage may have, by default; `PIPELINE_MAX_VARIANTS` overrides it.
/// Past it a plan is refused before anything is allocated: a typo such as `1..10000000` would
/// otherwise plan millions of stages.
pub const MAX_VARIANTS: u128 = 100_000;

pub fn max_variants() -> u128 {
    std::env::var("PIPELINE_MAX_VARIANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_VARIANTS)
}

pub(super) fn check_cap(n: u128) -> Result<(), String> {
    let cap = max_variants();
    if n > cap {
        return Err(format!(
            "{n} variants, more than the cap of {cap} (set PIPELINE_MAX_VARIANTS to raise it)"
        ));
    }
    Ok(())
}
