//! How many kext calls (hooks, callbacks, handlers) threads are inside right
//! now, for the unload detector (`kext::check_left_kext_code`): a model's
//! bookkeeping, not an XNU structure.
//!
//! Each thread counts on a slot of its own, alone on its cache line.
//! INVARIANT: only the slot's owner thread writes `calls`, so entering and
//! leaving are a load and a store; no locked read-modify-write, whose full
//! barrier (x86) made every hook wait for the stores it had made. The
//! detector sums every slot of the kernel: a thread inside during the whole
//! sum is counted by its own slot, wherever it runs.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;

/// One thread's count.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot {
    /// Kext calls the owner is inside (nested ones each count).
    calls: AtomicUsize,
    /// A live thread owns the slot (cleared when it exits).
    owned: AtomicBool,
}

/// The per-thread counts of one booted kernel.
#[derive(Debug, Default)]
pub struct InKext {
    /// Every slot handed out in this boot; kept until the kernel drops (a
    /// thread's cached pointer relies on it), reused once its thread exited.
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// Where the calling thread counts: `enter`'s answer, for `leave`.
#[derive(Clone, Copy, Debug)]
pub struct Entered<'a>(&'a Slot);

/// The slots the calling thread owns, given back when it exits.
struct Owned(RefCell<Vec<Arc<Slot>>>);

impl Drop for Owned {
    fn drop(&mut self) {
        // A kext call from a later thread-local destructor registers
        // afresh (and keeps that slot: it is never given back).
        MINE.with(|c| c.set((0, std::ptr::null())));
        for s in self.0.get_mut().drain(..) {
            s.owned.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    /// The calling thread's slot in the kernel of boot `.0` (0: none yet).
    static MINE: Cell<(u64, *const Slot)> = const { Cell::new((0, std::ptr::null())) };
    static OWNED: Owned = const { Owned(RefCell::new(Vec::new())) };
}

impl InKext {
    /// Counts the calling thread into one more kext call of the kernel of
    /// `boot` (the kernel owning `self`).
    #[inline]
    pub fn enter(&self, boot: u64) -> Entered<'_> {
        let (b, p) = MINE.with(Cell::get);
        let slot = if b == boot && !p.is_null() {
            // SAFETY: `p` was handed out by this kernel (boot ids are never
            // reused), whose `slots` keeps its `Arc` while `self` lives.
            unsafe { &*p }
        } else {
            self.register(boot)
        };
        // Only this thread writes it (see the module's invariant).
        let n = slot.calls.load(Ordering::Relaxed);
        slot.calls.store(n + 1, Ordering::Release);
        Entered(slot)
    }

    /// Counts the calling thread out of the kext call `e` entered.
    #[inline]
    pub fn leave(&self, e: Entered<'_>) {
        let n = e.0.calls.load(Ordering::Relaxed);
        // Release: what the call did happens before a sum that sees it gone.
        e.0.calls.store(n.saturating_sub(1), Ordering::Release);
    }

    /// Kext calls threads are inside right now.
    pub fn total(&self) -> usize {
        lock(&self.slots)
            .iter()
            .map(|s| s.calls.load(Ordering::Acquire))
            .sum()
    }

    /// Gives the calling thread a slot of this kernel: once per thread and
    /// boot.
    #[cold]
    fn register(&self, boot: u64) -> &Slot {
        let mut slots = lock(&self.slots);
        // A slot whose thread exited outside kext code; one that died
        // inside keeps counting.
        let free = slots
            .iter()
            .find(|s| !s.owned.load(Ordering::Acquire) && s.calls.load(Ordering::Acquire) == 0)
            .cloned();
        let slot = free.unwrap_or_else(|| {
            let s = Arc::new(Slot::default());
            slots.push(Arc::clone(&s));
            s
        });
        slot.owned.store(true, Ordering::Release);
        let p = Arc::as_ptr(&slot);
        // Fails only while the thread exits: the slot then stays owned.
        let _ = OWNED.try_with(|o| {
            let mut o = o.0.borrow_mut();
            // Slots of kernels gone (only this list still holds them).
            o.retain(|s| Arc::strong_count(s) > 1);
            o.push(slot);
        });
        MINE.with(|c| c.set((boot, p)));
        drop(slots);
        // SAFETY: `p` is in `self.slots`, which keeps it while `self` lives.
        unsafe { &*p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nested_calls_and_each_thread_on_its_own_slot() {
        let k = InKext::default();
        let outer = k.enter(7);
        let inner = k.enter(7);
        assert_eq!(k.total(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let e = k.enter(7);
                assert_eq!(k.total(), 3, "another thread's calls add up");
                k.leave(e);
            });
        });
        assert_eq!(k.total(), 2);
        k.leave(inner);
        k.leave(outer);
        assert_eq!(k.total(), 0);
        assert_eq!(lock(&k.slots).len(), 2);
    }

    #[test]
    fn a_new_boot_gives_the_thread_a_new_slot() {
        let old = InKext::default();
        let e = old.enter(11);
        let new = InKext::default();
        // The thread's cached slot is the old boot's: not used here.
        let f = new.enter(12);
        assert_eq!((old.total(), new.total()), (1, 1));
        new.leave(f);
        old.leave(e);
        assert_eq!((old.total(), new.total()), (0, 0));
    }

    #[test]
    fn an_exited_threads_slot_is_reused_unless_it_died_inside() {
        let k = InKext::default();
        // Joined explicitly: the OS thread's join returns after its
        // thread-locals are gone (the scope's own wait may return before).
        std::thread::scope(|s| {
            s.spawn(|| {
                let e = k.enter(21);
                k.leave(e);
            })
            .join()
            .unwrap();
            // Dies inside: its slot keeps counting and is not reused.
            s.spawn(|| {
                let _ = k.enter(21);
            })
            .join()
            .unwrap();
        });
        assert_eq!(
            lock(&k.slots).len(),
            1,
            "the first thread's slot was reused"
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                let e = k.enter(21);
                assert_eq!(k.total(), 2);
                k.leave(e);
            })
            .join()
            .unwrap();
        });
        assert_eq!(lock(&k.slots).len(), 2);
        assert_eq!(k.total(), 1);
    }
}
