//! `crypto`: see docs/ARCHITECTURE.md.
