//! `linear_probe`: how much of a label a linear model reads off one feature input, beside the
//! majority-class baseline. A modality that carries no signal is visible at once, and every
//! trained model can be read against what a linear model gets from the same features.
//!
//! Each clip's feature rows are mean-pooled (all-zero padding rows left out) and standardised
//! with the fitting clips' mean and sd. The model is L2-regularised softmax regression, fitted
//! by accelerated gradient descent with a step from the loss's curvature bound, so it is
//! deterministic and needs no tuning. The L2 weight is the one of `l2` with the best validation
//! accuracy when fitted on `train`; the `test` row is then refitted on train + valid with it.
//! Rows `train` and `valid` come from the train-only fit. The baseline predicts the fitting
//! clips' most frequent class.

use std::collections::HashMap;

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;

use crate::table::{batch, col, f64s, i64s, str_col, strings};
use crate::{Kind, Output, Params, RunCtx, Stage, StageError};

pub struct LinearProbe;

/// Pooled, not yet standardised features and class ids of the clips in the split table.
struct Data {
    ids: Vec<String>,
    x: Vec<Vec<f64>>,
    y: Vec<usize>,
    split: Vec<String>,
}

impl Stage for LinearProbe {
    fn decl(&self) -> &dyn Kind {
        &stages::train::LinearProbe
    }
    fn run(&self, ctx: &RunCtx) -> Result<Output, StageError> {
        let p = ctx.params;
        let classes = p.i64("classes")?.max(1) as usize;
        let l2 = p.f64_list("l2")?;
        if l2.is_empty() || l2.iter().any(|&v| v < 0.0) {
            return Err(StageError::param("l2", "one or more weights >= 0"));
        }
        let iters = p.i64("iterations")?.max(1) as usize;
        let d = data(ctx, p, classes)?;
        let of = |s: &[&str]| -> Vec<usize> {
            (0..d.y.len())
                .filter(|&i| s.contains(&d.split[i].as_str()))
                .collect()
        };
        let (train, valid, test) = (of(&["train"]), of(&["valid"]), of(&["test"]));
        if train.is_empty() || valid.is_empty() {
            return Err(StageError::Input(
                "the probe needs `train` and `valid` clips with features and labels".into(),
            ));
        }
        let fits: Vec<(f64, Probe)> = l2
            .iter()
            .map(|&lam| (lam, Probe::fit(&d, &train, classes, lam, iters)))
            .collect();
        // Ties go to the stronger regularisation: the simpler model.
        let (lam, probe) = fits
            .iter()
            .max_by(|a, b| {
                let (sa, sb) = (a.1.accuracy(&d, &valid), b.1.accuracy(&d, &valid));
                sa.total_cmp(&sb).then(a.0.total_cmp(&b.0))
            })
            .expect("at least one l2");
        let mut rows = vec![
            Row::of("train", &d, &train, probe, classes, &train),
            Row::of("valid", &d, &valid, probe, classes, &train),
        ];
        if !test.is_empty() {
            let fit_on = of(&["train", "valid"]);
            let refit = Probe::fit(&d, &fit_on, classes, *lam, iters);
            rows.push(Row::of("test", &d, &test, &refit, classes, &fit_on));
        }
        let dim = d.x.first().map_or(0, Vec::len) as i64;
        Ok(Output {
            table: table(&rows, classes, *lam, dim)?,
            errors: vec![],
        })
    }
}

