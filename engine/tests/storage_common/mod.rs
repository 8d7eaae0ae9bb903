//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::Path;

use engine::storage::{
    BlockHash, BlockLog, LogConfig, StorageError, Ticket, WriteBackend, SEGMENT_HEADER_BYTES,
};

pub const SEGMENT_BYTES_TEST: u64 = 1 << 20;

pub fn config(backend: WriteBackend) -> LogConfig {
    LogConfig {
        write_backend: backend,
        ..LogConfig::for_tests(SEGMENT_BYTES_TEST)
    }
}

/// Deterministic payload for a height (and a run id, so rewrites differ).
pub fn payload(height: u64, run: u64, len: usize) -> Vec<u8> {
    let seed = blake3::hash(&[height.to_le_bytes(), run.to_le_bytes()].concat());
    seed.as_bytes().iter().cycle().take(len).copied().collect()
}

/// Bytes a frame with `len` payload bytes takes on disk (unencrypted).
pub fn frame_len(len: usize) -> usize {
    (80 + len).div_ceil(8) * 8
}

/// Appends heights `from..from+count` with `len`-byte payloads; waits on each ticket if asked.
pub fn append_run(
    log: &mut BlockLog,
    from: u64,
    count: u64,
    len: usize,
    wait_each: bool,
) -> Result<Vec<Ticket>, StorageError> {
    let mut parent: BlockHash = log.last().map_or([0; 32], |(_, h)| h);
    let mut tickets = Vec::new();
    for height in from..from + count {
        let ticket = log.append(height, &parent, &payload(height, 0, len))?;
        if wait_each {
            ticket.wait()?;
        }
        parent = ticket.hash();
        tickets.push(ticket);
    }
    Ok(tickets)
}

/// Offset of frame `index` (0-based) of segment 0 when every payload has `len` bytes.
pub fn frame_offset(index: usize, len: usize) -> u64 {
    (SEGMENT_HEADER_BYTES + index * frame_len(len)) as u64
}

pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).expect("read byte");
    b[0] ^= 0x5A;
    file.write_all_at(&b, offset).expect("write byte");
}

pub fn segment_path(dir: &Path, index: u64) -> std::path::PathBuf {
    dir.join(format!("{index:010}.seg"))
}
