//! `U128Map`: an open-addressing (linear probing) map from nonzero u128 ids to u32 indexes.
//!
//! Ids are never zero (the ledger rejects zero ids first), so key 0 marks an empty slot. The table
//! is a power of two, at most half full (it doubles past that), so probes stay short. No heap
//! allocation happens on insert except a doubling. `prefetch` lets the hot loop hide the cache miss
//! of a lookup a few events ahead.
//!
//! The hash is not keyed (replicas must agree), so a member could craft ids that cluster; its
//! request rate is bounded upstream (signature verification, mempool fairness).

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    key_lo: u64,
    key_hi: u64,
    value: u32,
}

#[derive(Clone)]
pub struct U128Map {
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
}

/// Smallest table (slots).
const SLOTS_MIN: usize = 16;

/// Consecutive ids share a block of `2^BLOCK_SLOTS_LOG2` slots: ids that increase (counters,
/// TigerBeetle-style time-ordered ids) then hit the table almost sequentially instead of one
/// random cache miss each. Random ids still spread uniformly.
const BLOCK_SLOTS_LOG2: u32 = 6;

/// The home slot position (before masking): a hash of the id's block, then the id's offset in
/// it. One multiply (Fibonacci hashing, high bits folded down): ids are looked up several times
/// per transfer, so the hash is on the hot path.
fn hash(key: u128) -> u64 {
    let block = key >> BLOCK_SLOTS_LOG2;
    let folded = (block as u64) ^ ((block >> 64) as u64).rotate_left(29);
    let product = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let block_hash = product ^ (product >> 32);
    (block_hash << BLOCK_SLOTS_LOG2) | (key as u64 & ((1 << BLOCK_SLOTS_LOG2) - 1))
}

/// Empty slots, written one by one so the pages are faulted in now, not on the hot path
/// (`vec![zero; n]` would map lazily-zeroed pages).
fn slots_faulted(slots_count: usize) -> Vec<Slot> {
    super::memory::vec_filled(slots_count, Slot::default())
}

