//! Workload events to ledger records, and ledger replies to rejection counts.

use std::collections::BTreeMap;
use std::time::SystemTime;

use engine::codec::{decode_results, encode_body};
use engine::node::init::GENESIS_LEDGER;
use engine::types::{Account, Operation, Transfer};

use crate::op::{Op, TraceEvent};
use crate::target::TargetError;

/// Ledger account id of workload account 0 (clear of the accounts `reckon init` creates).
pub const ACCOUNT_ID_BASE: u128 = 1_000_000_000;
/// Account and transfer code of loadgen records.
const LOADGEN_CODE: u16 = 7;
/// One signed-request's worth of records: (institution, operation, body, events).
pub(super) type Group = (u32, Operation, Vec<u8>, u32);

/// Request and transfer ids start from the wall clock, so reruns against one cluster never
/// reuse an id.
pub(super) fn run_salt() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    nanos << 20
}

/// Splits a batch into homogeneous groups: account creations first, then transfers.
pub(super) fn split(
    batch: &[TraceEvent],
    next_transfer_id: &mut u128,
) -> Result<Vec<Group>, TargetError> {
    let mut accounts: BTreeMap<u32, Vec<Account>> = BTreeMap::new();
    let mut transfers: BTreeMap<u32, Vec<Transfer>> = BTreeMap::new();
    for e in batch {
        let institution = u32::from(e.institution) + 1;
        match e.op {
            Op::CreateAccount { account, .. } => {
                accounts.entry(institution).or_default().push(Account {
                    id: ACCOUNT_ID_BASE + u128::from(account),
                    institution,
                    ledger: GENESIS_LEDGER,
                    code: LOADGEN_CODE,
                    ..Account::default()
                })
            }
            Op::Transfer {
                debit,
                credit,
                amount,
            } => {
                *next_transfer_id += 1;
                transfers.entry(institution).or_default().push(Transfer {
                    id: *next_transfer_id,
                    debit_account_id: ACCOUNT_ID_BASE + u128::from(debit),
                    credit_account_id: ACCOUNT_ID_BASE + u128::from(credit),
                    amount: u128::from(amount).max(1),
                    institution,
                    ledger: GENESIS_LEDGER,
                    code: LOADGEN_CODE,
                    ..Transfer::default()
                })
            }
            ref op => {
                return Err(TargetError::Other(format!(
                    "tcp target maps create_account and transfer only, not {:?}",
                    op.kind()
                )))
            }
        }
    }
    let mut groups = Vec::new();
    for (inst, a) in accounts {
        groups.push((
            inst,
            Operation::CreateAccounts,
            encode_body(&a),
            a.len() as u32,
        ));
    }
    for (inst, t) in transfers {
        groups.push((
            inst,
            Operation::CreateTransfers,
            encode_body(&t),
            t.len() as u32,
        ));
    }
    Ok(groups)
}

/// The ledger's create reply lists only the events that were not Ok: counts them by code.
pub(super) fn rejected_by_code(reply: &[u8], events: u32) -> Result<BTreeMap<u32, u32>, String> {
    let results = decode_results(reply).map_err(|e| format!("bad results: {e}"))?;
    let mut by_code = BTreeMap::new();
    for r in results {
        if r.index >= events {
            return Err(format!("result index {} of {events} events", r.index));
        }
        if !r.code.is_ok() {
            *by_code.entry(r.code as u32).or_default() += 1;
        }
    }
    Ok(by_code)
}
