//! Maps loadgen's `TraceEvent`s to the engine's requests: records, ids, requesters, timestamps
//! and statement figures.
//!
//! Architecture invariant: sans-I/O and deterministic. The same events in the same batches give
//! the same requests (same bodies, ids and timestamps) on every run; the only state is what
//! earlier events created (account owners, loans) and the statement books.
//!
//! A request carries one operation for one requester, so a loadgen batch becomes several
//! requests (`plan`): each engine event joins the latest group of its (operation, requester)
//! unless an event in a later group touches the same account or loan in a way whose order
//! matters (see `plan::Access`), in which case it opens a new group at the end. The ledger
//! therefore sees every order-sensitive pair in trace order, and the results are those of
//! applying the batch event by event.

mod books;
mod conflict;
mod encode;
mod idhash;
mod plan;

use std::collections::BTreeMap;

use engine::types::{EventResult, InstitutionId};
use thiserror::Error;

use crate::op::InstitutionId as LoadgenInstitution;
use crate::target::{Outcome, Rejection, BATCH_EVENTS_MAX};

pub use conflict::ConflictIndex;
pub use encode::{partner_part, EngineRequest, SOURCE_DERIVED};

/// The consortium operator (engine institution 0): may create accounts, reserves and loans
/// for members. Loadgen's institutions are members, shifted up by one.
pub const OPERATOR: InstitutionId = 0;
/// Each institution's settlement account (the outside world it tops reserves up from) has id
/// `SETTLEMENT_ACCOUNT_BASE + institution`, above every loadgen (u64) account id.
pub const SETTLEMENT_ACCOUNT_BASE: u128 = 1 << 64;
/// Account codes by kind.
pub const ACCOUNT_CODE_RESERVE: u16 = 1;
pub const ACCOUNT_CODE_BORROWER: u16 = 2;
pub const ACCOUNT_CODE_OPERATING: u16 = 3;
pub const ACCOUNT_CODE_SETTLEMENT: u16 = 4;
/// Transfer codes: top-ups, plain transfers, loan legs.
pub const TRANSFER_CODE_TOP_UP: u16 = 1;
pub const TRANSFER_CODE_PLAIN: u16 = 2;
pub const TRANSFER_CODE_LOAN_LEG: u16 = 3;
/// Transfer ids count up from here in apply order (two per disbursement or repayment).
pub const TRANSFER_ID_FIRST: u128 = 1;
/// Most institutions a mapping serves (loadgen ids are u16, plus the operator).
pub const INSTITUTIONS_MAX: usize = 1 << 16;

/// The engine institution for a loadgen institution (0 is the operator, so members start at 1).
pub fn engine_institution(institution: LoadgenInstitution) -> InstitutionId {
    InstitutionId::from(institution) + 1
}

pub fn settlement_account(institution: InstitutionId) -> u128 {
    SETTLEMENT_ACCOUNT_BASE + u128::from(institution)
}

/// Genesis-like parameters of the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapConfig {
    /// The ledger id of every account and transfer (non-zero).
    pub ledger: u32,
    /// Every reserve is registered with this floor and warning threshold (cents).
    pub reserve_floor: u128,
    pub reserve_warning: u128,
    /// Added to every loadgen account and loan id and to every transfer id (0 for a fresh
    /// in-process ledger; a cluster's genesis accounts need room, and a rerun against the same
    /// cluster needs other ids). At most `ID_BASE_MAX`.
    pub id_base: u128,
}

/// Largest `MapConfig::id_base`: ids stay far below the settlement accounts (2^64 + n).
pub const ID_BASE_MAX: u128 = 1 << 62;

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            ledger: 1,
            reserve_floor: 0,
            reserve_warning: 0,
            id_base: 0,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MapError {
    #[error("batch of {0} events outside 1..={BATCH_EVENTS_MAX}")]
    BatchSize(usize),
    #[error("reserve warning {warning} is below the floor {floor}")]
    WarningBelowFloor { floor: u128, warning: u128 },
    #[error("ledger id must not be 0")]
    LedgerZero,
    #[error("id base {0} is above {ID_BASE_MAX}")]
    IdBase(u128),
    #[error(
        "reply results out of order or out of range: index {index} of a {events}-event request"
    )]
    BadResults { index: u32, events: usize },
}

#[derive(Clone, Copy, Debug)]
struct AccountInfo {
    owner: InstitutionId,
    reserve: bool,
}

/// What the mapping knows of a loan: its parties, and its outstanding principal kept with the
/// ledger's own split rule (so repayment legs, and thus statements, are exact).
#[derive(Clone, Copy, Debug)]
struct LoanInfo {
    borrower: u128,
    reserve: u128,
    funding: u128,
    bps: u16,
    outstanding: u128,
    partner_outstanding: u128,
}

/// A batch split into groups, not yet encoded.
pub struct PlannedBatch {
    groups: std::collections::VecDeque<plan::Group>,
}

impl PlannedBatch {
    pub fn requests_left(&self) -> usize {
        self.groups.len()
    }
}

/// Turns loadgen batches into engine requests. One per target; feed it every batch in order
/// and every request's results (`settle`).
pub struct Mapper {
    config: MapConfig,
    accounts: idhash::IdMap<u128, AccountInfo>,
    loans: idhash::IdMap<u64, LoanInfo>,
    /// Institutions whose settlement account is created (by engine id).
    settlement_created: Vec<bool>,
    books: books::Books,
    transfer_id_next: u128,
    /// Timestamp of the next request (the inproc target applies at exactly these).
    clock_ns: u64,
    planner: plan::Planner,
}

