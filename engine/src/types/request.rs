//! Request kinds and replies.

use super::{Account, Reconciliation, ReservePosition, ResultCode, Transfer};

/// The kind of a request (u8 on the wire; values are stable).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateAccounts = 1,
    CreateReserves = 2,
    CreateTransfers = 3,
    TopUp = 4,
    CreateLoans = 5,
    Disburse = 6,
    Repay = 7,
    PostStatements = 8,
    LookupAccounts = 9,
    LookupTransfers = 10,
    GetAccountTransfers = 11,
    ReservePositions = 12,
    ReconciliationReport = 13,
}

impl Operation {
    pub const ALL: [Operation; 13] = [
        Operation::CreateAccounts,
        Operation::CreateReserves,
        Operation::CreateTransfers,
        Operation::TopUp,
        Operation::CreateLoans,
        Operation::Disburse,
        Operation::Repay,
        Operation::PostStatements,
        Operation::LookupAccounts,
        Operation::LookupTransfers,
        Operation::GetAccountTransfers,
        Operation::ReservePositions,
        Operation::ReconciliationReport,
    ];

    pub fn from_u8(value: u8) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|op| *op as u8 == value)
    }

    /// Queries change no state and return records instead of result codes.
    pub fn is_query(self) -> bool {
        (self as u8) >= Operation::LookupAccounts as u8
    }
}

/// A non-`Ok` result of one event in a create request (8 bytes on the wire: index, code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventResult {
    pub index: u32,
    pub code: ResultCode,
}

/// What `Ledger::apply` returns. Creates list only the events whose code is not `Ok`
/// (warnings included), in event order; queries list records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Results(Vec<EventResult>),
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    Positions(Vec<ReservePosition>),
    Reconciliations(Vec<Reconciliation>),
}

impl Reply {
    /// The result list of a create request (empty for a query).
    pub fn results(&self) -> &[EventResult] {
        match self {
            Reply::Results(results) => results,
            _ => &[],
        }
    }
}
