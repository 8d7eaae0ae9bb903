//! What a `bench-harness e2e` run plans before it touches a cluster: its timed phases (`phases`),
//! what each presigns (`presign_requests`), the ledger sizing (`ledger_transfers`), the nodes'
//! deadlines by request size (`Args::with_run_defaults`), and the rule that judges the issue's
//! targets (`target_met`). Pure functions of the arguments: no I/O.

use loadgen::driver::Schedule;

use super::Args;

/// The default ledger size's cap: below 3/8 of a 2^25-slot id index (768 MiB). At 16 Mi
/// transfers the index would take 2^26 slots (1.5 GiB a node; `U128Map` sizing).
pub(super) const E2E_LEDGER_TRANSFERS_MAX: usize = 12_000_000;

/// The issue's batched target: at least this many committed transfers/s sustained...
pub(super) const BATCHED_TARGET_TRANSFERS_PER_S: f64 = 200_000.0;
/// ... at a p99 latency of at most this many milliseconds.
pub(crate) const TARGET_P99_MS: f64 = 100.0;
/// The target-rate phase offers this many percent more than the target: an open loop commits at
/// most what it offers, and its committed rate counts the drain after the last send, so offering
/// the target itself would report just under it.
pub(super) const TARGET_RATE_HEADROOM_PERCENT: f64 = 10.0;
/// The target-rate phase's offered load: 1.1 x the batched target (exactly 220,000).
pub(super) const TARGET_RATE_OFFERED: f64 =
    BATCHED_TARGET_TRANSFERS_PER_S * (100.0 + TARGET_RATE_HEADROOM_PERCENT) / 100.0;
/// The issue's batch-1 target: requests/s at least this share of the signature ceiling.
pub(super) const BATCH1_TARGET_RATIO: f64 = 0.8;

/// `--pipeline` with `--batch 1` unless given.
pub(super) const BATCH1_PIPELINE: usize = 48;
/// `--batch 1` closed loops presign for a run at this multiple of the signature ceiling unless
/// `--presign` is given (a faster run signs the rest live, and the summary says so). The accounts
/// are created in an untimed set-up before presigning, so these are all transfers.
pub(super) const BATCH1_PRESIGN_CEILINGS: f64 = 1.5;
/// Closed loops of other batch sizes presign for a run at this many transfers/s (1.5 x the
/// batched target), and each node's ledger is sized for it.
pub(super) const PRESIGN_TRANSFERS_PER_S: f64 = 300_000.0;
/// An open loop sends exactly its offered load; it presigns this much more, because a batch can
/// map to more requests than `INSTITUTION_COUNT` (the surplus is dropped unsent).
pub(super) const PRESIGN_OPEN_MARGIN: f64 = 1.05;
/// Batches of at least this many events get the large-request defaults (`with_run_defaults`) and,
/// unless a schedule is given, the two phases.
pub(super) const LARGE_BATCH_EVENTS: usize = 1_024;
/// Large requests: in flight in the ceiling phase, and the nodes' verify-window and
/// dissemination-batch deadlines.
pub(super) const LARGE_IN_FLIGHT: usize = 2;
pub(super) const LARGE_VERIFY_DEADLINE_US: u64 = 500;
pub(super) const LARGE_BATCH_DEADLINE_MS: u64 = 1;
/// Loadgen maps each batch to one request per debiting institution (`cluster::INSTITUTIONS`), so
/// a batch of B transfers is about this many requests of B / 4 transfers.
pub(super) const INSTITUTION_COUNT: usize = 4;

/// Which timed phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The default batched run's first phase: open loop at `TARGET_RATE_OFFERED`.
    TargetRate,
    /// Its second: closed loop with `LARGE_IN_FLIGHT` in flight.
    Ceiling,
    /// The one phase of every other run (`--rate`, `--in-flight`, smaller batches).
    Only,
}

impl Role {
    /// The phase's name in the JSON.
    pub(super) fn name(self) -> &'static str {
        self.subdir().unwrap_or("run")
    }

    /// Where in `--out` the phase's loadgen results go (None: `--out` itself).
    pub(super) fn subdir(self) -> Option<&'static str> {
        match self {
            Role::TargetRate => Some("target-rate"),
            Role::Ceiling => Some("ceiling"),
            Role::Only => None,
        }
    }
}

