//! `bench-harness e2e`'s SUMMARY (one block per timed phase, then the run's limits, sizing and
//! target) and its `--json` last line (the primary phase's figures at the top level, the ceiling
//! phase's under `"ceiling"`).

use loadgen::driver::Schedule;

use super::plan::{
    mode, target_met, Judged, Role, BATCH1_TARGET_RATIO, BATCHED_TARGET_TRANSFERS_PER_S,
    LARGE_BATCH_EVENTS, TARGET_P99_MS, TARGET_RATE_OFFERED,
};
use super::{Args, Driven, PhaseResult};

/// The run's same-run limits and sizing, stated beside the phases.
pub(super) struct Limits {
    /// Single-core pairing rate before the cluster started and after it stopped.
    pub(super) probes: [f64; 2],
    pub(super) cores: usize,
    /// Transfers each node's ledger was sized for.
    pub(super) ledger_transfers: usize,
}

impl Limits {
    /// The higher probe: a noisy probe never flatters the ratio.
    fn pairing(&self) -> f64 {
        self.probes[0].max(self.probes[1])
    }

    /// Every node verifies every signature: `cores x pairing / nodes` requests/s.
    fn signature_ceiling(&self, nodes: usize) -> f64 {
        self.cores as f64 * self.pairing() / nodes as f64
    }
}

/// What the run is judged on, and how it came out.
struct Verdict {
    /// `--batch 1`: requests/s of the primary phase over the signature ceiling.
    ratio: Option<f64>,
    target_met: Option<bool>,
    digests_agree: bool,
}

/// Prints the SUMMARY and, with `--json`, the JSON last line.
pub(super) fn report(
    args: &Args,
    driven: &Driven,
    limits: &Limits,
    digests_agree: bool,
) -> Result<(), String> {
    let primary = driven.phases.first().ok_or("no timed phase ran")?;
    let r = &primary.summary.results;
    let sig_limit = limits.signature_ceiling(args.nodes);
    let ratio = (args.batch == 1).then(|| r.requests_per_s / sig_limit.max(1e-9));
    let judged = Judged {
        transfers_per_s: r.committed_events_per_s,
        p99_ms: r.latency_ms.p99,
        requests_failed: r.totals.requests_failed,
        events_rejected: r.totals.events_rejected,
        requests_unfinished: r.requests_unfinished,
        digests_agree,
    };
    let verdict = Verdict {
        ratio,
        target_met: target_met(args.batch, &judged, ratio),
        digests_agree,
    };
    println!(
        "SUMMARY e2e (transfers workload, {} nodes on 127.0.0.1)",
        args.nodes
    );
    println!("  batch                  {} events/request", args.batch);
    for phase in &driven.phases {
        print_phase(args, phase);
    }
    print_run(args, driven, limits, &verdict);
    if args.json {
        println!("{}", json(args, driven, limits, &verdict));
    }
    Ok(())
}

/// The phase's heading: its role, schedule and length.
fn heading(phase: &PhaseResult, duration_s: f64) -> String {
    let schedule = match phase.phase.schedule {
        Schedule::Open { events_per_s } => {
            format!("open loop at {events_per_s:.0} transfers/s offered")
        }
        Schedule::Closed { in_flight } => format!("closed loop, {in_flight} in flight"),
        Schedule::Replay { speedup } => format!("replay at {speedup} x"),
    };
    match phase.phase.role {
        Role::TargetRate => format!(
            "target rate: {schedule} ({:.1} x the {BATCHED_TARGET_TRANSFERS_PER_S:.0} target), \
             {duration_s} s",
            TARGET_RATE_OFFERED / BATCHED_TARGET_TRANSFERS_PER_S
        ),
        Role::Ceiling => format!("ceiling: {schedule} (the throughput limit), {duration_s} s"),
        Role::Only => format!("{schedule}, {duration_s} s"),
    }
}

