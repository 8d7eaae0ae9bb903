//! Plots (SVG and PNG): latency by percentile on a log 1/(1-p) axis, like the HdrHistogram
//! plotter, and throughput and latency over time. Several runs overlay for comparison.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::hgrm::Hgrm;
use crate::recorder::IntervalStats;

pub const PLOT_SIZE: (u32, u32) = (1200, 700);
pub const TIMELINE_SIZE: (u32, u32) = (1200, 900);
/// Furthest the percentile axis goes: 1/(1-p) = 10^6, p = 99.9999%.
pub const PERCENTILE_AXIS_MAX: f64 = 1e6;

/// One run's name and its data.
pub struct RunSeries<'a> {
    pub name: String,
    pub hgrm: &'a Hgrm,
    pub timeline: &'a [IntervalStats],
}

/// Writes `<stem>.svg` and `<stem>.png`.
fn svg_and_png(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    draw_svg: impl Fn(DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
    draw_png: impl Fn(DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
) -> Result<(), String> {
    let svg = dir.join(format!("{stem}.svg"));
    draw_svg(SVGBackend::new(&svg, size).into_drawing_area())?;
    let png = dir.join(format!("{stem}.png"));
    draw_png(BitMapBackend::new(&png, size).into_drawing_area())
}

pub fn write_percentile_plot(dir: &Path, stem: &str, runs: &[RunSeries]) -> Result<(), String> {
    svg_and_png(
        dir,
        stem,
        PLOT_SIZE,
        |a| draw_percentiles(a, runs),
        |a| draw_percentiles(a, runs),
    )
}

pub fn write_timeline_plot(dir: &Path, stem: &str, runs: &[RunSeries]) -> Result<(), String> {
    svg_and_png(
        dir,
        stem,
        TIMELINE_SIZE,
        |a| draw_timeline(a, runs),
        |a| draw_timeline(a, runs),
    )
}

/// "0%", "90%", "99%", "99.9%"... for an axis value 1/(1-p).
fn percentile_label(inverse: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / inverse.max(1.0));
    let text = format!("{p:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn percentile_points(hgrm: &Hgrm) -> Vec<(f64, f64)> {
    hgrm.rows
        .iter()
        .filter(|r| r.percentile < 1.0)
        .map(|r| {
            (
                (1.0 / (1.0 - r.percentile)).min(PERCENTILE_AXIS_MAX),
                r.value,
            )
        })
        .collect()
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

fn draw_percentiles<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunSeries],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let series: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| percentile_points(r.hgrm)).collect();
    let pts = series.iter().flatten();
    let x_max = pts.clone().map(|p| p.0).fold(10.0, f64::max);
    let x_max = 10f64.powf(x_max.log10().ceil()).min(PERCENTILE_AXIS_MAX);
    let y_max = runs.iter().map(|r| r.hgrm.max).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile (CO-corrected)", ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(err)?;
    for (i, (run, points)) in runs.iter().zip(series).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(run.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn draw_timeline<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunSeries],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((2, 1));
    let t_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|i| i.start_s + i.duration_s))
        .fold(1.0, f64::max);
    let throughput = |i: &IntervalStats| i.events_committed as f64 / i.duration_s.max(1e-9);
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.timeline.iter().map(|i| (mid(i), throughput(i))).collect(),
            )
        })
        .collect();
    draw_over_time(
        &panels[0],
        "Throughput over time",
        "events committed / s",
        t_max,
        &series,
    )?;
    let mut latency = Vec::new();
    for r in runs {
        // An interval with no completion has no latency: leave it out rather than draw a 0.
        let done = || r.timeline.iter().filter(|i| i.requests_done > 0);
        let p99 = done().map(|i| (mid(i), i.latency_ms_p99)).collect();
        latency.push((format!("{} p99", r.name), p99));
        if runs.len() == 1 {
            let p50 = done().map(|i| (mid(i), i.latency_ms_p50)).collect();
            let max = done().map(|i| (mid(i), i.latency_ms_max)).collect();
            latency.push((format!("{} p50", r.name), p50));
            latency.push((format!("{} max", r.name), max));
        }
    }
    draw_over_time(
        &panels[1],
        "Latency over time (CO-corrected, per interval)",
        "latency (ms)",
        t_max,
        &latency,
    )?;
    root.present().map_err(err)
}

/// Intervals are drawn at their midpoint.
fn mid(i: &IntervalStats) -> f64 {
    i.start_s + i.duration_s / 2.0
}

/// 1234567.0 -> "1.23M": axis labels stay short.
fn short_number(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn draw_over_time<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    t_max: f64,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.001, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .y_label_formatter(&short_number)
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
