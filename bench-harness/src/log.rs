//! `bench-harness log`: durable block-log appends against the same disk's raw sequential write
//! bandwidth, measured in the same run; append-to-durable latency; cached read latency; reopen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::storage::{BlockLog, Cipher, EncryptionConfig, LogConfig, Ticket, WriteBackend};
use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};

use crate::limits;

/// Tickets between the appending thread and the latency-recording thread.
const TICKET_QUEUE_MAX: usize = 1024;
/// Timed reads of an encrypted log (each decrypts a whole block).
const ENCRYPTED_READS_MAX: usize = 1000;
/// Cap of the raw-write probe file.
const PROBE_BYTES_MAX: u64 = 4 << 30;

#[derive(clap::Args)]
pub struct Args {
    /// Number of blocks to append.
    #[arg(long, default_value_t = 2000)]
    pub blocks: u64,
    /// Payload bytes per block.
    #[arg(long, default_value_t = 1 << 20)]
    pub block_bytes: usize,
    /// Directory for the log and the probe files (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub segment_mib: u64,
    /// Force the pwrite + fdatasync path instead of io_uring.
    #[arg(long)]
    pub pwrite: bool,
    /// Encrypt payloads: xchacha or aes.
    #[arg(long)]
    pub encrypt: Option<String>,
    /// Also time reopening the log (recovery scan included) after the appends.
    #[arg(long)]
    pub reopen: bool,
    /// Number of timed random reads by height (after one warming pass).
    #[arg(long, default_value_t = 100_000)]
    pub reads: usize,
    /// Keep the log directory afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

struct AppendResult {
    seconds: f64,
    group_commits: u64,
    latency_us: Histogram<u64>,
}

fn config(args: &Args, key_dir: &Path) -> Result<LogConfig, String> {
    let mut cfg = LogConfig {
        segment_bytes: args.segment_mib << 20,
        payload_bytes_max: args.block_bytes.max(1 << 20),
        write_backend: if args.pwrite {
            WriteBackend::Pwrite
        } else {
            WriteBackend::Auto
        },
        ..LogConfig::default()
    };
    if let Some(name) = &args.encrypt {
        let cipher = match name.as_str() {
            "xchacha" => Cipher::XChaCha20Poly1305,
            "aes" => Cipher::Aes256Gcm,
            other => return Err(format!("--encrypt {other}: expected xchacha or aes")),
        };
        let key_file = key_dir.join("bench.key");
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        std::fs::write(&key_file, key).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        cfg.encryption = Some(EncryptionConfig { key_file, cipher });
    }
    Ok(cfg)
}

/// Appends `blocks` blocks; a second thread waits on each ticket and records append-to-durable.
fn append_blocks(
    log: &mut BlockLog,
    blocks: u64,
    block_bytes: usize,
) -> Result<AppendResult, String> {
    let mut payload = vec![0u8; block_bytes];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut payload);
    let (tx, rx) = ticket_channel::<(Ticket, Instant)>();
    let waiter = std::thread::spawn(move || {
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        for (ticket, started) in rx {
            ticket.wait().map_err(|e| e.to_string())?;
            hist.record(started.elapsed().as_micros().max(1) as u64)
                .expect("in range");
        }
        Ok::<_, String>(hist)
    });
    let commits_before = log.group_commits();
    let started = Instant::now();
    let mut parent = log.last().map_or([0; 32], |l| l.1);
    let first = log.last().map_or(1, |l| l.0 + 1);
    for height in first..first + blocks {
        payload[..8].copy_from_slice(&height.to_le_bytes());
        let t0 = Instant::now();
        let ticket = log
            .append(height, &parent, &payload)
            .map_err(|e| e.to_string())?;
        parent = ticket.hash();
        tx.send((ticket, t0))
            .map_err(|_| "latency thread stopped".to_string())?;
    }
    drop(tx);
    log.wait_durable().map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let latency_us = waiter
        .join()
        .map_err(|_| "latency thread panicked".to_string())??;
    Ok(AppendResult {
        seconds,
        group_commits: log.group_commits() - commits_before,
        latency_us,
    })
}

fn ticket_channel<T>() -> (std::sync::mpsc::SyncSender<T>, std::sync::mpsc::Receiver<T>) {
    std::sync::mpsc::sync_channel(TICKET_QUEUE_MAX)
}

