//! The bookkeeping of a per-request arena: what the WASI 0.2 build allocates with (see
//! `spin_adapter::PerRequest`). A WASI 0.2 instance serves one request and is thrown away, so
//! freeing memory is wasted work: the arena hands out addresses from chunks it takes from the
//! system allocator, moving a pointer forward, and forgets them. It stays bounded: a chunk is
//! [`CHUNK`] bytes, at most [`CHUNKS`] of them are taken, an allocation larger than [`LARGE`]
//! never comes from it, and once it is used up every allocation goes to the system allocator
//! (which frees), so a long stream's memory does not grow with its length. Freeing the latest
//! allocation gives its bytes back (a vector that grows by reallocating stays in place).
//!
//! Pure arithmetic on addresses, tested natively; the allocator itself is the adapter's.

/// Bytes in one chunk.
pub const CHUNK: usize = 1 << 20;
/// Chunks the arena takes at most: what one request may bump through before the system
/// allocator takes over.
pub const CHUNKS: usize = 8;
/// Allocations larger than this go to the system allocator (a chunk is not wasted on them).
pub const LARGE: usize = CHUNK / 4;

/// Chunks taken, and the free end of the latest.
#[derive(Debug)]
pub struct Arena {
    starts: [usize; CHUNKS],
    taken: usize,
    /// The next free byte of the latest chunk, and its end.
    next: usize,
    end: usize,
    /// The latest allocation's start (0: none), so freeing it can give its bytes back.
    last: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

impl Arena {
    pub const fn new() -> Arena {
        Arena {
            starts: [0; CHUNKS],
            taken: 0,
            next: 0,
            end: 0,
            last: 0,
        }
    }

    /// An address for `size` bytes aligned to `align` (a power of two), or `None`: the
    /// allocation is large, the arena is used up, or `chunk` (the system allocator: the
    /// address of [`CHUNK`] fresh bytes, aligned to 16) has none.
    #[inline]
    pub fn alloc(
        &mut self,
        size: usize,
        align: usize,
        chunk: impl FnOnce() -> Option<usize>,
    ) -> Option<usize> {
        // The common case, inlined into the allocator: the latest chunk has room. `next` and
        // `end` are 0 until a chunk is taken, so nothing starts before `end` then.
        if size <= LARGE && align <= 4096 {
            let mask = align.wrapping_sub(1);
            if let Some(at) = self.next.checked_add(mask).map(|n| n & !mask) {
                if at < self.end && size <= self.end - at {
                    self.next = at + size;
                    self.last = at;
                    return Some(at);
                }
            }
        }
        self.alloc_in_new_chunk(size, align, chunk)
    }

    /// [`Arena::alloc`] when the latest chunk has no room (or there is none yet).
    #[cold]
    #[inline(never)]
    fn alloc_in_new_chunk(
        &mut self,
        size: usize,
        align: usize,
        chunk: impl FnOnce() -> Option<usize>,
    ) -> Option<usize> {
        if size > LARGE || align > 4096 {
            return None;
        }
        let at = align_up(self.next, align)?;
        let at = match at.checked_add(size) {
            Some(e) if self.taken > 0 && e <= self.end => at,
            _ => {
                if self.taken == CHUNKS {
                    return None;
                }
                let start = chunk()?;
                self.starts[self.taken] = start;
                self.taken += 1;
                self.end = start.checked_add(CHUNK)?;
                align_up(start, align)?
            }
        };
        self.next = at + size;
        self.last = at;
        Some(at)
    }

    /// Whether `addr` came from the arena.
    pub fn owns(&self, addr: usize) -> bool {
        self.starts[..self.taken]
            .iter()
            .any(|s| addr >= *s && addr < s + CHUNK)
    }

    /// Frees an allocation from the arena: only the latest gives its bytes back.
    pub fn free(&mut self, addr: usize) {
        if addr == self.last && addr != 0 {
            self.next = addr;
            self.last = 0;
        }
    }

