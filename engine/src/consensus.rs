//! `consensus`: see docs/ARCHITECTURE.md.
