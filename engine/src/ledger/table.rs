//! `Table<T>`: an append-only record table stored in fixed-size segments.
//!
//! Growth adds one segment (`SEGMENT_LEN` records, allocated untouched) and never moves a record.
//! A `Vec` that outgrows its capacity copies the whole table instead: for the transfers table of a
//! busy node that was a 2 GiB copy that stopped execution on every replica at the same height for
//! 15-20 s (docs/CAPACITY.md, session 9). Here the cost of growth is the first touch of the new
//! segment's pages, paid a page at a time as records land in it.
//!
//! Invariants: every segment has capacity exactly `SEGMENT_LEN`; the segments before the one
//! holding record `len - 1` are full; the ones after it are empty (reserved capacity). Record `i`
//! lives in segment `i >> SEGMENT_LOG2` at offset `i & SEGMENT_MASK`, so indexing is a shift, a
//! mask and one more load (the segment table is small and stays in cache).
//!
//! `freeze` gives a snapshot a view of the records as they are now without copying the full
//! segments: they become shared (`Arc`), copy-on-write. A write or pop that lands in a segment a
//! view still holds copies that segment first (8 MiB of 128-byte records; only the pending state
//! of an old transfer changes that way); pushes go to the partial last segment, which is never
//! shared (the view copies its records). So a snapshot of a multi-GiB table costs the execute
//! thread a copy of at most one segment, and the view is encoded on another thread.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use super::memory;

/// How a table holds one segment's records: a plain `Vec` (`Table<T>`), or a `CowSegment`
/// that a frozen view may share (`CowTable<T>`, the only kind `freeze` exists for). Monomorphized:
/// a plain table's hot path is the `Vec`'s own.
pub(crate) trait SegmentStore<T> {
    fn owned(records: Vec<T>) -> Self;
    fn records(&self) -> &Vec<T>;
    fn records_mut(&mut self) -> &mut Vec<T>;
}

impl<T> SegmentStore<T> for Vec<T> {
    #[inline]
    fn owned(records: Vec<T>) -> Self {
        records
    }
    #[inline]
    fn records(&self) -> &Vec<T> {
        self
    }
    #[inline]
    fn records_mut(&mut self) -> &mut Vec<T> {
        self
    }
}

/// One segment's records: owned, or shared with frozen views (full segments only).
pub(crate) enum CowSegment<T> {
    Owned(Vec<T>),
    Shared(Arc<Vec<T>>),
}

impl<T: Clone> SegmentStore<T> for CowSegment<T> {
    #[inline]
    fn owned(records: Vec<T>) -> Self {
        CowSegment::Owned(records)
    }

    #[inline]
    fn records(&self) -> &Vec<T> {
        match self {
            CowSegment::Owned(records) => records,
            CowSegment::Shared(records) => records,
        }
    }

    #[inline]
    fn records_mut(&mut self) -> &mut Vec<T> {
        if let CowSegment::Shared(_) = self {
            self.unshare();
        }
        match self {
            CowSegment::Owned(records) => records,
            // Not reached (just unshared); copy-on-write would still be correct.
            CowSegment::Shared(records) => Arc::make_mut(records),
        }
    }
}

impl<T: Clone> CowSegment<T> {
    /// Back to owned: without a copy when no view holds it any more.
    #[cold]
    #[inline(never)]
    fn unshare(&mut self) {
        if let CowSegment::Shared(shared) = std::mem::replace(self, CowSegment::Owned(Vec::new())) {
            *self = CowSegment::Owned(Arc::try_unwrap(shared).unwrap_or_else(|s| (*s).clone()));
        }
    }
}

/// The records of a table at the moment `Table::freeze` was called; unaffected by later writes.
pub(crate) struct Frozen<T> {
    full: Vec<Arc<Vec<T>>>,
    tail: Vec<T>,
}

impl<T> Frozen<T> {
    pub(crate) fn len(&self) -> usize {
        self.full.iter().map(|s| s.len()).sum::<usize>() + self.tail.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.full
            .iter()
            .flat_map(|segment| segment.iter())
            .chain(self.tail.iter())
    }
}

/// Records per segment: 2^16. At 128 bytes a record that is 8 MiB, four 2 MiB huge pages.
pub(crate) const SEGMENT_LOG2: u32 = 16;
pub(crate) const SEGMENT_LEN: usize = 1 << SEGMENT_LOG2;
const SEGMENT_MASK: usize = SEGMENT_LEN - 1;

