//! `bench-harness limits`: the machine's physical limits that benchmarks compare against.
//!
//! Each probe is a `pub fn` so a benchmark can measure its own limit in the same run.
//! Sections: disk (storage), crypto (pairings), hashing, loopback TCP and memory first touch.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes per write in the sequential-write probes.
pub const SEQ_WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Alignment O_DIRECT needs for buffers, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per write in the sync-latency probe.
pub const SYNC_WRITE_BYTES: usize = 4096;

#[derive(clap::Args)]
pub struct Args {
    /// Directory on the disk to probe (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the sequential-write probe file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub disk_mib: u64,
    /// Number of 4 KiB write + fdatasync samples.
    #[arg(long, default_value_t = 500)]
    pub sync_samples: usize,
    /// Distinct signed messages in the single-core pairing probe.
    #[arg(long, default_value_t = 512)]
    pub sigs: usize,
    /// MiB sent through one loopback TCP stream.
    #[arg(long, default_value_t = 1024)]
    pub tcp_mib: u64,
    /// MiB of fresh anonymous memory in the first-touch probe.
    #[arg(long, default_value_t = 256)]
    pub memory_mib: usize,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// A 4 KiB-aligned zero-initialised buffer (for O_DIRECT).
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(bytes: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(bytes, DIRECT_ALIGN).expect("valid layout");
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation of {bytes} bytes");
        AlignedBuf { ptr, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn probe_file(dir: &Path, name: &str, direct: bool) -> Result<(File, PathBuf), String> {
    let path = dir.join(name);
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file, path))
}

/// Sequential write bandwidth in MB/s (10^6 bytes): `bytes` in 1 MiB writes to a fresh file, one
/// fdatasync at the end, timed to the end of the fdatasync. `direct` uses O_DIRECT (page cache
/// bypassed); returns an error if the filesystem refuses O_DIRECT.
pub fn disk_seq_write_mb_per_s(dir: &Path, bytes: u64, direct: bool) -> Result<f64, String> {
    let chunks = bytes.div_ceil(SEQ_WRITE_CHUNK_BYTES as u64).max(1);
    let (file, path) = probe_file(
        dir,
        if direct {
            "probe-direct.tmp"
        } else {
            "probe-seq.tmp"
        },
        direct,
    )?;
    let mut buf = AlignedBuf::new(SEQ_WRITE_CHUNK_BYTES);
    buf.as_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7 + 3) as u8);
    let started = Instant::now();
    let result = (|| {
        for i in 0..chunks {
            file.write_all_at(buf.as_mut(), i * SEQ_WRITE_CHUNK_BYTES as u64)?;
        }
        file.sync_data()
    })();
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((chunks * SEQ_WRITE_CHUNK_BYTES as u64) as f64 / seconds / 1e6)
}

