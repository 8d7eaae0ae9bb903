//! Orders pipelined requests: a request may be in flight together with another only if every
//! pair of their events commutes (the planner's own `conflicts` relation), because a cluster
//! may commit requests in flight together in any order.

use super::idhash::IdMap;
use super::plan::{conflicts, ACCESS_ALL, ACCESS_KINDS};
use super::EngineRequest;

/// Per resource, how many requests of the set touch it, per access kind.
#[derive(Default)]
pub struct ConflictIndex {
    counts: IdMap<u128, [u32; ACCESS_KINDS]>,
}

impl ConflictIndex {
    /// Whether `request` conflicts with any request in the set.
    pub fn conflicts_with(&self, request: &EngineRequest) -> bool {
        request.footprint.iter().any(|&(resource, access)| {
            self.counts.get(&resource).is_some_and(|counts| {
                ACCESS_ALL
                    .iter()
                    .any(|&other| counts[other as usize] > 0 && conflicts(access, other))
            })
        })
    }

    pub fn add(&mut self, request: &EngineRequest) {
        for &(resource, access) in &request.footprint {
            self.counts.entry(resource).or_default()[access as usize] += 1;
        }
    }

    /// Removes a request added before (each of its accesses once).
    pub fn remove(&mut self, request: &EngineRequest) {
        for &(resource, access) in &request.footprint {
            if let Some(counts) = self.counts.get_mut(&resource) {
                let count = &mut counts[access as usize];
                *count = count.saturating_sub(1);
                if counts.iter().all(|c| *c == 0) {
                    self.counts.remove(&resource);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }
}