fn print_phase(args: &Args, p: &PhaseResult) {
    let r = &p.summary.results;
    let (t, l, s) = (&r.totals, &r.latency_ms, &p.stats);
    println!("  {}", heading(p, args.duration));
    println!("    committed transfers/s  {:.0}", r.committed_events_per_s);
    println!("    requests/s             {:.0}", r.requests_per_s);
    println!(
        "    events committed {}  rejected {}  requests failed {}  unfinished {}",
        t.events_committed, t.events_rejected, t.requests_failed, r.requests_unfinished
    );
    println!("    rejections by code     {:?}", t.rejections_by_code);
    println!("    failures by reason     {:?}", t.failures_by_reason);
    let latency_from = match p.phase.schedule {
        Schedule::Closed { .. } => "closed loop: the latency at saturation, not at a rate",
        _ => "from intended send times, coordinated-omission corrected",
    };
    println!(
        "    latency ms  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({latency_from})",
        l.p50, l.p99, l.p99_9, l.max
    );
    println!(
        "    signing                {} requests presigned before the phase, {} signed live during it{}",
        s.requests_presigned,
        s.requests_signed_live,
        if s.requests_signed_live == 0 {
            " (the generator did not sign during the phase)"
        } else {
            ""
        }
    );
    match &p.presign {
        Some(ps) => println!(
            "    presign                {} of {} asked, signed in {:.2} s on {} threads (untimed); \
             {} unsent",
            ps.requests, ps.requests_asked, ps.sign_s, ps.threads, p.presigned_unsent
        ),
        None => println!("    presign                off"),
    }
    match &p.steal {
        Some(st) => println!(
            "    hypervisor steal       {:.1} % of CPU time during the phase (worst second {:.1} %)",
            st.share * 100.0,
            st.worst_second_share * 100.0
        ),
        None => println!("    hypervisor steal       unknown (/proc/stat unreadable)"),
    }
    match &p.faults {
        Some(f) => println!(
            "    nodes' page faults     {:.0} a second during the phase (minor, all nodes; memory \
             handed back to the kernel and faulted in again shows here)",
            f.per_s
        ),
        None => println!("    nodes' page faults     unknown (/proc unreadable)"),
    }
    match &p.disk {
        Some(d) => println!(
            "    disk (fsync probe)     4 KiB + fdatasync every 10 ms beside the nodes' logs: {}",
            d.figures("sync")
        ),
        None => println!("    disk (fsync probe)     did not run"),
    }
    match &p.hiccup {
        Some(h) => println!(
            "    host (hiccup probe)    a thread sleeping {} ms at a time woke late by {}",
            crate::probe::HICCUP_INTERVAL.as_millis(),
            h.figures("hiccup")
        ),
        None => println!("    host (hiccup probe)    did not run"),
    }
}

/// The lines about the whole run: limits, warm-up, ledger sizing, target, digests.
fn print_run(args: &Args, driven: &Driven, limits: &Limits, verdict: &Verdict) {
    let (pairing, cores) = (limits.pairing(), limits.cores);
    println!(
        "  pairing limit          {pairing:.0} verifications/s on one core (the higher of {:.0} before and {:.0} after the run)",
        limits.probes[0], limits.probes[1]
    );
    println!(
        "  signature ceiling      {:.0} requests/s (= {cores} cores x {pairing:.0} / {} nodes)",
        limits.signature_ceiling(args.nodes),
        args.nodes
    );
    if let Some(ratio) = verdict.ratio {
        println!("  ratio to ceiling       {ratio:.3}");
    }
    if args.warmup > 0.0 {
        println!(
            "  warm-up                {:.1} s of the first phase's load before it (untimed, not in these figures)",
            args.warmup
        );
    }
    let committed: u64 = driven
        .phases
        .iter()
        .map(|p| p.summary.results.totals.events_committed)
        .sum();
    println!(
        "  ledger                 sized for {} transfers a node; the timed phases committed {committed}",
        limits.ledger_transfers
    );
    let target = if args.batch == 1 {
        format!("{BATCH1_TARGET_RATIO} of the signature ceiling")
    } else if args.batch >= LARGE_BATCH_EVENTS {
        format!(
            "{BATCHED_TARGET_TRANSFERS_PER_S:.0} transfers/s at p99 <= {TARGET_P99_MS:.0} ms, \
             nothing failed, rejected or unfinished, digests equal"
        )
    } else {
        "none for this batch size".to_string()
    };
    let met = match verdict.target_met {
        Some(true) => "met",
        Some(false) => "not met",
        None => "-",
    };
    let judged_on = driven.phases.first().map_or("", |p| match p.phase.role {
        Role::TargetRate => " (judged on the target-rate phase)",
        _ => " (judged on the run)",
    });
    println!("  target                 {target}: {met}{judged_on}");
    println!("  ledger digests agree   {}", verdict.digests_agree);
}

