//! Core layout: which core each pipeline stage's thread is pinned to.
//!
//! The layout is computed from the number of available cores, printed at start, and can be
//! overridden stage by stage in the node config. On a 2-core machine stages share cores; on 64 the
//! light stages get a core each and verification gets the rest.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most cores a layout addresses; beyond this the extra cores are left to the OS.
pub const CORES_MAX: usize = 1024;

/// Cores at which every light stage gets a dedicated core of its own.
const CORES_DEDICATED_MIN: usize = 8;

/// One long-lived pipeline thread (the verify stage is a pool and has a core list instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Ingress,
    Dissemination,
    Consensus,
    Execute,
    Storage,
    Reply,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Ingress,
        Stage::Dissemination,
        Stage::Consensus,
        Stage::Execute,
        Stage::Storage,
        Stage::Reply,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Dissemination => "dissemination",
            Stage::Consensus => "consensus",
            Stage::Execute => "execute",
            Stage::Storage => "storage",
            Stage::Reply => "reply",
        }
    }
}

/// Per-stage overrides from the `[layout]` section of the node config. Unset stages keep the
/// computed core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutOverride {
    pub ingress: Option<usize>,
    pub dissemination: Option<usize>,
    pub consensus: Option<usize>,
    pub execute: Option<usize>,
    pub storage: Option<usize>,
    pub reply: Option<usize>,
    /// Cores of the verification pool (one rayon thread per listed core).
    pub verify: Option<Vec<usize>>,
    /// Rotates every computed core by this many (modulo the core count) before the per-stage
    /// overrides apply. Nodes that share a machine take different offsets, so their heavy stages
    /// land on different cores instead of all on the same one (`reckon init`, whose nodes all run
    /// on one machine, writes each node's index). On a machine of its own a node needs none.
    pub offset: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("layout: core {core} for stage {stage} does not exist (this machine has {cores} cores: 0..{cores})")]
    CoreMissing {
        stage: &'static str,
        core: usize,
        cores: usize,
    },
    #[error("layout: the verify pool needs at least one core")]
    VerifyEmpty,
    #[error("layout: the machine reports no cores")]
    NoCores,
}

/// The computed (or overridden) assignment of stages to cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub cores: usize,
    stage_core: [usize; Stage::ALL.len()],
    pub verify_cores: Vec<usize>,
}

impl Layout {
    /// The default layout for `cores` cores.
    ///
    /// Fewer than 8 cores: consensus, ingress and reply share core 0; execute, storage and
    /// dissemination share core 1 (if present); verification runs on every core, because it is the
    /// only stage that can use them all. From 8 cores each light stage gets its own core and the
    /// verify pool gets all the others.
    pub fn compute(cores: usize) -> Result<Layout, LayoutError> {
        if cores == 0 {
            return Err(LayoutError::NoCores);
        }
        let cores = cores.min(CORES_MAX);
        let stage_core = if cores >= CORES_DEDICATED_MIN {
            // ingress 0, dissemination 1, consensus 2, execute 3, storage 4, reply 5.
            [0, 1, 2, 3, 4, 5]
        } else {
            let second = 1 % cores;
            [0, second, 0, second, second, 0]
        };
        let verify_cores: Vec<usize> = if cores >= CORES_DEDICATED_MIN {
            (Stage::ALL.len()..cores).collect()
        } else {
            (0..cores).collect()
        };
        let layout = Layout {
            cores,
            stage_core,
            verify_cores,
        };
        layout.check()?;
        Ok(layout)
    }

    /// Applies the config's overrides on top of the computed layout: the rotation first, then
    /// each stage's explicit core.
    pub fn with_override(mut self, o: &LayoutOverride) -> Result<Layout, LayoutError> {
        if let Some(offset) = o.offset {
            let shift = offset % self.cores;
            for core in self
                .stage_core
                .iter_mut()
                .chain(self.verify_cores.iter_mut())
            {
                *core = (*core + shift) % self.cores;
            }
        }
        let pairs = [
            (Stage::Ingress, o.ingress),
            (Stage::Dissemination, o.dissemination),
            (Stage::Consensus, o.consensus),
            (Stage::Execute, o.execute),
            (Stage::Storage, o.storage),
            (Stage::Reply, o.reply),
        ];
        for (stage, core) in pairs {
            if let Some(core) = core {
                self.stage_core[stage as usize] = core;
            }
        }
        if let Some(verify) = &o.verify {
            self.verify_cores = verify.clone();
        }
        self.check()?;
        Ok(self)
    }

    pub fn core_of(&self, stage: Stage) -> usize {
        self.stage_core[stage as usize]
    }