pub(crate) struct Table<T, S = Vec<T>> {
    segments: Vec<S>,
    len: usize,
    records: PhantomData<T>,
}

/// A table whose full segments `freeze` can share with a snapshot.
pub(crate) type CowTable<T> = Table<T, CowSegment<T>>;

impl<T: Clone, S: SegmentStore<T>> Table<T, S> {
    /// A table with room for `capacity` records, faulted in now (static allocation at startup:
    /// the hot path takes no page fault until `capacity` is exceeded).
    pub(crate) fn reserved(capacity: usize, fill: T) -> Table<T, S> {
        let mut table: Table<T, S> = Table::new();
        table.reserve_lazy(capacity);
        let mut left = capacity;
        for segment in &mut table.segments {
            let count = left.min(SEGMENT_LEN);
            memory::fault_in(segment.records_mut(), count, fill.clone());
            left -= count;
        }
        table
    }

    #[inline]
    pub(crate) fn push(&mut self, record: T) {
        let segment = self.len >> SEGMENT_LOG2;
        if segment == self.segments.len() {
            self.segment_add();
        }
        let target = self.segments[segment].records_mut();
        debug_assert!(target.len() < SEGMENT_LEN);
        target.push(record);
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let record = self.segments[last >> SEGMENT_LOG2].records_mut().pop();
        debug_assert!(record.is_some());
        self.len = last;
        record
    }
}

impl<T: Clone> CowTable<T> {
    /// A view of the records as they are now (see the module docs): the full segments are
    /// shared, the partial last one's records copied.
    pub(crate) fn freeze(&mut self) -> Frozen<T> {
        let full_count = self.len >> SEGMENT_LOG2;
        let mut full = Vec::with_capacity(full_count);
        for segment in &mut self.segments[..full_count] {
            if let CowSegment::Owned(records) = segment {
                *segment = CowSegment::Shared(Arc::new(std::mem::take(records)));
            }
            if let CowSegment::Shared(records) = segment {
                full.push(records.clone());
            }
        }
        let tail = self
            .segments
            .get(full_count)
            .map_or_else(Vec::new, |segment| segment.records().clone());
        Frozen { full, tail }
    }
}

impl<T, S: SegmentStore<T>> Table<T, S> {
    pub(crate) fn new() -> Table<T, S> {
        Table {
            segments: Vec::new(),
            len: 0,
            records: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Records the allocated segments hold room for (a multiple of `SEGMENT_LEN`).
    pub(crate) fn capacity(&self) -> usize {
        self.segments.len() * SEGMENT_LEN
    }

    /// Allocates segments (untouched: pages fault in as records land, or by `Ledger::prefault`)
    /// until there is room for `capacity` records. Never moves a record; never shrinks.
    pub(crate) fn reserve_lazy(&mut self, capacity: usize) {
        while self.capacity() < capacity {
            self.segment_add();
        }
    }

    /// Growth: one more segment (out of line: once per `SEGMENT_LEN` pushes).
    #[inline(never)]
    fn segment_add(&mut self) {
        self.segments
            .push(S::owned(memory::segment_new(SEGMENT_LEN)));
    }

    /// The records from index `first` on, as one slice per segment, in order.
    pub(crate) fn slices_from(&self, first: usize) -> impl Iterator<Item = &[T]> {
        assert!(first <= self.len, "table: slice start past the end");
        let skip = first >> SEGMENT_LOG2;
        let offset = first & SEGMENT_MASK;
        self.segments
            .iter()
            .skip(skip)
            .enumerate()
            .map(move |(position, segment)| {
                let segment = segment.records();
                if position == 0 {
                    &segment[offset.min(segment.len())..]
                } else {
                    &segment[..]
                }
            })
            .take_while(|slice| !slice.is_empty())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.segments
            .iter()
            .flat_map(|segment| segment.records().iter())
    }

    /// The address ranges of the reserved, still unused capacity: (start, bytes), one per
    /// segment past the filled ones (`Ledger::prefault` populates them).
    pub(crate) fn spare_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.segments
            .iter()
            .skip(self.len >> SEGMENT_LOG2)
            .map(|segment| memory::spare_range(segment.records()))
    }
}

impl<T, S: SegmentStore<T>> Index<usize> for Table<T, S> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        // The segments' own bounds checks reject `index >= len`: the segments after the one
        // holding the last record are empty.
        &self.segments[index >> SEGMENT_LOG2].records()[index & SEGMENT_MASK]
    }
}

