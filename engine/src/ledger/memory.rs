//! Static allocation at startup: large vectors are allocated once, backed by transparent huge
//! pages where the kernel offers them (`madvise`; a hint, not I/O), and faulted in before the hot
//! path runs. Random access to a multi-GiB index with 4 KiB pages misses the TLB on almost every
//! lookup; with 2 MiB pages the whole index fits the TLB.

/// Below this many bytes a huge-page hint is pointless.
const HUGE_PAGE_HINT_BYTES_MIN: usize = 4 << 20;
const PAGE_BYTES: usize = 4096;

/// An empty vector with room for exactly `capacity` elements, hinted to huge pages and not
/// touched: its pages fault in as it fills (or by `populate_parallel`).
pub(crate) fn segment_new<T>(capacity: usize) -> Vec<T> {
    let vector = Vec::with_capacity(capacity);
    advise_huge_pages(&vector);
    vector
}

/// Faults in the first `count` elements' worth of `vector`'s (empty) capacity by writing `fill`
/// there, and leaves it empty.
pub(crate) fn fault_in<T: Clone>(vector: &mut Vec<T>, count: usize, fill: T) {
    assert!(vector.is_empty() && count <= vector.capacity());
    vector.resize(count, fill);
    vector.clear();
}

/// The address range of `vector`'s spare capacity (its reserved, not yet used tail):
/// (start, bytes).
pub(crate) fn spare_range<T>(vector: &Vec<T>) -> (usize, usize) {
    let size = std::mem::size_of::<T>();
    let start = vector.as_ptr() as usize + vector.len() * size;
    (start, (vector.capacity() - vector.len()) * size)
}

/// The unit of work `populate_parallel` hands to its threads (chunk boundaries are multiples of
/// it); ranges that make one chunk in all are populated on the calling thread.
const POPULATE_CHUNK_BYTES: usize = 64 << 20;
/// Most threads `populate_parallel` starts.
const POPULATE_THREADS_MAX: usize = 16;

/// Populates `ranges` (address, bytes), split into chunks of
/// `POPULATE_CHUNK_BYTES` spread over one thread per available core (at most
/// `POPULATE_THREADS_MAX`). For startup only, on a thread not pinned to one core: the host backs
/// a first touch at about 430 MiB/s per vCPU on this VM, and two threads populate fresh memory
/// 1.8-1.9x as fast as one (docs/CAPACITY.md, session 13). Returns the bytes populated.
///
/// The ranges must lie inside live allocations the caller borrows for the whole call.
pub(crate) fn populate_parallel(ranges: &[(usize, usize)]) -> usize {
    let mut chunks = Vec::new();
    for &(start, bytes) in ranges {
        let end = start + bytes;
        let mut at = start;
        while at < end {
            // Boundaries at multiples of the chunk size, so they fall on page (and huge page)
            // boundaries and `populate` drops no page at a seam.
            let next = ((at / POPULATE_CHUNK_BYTES + 1) * POPULATE_CHUNK_BYTES).min(end);
            chunks.push((at, next - at));
            at = next;
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, POPULATE_THREADS_MAX)
        .min(chunks.len());
    if threads <= 1 {
        return chunks
            .iter()
            .map(|&(start, bytes)| populate(start, bytes))
            .sum();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = 0;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(start, bytes)) = chunks.get(i) else {
                            return done;
                        };
                        done += populate(start, bytes);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum()
    })
}

/// Faults in the whole pages of a range without writing them, so the hot path that fills them
/// later never takes a first-touch fault. On this class of VM a first touch costs about 3 ms per
/// MiB (the host backs the page), against 0.2 ms for memory already backed (docs/CAPACITY.md).
/// Returns the bytes populated; 0 where the kernel lacks `MADV_POPULATE_WRITE` (Linux < 5.14),
/// where the range spans no whole page, or off Linux: the pages then fault in on first use,
/// which is only slower.
#[cfg(target_os = "linux")]
fn populate(start: usize, bytes: usize) -> usize {
    let start_aligned = start.next_multiple_of(PAGE_BYTES);
    let end_aligned = (start + bytes) / PAGE_BYTES * PAGE_BYTES;
    if end_aligned <= start_aligned {
        return 0;
    }
    // SAFETY: the range lies inside a live allocation the caller borrows and is page-aligned;
    // MADV_POPULATE_WRITE faults pages in as if written but never changes their contents.
    let result = unsafe {
        libc::madvise(
            start_aligned as *mut libc::c_void,
            end_aligned - start_aligned,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if result == 0 {
        end_aligned - start_aligned
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_start: usize, _bytes: usize) -> usize {
    0
}

/// Hints `vector`'s allocation to transparent huge pages (large vectors only; a no-op off Linux).
#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages<T>(vector: &Vec<T>) {
    let bytes = vector.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE_PAGE_HINT_BYTES_MIN {
        return;
    }
    let start = vector.as_ptr() as usize;
    let start_aligned = start.next_multiple_of(PAGE_BYTES);
    let end_aligned = (start + bytes) / PAGE_BYTES * PAGE_BYTES;
    if end_aligned <= start_aligned {
        return;
    }
    // SAFETY: the range lies inside this vector's allocation and is page-aligned; MADV_HUGEPAGE
    // only changes how the kernel backs it, never its contents. A failure is harmless.
    let _ = unsafe {
        libc::madvise(
            start_aligned as *mut libc::c_void,
            end_aligned - start_aligned,
            libc::MADV_HUGEPAGE,
        )
    };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages<T>(_vector: &Vec<T>) {}

/// Cache line size the prefetch hints assume.
const CACHE_LINE_BYTES: usize = 64;

/// Hints the CPU to load every cache line `value` touches (a no-op where unsupported).
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_bytes(value as *const T as usize, std::mem::size_of::<T>());
}

/// Hints the CPU to load every cache line of `[address, address + bytes)`.
#[inline]
pub(crate) fn prefetch_bytes(address: usize, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = address / CACHE_LINE_BYTES * CACHE_LINE_BYTES;
        let mut line = first;
        while line < address + bytes {
            // SAFETY: a prefetch is a hint; it never faults, even on an unmapped address.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    line as *const i8,
                )
            };
            line += CACHE_LINE_BYTES;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (address, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_parallel_populates_every_whole_page_of_every_range() {
        // Three chunks and a bit, plus a small second range: every whole page, no seam lost.
        let big: Vec<u8> = Vec::with_capacity(3 * POPULATE_CHUNK_BYTES + 12_345);
        let small: Vec<u64> = Vec::with_capacity(100_000);
        let ranges = [spare_range(&big), spare_range(&small)];
        let whole_pages = |(start, bytes): (usize, usize)| {
            ((start + bytes) / PAGE_BYTES * PAGE_BYTES)
                .saturating_sub(start.next_multiple_of(PAGE_BYTES))
        };
        let populated = populate_parallel(&ranges);
        let serial: usize = ranges
            .iter()
            .map(|&(start, bytes)| populate(start, bytes))
            .sum();
        if serial > 0 {
            // The kernel populates ahead: both ways cover exactly the whole pages.
            assert_eq!(populated, whole_pages(ranges[0]) + whole_pages(ranges[1]));
            assert_eq!(serial, populated);
        } else {
            assert_eq!(populated, 0, "no populate support, nothing claimed");
        }
        assert!(big.is_empty() && small.is_empty(), "contents untouched");
    }
}
