//! Opening a log directory: list segments, validate headers, scan frames, classify a bad frame as
//! a torn tail (zeroed and reported) or acknowledged-data corruption (refuse to open).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::config::{LogConfig, SEGMENT_BYTES_MAX};
use super::crypt::{FrameCipher, CIPHER_NONE};
use super::error::StorageError;
use super::frame;
use super::frame::BlockHash;
use super::scan::{self, After, ScanInput, ScanOutput};
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX, TEMP_SUFFIX};

/// Segments scanned in parallel on open (each scan is independent of the others).
const RECOVERY_THREADS_MAX: usize = 4;
/// Zeroing a torn tail writes this many bytes per call.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// What recovery removed from the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    /// Height the first dropped frame would have had.
    pub height_first: u64,
    /// Highest height of an intact frame header inside the dropped bytes, if any.
    pub height_last_seen: Option<u64>,
    pub reason: String,
}

/// What `BlockLog::open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub first_height: Option<u64>,
    pub last_height: Option<u64>,
    /// The torn tail that was zeroed, if any.
    pub dropped: Option<DroppedTail>,
    /// Leftover temp files from an interrupted segment creation or atomic write, removed.
    pub temp_files_removed: Vec<PathBuf>,
    /// An empty first segment (crash right after creating it), removed.
    pub empty_segment_removed: bool,
}

/// An open segment: its file, read-only map and the offsets of its frames (the height index).
pub(crate) struct Segment {
    pub index: u64,
    pub first_height: u64,
    pub file: Arc<File>,
    /// The descriptor the writer uses: `file`, or an O_DIRECT one for the tail segment.
    pub write_file: Arc<File>,
    pub direct: bool,
    pub map: Mmap,
    pub offsets: Vec<u32>,
    /// Offset where the next frame goes.
    pub end: u64,
    pub path: PathBuf,
}

impl Segment {
    /// Switches the writer to an O_DIRECT descriptor when asked for and supported.
    pub(crate) fn attach_direct(&mut self, direct_io: bool) -> Result<(), StorageError> {
        if direct_io && !self.direct {
            if let Some(f) = segment::open_direct(&self.path)? {
                self.write_file = Arc::new(f);
                self.direct = true;
            }
        }
        Ok(())
    }
}

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub last: Option<(u64, BlockHash)>,
    pub report: RecoveryReport,
}

/// Lists segment indices (sorted, refusing a gap in the sequence) and the temp files a crash
/// left. Shared by recovery (which removes the temp files) and the read-only `LogReader`.
pub(super) fn scan_dir(dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>), StorageError> {
    let mut indices = Vec::new();
    let mut temp_files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TEMP_SUFFIX) {
            temp_files.push(entry.path());
        } else if let Some(index) = segment::parse_segment_name(&name) {
            indices.push(index);
        } else if name.ends_with(SEGMENT_SUFFIX) {
            return Err(StorageError::foreign(
                &entry.path(),
                "segment-like name that is not NNNNNNNNNN.seg",
            ));
        }
    }
    indices.sort_unstable();
    for pair in indices.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = dir.join(segment::segment_name(pair[0] + 1));
            return Err(StorageError::foreign(
                &missing,
                "segment missing from the sequence",
            ));
        }
    }
    Ok((indices, temp_files))
}

/// Lists segment indices (sorted) and removes temp files left by a crash.
fn list_dir(dir: &Path, report: &mut RecoveryReport) -> Result<Vec<u64>, StorageError> {
    let (indices, temp_files) = scan_dir(dir)?;
    for path in temp_files {
        std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        report.temp_files_removed.push(path);
    }
    Ok(indices)
}