impl<T, S: SegmentStore<T>> IndexMut<usize> for Table<T, S> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.segments[index >> SEGMENT_LOG2].records_mut()[index & SEGMENT_MASK]
    }
}

#[cfg(test)]
mod tests {
    use super::{CowTable, Table, SEGMENT_LEN};
    use proptest::prelude::*;

    #[test]
    fn growth_past_a_segment_never_moves_a_record() {
        let mut table: Table<u64> = Table::reserved(10, 0u64);
        assert_eq!(table.capacity(), SEGMENT_LEN);
        for value in 0..SEGMENT_LEN as u64 {
            table.push(value);
        }
        let first_record = &table[0] as *const u64;
        table.push(SEGMENT_LEN as u64);
        assert_eq!(table.capacity(), 2 * SEGMENT_LEN);
        assert_eq!(
            &table[0] as *const u64, first_record,
            "growth moved the first segment"
        );
        assert_eq!(table[SEGMENT_LEN], SEGMENT_LEN as u64);
        assert_eq!(table.len(), SEGMENT_LEN + 1);
    }

    #[test]
    fn slices_from_cover_exactly_the_records_from_first_across_segments() {
        let mut table: Table<u32> = Table::new();
        let count = 2 * SEGMENT_LEN + 17;
        (0..count as u32).for_each(|value| table.push(value));
        for first in [
            0,
            5,
            SEGMENT_LEN - 1,
            SEGMENT_LEN,
            2 * SEGMENT_LEN,
            count - 1,
            count,
        ] {
            let joined: Vec<u32> = table.slices_from(first).flatten().copied().collect();
            let expected: Vec<u32> = (first as u32..count as u32).collect();
            assert_eq!(joined, expected, "from {first}");
        }
        // A segment boundary exactly at the end yields no empty trailing slice.
        let mut full: Table<u32> = Table::new();
        (0..SEGMENT_LEN as u32).for_each(|value| full.push(value));
        full.reserve_lazy(3 * SEGMENT_LEN);
        assert_eq!(full.slices_from(0).count(), 1);
        assert_eq!(full.slices_from(SEGMENT_LEN).count(), 0);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn index_past_len_panics_even_inside_reserved_capacity() {
        let mut table: Table<u8> = Table::reserved(100, 0u8);
        table.push(1);
        let _ = table[1];
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The table behaves as a `Vec` under pushes, pops, writes and reserves that cross
        /// segment boundaries, and every frozen view keeps the records of when it was taken
        /// (writes and pops into shared segments copy them).
        #[test]
        fn table_matches_a_vec(
            operations in proptest::collection::vec((0u8..5, 0usize..3 * SEGMENT_LEN), 1..40)
        ) {
            let mut table: CowTable<usize> = Table::new();
            let mut model: Vec<usize> = Vec::new();
            // Frozen views with what the table held when each was taken.
            let mut views = Vec::new();
            for (kind, amount) in operations {
                match kind {
                    4 => views.push((table.freeze(), model.clone())),
                    0 => {
                        for i in 0..amount % 40_000 {
                            let value = i ^ model.len();
                            table.push(value);
                            model.push(value);
                        }
                    }
                    1 => {
                        for _ in 0..amount % 30_000 {
                            prop_assert_eq!(table.pop(), model.pop());
                        }
                    }
                    2 if !model.is_empty() => {
                        let index = amount % model.len();
                        table[index] = amount;
                        model[index] = amount;
                    }
                    _ => table.reserve_lazy(amount),
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.capacity() >= table.len());
                prop_assert_eq!(table.capacity() % SEGMENT_LEN, 0);
            }
            prop_assert!(table.iter().eq(model.iter()));
            for (view, then) in &views {
                prop_assert_eq!(view.len(), then.len());
                prop_assert!(view.iter().eq(then.iter()), "a view changed after it was taken");
            }
            let first = model.len() / 3;
            let joined: Vec<usize> = table.slices_from(first).flatten().copied().collect();
            prop_assert_eq!(&joined[..], &model[first..]);
        }
    }
}
