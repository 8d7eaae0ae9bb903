//! `bench-harness e2e`: a local cluster of real `reckon node` processes driven by loadgen's TCP
//! target. Same-run limit: the single-core BLS pairing rate, probed before the cluster starts and
//! after it stops (the higher of the two is the limit: on a shared machine one probe can land in a
//! busy moment); every node verifies every signature, so the cluster's signature ceiling is
//! `cores x single-core rate / nodes` requests/s. Children are killed on every exit path (Drop).
//!
//! Schedules (`phases`). The batched target is a latency at a rate: at least 200,000
//! transfers/s sustained at a p99 of at most 100 ms. A closed loop (K requests in flight) cannot
//! measure that: it measures the throughput ceiling and the latency at saturation, and a stall
//! only delays the next send, so the requests it would have delayed are never sent and never
//! counted (coordinated omission). An open loop offers a fixed rate whatever the replies do and
//! measures each request from its intended send time. So the default batched run has two timed
//! phases on one cluster: the target rate (open loop at `TARGET_RATE_OFFERED`, its figures are the
//! JSON's top level and decide `target_met`), then the ceiling (closed loop, 2 in flight).
//! `--rate R` runs the open loop at R alone, `--in-flight K` the closed loop alone; batches under
//! `LARGE_BATCH_EVENTS` (`--batch 1` included) run the closed loop alone.
//!
//! The load generator runs on the same cores as the nodes, and its live signing (one BLS
//! signature per request) takes cores the nodes then lack; real clients sign on their own
//! machines. Before each timed phase the harness maps and signs that phase's requests (on every
//! core, while the nodes idle), and the summary states per phase how many were presigned, how
//! many were signed live, and how many presigned ones the phase did not reach.

mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{LocalCluster, Tuning};
use loadgen::driver::{EventSource, RunConfig, Schedule};
use loadgen::progress::Progress;
use loadgen::target::Target;
use loadgen::tcp::{PresignConfig, PresignReport, TcpConfig, TcpStats, TcpTarget};
use loadgen::workload::{TransfersConfig, Workload};

/// Signatures in the pairing-limit probe.
const PAIRING_PROBE_SIGS: usize = 2_000;

/// The default ledger size's cap: below 3/8 of a 2^25-slot id index (768 MiB). At 16 Mi
/// transfers the index would take 2^26 slots (1.5 GiB a node; `U128Map` sizing).
const E2E_LEDGER_TRANSFERS_MAX: usize = 12_000_000;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Seconds of load in each timed phase.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Events per loadgen request (1..=8190).
    #[arg(long, default_value_t = 8190)]
    pub batch: usize,
    /// Closed loop only, with this many requests in flight. Without it and without `--rate`,
    /// batches of 1,024 events or more run two phases (open loop at 220,000 transfers/s, then
    /// closed loop with 2 in flight), smaller ones the closed loop alone with the target's
    /// connections x pipeline in flight.
    #[arg(long, conflicts_with = "rate")]
    pub in_flight: Option<usize>,
    /// Open loop only: offer this many transfers/s at a fixed pace, one request every batch /
    /// rate seconds, whatever the replies do; latency runs from each request's intended send time
    /// (coordinated-omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client connections in all (default 4 x nodes).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Requests in flight per connection (default: 1, or 48 with `--batch 1`, whose one-signature
    /// requests need hundreds in flight to keep every node's verifier busy).
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// Operating accounts of the transfers workload.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Transfers each node's ledger is sized for at start (default: the warm-up and every phase
    /// at its rate for `--duration`, an open loop at its offered rate and a closed one at
    /// 300,000/s; at most 12,000,000: about 2.4 GiB a node by the record sizes): the tables are
    /// allocated before the run. A run that commits more grows them as it goes (slower, never
    /// stopping).
    #[arg(long)]
    pub ledger_transfers: Option<usize>,
    /// Nodes' `verify.batch_deadline_us` (default: 500 with batches of 1,024 events or more,
    /// else the node's default).
    #[arg(long)]
    pub verify_deadline_us: Option<u64>,
    /// Nodes' `consensus.batch_deadline_ms` (default: 1 with batches of 1,024 events or more,
    /// else the node's default).
    #[arg(long)]
    pub batch_deadline_ms: Option<u64>,
    /// Seconds of the first phase's load, untimed, before it (after the account set-up, before
    /// presigning): the nodes' heaps, caches and connections reach their working size first.
    /// 0 = off.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Requests to map and sign before each timed phase (on every core), sent without signing
    /// during it; live signing resumes once they are used up. 0 = off (the generator signs
    /// during the run, on the nodes' cores). Default: the phase's own load for `--duration`: an
    /// open loop's offered rate (x 1.05), a closed loop at 300,000 transfers/s (1.5 x the batched
    /// target), or with `--batch 1` at 1.5 x the signature ceiling from the probe taken before it.
    /// The summary says per phase how many were presigned, signed live, and left unsent.
    #[arg(long)]
    pub presign: Option<usize>,
    /// Loadgen result directory (default ./loadgen-results/<UTC timestamp>). A two-phase run
    /// writes each phase to its own subdirectory (`target-rate/`, `ceiling/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// How long the untimed account set-up may wait for its last reply.
