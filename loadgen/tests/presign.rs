//! Presigning (`tcp::outbox`): the requests presigned before a run are byte-identical to those
//! the live path signs at send time (same ids, bodies and valid signatures), in the batches the
//! real driver cuts; streams with statements and batches other than the presigned ones are
//! refused.

use std::collections::VecDeque;
use std::time::Duration;

use engine::crypto::SignedRequest;
use loadgen::driver::{self, EventSource, RunConfig, Schedule};
use loadgen::engine_map::{MapConfig, Mapper};
use loadgen::op::TraceEvent;
use loadgen::progress::Progress;
use loadgen::signing::Keyring;
use loadgen::target::{Completion, Outcome, Target, TargetError, Ticket};
use loadgen::tcp::outbox::{Outbox, OutboxError};
use loadgen::tcp::PresignConfig;
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};

const CHAIN: u64 = 7;
const KEY_SEED: u64 = 5;
const REQUEST_ID_FIRST: u128 = 1 << 80;

fn outbox() -> Outbox {
    let mapper = Mapper::new(MapConfig::default()).expect("config");
    Outbox::new(mapper, Keyring::derived(KEY_SEED, CHAIN), REQUEST_ID_FIRST)
}

fn transfers() -> Workload {
    Workload::transfers(TransfersConfig {
        seed: 11,
        accounts: 40,
        ..TransfersConfig::default()
    })
    .expect("valid")
}

/// One request as it went on the wire.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    request_id: u128,
    presigned: bool,
    payload: Vec<u8>,
}

/// A target that takes every request from an outbox, as the TCP scheduler does (presigned or
/// signed now), records the payloads, and completes at once.
struct OutboxTarget {
    outbox: Outbox,
    sent: Vec<Sent>,
    ready: VecDeque<Completion>,
}

impl Target for OutboxTarget {
    fn name(&self) -> &str {
        "outbox"
    }

    fn in_flight_max(&self) -> usize {
        64
    }

    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        let requests = self
            .outbox
            .next_batch(batch)
            .map_err(|e| TargetError::Other(e.to_string()))?;
        for mut n in requests {
            let presigned = n.signed.is_some();
            let payload = self
                .outbox
                .payload(&mut n)
                .map_err(|e| TargetError::Other(e.to_string()))?;
            self.sent.push(Sent {
                request_id: n.request_id,
                presigned,
                payload,
            });
        }
        let outcome = Outcome::Executed {
            events_committed: batch.len() as u32,
            rejections: Vec::new(),
        };
        self.ready.push_back(Completion { ticket, outcome });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, _timeout: Duration) -> Result<(), TargetError> {
        out.extend(self.ready.drain(..));
        Ok(())
    }
}

fn run_config(batch_events: usize, events_max: u64) -> RunConfig {
    RunConfig {
        schedule: Schedule::Closed { in_flight: 8 },
        batch_events,
        duration: None,
        events_max: Some(events_max),
        interval: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(1),
    }
}

/// Drives `source` through the real driver into an outbox target; returns what it sent.
fn drive(outbox: Outbox, source: EventSource<'_>, config: RunConfig) -> (Vec<Sent>, Outbox) {
    let mut target = OutboxTarget {
        outbox,
        sent: Vec::new(),
        ready: VecDeque::new(),
    };
    let run = driver::run(source, &mut target, config, &Progress::new(false)).expect("run");
    assert_eq!(run.recorder.totals.requests_failed, 0);
    (target.sent, target.outbox)
}

#[test]
fn presigned_requests_are_byte_identical_to_live_ones_with_the_same_ids() {
    for batch_events in [1, 7] {
        let config = run_config(batch_events, 900);
        let (live, _) = drive(outbox(), Box::new(transfers().map(Ok)), config.clone());
        assert!(live.iter().all(|s| !s.presigned));

        let mut presigning = outbox();
        let presign = PresignConfig {
            requests: 150,
            batch_events,
            events_max: config.events_max,
        };
        let (report, rest) = presigning
            .presign(Box::new(transfers().map(Ok)), &presign)
            .expect("presign");
        assert!(report.requests >= 150, "{report:?}");
        let (sent, presigning) = drive(presigning, rest, config);
        assert_eq!(presigning.presigned_requests_left(), 0);

        // The first `report.requests` went out presigned, the rest were signed live...
        let presigned = sent.iter().take_while(|s| s.presigned).count();
        assert_eq!(presigned as u64, report.requests);
        assert!(sent.len() > presigned, "live signing resumed");
        assert!(sent[presigned..].iter().all(|s| !s.presigned));
        // ... and every one is the live path's request, byte for byte, with its id.
        assert_eq!(sent.len(), live.len());
        for (i, (p, l)) in sent.iter().zip(&live).enumerate() {
            assert_eq!(p.request_id, l.request_id, "request {i}");
            assert_eq!(p.payload, l.payload, "request {i} (batch {batch_events})");
        }
        // Ids count up in apply order: no duplicate, no gap.
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(s.request_id, REQUEST_ID_FIRST + i as u128);
        }
        assert_signatures_valid(&sent);
    }
}

fn assert_signatures_valid(sent: &[Sent]) {
    let mut keys = Keyring::derived(KEY_SEED, CHAIN);
    for s in sent {
        let signed = SignedRequest::decode(&s.payload).expect("decode");
        assert_eq!(signed.request.request_id, s.request_id);
        assert_eq!(signed.request.chain_id, CHAIN);
        let key = keys.pair(signed.request.institution).expect("key").public();
        assert!(signed.verify_with(key), "signature of {}", s.request_id);
    }
}

#[test]
fn presign_stops_at_the_run_event_limit_and_replays_the_stream_unchanged() {
    let mut o = outbox();
    let presign = PresignConfig {
        requests: 10_000,
        batch_events: 3,
        events_max: Some(10),
    };
    let (report, rest) = o
        .presign(Box::new(transfers().map(Ok)), &presign)
        .expect("presign");
    assert_eq!(report.events, 10);
    assert_eq!(
        report.batches, 4,
        "3 + 3 + 3 + 1 events, as the driver cuts them"
    );
    let replayed: Vec<TraceEvent> = rest.take(25).map(|e| e.expect("event")).collect();
    let fresh: Vec<TraceEvent> = transfers().take(25).collect();
    assert_eq!(replayed, fresh);
}

#[test]
fn presign_refuses_a_stream_with_statements() {
    let workload = Workload::joint_loan(JointLoanConfig {
        loans: 10,
        ..JointLoanConfig::default()
    })
    .expect("valid");
    let presign = PresignConfig {
        requests: 100_000,
        batch_events: 10,
        events_max: None,
    };
    let result = outbox().presign(Box::new(workload.map(Ok)), &presign);
    assert!(
        matches!(result, Err(OutboxError::PresignStatement { .. })),
        "{:?}",
        result.err()
    );
}

#[test]
fn a_submitted_batch_other_than_the_presigned_one_is_refused() {
    let mut o = outbox();
    let presign = PresignConfig {
        requests: 5,
        batch_events: 4,
        events_max: None,
    };
    let (_, _rest) = o
        .presign(Box::new(transfers().map(Ok)), &presign)
        .expect("presign");
    // The driver cut another batch size than presign was told: the first 2 events, not 4.
    let other: Vec<TraceEvent> = transfers().take(2).collect();
    assert!(matches!(
        o.next_batch(&other),
        Err(OutboxError::PresignMismatch { index: 0 })
    ));
}
