//! `types`: ids, bounds and fixed-size records shared by every module.
//!
//! Every bound is named here once and checked where it is used.

/// A consortium member (a bank or the consortium operator). Stable across the chain's life.
pub type InstitutionId = u32;

/// Identifies one chain; every signature is domain-separated by it so nothing replays across chains.
pub type ChainId = u64;

/// Size in bytes of every event record on the wire and on disk (accounts, transfers, loans, ...).
pub const EVENT_BYTES: usize = 128;

/// Most events one signed request may carry (TigerBeetle's bound for a 1 MiB message).
pub const BATCH_EVENTS_MAX: usize = 8190;

/// Largest request body: `BATCH_EVENTS_MAX` fixed-size events.
pub const REQUEST_BODY_BYTES_MAX: usize = BATCH_EVENTS_MAX * EVENT_BYTES;
