//! A memo of vnode ids: page-in storms hit the same few vnodes over and
//! over, and the keyed hash ([`VnodeIdKey::id`]) is the largest part of a
//! record's cost. An id is a pure function of (address, vid, key), so a
//! remembered id is as good as a fresh one — as long as it is never
//! returned for another pair or key.
//!
//! A direct-mapped table of [`SLOTS`] entries, indexed by a multiplicative
//! mix of the address. A collision evicts: the next lookup of the evicted
//! vnode hashes again. Nothing here leaves the kernel: the table holds
//! addresses, but only ids come out.
//!
//! # Invariants
//!
//! * Each entry is a seqlock: `seq` is odd while one writer updates the
//!   entry's fields and even otherwise; every completed write adds 2.
//!   A writer must win a CAS (Acquire) from an even `seq` to `seq + 1`
//!   before it touches a field, and a writer that loses (or sees an odd
//!   `seq`) skips caching: the memo is lossy, and no writer ever waits.
//!   Writes to an entry are thus serialised, each after the previous one's
//!   stores (its Release of the even `seq`).
//! * A reader returns an entry's id only if it read the same even `seq`
//!   before and after reading the fields (an acquire fence between the
//!   field loads and the second `seq` load). A write that overlapped the
//!   reads changed `seq`, so a torn entry — fields from two writes — is a
//!   miss, never a wrong id. `seq` is 64 bits: it does not wrap.
//! * An entry stores the address, `tag = epoch << 32 | vid` and the id the
//!   key gave that pair. The epoch names the key (the engine derives it
//!   from the per-load random generation), so an entry written under
//!   another key does not match (unless two generations share an epoch,
//!   2^-32). In the kext no entry outlives its key anyway: `mt_core_init`
//!   writes every entry empty on every load.
//! * Address 0 is "no vnode": never looked up (its id is 0) and the value
//!   of an empty entry, which therefore never matches.
//! * Lock-free and allocation-free: a hit is two loads of `seq` and three
//!   field loads; a miss adds the hash, one CAS and four stores.

use crate::sync::{AtomicU64, Ordering, fence};
use crate::vnode_id::VnodeIdKey;

/// Entries in the table (a power of two).
pub const SLOTS: usize = 256;
const INDEX_BITS: u32 = SLOTS.trailing_zeros();

/// One memo entry (public for the loom model in `tests/loom_memo.rs`).
pub struct MemoEntry {
    pub(crate) seq: AtomicU64,
    pub(crate) addr: AtomicU64,
    pub(crate) tag: AtomicU64,
    pub(crate) id: AtomicU64,
}

/// What an entry's tag word holds for `vid` under `epoch`.
#[inline(always)]
fn tag_of(vid: u32, epoch: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(vid)
}

impl MemoEntry {
    /// An empty entry.
    pub fn new() -> MemoEntry {
        MemoEntry {
            seq: AtomicU64::new(0),
            addr: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            id: AtomicU64::new(0),
        }
    }

    /// The id remembered for (`addr`, `vid`) under `epoch`, if this entry
    /// holds it, read consistently.
    #[inline(always)]
    pub fn get(&self, addr: u64, vid: u32, epoch: u32) -> Option<u64> {
        self.read(addr, vid, epoch, true)
    }

    /// [`get`](Self::get) without the second `seq` check: wrong under
    /// concurrent writes. Exists only so the loom model can show that the
    /// recheck is what makes the memo correct.
    #[cfg(loom)]
    pub fn get_without_recheck(&self, addr: u64, vid: u32, epoch: u32) -> Option<u64> {
        self.read(addr, vid, epoch, false)
    }

    #[inline(always)]
    fn read(&self, addr: u64, vid: u32, epoch: u32, recheck: bool) -> Option<u64> {
        let before = self.seq.load(Ordering::Acquire);
        let stored_addr = self.addr.load(Ordering::Relaxed);
        let tag = self.tag.load(Ordering::Relaxed);
        let id = self.id.load(Ordering::Relaxed);
        // Orders the field loads before the recheck: if any of them saw a
        // later write's store, the recheck sees that write's odd seq (or
        // later).
        fence(Ordering::Acquire);
        let consistent = !recheck || self.seq.load(Ordering::Relaxed) == before;
        (before & 1 == 0 && consistent && stored_addr == addr && tag == tag_of(vid, epoch))
            .then_some(id)
    }

