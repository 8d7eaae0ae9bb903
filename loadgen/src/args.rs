//! Command-line flags (clap). Every subcommand has `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadgen::tcp::SendOrder;
use loadgen::trace::TraceFormat;
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Reckon load generator: synthetic joint-loan workloads, \
trace record/replay, open loop (coordinated-omission corrected) or closed loop, HDR histograms, plots"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate a synthetic workload and write it as a trace (CSV, or binary for `.bin`).
    #[command(
        after_help = "Example:\n  loadgen record --workload joint-loan --events 2200000 --out trace.csv"
    )]
    Record(RecordArgs),
    /// Run a workload against a target, open or closed loop, and write HDR results.
    #[command(after_help = "Examples:\n  \
loadgen run --workload joint-loan --target null --duration 5 --batch 8190   # generator ceiling\n  \
loadgen run --mode open --rate 50000 --batch 10 --duration 60 --out results/open-50k\n  \
loadgen run --workload trace --trace trace.bin --mode closed --in-flight 128 --duration 30")]
    Run(RunArgs),
    /// Replay a trace at its recorded pace (scaled by --speedup) or as fast as possible.
    #[command(after_help = "Examples:\n  \
loadgen replay --trace trace.bin --speedup 10 --batch 100\n  \
loadgen replay --trace trace.csv --max-rate --in-flight 64 --skip-bad-lines")]
    Replay(ReplayArgs),
    /// Convert a trace between CSV and binary.
    Convert(ConvertArgs),
    /// Print a trace's event count and event-stream digest (BLAKE3).
    Digest(DigestArgs),
    /// Plots and a comparison table from one or more result directories.
    Report(ReportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    JointLoan,
    Transfers,
    /// Events from --trace FILE, sent on the run's own schedule (timestamps ignored).
    Trace,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Csv,
    Bin,
}

impl From<FormatArg> for TraceFormat {
    fn from(f: FormatArg) -> TraceFormat {
        match f {
            FormatArg::Csv => TraceFormat::Csv,
            FormatArg::Bin => TraceFormat::Bin,
        }
    }
}

#[derive(Args)]
pub struct WorkloadArgs {
    #[arg(long, value_enum, default_value = "joint-loan")]
    pub workload: WorkloadKind,
    /// Trace file for --workload trace.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Skip malformed trace lines (counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Seed of the generator: the same seed gives the same event stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Institutions; institution 0 is the lead bank (joint-loan needs at least 2).
    #[arg(long, default_value_t = 4)]
    pub institutions: u16,
    /// Reserve-fund accounts per institution (joint-loan).
    #[arg(long, default_value_t = 4)]
    pub reserves_per_institution: u64,
    /// Joint loans, revolving credit lines funded by the lead and one partner.
    #[arg(long, default_value_t = 10_000)]
    pub loans: u64,
    /// Accounts (transfers workload).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Zipf exponent for hot loans/accounts; 0 = uniform. Default: 1.0 joint-loan, 0 transfers.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// Partner funding share of each joint loan, basis points.
    #[arg(long, default_value_t = 8_000)]
    pub partner_share_bps: u16,
    /// Simulated arrival rate (events/s) that sets the trace timestamps.
    #[arg(long, default_value_t = 1_000.0)]
    pub sim_rate: f64,
    /// Joint-loan mix weights: top-up,disburse,repay,statement.
    #[arg(long, default_value = "5,35,40,20")]
    pub mix: String,
    /// Reserve floor in cents: the generator keeps every reserve at or above it, and the
    /// inproc target registers reserves with it (give a replayed trace its recording's floor).
    #[arg(long, default_value_t = 0)]
    pub reserve_floor: u64,
}

fn parse_mix(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || format!("--mix '{s}': expected four integers top-up,disburse,repay,statement");
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut mix = [0u32; 4];
    for (m, p) in mix.iter_mut().zip(parts) {
        *m = p.parse().map_err(|_| bad())?;
    }
    Ok(mix)
}

impl WorkloadArgs {
    pub fn build(&self) -> Result<Workload, String> {
        match self.workload {
            WorkloadKind::JointLoan => Workload::joint_loan(self.joint_loan()?),
            WorkloadKind::Transfers => Workload::transfers(self.transfers()),
            WorkloadKind::Trace => Err("--workload trace has no generator".into()),
        }
    }

    fn joint_loan(&self) -> Result<JointLoanConfig, String> {
        Ok(JointLoanConfig {
            seed: self.seed,
            institutions: self.institutions,
            reserves_per_institution: self.reserves_per_institution,
            loans: self.loans,
            zipf_exponent: self.zipf.unwrap_or(1.0),
            partner_share_bps: self.partner_share_bps,
            events_per_second: self.sim_rate,
            mix: parse_mix(&self.mix)?,
            reserve_floor: self.reserve_floor,
        })
    }

    fn transfers(&self) -> TransfersConfig {
        TransfersConfig {
            seed: self.seed,
            institutions: self.institutions,
            accounts: self.accounts,
            zipf_exponent: self.zipf.unwrap_or(0.0),
            events_per_second: self.sim_rate,
        }
    }