/// Joins the features (mean-pooled per clip), the labels of `target` and the split.
fn data(ctx: &RunCtx, p: &Params, classes: usize) -> Result<Data, StageError> {
    let (target, label) = (p.str("target")?, p.str("label")?);
    let lt = &ctx.inputs[1];
    let (lid, ltarget) = (str_col(lt, "clip_id")?, str_col(lt, "target")?);
    let lval = col::<Int64Array>(lt, label).map_err(|_| {
        StageError::param(
            "label",
            format!("the labels table has no class-id column `{label}`"),
        )
    })?;
    let mut y = HashMap::new();
    for r in 0..lt.num_rows() {
        if ltarget.value(r) == target && !lval.is_null(r) {
            let c = lval.value(r);
            if c < 0 || c as usize >= classes {
                return Err(StageError::Input(format!(
                    "clip {}: field `{label}` is class {c}, outside 0..{classes}",
                    lid.value(r)
                )));
            }
            y.insert(lid.value(r).to_string(), c as usize);
        }
    }
    if y.is_empty() {
        return Err(StageError::Input(format!(
            "the labels table has no `{label}` labels for target `{target}`"
        )));
    }
    let ft = &ctx.inputs[0];
    let fid = str_col(ft, "clip_id")?;
    let mut pooled = HashMap::new();
    for r in 0..ft.num_rows() {
        let m = crate::features::matrix::read_matrix_of(ctx, 0, r)
            .map_err(|e| StageError::Input(format!("clip {}: {}", fid.value(r), e.reason)))?;
        pooled.insert(fid.value(r).to_string(), mean_rows(&m.values, m.dim));
    }
    let st = &ctx.inputs[2];
    let (sid, ssplit) = (str_col(st, "clip_id")?, str_col(st, "split")?);
    let fold = p.i64("fold")?;
    let sfold = col::<Int64Array>(st, "fold").ok();
    let folds: std::collections::BTreeSet<i64> = sfold
        .map(|f| (0..f.len()).map(|i| f.value(i)).collect())
        .unwrap_or_default();
    if fold < 0 && folds.len() > 1 {
        return Err(StageError::param(
            "fold",
            format!("the split has folds {folds:?}; probe one of them"),
        ));
    }
    let mut d = Data {
        ids: vec![],
        x: vec![],
        y: vec![],
        split: vec![],
    };
    for r in 0..st.num_rows() {
        if fold >= 0 && sfold.is_some_and(|f| f.value(r) != fold) {
            continue;
        }
        let id = sid.value(r);
        if let (Some(x), Some(&c)) = (pooled.get(id), y.get(id)) {
            d.ids.push(id.to_string());
            d.x.push(x.clone());
            d.y.push(c);
            d.split.push(ssplit.value(r).to_string());
        }
    }
    if let Some(w) = d.x.first().map(Vec::len) {
        if let Some(i) = d.x.iter().position(|x| x.len() != w) {
            return Err(StageError::Input(format!(
                "clip {}: {} feature dimensions where others have {w}",
                d.ids[i],
                d.x[i].len()
            )));
        }
    }
    Ok(d)
}

/// Mean of the rows of a `[rows x dim]` matrix that are not all zero (padding).
fn mean_rows(values: &[f32], dim: usize) -> Vec<f64> {
    let mut sum = vec![0f64; dim];
    let mut n = 0usize;
    for row in values.chunks(dim.max(1)) {
        if row.iter().any(|&v| v != 0.0) {
            n += 1;
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
    }
    sum.iter_mut().for_each(|s| *s /= n.max(1) as f64);
    sum
}

/// A fitted probe: standardisation and the weights (`classes` x (dim + 1), bias last).
struct Probe {
    mean: Vec<f64>,
    sd: Vec<f64>,
    w: Vec<Vec<f64>>,
}

impl Probe {
    fn fit(d: &Data, idx: &[usize], classes: usize, lam: f64, iters: usize) -> Probe {
        let dim = d.x[0].len();
        let n = idx.len() as f64;
        let mut mean = vec![0.0; dim];
        for &i in idx {
            for (m, v) in mean.iter_mut().zip(&d.x[i]) {
                *m += v / n;
            }
        }
        let mut sd = vec![0.0; dim];
        for &i in idx {
            for ((s, v), m) in sd.iter_mut().zip(&d.x[i]).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let sd: Vec<f64> = sd
            .into_iter()
            .map(|v| if v.sqrt() > 1e-9 { v.sqrt() } else { 1.0 })
            .collect();
        let mut probe = Probe {
            mean,
            sd,
            w: vec![vec![0.0; dim + 1]; classes],
        };
        let xs: Vec<Vec<f64>> = idx.iter().map(|&i| probe.row(&d.x[i])).collect();
        let ys: Vec<usize> = idx.iter().map(|&i| d.y[i]).collect();
        // Böhning's bound: the softmax loss's Hessian is at most ½·XᵀX/n per class.
        let step = 1.0 / (0.5 * top_eigenvalue(&xs) + lam);
        probe.w = nesterov(&xs, &ys, classes, lam, step, iters);
        probe
    }
    /// Standardised features with the bias's constant 1 appended.
    fn row(&self, x: &[f64]) -> Vec<f64> {
        let mut r: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.sd)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        r.push(1.0);
        r
    }
    fn predict(&self, x: &[f64]) -> usize {
        let r = self.row(x);
        argmax(&scores(&self.w, &r))
    }
    fn accuracy(&self, d: &Data, idx: &[usize]) -> f64 {
        let right = idx
            .iter()
            .filter(|&&i| self.predict(&d.x[i]) == d.y[i])
            .count();
        right as f64 / idx.len().max(1) as f64
    }
}

fn scores(w: &[Vec<f64>], r: &[f64]) -> Vec<f64> {
    w.iter()
        .map(|wc| wc.iter().zip(r).map(|(a, b)| a * b).sum())
        .collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |x| x.0)
}

