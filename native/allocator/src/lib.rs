//! pymirror's global allocator: mimalloc, asked for an alignment only when a
//! type needs more than mimalloc gives every block. A crate of its own: it is
//! the project's only `unsafe` (the data plane's crate forbids it), and small
//! enough to read whole. The `mimalloc` crate calls the
//! aligned entry points for every allocation, and for sizes past mimalloc's
//! small classes (read buffers, the header-timeout sleep) those take the
//! generic route that over-allocates and offsets: 5.4 calls per proxied request,
//! about 1k instructions of the plain path's (callgrind).

#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What every mimalloc block of at least this size is aligned to
/// (`MI_MAX_ALIGN_SIZE` on 64-bit targets); the rule the system allocator
/// follows too: a smaller alignment that is no larger than the size needs
/// nothing asked.
const BLOCK_ALIGN: usize = 16;

pub struct Allocator;

fn plain(layout: Layout) -> bool {
    layout.align() <= BLOCK_ALIGN && layout.align() <= layout.size()
}

// SAFETY: each method forwards to mimalloc's matching entry point, which
// returns blocks aligned as asked (or null); blocks of either family are freed
// by `mi_free`, as mimalloc documents.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation entry points take any size and alignment.
        unsafe {
            if plain(layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = Layout::from_size_align(new_size, layout.align());
        // SAFETY: `ptr` came from this allocator; the aligned entry point keeps
        // an alignment the plain one would not promise for the new size.
        unsafe {
            if grown.is_ok_and(plain) && plain(layout) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout a program may ask for comes back aligned as asked, and
    /// survives a realloc across the plain and the aligned families.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1usize, 7, 8, 15, 16, 17, 100, 1024, 5000, 70_000, 1 << 20] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc: size {size} align {align}");
                    assert_eq!(*q, 0xab);
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
