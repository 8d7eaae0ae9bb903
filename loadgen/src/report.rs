//! `loadgen report DIR...`: overlays runs' percentile curves and timelines and prints a
//! comparison table, for capacity planners comparing configurations.

use std::fmt::Write as _;
use std::path::Path;

use crate::output::{self, plot, LoadedRun, OutputError};

/// Most runs in one report: the plot palette stays readable and the table fits a screen.
pub const REPORT_RUNS_MAX: usize = 16;
pub const REPORT_FILE: &str = "report.md";

/// A run's short name: its directory name, numbered when two runs share one.
fn run_names(runs: &[LoadedRun]) -> Vec<String> {
    let names: Vec<String> = runs
        .iter()
        .map(|r| match r.dir.file_name() {
            Some(n) => n.to_string_lossy().to_string(),
            None => r.dir.display().to_string(),
        })
        .collect();
    let unique = (1..names.len()).all(|i| !names[..i].contains(&names[i]));
    if unique {
        return names;
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}:{n}", i + 1))
        .collect()
}

/// The comparison table (markdown, readable as plain text).
pub fn comparison_table(runs: &[LoadedRun], names: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| run | target | offered ev/s | committed ev/s | rejected | failed | p50 ms | p90 ms | p99 ms | p99.9 ms | p99.99 ms | max ms |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (run, name) in runs.iter().zip(names) {
        let r = &run.summary.results;
        let l = &r.latency_ms;
        let _ = writeln!(
            s,
            "| {name} | {} | {:.0} | {:.0} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.target,
            r.offered_events_per_s,
            r.committed_events_per_s,
            r.totals.events_rejected,
            r.totals.requests_failed,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.p99_99,
            l.max
        );
    }
    s
}

/// Loads the runs, writes plots and `report.md` into `out`, returns the table.
pub fn report(dirs: &[&Path], out: &Path) -> Result<String, OutputError> {
    if dirs.is_empty() || dirs.len() > REPORT_RUNS_MAX {
        return Err(OutputError::Render(format!(
            "report takes 1..={REPORT_RUNS_MAX} result directories"
        )));
    }
    let runs = dirs
        .iter()
        .map(|d| output::load_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    let names = run_names(&runs);
    std::fs::create_dir_all(out).map_err(|source| OutputError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let series: Vec<plot::RunSeries> = runs
        .iter()
        .zip(&names)
        .map(|(r, n)| plot::RunSeries {
            name: n.clone(),
            hgrm: &r.hgrm,
            timeline: &r.summary.timeline,
        })
        .collect();
    plot::write_percentile_plot(out, output::PERCENTILE_PLOT, &series)
        .map_err(OutputError::Render)?;
    plot::write_timeline_plot(out, output::TIMELINE_PLOT, &series).map_err(OutputError::Render)?;
    let table = comparison_table(&runs, &names);
    let mut md = String::from("# loadgen report\n\n");
    for (run, name) in runs.iter().zip(&names) {
        let _ = writeln!(
            md,
            "- **{name}**: `{}` — config `{}`",
            run.dir.display(),
            run.summary.config
        );
    }
    let _ = writeln!(
        md,
        "\nLatency is CO-corrected (from the intended send time).\n\n{table}"
    );
    let _ = writeln!(
        md,
        "\n![percentiles]({}.svg)\n\n![timeline]({}.svg)",
        output::PERCENTILE_PLOT,
        output::TIMELINE_PLOT
    );
    output::write_file(&out.join(REPORT_FILE), md.as_bytes())?;
    Ok(table)
}