/// The largest eigenvalue of XᵀX/n by power iteration from a fixed start.
fn top_eigenvalue(xs: &[Vec<f64>]) -> f64 {
    let dim = xs.first().map_or(0, Vec::len);
    let n = xs.len().max(1) as f64;
    let mut v = vec![1.0 / (dim.max(1) as f64).sqrt(); dim];
    let mut lambda = 0.0;
    for _ in 0..60 {
        let mut next = vec![0.0; dim];
        for x in xs {
            let dot: f64 = x.iter().zip(&v).map(|(a, b)| a * b).sum();
            for (o, a) in next.iter_mut().zip(x) {
                *o += a * dot / n;
            }
        }
        lambda = next.iter().map(|a| a * a).sum::<f64>().sqrt();
        if lambda == 0.0 {
            break;
        }
        v = next.iter().map(|a| a / lambda).collect();
    }
    lambda.max(1e-12)
}

/// Gradient of the mean softmax cross-entropy plus ½·lam·|W|² (bias not penalised).
fn gradient(xs: &[Vec<f64>], ys: &[usize], w: &[Vec<f64>], lam: f64) -> Vec<Vec<f64>> {
    let dim = w[0].len();
    let n = xs.len().max(1) as f64;
    let mut g = vec![vec![0.0; dim]; w.len()];
    for (x, &y) in xs.iter().zip(ys) {
        let s = scores(w, x);
        let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
        let z: f64 = e.iter().sum();
        for (c, gc) in g.iter_mut().enumerate() {
            let diff = e[c] / z - f64::from(u8::from(c == y));
            for (gi, xi) in gc.iter_mut().zip(x) {
                *gi += diff * xi / n;
            }
        }
    }
    for (gc, wc) in g.iter_mut().zip(w) {
        for (gi, wi) in gc.iter_mut().zip(wc).take(dim - 1) {
            *gi += lam * wi;
        }
    }
    g
}

/// Nesterov's accelerated gradient descent from zero weights.
fn nesterov(
    xs: &[Vec<f64>],
    ys: &[usize],
    classes: usize,
    lam: f64,
    step: f64,
    iters: usize,
) -> Vec<Vec<f64>> {
    let dim = xs[0].len();
    let mut w = vec![vec![0.0; dim]; classes];
    let mut look = w.clone();
    let mut t = 1.0f64;
    for _ in 0..iters {
        let g = gradient(xs, ys, &look, lam);
        let next: Vec<Vec<f64>> = look
            .iter()
            .zip(&g)
            .map(|(lc, gc)| lc.iter().zip(gc).map(|(a, b)| a - step * b).collect())
            .collect();
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let m = (t - 1.0) / t_next;
        look = next
            .iter()
            .zip(&w)
            .map(|(nc, wc)| nc.iter().zip(wc).map(|(a, b)| a + m * (a - b)).collect())
            .collect();
        w = next;
        t = t_next;
    }
    w
}

/// One split's scores of the probe and of the majority class of the fitting clips `fit_on`.
struct Row {
    split: &'static str,
    n: usize,
    probe: [f64; 5],
    base: [f64; 5],
}

