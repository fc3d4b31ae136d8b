//! The stages' own reports at the end of a run.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde_json::json;

use super::{Env, Finished};
use crate::db::Db;
use crate::report::Reporter;

/// The stages' own accounts of what they produced (dataset counts, metrics), in plan order,
/// for every selected stage that finished, whether it ran now or was cached. On a terminal a
/// grid's variants are left out where several of one stage ran (their aggregates, and
/// `pipeline report --variants`, cover them); JSON output has them all.
pub(super) fn print_reports(
    env: &Env,
    db: &Db,
    results: &BTreeMap<usize, Finished>,
    rep: &Reporter,
) -> Result<()> {
    let mut per_base: HashMap<&str, usize> = HashMap::new();
    for idx in results.keys() {
        *per_base
            .entry(env.plan.stages[*idx].base.as_str())
            .or_default() += 1;
    }
    let mut skipped = 0;
    for (idx, (name, key, r)) in results {
        let (Ok(_), Some(key)) = (r, key) else {
            continue;
        };
        let s = &env.plan.stages[*idx];
        let Some(stage) = env.reg.get(&s.kind) else {
            continue;
        };
        if !rep.is_json() && s.name != s.base && per_base[s.base.as_str()] > 1 {
            skipped += usize::from(stage.reports());
            continue;
        }
        // Loading the table costs a read, so only for kinds that report at all.
        if !stage.reports() {
            continue;
        }
        let Some(a) = db.artifact(key)? else { continue };
        let table = env.store.get_table(&a.object)?;
        if let Some(text) = stage.report(&s.params, &table) {
            if rep.is_json() {
                rep.event(json!({"event": "report", "stage": name, "text": text}));
            } else {
                println!("{name}:\n{text}");
            }
        }
    }
    if skipped > 0 {
        println!(
            "({skipped} matrix variants' reports left out: `pipeline report --variants` has them)"
        );
    }
    Ok(())
}