const SETUP_WAIT_MAX: Duration = Duration::from_secs(300);
/// How long, after a phase, the harness waits for replies to the requests it left unfinished
/// before the next phase starts: the reply timeout (30 s) and some.
const UNFINISHED_WAIT_MAX: Duration = Duration::from_secs(40);
/// Per-request reply timeout of the TCP target.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The batched target: at least this many committed transfers/s sustained...
const BATCHED_TARGET_TRANSFERS_PER_S: f64 = 200_000.0;
/// ... at a p99 latency of at most this many milliseconds.
const TARGET_P99_MS: f64 = 100.0;
/// The target-rate phase offers this many percent more than the target: an open loop commits at
/// most what it offers, and its committed rate counts the drain after the last send, so offering
/// the target itself would report just under it.
const TARGET_RATE_HEADROOM_PERCENT: f64 = 10.0;
/// The target-rate phase's offered load: 1.1 x the batched target (exactly 220,000).
const TARGET_RATE_OFFERED: f64 =
    BATCHED_TARGET_TRANSFERS_PER_S * (100.0 + TARGET_RATE_HEADROOM_PERCENT) / 100.0;
/// The batch-1 target: requests/s at least this share of the signature ceiling.
const BATCH1_TARGET_RATIO: f64 = 0.8;

/// `--pipeline` with `--batch 1` unless given.
const BATCH1_PIPELINE: usize = 48;
/// `--batch 1` closed loops presign for a run at this multiple of the signature ceiling unless
/// `--presign` is given (a faster run signs the rest live, and the summary says so). The accounts
/// are created in an untimed set-up before presigning, so these are all transfers.
const BATCH1_PRESIGN_CEILINGS: f64 = 1.5;
/// Closed loops of other batch sizes presign for a run at this many transfers/s (1.5 x the
/// batched target), and each node's ledger is sized for it.
const PRESIGN_TRANSFERS_PER_S: f64 = 300_000.0;
/// An open loop sends exactly its offered load; it presigns this much more, because a batch can
/// map to more requests than `INSTITUTION_COUNT` (the surplus is dropped unsent).
const PRESIGN_OPEN_MARGIN: f64 = 1.05;
/// Batches of at least this many events get the large-request defaults (`with_run_defaults`) and,
/// unless a schedule is given, the two phases.
const LARGE_BATCH_EVENTS: usize = 1_024;
/// Large requests: in flight in the ceiling phase, and the nodes' verify-window and
/// dissemination-batch deadlines.
const LARGE_IN_FLIGHT: usize = 2;
const LARGE_VERIFY_DEADLINE_US: u64 = 500;
const LARGE_BATCH_DEADLINE_MS: u64 = 1;
/// Loadgen maps each batch to one request per debiting institution (`cluster::INSTITUTIONS`), so
/// a batch of B transfers is about this many requests of B / 4 transfers.
const INSTITUTION_COUNT: usize = 4;

/// Which timed phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The default batched run's first phase: open loop at `TARGET_RATE_OFFERED`.
    TargetRate,
    /// Its second: closed loop with `LARGE_IN_FLIGHT` in flight.
    Ceiling,
    /// The one phase of every other run (`--rate`, `--in-flight`, smaller batches).
    Only,
}

