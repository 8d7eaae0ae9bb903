//! The TCP target's request scheduler: takes each batch's requests from the outbox (mapped and
//! numbered, maybe presigned), keeps them waiting until they commute with everything in flight,
//! signs (unless presigned) and sends them, and folds replies back into per-batch outcomes. No
//! sockets of its own: it writes through the target's writers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use engine::codec::{decode_results, Record};
use engine::net::FrameWriter;
use engine::node::protocol::{NodeFrame, Outcome as NodeOutcome, KIND_SUBMIT};
use engine::types::{EventResult, InstitutionId, Operation, ResultCode, Statement, EVENT_BYTES};

use super::outbox::{Numbered, Outbox};
use super::{other, ReaderMsg, SendOrder};
use crate::engine_map::{outcome_of, record_results, ConflictIndex, EngineRequest};
use crate::op::TraceEvent;
use crate::target::{Completion, Outcome, TargetError, Ticket};

/// Most waiting requests one dispatch pass looks at after the first blocked one (bounds the
/// work per reply; later requests wait for a later pass).
const SCAN_BLOCKED_MAX: usize = 64;

/// Engine-level counters of a TCP run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpStats {
    pub requests_sent: u64,
    /// Of `requests_sent`: signed before the run (`TcpTarget::presign`), so not on the run's
    /// cores and clock; signed at send time during the run; signed during the setup phase or an
    /// untimed warm-up (`TcpTarget::set_untimed`).
    pub requests_presigned: u64,
    pub requests_signed_live: u64,
    pub requests_signed_setup: u64,
    pub requests_committed: u64,
    /// Engine events sent (loadgen events plus derived ones).
    pub engine_events: u64,
    /// Every non-`ok` engine result code, warnings included.
    pub codes: BTreeMap<u32, u64>,
    /// Whole requests that got no ledger result, by reason (node reject codes, timeout...).
    pub failures: BTreeMap<String, u64>,
    /// Sends that had to wait for an earlier conflicting request to commit.
    pub waits: u64,
    /// Statements whose period came from commit timestamps.
    pub statements: u64,
}

impl TcpStats {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "TCP\n  requests sent {} (one signature each: {} presigned before the run, {} signed \
             live during the run, {} during setup or warm-up), committed {}, engine events {}, \
             sends that waited for a conflicting request {}, statements {}\n",
            self.requests_sent,
            self.requests_presigned,
            self.requests_signed_live,
            self.requests_signed_setup,
            self.requests_committed,
            self.engine_events,
            self.waits,
            self.statements
        );
        for (code, count) in &self.codes {
            let name = ResultCode::from_u32(*code).map_or("?".to_string(), |c| format!("{c:?}"));
            s += &format!("  engine code {code} {name}: {count}\n");
        }
        for (reason, count) in &self.failures {
            s += &format!("  failed requests, {reason}: {count}\n");
        }
        s
    }
}

struct Waiting {
    ticket: Ticket,
    numbered: Numbered,
    /// Already counted in `TcpStats::waits`.
    waited: bool,
}

struct Sent {
    ticket: Ticket,
    conn: usize,
    request: EngineRequest,
}

struct TicketState {
    requests_left: usize,
    /// Per loadgen event of the batch: 0 while applied, else the first refusing code.
    codes: Vec<u32>,
    failure: Option<String>,
}

#[derive(Default)]
struct Bank {
    conns: Vec<usize>,
    next: usize,
}

pub(super) struct Scheduler {
    outbox: Outbox,
    banks: BTreeMap<InstitutionId, Bank>,
    waiting: VecDeque<Waiting>,
    sent: HashMap<(InstitutionId, u128), Sent>,
    /// Send order = deadline order (one timeout for all).
    deadlines: VecDeque<(Instant, (InstitutionId, u128))>,
    in_flight: ConflictIndex,
    blocked: ConflictIndex,
    tickets: HashMap<Ticket, TicketState>,
    ready: VecDeque<Completion>,
    reply_timeout: Duration,
    order: SendOrder,
    /// Sends belong to the untimed setup phase (counted apart in `TcpStats`).
    setup_phase: bool,
    /// One past the last event timestamp of any committed reply (ledger time).
    committed_until_ns: u64,
    /// Per account: end of its last statement period sent.
    statement_ends: HashMap<u128, u64>,
    stats: TcpStats,
}

