//! Properties over random sequences of batches from random requesters: money is conserved,
//! re-applying a batch changes nothing, replicas agree, snapshots round-trip, nothing panics, and
//! nothing succeeds that the authorization rules forbid.

use super::*;
use crate::types::{transfer_flags as tf, Loan};
use proptest::prelude::*;

const INSTITUTIONS: [InstitutionId; 4] = [OPERATOR, LEAD, PARTNER, OTHER];
const ACCOUNT_IDS: [u128; 10] = [
    FUNDING,
    BORROWER,
    LEAD_CASH,
    RESERVE,
    PARTNER_CASH,
    OTHER_CASH,
    LEAD_LEDGER2,
    5,
    6,
    7,
];
const AMOUNTS: [u128; 7] = [0, 1, 7, 100, 5_000, 30_000, u128::MAX];

/// Eight random knobs make one event; small ranges make collisions (exists, chains) common.
type Knobs = [u8; 8];

fn pick<T: Copy>(values: &[T], knob: u8) -> T {
    values[knob as usize % values.len()]
}

fn event_transfer(k: &Knobs, requester: InstitutionId, timeouts: bool) -> Transfer {
    let flags_options = [
        0,
        0,
        0,
        tf::LINKED,
        tf::PENDING,
        tf::POST_PENDING,
        tf::VOID_PENDING,
        tf::BALANCING_DEBIT,
        tf::BALANCING_CREDIT,
        tf::PENDING | tf::CLOSING_DEBIT,
        tf::PENDING | tf::LINKED,
        k[7] as u16,
    ];
    Transfer {
        id: u128::from(k[0] % 24) + 1,
        debit_account_id: pick(&ACCOUNT_IDS, k[1]),
        credit_account_id: pick(&ACCOUNT_IDS, k[2]),
        amount: pick(&AMOUNTS, k[3]),
        pending_id: if k[4].is_multiple_of(3) {
            0
        } else {
            u128::from(k[4] % 24) + 1
        },
        institution: if k[5].is_multiple_of(8) {
            pick(&INSTITUTIONS, k[5] / 8)
        } else {
            requester
        },
        timeout_s: if timeouts && k[6].is_multiple_of(4) {
            u32::from(k[6] % 3)
        } else {
            0
        },
        ledger: 1 + u32::from(k[5] % 16 == 1),
        code: 1,
        flags: pick(&flags_options, k[6] / 4) & tf::ALL,
        ..Transfer::default()
    }
}

fn events_of(kind: u8, requester: InstitutionId, knobs: &[Knobs], timeouts: bool) -> Events {
    match kind % 9 {
        0 => Events::CreateAccounts(
            knobs
                .iter()
                .map(|k| {
                    account(
                        pick(&ACCOUNT_IDS, k[0]),
                        pick(&INSTITUTIONS, k[1]),
                        1 + u32::from(k[2] % 2),
                        u16::from(k[3] % 8) & 7,
                    )
                })
                .collect(),
        ),
        1 | 2 => Events::CreateTransfers(
            knobs
                .iter()
                .map(|k| event_transfer(k, requester, timeouts))
                .collect(),
        ),
        3 => Events::TopUp(
            knobs
                .iter()
                .map(|k| event_transfer(k, requester, timeouts))
                .collect(),
        ),
        4 => Events::Disburse(
            knobs
                .iter()
                .map(|k| {
                    disbursement(
                        [u128::from(k[0] % 24) + 1, u128::from(k[1] % 24) + 1],
                        pick(&[LOAN, LOAN + 1, 0], k[2]),
                        pick(&AMOUNTS, k[3]),
                    )
                })
                .collect(),
        ),
        5 => Events::Repay(
            knobs
                .iter()
                .map(|k| {
                    repayment(
                        [u128::from(k[0] % 24) + 1, u128::from(k[1] % 24) + 1],
                        pick(&[LOAN, LOAN + 1, 0], k[2]),
                        pick(&AMOUNTS, k[3]),
                        pick(&AMOUNTS, k[4]),
                    )
                })
                .collect(),
        ),
        6 => Events::CreateReserves(
            knobs
                .iter()
                .map(|k| {
                    let floor = pick(&AMOUNTS, k[2]);
                    let institution = if k[1] % 4 == 0 {
                        pick(&INSTITUTIONS, k[1] / 4)
                    } else {
                        requester
                    };
                    reserve(
                        pick(&ACCOUNT_IDS, k[0]),
                        institution,
                        floor,
                        floor.saturating_add(pick(&AMOUNTS, k[3])),
                    )
                })
                .collect(),
        ),
        7 => Events::PostStatements(
            knobs
                .iter()
                .map(|k| Statement {
                    account_id: pick(&ACCOUNT_IDS, k[0]),
                    debits_total: pick(&AMOUNTS, k[1]),
                    period_start_ns: u64::from(k[2]) * NS_PER_S / 4,
                    period_end_ns: u64::from(k[3]) * NS_PER_S / 2,
                    transfer_count: u64::from(k[4] % 4),
                    institution: if k[5] % 4 == 0 {
                        pick(&INSTITUTIONS, k[5] / 4)
                    } else {
                        requester
                    },
                    ..Statement::default()
                })
                .collect(),
        ),
        _ => Events::CreateLoans(
            knobs
                .iter()
                .map(|k| Loan {
                    partner_share_bps: u16::from(k[1]) * 40,
                    ..loan(LOAN + u128::from(k[0] % 2))
                })
                .collect(),
        ),
    }
}