impl Role {
    /// The phase's name in the JSON.
    fn name(self) -> &'static str {
        self.subdir().unwrap_or("run")
    }

    /// Where in `--out` the phase's loadgen results go (None: `--out` itself).
    fn subdir(self) -> Option<&'static str> {
        match self {
            Role::TargetRate => Some("target-rate"),
            Role::Ceiling => Some("ceiling"),
            Role::Only => None,
        }
    }
}

/// One timed phase: `--duration` seconds of `schedule`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Phase {
    role: Role,
    schedule: Schedule,
}

/// The schedule's name in the summary and the JSON.
fn mode(schedule: Schedule) -> &'static str {
    match schedule {
        Schedule::Open { .. } => "open",
        Schedule::Closed { .. } => "closed",
        Schedule::Replay { .. } => "replay",
    }
}

/// The timed phases, in order; the first is the primary one (the JSON's top-level figures).
/// `target_in_flight` is the target's cap (connections x pipeline), the closed loop's default
/// for batches under `LARGE_BATCH_EVENTS`.
fn phases(args: &Args, target_in_flight: usize) -> Vec<Phase> {
    let only = |schedule| {
        vec![Phase {
            role: Role::Only,
            schedule,
        }]
    };
    if let Some(events_per_s) = args.rate {
        return only(Schedule::Open { events_per_s });
    }
    if let Some(in_flight) = args.in_flight {
        return only(Schedule::Closed { in_flight });
    }
    if args.batch < LARGE_BATCH_EVENTS {
        return only(Schedule::Closed {
            in_flight: target_in_flight,
        });
    }
    vec![
        Phase {
            role: Role::TargetRate,
            schedule: Schedule::Open {
                events_per_s: TARGET_RATE_OFFERED,
            },
        },
        Phase {
            role: Role::Ceiling,
            schedule: Schedule::Closed {
                in_flight: LARGE_IN_FLIGHT,
            },
        },
    ]
}

/// Requests to presign before a phase with `schedule`: `--presign` when given; else the phase's
/// load for `--duration`: an open loop's offered rate (x `PRESIGN_OPEN_MARGIN`), a closed loop at
/// `PRESIGN_TRANSFERS_PER_S`, or with `--batch 1` at `BATCH1_PRESIGN_CEILINGS` x the signature
/// ceiling (`ceiling_requests_per_s`).
fn presign_requests(args: &Args, schedule: Schedule, ceiling_requests_per_s: f64) -> usize {
    if let Some(requests) = args.presign {
        return requests;
    }
    let requests_per_batch = INSTITUTION_COUNT.min(args.batch) as f64;
    let requests = match schedule {
        Schedule::Open { events_per_s } => {
            events_per_s * PRESIGN_OPEN_MARGIN * args.duration / args.batch as f64
                * requests_per_batch
        }
        _ if args.batch == 1 => ceiling_requests_per_s * BATCH1_PRESIGN_CEILINGS * args.duration,
        _ => PRESIGN_TRANSFERS_PER_S * args.duration / args.batch as f64 * requests_per_batch,
    };
    requests.ceil() as usize
}

/// Transfers each node's ledger is sized for: `--ledger-transfers`, else the warm-up (at the
/// first phase's rate) and every phase for `--duration` at its rate (an open loop's offered rate,
/// a closed loop's `PRESIGN_TRANSFERS_PER_S`), at most `E2E_LEDGER_TRANSFERS_MAX`.
fn ledger_transfers(args: &Args) -> usize {
    if let Some(transfers) = args.ledger_transfers {
        return transfers;
    }
    let rate = |phase: &Phase| match phase.schedule {
        Schedule::Open { events_per_s } => events_per_s,
        _ => PRESIGN_TRANSFERS_PER_S,
    };
    let phases = phases(args, 1);
    let warmup = phases.first().map_or(0.0, |p| rate(p) * args.warmup);
    let timed: f64 = phases.iter().map(|p| rate(p) * args.duration).sum();
    ((warmup + timed) as usize).min(E2E_LEDGER_TRANSFERS_MAX)
}

