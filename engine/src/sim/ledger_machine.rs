//! The real double-entry `ledger` behind the simulator's `StateMachine` boundary.
//!
//! Sim batches carry unsigned requests (the node verifies signatures before a batch can be voted
//! for; the simulator tests ordering and execution, not signatures):
//! `institution u32 | operation u8 | reserved [u8; 3] (zero) | count u32 | body (count × 128 B)`,
//! repeated. Execution goes through `exec::execute`, the rule every replica shares.

use rand::Rng;

use crate::codec::encode_body;
use crate::consensus::Digest;
use crate::exec::{execute, ExecRequest};
use crate::ledger::{Ledger, LedgerConfig};
use crate::types::{
    account_flags, transfer_flags, Account, InstitutionId, Operation, Transfer, BATCH_EVENTS_MAX,
    EVENT_BYTES,
};

use super::state_machine::StateMachine;

/// The consortium operator of the simulated chain.
pub const SIM_OPERATOR: InstitutionId = 0;
/// Member institutions are `1..=SIM_MEMBERS`.
pub const SIM_MEMBERS: u32 = 4;
/// Accounts per member; account 0 of each member may not go overdrawn.
pub const SIM_ACCOUNTS_PER_MEMBER: u32 = 4;
/// Ledger number of every simulated account.
const SIM_LEDGER: u32 = 1;
/// Bytes of one sim request header.
pub const SIM_REQUEST_HEADER_BYTES: usize = 12;
/// Most requests in one sim batch.
pub const SIM_BATCH_REQUESTS_MAX: usize = 8;
/// Most transfers in one sim request.
const SIM_REQUEST_TRANSFERS_MAX: u32 = 6;

/// The account id of member `institution`'s account `k`.
pub fn sim_account_id(institution: InstitutionId, k: u32) -> u128 {
    assert!((1..=SIM_MEMBERS).contains(&institution) && k < SIM_ACCOUNTS_PER_MEMBER);
    u128::from(institution) * 1_000 + u128::from(k) + 1
}

pub struct LedgerMachine {
    ledger: Ledger,
    height: u64,
    digest: [u8; 32],
}

impl Default for LedgerMachine {
    /// Genesis: the operator opens every member's accounts at time 1.
    fn default() -> Self {
        let mut ledger = Ledger::new(LedgerConfig::new(SIM_OPERATOR));
        let accounts: Vec<Account> = (1..=SIM_MEMBERS)
            .flat_map(|institution| {
                (0..SIM_ACCOUNTS_PER_MEMBER).map(move |k| Account {
                    id: sim_account_id(institution, k),
                    institution,
                    ledger: SIM_LEDGER,
                    code: 1,
                    flags: if k == 0 {
                        account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    } else {
                        0
                    },
                    ..Account::default()
                })
            })
            .collect();
        let body = encode_body(&accounts);
        let genesis = ExecRequest {
            institution: SIM_OPERATOR,
            operation: Operation::CreateAccounts as u8,
            body: &body,
        };
        let reply = execute(&mut ledger, 0, &genesis).expect("genesis applies");
        assert!(
            reply_all_ok(&reply),
            "genesis accounts are valid: {reply:?}"
        );
        let digest = digest32(&ledger, 0);
        LedgerMachine {
            ledger,
            height: 0,
            digest,
        }
    }
}

