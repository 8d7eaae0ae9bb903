//! `node`: the shell that wires the sans-I/O cores to real threads, sockets, disks and clocks.
//!
//! Data flow: client port → `ingress` → `verify` → mempool → `dissemination` → `consensus_stage`
//! → `execute` (ledger + block log) → `reply`. Peer frames arrive through `peers::run_dispatch`.
//! See docs/modules/node.md and docs/OPERATIONS.md.

pub mod batches;
pub mod config;
pub mod consensus_stage;
pub mod dissemination;
pub mod execute;
pub mod genesis;
pub mod ingress;
pub mod init;
pub mod layout;
pub mod metrics;
pub mod peers;
pub mod protocol;
pub mod recover;
pub mod reply;
pub mod run;
pub mod serve_budget;
pub mod snapshots;
pub mod state;
pub mod thread_usage;
pub mod verify;

#[cfg(test)]
mod tests_init;