impl Mapper {
    pub fn new(config: MapConfig) -> Result<Mapper, MapError> {
        if config.ledger == 0 {
            return Err(MapError::LedgerZero);
        }
        if config.id_base > ID_BASE_MAX {
            return Err(MapError::IdBase(config.id_base));
        }
        if config.reserve_warning < config.reserve_floor {
            return Err(MapError::WarningBelowFloor {
                floor: config.reserve_floor,
                warning: config.reserve_warning,
            });
        }
        Ok(Mapper {
            config,
            accounts: idhash::IdMap::default(),
            loans: idhash::IdMap::default(),
            settlement_created: vec![false; INSTITUTIONS_MAX + 1],
            books: books::Books::default(),
            transfer_id_next: TRANSFER_ID_FIRST + config.id_base,
            clock_ns: 1,
            planner: plan::Planner::default(),
        })
    }

    pub fn config(&self) -> MapConfig {
        self.config
    }

    /// The engine account id of a loadgen account id.
    pub fn account_id(&self, account: u64) -> u128 {
        self.config.id_base + u128::from(account)
    }

    /// The engine loan id of a loadgen loan id.
    pub fn loan_id(&self, loan: u64) -> u128 {
        self.config.id_base + u128::from(loan)
    }

    /// Plans one loadgen batch into homogeneous groups; `encode_next` turns them into
    /// requests one at a time, so a target that applies each request and `settle`s it before
    /// encoding the next gets statements exact even when an earlier event was refused.
    pub fn plan_batch(
        &mut self,
        batch: &[crate::op::TraceEvent],
    ) -> Result<PlannedBatch, MapError> {
        if batch.is_empty() || batch.len() > BATCH_EVENTS_MAX {
            return Err(MapError::BatchSize(batch.len()));
        }
        let groups = self.plan(batch);
        assert!(!groups.is_empty());
        // Ledger time follows trace time when the trace is slower than one ns per event.
        self.clock_ns = self.clock_ns.max(batch[0].timestamp_ns);
        Ok(PlannedBatch {
            groups: groups.into(),
        })
    }

    /// The next request of a planned batch, in apply order (`None` when all are out). Its
    /// timestamp is the one the mapping assumed (statement periods end at their own timestamp).
    pub fn encode_next(&mut self, planned: &mut PlannedBatch) -> Option<EngineRequest> {
        planned.groups.pop_front().map(|group| self.encode(group))
    }

    /// All requests of one batch at once (a pipelining target: statements are computed before
    /// the results of earlier requests of the same batch are known).
    pub fn requests(
        &mut self,
        batch: &[crate::op::TraceEvent],
    ) -> Result<Vec<EngineRequest>, MapError> {
        let mut planned = self.plan_batch(batch)?;
        let mut out = Vec::with_capacity(planned.groups.len());
        while let Some(request) = self.encode_next(&mut planned) {
            out.push(request);
        }
        Ok(out)
    }

    /// Tells the mapping which events of `request` the ledger refused (results of a create
    /// request: only non-`ok` codes, in event order), so its books drop what was not booked.
    /// Results from the wire are checked first: nothing is undone for a malformed list.
    pub fn settle(
        &mut self,
        request: &EngineRequest,
        results: &[EventResult],
    ) -> Result<(), MapError> {
        check_results(request, results)?;
        for result in results.iter().filter(|r| !r.code.is_ok()) {
            self.undo_event(request, result.index);
        }
        Ok(())
    }
}

/// Folds one request's results into per-loadgen-event codes (`codes[i]` = 0 while event `i`
/// of the batch is applied; else the first refusing code of any of its engine events).
/// Warnings (`ok_reserve_below_warning`) are successes. Derived events are not loadgen's.
pub fn record_results(
    request: &EngineRequest,
    results: &[EventResult],
    codes: &mut [u32],
) -> Result<(), MapError> {
    check_results(request, results)?;
    for result in results.iter().filter(|r| !r.code.is_ok()) {
        let source = request.sources[result.index as usize];
        if source == SOURCE_DERIVED {
            continue;
        }
        let code = codes
            .get_mut(source as usize)
            .ok_or(MapError::BatchSize(source as usize + 1))?;
        if *code == 0 {
            *code = result.code as u32;
        }
    }
    Ok(())
}

/// A reply's results must name events of the request, each once, in event order.
fn check_results(request: &EngineRequest, results: &[EventResult]) -> Result<(), MapError> {
    let events = request.events();
    let mut next = 0u64;
    for result in results {
        if u64::from(result.index) < next || result.index as usize >= events {
            return Err(MapError::BadResults {
                index: result.index,
                events,
            });
        }
        next = u64::from(result.index) + 1;
    }
    Ok(())
}

/// A batch's outcome from its per-event codes: rejections counted per code.
pub fn outcome_of(codes: &[u32]) -> Outcome {
    let mut by_code: BTreeMap<u32, u32> = BTreeMap::new();
    for &code in codes.iter().filter(|&&c| c != 0) {
        *by_code.entry(code).or_default() += 1;
    }
    let rejected: u32 = by_code.values().sum();
    let rejections = by_code
        .into_iter()
        .map(|(code, events)| Rejection { code, events })
        .collect();
    Outcome::Executed {
        events_committed: codes.len() as u32 - rejected,
        rejections,
    }
}