/// One phase's figures for the JSON (the `"ceiling"` object).
fn phase_json(p: &PhaseResult) -> serde_json::Value {
    let r = &p.summary.results;
    let (t, l, s) = (&r.totals, &r.latency_ms, &p.stats);
    let (offered, in_flight) = match p.phase.schedule {
        Schedule::Open { events_per_s } => (Some(events_per_s), None),
        Schedule::Closed { in_flight } => (None, Some(in_flight)),
        Schedule::Replay { .. } => (None, None),
    };
    serde_json::json!({
        "mode": mode(p.phase.schedule),
        "offered_transfers_per_s": offered,
        "in_flight": in_flight,
        "transfers_per_s": r.committed_events_per_s,
        "requests_per_s": r.requests_per_s,
        "p50_ms": l.p50, "p99_ms": l.p99, "p999_ms": l.p99_9, "max_ms": l.max,
        "events_committed": t.events_committed, "events_rejected": t.events_rejected,
        "requests_failed": t.requests_failed,
        "requests_unfinished": r.requests_unfinished,
        "presign": p.presign_asked,
        "requests_presigned": s.requests_presigned,
        "requests_signed_live": s.requests_signed_live,
        "presigned_unsent": p.presigned_unsent,
        "steal_share": p.steal.map(|st| st.share),
        "steal_worst_second_share": p.steal.map(|st| st.worst_second_share),
        "node_minor_faults_per_s": p.faults.map(|f| f.per_s),
        "fsync_probe": p.disk.as_ref().map(|d| d.json("syncs")),
        "hiccup_probe": p.hiccup.as_ref().map(|h| {
            let mut json = h.json("samples");
            json["interval_ms"] = (crate::probe::HICCUP_INTERVAL.as_millis() as u64).into();
            json
        }),
    })
}

/// The `--json` last line: the primary (first) phase's figures at the top level, as before
/// there were phases, with `mode`, `offered_transfers_per_s` and `phase` naming it; the ceiling
/// phase under `"ceiling"` (null when it did not run); the target and whether it was met.
fn json(args: &Args, driven: &Driven, limits: &Limits, verdict: &Verdict) -> serde_json::Value {
    let mut json = driven
        .phases
        .first()
        .map_or_else(|| serde_json::json!({}), phase_json);
    let ceiling = driven
        .phases
        .iter()
        .find(|p| p.phase.role == Role::Ceiling)
        .map(phase_json);
    let primary = driven.phases.first();
    let batched = args.batch >= LARGE_BATCH_EVENTS;
    let more = serde_json::json!({
        "bench": "e2e", "nodes": args.nodes, "batch": args.batch,
        "phase": primary.map(|p| p.phase.role.name()),
        "pairing_per_s_one_core": limits.pairing(), "cores": limits.cores,
        "pairing_probes_per_s": limits.probes,
        "signature_ceiling_requests_per_s": limits.signature_ceiling(args.nodes),
        "ratio_to_signature_ceiling": verdict.ratio,
        "warmup_s": args.warmup,
        "pipeline": args.pipeline.unwrap_or(1),
        "presign_sign_s": primary.and_then(|p| p.presign.as_ref()).map(|p| p.sign_s),
        "digests_agree": verdict.digests_agree,
        "ledger_transfers": limits.ledger_transfers,
        "ceiling": ceiling,
        "target_transfers_per_s": batched.then_some(BATCHED_TARGET_TRANSFERS_PER_S as u64),
        "target_p99_ms": batched.then_some(TARGET_P99_MS as u64),
        "target_ratio_to_signature_ceiling": (args.batch == 1).then_some(BATCH1_TARGET_RATIO),
        "target_met": verdict.target_met,
    });
    if let (Some(top), serde_json::Value::Object(more)) = (json.as_object_mut(), more) {
        top.extend(more);
    }
    json
}
