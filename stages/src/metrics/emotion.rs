//! Emotion-category metrics of the papers that are not sentiment regressions.
//!
//! - Multi-label (MER-SEM-MBT, paper 002): each emotion is a binary decision, scored by its
//!   accuracy, its weighted accuracy WA = (TP * N/P + TN) / (2N) (P, N the true positives and
//!   negatives; the paper's CMU-MOSEI measure, which equals the mean of the true-positive and
//!   true-negative rates) and the F1 of the positive class; the papers report the averages over
//!   emotions.
//! - Single-label (Foal-Net, paper 004): UA, the unweighted mean of per-class recalls, and WA,
//!   the plain accuracy (IEMOCAP's convention: "weighted" by class frequency).

/// One emotion's binary scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binary {
    pub acc: f64,
    pub wa: f64,
    pub f1: f64,
}

/// Binary scores of predictions `p` against labels `y`. WA is undefined without positives or
/// negatives; it is then the accuracy on the class that is there. F1 is 0 where precision and
/// recall are both undefined (no positives predicted or present), as in scikit-learn.
pub fn binary(y: &[bool], p: &[bool]) -> Binary {
    let (mut tp, mut tn, mut fp, mut fn_) = (0f64, 0f64, 0f64, 0f64);
    for (&t, &q) in y.iter().zip(p) {
        match (t, q) {
            (true, true) => tp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fp += 1.0,
            (true, false) => fn_ += 1.0,
        }
    }
    let (pos, neg) = (tp + fn_, tn + fp);
    let n = (pos + neg).max(1.0);
    let wa = match (pos > 0.0, neg > 0.0) {
        (true, true) => (tp * neg / pos + tn) / (2.0 * neg),
        (true, false) => tp / pos,
        (false, true) => tn / neg,
        (false, false) => 0.0,
    };
    let f1 = if 2.0 * tp + fp + fn_ > 0.0 {
        2.0 * tp / (2.0 * tp + fp + fn_)
    } else {
        0.0
    };
    Binary {
        acc: (tp + tn) / n,
        wa,
        f1,
    }
}

