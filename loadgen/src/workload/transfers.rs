//! The transfers workload: operating accounts, then plain two-account transfers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dist::{exponential_gap_ns, LogNormal, Zipf};
use crate::op::{AccountKind, InstitutionId, Op, TraceEvent};

pub const ACCOUNTS_MAX: u64 = super::dist::ZIPF_ITEMS_MAX as u64;

#[derive(Clone, Debug, serde::Serialize)]
pub struct TransfersConfig {
    pub seed: u64,
    pub institutions: u16,
    /// At least two, so a transfer has two distinct accounts.
    pub accounts: u64,
    /// 0 = uniform; > 0 = Zipf with this exponent over both debit and credit accounts.
    pub zipf_exponent: f64,
    pub events_per_second: f64,
}

impl Default for TransfersConfig {
    fn default() -> Self {
        TransfersConfig {
            seed: 1,
            institutions: 4,
            accounts: 10_000,
            zipf_exponent: 0.0,
            events_per_second: 1_000.0,
        }
    }
}

pub struct Transfers {
    config: TransfersConfig,
    rng: ChaCha8Rng,
    clock_ns: u64,
    /// Accounts created so far; setup ends when it reaches `accounts`.
    created: u64,
    /// `None` for uniform.
    hot: Option<Zipf>,
    amount: LogNormal,
}

impl Transfers {
    pub fn new(config: TransfersConfig) -> Result<Transfers, String> {
        if !(2..=ACCOUNTS_MAX).contains(&config.accounts) {
            return Err(format!("accounts must be 2..={ACCOUNTS_MAX}"));
        }
        if config.institutions == 0 {
            return Err("institutions must be >= 1".into());
        }
        if !(config.zipf_exponent.is_finite() && config.zipf_exponent >= 0.0) {
            return Err("zipf exponent must be >= 0".into());
        }
        if !(config.events_per_second.is_finite() && config.events_per_second > 0.0) {
            return Err("events per second must be > 0".into());
        }
        let hot = (config.zipf_exponent > 0.0)
            .then(|| Zipf::new(config.accounts as usize, config.zipf_exponent));
        Ok(Transfers {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            clock_ns: 0,
            created: 0,
            hot,
            // Median 250.00, 1.00 to 1,000,000.00.
            amount: LogNormal::new(25_000, 1.5, 100, 100_000_000),
            config,
        })
    }

    fn pick_account(&mut self) -> u64 {
        let index = match &self.hot {
            Some(z) => z.sample(&mut self.rng) as u64,
            None => self.rng.gen_range(0..self.config.accounts),
        };
        index + 1
    }

    fn owner(&self, account: u64) -> InstitutionId {
        ((account - 1) % u64::from(self.config.institutions)) as InstitutionId
    }

    fn next_op(&mut self) -> (InstitutionId, Op) {
        if self.created < self.config.accounts {
            self.created += 1;
            let account = self.created;
            return (
                self.owner(account),
                Op::CreateAccount {
                    account,
                    kind: AccountKind::Operating,
                },
            );
        }
        let debit = self.pick_account();
        let mut credit = self.pick_account();
        while credit == debit {
            credit = self.pick_account();
        }
        let amount = self.amount.sample(&mut self.rng);
        (
            self.owner(debit),
            Op::Transfer {
                debit,
                credit,
                amount,
            },
        )
    }
}

impl Iterator for Transfers {
    type Item = TraceEvent;

    fn next(&mut self) -> Option<TraceEvent> {
        let (institution, op) = self.next_op();
        self.clock_ns += exponential_gap_ns(&mut self.rng, 1e9 / self.config.events_per_second);
        Some(TraceEvent {
            timestamp_ns: self.clock_ns,
            institution,
            op,
        })
    }
}
