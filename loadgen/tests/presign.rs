//! Presigning (`tcp::outbox`): the requests presigned before a run are byte-identical to those
//! the live path signs at send time (same ids, bodies and valid signatures), in the batches the
//! real driver cuts; streams with statements and batches other than the presigned ones are
//! refused; a second presign before a second run drops what the first left unsent.

use std::collections::VecDeque;
use std::time::Duration;

use engine::codec::Record;
use engine::crypto::SignedRequest;
use engine::types::{Operation, Transfer, EVENT_BYTES};
use loadgen::driver::{self, EventSource, RunConfig, Schedule};
use loadgen::engine_map::{MapConfig, Mapper};
use loadgen::op::{Op, TraceEvent};
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

/// (debit, credit, amount) of every transfer record `sent` carries, sorted, and whether their
/// transfer ids are all distinct.
fn transfers_sent(sent: &[Sent]) -> (Vec<(u128, u128, u128)>, bool) {
    let mut legs = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut distinct = true;
    for s in sent {
        let request = SignedRequest::decode(&s.payload).expect("decode").request;
        if request.operation != Operation::CreateTransfers as u8 {
            continue;
        }
        for record in request.body.chunks_exact(EVENT_BYTES) {
            let t = Transfer::decode(record.try_into().expect("record")).expect("transfer");
            distinct &= ids.insert(t.id);
            legs.push((t.debit_account_id, t.credit_account_id, t.amount));
        }
    }
    legs.sort_unstable();
    (legs, distinct)
}

/// (debit, credit, amount) of every transfer among `events`, sorted (ids base 0).
fn transfers_of(events: &[TraceEvent]) -> Vec<(u128, u128, u128)> {
    let mut legs: Vec<_> = events
        .iter()
        .filter_map(|e| match e.op {
            Op::Transfer {
                debit,
                credit,
                amount,
            } => Some((u128::from(debit), u128::from(credit), u128::from(amount))),
            _ => None,
        })
        .collect();
    legs.sort_unstable();
    legs
}

#[test]
fn a_second_presign_drops_what_the_first_run_left_unsent_and_every_event_goes_out_once() {
    let batch_events = 7;
    let presign = |requests| PresignConfig {
        requests,
        batch_events,
        events_max: None,
    };
    let (run1_events, run2_events) = (20 * batch_events as u64, 40 * batch_events as u64);
    let mut o = outbox();
    let (first, mut source) = o
        .presign(Box::new(transfers().map(Ok)), &presign(200))
        .expect("first presign");
    assert!(first.events > run1_events, "{first:?}");
    assert_eq!(first.requests_discarded, 0);
    // Run 1 ends before it reaches every presigned batch...
    let (sent1, mut o) = drive(
        o,
        Box::new(&mut source),
        run_config(batch_events, run1_events),
    );
    let unsent = o.presigned_requests_left();
    assert!(
        unsent > 0 && unsent < first.requests,
        "{unsent} of {first:?}"
    );
    assert!(sent1.iter().all(|s| s.presigned));
    // ... and a duration-bound driver drops the batch it read ahead at the deadline.
    let dropped: Vec<TraceEvent> = source
        .by_ref()
        .take(batch_events)
        .map(|e| e.expect("event"))
        .collect();
    assert_eq!(dropped.len(), batch_events);
    let (second, source) = o.presign(source, &presign(30)).expect("second presign");
    assert_eq!(second.requests_discarded, unsent);
    assert!(second.requests >= 30, "{second:?}");
    let (sent2, o) = drive(o, source, run_config(batch_events, run2_events));
    assert_eq!(o.presigned_requests_left(), 0);
    let presigned2 = sent2.iter().take_while(|s| s.presigned).count();
    assert_eq!(presigned2 as u64, second.requests);
    assert!(
        sent2[presigned2..].iter().all(|s| !s.presigned),
        "then live"
    );

    // Ids: consecutive within each run; the dropped requests' ids stay used (a gap, no reuse).
    let ids = |sent: &[Sent]| sent.iter().map(|s| s.request_id).collect::<Vec<_>>();
    let first_id2 = REQUEST_ID_FIRST + sent1.len() as u128 + u128::from(unsent);
    assert_eq!(
        ids(&sent1),
        (0..sent1.len() as u128)
            .map(|i| REQUEST_ID_FIRST + i)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&sent2),
        (0..sent2.len() as u128)
            .map(|i| first_id2 + i)
            .collect::<Vec<_>>()
    );
    let all: Vec<Sent> = sent1.into_iter().chain(sent2).collect();
    assert_signatures_valid(&all);
    // Every transfer the two runs submitted went out exactly once (the dropped presigned
    // copies never did), with distinct transfer ids; the read-ahead batch never went out.
    let events: Vec<TraceEvent> = transfers()
        .take((run1_events + run2_events) as usize + batch_events)
        .collect();
    let (r1, r2) = (run1_events as usize, run1_events as usize + batch_events);
    assert_eq!(&events[r1..r2], &dropped[..]);
    let submitted: Vec<TraceEvent> = events[..r1].iter().chain(&events[r2..]).copied().collect();
    let (legs, ids_distinct) = transfers_sent(&all);
    assert!(ids_distinct, "a transfer id went out twice");
    assert_eq!(legs, transfers_of(&submitted));
}
