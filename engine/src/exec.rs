//! `exec`: how a committed block's requests meet the ledger.
//!
//! One rule shared by every replica, the simulator, the offline auditor and restart replay, so all
//! of them reach the same ledger digest from the same blocks. *Invariant:* no I/O, no clock; the
//! only time is the block's consensus timestamp.

use crate::ledger::{Ledger, RequestError};
use crate::types::{InstitutionId, Reply};

/// Nanoseconds per millisecond: consensus timestamps are milliseconds, ledger timestamps are
/// nanoseconds.
pub const NS_PER_MS: u64 = 1_000_000;

/// One request of a committed block, as the ledger executes it (its signature was verified
/// before the block was voted for).
#[derive(Clone, Copy, Debug)]
pub struct ExecRequest<'a> {
    pub institution: InstitutionId,
    pub operation: u8,
    pub body: &'a [u8],
}

/// The ledger timestamp of the next request in a block with consensus timestamp
/// `block_timestamp_ms`: the block time in nanoseconds, or just after the last event applied,
/// whichever is later. Requests in one block thus get strictly increasing timestamps, and a block
/// whose predecessor applied more events than it had nanoseconds of headroom still applies.
pub fn request_timestamp_ns(ledger: &Ledger, block_timestamp_ms: u64) -> u64 {
    let block_ns = block_timestamp_ms.saturating_mul(NS_PER_MS);
    block_ns.max(ledger.timestamp_last().saturating_add(1))
}

/// Executes one request of a committed block. Errors refuse the request as a whole (undecodable
/// body, timestamp overflow) and change nothing.
pub fn execute(
    ledger: &mut Ledger,
    block_timestamp_ms: u64,
    request: &ExecRequest,
) -> Result<Reply, RequestError> {
    let timestamp_ns = request_timestamp_ns(ledger, block_timestamp_ms);
    let before = ledger.timestamp_last();
    let reply = ledger.apply_request(
        request.institution,
        timestamp_ns,
        request.operation,
        request.body,
    );
    assert!(
        ledger.timestamp_last() >= before,
        "ledger time never goes back"
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_body;
    use crate::ledger::LedgerConfig;
    use crate::types::{Account, Operation};

    #[test]
    fn timestamps_increase_within_and_across_blocks() {
        let mut ledger = Ledger::new(LedgerConfig::new(0));
        assert_eq!(request_timestamp_ns(&ledger, 5), 5 * NS_PER_MS);
        let accounts: Vec<Account> = (1..=3u128)
            .map(|id| Account {
                id,
                institution: 1,
                ledger: 1,
                code: 1,
                ..Account::default()
            })
            .collect();
        let body = encode_body(&accounts);
        let request = ExecRequest {
            institution: 0,
            operation: Operation::CreateAccounts as u8,
            body: &body,
        };
        execute(&mut ledger, 5, &request).expect("applies");
        assert_eq!(
            ledger.timestamp_last(),
            5 * NS_PER_MS + 2,
            "three events, three timestamps"
        );
        // A second request in the same block comes strictly after the first.
        assert_eq!(request_timestamp_ns(&ledger, 5), 5 * NS_PER_MS + 3);
        // A later block starts at its own time.
        assert_eq!(request_timestamp_ns(&ledger, 6), 6 * NS_PER_MS);
    }

    #[test]
    fn an_undecodable_body_is_refused_whole_and_changes_nothing() {
        let mut ledger = Ledger::new(LedgerConfig::new(0));
        let digest = ledger.digest();
        let request = ExecRequest {
            institution: 0,
            operation: Operation::CreateAccounts as u8,
            body: &[1, 2, 3],
        };
        assert!(execute(&mut ledger, 1, &request).is_err());
        let unknown = ExecRequest {
            institution: 0,
            operation: 250,
            body: &[],
        };
        assert!(execute(&mut ledger, 1, &unknown).is_err());
        assert_eq!(ledger.digest(), digest);
        assert_eq!(ledger.timestamp_last(), 0);
    }
}
