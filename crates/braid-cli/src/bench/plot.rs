//! `braid bench --plot FILE.svg`: each bulk run's throughput over time, per stream, one
//! panel per (library, bulk shape): rows are libraries, columns the shapes. Panels in a
//! column share their axes, so libraries compare at a glance: a fair multiplexer draws
//! its streams on top of each other, a smooth one draws flat lines.
//!
//! The run drawn is the one with the median throughput. Up to 16 streams each get a
//! line; with more, the lines are the minimum, median and maximum over the streams.

use super::runner::{Lib, Run, Spec};
use super::sample::Series;
use plotters::prelude::*;
use std::io;
use std::path::Path;

/// Streams drawn one line each; more are drawn as min / median / max.
const MAX_LINES: usize = 16;
const PANEL: (u32, u32) = (440, 230);
const TITLE_HEIGHT: u32 = 40;

/// One panel's lines: (label, points) with points (seconds, MB/s).
type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// Per-interval rates of each stream, in MB/s, as step lines. The first interval starts
/// at 0; a last one shorter than half the others is merged into the one before (its
/// rate would be noise).
fn stream_rates(series: &Series) -> Vec<Vec<(f64, f64)>> {
    let mut bounds: Vec<usize> = (0..series.t_s.len()).collect();
    if bounds.len() >= 3 {
        let n = bounds.len();
        let last = series.t_s[n - 1] - series.t_s[n - 2];
        let before = series.t_s[n - 2] - series.t_s[n - 3];
        if last < before / 2.0 {
            bounds.remove(n - 2);
        }
    }
    series
        .bytes
        .iter()
        .map(|bytes| {
            let (mut t0, mut b0) = (0.0, 0u64);
            let mut points = Vec::with_capacity(2 * bounds.len());
            for &k in &bounds {
                let (t1, b1) = (series.t_s[k], bytes[k]);
                if t1 > t0 {
                    let rate = b1.saturating_sub(b0) as f64 / (t1 - t0) / 1e6;
                    points.push((t0, rate));
                    points.push((t1, rate));
                }
                (t0, b0) = (t1, b1);
            }
            points
        })
        .collect()
}

/// The lines of one panel.
fn lines(series: &Series) -> Lines {
    let rates = stream_rates(series);
    if rates.len() <= MAX_LINES {
        return rates
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("stream {i}"), p))
            .collect();
    }
    // All streams share the sampling times, so point j is the same instant in each.
    let n = rates.iter().map(Vec::len).min().unwrap_or(0);
    let mut out: Lines = vec![
        ("max".into(), Vec::new()),
        ("median".into(), Vec::new()),
        ("min".into(), Vec::new()),
    ];
    for j in 0..n {
        let t = rates[0][j].0;
        let mut v: Vec<f64> = rates.iter().map(|r| r[j].1).collect();
        v.sort_by(f64::total_cmp);
        out[0].1.push((t, v[v.len() - 1]));
        out[1].1.push((t, v[v.len() / 2]));
        out[2].1.push((t, v[0]));
    }
    out
}

fn plot_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {e}"))
}

