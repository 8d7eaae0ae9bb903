//! The percentile distribution text (`.hgrm`) in HdrHistogram's `outputPercentileDistribution`
//! format, which the public HdrHistogram plotter reads: values scaled (ns -> ms), five ticks
//! per half distance, and the Mean/Max/Buckets footer.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use thiserror::Error;

/// Percentile ticks per half distance, as HdrHistogram's default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Nanoseconds per output unit: values are written in milliseconds.
pub const NS_PER_MS: f64 = 1e6;

pub const HEADER: &str = "       Value   Percentile TotalCount 1/(1-Percentile)";

/// HdrHistogram's sub-bucket count for a significant-figure setting (the crate keeps it
/// private): the power of two at or above 2 * 10^sigfig.
pub fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

/// Renders the distribution. `scale` divides every value (1e6: ns -> ms).
pub fn render(h: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(HEADER);
    out.push_str("\n\n");
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let inverse = 1.0 / (1.0 - q);
                let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10} {inverse:14.2}");
            } else {
                let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let max = h.max() as f64 / scale;
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    );
    let subs = sub_bucket_count(h.sigfig());
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {subs:12}]",
        h.buckets()
    );
    out
}

/// One row of a parsed `.hgrm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HgrmRow {
    pub value: f64,
    pub percentile: f64,
    pub total_count: u64,
}

/// A parsed `.hgrm` file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hgrm {
    pub rows: Vec<HgrmRow>,
    pub mean: f64,
    pub stdev: f64,
    pub max: f64,
    pub total_count: u64,
    pub buckets: u64,
    pub sub_buckets: u64,
}

#[derive(Debug, Error)]
#[error("line {line}: {reason}")]
pub struct HgrmError {
    pub line: usize,
    pub reason: String,
}

impl Hgrm {
    /// Value at the first row whose percentile reaches `q` (as the plotter reads it).
    pub fn value_at(&self, q: f64) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.percentile >= q)
            .map(|r| r.value)
    }
}

/// `#[A = x, B = y]` -> [(A, x), (B, y)]
fn footer_pairs(text: &str) -> Vec<(String, String)> {
    let inner = text.trim_start_matches("#[").trim_end_matches(']');
    inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn parse_footer(hgrm: &mut Hgrm, text: &str, line: usize) -> Result<(), HgrmError> {
    for (key, value) in footer_pairs(text) {
        let bad = || HgrmError {
            line,
            reason: format!("{key}: '{value}' is not a number"),
        };
        match key.as_str() {
            "Mean" => hgrm.mean = value.parse().map_err(|_| bad())?,
            "StdDeviation" => hgrm.stdev = value.parse().map_err(|_| bad())?,
            "Max" => hgrm.max = value.parse().map_err(|_| bad())?,
            "Total count" => hgrm.total_count = value.parse().map_err(|_| bad())?,
            "Buckets" => hgrm.buckets = value.parse().map_err(|_| bad())?,
            "SubBuckets" => hgrm.sub_buckets = value.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_row(text: &str, line: usize) -> Result<HgrmRow, HgrmError> {
    let bad = |reason: String| HgrmError { line, reason };
    let cells: Vec<&str> = text.split_whitespace().collect();
    if !(3..=4).contains(&cells.len()) {
        return Err(bad(format!(
            "expected 3 or 4 columns, found {}",
            cells.len()
        )));
    }
    let value = cells[0]
        .parse()
        .map_err(|_| bad(format!("value '{}'", cells[0])))?;
    let percentile = cells[1]
        .parse()
        .map_err(|_| bad(format!("percentile '{}'", cells[1])))?;
    let total_count = cells[2]
        .parse()
        .map_err(|_| bad(format!("count '{}'", cells[2])))?;
    Ok(HgrmRow {
        value,
        percentile,
        total_count,
    })
}

/// Parses a `.hgrm` text: header, rows, footer.
pub fn parse(text: &str) -> Result<Hgrm, HgrmError> {
    let mut hgrm = Hgrm::default();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("#[") {
            parse_footer(&mut hgrm, t, line)?;
        } else if t.starts_with("Value") {
            header_seen = true;
        } else if !header_seen {
            return Err(HgrmError {
                line,
                reason: "row before the Value header".into(),
            });
        } else {
            hgrm.rows.push(parse_row(t, line)?);
        }
    }
    if !header_seen {
        return Err(HgrmError {
            line: 1,
            reason: "no 'Value Percentile' header".into(),
        });
    }
    Ok(hgrm)
}
