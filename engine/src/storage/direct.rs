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

use super::writer::WriteJob;

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

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
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
#[derive(Default)]
pub(crate) struct Stager {
    bufs: [Option<AlignedBuf>; 2],
    carry: Option<Carry>,
}

const fn align_down(x: u64) -> u64 {
    x / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64
}

const fn align_up(x: u64) -> u64 {
    x.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64
}

impl Stager {
    /// Copies a contiguous batch into the aligned buffer. Returns the aligned file offset and the
    /// staged bytes (a multiple of `DIRECT_ALIGN`).
    pub(crate) fn stage(&mut self, slot: usize, batch: &[WriteJob]) -> io::Result<(u64, &[u8])> {
        let file = &batch[0].file;
        let start = batch[0].offset;
        let total: u64 = batch.iter().map(|j| j.frame.len() as u64).sum();
        let (page_start, page_end) = (align_down(start), align_up(start + total));
        let staged = (page_end - page_start) as usize;
        let slot_buf = &mut self.bufs[slot];
        if slot_buf.as_ref().is_none_or(|b| b.len() < staged) {
            *slot_buf = Some(AlignedBuf::new(align_up(staged as u64 * 2) as usize));
        }
        let buf = slot_buf.as_mut().expect("allocated above").as_mut_slice();
        let prefix = (start - page_start) as usize;
        if prefix > 0 {
            match &self.carry {
                Some(c) if Arc::ptr_eq(&c.file, file) && c.page_offset == page_start => {
                    buf[..prefix].copy_from_slice(&c.page[..prefix]);
                }
                _ => file.read_exact_at(&mut buf[..DIRECT_ALIGN], page_start)?,
            }
        }
        let mut at = prefix;
        for job in batch {
            buf[at..at + job.frame.len()].copy_from_slice(&job.frame);
            at += job.frame.len();
        }
        buf[at..staged].fill(0);
        assert_eq!(at as u64, start + total - page_start);
        let mut page = Box::new([0u8; DIRECT_ALIGN]);
        page.copy_from_slice(&buf[staged - DIRECT_ALIGN..staged]);
        self.carry = Some(Carry {
            file: file.clone(),
            page_offset: page_end - DIRECT_ALIGN as u64,
            page,
        });
        Ok((page_start, &buf[..staged]))
    }
}
