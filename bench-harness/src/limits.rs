//! `bench-harness limits`: the machine's physical limits that benchmarks compare against.
//!
//! Each probe is a `pub fn` so a benchmark can measure its own limit in the same run.
//! Sections: disk (storage). Crypto and network probes are added by their owners below.

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

pub fn run(args: Args) -> Result<(), String> {
    let dir = args.dir.unwrap_or_else(std::env::temp_dir);
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
    // crypto limits: added by the crypto issue.
    // network limits: added by the net issue.
    if args.json {
        let json = serde_json::json!({
            "bench": "limits",
            "disk_seq_buffered_mb_per_s": disk.seq_buffered_mb_per_s,
            "disk_seq_direct_mb_per_s": disk.seq_direct_mb_per_s,
            "disk_seq_limit_mb_per_s": disk.seq_limit_mb_per_s(),
            "disk_sync_4k_p50_us": disk.sync_4k_p50_us,
            "disk_sync_4k_p99_us": disk.sync_4k_p99_us,
        });
        println!("{json}");
    }
    Ok(())
}