impl U128Map {
    /// A map that holds `capacity` keys without growing.
    pub fn with_capacity(capacity: usize) -> U128Map {
        let slots_count = (capacity.saturating_mul(2))
            .next_power_of_two()
            .max(SLOTS_MIN);
        U128Map {
            slots: slots_faulted(slots_count),
            mask: slots_count - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_home(&self, key: u128) -> usize {
        (hash(key) as usize) & self.mask
    }

    /// Hints the CPU to load the slot `key` hashes to.
    #[inline]
    pub fn prefetch(&self, key: u128) {
        // The home slot and the next one: most probes end there (the table is at most half full).
        let home = &self.slots[self.slot_home(key)];
        super::memory::prefetch_bytes(
            home as *const Slot as usize,
            2 * std::mem::size_of::<Slot>(),
        );
    }

    #[inline]
    pub fn get(&self, key: u128) -> Option<u32> {
        if key == 0 {
            return None; // Zero marks empty slots: it is never a key.
        }
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        let mut index = self.slot_home(key);
        loop {
            let slot = &self.slots[index];
            if slot.key_lo == lo && slot.key_hi == hi {
                return Some(slot.value);
            }
            if slot.key_lo == 0 && slot.key_hi == 0 {
                return None;
            }
            index = (index + 1) & self.mask;
        }
    }

    /// Finds `key`: `Ok(value)`, or `Err(slot)`, the empty slot where it would be inserted
    /// (valid for `insert_at` until the map next changes).
    #[inline]
    pub fn find(&self, key: u128) -> Result<u32, usize> {
        assert!(key != 0, "u128 map: zero key");
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        let mut index = self.slot_home(key);
        loop {
            let slot = &self.slots[index];
            if slot.key_lo == lo && slot.key_hi == hi {
                return Ok(slot.value);
            }
            if slot.key_lo == 0 && slot.key_hi == 0 {
                return Err(index);
            }
            index = (index + 1) & self.mask;
        }
    }

    /// Inserts a key that `find` just reported missing, at the slot it returned.
    #[inline]
    pub fn insert_at(&mut self, slot_index: usize, key: u128, value: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.insert_new(key, value); // Grows, so the slot moves.
            return;
        }
        let slot = &mut self.slots[slot_index];
        assert!(
            slot.key_lo == 0 && slot.key_hi == 0,
            "u128 map: insert_at a full slot"
        );
        *slot = Slot {
            key_lo: key as u64,
            key_hi: (key >> 64) as u64,
            value,
        };
        self.len += 1;
    }

    /// Inserts a key that is not present.
    #[inline]
    pub fn insert_new(&mut self, key: u128, value: u32) {
        assert!(key != 0, "u128 map: zero key");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        let mut index = self.slot_home(key);
        loop {
            let slot = &mut self.slots[index];
            if slot.key_lo == 0 && slot.key_hi == 0 {
                *slot = Slot {
                    key_lo: lo,
                    key_hi: hi,
                    value,
                };
                self.len += 1;
                return;
            }
            assert!(
                !(slot.key_lo == lo && slot.key_hi == hi),
                "u128 map: key inserted twice"
            );
            index = (index + 1) & self.mask;
        }
    }

    /// Removes a key (backward-shift deletion keeps probe chains intact). Returns its value.
    pub fn remove(&mut self, key: u128) -> Option<u32> {
        if key == 0 {
            return None;
        }
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        let mut index = self.slot_home(key);
        loop {
            let slot = self.slots[index];
            if slot.key_lo == 0 && slot.key_hi == 0 {
                return None;
            }
            if slot.key_lo == lo && slot.key_hi == hi {
                break;
            }
            index = (index + 1) & self.mask;
        }
        let value = self.slots[index].value;
        let mut hole = index;
        let mut next = (hole + 1) & self.mask;
        loop {
            let slot = self.slots[next];
            if slot.key_lo == 0 && slot.key_hi == 0 {
                break;
            }
            let home = self.slot_home(u128::from(slot.key_lo) | (u128::from(slot.key_hi) << 64));
            // Move `slot` into the hole if its home is not cyclically within (hole, next].
            let distance_home = next.wrapping_sub(home) & self.mask;
            let distance_hole = next.wrapping_sub(hole) & self.mask;
            if distance_home >= distance_hole {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        Some(value)
    }

    /// Makes room for `capacity` keys without growing (a rehash now, once, if needed).
    pub fn reserve(&mut self, capacity: usize) {
        let slots_count = (capacity.saturating_mul(2))
            .next_power_of_two()
            .max(SLOTS_MIN);
        if slots_count > self.slots.len() {
            self.rebuild(slots_count);
        }
    }

    fn grow(&mut self) {
        self.rebuild(self.slots.len() * 2);
    }

    fn rebuild(&mut self, slots_count: usize) {
        let slots_old = std::mem::take(&mut self.slots);
        self.slots = slots_faulted(slots_count);
        self.mask = slots_count - 1;
        self.len = 0;
        for slot in slots_old {
            if slot.key_lo != 0 || slot.key_hi != 0 {
                self.insert_new(
                    u128::from(slot.key_lo) | (u128::from(slot.key_hi) << 64),
                    slot.value,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::U128Map;
    use std::collections::HashMap;

    #[test]
    fn reserve_keeps_every_key_and_stops_growth() {
        let mut map = U128Map::with_capacity(4);
        for key in 1..=20u128 {
            map.insert_new(key << 70 | key, key as u32);
        }
        map.reserve(10_000);
        let slots = map.slots.len();
        assert!(slots >= 20_000, "{slots}");
        for key in 21..=10_000u128 {
            map.insert_new(key << 70 | key, key as u32);
        }
        assert_eq!(
            map.slots.len(),
            slots,
            "no growth within the reserved capacity"
        );
        for key in 1..=10_000u128 {
            assert_eq!(map.get(key << 70 | key), Some(key as u32));
        }
        map.reserve(8); // smaller: nothing changes
        assert_eq!(map.slots.len(), slots);
    }

    #[test]
    fn map_matches_std_hashmap_under_inserts_and_removes() {
        let mut map = U128Map::with_capacity(4);
        let mut model = HashMap::new();
        let mut state: u64 = 7;
        for step in 0..20_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = u128::from(state % 3000 + 1) << (state % 3 * 40);
            if state.is_multiple_of(5) {
                assert_eq!(map.remove(key), model.remove(&key));
            } else if map.get(key).is_none() {
                map.insert_new(key, step);
                model.insert(key, step);
            }
            assert_eq!(map.len(), model.len());
        }
        for (key, value) in &model {
            assert_eq!(map.get(*key), Some(*value));
        }
    }

    #[test]
    fn find_then_insert_at_matches_insert_new_across_growth() {
        let mut map = U128Map::with_capacity(2);
        for key in 1..=5_000u128 {
            let slot = map.find(key * 977).expect_err("absent before insert");
            map.insert_at(slot, key * 977, key as u32);
            assert_eq!(map.find(key * 977), Ok(key as u32));
        }
        assert_eq!(map.len(), 5_000);
        assert_eq!(
            map.get(0),
            None,
            "zero is never a key, though it marks empty slots"
        );
        assert_eq!(map.remove(0), None);
        assert!((1..=5_000u128).all(|key| map.get(key * 977) == Some(key as u32)));
    }
}
