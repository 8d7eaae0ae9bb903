//! `codec`: see docs/ARCHITECTURE.md.
