//! A loom model of the shim's hook counters and the unload drain, in the C's
//! own steps (the C is the source of truth: `kext-shim/src/mt_shim.h`
//! `struct mt_hook_slot`, `mt_enter`, `mt_core_ref`, `mt_leave`,
//! `mt_hooks_inside`; `kext-shim/src/mt_vnops.c` `mt_shadow_original`;
//! `kext-shim/src/mt_main.c` `mt_stop_all` steps 6-7).
//!
//! Hooks enter on one CPU's slot and leave on another CPU (a migration),
//! counting their leave on the slot they entered on, and race stop, which clears the core pointer, waits until the counters say no
//! hook is inside, then frees the core's memory. Loom explores every
//! interleaving and checks that no hook that found the core reads its memory
//! after (or unordered with) the free, that no hook that found the core
//! cleared but the shim's copy of the originals open (it calls the
//! filesystem from the kext's code) runs after the kext is unmapped, and
//! that the drain's count never goes below zero.
//!
//! loom treats `SeqCst` loads, stores and RMWs as `AcqRel` (its README,
//! "Limitations") but models `fence(SeqCst)`. The C relies on the total
//! order of its seq_cst operations (the hook's entry count before its load of
//! the core, stop's NULL store before its scan); the model puts a `SeqCst`
//! fence between those two operations on each side, which is what that
//! order gives this store-then-load (Dekker) pattern.
//!
//! Two variants that the C does not use are checked to FAIL (loom reports the
//! hook's read of the core unordered with the free), so the model is seen to
//! catch what it is for: one signed counter per slot summed in one
//! pass, decremented on the CPU the hook leaves on (a migrating hook
//! cancels a hook still inside), the protocol
//! without the seq_cst order (a hook that found the core is not counted),
//! and a stop that closes the copy without waiting once more (a hook that
//! found it open runs unmapped code).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_drain`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Counter slots (CPUs); two are enough for a migration.
const SLOTS: usize = 2;
/// The core's memory while it is allocated, and after the free.
const LIVE: u64 = 0x11fe;
const FREED: u64 = 0xdead;

/// How a variant of the protocol counts.
#[derive(Clone, Copy, PartialEq)]
enum Counting {
    /// The C: monotonic enters and leaves per slot, a hook's leave on the
    /// slot of its entry; leaves read first.
    EntersAndLeaves,
    /// Not the C: one in-flight counter per slot (+1 on entry, -1 on exit on
    /// the CPU of the exit), summed in one pass.
    SignedPerSlot,
}

/// `mt_g`'s part that the protocol uses.
struct Shim {
    enters: [AtomicU64; SLOTS],
    leaves: [AtomicU64; SLOTS],
    /// `mt_g.core`: 0 is NULL.
    core: AtomicUsize,
    /// What the core pointer points to; stop's free writes it.
    mem: UnsafeCell<u64>,
    /// `mt_shadow_closed`: 0 while a hook may use the copy.
    shadow_closed: AtomicUsize,
    /// The kext's code, which a hook on the copy's path returns into;
    /// unmapped once stop returns.
    text: UnsafeCell<u64>,
    counting: Counting,
    /// Whether the seq_cst order of entry/load and store/scan is modelled.
    ordered: bool,
    /// Whether stop waits again after closing the copy.
    last_wait: bool,
}

impl Shim {
    fn new(counting: Counting, ordered: bool, last_wait: bool) -> Shim {
        Shim {
            enters: [AtomicU64::new(0), AtomicU64::new(0)],
            leaves: [AtomicU64::new(0), AtomicU64::new(0)],
            core: AtomicUsize::new(1),
            mem: UnsafeCell::new(LIVE),
            shadow_closed: AtomicUsize::new(0),
            text: UnsafeCell::new(LIVE),
            counting,
            ordered,
            last_wait,
        }
    }

    /// `mt_enter` on `cpu`, then `mt_core_ref`.
    fn enter(&self, cpu: usize) -> usize {
        self.enters[cpu].fetch_add(1, Ordering::SeqCst);
        if self.ordered {
            fence(Ordering::SeqCst);
        }
        self.core.load(Ordering::SeqCst)
    }