/// Request ids start from the wall clock, so reruns against one cluster never reuse an id.
pub(super) fn run_salt() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    nanos << 20
}

/// All events of `request` refused (it got no ledger result, or was never sent).
pub(super) fn all_refused(request: &EngineRequest) -> Vec<EventResult> {
    (0..request.events() as u32)
        .map(|index| EventResult {
            index,
            code: ResultCode::LinkedEventFailed,
        })
        .collect()
}

impl Scheduler {
    pub fn new(outbox: Outbox, reply_timeout: Duration, order: SendOrder) -> Scheduler {
        Scheduler {
            outbox,
            banks: BTreeMap::new(),
            waiting: VecDeque::new(),
            sent: HashMap::new(),
            deadlines: VecDeque::new(),
            in_flight: ConflictIndex::default(),
            blocked: ConflictIndex::default(),
            tickets: HashMap::new(),
            ready: VecDeque::new(),
            reply_timeout,
            order,
            setup_phase: false,
            committed_until_ns: 0,
            statement_ends: HashMap::new(),
            stats: TcpStats::default(),
        }
    }

    pub fn add_connection(&mut self, institution: InstitutionId, conn: usize) {
        self.banks.entry(institution).or_default().conns.push(conn);
    }

    /// Sets the send order; returns the previous one.
    pub fn set_order(&mut self, order: SendOrder) -> SendOrder {
        std::mem::replace(&mut self.order, order)
    }

