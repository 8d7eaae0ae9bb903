//! `bench-harness e2e`: a local cluster of real `reckon node` processes driven by loadgen's TCP
//! target, closed loop (K requests in flight: a throughput ceiling, not a latency claim at a
//! given offered rate). Same-run limit: the single-core BLS pairing rate, probed before the cluster
//! starts and after it stops (the higher of the two is the limit: on a shared machine one probe can
//! land in a busy moment); every node verifies every signature, so the cluster's signature ceiling is
//! `cores x single-core rate / nodes` requests/s. Children are killed on every exit path (Drop).
//!
//! The load generator runs on the same cores as the nodes, and its live signing (one BLS
//! signature per request) takes cores the nodes then lack; real clients sign on their own
//! machines. `--presign N` maps and signs the run's first N requests before the timed phase (on
//! every core, while the nodes idle), and the summary states how many were presigned and how
//! many were signed live during the run. By default every run presigns enough for itself at a
//! generous rate, so the timed phase measures the nodes, not the generator's preparation.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{LocalCluster, Tuning};
use loadgen::driver::{RunConfig, Schedule};
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
    /// Seconds of load.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Events per loadgen request (1..=8190).
    #[arg(long, default_value_t = 8190)]
    pub batch: usize,
    /// Requests in flight (closed loop; default: 2 with batches of 1,024 events or more, else
    /// the target's connections x pipeline).
    #[arg(long, conflicts_with = "rate")]
    pub in_flight: Option<usize>,
    /// Open loop: offer this many transfers/s at a fixed pace, one request every batch / rate
    /// seconds, whatever the replies do; latency runs from each request's intended send time
    /// (coordinated-omission corrected). Without it the run is a closed loop (the ceiling).
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
    /// Transfers each node's ledger is sized for at start (default: 300,000/s x duration, at
    /// most 12,000,000: about 2.4 GiB a node by the record sizes): the tables are allocated before the run. A run that
    /// commits more grows them as it goes (slower, never stopping).
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
    /// Seconds of the same load, untimed, before the timed run (after the account set-up, before
    /// presigning): the nodes' heaps, caches and connections reach their working size first.
    /// 0 = off.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Requests to map and sign before the timed run (on every core), sent without signing
    /// during it; live signing resumes once they are used up. 0 = off (the generator signs
    /// during the run, on the nodes' cores). Default: enough for the run at 300,000 transfers/s
    /// (1.5 x the batched target), or with `--batch 1` at 1.5 x the signature ceiling, from the
    /// probe taken before it.
    /// The summary says how many were presigned and how many were signed live.
    #[arg(long)]
    pub presign: Option<usize>,
    /// Loadgen result directory (default ./loadgen-results/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// How long the untimed account set-up may wait for its last reply.
const SETUP_WAIT_MAX: Duration = Duration::from_secs(300);

/// `--pipeline` with `--batch 1` unless given.
const BATCH1_PIPELINE: usize = 48;
/// `--batch 1` presigns for a run at this multiple of the signature ceiling unless `--presign`
/// is given (a faster run signs the rest live, and the summary says so). The accounts are
/// created in an untimed set-up before presigning, so these are all transfers.
const BATCH1_PRESIGN_CEILINGS: f64 = 1.5;
/// Other batch sizes presign for a run at this many transfers/s (1.5 x the batched target), and
/// size each node's ledger for it.
const PRESIGN_TRANSFERS_PER_S: f64 = 300_000.0;
/// Batches of at least this many events get the large-request defaults (`with_run_defaults`).
const LARGE_BATCH_EVENTS: usize = 1_024;
/// Large requests: in flight, and the nodes' verify-window and dissemination-batch deadlines.
const LARGE_IN_FLIGHT: usize = 2;
const LARGE_VERIFY_DEADLINE_US: u64 = 500;
const LARGE_BATCH_DEADLINE_MS: u64 = 1;
/// Loadgen maps each batch to one request per debiting institution (`cluster::INSTITUTIONS`), so
/// a batch of B transfers is about this many requests of B / 4 transfers.
const INSTITUTION_COUNT: usize = 4;