impl Args {
    /// Node and connection settings by request size. One-signature requests measure the nodes'
    /// signature throughput, so they need enough of them in flight to keep every verifier busy.
    /// Large requests (thousands of transfers each) get node deadlines sized for a few large
    /// requests a second: the defaults (a 2 ms verify window, a 5 ms dissemination batch) are
    /// sized to gather streams of small requests, which a few large ones never fill, so each
    /// request waited out both. (Their closed loop runs at the cluster's knee, 2 in flight, where
    /// more would only queue: `phases`.) Explicit flags win.
    fn with_run_defaults(mut self) -> Args {
        if self.batch >= LARGE_BATCH_EVENTS {
            self.verify_deadline_us = self.verify_deadline_us.or(Some(LARGE_VERIFY_DEADLINE_US));
            self.batch_deadline_ms = self.batch_deadline_ms.or(Some(LARGE_BATCH_DEADLINE_MS));
        }
        if self.batch == 1 {
            self.pipeline = self.pipeline.or(Some(BATCH1_PIPELINE));
        }
        self
    }
}

fn run_config(args: &Args, schedule: Schedule) -> Result<RunConfig, String> {
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be > 0".into());
    }
    let config = RunConfig {
        schedule,
        batch_events: args.batch,
        duration: Some(Duration::from_secs_f64(args.duration)),
        events_max: None,
        interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// What one timed phase measured: loadgen's summary, the TCP target's counters over the phase,
/// and what presigning before it did.
struct PhaseResult {
    phase: Phase,
    summary: loadgen::output::Summary,
    stats: TcpStats,
    /// Requests presigning was asked for (0: off).
    presign_asked: usize,
    presign: Option<PresignReport>,
    /// Presigned requests the phase did not reach (dropped before the next phase).
    presigned_unsent: u64,
    /// Hypervisor steal over the phase (None where `/proc/stat` cannot be read).
    steal: Option<crate::steal::Steal>,
}

/// Every timed phase, in order (never empty).
struct Driven {
    phases: Vec<PhaseResult>,
}

/// Sets the cluster up, warms it up, and runs every timed phase on it, each after presigning.
fn drive(args: &Args, cluster: &LocalCluster, ceiling: f64) -> Result<Driven, String> {
    let mut target = TcpTarget::connect(&TcpConfig {
        cluster: cluster.out(),
        connections: args.connections,
        pipeline: args.pipeline.unwrap_or(1),
        reply_timeout: REPLY_TIMEOUT,
        map: TcpConfig::map_default(),
        order: loadgen::tcp::SendOrder::Exact,
    })
    .map_err(|e| e.to_string())?;
    let phases = phases(args, target.in_flight_max());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| loadgen::output::default_out_dir(SystemTime::now()));
    let mut source = set_up(args, &mut target)?;
    if let Some(first) = phases.first().filter(|_| args.warmup > 0.0) {
        source = warm_up(args, &mut target, first.schedule, source)?;
    }
    let mut results: Vec<PhaseResult> = Vec::with_capacity(phases.len());
    for phase in phases {
        if let Some(previous) = results.last() {
            await_unfinished(&mut target, previous.summary.results.requests_unfinished)?;
        }
        let presign = presign_requests(args, phase.schedule, ceiling);
        let result = run_phase(args, &mut target, phase, presign, &mut source, &out)?;
        results.push(result);
    }
    Ok(Driven { phases: results })
}

/// Creates the workload's accounts, untimed (as `loadgen run --target tcp` does): in a timed run
/// the first transfers would wait for the creations they depend on, and that wait, not the
/// cluster, made the first seconds' latencies. Returns the rest of the stream (transfers).
fn set_up(args: &Args, target: &mut TcpTarget) -> Result<EventSource<'static>, String> {
    let workload = Workload::transfers(TransfersConfig {
        accounts: args.accounts,
        ..TransfersConfig::default()
    })?;
    let source: EventSource<'static> = Box::new(workload.map(Ok));
    let (setup, rest) = target
        .setup(source, SETUP_WAIT_MAX)
        .map_err(|e| e.to_string())?;
    eprint!("{}", setup.render_text());
    if setup.batches_failed > 0 || !setup.rejections.is_empty() {
        return Err(format!(
            "account set-up failed: {} batches failed, rejections {:?}, first failure {:?}",
            setup.batches_failed, setup.rejections, setup.first_failure
        ));
    }
    Ok(rest)
}

