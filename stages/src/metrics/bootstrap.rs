//! Per-clip outcomes that `evaluate` keeps beside its metrics, and the paired bootstrap that
//! `compare` draws from them. A seed-level t-interval sees only the spread between seeds; the
//! bootstrap also sees how much the test clips themselves decide a difference: each replicate
//! resamples the seed pairs and, within each pair, the clips that both models predicted.

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use crate::table::{col, list_row, str_col};

/// Replicates of the paired bootstrap; fixed so that a comparison's interval is reproducible.
pub const REPLICATES: usize = 2000;

/// One evaluated model's predictions on one split.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    pub ids: Vec<String>,
    pub y: Vec<i64>,
    pub pred: Vec<i64>,
    pub score: Vec<f64>,
    pub pred_score: Vec<f64>,
    pub classes: usize,
    /// The label scale of a regression model (MMSA's metrics need it); None for classifiers.
    pub scale: Option<String>,
}

/// The metrics a bootstrap can recompute from per-clip outcomes. Multi-label averages need the
/// per-emotion flags, which `evaluate` does not keep per clip.
pub fn resamplable(metric: &str) -> bool {
    ["acc", "f1_macro", "f1_weighted", "ua", "wa"].contains(&metric)
        || crate::metrics::mmsa::MMSA_METRICS.contains(&metric)
}

impl Outcomes {
    /// The outcomes of split `split` of an `evaluate` table; None where the table has no
    /// per-clip columns or no such split.
    pub fn read(t: &RecordBatch, split: &str) -> Option<Outcomes> {
        let s = str_col(t, "split").ok()?;
        let r = (0..t.num_rows()).find(|&r| s.value(r) == split)?;
        let strs = list_row::<StringArray>(t, "clip_ids", r).ok()?;
        let ints = |c: &str| Some(list_row::<Int64Array>(t, c, r).ok()?.values().to_vec());
        let floats = |c: &str| Some(list_row::<Float64Array>(t, c, r).ok()?.values().to_vec());
        let scale = str_col(t, "scale").ok()?;
        Some(Outcomes {
            ids: strs.iter().map(|v| v.unwrap_or("").to_string()).collect(),
            y: ints("y_true")?,
            pred: ints("y_pred")?,
            score: floats("score_true")?,
            pred_score: floats("score_pred")?,
            classes: col::<Int64Array>(t, "classes").ok()?.value(r).max(1) as usize,
            scale: (!scale.is_null(r)).then(|| scale.value(r).to_string()),
        })
    }

    /// `metric` over the clips at `idx` (repeats allowed), computed as `evaluate` computes it.
    pub fn metric(&self, metric: &str, idx: &[usize]) -> Option<f64> {
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        let p: Vec<i64> = idx.iter().map(|&i| self.pred[i]).collect();
        match metric {
            "acc" | "f1_macro" | "f1_weighted" => {
                let (acc, f1, wf1, _) =
                    crate::metrics::emotion::classification(&y, &p, self.classes);
                Some(match metric {
                    "acc" => acc,
                    "f1_macro" => f1,
                    _ => wf1,
                })
            }
            "ua" | "wa" => {
                let (ua, wa) = crate::metrics::emotion::ua_wa(&y, &p);
                Some(if metric == "ua" { ua } else { wa })
            }
            _ => {
                let k = crate::metrics::mmsa::MMSA_METRICS
                    .iter()
                    .position(|m| *m == metric)?;
                let truth: Vec<f64> = idx.iter().map(|&i| self.score[i]).collect();
                let pred: Vec<f64> = idx.iter().map(|&i| self.pred_score[i]).collect();
                crate::metrics::mmsa::mmsa_metrics(self.scale.as_deref()?, &truth, &pred)[k]
            }
        }
    }
}

/// A pair of models to bootstrap: the same clips, in the same order, in both.
pub struct Pair {
    pub better: Outcomes,
    pub other: Outcomes,
}

impl Pair {
    /// Pairs two models' outcomes by clip id; None when they were tested on different clips.
    pub fn new(better: &Outcomes, other: &Outcomes) -> Option<Pair> {
        let (a, b) = (better.sorted(), other.sorted());
        (a.ids == b.ids && !a.ids.is_empty()).then_some(Pair {
            better: a,
            other: b,
        })
    }
}

impl Outcomes {
    /// The same outcomes in clip-id order.
    fn sorted(&self) -> Outcomes {
        let mut ix: Vec<usize> = (0..self.ids.len()).collect();
        ix.sort_by(|&i, &j| self.ids[i].cmp(&self.ids[j]));
        Outcomes {
            ids: ix.iter().map(|&i| self.ids[i].clone()).collect(),
            y: ix.iter().map(|&i| self.y[i]).collect(),
            pred: ix.iter().map(|&i| self.pred[i]).collect(),
            score: ix.iter().map(|&i| self.score[i]).collect(),
            pred_score: ix.iter().map(|&i| self.pred_score[i]).collect(),
            classes: self.classes,
            scale: self.scale.clone(),
        }
    }
}

