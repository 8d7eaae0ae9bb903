//! `U128Map`: an open-addressing (linear probing) map from nonzero u128 ids to u32 indexes.
//!
//! Ids are never zero (the ledger rejects zero ids first), so key 0 marks an empty slot. The table
//! is a power of two, at most half full, so probes stay short. `prefetch` lets the hot loop hide
//! the cache miss of a lookup a few events ahead.
//!
//! # Incremental growth
//!
//! The transfer index reaches tens of millions of keys, and every replica grows at the same
//! height: a stop-the-world doubling (allocate, fault in and rehash a multi-GiB table) would stall
//! the whole cluster for seconds. So the table grows in small, bounded steps on the inserts
//! themselves, through three phases (`GrowthPhase`):
//!
//! - **Idle**: one table.
//! - **Preparing**: from 3/8 full, the next table (twice the slots) is allocated lazily zeroed
//!   (`alloc_zeroed`: no page is touched) and every insert faults in at most one 2 MiB-aligned
//!   chunk of it (one write per 4 KiB page), paced so that the whole table is faulted in by the
//!   time the current one is half full. Nothing else changes: the prepared table is empty.
//! - **Migrating**: the insert that would make the table more than half full makes the prepared
//!   table current and the previous one `old`. Every insert then places its key in the current
//!   table and moves the next `MIGRATE_SLOTS_PER_INSERT` old slots (a cursor) into it. When the
//!   cursor passes the end, the old table is dropped.
//!
//! Invariants (checked by the tests' `assert_invariants`):
//!
//! - Every live key is in exactly one place: the current table, or a *live* slot of the old
//!   table, i.e. one at or past the cursor that is not a tombstone. `len` counts live keys.
//! - The old table is never inserted into. A remove of a key still in it turns its slot into a
//!   tombstone (key kept, value `TOMBSTONE`) so the old probe chains stay intact; migration skips
//!   tombstones and lookups treat them (and old slots before the cursor, already moved) as absent.
//! - Lookups probe the current table, then the old one; `find`'s `Err(slot)` is a slot of the
//!   current table, and an insert migrates only after placing its key, so that slot stays valid.
//! - A migration ends before the next preparing phase begins: it takes `slots_old / 8` inserts,
//!   and the new table (`2 * slots_old` slots, `slots_old / 2 + 1` keys at the switch) reaches
//!   its preparing mark (3/8 full, `3 * slots_old / 4` keys) `slots_old / 4 - 1` inserts later at
//!   the earliest (removes only delay it). Should it not have ended there, or at the next switch,
//!   it is finished then in one go: a fallback this arithmetic never reaches.
//! - Values are indexes below `u32::MAX` (asserted): `u32::MAX` marks a tombstone.
//!
//! `with_capacity` and `reserve` (startup) still allocate and fault in at once, and size the table
//! so that the capacity asked for stays below the preparing mark: a ledger sized for its records
//! never allocates a next table (static allocation, at 8/3 to 16/3 slots per key). Past that
//! capacity growth is incremental as above.
//!
//! The hash is not keyed (replicas must agree), so a member could craft ids that cluster; its
//! request rate is bounded upstream (signature verification, mempool fairness).

use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    key_lo: u64,
    key_hi: u64,
    value: u32,
}

impl Slot {
    #[inline]
    fn is_empty(&self) -> bool {
        self.key_lo == 0 && self.key_hi == 0
    }

    #[inline]
    fn holds(&self, lo: u64, hi: u64) -> bool {
        self.key_lo == lo && self.key_hi == hi
    }

    fn key(&self) -> u128 {
        u128::from(self.key_lo) | (u128::from(self.key_hi) << 64)
    }
}

/// The value of an old-table slot whose key was removed while migrating.
const TOMBSTONE: u32 = u32::MAX;

/// Old slots migrated per insert. Migration then takes `slots_old / 8` inserts, well before the
/// new table reaches its own preparing mark (`slots_old / 4` inserts after the switch).
const MIGRATE_SLOTS_PER_INSERT: usize = 8;

/// At most this much of a prepared table is faulted in per insert (a huge page, where the kernel
/// backs the table with them).
const FAULT_CHUNK_BYTES: usize = 2 << 20;
const PAGE_BYTES: usize = 4096;

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

/// The table size (slots) that holds `capacity` keys without any growth work: below its
/// preparing mark, so a node sized for its records never allocates or faults in a next table
/// (static allocation at startup; the price is 8/3 to 16/3 slots per key instead of 2 to 4).
fn slots_for(capacity: usize) -> usize {
    let mut slots = capacity
        .saturating_mul(8)
        .div_ceil(3)
        .next_power_of_two()
        .max(SLOTS_MIN);
    while preparing_mark(slots) <= capacity {
        slots *= 2;
    }
    slots
}

/// The `len` at which a table of `slots_count` slots starts preparing the next one.
fn preparing_mark(slots_count: usize) -> usize {
    slots_count / 8 * 3
}

/// The pacing of preparing: the `len` from which chunk `chunk` (of `chunks`, from 0) of the
/// next table is due, so that the share of chunks faulted in follows the share of the way from
/// `len_start` to `threshold` (half full): `chunk + 1` chunks once `len - len_start` exceeds
/// `chunk / chunks` of the way, all of them by the insert that reaches `threshold`. One chunk per
/// insert keeps up: the next table is 48 bytes per current slot, 384 bytes per insert of the way
/// (`chunks` is far below the way). With no way left, every chunk is due at once (still one per
/// insert; the rest faults in on first use).
fn chunk_due(len_start: usize, threshold: usize, chunks: usize, chunk: usize) -> usize {
    if len_start >= threshold {
        return 0;
    }
    let way = threshold - len_start;
    len_start + chunk * way / chunks + 1
}