impl Args {
    /// The driver's schedule, as the summary names it.
    fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// A generator that does not map and sign on the nodes' cores during the run. One-signature
    /// requests measure the nodes' signature throughput, so they also need enough of them in
    /// flight to keep every verifier busy. Large requests (thousands of transfers each) run at
    /// the cluster's knee, 2 in flight, where more would only queue (latency = queue / rate),
    /// and with node deadlines sized for a few large requests a second: the defaults (a 2 ms
    /// verify window, a 5 ms dissemination batch) are sized to gather streams of small requests,
    /// which a few large ones never fill, so each request waited out both. Explicit flags win.
    fn with_run_defaults(mut self, ceiling_requests_per_s: f64) -> Args {
        if self.batch >= LARGE_BATCH_EVENTS {
            self.in_flight = self.in_flight.or(Some(LARGE_IN_FLIGHT));
            self.verify_deadline_us = self.verify_deadline_us.or(Some(LARGE_VERIFY_DEADLINE_US));
            self.batch_deadline_ms = self.batch_deadline_ms.or(Some(LARGE_BATCH_DEADLINE_MS));
        }
        let run = if self.batch == 1 {
            self.pipeline = self.pipeline.or(Some(BATCH1_PIPELINE));
            ceiling_requests_per_s * BATCH1_PRESIGN_CEILINGS * self.duration
        } else {
            let requests_per_batch = INSTITUTION_COUNT.min(self.batch) as f64;
            PRESIGN_TRANSFERS_PER_S * self.duration / self.batch as f64 * requests_per_batch
        };
        self.presign = self.presign.or(Some(run.ceil() as usize));
        self
    }
}

fn run_config(args: &Args, in_flight: usize) -> Result<RunConfig, String> {
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be > 0".into());
    }
    let schedule = match args.rate {
        Some(events_per_s) => Schedule::Open { events_per_s },
        None => Schedule::Closed { in_flight },
    };
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

/// What `drive` measured: loadgen's summary, the TCP target's counters, and what presigning did.
struct Driven {
    summary: loadgen::output::Summary,
    stats: TcpStats,
    presign: Option<PresignReport>,
    presigned_unsent: u64,
    /// Hypervisor steal over the timed run (None where `/proc/stat` cannot be read).
    steal: Option<crate::steal::Steal>,
}

/// Drives the cluster (after presigning, if asked) and returns what it measured.
fn drive(args: &Args, cluster: &LocalCluster) -> Result<Driven, String> {
    let mut target = TcpTarget::connect(&TcpConfig {
        cluster: cluster.out(),
        connections: args.connections,
        pipeline: args.pipeline.unwrap_or(1),
        reply_timeout: Duration::from_secs(30),
        map: TcpConfig::map_default(),
        order: loadgen::tcp::SendOrder::Exact,
    })
    .map_err(|e| e.to_string())?;
    let in_flight = args.in_flight.unwrap_or(target.in_flight_max());
    let config = run_config(args, in_flight)?;
    let workload = Workload::transfers(TransfersConfig {
        accounts: args.accounts,
        ..TransfersConfig::default()
    })?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| loadgen::output::default_out_dir(SystemTime::now()));
    let config_json = serde_json::json!({
        "workload": "transfers", "accounts": args.accounts, "nodes": args.nodes,
        "target": "tcp", "mode": args.mode(), "offered_events_per_s": args.rate, "in_flight": in_flight, "presign": args.presign.unwrap_or(0),
        "warmup_s": args.warmup,
    });
    let source: loadgen::driver::EventSource<'_> = Box::new(workload.map(Ok));
    // The accounts are created first, untimed (as `loadgen run --target tcp` does): in the timed
    // run the first transfers would wait for the creations they depend on, and that wait, not
    // the cluster, made the first seconds' latencies.
    let (setup, mut source) = target
        .setup(source, SETUP_WAIT_MAX)
        .map_err(|e| e.to_string())?;
    eprint!("{}", setup.render_text());
    if setup.batches_failed > 0 || !setup.rejections.is_empty() {
        return Err(format!(
            "account set-up failed: {} batches failed, rejections {:?}, first failure {:?}",
            setup.batches_failed, setup.rejections, setup.first_failure
        ));
    }
    if args.warmup > 0.0 {
        source = warm_up(args, &mut target, in_flight, source)?;
    }
    let mut presign = None;
    if let Some(requests) = args.presign.filter(|n| *n > 0) {
        let presign_config = PresignConfig {
            requests,
            batch_events: config.batch_events,
            events_max: config.events_max,
        };
        let (report, rest) = target
            .presign(source, &presign_config)
            .map_err(|e| e.to_string())?;
        eprint!("{}", report.render_text());
        presign = Some(report);
        source = rest;
    }
    let progress = Progress::new(false);
    let sampler = crate::steal::Sampler::start();
    let summary =
        loadgen::commands::run_to_dir(source, &mut target, config, config_json, &out, &progress)
            .map_err(|e| e.to_string())?;
    let steal = sampler.finish();
    eprintln!("loadgen results in {}", out.display());
    Ok(Driven {
        summary,
        stats: target.stats().clone(),
        presign,
        presigned_unsent: target.presigned_unsent(),
        steal,
    })
}

