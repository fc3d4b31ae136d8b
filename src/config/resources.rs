//! Cluster resources a stage asks `pipeline submit` for, checked when the pipeline loads.

use std::collections::BTreeMap;

use serde_json::Value as J;

use super::did_you_mean;

/// What a stage may ask of a cluster, and the form each value takes.
pub const RESOURCE_KEYS: &[(&str, &str)] = &[
    ("cpus", "CPUs per task, an integer >= 1"),
    ("mem", "memory per node, such as 4G or 500M"),
    ("time", "a time limit: minutes, or [D-]HH:MM:SS"),
    ("gpus", "GPUs per node, an integer >= 0"),
    (
        "gpu_share",
        "stages that may run on one GPU at once (small trainings), an integer >= 1; with gpus: 1",
    ),
    (
        "partition",
        "the partition's name (letters, digits, `_ . -`; `,` between several)",
    ),
    (
        "shards",
        "array tasks a per-clip stage is split into, an integer >= 1",
    ),
    ("parallel", "array tasks running at once, an integer >= 1"),
];

pub(super) fn check_resources(m: &BTreeMap<String, J>) -> Result<(), (String, String)> {
    for (k, v) in m {
        let Some((_, what)) = RESOURCE_KEYS.iter().find(|(n, _)| n == k) else {
            let names: Vec<&str> = RESOURCE_KEYS.iter().map(|(n, _)| *n).collect();
            return Err((
                k.clone(),
                format!(
                    "unknown resource `{k}`{}; resources are {}",
                    did_you_mean(k, names.iter().copied())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    names.join(", ")
                ),
            ));
        };
        let ok = match k.as_str() {
            "cpus" | "shards" | "parallel" | "gpu_share" => v.as_u64().is_some_and(|n| n >= 1),
            "gpus" => v.as_u64().is_some(),
            "mem" => v.as_u64().is_some() || v.as_str().is_some_and(valid_mem),
            "time" => v.as_u64().is_some() || v.as_str().is_some_and(valid_time),
            // It is written into batch scripts: a name, nothing a shell could read more into.
            "partition" => v.as_str().is_some_and(valid_partition),
            _ => v.as_str().is_some_and(|s| !s.is_empty()),
        };
        if !ok {
            return Err((k.clone(), format!("resource `{k}` = {v}: expected {what}")));
        }
    }
    Ok(())
}

pub(super) fn valid_mem(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= s.len() && digits.parse::<u64>().is_ok()
}

pub(super) fn valid_time(s: &str) -> bool {
    let (days, hms) = match s.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, s),
    };
    days.is_none_or(|d| d.parse::<u32>().is_ok())
        && !hms.is_empty()
        && hms.split(':').count() <= 3
        && hms.split(':').all(|p| p.parse::<u32>().is_ok())
}

/// A Slurm partition list or account name: what may be written into a batch script.
pub fn valid_partition(s: &str) -> bool {
    super::declare::valid_name(s, "_.-,")
}
