//! loadgen: Reckon's load generator.
//!
//! Code map: `op` (event model), `workload` (seeded generators), `trace` (CSV/binary files),
//! `target` (the boundary to what receives load), `driver` (open/closed loop, CO correction),
//! `recorder` (HDR histograms and timeline), `output` (hgrm, hlog, summary, plots), `report`.

pub mod commands;
pub mod driver;
pub mod engine_map;
pub mod inproc;
pub mod op;
pub mod output;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod signing;
pub mod target;
pub mod tcp;
pub mod trace;
pub mod workload;