/// One timed phase: `seconds` of `schedule`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Phase {
    pub(super) role: Role,
    pub(super) schedule: Schedule,
    pub(super) seconds: f64,
}

/// The schedule's name in the summary and the JSON.
pub(super) fn mode(schedule: Schedule) -> &'static str {
    match schedule {
        Schedule::Open { .. } => "open",
        Schedule::Closed { .. } => "closed",
        Schedule::Replay { .. } => "replay",
    }
}

/// The timed phases, in order; the first is the primary one (the JSON's top-level figures).
/// `target_in_flight` is the target's cap (connections x pipeline), the closed loop's default
/// for batches under `LARGE_BATCH_EVENTS`.
pub(super) fn phases(args: &Args, target_in_flight: usize) -> Vec<Phase> {
    let only = |schedule| {
        vec![Phase {
            role: Role::Only,
            schedule,
            seconds: args.duration,
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
            seconds: args.duration,
        },
        Phase {
            role: Role::Ceiling,
            schedule: Schedule::Closed {
                in_flight: LARGE_IN_FLIGHT,
            },
            seconds: args.ceiling_duration,
        },
    ]
}

/// Requests to presign before `phase` (its warm-up runs on them too): `--presign` when given;
/// else the phase's load for its warm-up and its duration: an open loop's offered rate (x
/// `PRESIGN_OPEN_MARGIN`), a closed loop at `PRESIGN_TRANSFERS_PER_S`, or with `--batch 1` at
/// `BATCH1_PRESIGN_CEILINGS` x the signature ceiling (`ceiling_requests_per_s`).
pub(super) fn presign_requests(args: &Args, phase: &Phase, ceiling_requests_per_s: f64) -> usize {
    if let Some(requests) = args.presign {
        return requests;
    }
    let seconds = args.warmup + phase.seconds;
    let requests_per_batch = INSTITUTION_COUNT.min(args.batch) as f64;
    let requests = match phase.schedule {
        Schedule::Open { events_per_s } => {
            events_per_s * PRESIGN_OPEN_MARGIN * seconds / args.batch as f64 * requests_per_batch
        }
        _ if args.batch == 1 => ceiling_requests_per_s * BATCH1_PRESIGN_CEILINGS * seconds,
        _ => PRESIGN_TRANSFERS_PER_S * seconds / args.batch as f64 * requests_per_batch,
    };
    requests.ceil() as usize
}

/// Transfers each node's ledger is sized for: `--ledger-transfers`, else every phase and its
/// warm-up at the phase's rate (an open loop's offered rate, a closed loop's
/// `PRESIGN_TRANSFERS_PER_S`), at most `E2E_LEDGER_TRANSFERS_MAX`.
pub(super) fn ledger_transfers(args: &Args) -> usize {
    if let Some(transfers) = args.ledger_transfers {
        return transfers;
    }
    let rate = |phase: &Phase| match phase.schedule {
        Schedule::Open { events_per_s } => events_per_s,
        _ => PRESIGN_TRANSFERS_PER_S,
    };
    let phases = phases(args, 1);
    let total: f64 = phases
        .iter()
        .map(|p| rate(p) * (args.warmup + p.seconds))
        .sum();
    (total as usize).min(E2E_LEDGER_TRANSFERS_MAX)
}

impl Args {
    /// Node and connection settings by request size. One-signature requests measure the nodes'
    /// signature throughput, so they need enough of them in flight to keep every verifier busy.
    /// Large requests (thousands of transfers each) get node deadlines sized for a few large
    /// requests a second: the defaults (a 2 ms verify window, a 5 ms dissemination batch) are
    /// sized to gather streams of small requests, which a few large ones never fill, so each
    /// request waited out both. (Their closed loop runs at the cluster's knee, 2 in flight, where
    /// more would only queue: `phases`.) Explicit flags win.
    pub(super) fn with_run_defaults(mut self) -> Args {
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

/// The figures a run's target is judged on: the primary phase's, and the digests.
#[derive(Clone, Copy, Debug)]
pub(super) struct Judged {
    pub(super) transfers_per_s: f64,
    pub(super) p99_ms: f64,
    pub(super) requests_failed: u64,
    pub(super) events_rejected: u64,
    /// Requests with no completion when the phase's drain ended: their latency is in no
    /// percentile, so a run with any cannot claim one.
    pub(super) requests_unfinished: u64,
    pub(super) digests_agree: bool,
}

/// The issue's batched target: at least `BATCHED_TARGET_TRANSFERS_PER_S` committed at a p99 of
/// at most `TARGET_P99_MS`, with nothing failed, rejected or unfinished, and the nodes' ledgers
/// equal.
pub(super) fn batched_target_met(j: &Judged) -> bool {
    j.transfers_per_s >= BATCHED_TARGET_TRANSFERS_PER_S
        && j.p99_ms <= TARGET_P99_MS
        && j.requests_failed == 0
        && j.events_rejected == 0
        && j.requests_unfinished == 0
        && j.digests_agree
}

/// Whether the run met the issue's target for its batch size: with `--batch 1`, requests/s at
/// least `BATCH1_TARGET_RATIO` of the signature ceiling (`ratio`); with batches of
/// `LARGE_BATCH_EVENTS` or more, `batched_target_met`; other sizes have no target (None).
pub(super) fn target_met(batch: usize, judged: &Judged, ratio: Option<f64>) -> Option<bool> {
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
        let seconds = |flags: &[&str]| -> Vec<f64> {
            phases(&parse(flags), 80)
                .iter()
                .map(|p| p.seconds)
                .collect()
        };
        assert_eq!(
            seconds(&[]),
            vec![30.0, 10.0],
            "the ceiling runs --ceiling-duration"
        );
        assert_eq!(
            seconds(&["--duration", "20", "--ceiling-duration", "5"]),
            vec![20.0, 5.0]
        );
        assert_eq!(seconds(&["--rate", "1000", "--duration", "7"]), vec![7.0]);
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
        // 1.5 ceilings for the 3 s warm-up and the 20 s phase.
        assert_eq!(
            presign_requests(&args, &phase, 1_000.0),
            1_000 * 3 / 2 * (3 + 20)
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
        // Each phase presigns for its 3 s warm-up too. 220,000 x 1.05 x 33 s = 7.623 M transfers
        // in batches of 8,190, 4 requests each: 3,724 requests.
        assert_eq!(presign_requests(&args, &target_rate, 1_000.0), 3_724);
        // 300,000 x 13 s = 3.9 M transfers in batches of 8,190, 4 requests each: 1,905 requests.
        assert_eq!(presign_requests(&args, &ceiling, 1_000.0), 1_905);
        // An open loop of one-transfer requests: its rate, not the signature ceiling.
        let batch_1 = parse(&["--batch", "1", "--duration", "10", "--rate", "1000"]);
        let [open] = phases(&batch_1, 80)[..] else {
            panic!("one phase")
        };
        assert_eq!(presign_requests(&batch_1, &open, 5_000.0), 13_650);
        // --presign N: N before every phase (0: never).
        let given = parse(&["--presign", "0"]);
        for phase in phases(&given, 80) {
            assert_eq!(presign_requests(&given, &phase, 1_000.0), 0);
        }
        let given = parse(&["--batch", "1", "--pipeline", "16", "--presign", "7"]);
        let given = given.with_run_defaults();
        assert_eq!(given.pipeline, Some(16));
        let [phase] = phases(&given, 80)[..] else {
            panic!("one phase")
        };
        assert_eq!(presign_requests(&given, &phase, 1e3), 7);
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
        // 3 s warm-up and 10 s at 220,000, then a 3 s warm-up and 10 s of the ceiling at 300,000.
        let two = parse(&["--duration", "10"]);
        assert_eq!(ledger_transfers(&two), 2_860_000 + 3_900_000);
        let closed = parse(&["--duration", "10", "--in-flight", "2", "--warmup", "0"]);
        assert_eq!(ledger_transfers(&closed), 3_000_000);
        // The issue's command fits the default sizing: 33 s at 220,000 and 13 s at 300,000.
        let issue = parse(&["--duration", "30"]);
        assert_eq!(ledger_transfers(&issue), 7_260_000 + 3_900_000);
        let long = parse(&["--duration", "60"]);
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