    fn check(&self) -> Result<(), LayoutError> {
        for stage in Stage::ALL {
            let core = self.core_of(stage);
            if core >= self.cores {
                return Err(LayoutError::CoreMissing {
                    stage: stage.name(),
                    core,
                    cores: self.cores,
                });
            }
        }
        if self.verify_cores.is_empty() {
            return Err(LayoutError::VerifyEmpty);
        }
        if let Some(&core) = self.verify_cores.iter().find(|&&c| c >= self.cores) {
            return Err(LayoutError::CoreMissing {
                stage: "verify",
                core,
                cores: self.cores,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cores={}", self.cores)?;
        for stage in Stage::ALL {
            write!(f, " {}={}", stage.name(), self.core_of(stage))?;
        }
        write!(f, " verify={:?}", self.verify_cores)
    }
}

/// Number of cores this process may run on (affinity-aware), at least 1.
pub fn cores_available() -> usize {
    core_affinity::get_core_ids()
        .map(|ids| ids.len())
        .unwrap_or(1)
        .max(1)
}

/// Pins the calling thread to `core`. Returns false (and the thread stays unpinned) when the OS
/// refuses, e.g. inside a restricted cpuset; the node logs it and carries on.
pub fn pin_current(core: usize) -> bool {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.get(core) {
        Some(id) => core_affinity::set_for_current(*id),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_two_cores_share_and_verify_everywhere() {
        let one = Layout::compute(1).expect("1 core");
        assert!(Stage::ALL.iter().all(|&s| one.core_of(s) == 0));
        assert_eq!(one.verify_cores, vec![0]);
        let two = Layout::compute(2).expect("2 cores");
        assert_ne!(two.core_of(Stage::Consensus), two.core_of(Stage::Execute));
        assert_eq!(two.verify_cores, vec![0, 1]);
    }

    #[test]
    fn sixty_four_cores_dedicate_light_stages_and_give_the_rest_to_verify() {
        let l = Layout::compute(64).expect("64 cores");
        let mut stage_cores: Vec<usize> = Stage::ALL.iter().map(|&s| l.core_of(s)).collect();
        stage_cores.sort_unstable();
        stage_cores.dedup();
        assert_eq!(
            stage_cores.len(),
            Stage::ALL.len(),
            "each light stage has its own core"
        );
        assert_eq!(l.verify_cores.len(), 64 - Stage::ALL.len());
        assert!(l.verify_cores.iter().all(|c| !stage_cores.contains(c)));
    }

    #[test]
    fn override_is_applied_and_checked() {
        let o = LayoutOverride {
            execute: Some(0),
            verify: Some(vec![1]),
            ..Default::default()
        };
        let l = Layout::compute(2)
            .and_then(|l| l.with_override(&o))
            .expect("valid override");
        assert_eq!(l.core_of(Stage::Execute), 0);
        assert_eq!(l.verify_cores, vec![1]);
        let bad = LayoutOverride {
            consensus: Some(5),
            ..Default::default()
        };
        let err = Layout::compute(2)
            .and_then(|l| l.with_override(&bad))
            .unwrap_err();
        assert_eq!(
            err,
            LayoutError::CoreMissing {
                stage: "consensus",
                core: 5,
                cores: 2
            }
        );
        let empty = LayoutOverride {
            verify: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            Layout::compute(2).and_then(|l| l.with_override(&empty)),
            Err(LayoutError::VerifyEmpty)
        );
        assert_eq!(Layout::compute(0), Err(LayoutError::NoCores));
    }

    #[test]
    fn offsets_rotate_the_layout_so_nodes_sharing_two_cores_split_their_heavy_stages() {
        let node = |offset| {
            let o = LayoutOverride {
                offset: Some(offset),
                ..Default::default()
            };
            Layout::compute(2)
                .and_then(|l| l.with_override(&o))
                .expect("any offset is valid")
        };
        let (even, odd) = (node(0), node(1));
        assert_eq!(even, Layout::compute(2).expect("2 cores"));
        for stage in Stage::ALL {
            assert_ne!(even.core_of(stage), odd.core_of(stage), "{stage:?}");
        }
        assert_eq!(node(2), even, "offsets wrap around the core count");
        assert_eq!(node(3), odd);
        let mut verify = odd.verify_cores.clone();
        verify.sort_unstable();
        assert_eq!(verify, vec![0, 1], "the pool still spans every core");
        // On 64 cores an offset keeps each light stage on a core of its own.
        let o = LayoutOverride {
            offset: Some(70),
            ..Default::default()
        };
        let wide = Layout::compute(64)
            .and_then(|l| l.with_override(&o))
            .expect("64");
        let mut light: Vec<usize> = Stage::ALL.iter().map(|&s| wide.core_of(s)).collect();
        light.sort_unstable();
        light.dedup();
        assert_eq!(light.len(), Stage::ALL.len());
        assert!(wide.verify_cores.iter().all(|c| !light.contains(c)));
        // An explicit stage core wins over the rotation.
        let o = LayoutOverride {
            offset: Some(1),
            consensus: Some(0),
            ..Default::default()
        };
        let l = Layout::compute(2)
            .and_then(|l| l.with_override(&o))
            .expect("2");
        assert_eq!(l.core_of(Stage::Consensus), 0);
        assert_eq!(l.core_of(Stage::Execute), 0);
    }

    #[test]
    fn display_names_every_stage() {
        let text = Layout::compute(4).expect("4 cores").to_string();
        for stage in Stage::ALL {
            assert!(text.contains(&format!("{}=", stage.name())), "{text}");
        }
        assert!(text.contains("verify=[0, 1, 2, 3]"), "{text}");
    }
}