    /// Remembers `id` for (`addr`, `vid`) under `epoch`, unless another
    /// writer holds the entry (then nothing is cached).
    #[inline]
    pub fn put(&self, addr: u64, vid: u32, epoch: u32, id: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 != 0
            || self
                .seq
                .compare_exchange(
                    seq,
                    seq.wrapping_add(1),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        // The CAS is Acquire so the previous writer's field stores (published
        // by its even seq) happen before ours: with a Relaxed CAS one of
        // theirs could land after ours and leave a torn entry under an even
        // seq (the loom model's two-writer case).
        //
        // The fence orders the odd seq before our field stores: a reader
        // that sees any of them also sees a seq other than its first.
        fence(Ordering::Release);
        self.addr.store(addr, Ordering::Relaxed);
        self.tag.store(tag_of(vid, epoch), Ordering::Relaxed);
        self.id.store(id, Ordering::Relaxed);
        // Publishes the fields with the even seq that ends the write.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

impl Default for MemoEntry {
    fn default() -> MemoEntry {
        MemoEntry::new()
    }
}

/// The table. `mt_core_init` writes it in place, entry by entry.
pub struct IdMemo {
    pub(crate) entries: [MemoEntry; SLOTS],
}

impl IdMemo {
    /// An empty table (host use; the kext builds it in place).
    pub fn new() -> IdMemo {
        IdMemo {
            entries: core::array::from_fn(|_| MemoEntry::new()),
        }
    }

    /// The entry `addr` maps to: the top bits of a multiplicative mix, so
    /// neighbouring vnodes of a zone spread over the table.
    #[inline(always)]
    fn entry(&self, addr: u64) -> Option<&MemoEntry> {
        let mixed = addr.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.entries.get((mixed >> (64 - INDEX_BITS)) as usize)
    }

    /// The id of the vnode at `addr` in incarnation `vid` under `key`
    /// (named by `epoch`): [`VnodeIdKey::id`], remembered.
    #[inline]
    pub fn id(&self, key: &VnodeIdKey, epoch: u32, addr: u64, vid: u32) -> u64 {
        if addr == 0 {
            return 0;
        }
        let Some(entry) = self.entry(addr) else {
            return key.id(addr, vid);
        };
        if let Some(id) = entry.get(addr, vid, epoch) {
            return id;
        }
        let id = key.id(addr, vid);
        entry.put(addr, vid, epoch, id);
        id
    }
}

impl Default for IdMemo {
    fn default() -> IdMemo {
        IdMemo::new()
    }
}

/// The memo epoch of a load's generation: both halves, so two loads whose
/// generations differ in either half get different epochs.
#[inline]
pub const fn epoch_of(generation: u64) -> u32 {
    (generation ^ (generation >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: u64 = 0xffff_ff80_1234_5678;

    /// Another address mapping to `addr`'s entry.
    fn collider(m: &IdMemo, addr: u64) -> u64 {
        let target = m.entry(addr).map(core::ptr::from_ref);
        (1..)
            .map(|i| addr + i * 256)
            .find(|&a| m.entry(a).map(core::ptr::from_ref) == target)
            .unwrap()
    }

    #[test]
    fn a_remembered_id_is_the_keyed_id() {
        let key = VnodeIdKey::new([1, 2]);
        let m = IdMemo::new();
        for addr in [ADDR, ADDR + 256, 0x1000, u64::MAX] {
            for vid in [0, 3, u32::MAX] {
                assert_eq!(m.id(&key, 7, addr, vid), key.id(addr, vid), "miss");
                assert_eq!(
                    m.entry(addr).unwrap().get(addr, vid, 7),
                    Some(key.id(addr, vid))
                );
                assert_eq!(m.id(&key, 7, addr, vid), key.id(addr, vid), "hit");
            }
        }
        assert_eq!(m.id(&key, 7, 0, 3), 0);
    }

    #[test]
    fn a_new_vid_is_a_miss_not_the_old_id() {
        let key = VnodeIdKey::new([1, 2]);
        let m = IdMemo::new();
        let old = m.id(&key, 7, ADDR, 3);
        let e = m.entry(ADDR).unwrap();
        assert_eq!(e.get(ADDR, 4, 7), None);
        let new = m.id(&key, 7, ADDR, 4);
        assert_ne!(old, new);
        assert_eq!(new, key.id(ADDR, 4));
    }

    #[test]
    fn a_key_change_with_its_epoch_never_returns_the_old_keys_ids() {
        let (a, b) = (VnodeIdKey::new([1, 2]), VnodeIdKey::new([3, 4]));
        let m = IdMemo::new();
        let (ea, eb) = (
            epoch_of(0x1111_2222_3333_4444),
            epoch_of(0x5555_6666_7777_8888),
        );
        assert_ne!(ea, eb);
        assert_eq!(m.id(&a, ea, ADDR, 3), a.id(ADDR, 3));
        assert_eq!(m.entry(ADDR).unwrap().get(ADDR, 3, eb), None);
        assert_eq!(m.id(&b, eb, ADDR, 3), b.id(ADDR, 3));
        assert_ne!(a.id(ADDR, 3), b.id(ADDR, 3));
    }

    #[test]
    fn colliding_vnodes_evict_each_other_and_keep_their_own_ids() {
        let key = VnodeIdKey::new([1, 2]);
        let m = IdMemo::new();
        let other = collider(&m, ADDR);
        let e = m.entry(ADDR).unwrap();
        assert_eq!(m.id(&key, 7, ADDR, 3), key.id(ADDR, 3));
        assert_eq!(m.id(&key, 7, other, 3), key.id(other, 3));
        assert_eq!(e.get(ADDR, 3, 7), None, "evicted");
        assert_eq!(e.get(other, 3, 7), Some(key.id(other, 3)));
        assert_eq!(m.id(&key, 7, ADDR, 3), key.id(ADDR, 3));
    }

    #[test]
    fn an_entry_being_written_is_a_miss_and_is_not_taken_over() {
        let e = MemoEntry::new();
        e.put(ADDR, 3, 7, 42);
        assert_eq!(e.get(ADDR, 3, 7), Some(42));
        // A writer stopped mid-write: odd seq.
        e.seq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(e.get(ADDR, 3, 7), None);
        e.put(ADDR + 8, 3, 7, 43);
        assert_eq!(
            e.addr.load(Ordering::Relaxed),
            ADDR,
            "a second writer skips"
        );
        // The write ends: the entry serves again.
        e.seq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(e.get(ADDR, 3, 7), Some(42));
    }

    #[test]
    fn epochs_use_both_halves_of_the_generation() {
        assert_ne!(epoch_of(1), epoch_of(1 << 32 | 1));
        assert_ne!(epoch_of(1 << 32), epoch_of(0));
    }
}
