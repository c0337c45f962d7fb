//! The process's global allocator: the system allocator, except that allocations of 1 GiB or
//! more are mapped with `MAP_NORESERVE`, so their pages are only committed when touched.
//!
//! Why: the protocol decoder (kafka-protocol) sizes a vector from an array length read off the
//! wire *before* it knows the bytes are there (`Vec::with_capacity(n)`). A 40-byte request that
//! claims 2^31 topics asks for ~150 GB; the system allocator refuses, and Rust aborts the whole
//! broker on a failed allocation. Reserved lazily instead, the allocation succeeds without
//! using memory, the decoder fails at the first missing element, the vector is unmapped, and
//! only that client's connection is closed. No request Keel accepts (at most
//! `socket.request.max.bytes`) legitimately needs an allocation this large.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations at or above this size are lazily reserved.
const HUGE: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system allocator.
const PAGE: usize = 4096;

pub struct LazyHugeAllocator;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE && align <= PAGE
}

// SAFETY: every method upholds GlobalAlloc's contract:
// - Huge blocks come from a fresh private anonymous mapping of exactly `size` bytes, which is
//   page-aligned (so satisfies any `align <= PAGE`), zero-filled, and not shared with any other
//   allocation; failure is reported as null, as the contract requires.
// - A block is released by the same mechanism that produced it, chosen by the same pure
//   function of (size, align), which the contract guarantees are the values used to allocate.
// - `realloc` across the threshold allocates anew, copies min(old, new) bytes between two
//   distinct live blocks (so they cannot overlap), then frees the old block.
unsafe impl GlobalAlloc for LazyHugeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(layout.size(), layout.align()) {
            return unsafe { System.alloc(layout) };
        }
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled by the kernel.
            unsafe { self.alloc(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_huge(layout.size(), layout.align()) && !is_huge(new_size, layout.align()) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size, rounded up to align, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_allocation_succeeds_without_committing_memory() {
        let a = LazyHugeAllocator;
        // 64 GiB: more than this machine has, so the system allocator would refuse it.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            let q = a.realloc(p, layout, 16);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(16, 8).unwrap());
        }
    }
}
