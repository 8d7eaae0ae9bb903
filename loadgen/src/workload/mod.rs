//! Workloads: seeded, reproducible event streams.

pub mod dist;
pub mod joint_loan;
pub mod transfers;

pub use joint_loan::{JointLoan, JointLoanConfig};
pub use transfers::{Transfers, TransfersConfig};

use crate::op::TraceEvent;

/// A synthetic workload, ready to stream. Both generators are endless; callers bound them.
pub enum Workload {
    JointLoan(Box<JointLoan>),
    Transfers(Box<Transfers>),
}

impl Workload {
    pub fn joint_loan(config: JointLoanConfig) -> Result<Workload, String> {
        Ok(Workload::JointLoan(Box::new(JointLoan::new(config)?)))
    }

    pub fn transfers(config: TransfersConfig) -> Result<Workload, String> {
        Ok(Workload::Transfers(Box::new(Transfers::new(config)?)))
    }
}

impl Iterator for Workload {
    type Item = TraceEvent;

    fn next(&mut self) -> Option<TraceEvent> {
        match self {
            Workload::JointLoan(w) => w.next(),
            Workload::Transfers(w) => w.next(),
        }
    }
}
