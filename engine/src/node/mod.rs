//! `node`: the shell that wires the sans-I/O cores to real threads, sockets, disks and clocks.

pub mod config;
pub mod layout;
pub mod metrics;
