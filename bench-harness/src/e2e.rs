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

mod plan;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{LocalCluster, Tuning};
use loadgen::driver::{EventSource, RunConfig, Schedule};
use loadgen::progress::Progress;
use loadgen::target::Target;
use loadgen::tcp::{PresignConfig, PresignReport, TcpConfig, TcpStats, TcpTarget};
use loadgen::workload::{TransfersConfig, Workload};
pub(crate) use plan::TARGET_P99_MS;
use plan::{ledger_transfers, mode, phases, presign_requests, Phase};

/// Signatures in the pairing-limit probe.
const PAIRING_PROBE_SIGS: usize = 2_000;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Seconds of load in the timed phase (the default batched run's first, target-rate phase).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of the default batched run's second phase, the closed-loop ceiling. Short, so
    /// both phases stay within the ledger's default sizing (a table that outgrows it grows
    /// during the phase, which slows it).
    #[arg(long, default_value_t = 10.0)]
    pub ceiling_duration: f64,
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
    /// Transfers each node's ledger is sized for at start (default: every phase and its warm-up
    /// at the phase's rate, an open loop at its offered rate and a closed one at 300,000/s; at
    /// most 12,000,000: about 2.4 GiB a node by the record sizes): the tables are
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
    /// Sets one key of every node's config file after `reckon init`, as `SECTION.KEY=VALUE`
    /// with a TOML value (e.g. `consensus.unreachable_leader_timeout_ms=0`); repeatable. The
    /// file is then loaded back, so an unknown key or a bad value is the node config's own error.
    #[arg(long = "node-set", value_name = "SECTION.KEY=VALUE", value_parser = parse_node_set)]
    pub node_set: Vec<(String, String)>,
    /// Seconds of each phase's own load, untimed, right before it (after its presigning, on
    /// presigned requests): the nodes' heaps, caches and connections reach their working size
    /// again after the idle presigning. 0 = off.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Requests to map and sign before each timed phase (on every core), sent without signing
    /// during it; live signing resumes once they are used up. 0 = off (the generator signs
    /// during the run, on the nodes' cores). Default: the phase's own load for its warm-up and
    /// its duration: an
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

fn parse_node_set(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected SECTION.KEY=VALUE"))?;
    if !key.contains('.') || value.is_empty() {
        return Err(format!("`{text}`: expected SECTION.KEY=VALUE"));
    }
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// How long the untimed account set-up may wait for its last reply.
const SETUP_WAIT_MAX: Duration = Duration::from_secs(300);
/// How long, after a phase, the harness waits for replies to the requests it left unfinished
/// before the next phase starts: the reply timeout (30 s) and some.
const UNFINISHED_WAIT_MAX: Duration = Duration::from_secs(40);
/// Per-request reply timeout of the TCP target.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `schedule` for `seconds`, in the run's batches.
fn run_config(args: &Args, schedule: Schedule, seconds: f64) -> Result<RunConfig, String> {
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err("--duration and --ceiling-duration must be > 0 seconds".into());
    }
    let config = RunConfig {
        schedule,
        batch_events: args.batch,
        duration: Some(Duration::from_secs_f64(seconds)),
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
    /// The nodes' minor page faults over the phase (None where `/proc` cannot be read).
    faults: Option<crate::faults::Faults>,
    /// The fsync probe beside the nodes' data over the phase (None where it could not run).
    disk: Option<crate::probe::ProbeSummary>,
    /// The host hiccup probe over the phase (None where it could not run).
    hiccup: Option<crate::probe::ProbeSummary>,
}

/// Every timed phase, in order (never empty), and the results directory.
struct Driven {
    phases: Vec<PhaseResult>,
    out: PathBuf,
}

/// Sets the cluster up and runs every timed phase on it, each after presigning and a warm-up on
/// presigned requests, so the nodes do not idle between the warm-up and the phase.
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
    let mut results: Vec<PhaseResult> = Vec::with_capacity(phases.len());
    for phase in phases {
        if let Some(previous) = results.last() {
            await_unfinished(&mut target, previous.summary.results.requests_unfinished)?;
        }
        let presign_asked = presign_requests(args, &phase, ceiling);
        let presign = if presign_asked > 0 || target.presigned_unsent() > 0 {
            let config = run_config(args, phase.schedule, phase.seconds)?;
            Some(presign_phase(
                &mut target,
                &mut source,
                &config,
                presign_asked,
            )?)
        } else {
            None
        };
        if args.warmup > 0.0 {
            source = warm_up(args, &mut target, phase.schedule, source)?;
        }
        let presign = presign.filter(|_| presign_asked > 0);
        let result = run_phase(
            args,
            &mut target,
            phase,
            (presign_asked, presign),
            &mut source,
            (&out, &cluster.out()),
        )?;
        results.push(result);
    }
    Ok(Driven {
        phases: results,
        out,
    })
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

/// Runs one timed phase into its results directory, with its own target counters, steal
/// sampler and fsync probe (in `dirs.1`, the cluster's directory); `presign` is what was asked
/// and done before it.
fn run_phase(
    args: &Args,
    target: &mut TcpTarget,
    phase: Phase,
    presign: (usize, Option<PresignReport>),
    source: &mut EventSource<'_>,
    (out, cluster_dir): (&Path, &Path),
) -> Result<PhaseResult, String> {
    let config = run_config(args, phase.schedule, phase.seconds)?;
    let (presign_asked, presign) = presign;
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
    let fault_counter = crate::faults::FaultCounter::start();
    let prober = crate::probe::Prober::disk(cluster_dir);
    let hiccups = crate::probe::Prober::hiccup();
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
    let faults = fault_counter.finish();
    let disk = prober.and_then(crate::probe::Prober::finish);
    let hiccup = hiccups.and_then(crate::probe::Prober::finish);
    eprintln!("loadgen results in {}", dir.display());
    Ok(PhaseResult {
        phase,
        summary,
        stats: target.take_stats(),
        presign_asked,
        presign,
        presigned_unsent: target.presigned_unsent(),
        steal,
        faults,
        disk,
        hiccup,
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
    let outcome = (|| {
        while done < unfinished {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} requests of the previous phase still unfinished after \
                     {UNFINISHED_WAIT_MAX:?}",
                    unfinished - done
                ));
            }
            completions.clear();
            target
                .poll(&mut completions, Duration::from_millis(20))
                .map_err(|e| e.to_string())?;
            done += completions.len() as u64;
        }
        Ok(())
    })();
    target.set_untimed(false);
    outcome
}