    /// The workload's configuration for summary.json.
    pub fn to_json(&self) -> serde_json::Value {
        let workload = match self.workload {
            WorkloadKind::JointLoan => self
                .joint_loan()
                .ok()
                .and_then(|c| serde_json::to_value(c).ok()),
            WorkloadKind::Transfers => serde_json::to_value(self.transfers()).ok(),
            WorkloadKind::Trace => self
                .trace
                .as_ref()
                .map(|t| serde_json::json!(t.display().to_string())),
        };
        let name = match self.workload {
            WorkloadKind::JointLoan => "joint-loan",
            WorkloadKind::Transfers => "transfers",
            WorkloadKind::Trace => "trace",
        };
        serde_json::json!({ "workload": name, "workload_config": workload })
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TargetKind {
    /// Completes every request at once: the generator's own ceiling.
    Null,
    /// Like null, but blocks once for --stall-ms (coordinated-omission demonstration).
    Stall,
    /// The engine's ledger in this process: map, sign (one BLS signature per request), apply.
    Inproc,
    /// A real cluster (`--cluster DIR` from `reckon init`) over mutual-TLS client connections.
    Tcp,
}

#[derive(Args)]
pub struct TargetArgs {
    #[arg(long, value_enum, default_value = "null")]
    pub target: TargetKind,
    /// Most requests the target accepts in flight.
    #[arg(long, default_value_t = 4096)]
    pub target_in_flight: usize,
    /// Stall target: how long the one stall lasts.
    #[arg(long, default_value_t = 200)]
    pub stall_ms: u64,
    /// The request (1-based) during whose submission the stall target blocks.
    #[arg(long, default_value_t = 1000)]
    pub stall_at_request: u64,
    /// Null target: reject every Nth request with --reject-code (0 = never).
    #[arg(long, default_value_t = 0)]
    pub reject_every: u64,
    /// Result code of the null target's rejections.
    #[arg(long, default_value_t = 1)]
    pub reject_code: u32,
    /// Inproc: do not sign requests (measures the ledger alone).
    #[arg(long)]
    pub no_sign: bool,
    /// Inproc: also verify every batch's signatures with the node's BatchVerifier.
    #[arg(long, conflicts_with = "no_sign")]
    pub verify: bool,
    /// Chain id the requests are signed for.
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
    /// Seed of the institutions' deterministic BLS keys.
    #[arg(long, default_value_t = 1)]
    pub key_seed: u64,
    /// Inproc and tcp: reserve floor registered for every reserve, cents (default: the workload's
    /// --reserve-floor for `run`, 0 for `replay`).
    #[arg(long)]
    pub map_reserve_floor: Option<u64>,
    /// Inproc and tcp: reserve warning threshold, cents (>= the floor; default: the floor).
    #[arg(long)]
    pub map_reserve_warning: Option<u64>,
    /// Added to every loadgen account and loan id and every transfer id (default 0 inproc,
    /// 1000000000 tcp: clear of the genesis accounts; change it to rerun on the same cluster).
    #[arg(long)]
    pub map_id_base: Option<u64>,
    /// Tcp target: send the stream's setup prefix (accounts, reserves, loans, opening top-ups)
    /// as part of the timed run instead of before it.
    #[arg(long)]
    pub tcp_timed_setup: bool,
    /// Tcp target: `exact` (conflicting requests wait for each other's commit, so every event
    /// gets its in-process result) or `relaxed` (send at once; the cluster orders them).
    #[arg(long, value_enum, default_value_t = SendOrder::Exact)]
    pub tcp_order: SendOrder,
    /// Inproc: ledger capacity hint in transfers (the ledger grows past it).
    #[arg(long, default_value_t = 1 << 20)]
    pub inproc_transfers_capacity: usize,
    /// Tcp target: the `reckon init` output directory.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Tcp target: connections in all (default institutions x nodes).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Tcp target: requests in flight per connection.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Tcp target: a request without a reply after this many seconds fails (`timeout`).
    #[arg(long, default_value_t = 30.0)]
    pub reply_timeout_s: f64,
}

#[derive(Args)]
pub struct OutputArgs {
    /// Result directory (default ./loadgen-results/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Events per driver request, 1..=8190 (engine targets split it into homogeneous
    /// engine requests, one signature each).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Interval of the .hlog and the timeline, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Seconds to wait for requests in flight after sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout_s: f64,
    /// No progress line (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Fixed rate (--rate), latency from the intended send time.
    Open,
    /// --in-flight requests outstanding at all times.
    Closed,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// Open loop: events per second offered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: requests in flight.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Seconds to send for.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Tcp target, transfers workload: map and sign the first N requests on every core before
    /// the timed run (after the setup phase), so the run sends them without signing and the
    /// cluster's nodes get the cores; live signing resumes once they are used up. 0 = off.
    #[arg(long, default_value_t = 0)]
    pub presign: usize,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub trace: PathBuf,
    /// Replay this many times faster than recorded.
    #[arg(long, default_value_t = 1.0, conflicts_with = "max_rate")]
    pub speedup: f64,
    /// Ignore timestamps: closed loop with --in-flight requests outstanding.
    #[arg(long)]
    pub max_rate: bool,
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    #[arg(long)]
    pub skip_bad_lines: bool,
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long)]
    pub events: Option<u64>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args)]
pub struct ConvertArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Output form (default: from the output's extension, `.bin` = binary).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    #[arg(long)]
    pub skip_bad_lines: bool,
}

#[derive(Args)]
pub struct DigestArgs {
    pub trace: PathBuf,
    #[arg(long)]
    pub skip_bad_lines: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Result directories written by `run` or `replay`.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    #[arg(long, default_value = "loadgen-report")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Events to write (the seed's production volume was 2,200,000).
    #[arg(long)]
    pub events: u64,
    /// Output trace file.
    #[arg(long)]
    pub out: PathBuf,
    /// Output form (default: from the extension, `.bin` = binary, else CSV).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}