/// Runs the load for `args.warmup` seconds, untimed (its figures are printed, not kept), and
/// hands back the rest of the stream. Requests it signs count as signed during set-up.
fn warm_up<'a>(
    args: &Args,
    target: &mut TcpTarget,
    in_flight: usize,
    mut source: loadgen::driver::EventSource<'a>,
) -> Result<loadgen::driver::EventSource<'a>, String> {
    let mut config = run_config(args, in_flight)?;
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
        "WARM-UP (untimed)\n  {:.1} s, {} requests done, {} events committed, p50 {:.0} ms, \
         max {:.0} ms",
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
    let args = args.with_run_defaults(ceiling);
    let tune = Tuning {
        transfers_capacity: args.ledger_transfers.unwrap_or(
            ((PRESIGN_TRANSFERS_PER_S * args.duration) as usize).min(E2E_LEDGER_TRANSFERS_MAX),
        ),
        verify_deadline_us: args.verify_deadline_us,
        batch_deadline_ms: args.batch_deadline_ms,
    };
    let cluster = LocalCluster::start(args.nodes, &tune)?;
    let driven = drive(&args, &cluster)?;
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
    let probes = [pairing_before, pairing_after];
    report(&args, &driven, probes, cores, &digests);
    Ok(())
}

fn digests_agree(digests: &[Option<String>]) -> bool {
    digests.iter().all(|d| d.is_some() && *d == digests[0])
}

