//! Staging for O_DIRECT writes: a group commit is copied into one 4 KiB-aligned buffer that starts
//! at the page holding the batch's first byte and ends padded with zeros to a page boundary.
//!
//! The bytes of that first page that precede the batch (the end of the previous batch) come from
//! `carry`, the last page of the previous write, or are read back from the file after a restart.
//! Rewriting them is harmless: they are byte-for-byte what is already durable there.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// O_DIRECT alignment of buffers, offsets and lengths (covers 512 B and 4 KiB sector disks).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// A zero-initialised, `DIRECT_ALIGN`-aligned heap buffer.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned; it is plain memory.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(crate) fn new(bytes: usize) -> AlignedBuf {
        assert!(bytes > 0 && bytes.is_multiple_of(DIRECT_ALIGN));
        let layout = Layout::from_size_align(bytes, DIRECT_ALIGN).expect("valid layout");
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocating {bytes} aligned bytes");
        AlignedBuf { ptr, layout }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: valid for layout.size() bytes, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

struct Carry {
    file: Arc<File>,
    page_offset: u64,
    page: Box<[u8; DIRECT_ALIGN]>,
}

/// Two staging buffers (one per pipeline slot) and the last page written.
pub(crate) struct Stager {
    /// Bytes each buffer holds: one batch, one extra frame and the head and tail pages.
    capacity: usize,
    bufs: [Option<AlignedBuf>; 2],
    /// Bytes staged so far in each slot, counted from its page start.
    fill: [usize; 2],
    page_start: [u64; 2],
    carry: Option<Carry>,
}

const fn align_down(x: u64) -> u64 {
    x / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64
}

const fn align_up(x: u64) -> u64 {
    x.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64
}

impl Stager {
    pub(crate) fn new(batch_bytes_max: usize, frame_bytes_max: usize) -> Stager {
        let capacity = align_up((batch_bytes_max + frame_bytes_max + 2 * DIRECT_ALIGN) as u64);
        Stager {
            capacity: capacity as usize,
            bufs: [None, None],
            fill: [0; 2],
            page_start: [0; 2],
            carry: None,
        }
    }

    /// Starts staging a batch whose first byte goes to offset `start` of `file`: copies the head
    /// of that page (the end of the previous batch) from the carry page or reads it back.
    pub(crate) fn begin(&mut self, slot: usize, file: &Arc<File>, start: u64) -> io::Result<()> {
        let capacity = self.capacity;
        let buf = self.bufs[slot]
            .get_or_insert_with(|| AlignedBuf::new(capacity))
            .as_mut_slice();
        let page_start = align_down(start);
        let prefix = (start - page_start) as usize;
        if prefix > 0 {
            match &self.carry {
                Some(c) if Arc::ptr_eq(&c.file, file) && c.page_offset == page_start => {
                    buf[..prefix].copy_from_slice(&c.page[..prefix]);
                }
                _ => file.read_exact_at(&mut buf[..DIRECT_ALIGN], page_start)?,
            }
        }
        self.page_start[slot] = page_start;
        self.fill[slot] = prefix;
        Ok(())
    }

    /// Appends one frame to the batch staged in `slot`.
    pub(crate) fn push(&mut self, slot: usize, frame: &[u8]) {
        let at = self.fill[slot];
        assert!(
            at + frame.len() + DIRECT_ALIGN <= self.capacity,
            "batch bounded by config"
        );
        let buf = self.bufs[slot]
            .as_mut()
            .expect("begin allocates")
            .as_mut_slice();
        buf[at..at + frame.len()].copy_from_slice(frame);
        self.fill[slot] = at + frame.len();
    }

    /// Pads the batch with zeros to a page boundary and remembers its last page. Returns the
    /// aligned file offset and the staged bytes (a multiple of `DIRECT_ALIGN`).
    pub(crate) fn finish(&mut self, slot: usize, file: &Arc<File>) -> (u64, &[u8]) {
        let (fill, page_start) = (self.fill[slot], self.page_start[slot]);
        let staged = align_up(fill as u64) as usize;
        assert!(staged >= DIRECT_ALIGN && staged <= self.capacity);
        let buf = self.bufs[slot]
            .as_mut()
            .expect("begin allocates")
            .as_mut_slice();
        buf[fill..staged].fill(0);
        let mut page = Box::new([0u8; DIRECT_ALIGN]);
        page.copy_from_slice(&buf[staged - DIRECT_ALIGN..staged]);
        let page_offset = page_start + (staged - DIRECT_ALIGN) as u64;
        self.carry = Some(Carry {
            file: file.clone(),
            page_offset,
            page,
        });
        (page_start, &buf[..staged])
    }
}