    /// Grows or shrinks the latest allocation where it is, if its chunk has room.
    pub fn resize_in_place(&mut self, addr: usize, new_size: usize) -> bool {
        if addr != self.last || addr == 0 || new_size > LARGE {
            return false;
        }
        match addr.checked_add(new_size) {
            Some(e) if e <= self.end => {
                self.next = e;
                true
            }
            _ => false,
        }
    }
}

fn align_up(addr: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    Some(addr.checked_add(mask)? & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks from a pretend heap: each a fresh `CHUNK`-sized range, 16-aligned, with a gap.
    fn heap() -> impl FnMut() -> Option<usize> {
        let mut at = 0x10_0000usize;
        move || {
            let start = at;
            at += CHUNK + 4096;
            Some(start)
        }
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_owned() {
        let mut a = Arena::new();
        let mut h = heap();
        let mut given: Vec<(usize, usize)> = Vec::new();
        for i in 0..5_000usize {
            let size = (i * 37) % 700 + 1;
            let align = 1 << (i % 5);
            let p = a.alloc(size, align, &mut h).expect("room");
            assert_eq!(p % align, 0);
            assert!(a.owns(p) && a.owns(p + size - 1));
            given.push((p, size));
        }
        given.sort_unstable();
        for w in given.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        assert!(!a.owns(0x10));
    }

    #[test]
    fn it_is_bounded_and_then_leaves_allocations_to_the_system() {
        let mut a = Arena::new();
        let mut h = heap();
        let mut taken = 0;
        while a.alloc(LARGE, 8, &mut h).is_some() {
            taken += LARGE;
            assert!(taken <= CHUNK * CHUNKS, "bumped {taken} bytes");
        }
        assert_eq!(taken, CHUNK * CHUNKS, "every chunk used before giving up");
        assert_eq!(a.alloc(1, 1, &mut h), None);
        // Large allocations never come from it, even when fresh.
        assert_eq!(Arena::new().alloc(LARGE + 1, 8, heap()), None);
        // Nor when the system has no chunk to give.
        assert_eq!(Arena::new().alloc(8, 8, || None), None);
    }

    #[test]
    fn a_chunk_is_used_to_its_last_byte_and_never_past_it() {
        let mut a = Arena::new();
        let mut h = heap();
        // Nothing is handed out before a chunk is taken, not even for nothing.
        let first = a.alloc(0, 1, &mut h).unwrap();
        assert_eq!(first, 0x10_0000);
        let mut at = first;
        while at + LARGE <= first + CHUNK {
            at = a.alloc(LARGE, 1, &mut h).unwrap() + LARGE;
        }
        let rest = first + CHUNK - at;
        if rest > 0 {
            assert_eq!(a.alloc(rest, 1, &mut h), Some(at), "the chunk's last bytes");
        }
        let next = a.alloc(1, 1, &mut h).unwrap();
        assert!(next >= first + CHUNK + 4096, "a new chunk: {next:#x}");
        // Aligned past the chunk's end: a new chunk too.
        let mut b = Arena::new();
        let p = b.alloc(CHUNK / 4, 1, &mut h).unwrap();
        for _ in 0..3 {
            b.alloc(CHUNK / 4 - 1, 1, &mut h).unwrap();
        }
        let q = b.alloc(1, 4096, &mut h).unwrap();
        assert!(q >= p + CHUNK && q % 4096 == 0, "{q:#x}");
    }

    #[test]
    fn the_latest_allocation_is_freed_and_resized_in_place() {
        let mut a = Arena::new();
        let mut h = heap();
        let p = a.alloc(100, 8, &mut h).unwrap();
        let q = a.alloc(100, 8, &mut h).unwrap();
        assert!(!a.resize_in_place(p, 200), "not the latest");
        assert!(a.resize_in_place(q, 5_000));
        let r = a.alloc(8, 8, &mut h).unwrap();
        assert!(r >= q + 5_000, "after the grown allocation");
        a.free(r);
        assert_eq!(a.alloc(8, 8, &mut h), Some(r), "its bytes given back");
        a.free(p); // not the latest: forgotten
        let s = a.alloc(8, 8, &mut h).unwrap();
        assert!(s > r);
        // A resize past the chunk's end is refused: the caller moves it.
        assert!(!a.resize_in_place(s, LARGE + 1));
    }
}