impl LedgerMachine {
    /// The ledger behind the machine (read-only: queries, snapshots, totals).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

fn reply_all_ok(reply: &crate::types::Reply) -> bool {
    matches!(reply, crate::types::Reply::Results(results) if results.is_empty())
}

fn digest32(ledger: &Ledger, height: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&ledger.digest().to_le_bytes());
    hasher.update(&height.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// Splits a sim batch into its requests; `None` for a malformed batch (never panics).
pub fn decode_batch(mut bytes: &[u8]) -> Option<Vec<ExecRequest<'_>>> {
    let mut requests = Vec::new();
    while !bytes.is_empty() {
        let header = bytes.get(..SIM_REQUEST_HEADER_BYTES)?;
        let institution = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let operation = header[4];
        if header[5..8] != [0, 0, 0] {
            return None;
        }
        let count = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
        if count == 0 || count > BATCH_EVENTS_MAX || requests.len() == SIM_BATCH_REQUESTS_MAX {
            return None;
        }
        let end = SIM_REQUEST_HEADER_BYTES.checked_add(count.checked_mul(EVENT_BYTES)?)?;
        let body = bytes.get(SIM_REQUEST_HEADER_BYTES..end)?;
        requests.push(ExecRequest {
            institution,
            operation,
            body,
        });
        bytes = &bytes[end..];
    }
    Some(requests)
}

fn encode_request(
    out: &mut Vec<u8>,
    institution: InstitutionId,
    operation: Operation,
    body: &[u8],
) {
    assert!(!body.is_empty() && body.len().is_multiple_of(EVENT_BYTES));
    out.extend_from_slice(&institution.to_le_bytes());
    out.extend_from_slice(&[operation as u8, 0, 0, 0]);
    out.extend_from_slice(&((body.len() / EVENT_BYTES) as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// A batch of create_transfers requests from random members: plain transfers (some overdrawing a
/// limited account, so they are refused), linked pairs and pending transfers with a timeout.
/// `seq` makes transfer ids unique per batch; a repeated `seq` re-submits the same ids (the
/// ledger answers `exists`).
pub fn make_batch(rng: &mut impl Rng, seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let requests = rng.gen_range(1..=SIM_BATCH_REQUESTS_MAX);
    for r in 0..requests {
        let institution = rng.gen_range(1..=SIM_MEMBERS);
        let count = rng.gen_range(1..=SIM_REQUEST_TRANSFERS_MAX);
        let transfers: Vec<Transfer> = (0..count)
            .map(|k| {
                let mut flags = 0;
                let roll = rng.gen_range(0..10);
                if roll == 0 && k + 1 < count {
                    flags |= transfer_flags::LINKED;
                } else if roll == 1 {
                    flags |= transfer_flags::PENDING;
                }
                let debit_k = rng.gen_range(0..SIM_ACCOUNTS_PER_MEMBER);
                let debit = sim_account_id(institution, debit_k);
                let mut credit = sim_account_id(
                    rng.gen_range(1..=SIM_MEMBERS),
                    rng.gen_range(0..SIM_ACCOUNTS_PER_MEMBER),
                );
                if credit == debit {
                    credit = sim_account_id(institution, (debit_k + 1) % SIM_ACCOUNTS_PER_MEMBER);
                }
                Transfer {
                    id: (u128::from(seq) << 32) | (r as u128) << 8 | u128::from(k) | 1 << 120,
                    debit_account_id: debit,
                    credit_account_id: credit,
                    amount: rng.gen_range(1..5_000),
                    institution,
                    timeout_s: if flags & transfer_flags::PENDING != 0 {
                        1
                    } else {
                        0
                    },
                    ledger: SIM_LEDGER,
                    code: 1,
                    flags,
                    ..Transfer::default()
                }
            })
            .collect();
        encode_request(
            &mut out,
            institution,
            Operation::CreateTransfers,
            &encode_body(&transfers),
        );
    }
    out
}

impl StateMachine for LedgerMachine {
    fn apply_block(
        &mut self,
        height: u64,
        timestamp_ms: u64,
        batches: &[(Digest, &[u8])],
    ) -> [u8; 32] {
        assert_eq!(
            height,
            self.height + 1,
            "blocks are applied at consecutive heights"
        );
        for (_, bytes) in batches {
            // A malformed batch is skipped whole, identically on every replica.
            for request in decode_batch(bytes).unwrap_or_default() {
                // Refusals are part of the deterministic outcome; nothing to do with them here.
                let _ = execute(&mut self.ledger, timestamp_ms, &request);
            }
        }
        self.height = height;
        self.digest = digest32(&self.ledger, height);
        self.digest
    }

    fn digest(&self) -> [u8; 32] {
        self.digest
    }

    fn totals(&self) -> (u128, u128) {
        let t = self.ledger.totals();
        (
            t.debits_posted + t.debits_pending,
            t.credits_posted + t.credits_pending,
        )
    }

    /// Net credit over all accounts: zero in a double-entry ledger that conserves money.
    fn supply(&self) -> u128 {
        let t = self.ledger.totals();
        t.credits_posted.wrapping_sub(t.debits_posted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batches_round_trip_and_malformed_batches_are_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let batch = make_batch(&mut rng, 1);
        let requests = decode_batch(&batch).expect("well formed");
        assert!(!requests.is_empty());
        assert!(requests
            .iter()
            .all(|r| r.operation == Operation::CreateTransfers as u8));
        assert!(
            decode_batch(&batch[..batch.len() - 1]).is_none(),
            "truncated body"
        );
        let mut bad = batch.clone();
        bad[5] = 1;
        assert!(decode_batch(&bad).is_none(), "reserved bytes must be zero");
        assert_eq!(decode_batch(&[]).map(|r| r.len()), Some(0));
    }

    #[test]
    fn replicas_agree_and_money_is_conserved() {
        let mut a = LedgerMachine::default();
        let mut b = LedgerMachine::default();
        assert_eq!(a.digest(), b.digest());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for height in 1..=50u64 {
            let batch = make_batch(&mut rng, height % 40); // some ids repeat: `exists`
            let batches = [([0u8; 32], batch.as_slice())];
            let da = a.apply_block(height, height * 10, &batches);
            let db = b.apply_block(height, height * 10, &batches);
            assert_eq!(da, db);
            let (debits, credits) = a.totals();
            assert_eq!(debits, credits);
            assert_eq!(a.supply(), 0);
        }
        assert!(
            a.ledger.totals().transfers_count > 0,
            "some transfers applied"
        );
        // Member account 0 never goes overdrawn.
        let t = a.ledger.totals();
        assert!(t.debits_posted > 0);
    }
}
