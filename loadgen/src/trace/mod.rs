//! Trace files: CSV and compact binary forms of a `TraceEvent` stream, conversion, digest.

pub mod binary;
pub mod csv;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::Path;

use thiserror::Error;

use crate::op::TraceEvent;

/// Read and write buffers: large enough that a 2.2M-event trace is a few thousand syscalls.
const TRACE_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("line {line}: {reason}")]
    BadLine { line: u64, reason: String },
    #[error("record {index}: {reason}")]
    BadRecord { index: u64, reason: String },
    #[error("bad binary trace header: {0}")]
    BadHeader(String),
    #[error("{path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    Csv,
    Bin,
}

impl TraceFormat {
    /// `.bin` is binary; anything else is CSV.
    pub fn from_path(path: &Path) -> TraceFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("bin") => TraceFormat::Bin,
            _ => TraceFormat::Csv,
        }
    }

    pub fn parse(s: &str) -> Option<TraceFormat> {
        match s {
            "csv" => Some(TraceFormat::Csv),
            "bin" => Some(TraceFormat::Bin),
            _ => None,
        }
    }
}

/// A trace reader over either form; yields events in file order.
pub enum TraceReader {
    Csv(csv::CsvReader<Box<dyn BufRead + Send>>),
    Bin(binary::BinReader<Box<dyn BufRead + Send>>),
}

impl TraceReader {
    /// Opens `path`; the form is sniffed from the first bytes (the binary magic), not the name.
    pub fn open(path: &Path, skip_bad: bool) -> Result<TraceReader, TraceError> {
        let open_err = |source| TraceError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let mut input = BufReader::with_capacity(TRACE_BUFFER_BYTES, file);
        let binary = head_is_binary(path, input.fill_buf()?);
        let input: Box<dyn BufRead + Send> = Box::new(input);
        Self::from_reader(input, skip_bad, binary)
    }

    pub fn from_reader(
        input: Box<dyn BufRead + Send>,
        skip_bad: bool,
        binary: bool,
    ) -> Result<TraceReader, TraceError> {
        if binary {
            Ok(TraceReader::Bin(binary::BinReader::new(input, skip_bad)?))
        } else {
            Ok(TraceReader::Csv(csv::CsvReader::new(input, skip_bad)))
        }
    }

    /// Bad lines (or records) skipped so far under `--skip-bad-lines`.
    pub fn skipped(&self) -> u64 {
        match self {
            TraceReader::Csv(r) => r.skipped(),
            TraceReader::Bin(r) => r.skipped(),
        }
    }
}

fn head_is_binary(path: &Path, head: &[u8]) -> bool {
    head.starts_with(&binary::MAGIC)
        || (head.len() < binary::MAGIC.len() && TraceFormat::from_path(path) == TraceFormat::Bin)
}

impl Iterator for TraceReader {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            TraceReader::Csv(r) => r.next(),
            TraceReader::Bin(r) => r.next(),
        }
    }
}

/// A trace writer over either form.
pub enum TraceWriter {
    Csv(csv::CsvWriter<BufWriter<File>>),
    Bin(binary::BinWriter<BufWriter<File>>),
}

impl TraceWriter {
    pub fn create(path: &Path, format: TraceFormat) -> Result<TraceWriter, TraceError> {
        let open_err = |source| TraceError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = File::create(path).map_err(open_err)?;
        let out = BufWriter::with_capacity(TRACE_BUFFER_BYTES, file);
        Ok(match format {
            TraceFormat::Csv => TraceWriter::Csv(csv::CsvWriter::new(out)?),
            TraceFormat::Bin => TraceWriter::Bin(binary::BinWriter::new(out)?),
        })
    }

    pub fn write(&mut self, event: &TraceEvent) -> Result<(), TraceError> {
        match self {
            TraceWriter::Csv(w) => w.write(event)?,
            TraceWriter::Bin(w) => w.write(event)?,
        }
        Ok(())
    }

    /// Flushes and returns the number of events written.
    pub fn finish(self) -> Result<u64, TraceError> {
        Ok(match self {
            TraceWriter::Csv(w) => w.finish()?,
            TraceWriter::Bin(w) => w.finish()?,
        })
    }
}

/// Digest of an event stream: BLAKE3 over each event's 64-byte binary record, in order. Two
/// streams with the same digest are the same events in the same order, whatever file form.
/// Records are buffered so BLAKE3 hashes many chunks at once (SIMD) instead of one by one;
/// the digest does not depend on the buffering.
pub struct EventDigest {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
    count: u64,
}

/// Records buffered before hashing: 64 KiB.
const DIGEST_BUFFER_BYTES: usize = 1 << 16;

impl Default for EventDigest {
    fn default() -> Self {
        EventDigest {
            hasher: blake3::Hasher::new(),
            buffer: Vec::with_capacity(DIGEST_BUFFER_BYTES),
            count: 0,
        }
    }
}

impl EventDigest {
    pub fn update(&mut self, event: &TraceEvent) {
        self.buffer.extend_from_slice(&binary::encode_record(event));
        if self.buffer.len() >= DIGEST_BUFFER_BYTES {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Hex digest.
    pub fn finish(&self) -> String {
        let mut hasher = self.hasher.clone();
        hasher.update(&self.buffer);
        hasher.finalize().to_hex().to_string()
    }

    pub fn of<'a>(events: impl IntoIterator<Item = &'a TraceEvent>) -> String {
        let mut d = EventDigest::default();
        events.into_iter().for_each(|e| d.update(e));
        d.finish()
    }
}

/// Summary of a `convert`: events written, bad lines skipped, digest of what was written.
#[derive(Debug)]
pub struct ConvertReport {
    pub events: u64,
    pub skipped: u64,
    pub digest: String,
}

/// Copies a trace from one form to the other (or the same form, which normalises it).
pub fn convert(
    input: &Path,
    output: &Path,
    format: TraceFormat,
    skip_bad: bool,
) -> Result<ConvertReport, TraceError> {
    let mut reader = TraceReader::open(input, skip_bad)?;
    let mut writer = TraceWriter::create(output, format)?;
    let mut digest = EventDigest::default();
    for event in reader.by_ref() {
        let event = event?;
        digest.update(&event);
        writer.write(&event)?;
    }
    let events = writer.finish()?;
    assert_eq!(events, digest.count(), "every event read is written once");
    Ok(ConvertReport {
        events,
        skipped: reader.skipped(),
        digest: digest.finish(),
    })
}

/// Reads a whole trace into memory (tests, small traces). Large replays stream instead.
pub fn read_all(path: &Path) -> Result<Vec<TraceEvent>, TraceError> {
    TraceReader::open(path, false)?.collect()
}

/// Reads a trace from any reader (tests).
pub fn read_from(
    input: impl Read + Send + 'static,
    binary: bool,
) -> Result<Vec<TraceEvent>, TraceError> {
    let input: Box<dyn BufRead + Send> = Box::new(BufReader::new(input));
    TraceReader::from_reader(input, false, binary)?.collect()
}