    /// `mt_leave(slot)` of a hook that entered on `slot` and runs on `cpu`
    /// (release: the hook's use of the core is before it).
    fn leave(&self, slot: usize, cpu: usize) {
        match self.counting {
            Counting::EntersAndLeaves => self.leaves[slot].fetch_add(1, Ordering::Release),
            // -1 as a wrapping add: the slot may go "negative".
            Counting::SignedPerSlot => self.enters[cpu].fetch_add(u64::MAX, Ordering::Release),
        };
    }

    /// `mt_hooks_inside`: every leaves before any enters.
    fn inside(&self) -> u64 {
        let leaves = match self.counting {
            Counting::EntersAndLeaves => self
                .leaves
                .iter()
                .fold(0u64, |s, c| s.wrapping_add(c.load(Ordering::Acquire))),
            Counting::SignedPerSlot => 0,
        };
        let enters = self
            .enters
            .iter()
            .fold(0u64, |s, c| s.wrapping_add(c.load(Ordering::SeqCst)));
        let n = enters.wrapping_sub(leaves);
        if self.counting == Counting::EntersAndLeaves {
            // Every hook whose leave was counted had its entry counted.
            assert!(
                enters >= leaves,
                "the drain counted a leave before its entry"
            );
        }
        n
    }

    /// One hook: enters on `from`, uses the core if it found one, else
    /// calls the filesystem from the copy if it is open, and leaves while
    /// running on `to`.
    fn hook(&self, from: usize, to: usize) {
        if self.enter(from) != 0 {
            // SAFETY: the model's cell; loom checks the access is ordered
            // against the free.
            let v = self.mem.with(|p| unsafe { *p });
            assert_eq!(v, LIVE, "a hook read the freed core");
        } else if self.shadow_closed.load(Ordering::SeqCst) == 0 {
            // SAFETY: the model's cell; loom checks the return into the
            // kext's code is ordered before the unmap.
            let v = self.text.with(|p| unsafe { *p });
            assert_eq!(v, LIVE, "a hook ran unmapped code");
        }
        self.leave(from, to);
    }

    /// `mt_wait_drained`, unbounded.
    fn wait(&self) {
        while self.inside() != 0 {
            loom::thread::yield_now();
        }
    }

    /// `mt_stop_all` 6-7: clear the core, wait until no hook is inside,
    /// close the copy, wait again, free; then the kext is unmapped.
    fn stop(&self) {
        self.core.store(0, Ordering::SeqCst);
        if self.ordered {
            fence(Ordering::SeqCst);
        }
        self.wait();
        self.shadow_closed.store(1, Ordering::SeqCst);
        if self.ordered {
            fence(Ordering::SeqCst);
        }
        if self.last_wait {
            self.wait();
        }
        // SAFETY: the model's cells; loom reports a hook access not
        // ordered before these writes.
        self.mem.with_mut(|p| unsafe { *p = FREED });
        self.text.with_mut(|p| unsafe { *p = FREED });
    }
}

/// Two hooks, each migrating between entry and exit (in opposite
/// directions), racing stop from its first step.
fn model(counting: Counting, ordered: bool, last_wait: bool) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let shim = Arc::new(Shim::new(counting, ordered, last_wait));
        let hooks: Vec<_> = [(0, 1), (1, 0)]
            .into_iter()
            .map(|(from, to)| {
                let shim = shim.clone();
                loom::thread::spawn(move || shim.hook(from, to))
            })
            .collect();
        shim.stop();
        for h in hooks {
            h.join().unwrap();
        }
        // Every hook counted and gone.
        assert_eq!(shim.inside(), 0);
    });
}

#[test]
fn the_drain_waits_for_every_hook_that_found_the_core_even_a_migrating_one() {
    model(Counting::EntersAndLeaves, true, true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn one_signed_counter_per_slot_lets_a_migrating_hook_hide_one_inside() {
    model(Counting::SignedPerSlot, true, true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn without_the_seq_cst_order_a_hook_that_found_the_core_is_missed() {
    model(Counting::EntersAndLeaves, false, true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn closing_the_originals_copy_without_a_last_wait_lets_a_hook_run_unmapped_code() {
    model(Counting::EntersAndLeaves, true, false);
}