/// Runs `schedule` for `args.warmup` seconds, untimed (its figures are printed, not kept), and
/// hands back the rest of the stream, starting with the batch the driver read ahead but did not
/// send: the presigned requests stay aligned with the stream, so the phase sends them next.
fn warm_up<'a>(
    args: &Args,
    target: &mut TcpTarget,
    schedule: Schedule,
    mut source: EventSource<'a>,
) -> Result<EventSource<'a>, String> {
    let config = run_config(args, schedule, args.warmup)?;
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
    let unsent = warm.unsent_batch.into_iter().map(Ok);
    Ok(Box::new(unsent.chain(source)))
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
        node_set: args.node_set.clone(),
    };
    let cluster = LocalCluster::start(args.nodes, &tune)?;
    let driven = drive(&args, &cluster, ceiling)?;
    let digests = await_agreement(&cluster)?;
    if !digests_agree(&digests) {
        for (node, status) in digests.iter().enumerate() {
            match status {
                Some((height, digest)) => {
                    eprintln!("node {node}: height {height}, ledger digest {digest}")
                }
                None => eprintln!("node {node}: no status answer"),
            }
        }
    }
    let logs = driven.out.join("nodes");
    cluster.stop_keeping_logs(&logs)?;
    eprintln!("node logs in {}", logs.display());
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

/// Seconds to wait for agreement after the lowest node's height last rose.
const AGREEMENT_STALL: Duration = Duration::from_secs(15);
/// Longest wait for agreement in all: a node restarted during the run may still be catching up
/// when the load stops (it replays a few hundred blocks a second), and is given the time as long
/// as it makes progress.
const AGREEMENT_MAX: Duration = Duration::from_secs(300);

/// Nodes apply the last blocks at slightly different moments, and one restarted during the run
/// may be catching up: polls every node's status until the digests agree, for as long as the
/// lowest height keeps rising (`AGREEMENT_STALL` without progress, `AGREEMENT_MAX` in all).
fn await_agreement(cluster: &LocalCluster) -> Result<Vec<Option<(u64, String)>>, String> {
    let started = Instant::now();
    let lowest = |digests: &[Option<(u64, String)>]| {
        digests
            .iter()
            .map(|d| d.as_ref().map_or(0, |(height, _)| *height))
            .min()
            .unwrap_or(0)
    };
    let mut digests = cluster.digests()?;
    let mut progress = (lowest(&digests), Instant::now());
    while !digests_agree(&digests)
        && progress.1.elapsed() < AGREEMENT_STALL
        && started.elapsed() < AGREEMENT_MAX
    {
        std::thread::sleep(Duration::from_millis(250));
        digests = cluster.digests()?;
        let low = lowest(&digests);
        if low > progress.0 {
            progress = (low, Instant::now());
        }
    }
    Ok(digests)
}

fn digests_agree(digests: &[Option<(u64, String)>]) -> bool {
    fn digest(status: &Option<(u64, String)>) -> Option<&str> {
        status.as_ref().map(|(_, digest)| digest.as_str())
    }
    digests
        .iter()
        .all(|d| d.is_some() && digest(d) == digest(&digests[0]))
}

#[cfg(test)]
mod tests {
    use super::digests_agree;

    #[test]
    fn digests_agree_only_when_every_node_answers_the_same_digest() {
        let status = |height: u64, digest: &str| Some((height, digest.to_string()));
        // The digest decides; nodes idling at different heights may still agree.
        assert!(digests_agree(&[status(10, "a"), status(11, "a")]));
        assert!(!digests_agree(&[status(10, "a"), status(10, "b")]));
        assert!(!digests_agree(&[status(10, "a"), None]));
        assert!(!digests_agree(&[None, None]));
    }
}
