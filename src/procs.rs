//! Which pids' names the reader has already been given (PROC records).
//!
//! The shim asks [`ProcCache::claim`] on each recorded event; only a miss
//! costs it a `proc_selfname` and a PROC record. A direct-mapped table of
//! `pid % SLOTS`: a collision evicts, which only repeats a PROC record.
//!
//! # Invariants
//!
//! * An entry is `epoch << 32 | pid` for the epoch in which that pid's PROC
//!   record was handed to the ring, or 0 (empty). Bumping the epoch
//!   ([`ProcCache::invalidate`]: after a config write) makes every entry
//!   stale, so every pid is named again after it.
//! * A pid whose PROC record the ring dropped is forgotten
//!   ([`ProcCache::forget`], by `Engine::record_proc`): its next event
//!   names it again. Other drops lose no name (the ring drops the newest
//!   record, never one already in it), so they leave the table alone.
//! * Lock-free: one load of the epoch and one load (a miss: one swap) of an
//!   entry. Two threads of one pid may both miss: two PROC records, harmless.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Entries in the table.
pub const SLOTS: usize = 256;

/// The table. `mt_core_init` writes it in place, entry by entry.
pub struct ProcCache {
    pub(crate) epoch: AtomicU32,
    pub(crate) slots: [AtomicU64; SLOTS],
}

impl ProcCache {
    /// An empty table (host use; the kext builds it in place).
    pub fn new() -> ProcCache {
        ProcCache {
            epoch: AtomicU32::new(1),
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn entry(&self, pid: u32) -> (Option<&AtomicU64>, u64) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let want = (u64::from(epoch) << 32) | u64::from(pid);
        (self.slots.get(pid as usize % SLOTS), want)
    }

    /// Whether `pid`'s name must be recorded now; a `true` marks it named.
    #[inline]
    pub fn claim(&self, pid: u32) -> bool {
        let (Some(slot), want) = self.entry(pid) else {
            return false;
        };
        slot.load(Ordering::Relaxed) != want && slot.swap(want, Ordering::Relaxed) != want
    }

    /// Forgets `pid` (it exec'd: a new name; or its PROC record was
    /// dropped), so its next event names it.
    pub fn forget(&self, pid: u32) {
        if let (Some(slot), want) = self.entry(pid) {
            let _ = slot.compare_exchange(want, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Makes every entry stale: every pid is named again.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for ProcCache {
    fn default() -> ProcCache {
        ProcCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_named_once_until_forgotten_or_invalidated() {
        let c = ProcCache::new();
        assert!(c.claim(42));
        assert!(!c.claim(42));
        c.forget(42);
        assert!(c.claim(42));
        assert!(!c.claim(42));
        c.invalidate();
        assert!(c.claim(42));
        // A colliding pid evicts; the first is named again.
        assert!(c.claim(42 + SLOTS as u32));
        assert!(c.claim(42));
        // Forgetting another pid of the same slot changes nothing.
        c.forget(42 + SLOTS as u32);
        assert!(!c.claim(42));
    }
}
