//! Result files of a run: `.hlog`, `.hgrm`, `summary.json`, plots.

pub mod hgrm;
pub mod hlog;
pub mod plot;
pub mod summary;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

use crate::driver::RunResult;
pub use summary::Summary;

pub const HLOG_FILE: &str = "latency.hlog";
pub const HGRM_FILE: &str = "latency.hgrm";
pub const HGRM_UNCORRECTED_FILE: &str = "latency-uncorrected.hgrm";
pub const SUMMARY_FILE: &str = "summary.json";
pub const PERCENTILE_PLOT: &str = "latency-percentiles";
pub const TIMELINE_PLOT: &str = "timeline";

#[derive(Debug, Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{0}")]
    Render(String),
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    fs::write(path, bytes).map_err(|source| OutputError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub fn read_file(path: &Path) -> Result<String, OutputError> {
    fs::read_to_string(path).map_err(|source| OutputError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `loadgen-results/20261121T071200Z`: UTC, sortable.
pub fn default_out_dir(now: SystemTime) -> PathBuf {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let stamp = format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    PathBuf::from("loadgen-results").join(stamp)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes every result file of `run` into `dir` (created) and returns the summary.
pub fn write_results(
    dir: &Path,
    run: &RunResult,
    config: serde_json::Value,
) -> Result<Summary, OutputError> {
    fs::create_dir_all(dir).map_err(|source| OutputError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let summary = Summary::from_run(run, config);
    let comment = format!(
        "loadgen {} interval log, values in ns; config: {}",
        summary.loadgen_version, summary.config
    );
    let hlog = hlog::render(&run.recorder.logged, run.started_at, &comment)
        .map_err(OutputError::Render)?;
    write_file(&dir.join(HLOG_FILE), &hlog)?;
    let hgrm_text = hgrm::render(&run.recorder.corrected, hgrm::NS_PER_MS);
    write_file(&dir.join(HGRM_FILE), hgrm_text.as_bytes())?;
    let naive = hgrm::render(&run.recorder.uncorrected, hgrm::NS_PER_MS);
    write_file(&dir.join(HGRM_UNCORRECTED_FILE), naive.as_bytes())?;
    let json =
        serde_json::to_vec_pretty(&summary).map_err(|e| OutputError::Render(e.to_string()))?;
    write_file(&dir.join(SUMMARY_FILE), &json)?;
    let parsed = hgrm::parse(&hgrm_text).map_err(|e| OutputError::Render(e.to_string()))?;
    let runs = [plot::RunSeries {
        name: "run".into(),
        hgrm: &parsed,
        timeline: &summary.timeline,
    }];
    plot::write_percentile_plot(dir, PERCENTILE_PLOT, &runs).map_err(OutputError::Render)?;
    plot::write_timeline_plot(dir, TIMELINE_PLOT, &runs).map_err(OutputError::Render)?;
    Ok(summary)
}

/// A result directory read back (for `report`).
pub struct LoadedRun {
    pub dir: PathBuf,
    pub summary: Summary,
    pub hgrm: hgrm::Hgrm,
}

pub fn load_run(dir: &Path) -> Result<LoadedRun, OutputError> {
    let summary_path = dir.join(SUMMARY_FILE);
    let text = read_file(&summary_path)?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| OutputError::Parse {
        path: summary_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let hgrm_path = dir.join(HGRM_FILE);
    let hgrm = hgrm::parse(&read_file(&hgrm_path)?).map_err(|e| OutputError::Parse {
        path: hgrm_path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        summary,
        hgrm,
    })
}
