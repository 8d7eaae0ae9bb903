//! Static allocation at startup: large vectors are allocated once, backed by transparent huge
//! pages where the kernel offers them (`madvise`; a hint, not I/O), and faulted in before the hot
//! path runs. Random access to a multi-GiB index with 4 KiB pages misses the TLB on almost every
//! lookup; with 2 MiB pages the whole index fits the TLB.

/// Below this many bytes a huge-page hint is pointless.
const HUGE_PAGE_HINT_BYTES_MIN: usize = 4 << 20;
const PAGE_BYTES: usize = 4096;

/// A vector of `len` copies of `fill`, its memory hinted to huge pages and faulted in.
pub(crate) fn vec_filled<T: Clone>(len: usize, fill: T) -> Vec<T> {
    let mut vector = Vec::with_capacity(len);
    advise_huge_pages(&vector);
    vector.resize(len, fill);
    assert_eq!(vector.len(), len);
    vector
}

/// An empty vector with room for exactly `capacity` elements, hinted to huge pages and not
/// touched: its pages fault in as it fills (or by `populate_spare`).
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

/// Faults in the pages of `vector`'s spare capacity (its reserved, not yet used tail) without
/// writing them, so the hot path that fills it later never takes a first-touch fault. On this
/// class of VM a first touch costs about 3 ms per MiB (the host backs the page), against 0.2 ms
/// for memory already backed (docs/CAPACITY.md). Returns the bytes populated; 0 where the kernel
/// lacks `MADV_POPULATE_WRITE` (Linux < 5.14), where the spare part spans no whole page, or
/// off Linux: the
/// pages then fault in as the vector fills, which is only slower.
pub(crate) fn populate_spare<T>(vector: &Vec<T>) -> usize {
    let size = std::mem::size_of::<T>();
    let start = vector.as_ptr() as usize + vector.len() * size;
    let bytes = (vector.capacity() - vector.len()) * size;
    populate(start, bytes)
}

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
