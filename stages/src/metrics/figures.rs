//! PNG figures for `pipeline report`: confusion matrices, training curves and 2-D projections
//! of hidden vectors.

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

/// The sequential colour of a share `f` in [0, 1]: near-white to dark blue.
fn blues(f: f64) -> RGBColor {
    let f = f.clamp(0.0, 1.0);
    let mix = |lo: f64, hi: f64| (lo + (hi - lo) * f).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

/// Pixels a label of `chars` characters takes at `size` px (DejaVu Sans averages about 0.6 em).
fn text_width(chars: usize, size: u32) -> i32 {
    (chars as f64 * size as f64 * 0.6).ceil() as i32
}

/// A confusion matrix (rows true, columns predicted), each cell shaded by its share of the row
/// and labelled with its count and that share; a colour scale beside it. Column labels turn
/// vertical when they would not fit under their cells.
pub fn confusion_png(
    cm: &[Vec<i64>],
    names: &[String],
    title: &str,
) -> Result<Vec<u8>, crate::StageError> {
    let n = cm.len().max(1);
    let longest = names
        .iter()
        .take(n)
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(1);
    let cell = (400 / n as i32).clamp(40, 110);
    let label_w = text_width(longest, 14) + 34;
    let vertical = text_width(longest, 14) > cell - 6;
    let label_h = if vertical { label_w } else { 24 } + 26;
    let side = cell * n as i32;
    let (w, h) = (label_w + side + 110, 44 + side + label_h);
    render(w as u32, h as u32, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let font = |px: u32| ("sans-serif", px).into_font();
        root.draw(&Text::new(title.to_string(), (10, 12), font(18)))
            .map_err(e)?;
        let (x0, y0) = (label_w, 44);
        for (i, row) in cm.iter().enumerate() {
            let total = row.iter().sum::<i64>().max(1) as f64;
            for (j, &v) in row.iter().enumerate() {
                let f = v as f64 / total;
                let (x, y) = (x0 + j as i32 * cell, y0 + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 2, y + cell - 2)],
                    blues(f).filled(),
                ))
                .map_err(e)?;
                let color = if f > 0.5 { WHITE } else { BLACK };
                let count = format!("{v}");
                let share = format!("{:.0}%", 100.0 * f);
                for (k, (text, px)) in [(count, 16), (share, 12)].into_iter().enumerate() {
                    let tx = x + (cell - 2 - text_width(text.len(), px)) / 2;
                    let ty = y + cell / 2 - 17 + 20 * k as i32;
                    root.draw(&Text::new(text, (tx, ty), font(px).color(&color)))
                        .map_err(e)?;
                }
            }
        }
        for (k, name) in names.iter().enumerate().take(n) {
            let c = k as i32 * cell + cell / 2;
            root.draw(&Text::new(name.clone(), (30, y0 + c - 7), font(14)))
                .map_err(e)?;
            let (pos, style) = if vertical {
                let f = font(14).transform(FontTransform::Rotate90);
                ((x0 + c + 7, y0 + side + 6), f)
            } else {
                let tw = text_width(name.chars().count(), 14);
                ((x0 + c - tw / 2, y0 + side + 6), font(14))
            };
            root.draw(&Text::new(name.clone(), pos, style)).map_err(e)?;
        }
        let rotated = font(13).transform(FontTransform::Rotate270);
        root.draw(&Text::new("true class", (6, y0 + side / 2 + 30), rotated))
            .map_err(e)?;
        root.draw(&Text::new(
            "predicted class",
            (x0 + side / 2 - 45, h - 20),
            font(13),
        ))
        .map_err(e)?;
        colour_scale(root, (x0 + side + 24, y0), side)
    })
}

/// A vertical scale of `blues` from 0% (bottom) to 100% of the row (top), with ticks.
fn colour_scale(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    (x, y): (i32, i32),
    height: i32,
) -> Result<(), crate::StageError> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    for k in 0..height {
        let f = 1.0 - k as f64 / (height - 1).max(1) as f64;
        root.draw(&Rectangle::new(
            [(x, y + k), (x + 16, y + k + 1)],
            blues(f).filled(),
        ))
        .map_err(e)?;
    }
    root.draw(&Rectangle::new([(x, y), (x + 16, y + height)], BLACK))
        .map_err(e)?;
    for pct in [0, 25, 50, 75, 100] {
        let ty = y + height - height * pct / 100;
        root.draw(&PathElement::new(vec![(x + 16, ty), (x + 20, ty)], BLACK))
            .map_err(e)?;
        root.draw(&Text::new(
            format!("{pct}%"),
            (x + 23, ty - 6),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(e)?;
    }
    root.draw(&Text::new(
        "of the row",
        (x - 6, y + height + 8),
        ("sans-serif", 11).into_font(),
    ))
    .map_err(e)?;
    Ok(())
}

/// One side (train or valid) of a training curve: per epoch, the loss and a score.
pub struct Curve<'a> {
    /// Its legend entry; empty: none (the second and later runs of an overlay).
    pub name: &'a str,
    pub color: RGBColor,
    /// 1 for one run; lower when many runs are overlaid.
    pub opacity: f64,
    pub loss: Vec<(i64, f64)>,
    pub score: Vec<(i64, f64)>,
}

/// Loss (left) and `score_name` (right) per epoch, one line per curve, the kept epoch marked by
/// a dashed vertical line.
pub fn curves_png<'a>(
    curves: &'a [Curve<'a>],
    score_name: &str,
    best_epoch: Option<i64>,
    title: &str,
) -> Result<Vec<u8>, crate::StageError> {
    render(900, 380, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let root = root.titled(title, ("sans-serif", 18)).map_err(e)?;
        let (l, r) = root.split_horizontally(450);
        let last = curves
            .iter()
            .flat_map(|c| c.loss.iter().map(|p| p.0))
            .fold(1, i64::max);
        for (area, what, is_loss) in [(&l, "loss", true), (&r, score_name, false)] {
            let pick = |c: &'a Curve| if is_loss { &c.loss } else { &c.score };
            let (lo, hi) = curves
                .iter()
                .flat_map(|c| pick(c).iter().map(|p| p.1))
                .filter(|v| v.is_finite())
                .fold((f64::MAX, f64::MIN), |a, v| (a.0.min(v), a.1.max(v)));
            if lo > hi {
                continue;
            }
            let pad = ((hi - lo) * 0.05).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0..last + 1, (lo - pad)..(hi + pad))
                .map_err(e)?;
            let tick = |x: &i64| {
                if (1..=last).contains(x) {
                    x.to_string()
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_labels((last as usize + 2).min(12))
                .x_label_formatter(&tick)
                .x_desc("epoch")
                .y_desc(what)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(e)?;
            if let Some(b) = best_epoch {
                let dashes = (0..20).map(|k| {
                    let y0 = lo - pad + (hi - lo + 2.0 * pad) * k as f64 / 20.0;
                    PathElement::new(
                        vec![(b, y0), (b, y0 + (hi - lo + 2.0 * pad) / 40.0)],
                        BLACK.mix(0.6),
                    )
                });
                chart.draw_series(dashes).map_err(e)?;
            }
            for c in curves {
                let color = c.color;
                let style = color.mix(c.opacity).stroke_width(2);
                let points = if pick(c).len() <= 40 && c.opacity >= 1.0 {
                    3
                } else {
                    0
                };
                let series = chart
                    .draw_series(LineSeries::new(pick(c).iter().copied(), style).point_size(points))
                    .map_err(e)?;
                if !c.name.is_empty() {
                    series.label(c.name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
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
