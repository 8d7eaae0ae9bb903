//! Reckon engine: everything a consortium ledger node is.
//!
//! See docs/ARCHITECTURE.md for the bird's-eye view and the code map.
