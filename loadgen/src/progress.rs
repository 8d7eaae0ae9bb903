//! The live progress line on stderr (hidden when stderr is not a terminal).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the line is redrawn.
pub const PROGRESS_REFRESH: Duration = Duration::from_millis(200);

pub struct Progress {
    bar: ProgressBar,
}

/// What the progress line shows.
pub struct ProgressLine {
    pub events_per_s: f64,
    pub in_flight: usize,
    pub events_committed: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

impl Progress {
    /// A visible line if stderr is a terminal and `enabled`, else a hidden one.
    pub fn new(enabled: bool) -> Progress {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
            bar.set_style(style);
        }
        Progress { bar }
    }

    pub fn update(&self, line: &ProgressLine) {
        self.bar.set_message(format!(
            "{:>12.0} ev/s | in flight {:>5} | committed {:>11} | errors {:>6} | p99 {:>9.3} ms",
            line.events_per_s, line.in_flight, line.events_committed, line.errors, line.p99_ms
        ));
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