/// The multi-label majority baseline: per class, the flag most of `rows` carry (a tie: off),
/// as a constant prediction for every row of `truth`.
pub fn majority_flags(truth: &[Vec<f32>], rows: &[usize], classes: usize) -> Vec<Vec<f32>> {
    let flags: Vec<f32> = (0..classes)
        .map(|c| {
            let on = rows
                .iter()
                .filter(|&&r| truth[r].get(c).is_some_and(|&x| x >= 0.5))
                .count();
            if 2 * on > rows.len() {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    vec![flags; truth.len()]
}

/// Each class's binary scores over `rows`, the flags of `truth` against `probs` above 0.5.
pub fn per_class(
    truth: &[Vec<f32>],
    probs: &[Vec<f32>],
    rows: &[usize],
    classes: usize,
) -> Vec<Binary> {
    let flag = |v: &Vec<f32>, c: usize| v.get(c).is_some_and(|&x| x > 0.5);
    (0..classes)
        .map(|c| {
            let y: Vec<bool> = rows.iter().map(|&r| flag(&truth[r], c)).collect();
            let p: Vec<bool> = rows.iter().map(|&r| flag(&probs[r], c)).collect();
            binary(&y, &p)
        })
        .collect()
}

/// UA (macro recall over the classes present in `y`) and WA (accuracy) of class ids.
pub fn ua_wa(y: &[i64], p: &[i64]) -> (f64, f64) {
    let mut classes: Vec<i64> = y.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let recall = |c: i64| {
        let support = y.iter().filter(|&&t| t == c).count() as f64;
        let hit = y.iter().zip(p).filter(|(&t, &q)| t == c && q == c).count() as f64;
        hit / support
    };
    let ua = classes.iter().map(|&c| recall(c)).sum::<f64>() / classes.len().max(1) as f64;
    let wa = y.iter().zip(p).filter(|(a, b)| a == b).count() as f64 / y.len().max(1) as f64;
    (ua, wa)
}

/// Accuracy and macro-/weighted-F1 of predictions against labels over `classes` classes, and
/// the confusion matrix (rows true, columns predicted).
pub fn classification(y: &[i64], pred: &[i64], classes: usize) -> (f64, f64, f64, Vec<Vec<i64>>) {
    let mut cm = vec![vec![0i64; classes]; classes];
    for (&t, &p) in y.iter().zip(pred) {
        if (t as usize) < classes && (p as usize) < classes {
            cm[t as usize][p as usize] += 1;
        }
    }
    let n = y.len().max(1) as f64;
    let acc = (0..classes).map(|c| cm[c][c]).sum::<i64>() as f64 / n;
    let (mut macro_f1, mut weighted) = (0.0, 0.0);
    for (c, row) in cm.iter().enumerate() {
        let tp = row[c] as f64;
        let support = row.iter().sum::<i64>() as f64;
        let predicted = (0..classes).map(|r| cm[r][c]).sum::<i64>() as f64;
        // sklearn's convention: F1 is 0 where precision and recall are both undefined or 0.
        let f1 = if support + predicted > 0.0 {
            2.0 * tp / (support + predicted)
        } else {
            0.0
        };
        macro_f1 += f1 / classes as f64;
        weighted += f1 * support / n;
    }
    (acc, macro_f1, weighted, cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multilabel_baseline_is_each_emotions_majority_flag() {
        let truth = vec![
            vec![1.0, 0.0, 1.0],
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 1.0],
            vec![1.0, 0.0, 0.0],
        ];
        // On rows 0-2: class 0 on twice (majority on), class 1 once (off), class 2 twice (on).
        let flags = majority_flags(&truth, &[0, 1, 2], 3);
        assert_eq!(flags.len(), 4);
        assert!(flags.iter().all(|f| f == &vec![1.0, 0.0, 1.0]));
        // A tie is off.
        assert_eq!(majority_flags(&truth, &[0, 2], 3)[0], vec![0.0, 0.0, 1.0]);
    }

    /// scikit-learn 1.9 on the same vectors: `accuracy_score`, `f1_score` (binary) and
    /// `balanced_accuracy_score`, which is the paper's WA written another way.
    #[test]
    fn per_emotion_scores_match_scikit_learn() {
        let y = [
            [1, 0, 0],
            [0, 1, 0],
            [1, 1, 0],
            [0, 0, 1],
            [0, 0, 0],
            [1, 0, 1],
            [0, 1, 0],
            [0, 0, 1],
        ];
        let p = [
            [1, 0, 0],
            [1, 1, 0],
            [0, 1, 0],
            [0, 0, 1],
            [0, 1, 0],
            [1, 0, 0],
            [0, 1, 1],
            [0, 0, 1],
        ];
        let want = [
            (0.75, 0.7333333333333334, 0.6666666666666666),
            (0.875, 0.9, 0.8571428571428571),
            (0.75, 0.7333333333333334, 0.6666666666666666),
        ];
        for (c, (acc, wa, f1)) in want.into_iter().enumerate() {
            let yc: Vec<bool> = y.iter().map(|r| r[c] == 1).collect();
            let pc: Vec<bool> = p.iter().map(|r| r[c] == 1).collect();
            let b = binary(&yc, &pc);
            assert!((b.acc - acc).abs() < 1e-12, "{c}: {b:?}");
            assert!((b.wa - wa).abs() < 1e-12, "{c}: {b:?}");
            assert!((b.f1 - f1).abs() < 1e-12, "{c}: {b:?}");
        }
        // By hand for emotion 0: P = 3, N = 5, TP = 2, TN = 4: (2 * 5/3 + 4) / 10 = 0.7333.
        assert!(
            (binary(
                &[true, true, true, false, false, false, false, false],
                &[true, true, false, false, false, false, false, true]
            )
            .wa - 0.7333333333333334)
                .abs()
                < 1e-12
        );
        // No positives predicted or present: F1 0, as scikit-learn's zero_division default.
        assert_eq!(binary(&[false, false], &[false, false]).f1, 0.0);
    }

    #[test]
    fn ua_is_macro_recall_and_wa_is_accuracy() {
        // scikit-learn: recall_score(average="macro") 0.7083333333333333, accuracy 0.625.
        let (ua, wa) = ua_wa(&[0, 0, 1, 1, 2, 2, 2, 3], &[0, 1, 1, 1, 2, 0, 3, 3]);
        assert!((ua - 0.7083333333333333).abs() < 1e-12);
        assert!((wa - 0.625).abs() < 1e-12);
    }
}
