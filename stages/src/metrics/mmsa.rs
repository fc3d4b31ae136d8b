//! MMSA's label conventions and regression metrics: CH-SIMS's `(edge_i, edge_i+1]` bins, MOSI's
//! half-to-even rounding, the three-way classes, and Acc-2/3/5/7, F1, MAE and Corr as MMSA's
//! `metricsTop.py` computes them.

const SIMS2: &[f64] = &[-1.01, 0.0, 1.01];
const SIMS3: &[f64] = &[-1.01, -0.1, 0.1, 1.01];
const SIMS5: &[f64] = &[-1.01, -0.7, -0.1, 0.1, 0.7, 1.01];

/// MMSA's `(edge_i, edge_i+1]` binning after clipping to [-1, 1].
pub fn sims_bin(y: f64, edges: &[f64]) -> i64 {
    let y = y.clamp(-1.0, 1.0);
    (0..edges.len() - 1)
        .find(|&i| y > edges[i] && y <= edges[i + 1])
        .unwrap_or(0) as i64
}

/// numpy's round (half to even) after clipping to [-r, r], shifted to start at 0.
pub fn mosi_round(y: f64, r: f64) -> i64 {
    (y.clamp(-r, r).round_ties_even() + r) as i64
}

/// (acc2, acc2_pos, acc3, acc5, acc7) class ids; None where the scale does not define one.
pub fn classes(scale: &str, y: f64) -> [Option<i64>; 5] {
    match scale {
        "sims" => [
            Some(sims_bin(y, SIMS2)),
            None,
            Some(sims_bin(y, SIMS3)),
            Some(sims_bin(y, SIMS5)),
            None,
        ],
        _ => [
            Some((y >= 0.0) as i64),
            (y != 0.0).then_some((y > 0.0) as i64),
            None,
            Some(mosi_round(y, 2.0)),
            Some(mosi_round(y, 3.0)),
        ],
    }
}

/// CH-SIMS's `annotation` classes (MMSA's three-way edges); MOSI by the sign of the score.
pub fn three_way(scale: &str, y: f64) -> &'static str {
    const NAMES: [&str; 3] = ["Negative", "Neutral", "Positive"];
    NAMES[three_way_id(scale, y) as usize]
}

/// [`three_way`] as a class id: 0 negative, 1 neutral, 2 positive.
pub fn three_way_id(scale: &str, y: f64) -> i64 {
    match scale {
        "sims" => sims_bin(y, SIMS3),
        _ if y < 0.0 => 0,
        _ if y > 0.0 => 2,
        _ => 1,
    }
}

/// Names of [`mmsa_metrics`]'s values, in order.
pub const MMSA_METRICS: [&str; 9] = [
    "acc2",
    "acc2_pos",
    "acc3",
    "acc5",
    "acc7",
    "f1_acc2",
    "f1_acc2_pos",
    "mae",
    "corr",
];

/// MMSA's regression metrics (metricsTop.py) of predicted against true scores: Acc-2
/// (negative/non-negative, MMSA's `Has0_acc_2`; CH-SIMS: y <= 0 / y > 0), Acc-2 on non-zero
/// labels (MOSI's `Non0_acc_2`), Acc-3 (CH-SIMS), Acc-5, Acc-7 (MOSI), the weighted F1 of both
/// Acc-2s (`Has0_F1_score`, `Non0_F1_score`), MAE and Pearson's r. CH-SIMS clips
/// both to [-1, 1] before everything, as MMSA does; MOSI's MAE and r use the raw predictions.
/// None where the scale does not define a metric (or r is undefined: constant predictions).
pub fn mmsa_metrics(scale: &str, truth: &[f64], pred: &[f64]) -> [Option<f64>; 9] {
    let clip = |v: &[f64]| -> Vec<f64> {
        if scale == "sims" {
            v.iter().map(|x| x.clamp(-1.0, 1.0)).collect()
        } else {
            v.to_vec()
        }
    };
    let (t, p) = (clip(truth), clip(pred));
    let mut out = [None; 9];
    let ct: Vec<[Option<i64>; 5]> = t.iter().map(|&y| classes(scale, y)).collect();
    let cp: Vec<[Option<i64>; 5]> = p.iter().map(|&y| classes(scale, y)).collect();
    for k in 0..5 {
        // A prediction of exactly 0 is "not positive" for the non-zero Acc-2, as in MMSA.
        let pairs: Vec<(i64, i64)> = ct
            .iter()
            .zip(&cp)
            .filter_map(|(a, b)| a[k].map(|x| (x, b[k].unwrap_or(0))))
            .collect();
        if !pairs.is_empty() {
            let right = pairs.iter().filter(|(a, b)| a == b).count();
            out[k] = Some(right as f64 / pairs.len() as f64);
        }
    }
    for (k, slot) in [(0, 5), (1, 6)] {
        let (a2t, a2p): (Vec<i64>, Vec<i64>) = ct
            .iter()
            .zip(&cp)
            .filter_map(|(a, b)| a[k].map(|x| (x, b[k].unwrap_or(0))))
            .unzip();
        if !a2t.is_empty() {
            out[slot] = Some(weighted_f1(&a2t, &a2p));
        }
    }
    let n = t.len() as f64;
    if n > 0.0 {
        out[7] = Some(t.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n);
        let (mt, mp) = (t.iter().sum::<f64>() / n, p.iter().sum::<f64>() / n);
        let cov: f64 = t.iter().zip(&p).map(|(a, b)| (a - mt) * (b - mp)).sum();
        let vt: f64 = t.iter().map(|a| (a - mt).powi(2)).sum();
        let vp: f64 = p.iter().map(|b| (b - mp).powi(2)).sum();
        // A constant prediction has no correlation; its variance can come out a rounding error
        // above zero rather than zero.
        if vt > 1e-12 * n && vp > 1e-12 * n {
            out[8] = Some(cov / (vt * vp).sqrt());
        }
    }
    out
}

