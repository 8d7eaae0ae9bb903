//! `reckon demo` files: `latency.hgrm` (HdrHistogram percentile distribution, ms),
//! `summary.json`, and `latency.png` / `latency.svg` (latency by percentile).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

const NS_PER_MS: f64 = 1e6;
const TICKS_PER_HALF_DISTANCE: u32 = 5;
const PLOT_SIZE: (u32, u32) = (1200, 700);
/// Furthest the percentile axis goes: 1/(1-p) = 10^6.
const PERCENTILE_AXIS_MAX: f64 = 1e6;

/// HdrHistogram's `outputPercentileDistribution` text, values in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value   Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / NS_PER_MS;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let inverse = 1.0 / (1.0 - q);
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {inverse:14.2}");
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / NS_PER_MS, h.stdev() / NS_PER_MS)
    };
    let max = h.max() as f64 / NS_PER_MS;
    let subs = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {subs:12}]",
        h.buckets()
    );
    out
}

/// (1/(1-p), latency ms) points of the distribution.
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            let inverse = 1.0 / (1.0 - v.quantile_iterated_to());
            (
                inverse.min(PERCENTILE_AXIS_MAX),
                v.value_iterated_to() as f64 / NS_PER_MS,
            )
        })
        .collect()
}

fn percentile_label(inverse: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / inverse.max(1.0));
    let text = format!("{p:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, h: &Histogram<u64>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let pts = points(h);
    let x_max = pts.iter().map(|p| p.0).fold(10.0, f64::max);
    let x_max = 10f64.powf(x_max.log10().ceil()).min(PERCENTILE_AXIS_MAX);
    let y_max = (h.max() as f64 / NS_PER_MS).max(0.001) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "reckon demo: submit→committed latency by percentile",
            ("sans-serif", 26),
        )
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
    chart
        .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes latency.hgrm, latency.svg, latency.png and summary.json into `dir`.
pub fn write_all(
    dir: &Path,
    h: &Histogram<u64>,
    summary: &serde_json::Value,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("latency.hgrm", hgrm(h))?;
    let json = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    write("summary.json", json + "\n")?;
    draw(
        SVGBackend::new(&dir.join("latency.svg"), PLOT_SIZE).into_drawing_area(),
        h,
    )?;
    draw(
        BitMapBackend::new(&dir.join("latency.png"), PLOT_SIZE).into_drawing_area(),
        h,
    )
}
