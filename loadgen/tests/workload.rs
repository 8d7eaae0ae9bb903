//! Workload generators: reproducible from the seed, internally consistent, right distributions.

use std::collections::HashMap;

use loadgen::op::{AccountKind, Op, OpKind, TraceEvent};
use loadgen::trace::EventDigest;
use loadgen::workload::dist::Zipf;
use loadgen::workload::{JointLoanConfig, TransfersConfig, Workload};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn joint_loan(seed: u64, events: usize) -> Vec<TraceEvent> {
    let config = JointLoanConfig {
        seed,
        loans: 500,
        ..JointLoanConfig::default()
    };
    Workload::joint_loan(config)
        .expect("valid config")
        .take(events)
        .collect()
}

#[test]
fn same_seed_same_stream_different_seed_different_stream() {
    let a = joint_loan(7, 20_000);
    let b = joint_loan(7, 20_000);
    let c = joint_loan(8, 20_000);
    assert_eq!(a, b);
    assert_eq!(EventDigest::of(&a), EventDigest::of(&b));
    assert_ne!(EventDigest::of(&a), EventDigest::of(&c));
    let t = |seed| -> Vec<TraceEvent> {
        let config = TransfersConfig {
            seed,
            accounts: 100,
            zipf_exponent: 1.1,
            ..Default::default()
        };
        Workload::transfers(config)
            .expect("valid")
            .take(5_000)
            .collect()
    };
    assert_eq!(t(3), t(3));
    assert_ne!(t(3), t(4));
}

/// Replays the joint-loan books from the events alone and checks every invariant.
#[test]
fn joint_loan_stream_is_internally_consistent() {
    let events = joint_loan(42, 60_000);
    let mut accounts: HashMap<u64, AccountKind> = HashMap::new();
    // loan -> (lead reserve, partner reserve, limit, share, outstanding)
    let mut loans: HashMap<u64, (u64, u64, u64, u16, u64)> = HashMap::new();
    let mut reserve: HashMap<u64, i128> = HashMap::new();
    let mut statement_end: HashMap<u64, u64> = HashMap::new();
    let mut last_ts = 0;
    let mut counts = [0u64; OpKind::COUNT];
    for e in &events {
        assert!(e.timestamp_ns > last_ts, "timestamps strictly increase");
        last_ts = e.timestamp_ns;
        counts[e.op.kind().index()] += 1;
        match e.op {
            Op::CreateAccount { account, kind } => {
                assert!(
                    accounts.insert(account, kind).is_none(),
                    "account created twice"
                );
            }
            Op::CreateLoan {
                loan,
                borrower,
                lead_reserve,
                partner_reserve,
                limit,
                partner_share_bps,
            } => {
                assert_eq!(accounts.get(&borrower), Some(&AccountKind::Borrower));
                assert_eq!(accounts.get(&lead_reserve), Some(&AccountKind::Reserve));
                assert_eq!(accounts.get(&partner_reserve), Some(&AccountKind::Reserve));
                assert!(limit > 0);
                loans.insert(
                    loan,
                    (lead_reserve, partner_reserve, limit, partner_share_bps, 0),
                );
            }
            Op::TopUp {
                reserve_account,
                amount,
            } => {
                assert_eq!(accounts.get(&reserve_account), Some(&AccountKind::Reserve));
                *reserve.entry(reserve_account).or_default() += i128::from(amount);
            }
            Op::Disburse { loan, amount } => {
                let l = loans.get_mut(&loan).expect("disburse of a created loan");
                l.4 += amount;
                assert!(l.4 <= l.2, "outstanding past the limit");
                let partner = u128::from(amount) * u128::from(l.3) / 10_000;
                *reserve.entry(l.1).or_default() -= partner as i128;
                *reserve.entry(l.0).or_default() -= i128::from(amount) - partner as i128;
                assert!(
                    reserve[&l.0] >= 0 && reserve[&l.1] >= 0,
                    "reserve overdrawn"
                );
            }
            Op::Repay {
                loan, principal, ..
            } => {
                let l = loans.get_mut(&loan).expect("repay of a created loan");
                assert!(
                    principal > 0 && principal <= l.4,
                    "repay {principal} > outstanding {}",
                    l.4
                );
                l.4 -= principal;
            }
            Op::Statement {
                account,
                period_start_ns,
                period_end_ns,
            } => {
                assert!(accounts.contains_key(&account));
                assert_eq!(
                    period_start_ns,
                    statement_end.get(&account).copied().unwrap_or(0)
                );
                assert!(period_start_ns <= period_end_ns && period_end_ns < e.timestamp_ns);
                statement_end.insert(account, period_end_ns);
            }
            Op::Transfer { .. } => panic!("joint-loan has no plain transfers"),
        }
    }
    for kind in [
        OpKind::TopUp,
        OpKind::Disburse,
        OpKind::Repay,
        OpKind::Statement,
    ] {
        assert!(
            counts[kind.index()] > 1_000,
            "{kind} is part of the mix: {counts:?}"
        );
    }
    // Setup comes first: every account and initial loan precedes the first disbursement;
    // later loans are renewals of used-up lines, with fresh ids after the initial 500.
    let first_disburse = events
        .iter()
        .position(|e| e.op.kind() == OpKind::Disburse)
        .expect("some");
    let last_create = events
        .iter()
        .rposition(|e| matches!(e.op.kind(), OpKind::CreateAccount));
    assert!(last_create.expect("setup") < first_disburse);
    let mut renewals = 0;
    for e in &events[first_disburse..] {
        if let Op::CreateLoan { loan, .. } = e.op {
            assert!(loan > 500, "renewal {loan} has a fresh id");
            renewals += 1;
        }
    }
    assert!(renewals > 0, "used-up lines are renewed");
}