/// Presigns (if asked, or to drop what the previous phase left unsent), then runs one timed
/// phase into its results directory, with its own target counters and steal sampler.
fn run_phase(
    args: &Args,
    target: &mut TcpTarget,
    phase: Phase,
    presign_asked: usize,
    source: &mut EventSource<'_>,
    out: &Path,
) -> Result<PhaseResult, String> {
    let config = run_config(args, phase.schedule)?;
    let presign = if presign_asked > 0 || target.presigned_unsent() > 0 {
        Some(presign_phase(target, source, &config, presign_asked)?)
    } else {
        None
    };
    // The phase's counters start here: set-up, warm-up and the previous phase's late replies
    // are not the phase's.
    target.take_stats();
    let dir = phase
        .role
        .subdir()
        .map_or_else(|| out.to_path_buf(), |d| out.join(d));
    let (offered, in_flight) = match phase.schedule {
        Schedule::Open { events_per_s } => (Some(events_per_s), None),
        Schedule::Closed { in_flight } => (None, Some(in_flight)),
        Schedule::Replay { .. } => (None, None),
    };
    let config_json = serde_json::json!({
        "workload": "transfers", "accounts": args.accounts, "nodes": args.nodes,
        "target": "tcp", "phase": phase.role.name(), "mode": mode(phase.schedule),
        "offered_events_per_s": offered, "in_flight": in_flight, "presign": presign_asked,
        "warmup_s": args.warmup,
    });
    let sampler = crate::steal::Sampler::start();
    let summary = loadgen::commands::run_to_dir(
        Box::new(&mut *source),
        target,
        config,
        config_json,
        &dir,
        &Progress::new(false),
    )
    .map_err(|e| e.to_string())?;
    let steal = sampler.finish();
    eprintln!("loadgen results in {}", dir.display());
    Ok(PhaseResult {
        phase,
        summary,
        stats: target.take_stats(),
        presign_asked,
        presign: presign.filter(|_| presign_asked > 0),
        presigned_unsent: target.presigned_unsent(),
        steal,
    })
}

/// Presigns `requests` of the stream's next batches as `config` cuts them (after dropping the
/// presigned requests an earlier phase did not reach) and puts the stream to replay in `source`.
fn presign_phase<'a>(
    target: &mut TcpTarget,
    source: &mut EventSource<'a>,
    config: &RunConfig,
    requests: usize,
) -> Result<PresignReport, String> {
    let taken = std::mem::replace(source, Box::new(std::iter::empty()));
    let presign_config = PresignConfig {
        requests,
        batch_events: config.batch_events,
        events_max: config.events_max,
    };
    let (report, rest) = target
        .presign(taken, &presign_config)
        .map_err(|e| e.to_string())?;
    eprint!("{}", report.render_text());
    *source = rest;
    Ok(report)
}

/// Waits (bounded, untimed) for the completions of the `unfinished` requests a phase left when
/// its drain timed out, and drops them: the next phase's driver must never see a completion of a
/// request it did not send. They count as unfinished in the phase that sent them.
fn await_unfinished(target: &mut TcpTarget, unfinished: u64) -> Result<(), String> {
    let deadline = Instant::now() + UNFINISHED_WAIT_MAX;
    let mut done = 0u64;
    let mut completions = Vec::new();
    target.set_untimed(true);
    while done < unfinished {
        if Instant::now() >= deadline {
            target.set_untimed(false);
            return Err(format!(
                "{} requests of the previous phase still unfinished after {UNFINISHED_WAIT_MAX:?}",
                unfinished - done
            ));
        }
        completions.clear();
        if let Err(e) = target.poll(&mut completions, Duration::from_millis(20)) {
            target.set_untimed(false);
            return Err(e.to_string());
        }
        done += completions.len() as u64;
    }
    target.set_untimed(false);
    Ok(())
}

