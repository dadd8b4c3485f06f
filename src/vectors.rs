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
//!   Release, and their originals never change afterwards (until the core
//!   is discarded), so a reader that loads `len` with Acquire sees complete
//!   entries. Only `vector` changes: `remove` sets it to 0 (keeping the
//!   address in `removed`), and `insert` of that same address with the same
//!   originals stores it back. A reader that matched an entry therefore
//!   always reads the originals the entry was published with, whichever
//!   address it later holds: a key is never paired with other originals.
//! * A vector address appears at most once among entries not removed (the
//!   same address may come back with other originals as a new entry: a
//!   freed vector's memory reused for another filesystem's).
//! * Reviving keeps `len` bounded by the distinct (address, originals)
//!   pairs seen: a filesystem type unhooked at its last unmount and hooked
//!   again at its next mount costs no slot (`MAX_VECTORS` would otherwise
//!   run out after that many ejects, or unmount(2) attempts by any user).

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
    /// The address `remove` took out of `vector` (0 until then): a later
    /// insert of it with the same originals revives this entry.
    removed: AtomicU64,
    originals: [AtomicU64; OPS],
}

impl Entry {
    /// An unused entry.
    pub(crate) fn new() -> Entry {
        Entry {
            vector: AtomicU64::new(0),
            removed: AtomicU64::new(0),
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

    /// Remembers `originals` of `vector`; returns its index. A removed
    /// entry of the same address with the same originals is revived
    /// rather than a slot spent.
    pub fn insert(&self, vector: u64, originals: [u64; OPS]) -> Result<u32, VectorError> {
        let _guard = self.insert_lock.lock();
        let published = self.published();
        if vector == 0
            || published
                .iter()
                .any(|e| e.vector.load(Ordering::Relaxed) == vector)
        {
            return Err(VectorError::Invalid);
        }
        let same = |e: &Entry| {
            e.removed.load(Ordering::Relaxed) == vector
                && e.originals
                    .iter()
                    .zip(originals)
                    .all(|(o, v)| o.load(Ordering::Relaxed) == v)
        };
        if let Some((i, e)) = published.iter().enumerate().find(|(_, e)| same(e)) {
            // INVARIANT: the originals a reader pairs with `vector` are the
            // ones this entry was published with, the same as given.
            e.vector.store(vector, Ordering::Release);
            return Ok(i as u32);
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
    /// now on; a later insert of the same address revives the entry when
    /// its originals are the same, else takes a new one.
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
                e.removed.store(vector, Ordering::Relaxed);
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
        assert_eq!(
            t.get(0),
            Some((0, [1, 2, 3, 4])),
            "the old slot stays removed"
        );
    }

    #[test]
    fn a_vector_hooked_again_with_the_same_originals_reuses_its_slot() {
        // A filesystem type unhooked at its last unmount and hooked again
        // at its next mount, far more often than the table has slots.
        let t = VectorTable::new();
        assert_eq!(t.insert(0x2000, [4, 5, 6, 7]), Ok(0));
        for _ in 0..4 * MAX_VECTORS {
            assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(1));
            assert!(t.remove(0x1000));
        }
        assert_eq!(t.len(), 2, "no slot spent per round");
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(1));
        assert_eq!(t.original(0x1000, 3), Some(4));
        assert_eq!(
            t.insert(0x1000, [1, 2, 3, 4]),
            Err(VectorError::Invalid),
            "revived: a duplicate again"
        );
        assert_eq!(t.original(0x2000, 0), Some(4), "the others are untouched");
    }

    #[test]
    fn a_removed_slot_is_revived_only_by_its_address_with_its_originals() {
        let t = VectorTable::new();
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(0));
        assert!(t.remove(0x1000));
        assert_eq!(t.insert(0x3000, [1, 2, 3, 4]), Ok(1), "other address");
        assert_eq!(t.insert(0x1000, [1, 2, 3, 5]), Ok(2), "other originals");
        assert!(t.remove(0x1000));
        // Both removed entries hold 0x1000: each revives with its own.
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(0));
        assert_eq!(t.original(0x1000, 3), Some(4));
        assert!(t.remove(0x1000));
        assert_eq!(t.insert(0x1000, [1, 2, 3, 5]), Ok(2));
        assert_eq!(t.original(0x1000, 3), Some(5));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_lookup_racing_removes_and_revivals_never_sees_other_originals() {
        let t = VectorTable::new();
        assert_eq!(t.insert(0x1000, [1, 2, 3, 4]), Ok(0));
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..if cfg!(miri) { 20 } else { 10_000 } {
                    assert!(t.remove(0x1000));
                    // The other originals at the same address take a new
                    // slot once, then revive it.
                    let other = if round % 2 == 0 {
                        [1, 2, 3, 4]
                    } else {
                        [5, 6, 7, 8]
                    };
                    t.insert(0x1000, other).unwrap();
                }
            });
            s.spawn(|| {
                for _ in 0..if cfg!(miri) { 20 } else { 10_000 } {
                    let (a, b) = (t.original(0x1000, 0), t.original(0x1000, 3));
                    assert!(matches!(a, None | Some(1) | Some(5)), "{a:?}");
                    assert!(matches!(b, None | Some(4) | Some(8)), "{b:?}");
                }
            });
        });
        assert_eq!(t.len(), 2);
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