#[test]
fn transfers_have_distinct_accounts_after_setup() {
    let config = TransfersConfig {
        accounts: 50,
        ..Default::default()
    };
    let events: Vec<_> = Workload::transfers(config)
        .expect("valid")
        .take(2_000)
        .collect();
    assert!(events[..50]
        .iter()
        .all(|e| e.op.kind() == OpKind::CreateAccount));
    for e in &events[50..] {
        match e.op {
            Op::Transfer {
                debit,
                credit,
                amount,
            } => {
                assert!(debit != credit && (1..=50).contains(&debit) && (1..=50).contains(&credit));
                assert!(amount > 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn zipf_sampler_matches_its_distribution() {
    let n = 100;
    let zipf = Zipf::new(n, 1.0);
    let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    assert!((zipf.probability(0) - 1.0 / harmonic).abs() < 1e-12);
    assert!((zipf.probability(9) - 0.1 / harmonic).abs() < 1e-12);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let samples = 200_000;
    let mut counts = vec![0u64; n];
    for _ in 0..samples {
        counts[zipf.sample(&mut rng)] += 1;
    }
    for rank in [0, 1, 4, 9, 49] {
        let expected = zipf.probability(rank) * samples as f64;
        let sd = expected.sqrt();
        let got = counts[rank] as f64;
        assert!(
            (got - expected).abs() < 5.0 * sd,
            "rank {rank}: {got} vs {expected}"
        );
    }
    let uniform = Zipf::new(10, 0.0);
    assert!((0..10).all(|k| (uniform.probability(k) - 0.1).abs() < 1e-12));
}

#[test]
fn bad_configs_are_refused() {
    let one_bank = JointLoanConfig {
        institutions: 1,
        ..Default::default()
    };
    assert!(Workload::joint_loan(one_bank).is_err());
    let no_mix = JointLoanConfig {
        mix: [0; 4],
        ..Default::default()
    };
    assert!(Workload::joint_loan(no_mix).is_err());
    let one_account = TransfersConfig {
        accounts: 1,
        ..Default::default()
    };
    assert!(Workload::transfers(one_account).is_err());
}
