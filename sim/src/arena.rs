//! Kernel memory: one region the simulator controls, so every kernel object
//! has a recognisable address and tests can scan output for leaked pointers.
//!
//! The region is mapped inside [`KERNEL_WINDOW`] (`0x4b45_xxxx_xxxx`, "KE"),
//! the same in every process, so a test can scan the output of another
//! process (the companion's CLI) for kernel addresses without knowing where
//! that process's simulator put its arena: [`find_tagged_addresses`].

use std::alloc::{self, Layout};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lock;

/// Byte written over fresh kernel objects and over freed memory.
pub const POISON: u8 = 0xA5;

/// Where every arena is mapped when the address space allows it: no heap,
/// stack or library lands here by chance, and no timestamp or count a tool
/// prints reads as a number in it (13+ decimal digits, and its hex form has
/// the letter b in it).
pub const KERNEL_WINDOW: Range<u64> = 0x4b45_0000_0000..0x4b46_0000_0000;

/// Arenas start at a multiple of this inside the window (one per `Sim`,
/// plus the unit tests' own).
const WINDOW_SLOT: u64 = 256 << 20;

/// Whether `v` lies in [`KERNEL_WINDOW`]: a simulated kernel address of any
/// process, as long as that process's arena got its window slot (see
/// [`Arena::in_window`]).
pub fn in_kernel_window(v: u64) -> bool {
    KERNEL_WINDOW.contains(&v)
}

/// How a leaked address was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakForm {
    /// Eight little-endian bytes.
    Binary,
    /// Hex digits (with or without `0x`, any case).
    Hex,
    /// Decimal digits.
    Decimal,
}

/// One kernel address found in output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Byte offset of the bytes or the digit run.
    pub offset: usize,
    /// The address.
    pub value: u64,
    /// How it was written.
    pub form: LeakForm,
}

/// Every value for which `is_kernel` holds in `bytes`: as any aligned or
/// unaligned little-endian u64, and as any run of hex digits or of decimal
/// digits (a run is read whole, and a hex run also without a `0x`).
pub fn find_addresses(bytes: &[u8], is_kernel: impl Fn(u64) -> bool) -> Vec<Leak> {
    let mut out: Vec<Leak> = bytes
        .windows(8)
        .enumerate()
        .filter_map(|(offset, w)| {
            let value = u64::from_le_bytes(w.try_into().ok()?);
            is_kernel(value).then_some(Leak {
                offset,
                value,
                form: LeakForm::Binary,
            })
        })
        .collect();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        let run = &bytes[start..i];
        // "0x1f" is one run "0x" + "1f" split at the x: only the digits count.
        let text = std::str::from_utf8(run).unwrap_or_default();
        for (radix, form) in [(16, LeakForm::Hex), (10, LeakForm::Decimal)] {
            if let Ok(value) = u64::from_str_radix(text, radix)
                && is_kernel(value)
            {
                out.push(Leak {
                    offset: start,
                    value,
                    form,
                });
            }
        }
    }
    out
}

/// [`find_addresses`] over bytes a writer laid out as structs, read as it
/// wrote them: each struct (starting at an offset of `structs`) on its own,
/// each 8-byte clock field (at an offset of `clocks`, sorted) only as the
/// whole value it holds, every other byte run with all its windows.
///
/// A blind scan reads values nobody wrote: a time in nanoseconds has zero
/// upper bytes, and so do most fields before it (a pid, a drop count, a
/// slot's stamp), so 8 bytes read across the two are the time shifted left;
/// a time of 5.5 to 8.4 ms shifted by 24 bits reads as `0x55..`/`0x7f..`
/// with zero low bytes, where a process's text or a thread's stack lies.
/// An address the writer put in is one field of one struct: in a clock
/// field or wholly beside one, it is found either way.
pub fn find_addresses_by_field(
    bytes: &[u8],
    structs: &[usize],
    clocks: &[usize],
    is_kernel: impl Fn(u64) -> bool,
) -> Vec<Leak> {
    let mut cuts: Vec<usize> = structs
        .iter()
        .copied()
        .chain(clocks.iter().flat_map(|&at| [at, at + 8]))
        .chain([bytes.len()])
        .filter(|&c| c <= bytes.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut leaks = Vec::new();
    for piece in cuts.windows(2) {
        let (from, to) = (piece[0], piece[1]);
        let clock = clocks.binary_search(&from).is_ok();
        let found = find_addresses(&bytes[from..to], &is_kernel)
            .into_iter()
            .filter(|l| !clock || (l.form == LeakForm::Binary && l.offset == 0));
        leaks.extend(found.map(|l| Leak {
            offset: l.offset + from,
            ..l
        }));
    }
    leaks
}

/// [`find_addresses`] with [`in_kernel_window`]: kernel addresses of a
/// simulator that ran in any process.
pub fn find_tagged_addresses(bytes: &[u8]) -> Vec<Leak> {
    find_addresses(bytes, in_kernel_window)
}

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
    backing: Backing,
    next: AtomicUsize,
    live: Mutex<HashMap<usize, Block>>,
    freed: Mutex<Freed>,
}