    /// Marks the sends that follow as the setup phase's (or not).
    pub fn set_setup_phase(&mut self, setup: bool) {
        self.setup_phase = setup;
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    pub fn take_stats(&mut self) -> TcpStats {
        std::mem::take(&mut self.stats)
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Requests waiting or in flight.
    pub fn busy(&self) -> bool {
        !self.tickets.is_empty()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn drain_ready(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.ready.drain(..));
    }

    /// Takes a batch's requests from the outbox and queues them (in apply order).
    pub fn enqueue(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        let requests = self
            .outbox
            .next_batch(batch)
            .map_err(|e| other(e.to_string()))?;
        for n in &requests {
            if !self.banks.contains_key(&n.request.requester) {
                return Err(other(format!(
                    "no client file for institution {} (the workload has more institutions \
                     than the cluster)",
                    n.request.requester
                )));
            }
        }
        let state = TicketState {
            requests_left: requests.len(),
            codes: vec![0; batch.len()],
            failure: None,
        };
        if self.tickets.insert(ticket, state).is_some() {
            return Err(other(format!("ticket {ticket} submitted twice")));
        }
        self.waiting
            .extend(requests.into_iter().map(|numbered| Waiting {
                ticket,
                numbered,
                waited: false,
            }));
        Ok(())
    }

    /// Sends every waiting request that commutes with all in flight and all earlier waiting
    /// ones (so conflicting pairs reach the cluster one after the other, in trace order).
    pub fn dispatch(&mut self, writers: &mut [Option<FrameWriter>]) -> Result<(), TargetError> {
        let mut i = 0;
        let mut blocked = 0;
        while i < self.waiting.len() && blocked < SCAN_BLOCKED_MAX {
            let w = &mut self.waiting[i];
            let request = &w.numbered.request;
            if self.order == SendOrder::Exact
                && (self.in_flight.conflicts_with(request) || self.blocked.conflicts_with(request))
            {
                if !w.waited {
                    w.waited = true;
                    self.stats.waits += 1;
                }
                self.blocked.add(&w.numbered.request);
                blocked += 1;
                i += 1;
                continue;
            }
            if let Some(w) = self.waiting.remove(i) {
                self.send(w, writers)?;
            }
        }
        self.blocked.clear();
        Ok(())
    }

    fn send(&mut self, w: Waiting, writers: &mut [Option<FrameWriter>]) -> Result<(), TargetError> {
        let Waiting {
            ticket,
            mut numbered,
            ..
        } = w;
        let requester = numbered.request.requester;
        let Some(conn) = self.connection(requester, writers) else {
            self.fail(ticket, &numbered.request, "no live connection".into());
            return Ok(());
        };
        let presigned = numbered.signed.is_some();
        if numbered.request.operation == Operation::PostStatements {
            // Presign refuses statements: their period is fixed here, from replies.
            assert!(!presigned, "a statement was presigned");
            self.close_statement_periods(&mut numbered.request);
        }
        let payload = self
            .outbox
            .payload(&mut numbered)
            .map_err(|e| other(format!("sign: {e}")))?;
        if presigned {
            self.stats.requests_presigned += 1;
        } else if self.setup_phase {
            self.stats.requests_signed_setup += 1;
        } else {
            self.stats.requests_signed_live += 1;
        }
        let Numbered {
            request,
            request_id,
            ..
        } = numbered;
        let written = match &writers[conn] {
            Some(w) => w.send(KIND_SUBMIT, &payload).map_err(|e| e.to_string()),
            None => Err("connection lost".to_string()),
        };
        self.stats.requests_sent += 1;
        self.stats.engine_events += request.events() as u64;
        if let Err(reason) = written {
            writers[conn] = None;
            self.fail(ticket, &request, reason);
            return Ok(());
        }
        self.in_flight.add(&request);
        let key = (requester, request_id);
        self.deadlines
            .push_back((Instant::now() + self.reply_timeout, key));
        self.sent.insert(
            key,
            Sent {
                ticket,
                conn,
                request,
            },
        );
        Ok(())
    }

    /// The next live connection of `institution`, round-robin.
    fn connection(
        &mut self,
        institution: InstitutionId,
        writers: &[Option<FrameWriter>],
    ) -> Option<usize> {
        let bank = self.banks.get_mut(&institution)?;
        for _ in 0..bank.conns.len() {
            let conn = bank.conns[bank.next % bank.conns.len()];
            bank.next = bank.next.wrapping_add(1);
            if writers.get(conn).is_some_and(Option::is_some) {
                return Some(conn);
            }
        }
        None
    }

    /// Statement periods in ledger time: every transfer the mapping booked for the account
    /// before this statement has committed (the statement conflicts with them), none after it
    /// is sent yet, and ledger timestamps only grow. So `[previous end, committed_until_ns + j)`
    /// holds exactly the booked transfers, and it is closed when the statement (event j of the
    /// request, timestamp >= committed_until_ns + j) applies.
    fn close_statement_periods(&mut self, request: &mut EngineRequest) {
        let end_base = self.committed_until_ns.max(1);
        for (j, chunk) in request.body.chunks_exact_mut(EVENT_BYTES).enumerate() {
            let Ok(bytes) = <&mut [u8; EVENT_BYTES]>::try_from(chunk) else {
                continue;
            };
            let Ok(mut statement) = Statement::decode(bytes) else {
                continue;
            };
            let start = self
                .statement_ends
                .get(&statement.account_id)
                .copied()
                .unwrap_or(0);
            let end = (end_base + j as u64).max(start + 1);
            statement.period_start_ns = start;
            statement.period_end_ns = end;
            statement.encode(bytes);
            self.statement_ends.insert(statement.account_id, end);
            self.stats.statements += 1;
        }
    }

    pub fn on_message(&mut self, message: ReaderMsg, writers: &mut [Option<FrameWriter>]) {
        match message {
            ReaderMsg::Frame(NodeFrame::Committed(o)) => self.on_committed(o),
            ReaderMsg::Frame(NodeFrame::Rejected(r)) => {
                if let Some(s) = self.sent.remove(&(r.institution, r.request_id)) {
                    self.in_flight.remove(&s.request);
                    let reason = format!("rejected: {}", r.code.name());
                    self.fail(s.ticket, &s.request, reason);
                }
            }
            ReaderMsg::Frame(_) => {}
            ReaderMsg::Lost { conn, reason } => {
                if let Some(w) = writers.get_mut(conn) {
                    *w = None;
                }
                let lost: Vec<(InstitutionId, u128)> = self
                    .sent
                    .iter()
                    .filter(|(_, s)| s.conn == conn)
                    .map(|(k, _)| *k)
                    .collect();
                for key in lost {
                    if let Some(s) = self.sent.remove(&key) {
                        self.in_flight.remove(&s.request);
                        self.fail(s.ticket, &s.request, reason.clone());
                    }
                }
            }
        }
    }

    fn on_committed(&mut self, o: NodeOutcome) {
        let Some(s) = self.sent.remove(&(o.institution, o.request_id)) else {
            return;
        };
        self.in_flight.remove(&s.request);
        let events = s.request.events() as u64;
        self.committed_until_ns = self
            .committed_until_ns
            .max(o.timestamp_ns.saturating_add(events));
        let results = match decode_results(&o.reply) {
            Ok(results) => results,
            Err(e) => {
                self.fail(s.ticket, &s.request, format!("bad results: {e}"));
                return;
            }
        };
        self.stats.requests_committed += 1;
        for r in &results {
            *self.stats.codes.entry(r.code as u32).or_default() += 1;
        }
        let settled = self
            .outbox
            .mapper_mut()
            .settle(&s.request, &results)
            .map_err(|e| e.to_string());
        let Some(state) = self.tickets.get_mut(&s.ticket) else {
            return;
        };
        let recorded = settled.and_then(|()| {
            record_results(&s.request, &results, &mut state.codes).map_err(|e| e.to_string())
        });
        if let Err(reason) = recorded {
            state.failure.get_or_insert(reason);
        }
        self.request_done(s.ticket);
    }

    /// A request that got no ledger result: its bookings are undone and its batch fails.
    fn fail(&mut self, ticket: Ticket, request: &EngineRequest, reason: String) {
        // Cannot fail: the list names every event of the request once, in order.
        let _ = self
            .outbox
            .mapper_mut()
            .settle(request, &all_refused(request));
        let key = reason.split(':').next().unwrap_or("failed").to_string();
        *self.stats.failures.entry(key).or_default() += 1;
        if let Some(state) = self.tickets.get_mut(&ticket) {
            state.failure.get_or_insert(reason);
        }
        self.request_done(ticket);
    }

    fn request_done(&mut self, ticket: Ticket) {
        let Some(state) = self.tickets.get_mut(&ticket) else {
            return;
        };
        state.requests_left = state.requests_left.saturating_sub(1);
        if state.requests_left > 0 {
            return;
        }
        if let Some(state) = self.tickets.remove(&ticket) {
            let outcome = match state.failure {
                Some(reason) => Outcome::Failed { reason },
                None => outcome_of(&state.codes),
            };
            self.ready.push_back(Completion { ticket, outcome });
        }
    }

    /// Fails requests sent longer than the reply timeout ago.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(s) = self.sent.remove(&key) {
                self.in_flight.remove(&s.request);
                self.fail(s.ticket, &s.request, "timeout".into());
            }
        }
        // Replies remove requests from `sent` but not from `deadlines`: keep the queue bounded
        // by what is in flight.
        if self.deadlines.len() > 4 * self.sent.len() + 1024 {
            let sent = &self.sent;
            self.deadlines.retain(|(_, key)| sent.contains_key(key));
        }
    }
}