impl Row {
    fn of(
        split: &'static str,
        d: &Data,
        idx: &[usize],
        probe: &Probe,
        classes: usize,
        fit_on: &[usize],
    ) -> Row {
        let y: Vec<i64> = idx.iter().map(|&i| d.y[i] as i64).collect();
        let pred: Vec<i64> = idx.iter().map(|&i| probe.predict(&d.x[i]) as i64).collect();
        let mut counts = vec![0usize; classes];
        for &i in fit_on {
            counts[d.y[i]] += 1;
        }
        let major = argmax(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>()) as i64;
        Row {
            split,
            n: idx.len(),
            probe: scores_of(&y, &pred, classes),
            base: scores_of(&y, &vec![major; y.len()], classes),
        }
    }
}

/// Acc, macro F1, weighted F1, UA, WA.
fn scores_of(y: &[i64], pred: &[i64], classes: usize) -> [f64; 5] {
    let (acc, f1, wf1, _) = crate::metrics::emotion::classification(y, pred, classes);
    let (ua, wa) = crate::metrics::emotion::ua_wa(y, pred);
    [acc, f1, wf1, ua, wa]
}

const COLUMNS: [&str; 5] = ["acc", "f1_macro", "f1_weighted", "ua", "wa"];

fn table(rows: &[Row], classes: usize, lam: f64, dim: i64) -> Result<RecordBatch, StageError> {
    let n = rows.len();
    let mut cols = vec![
        (
            "split".to_string(),
            strings(&rows.iter().map(|r| r.split).collect::<Vec<_>>()),
        ),
        (
            "clips".to_string(),
            i64s(rows.iter().map(|r| Some(r.n as i64)).collect()),
        ),
    ];
    for (k, c) in COLUMNS.iter().enumerate() {
        cols.push((
            c.to_string(),
            f64s(rows.iter().map(|r| Some(r.probe[k])).collect()),
        ));
    }
    for (k, c) in COLUMNS.iter().enumerate() {
        cols.push((
            format!("base_{c}"),
            f64s(rows.iter().map(|r| Some(r.base[k])).collect()),
        ));
    }
    cols.push(("classes".into(), i64s(vec![Some(classes as i64); n])));
    cols.push(("l2".into(), f64s(vec![Some(lam); n])));
    cols.push(("dim".into(), i64s(vec![Some(dim); n])));
    batch(cols.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, sep: f64) -> Data {
        // Three classes, each a shifted cloud in 4-d, from a fixed LCG.
        let mut s = 42u64;
        let mut r = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut d = Data {
            ids: vec![],
            x: vec![],
            y: vec![],
            split: vec![],
        };
        for i in 0..n {
            let c = i % 3;
            let x: Vec<f64> = (0..4)
                .map(|k| r() + if k == c { sep } else { 0.0 })
                .collect();
            d.ids.push(i.to_string());
            d.x.push(x);
            d.y.push(c);
            d.split
                .push(if i % 5 == 0 { "valid" } else { "train" }.into());
        }
        d
    }

    #[test]
    fn separable_classes_are_found_and_noise_is_not() {
        let d = blobs(300, 2.0);
        let idx: Vec<usize> = (0..300).filter(|&i| d.split[i] == "train").collect();
        let valid: Vec<usize> = (0..300).filter(|&i| d.split[i] == "valid").collect();
        let p = Probe::fit(&d, &idx, 3, 1e-3, 300);
        assert!(p.accuracy(&d, &valid) > 0.95, "{}", p.accuracy(&d, &valid));
        // No class signal: the probe stays near chance on held-out clips.
        let d = blobs(300, 0.0);
        let p = Probe::fit(&d, &idx, 3, 1e-3, 300);
        assert!(p.accuracy(&d, &valid) < 0.6, "{}", p.accuracy(&d, &valid));
    }

    #[test]
    fn gradient_descent_reaches_the_regularised_optimum() {
        let d = blobs(150, 0.5);
        let idx: Vec<usize> = (0..150).collect();
        let p = Probe::fit(&d, &idx, 3, 0.1, 2000);
        let xs: Vec<Vec<f64>> = idx.iter().map(|&i| p.row(&d.x[i])).collect();
        let g = gradient(&xs, &d.y, &p.w, 0.1);
        let norm: f64 = g.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm < 1e-6, "gradient norm {norm}");
    }

    #[test]
    fn padding_rows_do_not_count_in_the_mean() {
        assert_eq!(
            mean_rows(&[1.0, 3.0, 0.0, 0.0, 3.0, 5.0], 2),
            vec![2.0, 4.0]
        );
    }
}
