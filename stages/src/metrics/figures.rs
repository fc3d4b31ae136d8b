//! PNG figures for `pipeline report`: confusion matrices and 2-D projections of hidden vectors.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::prelude::*;

/// Where the report's text font is looked for (Debian's fonts-dejavu-core).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn font() -> Result<(), crate::StageError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("PIPELINE_FONT")
            .ok()
            .into_iter()
            .chain(FONTS.iter().map(|s| s.to_string()))
            .find(|p| std::path::Path::new(p).is_file())
            .ok_or(
                "no TTF font found for figures (install fonts-dejavu-core or set PIPELINE_FONT)",
            )?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        // plotters keeps registered fonts for the process's lifetime.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TTF font"))
    })
    .clone()
    .map_err(crate::StageError::Other)
}

fn render(
    w: u32,
    h: u32,
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    ) -> Result<(), crate::StageError>,
) -> Result<Vec<u8>, crate::StageError> {
    font()?;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "pipeline-fig-{}-{}.png",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let root = BitMapBackend::new(&path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let b = std::fs::read(&path).map_err(|e| crate::StageError::io(&path, e));
    let _ = std::fs::remove_file(&path);
    b
}

/// A confusion matrix (rows true, columns predicted), each cell shaded by its share of the row
/// and labelled with its count.
pub fn confusion_png(
    cm: &[Vec<i64>],
    names: &[String],
    title: &str,
) -> Result<Vec<u8>, crate::StageError> {
    let n = cm.len();
    render(520, 460, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let (top, body) = root.split_vertically(40);
        top.draw(&Text::new(
            title.to_string(),
            (10, 12),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(e)?;
        let (left, grid) = body.split_horizontally(110);
        let (grid, bottom) = grid.split_vertically(360);
        let cell = 360 / n.max(1) as i32;
        for (i, row) in cm.iter().enumerate() {
            let total = row.iter().sum::<i64>().max(1) as f64;
            for (j, &v) in row.iter().enumerate() {
                let f = v as f64 / total;
                let shade = (255.0 - 200.0 * f) as u8;
                let (x, y) = (j as i32 * cell, i as i32 * cell);
                grid.draw(&Rectangle::new(
                    [(x, y), (x + cell - 2, y + cell - 2)],
                    RGBColor(shade, shade, 255).filled(),
                ))
                .map_err(e)?;
                let color = if f > 0.5 { WHITE } else { BLACK };
                grid.draw(&Text::new(
                    format!("{v}"),
                    (x + cell / 2 - 10, y + cell / 2 - 8),
                    ("sans-serif", 18).into_font().color(&color),
                ))
                .map_err(e)?;
            }
        }
        for (k, name) in names.iter().enumerate().take(n) {
            left.draw(&Text::new(
                name.clone(),
                (5, k as i32 * cell + cell / 2 - 6),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(e)?;
            bottom
                .draw(&Text::new(
                    name.clone(),
                    (k as i32 * cell + 5, 8),
                    ("sans-serif", 14).into_font(),
                ))
                .map_err(e)?;
        }
        left.draw(&Text::new("true", (5, 0), ("sans-serif", 12).into_font()))
            .map_err(e)?;
        bottom
            .draw(&Text::new(
                "predicted",
                (140, 30),
                ("sans-serif", 12).into_font(),
            ))
            .map_err(e)?;
        Ok(())
    })
}

/// The first two principal components of `rows` (centred; power iteration with deflation).
pub fn pca2(rows: &[Vec<f32>]) -> Vec<(f64, f64)> {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    if n == 0 || d == 0 {
        return Vec::new();
    }
    let mut mean = vec![0f64; d];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += f64::from(*v) / n as f64;
        }
    }
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(v, m)| f64::from(*v) - m)
                .collect()
        })
        .collect();
    let cov_mul = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; d];
        for r in &x {
            let s: f64 = r.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(r) {
                *o += s * a;
            }
        }
        out
    };
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        // A fixed start vector keeps the figure the same from run to run.
        let mut v: Vec<f64> = (0..d)
            .map(|i| 1.0 + ((i * 7 + c * 3) % 11) as f64 / 11.0)
            .collect();
        for _ in 0..200 {
            let mut w = cov_mul(&v);
            for p in &comps {
                let s: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= s * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            v = w.into_iter().map(|a| a / norm).collect();
        }
        comps.push(v);
    }
    x.iter()
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            (p(&comps[0]), p(&comps[1]))
        })
        .collect()
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

/// A scatter of 2-D points coloured by class, with a legend.
pub fn scatter_png(
    points: &[(f64, f64, i64)],
    names: &[String],
    title: &str,
) -> Result<Vec<u8>, crate::StageError> {
    let (x0, x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = |a: f64, b: f64| ((b - a).abs() * 0.05).max(1e-6);
    render(560, 480, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(
                (x0 - pad(x0, x1))..(x1 + pad(x0, x1)),
                (y0 - pad(y0, y1))..(y1 + pad(y0, y1)),
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("PC 1")
            .y_desc("PC 2")
            .draw()
            .map_err(e)?;
        let classes: std::collections::BTreeSet<i64> = points.iter().map(|p| p.2).collect();
        for c in classes {
            let color = PALETTE[c.rem_euclid(PALETTE.len() as i64) as usize];
            let label = names
                .get(c as usize)
                .cloned()
                .unwrap_or_else(|| c.to_string());
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2 == c)
                        .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
                )
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points spread along (1, 1, 0) with small noise on the other axes.
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                vec![t + 0.01 * (i % 3) as f32, t, 0.1 * (i % 5) as f32]
            })
            .collect();
        let p = pca2(&rows);
        let var1: f64 = p.iter().map(|q| q.0 * q.0).sum();
        let var2: f64 = p.iter().map(|q| q.1 * q.1).sum();
        assert!(var1 > 100.0 * var2, "{var1} {var2}");
    }
}