/// Runs `schedule` for `args.warmup` seconds, untimed (its figures are printed, not kept), and
/// hands back the rest of the stream. Requests it signs count as signed during set-up.
fn warm_up<'a>(
    args: &Args,
    target: &mut TcpTarget,
    schedule: Schedule,
    mut source: EventSource<'a>,
) -> Result<EventSource<'a>, String> {
    let mut config = run_config(args, schedule)?;
    config.duration = Some(Duration::from_secs_f64(args.warmup));
    // The driver reads one batch ahead of its sends; the batch it holds at the deadline is
    // dropped from the stream, which a stream of random transfers does not notice.
    target.set_untimed(true);
    let warm = loadgen::driver::run(Box::new(&mut source), target, config, &Progress::new(false))
        .map_err(|e| format!("warm-up: {e}"));
    target.set_untimed(false);
    let warm = warm?;
    let (latency, totals) = (&warm.recorder.corrected, &warm.recorder.totals);
    eprintln!(
        "WARM-UP (untimed, {} loop)\n  {:.1} s, {} requests done, {} events committed, p50 {:.0} \
         ms, max {:.0} ms",
        mode(schedule),
        warm.elapsed_ns as f64 / 1e9,
        totals.requests_done,
        totals.events_committed,
        latency.value_at_quantile(0.5) as f64 / 1e6,
        latency.max() as f64 / 1e6
    );
    if warm.requests_unfinished > 0 || totals.requests_failed > 0 || totals.events_rejected > 0 {
        return Err(format!(
            "warm-up: {} requests unfinished, {} failed, {} events rejected",
            warm.requests_unfinished, totals.requests_failed, totals.events_rejected
        ));
    }
    Ok(source)
}

pub fn run(args: Args) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 16 {
        return Err("--nodes must be 1..=16".into());
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err("--warmup must be >= 0 seconds".into());
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be > 0 transfers/s".into());
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("probing the single-core pairing limit ({PAIRING_PROBE_SIGS} signatures)...");
    let pairing_before = crate::verify::pairing_limit_probe(PAIRING_PROBE_SIGS)?;
    let ceiling = cores as f64 * pairing_before / args.nodes as f64;
    let args = args.with_run_defaults();
    let tune = Tuning {
        transfers_capacity: ledger_transfers(&args),
        verify_deadline_us: args.verify_deadline_us,
        batch_deadline_ms: args.batch_deadline_ms,
    };
    let cluster = LocalCluster::start(args.nodes, &tune)?;
    let driven = drive(&args, &cluster, ceiling)?;
    // Nodes apply the last blocks at slightly different moments: wait (bounded) for agreement.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut digests = cluster.digests()?;
    while !digests_agree(&digests) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        digests = cluster.digests()?;
    }
    drop(cluster);
    // Probed again once the cluster is gone: the machine is shared, and one probe can land in a
    // busy moment. The higher of the two is the limit, so a noisy probe never flatters the ratio.
    eprintln!("probing the single-core pairing limit again...");
    let pairing_after = crate::verify::pairing_limit_probe(PAIRING_PROBE_SIGS)?;
    let limits = report::Limits {
        probes: [pairing_before, pairing_after],
        cores,
        ledger_transfers: tune.transfers_capacity,
    };
    report::report(&args, &driven, &limits, digests_agree(&digests))
}

fn digests_agree(digests: &[Option<String>]) -> bool {
    digests.iter().all(|d| d.is_some() && *d == digests[0])
}

/// The figures a run's target is judged on: the primary phase's, and the digests.
#[derive(Clone, Copy, Debug)]
struct Judged {
    transfers_per_s: f64,
    p99_ms: f64,
    requests_failed: u64,
    events_rejected: u64,
    /// Requests with no completion when the phase's drain ended: their latency is in no
    /// percentile, so a run with any cannot claim one.
    requests_unfinished: u64,
    digests_agree: bool,
}

/// The batched target: at least `BATCHED_TARGET_TRANSFERS_PER_S` committed at a p99 of
/// at most `TARGET_P99_MS`, with nothing failed, rejected or unfinished, and the nodes' ledgers
/// equal.
fn batched_target_met(j: &Judged) -> bool {
    j.transfers_per_s >= BATCHED_TARGET_TRANSFERS_PER_S
        && j.p99_ms <= TARGET_P99_MS
        && j.requests_failed == 0
        && j.events_rejected == 0
        && j.requests_unfinished == 0
        && j.digests_agree
}

