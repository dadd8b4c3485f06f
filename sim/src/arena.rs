//! Kernel memory: one region the simulator controls, so every kernel object
//! has a recognisable address and tests can scan output for leaked pointers.

use std::alloc::{self, Layout};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lock;

/// Byte written over fresh kernel objects and over freed memory.
pub const POISON: u8 = 0xA5;

/// Who asked for a block: the simulated kernel or the loaded kext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The simulated kernel's own objects (vnodes, procs, vectors, ...).
    Kernel,
    /// An allocation a kext made through a KPI and must give back.
    Kext,
}

/// One live block.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// Bytes requested.
    pub size: usize,
    /// Who must free it.
    pub owner: Owner,
    /// What it is, for messages.
    pub what: &'static str,
}

/// Freed small blocks wait this long (in frees) before reuse, so a use after
/// free reads poison rather than a new object.
const QUARANTINE: usize = 4096;
/// Blocks up to this size are reused; larger ones (rings) never are.
const REUSE_MAX: usize = 64 << 10;

/// A bump allocator over one zeroed region. Freed blocks are poisoned and
/// quarantined; small ones are reused afterwards, as kernel zones do.
pub struct Arena {
    base: usize,
    size: usize,
    layout: Layout,
    next: AtomicUsize,
    live: Mutex<HashMap<usize, Block>>,
    freed: Mutex<Freed>,
}

/// Freed blocks: a FIFO quarantine, then free lists by size class.
#[derive(Default)]
struct Freed {
    quarantine: VecDeque<(usize, usize)>,
    lists: HashMap<usize, Vec<usize>>,
}

/// The size class of a request: 16-byte granules.
fn class(size: usize) -> usize {
    size.max(1).next_multiple_of(16)
}

// SAFETY:
// - `base` is a plain address of memory owned by the arena until drop.
// - All mutable state is behind atomics or a Mutex.
unsafe impl Send for Arena {}
// SAFETY: see `Send`; shared access only goes through atomics and the Mutex.
unsafe impl Sync for Arena {}

impl Arena {
    /// Reserves `size` bytes (rounded to pages; the OS commits them lazily).
    pub fn new(size: usize) -> Arena {
        let size = size.max(1 << 20).next_multiple_of(4096);
        let layout = Layout::from_size_align(size, 4096).expect("arena size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Arena {
            base: ptr as usize,
            size,
            layout,
            // Start one page in so no object sits at the region's first byte.
            next: AtomicUsize::new(4096),
            live: Mutex::new(HashMap::new()),
            freed: Mutex::new(Freed::default()),
        }
    }

    /// The region's address range.
    pub fn range(&self) -> Range<u64> {
        self.base as u64..(self.base + self.size) as u64
    }

    /// Allocates `size` bytes aligned to `align` (a power of two), filled with
    /// `POISON` (`zero` = false) or zeroes. `None` when the region is full.
    pub fn alloc(
        &self,
        size: usize,
        align: usize,
        zero: bool,
        owner: Owner,
        what: &'static str,
    ) -> Option<usize> {
        let size = size.max(1);
        let align = align.max(8);
        if align <= 16 && class(size) <= REUSE_MAX {
            let reused = lock(&self.freed)
                .lists
                .get_mut(&class(size))
                .and_then(Vec::pop);
            if let Some(addr) = reused {
                fill(addr, size, if zero { 0 } else { POISON });
                lock(&self.live).insert(addr, Block { size, owner, what });
                return Some(addr);
            }
        }
        // Reserve the whole class so a later reuse of the block fits.
        let size_class = class(size);
        let mut cur = self.next.load(Ordering::Relaxed);
        let start = loop {
            let start = cur.next_multiple_of(align);
            let end = start.checked_add(size_class)?;
            if end > self.size {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break start,
                Err(now) => cur = now,
            }
        };
        let addr = self.base + start;
        fill(addr, size, if zero { 0 } else { POISON });
        lock(&self.live).insert(addr, Block { size, owner, what });
        Some(addr)
    }

    /// Frees a block; returns what it was, or `None` when `addr` is not the
    /// start of a live block (double free or a wild pointer).
    pub fn free(&self, addr: usize) -> Option<Block> {
        let block = lock(&self.live).remove(&addr)?;
        fill(addr, block.size, POISON);
        let c = class(block.size);
        if c <= REUSE_MAX && addr % 16 == 0 {
            let mut f = lock(&self.freed);
            f.quarantine.push_back((addr, c));
            if f.quarantine.len() > QUARANTINE
                && let Some((a, c)) = f.quarantine.pop_front()
            {
                f.lists.entry(c).or_default().push(a);
            }
        }
        Some(block)
    }

    /// The live block starting at `addr`.
    pub fn block(&self, addr: usize) -> Option<Block> {
        lock(&self.live).get(&addr).copied()
    }

    /// Live blocks of one owner: (count, bytes).
    pub fn outstanding(&self, owner: Owner) -> (usize, usize) {
        let live = lock(&self.live);
        live.values()
            .filter(|b| b.owner == owner)
            .fold((0, 0), |(n, bytes), b| (n + 1, bytes + b.size))
    }

    /// Live kext blocks with their addresses, for leak reports.
    pub fn kext_blocks(&self) -> Vec<(usize, Block)> {
        let live = lock(&self.live);
        let mut v: Vec<(usize, Block)> = live
            .iter()
            .filter(|(_, b)| b.owner == Owner::Kext)
            .map(|(a, b)| (*a, *b))
            .collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// Whether `addr` points into the region.
    pub fn contains(&self, addr: u64) -> bool {
        self.range().contains(&addr)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed` with this layout.
        unsafe { alloc::dealloc(self.base as *mut u8, self.layout) };
    }
}

/// Fills `len` bytes at `addr` with `byte`.
fn fill(addr: usize, len: usize, byte: u8) {
    // SAFETY: callers pass a block inside the arena's live region.
    unsafe { std::ptr::write_bytes(addr as *mut u8, byte, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_are_poisoned_quarantined_then_reused() {
        let a = Arena::new(1 << 20);
        let first = a.alloc(40, 16, true, Owner::Kext, "t").unwrap();
        assert_eq!(a.outstanding(Owner::Kext), (1, 40));
        assert!(a.contains(first as u64));
        assert!(a.free(first).is_some());
        assert!(a.free(first).is_none(), "double free is refused");
        // SAFETY: `first` is inside the arena's region.
        let byte = unsafe { *(first as *const u8) };
        assert_eq!(byte, POISON);
        let mut seen_again = false;
        for _ in 0..=QUARANTINE + 1 {
            let b = a.alloc(48, 16, false, Owner::Kernel, "t").unwrap();
            seen_again |= b == first;
            a.free(b);
        }
        assert!(seen_again, "reused after the quarantine");
        assert_eq!(a.outstanding(Owner::Kext), (0, 0));
    }

    #[test]
    fn a_full_region_fails_instead_of_overlapping() {
        let a = Arena::new(1 << 20);
        assert!(a.alloc(2 << 20, 16, false, Owner::Kext, "big").is_none());
        let x = a.alloc(100, 4096, false, Owner::Kext, "aligned").unwrap();
        assert_eq!(x % 4096, 0);
        let y = a.alloc(100, 16, false, Owner::Kext, "next").unwrap();
        assert!(y >= x + 112, "blocks never overlap");
    }
}