/// Latency of one 4 KiB pwrite + fdatasync, overwriting a preallocated file: (p50, p99) in µs.
pub fn disk_sync_write_latency_us(dir: &Path, samples: usize) -> Result<(f64, f64), String> {
    assert!(samples > 0);
    let (file, path) = probe_file(dir, "probe-sync.tmp", false)?;
    let buf = vec![0x5Au8; SYNC_WRITE_BYTES];
    let mut micros = Vec::with_capacity(samples);
    let result = (|| {
        file.set_len((samples * SYNC_WRITE_BYTES) as u64)?;
        file.sync_all()?;
        for i in 0..samples {
            let started = Instant::now();
            file.write_all_at(&buf, (i * SYNC_WRITE_BYTES) as u64)?;
            file.sync_data()?;
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        Ok::<(), std::io::Error>(())
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("{}: {e}", path.display()))?;
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// The disk limits, measured together.
#[derive(Clone, Copy, Debug)]
pub struct DiskLimits {
    pub seq_buffered_mb_per_s: f64,
    pub seq_direct_mb_per_s: Option<f64>,
    pub sync_4k_p50_us: f64,
    pub sync_4k_p99_us: f64,
}

impl DiskLimits {
    /// The sequential-write limit a log benchmark is compared with: the faster of buffered and
    /// O_DIRECT 1 MiB writes (the stricter ratio).
    pub fn seq_limit_mb_per_s(&self) -> f64 {
        self.seq_buffered_mb_per_s
            .max(self.seq_direct_mb_per_s.unwrap_or(0.0))
    }
}

pub fn disk_limits(dir: &Path, bytes: u64, sync_samples: usize) -> Result<DiskLimits, String> {
    let seq_buffered_mb_per_s = disk_seq_write_mb_per_s(dir, bytes, false)?;
    let seq_direct_mb_per_s = disk_seq_write_mb_per_s(dir, bytes, true).ok();
    let (sync_4k_p50_us, sync_4k_p99_us) = disk_sync_write_latency_us(dir, sync_samples)?;
    Ok(DiskLimits {
        seq_buffered_mb_per_s,
        seq_direct_mb_per_s,
        sync_4k_p50_us,
        sync_4k_p99_us,
    })
}

/// Nanoseconds per xxh3-64 of a 128-byte record (the block-log checksum's unit of work).
pub fn xxh3_128b_ns() -> f64 {
    const ROUNDS: u64 = 5_000_000;
    let mut record = [0u8; 128];
    let started = Instant::now();
    let mut acc = 0u64;
    for i in 0..ROUNDS {
        record[0] = i as u8;
        acc ^= xxhash_rust::xxh3::xxh3_64(std::hint::black_box(&record));
    }
    std::hint::black_box(acc);
    started.elapsed().as_nanos() as f64 / ROUNDS as f64
}

/// Bytes between the touches of the memory probe (one write per 4 KiB page).
const PAGE_BYTES: usize = 4096;

/// Fresh memory vs memory already backed, in MB/s (10^6 bytes): a new anonymous mapping of
/// `bytes` is written one byte per 4 KiB page (every write faults a page in: the kernel zeroes it,
/// and on a VM the host may have to back it first), then written again (pages now present).
/// Returns (first touch, second touch). A hot path that allocates fresh memory pays the first.
pub fn memory_first_touch_mb_per_s(bytes: usize) -> Result<(f64, f64), String> {
    let bytes = bytes.max(PAGE_BYTES);
    let mut map = memmap2::MmapMut::map_anon(bytes).map_err(|e| format!("mmap {bytes}: {e}"))?;
    let mut touch = |value: u8| {
        let started = Instant::now();
        for page in map.chunks_mut(PAGE_BYTES) {
            // A volatile write, so the loop is not folded away.
            // SAFETY: `page` is a live, exclusively borrowed, non-empty slice of the mapping.
            unsafe { std::ptr::write_volatile(page.as_mut_ptr(), value) };
        }
        bytes as f64 / started.elapsed().as_secs_f64() / 1e6
    };
    let first = touch(1);
    let second = touch(2);
    Ok((first, second))
}

/// One loopback TCP stream: `bytes` in 1 MiB writes to a reader thread, in MB/s (10^6 bytes).
pub fn loopback_tcp_mb_per_s(bytes: u64) -> Result<f64, String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("addr: {e}"))?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; SEQ_WRITE_CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let chunk = vec![0xA5u8; SEQ_WRITE_CHUNK_BYTES];
    let chunks = bytes.div_ceil(SEQ_WRITE_CHUNK_BYTES as u64).max(1);
    let started = Instant::now();
    {
        let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        for _ in 0..chunks {
            stream
                .write_all(&chunk)
                .map_err(|e| format!("write: {e}"))?;
        }
    }
    let received = reader
        .join()
        .map_err(|_| "reader thread panicked".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(received, chunks * SEQ_WRITE_CHUNK_BYTES as u64);
    Ok(received as f64 / seconds / 1e6)
}

pub fn run(args: Args) -> Result<(), String> {
    let dir = args.dir.unwrap_or_else(std::env::temp_dir);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pairing_1core = crate::verify::pairing_limit_probe(args.sigs)?;
    let xxh3_ns = xxh3_128b_ns();
    let tcp_mb_per_s = loopback_tcp_mb_per_s(args.tcp_mib << 20)?;
    let (touch_first, touch_again) = memory_first_touch_mb_per_s(args.memory_mib << 20)?;
    let disk = disk_limits(&dir, args.disk_mib << 20, args.sync_samples)?;
    println!("SUMMARY limits (dir {})", dir.display());
    println!(
        "  disk seq write, 1 MiB buffered + fdatasync : {:>8.0} MB/s",
        disk.seq_buffered_mb_per_s
    );
    match disk.seq_direct_mb_per_s {
        Some(v) => println!("  disk seq write, 1 MiB O_DIRECT + fdatasync : {v:>8.0} MB/s"),
        None => println!("  disk seq write, O_DIRECT                   : not supported here"),
    }
    println!(
        "  disk seq write limit (max of the two)      : {:>8.0} MB/s",
        disk.seq_limit_mb_per_s()
    );
    println!(
        "  disk 4 KiB write + fdatasync p50 / p99     : {:>8.0} / {:.0} µs",
        disk.sync_4k_p50_us, disk.sync_4k_p99_us
    );
    println!(
        "  BLS min_sig aggregate_verify, 1 core       : {pairing_1core:>8.0} sigs/s ({:.0} µs/sig)",
        1e6 / pairing_1core
    );
    println!(
        "  {:<42} : {:>8.0} sigs/s",
        format!("pairing limit, {cores} cores (x single core)"),
        pairing_1core * cores as f64
    );
    println!("  xxh3-64 of 128 bytes                       : {xxh3_ns:>8.1} ns");
    println!("  loopback TCP, one stream, 1 MiB writes     : {tcp_mb_per_s:>8.0} MB/s");
    println!(
        "  memory, 1 write per 4 KiB page, fresh / again : {touch_first:>5.0} / {touch_again:.0} MB/s ({:.2} ms per fresh MiB)",
        1048.576 / touch_first
    );
    if args.json {
        let json = serde_json::json!({
            "bench": "limits",
            "disk_seq_buffered_mb_per_s": disk.seq_buffered_mb_per_s,
            "disk_seq_direct_mb_per_s": disk.seq_direct_mb_per_s,
            "disk_seq_limit_mb_per_s": disk.seq_limit_mb_per_s(),
            "disk_sync_4k_p50_us": disk.sync_4k_p50_us,
            "disk_sync_4k_p99_us": disk.sync_4k_p99_us,
            "cores": cores,
            "pairing_1core_sigs_per_s": pairing_1core,
            "pairing_limit_sigs_per_s": pairing_1core * cores as f64,
            "xxh3_128b_ns": xxh3_ns,
            "loopback_tcp_mb_per_s": tcp_mb_per_s,
            "memory_first_touch_mb_per_s": touch_first,
            "memory_second_touch_mb_per_s": touch_again,
        });
        println!("{json}");
    }
    Ok(())
}