/// Empty slots with their pages faulted in now, not on the hot path (`vec![zero; n]` would map
/// lazily-zeroed pages). Startup only (`with_capacity`, `reserve`): a large table is populated
/// on every core (`memory::populate_parallel`); where the kernel cannot populate ahead, it is
/// written instead.
fn slots_faulted(slots_count: usize) -> Vec<Slot> {
    let mut slots = slots_lazy(slots_count);
    let bytes = std::mem::size_of_val(slots.as_slice());
    let populated = super::memory::populate_parallel(&[(slots.as_ptr() as usize, bytes)]);
    if populated < bytes / 2 {
        slots.fill(Slot::default());
    }
    slots
}

/// Empty slots, lazily zeroed: the allocator maps fresh pages without touching them (they are
/// faulted in by `fault_chunk`, or on first use), so the insert that allocates even GiBs takes
/// no burst of page faults.
fn slots_lazy(slots_count: usize) -> Vec<Slot> {
    assert!(slots_count > 0);
    let layout = Layout::array::<Slot>(slots_count).expect("u128 map: table too large");
    // SAFETY: `layout` has a nonzero size (`slots_count > 0`, `Slot` is not zero-sized).
    let pointer = unsafe { alloc_zeroed(layout) } as *mut Slot;
    if pointer.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `pointer` comes from the global allocator with the layout of `slots_count` `Slot`s
    // (what `Vec` frees it with), so it is aligned and sized for capacity `slots_count`; all its
    // bytes are zero, and an all-zero `Slot` is a valid value (integers; an empty slot).
    let slots = unsafe { Vec::from_raw_parts(pointer, slots_count, slots_count) };
    super::memory::advise_huge_pages(&slots);
    slots
}

/// How many `FAULT_CHUNK_BYTES`-aligned chunks (of the address space) `slots` spans.
fn chunks_spanned(slots: &[Slot]) -> usize {
    let start = slots.as_ptr() as usize;
    let end = start + std::mem::size_of_val(slots);
    (end - start / FAULT_CHUNK_BYTES * FAULT_CHUNK_BYTES).div_ceil(FAULT_CHUNK_BYTES)
}

/// Faults in chunk `chunk` of `slots` (`0..chunks_spanned(slots)`): writes an empty slot (the
/// value already there) in each 4 KiB page of it. Returns the pages written.
fn fault_chunk(slots: &mut [Slot], chunk: usize) -> u64 {
    let slot_bytes = std::mem::size_of::<Slot>();
    let start = slots.as_ptr() as usize;
    let end = start + std::mem::size_of_val(slots);
    let chunk_first = start / FAULT_CHUNK_BYTES * FAULT_CHUNK_BYTES + chunk * FAULT_CHUNK_BYTES;
    let chunk_start = chunk_first.max(start);
    let chunk_end = (chunk_first + FAULT_CHUNK_BYTES).min(end);
    let mut pages = 0;
    let mut page = chunk_start / PAGE_BYTES * PAGE_BYTES;
    while page < chunk_end {
        // The first slot that starts in this page (its bytes past the fields may be padding,
        // which a write need not touch), or the last slot if none starts there.
        let offset = page.max(chunk_start) - start;
        let index = offset.div_ceil(slot_bytes).min(slots.len() - 1);
        slots[index] = Slot::default();
        pages += 1;
        page += PAGE_BYTES;
    }
    pages
}

/// Finds `lo`/`hi` in `slots`: `Ok(slot index)`, or `Err(index of the empty slot ending the probe)`.
#[inline]
fn probe(slots: &[Slot], mask: usize, lo: u64, hi: u64, home: usize) -> Result<usize, usize> {
    let mut index = home;
    loop {
        let slot = &slots[index];
        if slot.holds(lo, hi) {
            return Ok(index);
        }
        if slot.is_empty() {
            return Err(index);
        }
        index = (index + 1) & mask;
    }
}

/// Inserts a key that is not in `slots` (asserted on the way), at the end of its probe chain.
#[inline]
fn slots_insert(slots: &mut [Slot], key: u128, value: u32) {
    let mask = slots.len() - 1;
    let lo = key as u64;
    let hi = (key >> 64) as u64;
    match probe(slots, mask, lo, hi, hash(key) as usize & mask) {
        Ok(_) => panic!("u128 map: key inserted twice"),
        Err(index) => {
            slots[index] = Slot {
                key_lo: lo,
                key_hi: hi,
                value,
            }
        }
    }
}

/// The index of `key`'s live slot in an old table being migrated: at or past `cursor` (slots
/// before it have moved to the current table) and not a tombstone.
fn old_live(old: &[Slot], cursor: usize, key: u128) -> Option<usize> {
    let mask = old.len() - 1;
    let found = probe(
        old,
        mask,
        key as u64,
        (key >> 64) as u64,
        hash(key) as usize & mask,
    );
    found
        .ok()
        .filter(|&index| index >= cursor && old[index].value != TOMBSTONE)
}

