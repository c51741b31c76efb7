//! Free lists by size class in front of the system allocator: what the WASI 0.3 build allocates
//! with (`adapters/spin-p3`). Its instances serve many requests, so memory must be freed,
//! and wasi-libc's dlmalloc costs about 200 instructions a `malloc` and 270 a `free` there
//! (about 230 of each per chat request; docs/performance.md). A request's allocations are
//! mostly small and alike from one request to the next, so a freed block is kept on its size
//! class's list and handed to the next allocation of that class: a push and a pop.
//!
//! Bounded: only allocations of at most [`LARGEST`] bytes aligned to at most [`ALIGN`] are
//! kept (larger ones go to the system allocator as before); a kept block takes its class's size
//! from the system allocator (at most a quarter more than asked above 256 bytes, 15 bytes more
//! below); and at most [`KEPT`] bytes are kept on the lists at once, beyond which a freed block
//! goes back to the system allocator.
//!
//! The lists live in the freed blocks themselves (a block's first word is the next block's
//! address), so this is unsafe code, kept out of the core crate (which forbids it); it is
//! tested natively against the system allocator.

use std::alloc::{GlobalAlloc, Layout};

/// Size classes: 16 to 256 bytes in steps of 16, then four a power of two up to [`LARGEST`].
pub const CLASSES: usize = 40;
/// The largest allocation kept on a list (a body read asks for 16 KiB).
pub const LARGEST: usize = 16 << 10;
/// The largest alignment kept on a list: every kept block is allocated with it.
pub const ALIGN: usize = 8;
/// Bytes kept on the lists at most.
pub const KEPT: usize = 2 << 20;

/// The size class of an allocation, or `None`: too large or too strictly aligned to keep.
#[inline]
pub fn class(size: usize, align: usize) -> Option<usize> {
    if align > ALIGN || size > LARGEST {
        return None;
    }
    if size <= 256 {
        return Some(size.max(1).div_ceil(16) - 1);
    }
    // 257..=LARGEST: `k` is the power of two below the size, in four steps of 2^(k-2).
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let step = 1 << (k - 2);
    Some(16 + (k - 8) * 4 + (size - 1 - (1 << k)) / step)
}

/// The bytes a block of class `c` has.
#[inline]
pub fn class_size(c: usize) -> usize {
    if c < 16 {
        (c + 1) * 16
    } else {
        let k = 8 + (c - 16) / 4;
        (1 << k) + ((c - 16) % 4 + 1) * (1 << (k - 2))
    }
}

/// The lists: each class's latest freed block (null: none), and the bytes kept.
#[derive(Debug)]
pub struct Bins {
    heads: [*mut u8; CLASSES],
    kept: usize,
}

impl Default for Bins {
    fn default() -> Self {
        Bins::new()
    }
}

impl Bins {
    pub const fn new() -> Bins {
        Bins {
            heads: [std::ptr::null_mut(); CLASSES],
            kept: 0,
        }
    }