/// Draws the bulk runs of `runs` into the SVG file at `path`.
pub fn draw(path: &Path, specs: &[Spec], libs: &[Lib], runs: &[Run]) -> io::Result<()> {
    let columns: Vec<(usize, &Spec)> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Spec::Bulk { .. }))
        .collect();
    if columns.is_empty() || libs.is_empty() {
        return Err(io::Error::other("plot: no bulk runs to draw"));
    }
    // panels[row][column]: caption and lines.
    let mut panels: Vec<Vec<(String, Lines)>> = Vec::new();
    for &lib in libs {
        let mut row = Vec::new();
        for &(i, spec) in &columns {
            let mut ok: Vec<&Run> = runs
                .iter()
                .filter(|r| r.spec == i && r.lib == lib && r.sample.ok && r.sample.series.is_some())
                .collect();
            ok.sort_by(|a, b| {
                let v = |r: &Run| r.sample.mb_per_s.unwrap_or(0.0);
                v(a).total_cmp(&v(b))
            });
            row.push(match ok.get(ok.len() / 2) {
                Some(run) => (
                    format!(
                        "{} {}: {:.0} MB/s",
                        lib.name(),
                        spec.label(),
                        run.sample.mb_per_s.unwrap_or(0.0)
                    ),
                    lines(run.sample.series.as_ref().expect("filtered")),
                ),
                None => {
                    let why = runs
                        .iter()
                        .find(|r| r.spec == i && r.lib == lib)
                        .and_then(|r| r.sample.na.clone().or(r.sample.error.clone()))
                        .unwrap_or_else(|| "no run".into());
                    let why: String = why.chars().take(40).collect();
                    (
                        format!("{} {}: {why}", lib.name(), spec.label()),
                        Vec::new(),
                    )
                }
            });
        }
        panels.push(row);
    }
    // Shared axes per column.
    let bounds: Vec<(f64, f64)> = (0..columns.len())
        .map(|c| {
            let points = panels
                .iter()
                .flat_map(|row| row[c].1.iter().flat_map(|(_, p)| p.iter()));
            let (x, y) = points.fold((0.0f64, 0.0f64), |(x, y), &(t, v)| (x.max(t), y.max(v)));
            // Room above the lines for the legend of min / median / max.
            let envelope = panels
                .iter()
                .any(|row| row[c].1.len() == 3 && row[c].1[0].0 == "max");
            let headroom = if envelope { 1.45 } else { 1.08 };
            (x.max(1e-3) * 1.02, y.max(1e-3) * headroom)
        })
        .collect();

    let size = (
        PANEL.0 * columns.len() as u32,
        PANEL.1 * libs.len() as u32 + TITLE_HEIGHT,
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(
            "braid bench: throughput over time per stream (MB/s per stream against seconds; run with the median throughput)",
            ("sans-serif", 16),
        )
        .map_err(plot_err)?;
    let areas = root.split_evenly((libs.len(), columns.len()));
    for (r, row) in panels.iter().enumerate() {
        for (c, (caption, lines)) in row.iter().enumerate() {
            let area = &areas[r * columns.len() + c];
            let (xmax, ymax) = bounds[c];
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 13))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..xmax, 0f64..ymax)
                .map_err(plot_err)?;
            // Enough decimals for the labels to differ at small scales.
            let decimals = |max: f64| (1.0 - max.log10().floor()).clamp(0.0, 4.0) as usize;
            let (xd, yd) = (decimals(xmax), decimals(ymax));
            let x_fmt = move |x: &f64| format!("{x:.xd$}s");
            let y_fmt = move |y: &f64| format!("{y:.yd$}");
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 10))
                .x_labels(6)
                .y_labels(5)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .draw()
                .map_err(plot_err)?;
            let envelope = lines.len() == 3 && lines[0].0 == "max";
            for (i, (label, points)) in lines.iter().enumerate() {
                let color = if envelope {
                    [RED, BLACK, BLUE][i].to_rgba()
                } else {
                    Palette99::pick(i).to_rgba()
                };
                let series = chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(1),
                    ))
                    .map_err(plot_err)?;
                if envelope {
                    series.label(label.clone()).legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                    });
                }
            }
            if envelope {
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 10))
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK.mix(0.3))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_steps_per_interval_and_a_short_tail_merges() {
        let series = Series {
            t_s: vec![0.1, 0.2, 0.21],
            bytes: vec![vec![100_000, 300_000, 310_000]],
        };
        let rates = stream_rates(&series);
        // 0..0.1: 1 MB/s; 0.1..0.21 (the 10 ms tail merged): 210 kB in 0.11 s.
        assert_eq!(rates[0].len(), 4);
        assert_eq!(rates[0][0], (0.0, 1.0));
        assert_eq!(rates[0][1], (0.1, 1.0));
        assert!((rates[0][3].1 - 0.21 / 0.11).abs() < 1e-9, "{:?}", rates[0]);
    }

    #[test]
    fn many_streams_become_an_envelope() {
        let series = Series {
            t_s: vec![0.1, 0.2],
            bytes: (0..20u64).map(|i| vec![i * 1000, i * 3000]).collect(),
        };
        let l = lines(&series);
        let names: Vec<&str> = l.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["max", "median", "min"]);
        assert_eq!(l[2].1[0], (0.0, 0.0));
        assert!((l[0].1[0].1 - 0.19).abs() < 1e-9);
    }
}