/// Growth state (see the module comment).
#[derive(Clone)]
enum Growth {
    Idle,
    Preparing {
        /// The next table (twice the slots), lazily zeroed, being faulted in.
        next: Vec<Slot>,
        /// `len` when preparing began (the pacing's start).
        len_start: usize,
        chunks_faulted: usize,
        chunks: usize,
        /// The next chunk is faulted in by the first insert that brings `len` to this.
        chunk_due_len: usize,
    },
    Migrating {
        /// The previous table: read-only except for tombstones.
        old: Vec<Slot>,
        /// Old slots before this one have been migrated.
        cursor: usize,
    },
}

/// Growth phase of a `U128Map` (metrics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrowthPhase {
    /// One table.
    Idle,
    /// The next table, of `slots_next` slots, is allocated; `chunks_faulted` of its `chunks`
    /// 2 MiB chunks are faulted in.
    Preparing {
        slots_next: usize,
        chunks_faulted: usize,
        chunks: usize,
    },
    /// Keys move from the old table (`slots_old` slots) to the current one; the old slots before
    /// `cursor` are done.
    Migrating { slots_old: usize, cursor: usize },
}

/// A `U128Map`'s growth, for metrics and tests (`U128Map::growth_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGrowth {
    /// Slots of the current table.
    pub slots: usize,
    pub phase: GrowthPhase,
    /// Old slots migrated since the map was made (all growths).
    pub slots_migrated: u64,
    /// Pages of prepared tables faulted in since the map was made (all growths).
    pub pages_faulted: u64,
}

#[derive(Clone)]
pub struct U128Map {
    slots: Vec<Slot>,
    mask: usize,
    /// Live keys (current table plus live old slots).
    len: usize,
    /// An insert at `len >= work_at` takes the slow path (growth work): the preparing mark when
    /// idle, 0 (every insert) while preparing or migrating.
    work_at: usize,
    growth: Growth,
    slots_migrated: u64,
    pages_faulted: u64,
}