    /// Bytes kept on the lists now.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// Allocates `layout`: a kept block of its class, or a fresh one from `system`.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]; `system` is the allocator every block of these lists came
    /// from, and the same for every call on these lists.
    #[inline]
    pub unsafe fn alloc(&mut self, layout: Layout, system: &impl GlobalAlloc) -> *mut u8 {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { system.alloc(layout) };
        };
        let head = self.heads[c];
        if !head.is_null() {
            // SAFETY: a block on a list is free, at least 16 bytes, and aligned to `ALIGN`; its
            // first word is the next block's address (written by `dealloc`).
            self.heads[c] = unsafe { head.cast::<*mut u8>().read() };
            self.kept -= class_size(c);
            return head;
        }
        // SAFETY: a non-zero size and a power-of-two alignment.
        unsafe { system.alloc(Layout::from_size_align_unchecked(class_size(c), ALIGN)) }
    }

    /// Frees a block this allocated with `layout`: onto its class's list, or back to `system`.
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`]: `ptr` came from [`Bins::alloc`] or [`Bins::realloc`] on
    /// these lists with this layout, and is not used again.
    #[inline]
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout, system: &impl GlobalAlloc) {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: an allocation of its own, from `system`, with this layout.
            return unsafe { system.dealloc(ptr, layout) };
        };
        let size = class_size(c);
        if self.kept + size > KEPT {
            // SAFETY: the block was allocated from `system` with its class's layout.
            return unsafe { system.dealloc(ptr, Layout::from_size_align_unchecked(size, ALIGN)) };
        }
        // SAFETY: the block is the caller's to give up, at least 16 bytes, aligned to `ALIGN`.
        unsafe { ptr.cast::<*mut u8>().write(self.heads[c]) };
        self.heads[c] = ptr;
        self.kept += size;
    }

    /// Resizes a block: in place when the new size has the same class, else moved.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`], with `ptr` and `layout` as for [`Bins::dealloc`].
    #[inline]
    pub unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        system: &impl GlobalAlloc,
    ) -> *mut u8 {
        let old = class(layout.size(), layout.align());
        let new = class(new_size, layout.align());
        if old.is_some() && old == new {
            return ptr;
        }
        if old.is_none() && new.is_none() {
            // SAFETY: both sizes are the system allocator's own, as the caller vouches.
            return unsafe { system.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller vouches for the new size at the old alignment.
        let fresh = unsafe {
            self.alloc(
                Layout::from_size_align_unchecked(new_size, layout.align()),
                system,
            )
        };
        if !fresh.is_null() {
            // SAFETY: both blocks are live and distinct; the copy is within both.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout, system);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// The system allocator, counting what reaches it.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        frees: Cell<usize>,
        live: Cell<isize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            self.live.set(self.live.get() + 1);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            self.live.set(self.live.get() - 1);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Frees everything still on the lists back to the system allocator.
    fn drain(bins: &mut Bins, system: &Counting) {
        for c in 0..CLASSES {
            while !bins.heads[c].is_null() {
                let p = unsafe { bins.alloc(layout(class_size(c), ALIGN), system) };
                unsafe { system.dealloc(p, layout(class_size(c), ALIGN)) };
            }
        }
        assert_eq!(bins.kept(), 0);
    }

    #[test]
    fn classes_cover_every_size_with_at_most_a_quarter_more() {
        // Written out: the first classes, the boundaries around 256 and each power of two.
        let want = [
            (1, 16),
            (16, 16),
            (17, 32),
            (240, 240),
            (241, 256),
            (256, 256),
            (257, 320),
            (320, 320),
            (321, 384),
            (512, 512),
            (513, 640),
            (1024, 1024),
            (1025, 1280),
            (3072, 3072),
            (3073, 3584),
            (4096, 4096),
            (4097, 5120),
            (16383, 16384),
            (16384, 16384),
        ];
        for (size, bytes) in want {
            let c = class(size, 1).unwrap();
            assert_eq!(class_size(c), bytes, "size {size}");
        }
        assert_eq!(class(LARGEST, 8), Some(CLASSES - 1));
        assert_eq!(class(LARGEST + 1, 1), None);
        assert_eq!(class(64, 16), None);
        let mut last = 0;
        for size in 1..=LARGEST {
            let c = class(size, 8).unwrap();
            assert!(c < CLASSES);
            assert!(c >= last, "classes grow with the size");
            last = c;
            let bytes = class_size(c);
            assert!(bytes >= size);
            assert!(
                bytes - size < 16 || bytes * 4 <= size * 5,
                "{size} → {bytes}"
            );
            assert!(
                c == 0 || class_size(c - 1) < size,
                "the smallest class that fits"
            );
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_allocation_of_its_class() {
        let system = Counting::default();
        let mut bins = Bins::new();
        unsafe {
            let a = bins.alloc(layout(100, 8), &system);
            a.write_bytes(0xAB, 100);
            bins.dealloc(a, layout(100, 8), &system);
            assert_eq!(bins.kept(), 112);
            // 97..=112 bytes share the class: the same block, no call to the system allocator.
            let b = bins.alloc(layout(110, 4), &system);
            assert_eq!(b, a);
            assert_eq!(system.allocs.get(), 1);
            assert_eq!(bins.kept(), 0);
            // Another class gets its own block.
            let c = bins.alloc(layout(20, 8), &system);
            assert_ne!(c, a);
            assert_eq!(system.allocs.get(), 2);
            bins.dealloc(b, layout(110, 4), &system);
            bins.dealloc(c, layout(20, 8), &system);
        }
        drain(&mut bins, &system);
        assert_eq!(system.live.get(), 0);
    }

    #[test]
    fn lists_are_last_in_first_out_and_blocks_stay_apart() {
        let system = Counting::default();
        let mut bins = Bins::new();
        unsafe {
            let blocks: Vec<*mut u8> = (0..50)
                .map(|_| bins.alloc(layout(48, 8), &system))
                .collect();
            for (i, b) in blocks.iter().enumerate() {
                b.write_bytes(i as u8, 48);
            }
            for (i, b) in blocks.iter().enumerate() {
                assert!(std::slice::from_raw_parts(*b, 48)
                    .iter()
                    .all(|x| *x == i as u8));
                assert_eq!(*b as usize % ALIGN, 0);
            }
            for b in &blocks {
                bins.dealloc(*b, layout(48, 8), &system);
            }
            let again: Vec<*mut u8> = (0..50)
                .map(|_| bins.alloc(layout(40, 8), &system))
                .collect();
            let mut want = blocks.clone();
            want.reverse();
            assert_eq!(again, want);
            assert_eq!(system.allocs.get(), 50);
            for b in &again {
                bins.dealloc(*b, layout(40, 8), &system);
            }
        }
        drain(&mut bins, &system);
        assert_eq!(system.live.get(), 0);
    }

    #[test]
    fn large_or_strictly_aligned_allocations_go_to_the_system_allocator() {
        let system = Counting::default();
        let mut bins = Bins::new();
        unsafe {
            for l in [layout(LARGEST + 1, 8), layout(64, 16), layout(64, 4096)] {
                let p = bins.alloc(l, &system);
                assert_eq!(p as usize % l.align(), 0);
                bins.dealloc(p, l, &system);
                assert_eq!(bins.kept(), 0);
            }
        }
        assert_eq!(system.allocs.get(), 3);
        assert_eq!(system.frees.get(), 3);
    }

    #[test]
    fn no_more_than_kept_bytes_stay_on_the_lists() {
        let system = Counting::default();
        let mut bins = Bins::new();
        let n = KEPT / 4096 + 10;
        unsafe {
            let blocks: Vec<*mut u8> = (0..n)
                .map(|_| bins.alloc(layout(4000, 8), &system))
                .collect();
            for b in blocks {
                bins.dealloc(b, layout(4000, 8), &system);
            }
        }
        assert_eq!(bins.kept(), KEPT);
        assert_eq!(system.frees.get(), 10);
        drain(&mut bins, &system);
        assert_eq!(system.live.get(), 0);
    }

    #[test]
    fn realloc_keeps_the_contents_within_a_class_across_classes_and_to_the_system() {
        let system = Counting::default();
        let mut bins = Bins::new();
        unsafe {
            let p = bins.alloc(layout(20, 1), &system);
            for i in 0..20 {
                p.add(i).write(i as u8);
            }
            // Within its class (17..=32): the same block.
            let q = bins.realloc(p, layout(20, 1), 30, &system);
            assert_eq!(q, p);
            // To a larger class, then past the largest kept, then back down.
            let r = bins.realloc(q, layout(30, 1), 300, &system);
            assert_ne!(r, q);
            assert_eq!(bins.kept(), 32, "the old block is kept");
            let s = bins.realloc(r, layout(300, 1), 20_000, &system);
            let t = bins.realloc(s, layout(20_000, 1), 40_000, &system);
            let u = bins.realloc(t, layout(40_000, 1), 8, &system);
            let got: Vec<u8> = std::slice::from_raw_parts(u, 8).to_vec();
            assert_eq!(got, (0..8).collect::<Vec<u8>>());
            bins.dealloc(u, layout(8, 1), &system);
        }
        drain(&mut bins, &system);
        assert_eq!(system.live.get(), 0);
    }
}
