//! `ledger`: see docs/ARCHITECTURE.md.
