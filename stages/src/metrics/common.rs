//! What the metrics stages, the reports and `pipeline metrics` share: the metric names an
//! `evaluate` table may carry, how values are shown, mean and sd over seeds, variant names.

use arrow::array::Array;
use arrow::record_batch::RecordBatch;

/// (column, header, shown in %): every metric an `evaluate` table may carry.
pub type Metric = (&'static str, &'static str, bool);

pub const METRICS: [Metric; 17] = [
    ("acc", "Acc", true),
    ("f1_macro", "F1 (macro)", true),
    ("f1_weighted", "F1 (weighted)", true),
    ("acc2", "Acc-2", true),
    ("acc2_pos", "Acc-2 (non-0)", true),
    ("acc3", "Acc-3", true),
    ("acc5", "Acc-5", true),
    ("acc7", "Acc-7", true),
    ("f1_acc2", "F1 (Acc-2)", true),
    ("f1_acc2_pos", "F1 (non-0)", true),
    ("mae", "MAE", false),
    ("corr", "Corr", false),
    ("ua", "UA", true),
    ("wa", "WA", true),
    ("avg_acc", "Avg Acc", true),
    ("avg_wa", "Avg WA", true),
    ("avg_f1", "Avg F1", true),
];

/// The metrics with a value in every row of `t` (column name + `suffix`).
pub fn present_metrics(t: &RecordBatch, suffix: Option<&str>) -> Vec<Metric> {
    METRICS
        .iter()
        .filter(|m| {
            t.column_by_name(&format!("{}{}", m.0, suffix.unwrap_or("")))
                .is_some_and(|c| !c.is_empty() && c.null_count() == 0)
        })
        .copied()
        .collect()
}

/// A metric value as reported: fractions in % with two decimals, MAE and r with three.
pub fn fmt_metric(m: &Metric, v: f64) -> String {
    if m.2 {
        format!("{:.2}", 100.0 * v)
    } else {
        format!("{v:.3}")
    }
}

/// A metric's column header, with its unit: `Acc (%)`, `MAE`.
pub fn header(m: &Metric) -> String {
    if m.2 {
        format!("{} (%)", m.1)
    } else {
        m.1.to_string()
    }
}

/// `name[a=1,b=x]` -> (name, [(a, 1), (b, x)]).
pub fn parse_variant(name: &str) -> (String, Vec<(String, String)>) {
    match name.split_once('[') {
        Some((base, rest)) => {
            let axes = rest
                .trim_end_matches(']')
                .split(',')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            (base.to_string(), axes)
        }
        None => (name.to_string(), Vec::new()),
    }
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}
