//! The table of hooked vnode-operation vectors and their original entries.
//!
//! The shim patches a filesystem's vector (`vp->v_op`) the first time it sees
//! a vnode using it; the hooks then need the entry they replaced, on every
//! call. Lookups are lock-free (hot path); inserts happen off the hot path
//! under a spin lock that the shim's own patch lock makes uncontended.
//!
//! # Invariants
//!
//! * Entries `0..len` are fully written before `len` is published with
//!   Release, and never change afterwards (until the core is discarded), so a
//!   reader that loads `len` with Acquire sees complete entries; the one
//!   exception is `remove`, which sets an entry's `vector` to 0. A removed
//!   slot is never reused, so a reader that matched it just before sees the
//!   originals it had (unchanged), and a lookup after it misses.
//! * A vector address appears at most once among entries not removed (the
//!   same address may come back as a new entry: a freed vector's memory
//!   reused for another filesystem's).

use crate::ffi::bridge;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Vnode operations hooked, in `enum mt_vop` order.
pub const OPS: usize = bridge::MT_VOP__COUNT as usize;
/// Capacity of the table.
pub const MAX_VECTORS: usize = bridge::MT_CORE_MAX_VECTORS as usize;

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorError {
    /// Address 0 or already present.
    Invalid,
    /// The table is full.
    Full,
}

pub(crate) struct Entry {
    vector: AtomicU64,
    originals: [AtomicU64; OPS],
}

impl Entry {
    /// An unused entry.
    pub(crate) fn new() -> Entry {
        Entry {
            vector: AtomicU64::new(0),
            originals: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The vector table. `mt_core_init` writes it in place, entry by entry
/// (see `ffi`), so its 2 KiB never pass through the kernel stack.
pub struct VectorTable {
    pub(crate) entries: [Entry; MAX_VECTORS],
    pub(crate) len: AtomicU32,
    pub(crate) insert_lock: spin::Mutex<()>,
}

impl VectorTable {
    /// An empty table (built by value: host use).
    pub fn new() -> VectorTable {
        VectorTable {
            entries: core::array::from_fn(|_| Entry::new()),
            len: AtomicU32::new(0),
            insert_lock: spin::Mutex::new(()),
        }
    }

    fn published(&self) -> &[Entry] {
        let n = self.len.load(Ordering::Acquire) as usize;
        self.entries.get(..n).unwrap_or(&[])
    }

    /// The original entry for `op` of the hooked vector at `vector`.
    #[inline]
    pub fn original(&self, vector: u64, op: u32) -> Option<u64> {
        let op = op as usize;
        if op >= OPS || vector == 0 {
            return None;
        }
        let e = self
            .published()
            .iter()
            .find(|e| e.vector.load(Ordering::Relaxed) == vector)?;
        e.originals.get(op).map(|o| o.load(Ordering::Relaxed))
    }

    /// Remembers `originals` of `vector`; returns its index.
    pub fn insert(&self, vector: u64, originals: [u64; OPS]) -> Result<u32, VectorError> {
        let _guard = self.insert_lock.lock();
        if vector == 0
            || self
                .published()
                .iter()
                .any(|e| e.vector.load(Ordering::Relaxed) == vector)
        {
            return Err(VectorError::Invalid);
        }
        let n = self.len.load(Ordering::Relaxed) as usize;
        let e = self.entries.get(n).ok_or(VectorError::Full)?;
        for (slot, v) in e.originals.iter().zip(originals) {
            slot.store(v, Ordering::Relaxed);
        }
        e.vector.store(vector, Ordering::Relaxed);
        // INVARIANT: publishes the entry written above.
        self.len.store(n as u32 + 1, Ordering::Release);
        Ok(n as u32)
    }

    /// Forgets `vector` (its filesystem is going away): lookups miss from
    /// now on and a later insert of the same address is a new entry.
    /// Returns whether it was in the table.
    pub fn remove(&self, vector: u64) -> bool {
        let _guard = self.insert_lock.lock();
        if vector == 0 {
            return false;
        }
        match self
            .published()
            .iter()
            .find(|e| e.vector.load(Ordering::Relaxed) == vector)
        {
            Some(e) => {
                e.vector.store(0, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Entry `i` (for restoring at unload); a removed entry has vector 0.
    pub fn get(&self, i: u32) -> Option<(u64, [u64; OPS])> {
        let e = self.published().get(i as usize)?;
        Some((
            e.vector.load(Ordering::Relaxed),
            core::array::from_fn(|op| e.originals.get(op).map_or(0, |o| o.load(Ordering::Relaxed))),
        ))
    }

    /// Number of vectors in the table.
    pub fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    /// Whether no vector was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VectorTable {
    fn default() -> Self {
        VectorTable::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_get_and_refusals() {
        let t = VectorTable::new();
        assert_eq!(t.original(0x1000, 0), None);
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(0));
        assert_eq!(t.insert(0x2000, [4, 5, 6, 7]), Ok(1));
        assert_eq!(t.original(0x1000, bridge::MT_VOP_PAGEIN), Some(2));
        assert_eq!(t.original(0x2000, bridge::MT_VOP_MNOMAP), Some(6));
        assert_eq!(t.original(0x2000, bridge::MT_VOP_CLOSE), Some(7));
        assert_eq!(t.original(0x2000, 4), None, "op out of range");
        assert_eq!(t.original(0x3000, 0), None);
        assert_eq!(
            t.insert(0x1000, [7, 7, 7, 7]),
            Err(VectorError::Invalid),
            "duplicate"
        );
        assert_eq!(t.insert(0, [7, 7, 7, 7]), Err(VectorError::Invalid));
        assert_eq!(t.get(1), Some((0x2000, [4, 5, 6, 7])));
        assert_eq!(t.get(2), None);
        for i in 2..MAX_VECTORS as u64 {
            assert!(t.insert(0x1000 * (i + 1), [i; OPS]).is_ok());
        }
        assert_eq!(t.insert(0xdead_0000, [0; OPS]), Err(VectorError::Full));
        assert_eq!(t.len() as usize, MAX_VECTORS);
    }

    #[test]
    fn a_removed_vector_misses_and_its_address_can_come_back() {
        let t = VectorTable::new();
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(0));
        assert_eq!(t.insert(0x2000, [4, 5, 6, 7]), Ok(1));
        assert!(!t.remove(0x3000), "not in the table");
        assert!(!t.remove(0));
        assert!(t.remove(0x1000));
        assert!(!t.remove(0x1000), "already removed");
        assert_eq!(t.original(0x1000, 0), None);
        assert_eq!(t.get(0), Some((0, [1, 2, 3, 4])), "a removed slot stays");
        assert_eq!(t.original(0x2000, 0), Some(4), "the others are untouched");
        // The address comes back (a freed vector reused): a new entry.
        assert_eq!(t.insert(0x1000, [7, 8, 9, 10]), Ok(2));
        assert_eq!(t.original(0x1000, 2), Some(9));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn concurrent_lookups_see_complete_entries() {
        let t = VectorTable::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=MAX_VECTORS as u64 {
                    t.insert(i * 16, [i, i + 1, i + 2, i + 3]).unwrap();
                }
            });
            s.spawn(|| {
                // Miri interprets every access: fewer rounds, same interleavings.
                for _ in 0..if cfg!(miri) { 20 } else { 10_000 } {
                    for i in 1..=MAX_VECTORS as u64 {
                        if let Some(v) = t.original(i * 16, 2) {
                            assert_eq!(v, i + 2, "a published entry is complete");
                        }
                    }
                }
            });
        });
    }
}
