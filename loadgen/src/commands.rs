//! The commands behind the CLI, as library functions (the binary parses flags; tests call
//! these directly).

use std::path::Path;
use std::time::Instant;

use thiserror::Error;

use crate::driver::{self, DriverError, RunConfig};
use crate::op::TraceEvent;
use crate::output::{self, OutputError, Summary};
use crate::progress::Progress;
use crate::target::Target;
use crate::trace::{EventDigest, TraceError, TraceFormat, TraceReader, TraceWriter};

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// What `record` wrote.
#[derive(Debug)]
pub struct RecordReport {
    pub events: u64,
    pub digest: String,
    pub elapsed_s: f64,
}

/// Writes the first `events` events of `source` to `out`.
pub fn record(
    source: impl Iterator<Item = TraceEvent>,
    events: u64,
    out: &Path,
    format: TraceFormat,
) -> Result<RecordReport, TraceError> {
    let started = Instant::now();
    let mut writer = TraceWriter::create(out, format)?;
    let mut digest = EventDigest::default();
    for event in source.take(events as usize) {
        digest.update(&event);
        writer.write(&event)?;
    }
    let written = writer.finish()?;
    assert_eq!(written, digest.count());
    Ok(RecordReport {
        events: written,
        digest: digest.finish(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Event count, digest and skipped-line count of a trace file.
pub fn digest_file(path: &Path, skip_bad: bool) -> Result<(u64, String, u64), TraceError> {
    let mut reader = TraceReader::open(path, skip_bad)?;
    let mut digest = EventDigest::default();
    for event in reader.by_ref() {
        digest.update(&event?);
    }
    Ok((digest.count(), digest.finish(), reader.skipped()))
}

/// Runs the driver and writes the result files into `out_dir`.
pub fn run_to_dir(
    source: driver::EventSource<'_>,
    target: &mut dyn Target,
    run_config: RunConfig,
    config_json: serde_json::Value,
    out_dir: &Path,
    progress: &Progress,
) -> Result<Summary, CommandError> {
    let run = driver::run(source, target, run_config, progress)?;
    Ok(output::write_results(out_dir, &run, config_json)?)
}
