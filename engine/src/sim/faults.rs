//! Which faults a run injects, and their rates. Everything is drawn from the run's one seeded PRNG.

use std::fmt;

/// Fault families, selectable on the command line as `none`, `all` or a comma list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSet {
    /// Drop, duplicate, delay and reorder messages.
    pub network: bool,
    /// Split the nodes into two sides that later heal.
    pub partition: bool,
    /// Crash and restart nodes, losing unpersisted data.
    pub crash: bool,
    /// Crash in the middle of a write, leaving a torn record.
    pub torn: bool,
    /// f nodes equivocate and send invalid votes, QCs, TCs and sync responses.
    pub byzantine: bool,
}

impl FaultSet {
    pub const ALL: FaultSet = FaultSet {
        network: true,
        partition: true,
        crash: true,
        torn: true,
        byzantine: true,
    };
    pub const NONE: FaultSet = FaultSet {
        network: false,
        partition: false,
        crash: false,
        torn: false,
        byzantine: false,
    };

    pub fn parse(text: &str) -> Result<FaultSet, String> {
        let mut set = FaultSet::NONE;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => set = FaultSet::ALL,
                "none" => {}
                "network" => set.network = true,
                "partition" => set.partition = true,
                "crash" => set.crash = true,
                "torn" => set.torn = true,
                "byzantine" => set.byzantine = true,
                other => return Err(format!("unknown fault `{other}` (none, all, network, partition, crash, torn, byzantine)")),
            }
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::ALL {
            return write!(f, "all");
        }
        let names = [
            (self.network, "network"),
            (self.partition, "partition"),
            (self.crash, "crash"),
            (self.torn, "torn"),
            (self.byzantine, "byzantine"),
        ];
        let chosen: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if chosen.is_empty() {
            return write!(f, "none");
        }
        write!(f, "{}", chosen.join(","))
    }
}

/// Rates and durations (per mille for probabilities, simulated ms for times).
pub const DROP_PER_MILLE: u32 = 50;
pub const DUPLICATE_PER_MILLE: u32 = 30;
/// Messages that get an extra delay (so they overtake and are overtaken).
pub const REORDER_PER_MILLE: u32 = 100;
pub const REORDER_DELAY_MS_MAX: u64 = 300;
/// Partitions and crashes start at random times within the fault phase.
pub const PARTITIONS_MAX: u32 = 2;
pub const PARTITION_MS_MAX: u64 = 1_500;
pub const CRASHES_MAX: u32 = 3;
pub const CRASH_DOWN_MS_MAX: u64 = 1_000;
/// Chance that a durable write (safety record or log sync) is interrupted by a torn crash.
pub const TORN_CRASH_PER_MILLE: u32 = 8;
/// Chance a Byzantine node misbehaves on any given outgoing message.
pub const BYZANTINE_ACT_PER_MILLE: u32 = 400;