/// Random reads by height, after a warming pass over the same heights: latency in ns.
fn read_latency(log: &BlockLog, reads: usize) -> Result<Histogram<u64>, String> {
    let (first, last) = (
        log.first_height().unwrap_or(1),
        log.last().map_or(0, |l| l.0),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let heights: Vec<u64> = (0..reads).map(|_| rng.gen_range(first..=last)).collect();
    let mut sink = 0u64;
    for &h in &heights {
        let p = log.read(h).map_err(|e| e.to_string())?;
        sink = sink.wrapping_add(p.first().copied().unwrap_or(0) as u64);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    for &h in &heights {
        let t0 = Instant::now();
        let p = log.read(h).map_err(|e| e.to_string())?;
        sink = sink.wrapping_add(std::hint::black_box(p.len()) as u64);
        drop(p);
        hist.record(t0.elapsed().as_nanos().max(1) as u64)
            .expect("in range");
    }
    std::hint::black_box(sink);
    Ok(hist)
}

fn time_open(dir: &Path, cfg: LogConfig) -> Result<(Duration, BlockLog), String> {
    let t0 = Instant::now();
    let log = BlockLog::open(dir, cfg).map_err(|e| e.to_string())?;
    Ok((t0.elapsed(), log))
}

pub fn run(args: Args) -> Result<(), String> {
    if args.blocks == 0 || args.block_bytes == 0 {
        return Err("--blocks and --block-bytes must be > 0".into());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("reckon-log-bench")
        .tempdir_in(&base)
        .map_err(|e| e.to_string())?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir).map_err(|e| e.to_string())?;
    let total_bytes = args.blocks * args.block_bytes as u64;
    let disk = limits::disk_limits(
        work.path(),
        total_bytes.clamp(64 << 20, PROBE_BYTES_MAX),
        200,
    )?;
    let cfg = config(&args, work.path())?;
    let mut log = BlockLog::open(&log_dir, cfg.clone()).map_err(|e| e.to_string())?;
    let path = log.write_path();
    let appended = append_blocks(&mut log, args.blocks, args.block_bytes)?;
    // Encrypted reads decrypt into a new buffer: bound their count so the bench stays short.
    let reads_max = if args.encrypt.is_some() {
        ENCRYPTED_READS_MAX
    } else {
        args.reads
    };
    let reads = read_latency(&log, args.reads.min(reads_max))?;
    let segments = log.segment_count();
    drop(log);
    let reopen = if args.reopen {
        let (full, log) = time_open(&log_dir, cfg.clone())?;
        assert_eq!(
            log.last().map(|l| l.0),
            Some(args.blocks),
            "reopen sees every block"
        );
        drop(log);
        let (tail, _) = time_open(
            &log_dir,
            LogConfig {
                verify_sealed_checksums: false,
                ..cfg
            },
        )?;
        Some((full, tail))
    } else {
        None
    };
    let report = Report {
        args: &args,
        disk,
        path,
        appended,
        reads,
        segments,
        reopen,
    };
    report.print();
    if args.keep {
        let kept = work.keep();
        println!("  kept: {}", kept.display());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a Args,
    disk: limits::DiskLimits,
    path: engine::storage::WritePath,
    appended: AppendResult,
    reads: Histogram<u64>,
    segments: usize,
    reopen: Option<(Duration, Duration)>,
}

impl Report<'_> {
    fn print(&self) {
        let a = self.args;
        let s = self.appended.seconds;
        let mb_per_s = (a.blocks * a.block_bytes as u64) as f64 / s / 1e6;
        let limit = self.disk.seq_limit_mb_per_s();
        let lat = &self.appended.latency_us;
        let (p50, p99, p999) = (
            lat.value_at_quantile(0.5),
            lat.value_at_quantile(0.99),
            lat.value_at_quantile(0.999),
        );
        let r = &self.reads;
        println!(
            "SUMMARY log: {} blocks x {} B, path {:?}, encrypt {:?}, {} segments of {} MiB",
            a.blocks, a.block_bytes, self.path, a.encrypt, self.segments, a.segment_mib
        );
        println!(
            "  durable appends      : {:>10.0} blocks/s  {:>8.1} MB/s",
            a.blocks as f64 / s,
            mb_per_s
        );
        println!(
            "  group commits        : {:>10.0} fdatasync/s ({} total, {:.1} blocks each)",
            self.appended.group_commits as f64 / s,
            self.appended.group_commits,
            a.blocks as f64 / self.appended.group_commits.max(1) as f64
        );
        println!("  append->durable      : p50 {p50} µs  p99 {p99} µs  p99.9 {p999} µs");
        println!("  disk limit (same run): buffered {:.0} MB/s, O_DIRECT {:?} MB/s, limit {limit:.0} MB/s", self.disk.seq_buffered_mb_per_s, self.disk.seq_direct_mb_per_s.map(|v| v.round()));
        println!("  ratio to limit       : {:.2}", mb_per_s / limit);
        println!(
            "  4 KiB write+fdatasync: p50 {:.0} µs  p99 {:.0} µs",
            self.disk.sync_4k_p50_us, self.disk.sync_4k_p99_us
        );
        println!(
            "  cached read by height: p50 {} ns  p99 {} ns  p99.9 {} ns ({} reads)",
            r.value_at_quantile(0.5),
            r.value_at_quantile(0.99),
            r.value_at_quantile(0.999),
            r.len()
        );
        if let Some((full, tail)) = self.reopen {
            println!(
                "  reopen (all checksums): {:.1} ms; reopen (tail only): {:.1} ms",
                full.as_secs_f64() * 1e3,
                tail.as_secs_f64() * 1e3
            );
        }
        if a.json {
            let json = serde_json::json!({
                "bench": "log", "blocks": a.blocks, "block_bytes": a.block_bytes, "path": format!("{:?}", self.path),
                "encrypt": a.encrypt, "blocks_per_s": a.blocks as f64 / s, "mb_per_s": mb_per_s,
                "limit_mb_per_s": limit, "ratio": mb_per_s / limit,
                "fdatasync_per_s": self.appended.group_commits as f64 / s,
                "p50_us": p50, "p99_us": p99, "p999_us": p999,
                "read_p50_ns": r.value_at_quantile(0.5), "read_p99_ns": r.value_at_quantile(0.99),
                "reopen_ms": self.reopen.map(|(f, _)| f.as_secs_f64() * 1e3),
                "reopen_tail_only_ms": self.reopen.map(|(_, t)| t.as_secs_f64() * 1e3),
            });
            println!("{json}");
        }
    }
}