/// SplitMix64: a small, well-mixed generator, so the interval does not depend on a crate's
/// stream across versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The 95% percentile interval of the mean paired difference (`sign` * (better - other)) over
/// `REPLICATES` replicates, each drawing the pairs with replacement and, within each drawn pair,
/// its clips with replacement. None when a replicate's metric is undefined (a constant
/// prediction has no correlation) in more than 5% of the replicates, or with no pairs.
pub fn interval(pairs: &[Pair], metric: &str, sign: f64) -> Option<(f64, f64)> {
    if pairs.is_empty() || !resamplable(metric) {
        return None;
    }
    let mut rng = Rng(0x5EED);
    let mut means = Vec::with_capacity(REPLICATES);
    let mut undefined = 0;
    for _ in 0..REPLICATES {
        let mut sum = 0.0;
        let mut ok = true;
        for _ in 0..pairs.len() {
            let pair = &pairs[rng.below(pairs.len())];
            let n = pair.better.ids.len();
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            match (
                pair.better.metric(metric, &idx),
                pair.other.metric(metric, &idx),
            ) {
                (Some(a), Some(b)) => sum += sign * (a - b),
                _ => ok = false,
            }
        }
        if ok {
            means.push(sum / pairs.len() as f64);
        } else {
            undefined += 1;
        }
    }
    if undefined * 20 > REPLICATES || means.is_empty() {
        return None;
    }
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (means.len() - 1) as f64).round()) as usize];
    Some((q(0.025), q(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(ids: &[&str], y: &[i64], pred: &[i64]) -> Outcomes {
        Outcomes {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            y: y.to_vec(),
            pred: pred.to_vec(),
            score: vec![0.0; y.len()],
            pred_score: vec![0.0; y.len()],
            classes: 2,
            scale: None,
        }
    }

    #[test]
    fn pairs_follow_clip_ids_not_row_order() {
        let a = model(&["c", "a", "b"], &[1, 0, 1], &[1, 0, 0]);
        let b = model(&["a", "b", "c"], &[0, 1, 1], &[0, 1, 0]);
        let p = Pair::new(&a, &b).unwrap();
        assert_eq!(p.better.ids, p.other.ids);
        assert_eq!(p.better.y, p.other.y);
        assert!(Pair::new(&a, &model(&["a", "b", "d"], &[0, 1, 1], &[0, 1, 0])).is_none());
    }

    #[test]
    fn a_clear_win_excludes_zero_and_a_tie_straddles_it() {
        let n = 120;
        let ids: Vec<String> = (0..n).map(|i| format!("clip{i:03}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let y: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
        // `good` is right on 90% of the clips, `bad` on 50%, `same` on the same 50% as `bad`
        // but on other clips.
        let good: Vec<i64> = (0..n)
            .map(|i| if i % 10 == 0 { 1 - y[i] } else { y[i] })
            .collect();
        let bad: Vec<i64> = (0..n)
            .map(|i| if i % 4 < 2 { y[i] } else { 1 - y[i] })
            .collect();
        let same: Vec<i64> = (0..n)
            .map(|i| if i % 4 >= 2 { y[i] } else { 1 - y[i] })
            .collect();
        let win = Pair::new(&model(&ids, &y, &good), &model(&ids, &y, &bad)).unwrap();
        let (lo, hi) = interval(&[win], "acc", 1.0).unwrap();
        assert!(lo > 0.25 && hi < 0.55, "{lo} {hi}");
        let tie = Pair::new(&model(&ids, &y, &same), &model(&ids, &y, &bad)).unwrap();
        let (lo, hi) = interval(&[tie], "acc", 1.0).unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        // Reproducible: the generator is seeded.
        let again = Pair::new(&model(&ids, &y, &same), &model(&ids, &y, &bad)).unwrap();
        assert_eq!(interval(&[again], "acc", 1.0).unwrap(), (lo, hi));
    }

    #[test]
    fn resampled_metrics_match_the_whole_split() {
        let o = model(&["a", "b", "c", "d"], &[0, 1, 1, 0], &[0, 1, 0, 0]);
        let all: Vec<usize> = (0..4).collect();
        assert_eq!(o.metric("acc", &all), Some(0.75));
        assert_eq!(o.metric("ua", &all), Some(0.75));
        assert_eq!(o.metric("avg_f1", &all), None);
        assert!(!resamplable("avg_f1"));
    }
}
