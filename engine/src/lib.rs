//! Reckon engine: everything a consortium ledger node is.
//!
//! See docs/ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod allocator;
pub mod audit;
pub mod client;
pub mod codec;
pub mod consensus;
pub mod crypto;
pub mod exec;
pub mod ledger;
pub mod mempool;
pub mod net;
pub mod node;
pub mod sim;
pub mod storage;
pub mod types;