/// sklearn's `f1_score(average="weighted")` over the classes that occur in `t`.
fn weighted_f1(t: &[i64], p: &[i64]) -> f64 {
    let mut labels: Vec<i64> = t.iter().chain(p).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let n = t.len() as f64;
    labels
        .iter()
        .map(|&c| {
            let support = t.iter().filter(|&&x| x == c).count() as f64;
            let predicted = p.iter().filter(|&&x| x == c).count() as f64;
            let tp = t
                .iter()
                .zip(p)
                .filter(|(a, b)| **a == c && **b == c)
                .count() as f64;
            if support + predicted > 0.0 {
                support / n * 2.0 * tp / (support + predicted)
            } else {
                0.0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmsa_metrics_on_fixed_vectors() {
        // CH-SIMS: truth [-0.8, -0.2, 0, 0.6, 1.0], predictions [-0.9, 0.05, 0.2, 0.8, 1.4]
        // (clipped to 1.0). Acc-2 classes: t [0,0,0,1,1], p [0,1,1,1,1] -> 3/5. Acc-3: t
        // [0,0,1,2,2], p [0,1,2,2,2] -> 3/5. Acc-5: t [0,1,2,3,4], p [0,2,3,4,4] -> 2/5.
        // MAE: (0.1 + 0.25 + 0.2 + 0.2 + 0)/5 = 0.15. Weighted F1 of Acc-2: class 0 (support 3,
        // predicted 1, tp 1): F1 0.5; class 1 (support 2, predicted 4, tp 2): F1 2/3;
        // 3/5 * 0.5 + 2/5 * 2/3 = 0.5666...
        let m = mmsa_metrics(
            "sims",
            &[-0.8, -0.2, 0.0, 0.6, 1.0],
            &[-0.9, 0.05, 0.2, 0.8, 1.4],
        );
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        assert!(close(m[0], 0.6) && close(m[2], 0.6) && close(m[3], 0.4));
        assert!(m[1].is_none() && m[4].is_none());
        assert!(close(m[5], 0.3 + 0.8 / 3.0));
        assert!(m[6].is_none(), "CH-SIMS has no non-zero Acc-2");
        assert!(close(m[7], 0.15));
        // numpy.corrcoef of the clipped vectors.
        assert!(
            (m[8].unwrap() - 0.9799574437169486).abs() < 1e-12,
            "{:?}",
            m[8]
        );
        // MOSI: Acc-2 (y >= 0) t [0,1,1,1], p [0,1,1,1]; the non-zero Acc-2 leaves out the zero
        // label and counts a zero prediction as negative: t [0,1,1], p [0,0,1]. Acc-5: t
        // [0,2,3,4], p [1,2,2,4] (0.5 rounds to 0, 3.2 clips to 2). Acc-7: t [1,3,4,6], p
        // [2,3,3,6]. MAE and r on the raw values: 0.775, numpy.corrcoef 0.8911739584486796.
        let m = mmsa_metrics("mosi", &[-2.0, 0.0, 1.0, 2.6], &[-1.0, 0.5, 0.0, 3.2]);
        assert!(close(m[0], 1.0) && close(m[1], 2.0 / 3.0));
        assert!(m[2].is_none() && close(m[3], 0.5) && close(m[4], 0.5));
        assert!((m[7].unwrap() - 0.775).abs() < 1e-12);
        assert!((m[8].unwrap() - 0.8911739584486796).abs() < 1e-12);
    }

    /// MMSA's reference formulas (thuiar/MMSA, src/MMSA/utils/metricsTop.py:
    /// `__eval_mosei_regression` for MOSI/MOSEI, `__eval_sims_regression` for CH-SIMS), run
    /// with numpy 2.4 and scikit-learn 1.9 on these vectors, gave the values asserted here.
    #[test]
    fn mmsa_metrics_match_metricstop_py() {
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-12;
        // MOSI: Has0_acc_2 0.6, Has0_F1_score 0.6166666666666666, Non0_acc_2 0.625,
        // Non0_F1_score 0.6309523809523809, Mult_acc_5 0.5, Mult_acc_7 0.4, MAE 1.0,
        // Corr 0.5872074562267132.
        let m = mmsa_metrics(
            "mosi",
            &[-2.4, -1.2, -0.6, 0.0, 0.0, 0.4, 1.0, 1.8, 2.6, 3.0],
            &[-1.9, -0.2, 0.3, 0.0, -0.5, 1.1, -0.1, 2.7, -1.4, 3.4],
        );
        assert!(close(m[0], 0.6) && close(m[5], 0.6166666666666666));
        assert!(close(m[1], 0.625) && close(m[6], 0.6309523809523809));
        assert!(m[2].is_none() && close(m[3], 0.5) && close(m[4], 0.4));
        assert!(close(m[7], 1.0) && close(m[8], 0.5872074562267132));
        // CH-SIMS: Mult_acc_2 0.9, Mult_acc_3 0.7, Mult_acc_5 0.5, F1_score 0.901010101010101,
        // MAE 0.23, Corr 0.8845437022941721 (predictions clipped to [-1, 1] first).
        let m = mmsa_metrics(
            "sims",
            &[-1.0, -0.8, -0.4, -0.1, 0.0, 0.0, 0.2, 0.6, 0.8, 1.0],
            &[-0.6, -1.3, 0.1, -0.05, 0.0, -0.2, 0.5, 0.65, 0.3, 0.9],
        );
        assert!(close(m[0], 0.9) && close(m[2], 0.7) && close(m[3], 0.5));
        assert!(close(m[5], 0.901010101010101));
        assert!((m[7].unwrap() - 0.23).abs() < 1e-12 && close(m[8], 0.8845437022941721));
        assert!(m[1].is_none() && m[4].is_none() && m[6].is_none());
    }

    #[test]
    fn sims_bins_match_mmsa() {
        // MMSA: two classes {[-1.0, 0.0], (0.0, 1.0]}
        assert_eq!(sims_bin(0.0, SIMS2), 0);
        assert_eq!(sims_bin(0.01, SIMS2), 1);
        assert_eq!(sims_bin(-1.0, SIMS2), 0);
        // three classes {[-1.0, -0.1], (-0.1, 0.1], (0.1, 1.0]}
        assert_eq!(sims_bin(-0.1, SIMS3), 0);
        assert_eq!(sims_bin(0.1, SIMS3), 1);
        assert_eq!(sims_bin(0.2, SIMS3), 2);
        // five classes, edges -0.7/-0.1/0.1/0.7
        let got: Vec<i64> = [-1.0, -0.7, -0.4, 0.0, 0.4, 0.7, 0.8, 1.5]
            .iter()
            .map(|&y| sims_bin(y, SIMS5))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn three_way_names_follow_the_bins() {
        assert_eq!(three_way("sims", -0.1), "Negative");
        assert_eq!(three_way("sims", 0.0), "Neutral");
        assert_eq!(three_way("sims", 0.1), "Neutral");
        assert_eq!(three_way("sims", 0.2), "Positive");
        assert_eq!(three_way("mosi", -0.2), "Negative");
        assert_eq!(three_way("mosi", 0.0), "Neutral");
        assert_eq!(three_way("mosi", 2.4), "Positive");
    }

    #[test]
    fn mosi_rounding_is_half_to_even() {
        // np.round(0.5) == 0, np.round(1.5) == 2, np.round(-2.5) == -2
        assert_eq!(mosi_round(0.5, 3.0), 3);
        assert_eq!(mosi_round(1.5, 3.0), 5);
        assert_eq!(mosi_round(-2.5, 3.0), 1);
        assert_eq!(mosi_round(2.6, 2.0), 4);
        assert_eq!(classes("mosi", 0.0)[1], None);
        assert_eq!(classes("mosi", 0.0)[0], Some(1));
    }
}