/// Whether the run met the target for its batch size: with `--batch 1`, requests/s at
/// least `BATCH1_TARGET_RATIO` of the signature ceiling (`ratio`); with batches of
/// `LARGE_BATCH_EVENTS` or more, `batched_target_met`; other sizes have no target (None).
fn target_met(batch: usize, judged: &Judged, ratio: Option<f64>) -> Option<bool> {
    if batch == 1 {
        ratio.map(|r| r >= BATCH1_TARGET_RATIO)
    } else if batch >= LARGE_BATCH_EVENTS {
        Some(batched_target_met(judged))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn try_parse(flags: &[&str]) -> Result<Args, clap::Error> {
        let argv = std::iter::once("e2e").chain(flags.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    fn parse(flags: &[&str]) -> Args {
        try_parse(flags).expect("flags parse")
    }

    /// (role, schedule) of each phase, with a target cap of 80 in flight.
    fn planned(flags: &[&str]) -> Vec<(Role, Schedule)> {
        let args = parse(flags).with_run_defaults();
        phases(&args, 80)
            .into_iter()
            .map(|p| (p.role, p.schedule))
            .collect()
    }

    #[test]
    fn the_default_batched_run_is_the_target_rate_open_loop_then_the_closed_loop_ceiling() {
        assert_eq!(TARGET_RATE_OFFERED, 220_000.0, "1.1 x the 200,000 target");
        let open = Schedule::Open {
            events_per_s: 220_000.0,
        };
        let closed_2 = Schedule::Closed { in_flight: 2 };
        let two = vec![(Role::TargetRate, open), (Role::Ceiling, closed_2)];
        assert_eq!(planned(&[]), two);
        assert_eq!(planned(&["--batch", "8190", "--duration", "10"]), two);
        assert_eq!(planned(&["--batch", "1024"]), two);
        assert_eq!(
            (Role::TargetRate.subdir(), Role::Ceiling.subdir()),
            (Some("target-rate"), Some("ceiling"))
        );
    }

    #[test]
    fn rate_or_in_flight_runs_that_schedule_alone_and_small_batches_run_the_closed_loop_alone() {
        let open = |events_per_s| Schedule::Open { events_per_s };
        let closed = |in_flight| Schedule::Closed { in_flight };
        assert_eq!(
            planned(&["--rate", "150000"]),
            vec![(Role::Only, open(150_000.0))]
        );
        assert_eq!(
            planned(&["--batch", "1", "--rate", "900"]),
            vec![(Role::Only, open(900.0))]
        );
        assert_eq!(
            planned(&["--in-flight", "16"]),
            vec![(Role::Only, closed(16))]
        );
        // Small batches: the target's connections x pipeline, as before.
        assert_eq!(planned(&["--batch", "1"]), vec![(Role::Only, closed(80))]);
        assert_eq!(planned(&["--batch", "100"]), vec![(Role::Only, closed(80))]);
        assert_eq!(
            planned(&["--batch", "1023"]),
            vec![(Role::Only, closed(80))]
        );
        assert_eq!(Role::Only.subdir(), None);
    }

    #[test]
    fn rate_together_with_in_flight_is_a_usage_error() {
        let err = try_parse(&["--rate", "1000", "--in-flight", "2"])
            .err()
            .expect("--rate conflicts with --in-flight");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn batch_1_defaults_to_48_per_connection_and_presigns_the_run_at_one_and_a_half_ceilings() {
        let args = parse(&["--batch", "1", "--duration", "20", "--accounts", "200"]);
        let args = args.with_run_defaults();
        assert_eq!(args.pipeline, Some(BATCH1_PIPELINE));
        let [phase] = phases(&args, 80)[..] else {
            panic!("one phase")
        };
        assert_eq!(
            presign_requests(&args, phase.schedule, 1_000.0),
            1_000 * 3 / 2 * 20
        );
    }

    #[test]
    fn each_phase_presigns_its_own_load_and_explicit_flags_win() {
        assert_eq!(
            crate::cluster::INSTITUTIONS.split(',').count(),
            INSTITUTION_COUNT
        );
        let args = parse(&["--batch", "8190", "--duration", "30"]).with_run_defaults();
        let [target_rate, ceiling] = phases(&args, 80)[..] else {
            panic!("two phases")
        };
        // 220,000 x 1.05 x 30 s = 6.93 M transfers in batches of 8,190, 4 requests each: 3,385
        // requests (the phase sends 806 batches, 3,224 requests).
        assert_eq!(
            presign_requests(&args, target_rate.schedule, 1_000.0),
            3_385
        );
        // 300,000 x 30 s = 9 M transfers in batches of 8,190, 4 requests each: 4,396 requests.
        assert_eq!(presign_requests(&args, ceiling.schedule, 1_000.0), 4_396);
        // An open loop of one-transfer requests: its rate, not the signature ceiling.
        let batch_1 = parse(&["--batch", "1", "--duration", "10", "--rate", "1000"]);
        let [open] = phases(&batch_1, 80)[..] else {
            panic!("one phase")
        };
        assert_eq!(presign_requests(&batch_1, open.schedule, 5_000.0), 10_500);
        // --presign N: N before every phase (0: never).
        let given = parse(&["--presign", "0"]);
        for phase in phases(&given, 80) {
            assert_eq!(presign_requests(&given, phase.schedule, 1_000.0), 0);
        }
        let given = parse(&["--batch", "1", "--pipeline", "16", "--presign", "7"]);
        let given = given.with_run_defaults();
        assert_eq!(given.pipeline, Some(16));
        assert_eq!(
            presign_requests(&given, Schedule::Closed { in_flight: 9 }, 1e3),
            7
        );
    }

    #[test]
    fn large_batches_get_short_node_deadlines_unless_given_and_small_ones_keep_the_nodes() {
        let batched = parse(&["--batch", "8190"]).with_run_defaults();
        assert_eq!(
            (
                batched.pipeline,
                batched.verify_deadline_us,
                batched.batch_deadline_ms
            ),
            (None, Some(500), Some(1))
        );
        let given = parse(&["--batch", "8190", "--batch-deadline-ms", "5"]).with_run_defaults();
        assert_eq!(given.batch_deadline_ms, Some(5));
        let small = parse(&["--batch", "100"]).with_run_defaults();
        assert_eq!(
            (
                small.in_flight,
                small.verify_deadline_us,
                small.batch_deadline_ms
            ),
            (None, None, None)
        );
    }

    #[test]
    fn the_ledger_is_sized_for_the_warm_up_and_every_phase_within_the_cap() {
        // 3 s warm-up and 10 s at 220,000, then 10 s of the ceiling at 300,000.
        let two = parse(&["--duration", "10"]);
        assert_eq!(ledger_transfers(&two), 660_000 + 2_200_000 + 3_000_000);
        let closed = parse(&["--duration", "10", "--in-flight", "2", "--warmup", "0"]);
        assert_eq!(ledger_transfers(&closed), 3_000_000);
        let long = parse(&["--duration", "30"]);
        assert_eq!(ledger_transfers(&long), E2E_LEDGER_TRANSFERS_MAX);
        let given = parse(&["--ledger-transfers", "1000"]);
        assert_eq!(ledger_transfers(&given), 1_000);
    }

    fn judged() -> Judged {
        Judged {
            transfers_per_s: 200_000.0,
            p99_ms: 100.0,
            requests_failed: 0,
            events_rejected: 0,
            requests_unfinished: 0,
            digests_agree: true,
        }
    }

    #[test]
    fn the_batched_target_holds_at_its_boundaries_and_fails_on_any_shortfall() {
        let at = judged();
        assert_eq!(
            target_met(8190, &at, None),
            Some(true),
            "exactly 200,000 at 100 ms"
        );
        let cases = [
            Judged {
                transfers_per_s: 199_999.9,
                ..at
            },
            Judged {
                p99_ms: 100.001,
                ..at
            },
            Judged {
                requests_failed: 1,
                ..at
            },
            Judged {
                events_rejected: 1,
                ..at
            },
            Judged {
                requests_unfinished: 1,
                ..at
            },
            Judged {
                digests_agree: false,
                ..at
            },
        ];
        for case in cases {
            assert_eq!(target_met(8190, &case, None), Some(false), "{case:?}");
        }
        let above = Judged {
            transfers_per_s: 250_000.0,
            p99_ms: 60.0,
            ..at
        };
        assert_eq!(target_met(1024, &above, None), Some(true));
    }

    #[test]
    fn batch_1_is_judged_by_its_ratio_to_the_signature_ceiling_and_other_sizes_have_no_target() {
        let failing = Judged {
            transfers_per_s: 0.0,
            ..judged()
        };
        assert_eq!(target_met(1, &failing, Some(0.8)), Some(true));
        assert_eq!(target_met(1, &judged(), Some(0.799)), Some(false));
        assert_eq!(target_met(1, &judged(), None), None);
        assert_eq!(target_met(100, &judged(), None), None);
        assert_eq!(target_met(1023, &judged(), None), None);
    }
}