impl U128Map {
    /// A map that holds `capacity` keys without growing.
    pub fn with_capacity(capacity: usize) -> U128Map {
        let slots = slots_faulted(slots_for(capacity));
        U128Map {
            mask: slots.len() - 1,
            work_at: preparing_mark(slots.len()) - 1,
            slots,
            len: 0,
            growth: Growth::Idle,
            slots_migrated: 0,
            pages_faulted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The growth phase and counters (metrics, tests).
    pub fn growth_state(&self) -> MapGrowth {
        let phase = match &self.growth {
            Growth::Idle => GrowthPhase::Idle,
            Growth::Preparing {
                next,
                chunks_faulted,
                chunks,
                ..
            } => GrowthPhase::Preparing {
                slots_next: next.len(),
                chunks_faulted: *chunks_faulted,
                chunks: *chunks,
            },
            Growth::Migrating { old, cursor } => GrowthPhase::Migrating {
                slots_old: old.len(),
                cursor: *cursor,
            },
        };
        MapGrowth {
            slots: self.slots.len(),
            phase,
            slots_migrated: self.slots_migrated,
            pages_faulted: self.pages_faulted,
        }
    }

    #[inline]
    fn slot_home(&self, key: u128) -> usize {
        (hash(key) as usize) & self.mask
    }

    /// Hints the CPU to load the slot `key` hashes to (in both tables while migrating: a new id
    /// misses, and a miss probes both).
    #[inline]
    pub fn prefetch(&self, key: u128) {
        // The home slot and the next one: most probes end there (the table is at most half full).
        let home = &self.slots[self.slot_home(key)];
        super::memory::prefetch_bytes(
            home as *const Slot as usize,
            2 * std::mem::size_of::<Slot>(),
        );
        if let Growth::Migrating { old, .. } = &self.growth {
            let home = &old[hash(key) as usize & (old.len() - 1)];
            super::memory::prefetch_bytes(
                home as *const Slot as usize,
                2 * std::mem::size_of::<Slot>(),
            );
        }
    }

    #[inline]
    pub fn get(&self, key: u128) -> Option<u32> {
        if key == 0 {
            return None; // Zero marks empty slots: it is never a key.
        }
        self.find(key).ok()
    }

    /// Finds `key`: `Ok(value)`, or `Err(slot)`, the empty slot of the current table where it
    /// would be inserted (valid for `insert_at` until the map next changes).
    #[inline]
    pub fn find(&self, key: u128) -> Result<u32, usize> {
        assert!(key != 0, "u128 map: zero key");
        match probe(
            &self.slots,
            self.mask,
            key as u64,
            (key >> 64) as u64,
            self.slot_home(key),
        ) {
            Ok(index) => Ok(self.slots[index].value),
            Err(vacancy) if matches!(self.growth, Growth::Migrating { .. }) => {
                self.find_old(key, vacancy)
            }
            Err(vacancy) => Err(vacancy),
        }
    }

    /// `find`'s miss in the current table while migrating: the key may still be in the old one.
    /// Out of line, so that `find` stays small enough to inline into the ledger's hot loop (it
    /// was not, when this was inside it: +11 % per transfer in `bench-harness ledger`).
    #[inline(never)]
    fn find_old(&self, key: u128, vacancy: usize) -> Result<u32, usize> {
        match &self.growth {
            Growth::Migrating { old, cursor } => match old_live(old, *cursor, key) {
                Some(index) => Ok(old[index].value),
                None => Err(vacancy),
            },
            _ => Err(vacancy),
        }
    }

    /// Inserts a key that `find` just reported missing, at the slot it returned.
    #[inline]
    pub fn insert_at(&mut self, slot_index: usize, key: u128, value: u32) {
        if self.len >= self.work_at {
            self.insert_growing(Some(slot_index), key, value);
            return;
        }
        self.place_at(slot_index, key, value);
    }

    /// Inserts a key that is not present.
    #[inline]
    pub fn insert_new(&mut self, key: u128, value: u32) {
        assert!(key != 0, "u128 map: zero key");
        if self.len >= self.work_at {
            self.insert_growing(None, key, value);
            return;
        }
        self.place_new(key, value);
    }

    #[inline]
    fn place_at(&mut self, slot_index: usize, key: u128, value: u32) {
        assert!(value != TOMBSTONE, "u128 map: value u32::MAX");
        let slot = &mut self.slots[slot_index];
        assert!(slot.is_empty(), "u128 map: insert_at a full slot");
        *slot = Slot {
            key_lo: key as u64,
            key_hi: (key >> 64) as u64,
            value,
        };
        self.len += 1;
    }

    #[inline]
    fn place_new(&mut self, key: u128, value: u32) {
        assert!(value != TOMBSTONE, "u128 map: value u32::MAX");
        slots_insert(&mut self.slots, key, value);
        self.len += 1;
    }

    /// An insert with growth work to do: switch tables if this key would make the current one
    /// more than half full, place the key, then one bounded step (fault in a chunk of the next
    /// table, or migrate a few old slots), in that order so that `vacancy` stays valid.
    #[inline(never)]
    fn insert_growing(&mut self, vacancy: Option<usize>, key: u128, value: u32) {
        let mut vacancy = vacancy;
        if (self.len + 1) * 2 > self.slots.len() {
            self.switch_tables();
            vacancy = None; // The table changed.
        }
        match vacancy {
            Some(slot_index) => self.place_at(slot_index, key, value),
            None => {
                if let Growth::Migrating { old, cursor } = &self.growth {
                    assert!(
                        old_live(old, *cursor, key).is_none(),
                        "u128 map: key inserted twice"
                    );
                }
                self.place_new(key, value);
            }
        }
        match self.growth {
            Growth::Idle => {}
            Growth::Preparing { .. } => self.fault_step(),
            Growth::Migrating { .. } => self.migrate(MIGRATE_SLOTS_PER_INSERT),
        }
        if self.len >= preparing_mark(self.slots.len())
            && !matches!(self.growth, Growth::Preparing { .. })
        {
            self.migrate(usize::MAX); // Never migrating here (see the module comment).
            self.preparing_begin();
        }
        self.work_at = match self.growth {
            Growth::Idle => preparing_mark(self.slots.len()) - 1,
            _ => 0,
        };
    }

    fn preparing_begin(&mut self) {
        debug_assert!(matches!(self.growth, Growth::Idle));
        let next = slots_lazy(self.slots.len() * 2);
        let chunks = chunks_spanned(&next);
        self.growth = Growth::Preparing {
            chunk_due_len: chunk_due(self.len, self.slots.len() / 2, chunks, 0),
            next,
            len_start: self.len,
            chunks_faulted: 0,
            chunks,
        };
    }

    /// Faults in the next chunk of the prepared table if it is due (at most one per insert).
    fn fault_step(&mut self) {
        let threshold = self.slots.len() / 2;
        let len = self.len;
        let Growth::Preparing {
            next,
            len_start,
            chunks_faulted,
            chunks,
            chunk_due_len,
        } = &mut self.growth
        else {
            return;
        };
        if *chunks_faulted >= *chunks || len < *chunk_due_len {
            return;
        }
        self.pages_faulted += fault_chunk(next, *chunks_faulted);
        *chunks_faulted += 1;
        *chunk_due_len = chunk_due(*len_start, threshold, *chunks, *chunks_faulted);
    }

    /// At the growth threshold: the prepared table becomes current, the current one old.
    fn switch_tables(&mut self) {
        self.migrate(usize::MAX); // Never migrating here (see the module comment).
        let next = match std::mem::replace(&mut self.growth, Growth::Idle) {
            Growth::Preparing { next, .. } => next,
            // Never idle here (preparing begins at 3/8 full): the table would fault in on use.
            _ => slots_lazy(self.slots.len() * 2),
        };
        // Chunks not yet faulted in (never, with the pacing above) fault in on first use.
        let old = std::mem::replace(&mut self.slots, next);
        self.mask = self.slots.len() - 1;
        self.growth = Growth::Migrating { old, cursor: 0 };
    }

    /// Migrates up to `slots_count` old slots (all that remain for `usize::MAX`); drops the old
    /// table once all are done.
    fn migrate(&mut self, slots_count: usize) {
        let Growth::Migrating { old, cursor } = &mut self.growth else {
            return;
        };
        let end = cursor.saturating_add(slots_count).min(old.len());
        for slot in &old[*cursor..end] {
            if !slot.is_empty() && slot.value != TOMBSTONE {
                slots_insert(&mut self.slots, slot.key(), slot.value);
            }
        }
        self.slots_migrated += (end - *cursor) as u64;
        *cursor = end;
        if end == old.len() {
            self.growth = Growth::Idle;
        }
    }

    /// Removes a key (backward-shift deletion keeps probe chains intact; a key still in the old
    /// table becomes a tombstone there). Returns its value.
    pub fn remove(&mut self, key: u128) -> Option<u32> {
        if key == 0 {
            return None;
        }
        if let Some(value) = self.remove_current(key) {
            self.len -= 1;
            return Some(value);
        }
        if let Growth::Migrating { old, cursor } = &mut self.growth {
            if let Some(index) = old_live(old, *cursor, key) {
                self.len -= 1;
                return Some(std::mem::replace(&mut old[index].value, TOMBSTONE));
            }
        }
        None
    }

    /// Removes a key from the current table (backward shift).
    fn remove_current(&mut self, key: u128) -> Option<u32> {
        let mut hole = probe(
            &self.slots,
            self.mask,
            key as u64,
            (key >> 64) as u64,
            self.slot_home(key),
        )
        .ok()?;
        let value = self.slots[hole].value;
        let mut next = (hole + 1) & self.mask;
        loop {
            let slot = self.slots[next];
            if slot.is_empty() {
                break;
            }
            let home = self.slot_home(slot.key());
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
        Some(value)
    }

    /// Makes room for `capacity` keys without growing: if the current table is too small, one
    /// rehash now into a table allocated and faulted in at once (startup), ending any growth
    /// under way.
    pub fn reserve(&mut self, capacity: usize) {
        let slots_count = slots_for(capacity);
        if slots_count > self.slots.len() {
            self.rebuild(slots_count);
        }
    }

    fn rebuild(&mut self, slots_count: usize) {
        self.migrate(usize::MAX); // Every live key into the current table first.
        let mut slots = slots_faulted(slots_count);
        for slot in &self.slots {
            if !slot.is_empty() {
                slots_insert(&mut slots, slot.key(), slot.value);
            }
        }
        self.slots = slots;
        self.mask = slots_count - 1;
        self.growth = Growth::Idle;
        self.work_at = preparing_mark(slots_count) - 1;
    }

    /// Checks the invariants of the module comment (tests).
    #[cfg(test)]
    fn assert_invariants(&self) {
        assert_eq!(self.slots.len(), self.mask + 1);
        assert!(self.slots.len().is_power_of_two() && self.slots.len() >= SLOTS_MIN);
        let mut live = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_empty() {
                continue;
            }
            assert_ne!(slot.value, TOMBSTONE, "no tombstone in the current table");
            let found = probe(
                &self.slots,
                self.mask,
                slot.key_lo,
                slot.key_hi,
                self.slot_home(slot.key()),
            );
            assert_eq!(found, Ok(index), "reachable from its home");
            live += 1;
        }
        assert!(
            live * 2 <= self.slots.len(),
            "current table at most half full"
        );
        match &self.growth {
            Growth::Idle => assert_eq!(self.work_at, preparing_mark(self.slots.len()) - 1),
            Growth::Preparing {
                next,
                len_start,
                chunks_faulted,
                chunks,
                chunk_due_len,
            } => {
                assert_eq!(self.work_at, 0);
                assert_eq!(next.len(), 2 * self.slots.len());
                assert!(
                    next.iter().all(Slot::is_empty),
                    "the prepared table is empty"
                );
                assert!(chunks_faulted <= chunks);
                assert_eq!(*chunks, chunks_spanned(next));
                let threshold = self.slots.len() / 2;
                let due = chunk_due(*len_start, threshold, *chunks, *chunks_faulted);
                assert_eq!(*chunk_due_len, due);
                if chunks_faulted < chunks && len_start + chunks <= threshold {
                    assert!(self.len < due, "faulting keeps up with the pacing");
                }
            }
            Growth::Migrating { old, cursor } => {
                assert_eq!(self.work_at, 0);
                assert_eq!(old.len() * 2, self.slots.len());
                assert!(
                    *cursor < old.len(),
                    "a finished migration drops the old table"
                );
                assert!(
                    self.len < preparing_mark(self.slots.len()),
                    "migration ends before the next preparing"
                );
                for (index, slot) in old.iter().enumerate().skip(*cursor) {
                    if slot.is_empty() || slot.value == TOMBSTONE {
                        continue;
                    }
                    assert_eq!(old_live(old, *cursor, slot.key()), Some(index));
                    let mask = self.mask;
                    let home = hash(slot.key()) as usize & mask;
                    assert!(
                        probe(&self.slots, mask, slot.key_lo, slot.key_hi, home).is_err(),
                        "a live old key is not also current"
                    );
                    live += 1;
                }
            }
        }
        assert_eq!(live, self.len, "len counts live keys");
    }
}

#[cfg(test)]
mod tests {
    use super::{GrowthPhase, U128Map, FAULT_CHUNK_BYTES, MIGRATE_SLOTS_PER_INSERT, PAGE_BYTES};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A map of exactly `slots` slots (a power of two, at least 16), empty.
    fn with_slots(slots: usize) -> U128Map {
        let map = U128Map::with_capacity(slots * 3 / 16 + 1);
        assert_eq!(map.growth_state().slots, slots);
        map
    }

    #[test]
    fn a_map_filled_to_the_capacity_it_was_sized_for_does_no_growth_work() {
        for capacity in [1usize, 5, 6, 7, 100, 1 << 12, (1 << 12) + 1, 3 << 12] {
            let mut map = U128Map::with_capacity(capacity);
            let slots = map.growth_state().slots;
            for n in 0..capacity as u64 {
                map.insert_new(id_of(n), n as u32);
            }
            let state = map.growth_state();
            assert_eq!(state.phase, GrowthPhase::Idle, "capacity {capacity}");
            assert_eq!((state.slots, state.pages_faulted), (slots, 0));
            assert!(slots <= (capacity * 16 / 3).max(16).next_power_of_two());
            // One more key than asked for may start preparing, never a rebuild at once.
            map.insert_new(id_of(capacity as u64), capacity as u32);
            assert_eq!(map.growth_state().slots, slots);
        }
    }

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

    /// Ids of several shapes: consecutive (they share hash blocks), high bits only, and mixed.
    fn id_of(n: u64) -> u128 {
        let n = u128::from(n) + 1;
        match n % 3 {
            0 => n,
            1 => n << 70,
            _ => (n << 64) | (n * 0x9E37_79B9),
        }
    }

    /// Which phase: 0 idle, 1 preparing, 2 migrating.
    fn phase_kind(phase: GrowthPhase) -> usize {
        match phase {
            GrowthPhase::Idle => 0,
            GrowthPhase::Preparing { .. } => 1,
            GrowthPhase::Migrating { .. } => 2,
        }
    }

    /// Every key of `model` is found with its value, and the map's internal invariants hold.
    fn assert_matches(map: &U128Map, model: &HashMap<u128, u32>) {
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
        for (key, value) in model {
            assert_eq!(map.get(*key), Some(*value), "key {key:#x}");
            assert_eq!(map.find(*key), Ok(*value), "key {key:#x}");
        }
        map.assert_invariants();
    }

    #[test]
    fn map_matches_std_hashmap_through_incremental_growths() {
        let mut map = U128Map::with_capacity(4);
        let mut model: HashMap<u128, u32> = HashMap::new();
        let mut removed_ever = std::collections::HashSet::new();
        // Steps spent in each phase; removes and re-inserts of removed keys while migrating.
        let mut steps_in = [0usize; 3];
        let mut migrating_removes = 0;
        let mut migrating_reinserts = 0;
        let mut phase_last = phase_kind(map.growth_state().phase);
        let mut growths = 0;
        let mut state: u64 = 11;
        for step in 0..60_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = id_of((state >> 20) % 12_000);
            map.prefetch(key); // In both tables while migrating (a hint: only must not panic).
            let migrating = phase_kind(map.growth_state().phase) == 2;
            match (state >> 40) % 8 {
                0 | 1 => {
                    let removed = map.remove(key);
                    assert_eq!(removed, model.remove(&key), "step {step}");
                    if removed.is_some() {
                        removed_ever.insert(key);
                        migrating_removes += usize::from(migrating);
                    }
                }
                2 => assert_eq!(map.get(key), model.get(&key).copied()),
                op => match map.find(key) {
                    Ok(value) => assert_eq!(Some(&value), model.get(&key)),
                    Err(slot) => {
                        assert_eq!(model.get(&key), None, "step {step}");
                        if op % 2 == 0 {
                            map.insert_at(slot, key, step);
                        } else {
                            map.insert_new(key, step);
                        }
                        model.insert(key, step);
                        if migrating && removed_ever.contains(&key) {
                            migrating_reinserts += 1;
                        }
                    }
                },
            }
            assert_eq!(map.len(), model.len(), "step {step}");
            assert_eq!(map.get(key), model.get(&key).copied(), "step {step}");
            assert_eq!(map.find(key).ok(), model.get(&key).copied(), "step {step}");
            let phase = phase_kind(map.growth_state().phase);
            steps_in[phase] += 1;
            if phase != phase_last || step % 1000 == 0 {
                growths += usize::from(phase_last == 1 && phase == 2);
                assert_matches(&map, &model);
                phase_last = phase;
            }
        }
        assert_matches(&map, &model);
        assert!(growths >= 8, "growths {growths}");
        assert!(steps_in[1] > 1000, "steps preparing {steps_in:?}");
        assert!(steps_in[2] > 1000, "steps migrating {steps_in:?}");
        assert!(
            migrating_removes > 100,
            "removes while migrating {migrating_removes}"
        );
        assert!(
            migrating_reinserts > 10,
            "re-inserts while migrating {migrating_reinserts}"
        );
    }

    #[test]
    fn remove_and_reinsert_while_migrating() {
        let mut map = with_slots(128);
        assert_eq!(map.growth_state().slots, 128);
        let mut model = HashMap::new();
        for n in 0..65u64 {
            map.insert_new(id_of(n), n as u32);
            model.insert(id_of(n), n as u32);
        }
        let GrowthPhase::Migrating { slots_old, cursor } = map.growth_state().phase else {
            panic!("migrating after the 65th key: {:?}", map.growth_state());
        };
        assert_eq!((slots_old, cursor), (128, MIGRATE_SLOTS_PER_INSERT));
        assert_eq!(map.growth_state().slots, 256);
        // Most keys are still in the old table: remove them all (tombstones there), then
        // re-insert a few (each insert migrates more of the old table).
        for n in 0..65u64 {
            assert_eq!(map.remove(id_of(n)), Some(n as u32));
            assert_eq!(map.remove(id_of(n)), None);
            assert_eq!(map.get(id_of(n)), None);
            assert!(map.find(id_of(n)).is_err());
            model.remove(&id_of(n));
            assert_matches(&map, &model);
        }
        assert!(map.is_empty());
        assert_eq!(
            map.growth_state().phase,
            GrowthPhase::Migrating {
                slots_old: 128,
                cursor: MIGRATE_SLOTS_PER_INSERT
            },
            "removes do not migrate"
        );
        let reinserted: Vec<u64> = (0..65).step_by(13).collect();
        for &n in &reinserted {
            let slot = map.find(id_of(n)).expect_err("removed");
            map.insert_at(slot, id_of(n), 1000 + n as u32);
            model.insert(id_of(n), 1000 + n as u32);
            assert_matches(&map, &model);
        }
        // Insert until the migration ends: tombstones must not come back.
        let mut inserts = 1 + reinserted.len();
        let mut n = 100;
        while map.growth_state().phase != GrowthPhase::Idle {
            assert!(n < 1000, "never ends migrating");
            map.insert_new(id_of(n), n as u32);
            model.insert(id_of(n), n as u32);
            assert_matches(&map, &model);
            n += 1;
            inserts += 1;
        }
        assert_eq!(inserts, 128 / MIGRATE_SLOTS_PER_INSERT);
        for n in 0..65u64 {
            let expected = reinserted.contains(&n).then_some(1000 + n as u32);
            assert_eq!(map.get(id_of(n)), expected);
        }
        assert_matches(&map, &model);
    }

    #[test]
    fn reserve_during_growth_keeps_every_key() {
        let mut map = with_slots(128);
        let mut model = HashMap::new();
        let mut n = 0u64;
        while phase_kind(map.growth_state().phase) != 1 {
            assert!(n < 1000, "never prepares");
            map.insert_new(id_of(n), n as u32);
            model.insert(id_of(n), n as u32);
            n += 1;
        }
        assert_eq!(map.len(), 48, "preparing at 3/8 of 128 slots");
        map.reserve(40); // no bigger table: nothing changes
        assert_eq!(phase_kind(map.growth_state().phase), 1);
        while phase_kind(map.growth_state().phase) != 2 {
            assert!(n < 1000, "never migrates");
            map.insert_new(id_of(n), n as u32);
            model.insert(id_of(n), n as u32);
            n += 1;
        }
        for removed in (0..n).step_by(3) {
            assert_eq!(map.remove(id_of(removed)), model.remove(&id_of(removed)));
        }
        let before = map.growth_state();
        map.reserve(80); // within the current 256 slots: the migration goes on
        assert_eq!(map.growth_state(), before);
        assert_matches(&map, &model);
        map.reserve(5_000);
        let reserved = map.growth_state();
        assert_eq!(reserved.phase, GrowthPhase::Idle);
        assert_eq!(reserved.slots, 16_384);
        assert_matches(&map, &model);
        while map.len() < 5_000 {
            map.insert_new(id_of(n), n as u32);
            model.insert(id_of(n), n as u32);
            n += 1;
        }
        assert_eq!(
            map.growth_state().slots,
            16_384,
            "no growth within the reserve"
        );
        assert_matches(&map, &model);
    }

    #[test]
    fn growth_work_per_insert_is_bounded() {
        const PAGES_PER_CHUNK: u64 = (FAULT_CHUNK_BYTES / PAGE_BYTES) as u64;
        let slot_bytes = std::mem::size_of::<super::Slot>();
        let mut map = with_slots(1 << 16);
        assert_eq!(map.growth_state().slots, 1 << 16);
        let mut before = map.growth_state();
        let mut transitions = Vec::new();
        let mut n = 0u64;
        while !(before.slots == 1 << 18 && before.phase == GrowthPhase::Idle) {
            assert!(n < 1 << 18, "never grows to 2^18 slots");
            let key = id_of(n);
            if n.is_multiple_of(4) {
                map.insert_new(key, n as u32);
            } else {
                let slot = map.find(key).expect_err("new key");
                map.insert_at(slot, key, n as u32);
            }
            n += 1;
            let after = map.growth_state();
            let migrated = after.slots_migrated - before.slots_migrated;
            let faulted = after.pages_faulted - before.pages_faulted;
            assert!(
                migrated <= MIGRATE_SLOTS_PER_INSERT as u64,
                "{before:?} {after:?}"
            );
            assert!(faulted <= PAGES_PER_CHUNK, "{before:?} {after:?}");
            match (before.phase, after.phase) {
                (GrowthPhase::Idle, GrowthPhase::Idle) => {
                    assert_eq!(after.slots, before.slots);
                    assert_eq!(migrated + faulted, 0);
                }
                (GrowthPhase::Idle, GrowthPhase::Preparing { slots_next, .. }) => {
                    assert_eq!(map.len(), after.slots / 8 * 3, "preparing at 3/8");
                    assert_eq!(slots_next, 2 * after.slots);
                    transitions.push(("preparing", map.len(), after.slots));
                }
                (
                    GrowthPhase::Preparing {
                        chunks_faulted: done_before,
                        chunks,
                        ..
                    },
                    GrowthPhase::Preparing {
                        chunks_faulted: done_after,
                        ..
                    },
                ) => {
                    assert!(done_after - done_before <= 1 && done_after <= chunks);
                    assert_eq!(faulted > 0, done_after > done_before);
                }
                (
                    GrowthPhase::Preparing {
                        slots_next,
                        chunks_faulted,
                        chunks,
                    },
                    GrowthPhase::Migrating { slots_old, cursor },
                ) => {
                    assert_eq!(chunks_faulted, chunks, "fully faulted before the switch");
                    assert_eq!(
                        (after.slots, slots_old),
                        (slots_next, before.slots),
                        "the prepared table is current, the old one migrates"
                    );
                    assert_eq!(map.len(), before.slots / 2 + 1, "switch past half full");
                    assert_eq!(cursor, MIGRATE_SLOTS_PER_INSERT);
                    transitions.push(("migrating", map.len(), after.slots));
                }
                (
                    GrowthPhase::Migrating {
                        cursor: cursor_before,
                        ..
                    },
                    GrowthPhase::Migrating {
                        cursor: cursor_after,
                        ..
                    },
                ) => {
                    assert_eq!(cursor_after - cursor_before, MIGRATE_SLOTS_PER_INSERT);
                    assert_eq!(after.slots, before.slots);
                }
                (GrowthPhase::Migrating { slots_old, .. }, GrowthPhase::Idle) => {
                    assert!(
                        map.len() < after.slots / 8 * 3,
                        "done before preparing again"
                    );
                    transitions.push(("idle", map.len(), after.slots));
                    assert_eq!(slots_old * 2, after.slots);
                }
                (from, to) => panic!("growth {from:?} -> {to:?} at {} keys", map.len()),
            }
            before = after;
        }
        assert_eq!(
            transitions,
            [
                ("preparing", 3 << 13, 1 << 16),
                ("migrating", (1 << 15) + 1, 1 << 17),
                ("idle", (1 << 15) + (1 << 13), 1 << 17),
                ("preparing", 3 << 14, 1 << 17),
                ("migrating", (1 << 16) + 1, 1 << 18),
                ("idle", (1 << 16) + (1 << 14), 1 << 18),
            ]
        );
        assert_eq!(before.slots_migrated, (1 << 16) + (1 << 17));
        // Each page of both prepared tables faulted once (a table may straddle one page more).
        let pages = |slots: usize| (slots * slot_bytes / PAGE_BYTES) as u64;
        let pages_min = pages(1 << 17) + pages(1 << 18);
        assert!(
            (pages_min..=pages_min + 4).contains(&before.pages_faulted),
            "{} pages, {pages_min} expected",
            before.pages_faulted
        );
        for key in 0..n {
            assert_eq!(map.get(id_of(key)), Some(key as u32));
        }
        map.assert_invariants();
    }

    #[test]
    fn preparing_spreads_faulting_over_the_way_to_half_full() {
        let mut map = with_slots(1 << 20);
        let slots = map.growth_state().slots;
        assert_eq!(slots, 1 << 20);
        let mut n = 0u64;
        // (len, chunks faulted) at each insert while preparing.
        let mut faults = Vec::new();
        loop {
            assert!(n < 1 << 20, "never migrates");
            map.insert_new(id_of(n), n as u32);
            n += 1;
            match map.growth_state().phase {
                GrowthPhase::Idle => assert!(faults.is_empty()),
                GrowthPhase::Preparing {
                    chunks_faulted,
                    chunks,
                    ..
                } => faults.push((map.len(), chunks_faulted, chunks)),
                GrowthPhase::Migrating { .. } => break,
            }
        }
        let (len_start, _, chunks) = faults[0];
        let (len_end, done, _) = *faults.last().expect("prepared");
        assert_eq!((len_start, len_end), (slots / 8 * 3, slots / 2));
        assert_eq!(done, chunks, "all chunks faulted by half full");
        // 48 MiB: 24 chunks, or 25 if the table is not 2 MiB-aligned.
        assert!((24..=25).contains(&chunks), "{chunks}");
        // Evenly paced: chunk k is faulted once k/chunks of the way is done, not before.
        let way = len_end - len_start;
        for &(len, done, _) in &faults {
            let due = (done * way).div_ceil(chunks);
            let due_previous = ((done.max(1) - 1) * way).div_ceil(chunks);
            assert!(
                len - len_start >= due_previous,
                "chunk {done} early at {len}"
            );
            assert!(len - len_start <= due, "chunk {done} late at {len}");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        FindInsertAt(u16),
        InsertNew(u16),
        Remove(u16),
        Get(u16),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let key = 0u16..600;
        prop_oneof![
            3 => key.clone().prop_map(Op::FindInsertAt),
            2 => key.clone().prop_map(Op::InsertNew),
            2 => key.clone().prop_map(Op::Remove),
            1 => key.prop_map(Op::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_operations_match_std_hashmap(
            capacity in 0usize..8,
            ops in proptest::collection::vec(op_strategy(), 1..3000),
        ) {
            let mut map = U128Map::with_capacity(capacity);
            let mut model: HashMap<u128, u32> = HashMap::new();
            let mut phases = [false; 3];
            for (step, op) in ops.iter().enumerate() {
                let step = step as u32;
                match *op {
                    Op::FindInsertAt(n) => {
                        let key = id_of(u64::from(n));
                        match map.find(key) {
                            Ok(value) => prop_assert_eq!(Some(&value), model.get(&key)),
                            Err(slot) => {
                                prop_assert_eq!(model.get(&key), None);
                                map.insert_at(slot, key, step);
                                model.insert(key, step);
                            }
                        }
                    }
                    Op::InsertNew(n) => {
                        let key = id_of(u64::from(n));
                        if map.get(key).is_none() {
                            prop_assert_eq!(model.get(&key), None);
                            map.insert_new(key, step);
                            model.insert(key, step);
                        }
                    }
                    Op::Remove(n) => {
                        let key = id_of(u64::from(n));
                        prop_assert_eq!(map.remove(key), model.remove(&key));
                    }
                    Op::Get(n) => {
                        let key = id_of(u64::from(n));
                        prop_assert_eq!(map.get(key), model.get(&key).copied());
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                phases[phase_kind(map.growth_state().phase)] = true;
            }
            assert_matches(&map, &model);
            if ops.len() > 2000 && capacity < 4 {
                prop_assert!(phases[1] && phases[2], "a long run grows: {:?}", phases);
            }
        }
    }
}
