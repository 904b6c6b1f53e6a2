//! The allocator of the binary and the benches: mimalloc (glibc's malloc
//! spent a quarter of the core's time on the short-lived strings of
//! records; see docs/benchmarks-history.md), reached the cheapest way it allows,
//! told to keep freed memory and to use ordinary pages ([`configure`]).

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_malloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_zalloc(size: usize) -> *mut std::ffi::c_void;
    fn mi_realloc(ptr: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void;
}

/// mimalloc's plain `malloc` where the alignment asked for is one it
/// gives anyway (at most 16 bytes, `MI_MAX_ALIGN_SIZE`, and at most the
/// size), as Rust's own System allocator decides; its aligned entry points
/// otherwise. The `mimalloc` crate always takes the aligned path, which
/// costs twice the plain one, on every one of an event's allocations
/// (figures: docs/benchmarks-history.md, "Figures from code comments").
pub struct Allocator;

/// Whether plain `malloc` aligns a block of `size` bytes enough for `align`.
#[inline]
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= 16 && align <= size
}

// SAFETY: every path hands the layout to mimalloc, which returns blocks of
// at least the size and alignment asked for (plain malloc only where it
// guarantees the alignment), and frees or resizes only its own blocks.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            // SAFETY: plain malloc aligns a block of this size enough.
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's layout, passed on as it is.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            // SAFETY: plain malloc aligns a block of this size enough.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's layout, passed on as it is.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: every block is mimalloc's (the paths above), and mimalloc
        // frees its aligned and plain blocks alike.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if malloc_aligns(layout.align(), new_size) {
            // SAFETY: `ptr` is mimalloc's, and plain malloc aligns a block
            // of the new size enough.
            unsafe { mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: the caller's block and layout, passed on as they are.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

/// `mi_option_purge_delay` in the vendored mimalloc's `mimalloc.h` (v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// `mi_option_allow_thp` in the same header.
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// Sets the allocator up as the engine runs best; the binary calls it
/// first thing, and the benches too, so they measure what runs.
///
/// - **Freed memory is kept** mapped instead of handed back to the kernel
///   a second later (mimalloc's purging): every cycle frees and allocates
///   megabytes of batches and memtable arenas, and each reuse of purged
///   memory was a page fault and a page of zeroes (90,000 faults and about
///   a sixth of the engine's CPU time over 500k events). The process
///   keeps its peak heap instead, which the caches bound.
/// - **No transparent huge pages.** mimalloc asks for them on its arenas;
///   then every fresh 2 MiB of heap (memtable arenas, batches, caches
///   filling) was a fault that zeroed all of it, up to a third of the
///   process's CPU samples while memory grows. Ordinary pages: 500k-event
///   runs (the heap still growing) 3-5% faster with ~50 MiB less RSS;
///   2M-event runs the same within noise (docs/tuning.md).
///
/// `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_THP`, when set, are left to
/// decide.
pub fn configure() {
    configure_unless(
        std::env::var_os("MIMALLOC_PURGE_DELAY").is_some(),
        std::env::var_os("MIMALLOC_ALLOW_THP").is_some(),
    );
}

/// [`configure`], leaving each setting its variable decides alone.
fn configure_unless(purge_delay_set: bool, allow_thp_set: bool) {
    if !purge_delay_set {
        // SAFETY: sets an integer option of the allocator linked in.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    if !allow_thp_set {
        // SAFETY: as above. Arenas reserved from now on are not advised
        // to use huge pages.
        unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // What mimalloc does at start when the variable is 0: no huge
        // pages for the process, also for memory already advised to use
        // them. SAFETY: a prctl with integer arguments only.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[cfg(target_os = "linux")]
    #[test]
    fn configure_turns_transparent_huge_pages_off_for_the_process() {
        configure_unless(false, false);
        // SAFETY: a prctl query with integer arguments only.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }

    #[test]
    fn every_block_is_as_aligned_as_asked_and_keeps_its_bytes_when_resized() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 17, 24, 100, 5000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: each block is used within its size and given
                // back with the layout it has.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null() && zeroed as usize % align == 0, "zeroed {size} at {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(zeroed, layout);
                    for new_size in [1, size / 2 + 1, size * 3] {
                        let p = Allocator.alloc(layout);
                        assert!(!p.is_null() && p as usize % align == 0, "{size} at {align}");
                        for i in 0..size {
                            *p.add(i) = i as u8;
                        }
                        let q = Allocator.realloc(p, layout, new_size);
                        assert!(!q.is_null() && q as usize % align == 0, "{size} to {new_size} at {align}");
                        for i in 0..size.min(new_size) {
                            assert_eq!(*q.add(i), i as u8, "byte {i} of {size} to {new_size} at {align}");
                        }
                        Allocator.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
                    }
                }
            }
        }
    }
}