pub(super) fn check_header(
    h: &SegmentHeader,
    index: u64,
    (path, file_bytes): (&Path, u64),
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Result<(), StorageError> {
    if h.segment_bytes != file_bytes || file_bytes > SEGMENT_BYTES_MAX {
        let why = format!(
            "file is {file_bytes} bytes, header says {}",
            h.segment_bytes
        );
        return Err(StorageError::foreign(path, why));
    }
    if h.segment_index != index {
        return Err(StorageError::foreign(
            path,
            format!("header says segment {}", h.segment_index),
        ));
    }
    if h.segment_bytes != config.segment_bytes {
        // Segments keep their own size: a config change applies to new segments only.
        tracing::info!(path = %path.display(), bytes = h.segment_bytes, "segment size differs from config");
    }
    let want = cipher.map_or(CIPHER_NONE, |c| c.id());
    if h.cipher != want {
        let reason = if want == CIPHER_NONE {
            format!(
                "{} is encrypted ({}) but no storage key was given (the node config's \
                 files.storage_key, or --storage-key)",
                path.display(),
                cipher_name(h.cipher)
            )
        } else {
            format!(
                "{} is {} but the config asks for {}",
                path.display(),
                cipher_name(h.cipher),
                cipher_name(want)
            )
        };
        return Err(StorageError::Config(reason));
    }
    if let Some(c) = cipher {
        if c.key_check() != h.key_check {
            let path = config
                .encryption
                .as_ref()
                .map(|e| e.key_file.clone())
                .unwrap_or_default();
            return Err(StorageError::KeyFile {
                path,
                reason: "wrong key for this log".into(),
            });
        }
    }
    Ok(())
}

/// An operator's name for a segment header's cipher id.
fn cipher_name(id: u32) -> String {
    match id {
        CIPHER_NONE => "not encrypted".into(),
        1 => "encrypted with XChaCha20-Poly1305".into(),
        2 => "encrypted with AES-256-GCM".into(),
        other => format!("encrypted with unknown cipher id {other}"),
    }
}

/// The window after a bad frame that can hold frames of its own group commit.
fn window(config: &LogConfig) -> usize {
    config.batch_bytes_max + 2 * config.frame_bytes_max()
}

/// Opens every segment file and checks its header.
fn open_all(
    dir: &Path,
    indices: &[u64],
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Result<Vec<Segment>, StorageError> {
    let mut segments = Vec::with_capacity(indices.len());
    for &index in indices {
        let path = dir.join(segment::segment_name(index));
        let (file, map) = segment::open(&path)?;
        let header = SegmentHeader::decode(&map, &path)?;
        check_header(&header, index, (&path, map.len() as u64), config, cipher)?;
        let file = Arc::new(file);
        segments.push(Segment {
            index,
            first_height: header.first_height,
            write_file: file.clone(),
            direct: false,
            file,
            map,
            offsets: Vec::new(),
            end: SEGMENT_HEADER_BYTES as u64,
            path,
        });
    }
    Ok(segments)
}

/// Opens every segment, validates and scans it; zeroes a torn tail.
pub(crate) fn recover(
    dir: &Path,
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Result<Recovered, StorageError> {
    let mut report = RecoveryReport::default();
    let indices = list_dir(dir, &mut report)?;
    let mut segments = open_all(dir, &indices, config, cipher)?;
    let analyses = analyze_all(&segments, config, cipher);
    assert_eq!(analyses.len(), segments.len());
    let mut last: Option<(u64, BlockHash)> = None;
    let count = segments.len();
    for (position, analysis) in analyses.into_iter().enumerate() {
        let seg = &mut segments[position];
        let is_tail = position + 1 == count;
        if let Some((h, _)) = last {
            if seg.first_height != h + 1 {
                let why = format!("first height {} does not follow {h}", seg.first_height);
                return Err(StorageError::foreign(&seg.path, why));
            }
        }
        let analysis = check_link(seg, analysis, is_tail, last, config, cipher)?;
        apply(seg, analysis, is_tail, cipher, &mut last, &mut report)?;
    }
    if segments.len() == 1 && segments[0].offsets.is_empty() {
        std::fs::remove_file(&segments[0].path)
            .map_err(|e| StorageError::io(&segments[0].path, e))?;
        segment::sync_dir(dir)?;
        segments.clear();
        report.empty_segment_removed = true;
    }
    report.segments = segments.len();
    report.first_height = segments
        .first()
        .filter(|s| !s.offsets.is_empty())
        .map(|s| s.first_height);
    report.last_height = last.map(|(h, _)| h);
    Ok(Recovered {
        segments,
        last,
        report,
    })
}

/// What the scan of one segment found.
struct Analysis {
    out: ScanOutput,
    after: After,
}

/// Scans one segment (pure: reads the map only). The tail's hash chain is verified from its
/// first frame on; the link to the previous segment is checked afterwards by `check_link`.
fn analyze(
    seg: &Segment,
    is_tail: bool,
    prev_hash: Option<BlockHash>,
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Analysis {
    let input = ScanInput {
        data: &seg.map,
        start: SEGMENT_HEADER_BYTES,
        first_height: seg.first_height,
        prev_hash,
        verify_checksum: is_tail || config.verify_sealed_checksums,
        verify_chain: is_tail,
        cipher,
    };
    // Recovery reads the segment front to back: ask for aggressive readahead, then go back to
    // normal for reads by height. Advice is a hint; failures are harmless.
    let _ = seg.map.advise(memmap2::Advice::Sequential);
    let out = scan::scan(&input);
    let _ = seg.map.advise(memmap2::Advice::Normal);
    let after = scan::after_stop(&seg.map, &out.stop, window(config));
    Analysis { out, after }
}

/// Scans all segments, up to `RECOVERY_THREADS_MAX` at a time (scans are independent).
fn analyze_all(
    segments: &[Segment],
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Vec<Analysis> {
    let count = segments.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, RECOVERY_THREADS_MAX)
        .min(count.max(1));
    let mut results: Vec<Option<Analysis>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    (first..count)
                        .step_by(threads)
                        .map(|i| {
                            (
                                i,
                                analyze(&segments[i], i + 1 == count, None, config, cipher),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, analysis) in worker.join().expect("recovery scan thread") {
                results[i] = Some(analysis);
            }
        }
    });
    results
        .into_iter()
        .map(|a| a.expect("every segment is analysed"))
        .collect()
}

/// Checks that a segment's first frame names the previous segment's last block as its parent.
/// A sealed segment with a broken link refuses to open; the tail is rescanned with the link.
fn check_link(
    seg: &Segment,
    analysis: Analysis,
    is_tail: bool,
    last: Option<(u64, BlockHash)>,
    config: &LogConfig,
    cipher: Option<&FrameCipher>,
) -> Result<Analysis, StorageError> {
    let (Some((_, prev_hash)), Some(&first)) = (last, analysis.out.offsets.first()) else {
        return Ok(analysis);
    };
    let parent = frame::header(&seg.map[first as usize..]).map(|h| h.parent_hash);
    if parent == Ok(prev_hash) {
        return Ok(analysis);
    }
    if is_tail {
        return Ok(analyze(seg, true, Some(prev_hash), config, cipher));
    }
    Err(StorageError::MidLogCorruption {
        segment: seg.index,
        offset: first as u64,
        height: seg.first_height,
        reason: "parent hash does not match the last block of the previous segment".into(),
    })
}

/// Acts on a segment's analysis: refuse, zero a torn tail, or accept; records its last block.
fn apply(
    seg: &mut Segment,
    analysis: Analysis,
    is_tail: bool,
    cipher: Option<&FrameCipher>,
    last: &mut Option<(u64, BlockHash)>,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let Analysis { out, after } = analysis;
    let stop = &out.stop;
    let corrupt = |reason: String| StorageError::MidLogCorruption {
        segment: seg.index,
        offset: stop.offset as u64,
        height: stop.height,
        reason,
    };
    match after {
        After::Clean => {}
        After::LaterBatch { offset, height } => {
            let why = format!(
                "{} (a valid later group commit holds height {height} at offset {offset})",
                stop.reason
            );
            return Err(corrupt(why));
        }
        After::Torn { .. } if !is_tail => {
            return Err(corrupt(format!("{} in a sealed segment", stop.reason)));
        }
        After::Torn { bytes, height_max } => {
            zero_range(&seg.file, stop.offset as u64, bytes, &seg.path)?;
            let dropped = DroppedTail {
                segment: seg.index,
                offset: stop.offset as u64,
                bytes: bytes as u64,
                height_first: stop.height,
                height_last_seen: height_max,
                reason: stop.reason.clone(),
            };
            tracing::warn!(?dropped, "block log: truncated a torn tail");
            report.dropped = Some(dropped);
        }
    }
    if let Some((height, hash)) = out.last {
        let hash = match hash {
            Some(hash) => hash,
            None => {
                let at = *out.offsets.last().expect("a last frame has an offset") as usize;
                scan::frame_hash(&seg.map, at, cipher).map_err(corrupt)?
            }
        };
        *last = Some((height, hash));
    }
    seg.end = out.end as u64;
    seg.offsets = out.offsets;
    Ok(())
}

/// Overwrites `[offset, offset + bytes)` with zeros and makes it durable.
fn zero_range(file: &File, offset: u64, bytes: usize, path: &Path) -> Result<(), StorageError> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(bytes)];
    let mut done = 0usize;
    while done < bytes {
        let n = (bytes - done).min(zeros.len());
        file.write_all_at(&zeros[..n], offset + done as u64)
            .map_err(|e| StorageError::io(path, e))?;
        done += n;
    }
    file.sync_data().map_err(|e| StorageError::io(path, e))
}
