//! What the shim must never do around unload, each against a rule taken
//! from XNU: use the core after freeing it (a hook entering between the
//! drain and the free), leave a faulting thread's UPL busy when a pagein
//! fails open, unload while another kext's hook still calls ours, and
//! write into (or trust) the vector of a filesystem that went away.

mod shim_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use maptrace_sim::context::Vop;
use maptrace_sim::{Config, Proc, Sim, Violation, ViolationPolicy, map_flags, prot};
use shim_support::{Tunables, boot_fs, load};

const PAGE: u64 = 4096;

/// A simulator collecting violations, the shim loaded (discovery by MAC
/// only, so the test decides when vectors are seen) with a short unload
/// wait.
fn boot() -> Sim {
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    load(
        &sim,
        Tunables {
            kauth: false,
            unload_wait_ms: 100,
            ..Tunables::default()
        },
    )
    .expect("load");
    sim
}

/// `path` opened and mapped (8 pages) by a new process.
fn mapped(sim: &Sim, path: &str) -> (Proc, u64) {
    let p = sim.spawn("app", 501);
    let fd = p.open(path).expect("open");
    let a = p
        .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    (p, a)
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs a fault on `a` that reads its vector entry before the unload
/// restores it and calls it at the moment stop calls `mt_core_shutdown`
/// (after the drain, before the free); unloads; returns the violations
/// and the fault's result.
fn fault_entering_at_core_shutdown(sim: &Sim, p: &Proc, a: u64) -> Vec<Violation> {
    let dispatch = sim.hold_dispatch(Vop::Pagein);
    let vnop = Arc::new(sim.hold_vnop(Vop::Pagein));
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let fault = s.spawn(|| {
            let r = p.touch(a, 1);
            done.store(true, Ordering::Release);
            r
        });
        assert!(dispatch.wait_held(1, Duration::from_secs(10)));
        let (vnop2, done2) = (Arc::clone(&vnop), Arc::clone(&done));
        sim.on_core_shutdown(move || {
            dispatch.release();
            // The fault either runs into the filesystem (a hook in flight)
            // or fails open and returns.
            wait_until("the late fault entered the hook", || {
                vnop2.held() == 1 || done2.load(Ordering::Acquire)
            });
        });
        let unloaded = sim.unload_kext();
        drop(vnop);
        let _ = fault.join().expect("the fault thread");
        if unloaded.is_err() {
            // Refused while the late hook was in flight: it has left now.
            sim.unload_kext().expect("a later unload succeeds");
        }
    });
    sim.take_violations()
}

#[test]
fn a_hook_entering_between_the_drain_and_the_free_never_uses_the_freed_core() {
    // apfs (PAGEINV2): no UPL, so only the core's lifetime is under test.
    let sim = boot();
    let (p, a) = mapped(&sim, "/data/a.bin");
    let v = fault_entering_at_core_shutdown(&sim, &p, a);
    assert!(v.is_empty(), "{v:#?}");
    assert!(!sim.kext_loaded());
}

#[test]
fn a_pagein_that_fails_open_releases_the_faulting_threads_upl() {
    // hfs (no PAGEINV2): vnode_pagein hands the hook a UPL and aborts it
    // itself only for EAGAIN/EPERM (bsd/vm/vnode_pager.c, xnu-11417.121.6).
    // A fault entering after the core is cleared fails open with EIO.
    let sim = boot();
    let (p, a) = mapped(&sim, "/Volumes/hfs/c.bin");
    let v = fault_entering_at_core_shutdown(&sim, &p, a);
    assert!(v.is_empty(), "{v:#?}");
    assert!(!sim.kext_loaded());
}
