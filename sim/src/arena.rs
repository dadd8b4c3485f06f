//! Kernel memory: one region the simulator controls, so every kernel object
//! has a recognisable address and tests can scan output for leaked pointers.

use std::alloc::{self, Layout};
use std::collections::HashMap;
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

/// A bump allocator over one zeroed region; freed blocks are poisoned and
/// never reused, so a use after free reads poison instead of a new object.
pub struct Arena {
    base: usize,
    size: usize,
    layout: Layout,
    next: AtomicUsize,
    live: Mutex<HashMap<usize, Block>>,
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
        let mut cur = self.next.load(Ordering::Relaxed);
        let start = loop {
            let start = cur.next_multiple_of(align);
            let end = start.checked_add(size)?;
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
