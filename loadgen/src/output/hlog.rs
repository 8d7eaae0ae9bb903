//! The HdrHistogram interval log (`.hlog`): one compressed histogram per interval, with
//! StartTime/BaseTime headers and the column legend, as HdrHistogram's log tools expect.
//! Values are nanoseconds; the Interval_Max column is in milliseconds (divisor 1e6).

use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::recorder::LoggedInterval;

pub const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";
/// Interval_Max is written in milliseconds.
pub const MAX_VALUE_DIVISOR: f64 = 1e6;

/// Renders the whole log. Interval timestamps are seconds since BaseTime (the run's start).
pub fn render(
    intervals: &[LoggedInterval],
    started_at: SystemTime,
    comment: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut deserializer = Deserializer::new();
    {
        let mut builder = IntervalLogWriterBuilder::new();
        for line in comment.lines() {
            builder.add_comment(line);
        }
        let mut writer = builder
            .with_start_time(started_at)
            .with_base_time(started_at)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut body, &mut serializer)
            .map_err(|e| format!("hlog header: {e}"))?;
        for interval in intervals {
            let h: Histogram<u64> = deserializer
                .deserialize(&mut &interval.encoded[..])
                .map_err(|e| format!("interval histogram: {e:?}"))?;
            let start = Duration::from_nanos(interval.start_ns);
            let length = Duration::from_nanos(interval.duration_ns);
            writer
                .write_histogram(&h, start, length, None)
                .map_err(|e| format!("hlog interval: {e}"))?;
        }
    }
    Ok(insert_legend(body))
}

/// The crate's writer has no legend line; the Java writer puts it after the `#` headers.
fn insert_legend(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + LEGEND.len() + 1);
    let mut inserted = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        if !inserted && !line.starts_with(b"#") {
            out.extend_from_slice(LEGEND.as_bytes());
            out.push(b'\n');
            inserted = true;
        }
        out.extend_from_slice(line);
    }
    if !inserted {
        out.extend_from_slice(LEGEND.as_bytes());
        out.push(b'\n');
    }
    out
}