fn batch_strategy() -> impl Strategy<Value = Vec<(u8, u8, Vec<Knobs>)>> {
    prop::collection::vec(
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<Knobs>(), 0..8),
        ),
        1..20,
    )
}

/// Checks every successful event of a batch against the authorization rules.
fn assert_authorized(
    ledger: &Ledger,
    requester: InstitutionId,
    events: &Events,
    codes: &[ResultCode],
) {
    let owner = |id: u128| {
        ledger.accounts[ledger.account_get(id).expect("account of a success") as usize].institution
    };
    for (index, code) in codes.iter().enumerate().filter(|(_, code)| code.is_ok()) {
        match events {
            Events::CreateAccounts(e) => {
                assert!(e[index].institution == requester || requester == OPERATOR)
            }
            Events::CreateTransfers(e) | Events::TopUp(e) => {
                let debit = if e[index].flags & (tf::POST_PENDING | tf::VOID_PENDING) != 0 {
                    ledger.lookup_transfers(requester, &[e[index].pending_id])[0].debit_account_id
                } else {
                    e[index].debit_account_id
                };
                assert_eq!(
                    owner(debit),
                    requester,
                    "debit of an account not owned, {code:?}"
                );
                if matches!(events, Events::TopUp(_))
                    && e[index].flags & (tf::POST_PENDING | tf::VOID_PENDING) == 0
                {
                    assert_eq!(owner(e[index].credit_account_id), requester);
                }
            }
            Events::Disburse(e) => assert_eq!(
                ledger.loan(e[index].loan_id).expect("loan").0.lead,
                requester
            ),
            Events::Repay(e) => assert_eq!(
                ledger.loan(e[index].loan_id).expect("loan").0.lead,
                requester
            ),
            Events::CreateLoans(e) => {
                assert!(e[index].partner == requester || requester == OPERATOR)
            }
            Events::CreateReserves(e) => {
                assert!(owner(e[index].account_id) == requester || requester == OPERATOR)
            }
            Events::PostStatements(e) => assert_eq!(owner(e[index].account_id), requester),
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_conserve_money_authorize_and_agree(batches in batch_strategy()) {
        let mut world = World::consortium();
        let mut replica = World::consortium();
        for (kind, who, knobs) in &batches {
            let requester = pick(&INSTITUTIONS, *who);
            let events = events_of(*kind, requester, knobs, true);
            let codes = world.codes(requester, events.clone());
            let codes_replica = replica.codes(requester, events.clone());
            prop_assert_eq!(&codes, &codes_replica);
            prop_assert_eq!(world.ledger.digest(), replica.ledger.digest());
            world.assert_conserved();
            assert_authorized(&world.ledger, requester, &events, &codes);
        }
        let restored = Ledger::from_snapshot_bytes(&world.ledger.snapshot_bytes()).expect("snapshot loads");
        prop_assert_eq!(restored.digest(), world.ledger.digest());
        prop_assert_eq!(restored.totals(), world.ledger.totals());
        prop_assert_eq!(restored.snapshot_bytes(), world.ledger.snapshot_bytes());
    }

    #[test]
    fn applying_a_batch_twice_changes_nothing_the_second_time(batches in batch_strategy()) {
        let mut world = World::consortium();
        for (kind, who, knobs) in &batches {
            let requester = pick(&INSTITUTIONS, *who);
            let events = events_of(*kind, requester, knobs, false);
            let first = world.codes(requester, events.clone());
            let digest = world.ledger.digest();
            let second = world.codes(requester, events);
            for (before, after) in first.iter().zip(&second) {
                if before.is_ok() {
                    prop_assert!(matches!(after, ResultCode::Exists | ResultCode::LinkedEventFailed), "{:?} then {:?}", before, after);
                }
            }
            if first.iter().all(|code| code.is_ok() || *code == ResultCode::Exists) {
                prop_assert_eq!(world.ledger.digest(), digest);
            }
            world.assert_conserved();
        }
    }

    #[test]
    fn random_request_bytes_never_panic(operation in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..600), who in any::<u8>()) {
        let mut world = World::consortium();
        let requester = pick(&INSTITUTIONS, who);
        let _ = world.ledger.apply_request(requester, world.clock_ns + 1, operation, &body);
        let mut aligned = body.clone();
        aligned.resize(body.len() / 128 * 128, 0);
        let _ = world.ledger.apply_request(requester, world.clock_ns + 2, operation, &aligned);
        world.assert_conserved();
    }
}
