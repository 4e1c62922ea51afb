//! The extension's allocator and its settings. mimalloc, because tokenization allocates a few
//! small vectors per word on every worker thread and glibc's malloc spent about a third of
//! prepare's time there.

// Reading and setting mimalloc's options are C calls.
#![allow(unsafe_code)]

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Option numbers of the bundled mimalloc v3 (`mi_option_e` in its mimalloc.h); the -sys crate
// names only the options v2 and v3 share.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
const PURGE_DELAY: mi_option_t = 15;
// The count of options in that header: a mimalloc that renumbers them fails here, not silently.
const _: () = assert!(libmimalloc_sys::_mi_option_last == 47);

/// Called when the module loads, before the first arena exists. mimalloc's default on Linux
/// commits each arena whole when it is reserved; committing pages as they are used instead made
/// `ftx prepare` of the standard corpus faster (3.2 s against 4.4 s, interleaved runs) and kept
/// freed pages out of the resident set.
pub fn configure() {
    // SAFETY: options are plain integers that mimalloc reads when it next reserves or purges.
    unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

/// While it lives, freed pages go back to the OS at once instead of 10 ms later. `ftx merge`
/// promises a peak that follows `--memory-mb`, not the corpus: with the delay its peak RSS
/// followed how partitions happened to fall (55 MiB at 1× the corpus, up to 62 at 4×), without
/// it 43 MiB for both. Not for prepare, whose many short-lived vectors it slowed by a third.
pub struct ReturnFreedPages(c_long);

impl ReturnFreedPages {
    pub fn new() -> Self {
        // SAFETY: as in `configure`.
        unsafe {
            let saved = mi_option_get(PURGE_DELAY);
            mi_option_set(PURGE_DELAY, 0);
            Self(saved)
        }
    }
}

impl Drop for ReturnFreedPages {
    fn drop(&mut self) {
        // SAFETY: as in `configure`.
        unsafe { mi_option_set(PURGE_DELAY, self.0) }
    }
}
