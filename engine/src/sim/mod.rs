//! `sim`: deterministic simulator (being built).
