//! Criterion bench: one batch of `BATCH_EVENTS_MAX` plain transfers applied to a ledger with
//! 10,000 accounts, through `apply` (typed) and `apply_request` (decode + apply). Kept small:
//! `cargo bench -p bench-harness --bench ledger_apply`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::codec::encode_body;
use engine::ledger::{Batch, Events, Ledger, LedgerConfig};
use engine::types::{Account, Operation, Transfer, BATCH_EVENTS_MAX};

const ACCOUNTS: u128 = 10_000;
const INSTITUTION: u32 = 2;

fn ledger() -> Ledger {
    let config = LedgerConfig {
        operator: 1,
        accounts_capacity: ACCOUNTS as usize,
        transfers_capacity: BATCH_EVENTS_MAX,
        loans_capacity: 1,
    };
    let mut ledger = Ledger::new(config);
    let accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            institution: INSTITUTION,
            ledger: 1,
            code: 1,
            ..Account::default()
        })
        .collect();
    for (index, chunk) in accounts.chunks(BATCH_EVENTS_MAX).enumerate() {
        let batch = Batch {
            requester: INSTITUTION,
            timestamp_ns: 1 + index as u64 * 1_000_000,
            events: Events::CreateAccounts(chunk.to_vec()),
        };
        let reply = ledger.apply(&batch).expect("accounts batch applies");
        assert!(reply.results().is_empty());
    }
    ledger
}

fn transfers() -> Vec<Transfer> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BATCH_EVENTS_MAX as u128)
        .map(|index| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let debit = u128::from(state % ACCOUNTS as u64) + 1;
            Transfer {
                id: index + 1,
                debit_account_id: debit,
                credit_account_id: debit % ACCOUNTS + 1,
                amount: 1 + u128::from(state % 1_000),
                institution: INSTITUTION,
                ledger: 1,
                code: 1,
                ..Transfer::default()
            }
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let events = transfers();
    let body = encode_body(&events);
    let mut group = c.benchmark_group("ledger_apply");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    group.bench_function("apply_8190_transfers", |b| {
        let batch = Batch {
            requester: INSTITUTION,
            timestamp_ns: 1_000_000_000,
            events: Events::CreateTransfers(events.clone()),
        };
        b.iter_batched(
            ledger,
            |mut ledger| {
                let reply = ledger.apply(&batch).expect("batch applies");
                assert!(reply.results().is_empty());
                ledger
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("apply_request_8190_transfers", |b| {
        b.iter_batched(
            ledger,
            |mut ledger| {
                let reply = ledger
                    .apply_request(
                        INSTITUTION,
                        1_000_000_000,
                        Operation::CreateTransfers as u8,
                        &body,
                    )
                    .expect("request applies");
                assert!(reply.results().is_empty());
                ledger
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
