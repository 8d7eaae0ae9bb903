//! The process allocator's one tuning: memory freed is kept for reuse, not handed back to the
//! kernel.
//!
//! mimalloc (the global allocator of `reckon`, `bench-harness` and `loadgen`) purges memory a
//! second after it is freed by default: it gives the pages back to the kernel, and the next
//! allocation there faults them in again, zeroed. A node frees and allocates buffers of a megabyte
//! or more (peer batch frames, requests, log records) dozens of times a second, so under load the
//! purges came back as page faults: 3,400-5,600 a second on the four nodes of the issue's
//! benchmark, most of them on the dissemination threads. On a VM that reports free pages to its
//! host (virtio-balloon free page reporting, as on this one) each purged page also goes back to
//! the host, which must back it again on the next touch: about 100 MiB/s of it here. With purging
//! off there were 1-4 a second in 18 of 19 samples (docs/CAPACITY.md, session 18). The price is
//! that a process's resident memory stays at its peak heap.
//!
//! mimalloc's own environment variable wins: an operator who wants freed memory returned sets
//! `MIMALLOC_PURGE_DELAY` (milliseconds; `-1` never) and the process leaves it alone.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay`: the 16th member of `mi_option_t` in the v3 `mimalloc.h`
/// that libmimalloc-sys builds (it names no constant for it). A test checks the index against
/// mimalloc's reading of its environment variable.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// The environment variable mimalloc reads its purge delay from (at process load).
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// What the allocator does with memory freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Kept in the process for reuse.
    Never,
    /// Given back to the kernel this many milliseconds after it is freed.
    AfterMs(u64),
}

impl std::fmt::Display for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Purge::Never => write!(f, "freed memory kept for reuse"),
            Purge::AfterMs(ms) => write!(f, "freed memory returned to the kernel after {ms} ms"),
        }
    }
}

/// Turns purging off unless `MIMALLOC_PURGE_DELAY` is set, and returns what now holds. Call it
/// first thing in `main`; it only changes what happens to memory freed from then on.
pub fn keep_freed_memory() -> Purge {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets one integer option; mimalloc reads options atomically, from any thread.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    purge()
}

/// The allocator's purge setting now.
pub fn purge() -> Purge {
    // SAFETY: reads one integer option.
    let ms = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
    u64::try_from(ms).map_or(Purge::Never, Purge::AfterMs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const CHILD: &str = "RECKON_ALLOCATOR_TEST_CHILD";

    /// mimalloc reads `MIMALLOC_PURGE_DELAY` at process load, so this test runs itself again in a
    /// child with the variable set: the value read back through `MI_OPTION_PURGE_DELAY` must be
    /// the one given, which proves the index names the purge delay, and `keep_freed_memory` must
    /// leave it alone. In this process (variable unset) it turns purging off.
    #[test]
    fn the_index_is_the_purge_delay_and_the_environment_wins() {
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(purge(), Purge::AfterMs(1234));
            assert_eq!(keep_freed_memory(), Purge::AfterMs(1234));
            return;
        }
        let name = "allocator::tests::the_index_is_the_purge_delay_and_the_environment_wins";
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--test-threads", "1"])
            .env(PURGE_DELAY_ENV, "1234")
            .env(CHILD, "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var_os(PURGE_DELAY_ENV).is_none() {
            assert_eq!(keep_freed_memory(), Purge::Never);
            assert_eq!(Purge::Never.to_string(), "freed memory kept for reuse");
        }
    }
}