/// Where the region's memory came from, for its release.
enum Backing {
    /// An anonymous mapping in [`KERNEL_WINDOW`].
    #[cfg(unix)]
    Window,
    /// The heap (the window was full or unavailable).
    Heap(Layout),
}

/// Maps `size` bytes (a multiple of [`WINDOW_SLOT`]) at the first free slot
/// of the window. The address is a hint, so nothing already mapped is ever
/// replaced; a mapping placed elsewhere is given back.
#[cfg(unix)]
fn map_in_window(size: usize) -> Option<usize> {
    let span = KERNEL_WINDOW.end - KERNEL_WINDOW.start;
    let slots = span / WINDOW_SLOT;
    let need = (size as u64).div_ceil(WINDOW_SLOT);
    for slot in 0..=slots.checked_sub(need)? {
        let hint = KERNEL_WINDOW.start + slot * WINDOW_SLOT;
        // SAFETY: an anonymous private mapping with a hint only: the kernel
        // picks a free range and never replaces an existing mapping.
        let got = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            return None;
        }
        if got as u64 == hint {
            return Some(got as usize);
        }
        // SAFETY: `got` is the mapping just made, of `size` bytes.
        unsafe { libc::munmap(got, size) };
    }
    None
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
    /// Reserves `size` bytes (rounded to pages; the OS commits them lazily),
    /// inside [`KERNEL_WINDOW`] when a slot is free, else on the heap.
    pub fn new(size: usize) -> Arena {
        let size = size.max(1 << 20).next_multiple_of(4096);
        #[cfg(unix)]
        let mapped = map_in_window(size.next_multiple_of(WINDOW_SLOT as usize))
            .map(|base| (base, Backing::Window));
        #[cfg(not(unix))]
        let mapped = None;
        let (base, backing) = mapped.unwrap_or_else(|| {
            let layout = Layout::from_size_align(size, 4096).expect("arena size fits a layout");
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc::alloc_zeroed(layout) };
            if ptr.is_null() {
                alloc::handle_alloc_error(layout);
            }
            (ptr as usize, Backing::Heap(layout))
        });
        Arena {
            base,
            size,
            backing,
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

    /// Whether the region lies in [`KERNEL_WINDOW`] (so
    /// [`find_tagged_addresses`] sees its addresses from any process).
    pub fn in_window(&self) -> bool {
        let r = self.range();
        in_kernel_window(r.start) && in_kernel_window(r.end - 1)
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
        match self.backing {
            #[cfg(unix)]
            Backing::Window => {
                let len = self.size.next_multiple_of(WINDOW_SLOT as usize);
                // SAFETY: `base` is the mapping `map_in_window` made of `len` bytes.
                unsafe { libc::munmap(self.base as *mut libc::c_void, len) };
            }
            // SAFETY: `base` came from `alloc_zeroed` with this layout.
            Backing::Heap(layout) => unsafe { alloc::dealloc(self.base as *mut u8, layout) },
        }
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
    fn arenas_live_in_the_tagged_window_and_scans_find_every_form() {
        let a = Arena::new(1 << 20);
        let b = Arena::new(300 << 20);
        assert!(
            a.in_window() && b.in_window(),
            "{:x?} {:x?}",
            a.range(),
            b.range()
        );
        assert!(a.range().end <= b.range().start || b.range().end <= a.range().start);
        let x = a.alloc(64, 16, false, Owner::Kernel, "t").unwrap() as u64;
        assert!(in_kernel_window(x));
        let mut out = b"id 0x1234 ts 123456789012 ".to_vec();
        let clean = out.len();
        assert!(find_tagged_addresses(&out).is_empty(), "no false positive");
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(format!(" {x:#x} {x:X} {x} vnode={x:016x}").as_bytes());
        let found = find_tagged_addresses(&out);
        let forms: Vec<LeakForm> = found.iter().map(|l| l.form).collect();
        assert_eq!(
            forms,
            [
                LeakForm::Binary,
                LeakForm::Hex,
                LeakForm::Hex,
                LeakForm::Decimal,
                LeakForm::Hex
            ]
        );
        assert_eq!(found[0].offset, clean);
        assert!(found.iter().all(|l| l.value == x));
        // A heap address is not in the window.
        let heap = Box::new(0u64);
        assert!(!in_kernel_window(&raw const *heap as u64));
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
