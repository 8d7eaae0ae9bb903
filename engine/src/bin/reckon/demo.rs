//! `reckon demo`: starts a 4-node consortium on loopback, drives a joint-loan workload through it,
//! and prints throughput, latency, reserve positions, reconciliation results and ledger digests.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

#[path = "demo_cluster.rs"]
mod demo_cluster;
#[path = "demo_load.rs"]
mod demo_load;
#[path = "demo_out.rs"]
mod demo_out;
#[path = "demo_report.rs"]
mod demo_report;

use demo_cluster::{Consortium, BANKS, NODES};
use demo_load::{Role, Shared, BATCH, IN_FLIGHT, LEAD, PARTNERS};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of workload after setup.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Where latency.hgrm, latency.png/.svg and summary.json go.
    #[arg(long, default_value = "reckon-demo")]
    pub out: PathBuf,
}

/// What the workload measured.
struct Measured {
    histogram: Histogram<u64>,
    seconds: f64,
}

pub fn run(args: Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| e.to_string())?;
    }
    println!(
        "starting a {NODES}-node consortium on 127.0.0.1 (lead bank {}, partner banks {}, {}, {})",
        BANKS[0], BANKS[1], BANKS[2], BANKS[3]
    );
    let capacity = demo_cluster::demo_transfers_capacity(args.duration);
    let mut consortium = Consortium::start(&stop, capacity)?;
    println!(
        "consortium up in {} (client ports {}..{})",
        consortium.dir.display(),
        consortium.base_port + 100,
        consortium.base_port + 100 + NODES as u16 - 1
    );
    let shared = Shared::default();
    demo_load::setup(&consortium, &shared)?;
    println!(
        "setup: {} loans split 80/20 between the partner banks' reserves and {}'s funding",
        demo_load::loans_count(),
        BANKS[0]
    );
    let measured = drive(&mut consortium, &shared, &stop, args.duration)?;
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    let summary = report(&consortium, &shared, &measured)?;
    demo_out::write_all(&args.out, &measured.histogram, &summary)?;
    println!(
        "\nwrote {0}/latency.hgrm, {0}/latency.png, {0}/latency.svg, {0}/summary.json",
        args.out.display()
    );
    consortium.remove_dir = true;
    Ok(())
}

/// The workload's connections: the lead bank on every node, each partner bank on one node.
fn roles() -> Vec<(u32, Role, usize)> {
    let mut roles: Vec<(u32, Role, usize)> = (0..NODES).map(|n| (LEAD, Role::Lead, n)).collect();
    for (n, p) in PARTNERS.iter().enumerate() {
        roles.push((*p, Role::Partner(*p), (n + 1) % NODES));
    }
    roles
}

fn progress_bar(duration: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration);
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn drive(
    consortium: &mut Consortium,
    shared: &Shared,
    stop: &AtomicBool,
    duration: u64,
) -> Result<Measured, String> {
    println!(
        "driving for {duration} s: {} connections, {BATCH} events per signed request, {IN_FLIGHT} requests in flight each",
        roles().len()
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(duration);
    let mut files = Vec::new();
    for (institution, role, node) in roles() {
        files.push((consortium.client_file(institution)?, role, node));
    }
    let bar = progress_bar(duration);
    let results: Vec<Result<Histogram<u64>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .into_iter()
            .map(|(file, role, node)| {
                let addr = consortium.client_addr(node);
                scope.spawn(move || demo_load::worker(file, addr, role, shared, end, stop))
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) {
            let elapsed = start.elapsed().as_secs_f64();
            bar.set_position((elapsed as u64).min(duration));
            bar.set_message(format!(
                "{} requests, {} events committed ({:.0} events/s)",
                shared.requests.load(Ordering::Relaxed),
                shared.events.load(Ordering::Relaxed),
                shared.events.load(Ordering::Relaxed) as f64 / elapsed.max(0.001)
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    for i in 0..NODES {
        consortium.check_alive(i)?;
    }
    let mut histogram = demo_load::new_histogram()?;
    for result in results {
        histogram.add(result?).map_err(|e| e.to_string())?;
    }
    Ok(Measured { histogram, seconds })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

fn report(
    consortium: &Consortium,
    shared: &Shared,
    m: &Measured,
) -> Result<serde_json::Value, String> {
    let requests = shared.requests.load(Ordering::Relaxed);
    let events = shared.events.load(Ordering::Relaxed);
    let ops = events as f64 / m.seconds;
    let rps = requests as f64 / m.seconds;
    let h = &m.histogram;
    println!(
        "\nthroughput: {ops:.0} committed operations/s, {rps:.1} requests/s ({events} operations in {requests} requests over {:.1} s; {} refused by the ledger, {} requests turned away)",
        m.seconds,
        shared.refused.load(Ordering::Relaxed),
        shared.rejected.load(Ordering::Relaxed)
    );
    let max = h.max() as f64 / 1e6;
    println!(
        "latency (submit→committed, per request): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {max:.1} ms",
        ms(h, 0.5),
        ms(h, 0.9),
        ms(h, 0.99),
        ms(h, 0.999)
    );
    if requests == 0 {
        return Err("no request committed".into());
    }
    let end = demo_report::post_statements(consortium, shared)?;
    let (positions, reconciliations) =
        demo_report::print_positions_and_reconciliation(consortium, shared, end)?;
    let digests = demo_report::agreed_digests(consortium)?;
    Ok(serde_json::json!({
        "nodes": NODES,
        "seconds": m.seconds,
        "requests": requests,
        "operations": events,
        "operations_per_second": ops,
        "requests_per_second": rps,
        "events_per_request": BATCH,
        "latency_ms": {
            "p50": ms(h, 0.5), "p90": ms(h, 0.9), "p99": ms(h, 0.99),
            "p99.9": ms(h, 0.999), "max": max, "count": h.len(),
        },
        "reserve_positions": positions,
        "reconciliations": reconciliations,
        "ledger_digests": digests,
    }))
}