fn report(
    args: &Args,
    driven: &Driven,
    probes: [f64; 2],
    cores: usize,
    digests: &[Option<String>],
) {
    let pairing = probes[0].max(probes[1]);
    let sig_limit = cores as f64 * pairing / args.nodes as f64;
    let r = &driven.summary.results;
    let t = &r.totals;
    let s = &driven.stats;
    let agree = digests_agree(digests);
    let ratio = (args.batch == 1).then(|| r.requests_per_s / sig_limit.max(1e-9));
    match args.rate {
        Some(rate) => println!(
            "SUMMARY e2e (open loop at {rate:.0} transfers/s offered, transfers workload, {} nodes on 127.0.0.1)",
            args.nodes
        ),
        None => println!(
            "SUMMARY e2e (closed loop, transfers workload, {} nodes on 127.0.0.1)",
            args.nodes
        ),
    }
    println!("  batch                  {} events/request", args.batch);
    println!("  committed transfers/s  {:.0}", r.committed_events_per_s);
    println!("  requests/s             {:.0}", r.requests_per_s);
    println!(
        "  events committed {}  rejected {}  requests failed {}  unfinished {}",
        t.events_committed, t.events_rejected, t.requests_failed, r.requests_unfinished
    );
    println!("  rejections by code     {:?}", t.rejections_by_code);
    println!("  failures by reason     {:?}", t.failures_by_reason);
    let l = &r.latency_ms;
    println!(
        "  latency ms  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50, l.p99, l.p99_9, l.max
    );
    println!(
        "  pairing limit          {pairing:.0} verifications/s on one core (the higher of {:.0} before and {:.0} after the run)",
        probes[0], probes[1]
    );
    println!(
        "  signature ceiling      {sig_limit:.0} requests/s (= {cores} cores x {pairing:.0} / {} nodes)",
        args.nodes
    );
    if let Some(ratio) = ratio {
        println!("  ratio to ceiling       {ratio:.3}");
    }
    println!(
        "  signing                {} requests presigned before the run, {} signed live during it{}",
        s.requests_presigned,
        s.requests_signed_live,
        if s.requests_signed_live == 0 {
            " (the generator did not sign during the run)"
        } else {
            ""
        }
    );
    if args.warmup > 0.0 {
        println!(
            "  warm-up                {:.1} s of the same load before the run (untimed, not in these figures)",
            args.warmup
        );
    }
    if let Some(p) = &driven.presign {
        println!(
            "  presign                {} of {} asked, signed in {:.2} s on {} threads (untimed); {} unsent",
            p.requests, p.requests_asked, p.sign_s, p.threads, driven.presigned_unsent
        );
    }
    match &driven.steal {
        Some(st) => println!(
            "  hypervisor steal       {:.1} % of CPU time during the run (worst second {:.1} %)",
            st.share * 100.0,
            st.worst_second_share * 100.0
        ),
        None => println!("  hypervisor steal       unknown (/proc/stat unreadable)"),
    }
    println!("  ledger digests agree   {agree}");
    if args.json {
        let json = serde_json::json!({
            "bench": "e2e", "nodes": args.nodes, "batch": args.batch,
            "mode": args.mode(),
            "offered_transfers_per_s": args.rate,
            "transfers_per_s": r.committed_events_per_s,
            "requests_per_s": r.requests_per_s,
            "p50_ms": l.p50, "p99_ms": l.p99, "p999_ms": l.p99_9, "max_ms": l.max,
            "events_committed": t.events_committed, "events_rejected": t.events_rejected,
            "requests_failed": t.requests_failed,
            "pairing_per_s_one_core": pairing, "cores": cores,
            "pairing_probes_per_s": probes,
            "signature_ceiling_requests_per_s": sig_limit,
            "ratio_to_signature_ceiling": ratio,
            "presign": args.presign.unwrap_or(0),
            "warmup_s": args.warmup,
            "pipeline": args.pipeline.unwrap_or(1),
            "requests_presigned": s.requests_presigned,
            "requests_signed_live": s.requests_signed_live,
            "presigned_unsent": driven.presigned_unsent,
            "presign_sign_s": driven.presign.as_ref().map(|p| p.sign_s),
            "digests_agree": agree,
            "steal_share": driven.steal.map(|st| st.share),
            "steal_worst_second_share": driven.steal.map(|st| st.worst_second_share),
        });
        println!("{json}");
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

    fn parse(flags: &[&str]) -> Args {
        let argv = std::iter::once("e2e").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn batch_1_defaults_to_48_per_connection_and_presigns_the_run_at_one_and_a_half_ceilings() {
        let args = parse(&["--batch", "1", "--duration", "20", "--accounts", "200"]);
        let args = args.with_run_defaults(1_000.0);
        assert_eq!(args.pipeline, Some(BATCH1_PIPELINE));
        assert_eq!(args.presign, Some(1_000 * 3 / 2 * 20));
    }

    #[test]
    fn explicit_flags_win_and_batched_runs_presign_for_300k_transfers_per_s() {
        let given = parse(&["--batch", "1", "--pipeline", "16", "--presign", "0"]);
        let given = given.with_run_defaults(1_000.0);
        assert_eq!((given.pipeline, given.presign), (Some(16), Some(0)));
        let batched = parse(&["--batch", "8190", "--duration", "30"]).with_run_defaults(1_000.0);
        assert_eq!(
            crate::cluster::INSTITUTIONS.split(',').count(),
            INSTITUTION_COUNT
        );
        // 300,000 x 30 s = 9 M transfers in batches of 8,190, 4 requests each: 4,396 requests.
        assert_eq!((batched.pipeline, batched.presign), (None, Some(4_396)));
        assert_eq!(
            (
                batched.in_flight,
                batched.verify_deadline_us,
                batched.batch_deadline_ms
            ),
            (Some(2), Some(500), Some(1))
        );
        let given = parse(&[
            "--batch",
            "8190",
            "--presign",
            "0",
            "--in-flight",
            "16",
            "--batch-deadline-ms",
            "5",
        ])
        .with_run_defaults(1_000.0);
        assert_eq!(
            (given.presign, given.in_flight, given.batch_deadline_ms),
            (Some(0), Some(16), Some(5))
        );
        let small = parse(&["--batch", "100"]).with_run_defaults(1_000.0);
        assert_eq!(
            (
                small.in_flight,
                small.verify_deadline_us,
                small.batch_deadline_ms
            ),
            (None, None, None)
        );
    }
}
