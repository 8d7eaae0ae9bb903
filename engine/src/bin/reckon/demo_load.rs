//! `reckon demo` workload: setup (loans, funding, first draws), then batched, pipelined requests
//! from the lead bank (split disbursements and repayments) and the partner banks (reserve
//! top-ups) over connections to every node, each request's submit→committed latency recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use engine::client::{Client, ClientFile, Signer};
use engine::codec::decode_results;
use engine::crypto::SignedRequest;
use engine::node::init::{
    lead_funding_account, reserve_account, settlement_account, GENESIS_LEDGER,
};
use engine::node::protocol::{NodeFrame, Outcome};
use engine::types::{Account, Disbursement, Loan, Repayment, Transfer};

use super::demo_cluster::{Consortium, NODES};

pub const LEAD: u32 = 1;
pub const PARTNERS: [u32; 3] = [2, 3, 4];
pub const YUAN: u128 = 100;
const LOANS_PER_PARTNER: usize = 8;
const PARTNER_SHARE_BPS: u16 = 8_000;
/// Events per signed request.
pub const BATCH: usize = 256;
/// Requests in flight per connection.
pub const IN_FLIGHT: usize = 8;
/// Longest wait for the requests still in flight when the run ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_ID: u64 = 1_000_000;

/// Counters shared by the workers.
pub struct Shared {
    next_id: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
    /// Events the ledger refused (e.g. a draw the reserve floor did not allow).
    pub refused: AtomicU64,
    /// Requests the node turned away (backpressure), not counted as committed.
    pub rejected: AtomicU64,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            next_id: AtomicU64::new(FIRST_ID),
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

impl Shared {
    pub fn id(&self) -> u128 {
        u128::from(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

pub fn loan_id(index: usize) -> u128 {
    70_000 + index as u128
}
fn borrower(index: usize) -> u128 {
    90_000 + index as u128
}
pub fn loans_count() -> usize {
    LOANS_PER_PARTNER * PARTNERS.len()
}
fn partner_of(index: usize) -> u32 {
    PARTNERS[index % PARTNERS.len()]
}

pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128, institution: u32) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        institution,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

/// Submits and requires every event to succeed (warnings allowed).
pub fn submit_ok(client: &mut Client, request: &SignedRequest, what: &str) -> Result<u64, String> {
    let outcome = client
        .submit(request)
        .map_err(|e| format!("setup {what}: {e}"))?;
    let results = decode_results(&outcome.reply).map_err(|e| format!("setup {what}: {e}"))?;
    if let Some(bad) = results.iter().find(|r| !r.code.is_ok()) {
        return Err(format!(
            "setup {what}: event {} refused: {:?}",
            bad.index, bad.code
        ));
    }
    Ok(outcome.timestamp_ns)
}

/// Borrower accounts and loans (operator), lead funding, partner reserves, a first draw per loan.
pub fn setup(consortium: &Consortium, shared: &Shared) -> Result<(), String> {
    let op_file = consortium.client_file(0)?;
    let (operator, mut op_client) = connect(&op_file, consortium, 0)?;
    let accounts: Vec<Account> = (0..loans_count())
        .map(|i| Account {
            id: borrower(i),
            institution: LEAD,
            ledger: GENESIS_LEDGER,
            code: 20,
            ..Account::default()
        })
        .collect();
    let req = operator.create_accounts(shared.id(), &accounts);
    submit_ok(&mut op_client, &req.map_err(|e| e.to_string())?, "accounts")?;
    let loans: Vec<Loan> = (0..loans_count())
        .map(|i| Loan {
            id: loan_id(i),
            borrower_account_id: borrower(i),
            reserve_account_id: reserve_account(partner_of(i)),
            funding_account_id: lead_funding_account(LEAD),
            principal_max: 500_000_000 * YUAN,
            lead: LEAD,
            partner: partner_of(i),
            ledger: GENESIS_LEDGER,
            partner_share_bps: PARTNER_SHARE_BPS,
            ..Loan::default()
        })
        .collect();
    let req = operator.create_loans(shared.id(), &loans);
    submit_ok(&mut op_client, &req.map_err(|e| e.to_string())?, "loans")?;
    for (n, partner) in PARTNERS.iter().enumerate() {
        let (signer, mut client) = connect(&consortium.client_file(*partner)?, consortium, n)?;
        let top_up = transfer(
            shared.id(),
            settlement_account(*partner),
            reserve_account(*partner),
            200_000_000 * YUAN,
            *partner,
        );
        let req = signer.top_up(shared.id(), &[top_up]);
        submit_ok(&mut client, &req.map_err(|e| e.to_string())?, "top-up")?;
    }
    let (lead, mut client) = connect(&consortium.client_file(LEAD)?, consortium, 0)?;
    let funds = transfer(
        shared.id(),
        settlement_account(LEAD),
        lead_funding_account(LEAD),
        1_000_000_000 * YUAN,
        LEAD,
    );
    let req = lead.create_transfers(shared.id(), &[funds]);
    submit_ok(&mut client, &req.map_err(|e| e.to_string())?, "funding")?;
    let first: Vec<Disbursement> = (0..loans_count())
        .map(|i| disbursement(shared, i, 1_000_000 * YUAN))
        .collect();
    let req = lead.disburse(shared.id(), &first);
    submit_ok(&mut client, &req.map_err(|e| e.to_string())?, "first draws")?;
    Ok(())
}

fn connect(
    file: &ClientFile,
    consortium: &Consortium,
    node: usize,
) -> Result<(Signer, Client), String> {
    let signer = file.signer().map_err(|e| e.to_string())?;
    let tls = file.tls().map_err(|e| e.to_string())?;
    let addr = consortium.client_addr(node % NODES);
    let client = Client::connect(addr, &tls).map_err(|e| format!("{addr}: {e}"))?;
    Ok((signer, client))
}

fn disbursement(shared: &Shared, loan: usize, amount: u128) -> Disbursement {
    Disbursement {
        partner_transfer_id: shared.id(),
        lead_transfer_id: shared.id(),
        loan_id: loan_id(loan),
        amount,
        ..Disbursement::default()
    }
}

/// What a worker sends.
#[derive(Clone, Copy)]
pub enum Role {
    /// The lead bank: split disbursements and repayments, alternately.
    Lead,
    /// A partner bank topping up its reserve.
    Partner(u32),
}

/// One request of `BATCH` events for `role` (`turn` alternates the lead's kinds).
fn build(role: Role, signer: &Signer, shared: &Shared, turn: u64) -> Result<SignedRequest, String> {
    let id = shared.id();
    let request = match role {
        Role::Partner(p) => {
            let events: Vec<Transfer> = (0..BATCH)
                .map(|k| {
                    let amount = (5_000 + k as u128) * YUAN;
                    transfer(
                        shared.id(),
                        settlement_account(p),
                        reserve_account(p),
                        amount,
                        p,
                    )
                })
                .collect();
            signer.top_up(id, &events)
        }
        Role::Lead if turn.is_multiple_of(2) => {
            let events: Vec<Disbursement> = (0..BATCH)
                .map(|k| {
                    disbursement(
                        shared,
                        (turn as usize + k) % loans_count(),
                        2_000 * YUAN + 33,
                    )
                })
                .collect();
            signer.disburse(id, &events)
        }
        Role::Lead => {
            let events: Vec<Repayment> = (0..BATCH)
                .map(|k| Repayment {
                    partner_transfer_id: shared.id(),
                    lead_transfer_id: shared.id(),
                    loan_id: loan_id((turn as usize + k) % loans_count()),
                    principal: 1_500 * YUAN,
                    interest: 20 * YUAN + 7,
                    ..Repayment::default()
                })
                .collect();
            signer.repay(id, &events)
        }
    };
    request.map_err(|e| e.to_string())
}

/// Counts a committed request's events and refusals and records its latency.
fn committed(shared: &Shared, outcome: &Outcome, events: usize) {
    let refused = decode_results(&outcome.reply)
        .map(|r| r.iter().filter(|r| !r.code.is_ok()).count())
        .unwrap_or(0);
    shared.requests.fetch_add(1, Ordering::Relaxed);
    shared
        .events
        .fetch_add((events - refused) as u64, Ordering::Relaxed);
    shared.refused.fetch_add(refused as u64, Ordering::Relaxed);
}

/// Runs one pipelined connection until `end` (or `stop`), then drains what is in flight.
pub fn worker(
    file: ClientFile,
    consortium_addr: std::net::SocketAddr,
    role: Role,
    shared: &Shared,
    end: Instant,
    stop: &AtomicBool,
) -> Result<Histogram<u64>, String> {
    let signer = file.signer().map_err(|e| e.to_string())?;
    let tls = file.tls().map_err(|e| e.to_string())?;
    let mut client =
        Client::connect(consortium_addr, &tls).map_err(|e| format!("{consortium_addr}: {e}"))?;
    let mut histogram = new_histogram()?;
    let mut in_flight: HashMap<u128, Instant> = HashMap::new();
    let mut turn = 0u64;
    let drain_end = end + DRAIN_TIMEOUT;
    loop {
        let open = Instant::now() < end && !stop.load(Ordering::Relaxed);
        while open && in_flight.len() < IN_FLIGHT {
            let request = build(role, &signer, shared, turn)?;
            turn += 1;
            client.send(&request).map_err(|e| e.to_string())?;
            in_flight.insert(request.request.request_id, Instant::now());
        }
        if (!open && in_flight.is_empty()) || Instant::now() > drain_end {
            return Ok(histogram);
        }
        let frame = client
            .recv(Duration::from_millis(200))
            .map_err(|e| format!("{consortium_addr}: {e}"))?;
        let (id, outcome) = match frame {
            Some(NodeFrame::Committed(o)) => (o.request_id, Some(o)),
            Some(NodeFrame::Rejected(r)) => (r.request_id, None),
            _ => continue,
        };
        let Some(sent) = in_flight.remove(&id) else {
            continue;
        };
        match outcome {
            Some(o) => {
                let ns = sent.elapsed().as_nanos() as u64;
                histogram.saturating_record(ns);
                committed(shared, &o, BATCH);
            }
            None => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).map_err(|e| e.to_string())
}
