//! libFuzzer wrapper; the body is `netboot_fuzz::squashfs_alloc`
//! (fuzz/src/bodies.rs), which checks the squashfs reader's heap against its
//! memory bound. The heap is measured here: a global allocator that forwards
//! to the system allocator and counts live bytes into `netboot_fuzz::ALLOC`.
//!
//! NB: implementing `GlobalAlloc` needs `unsafe`. This is a fuzzing binary,
//! outside the workspace and none of its library crates (which keep
//! `#![forbid(unsafe_code)]`); each block below only forwards to `System`.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};

use netboot_fuzz::ALLOC;

/// `System`, counting live bytes.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOC.alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOC.alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) };
        ALLOC.dealloc(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if old and new coexist: a realloc that moves copies
        // from one to the other.
        ALLOC.alloc(new_size);
        // SAFETY: the caller's contract for `realloc`, passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        ALLOC.dealloc(if p.is_null() { new_size } else { layout.size() });
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| netboot_fuzz::squashfs_alloc(data));
