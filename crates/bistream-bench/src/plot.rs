//! SVG plots of latency distributions: one chart per suite, one cumulative-distribution line
//! per measured series (ours, peer, floor), latency on a log axis.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::Series;

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Writes a cumulative latency distribution chart of `series` to `path`.
pub fn latency_cdf(path: &Path, title: &str, series: &[&Series]) -> anyhow::Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|s| !s.hist.is_empty())
        .map(|s| {
            let pts = s
                .hist
                .cdf()
                .into_iter()
                .map(|(ns, f)| ((ns.max(1) as f64) / 1000.0, f * 100.0))
                .collect();
            (format!("{} (n={})", s.label, s.hist.len()), pts)
        })
        .collect();
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (_, pts) in &curves {
        for (x, _) in pts {
            lo = lo.min(*x);
            hi = hi.max(*x);
        }
    }
    if curves.is_empty() {
        lo = 1.0;
        hi = 10.0;
    }
    let lo = (lo * 0.8).max(0.01);
    let hi = (hi * 1.25).max(lo * 10.0);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| anyhow!("plot: {e}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: latency distribution (cumulative)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("percentile")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (label, pts)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
