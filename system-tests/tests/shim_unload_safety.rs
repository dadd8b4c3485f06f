//! What the shim must never do around unload, each against a rule taken
//! from XNU: use the core after freeing it (a hook entering between the
//! drain and the free), leave a faulting thread's UPL busy when a pagein
//! fails open, unload while another kext's hook still calls ours, and
//! write into (or trust) the vector of a filesystem that went away.
//! Each test loads the shim without its kauth listener (discovery by MAC
//! only, so the test decides when vectors are seen) and with a short
//! unload wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use maptrace_abi::EventKind;
use maptrace_abi::decode::{Decoder, Record};
use maptrace_sim::context::Vop;
use maptrace_sim::{Config, Cred, Proc, Sim, TraceOp, Violation, ViolationPolicy, map_flags, prot};
use maptrace_system_tests::{
    boot_collecting, boot_fs, drain, load, short_unload_wait, stats, vector_hooked,
    vectors_original,
};

const PAGE: u64 = 4096;

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
    let sim = boot_collecting(false);
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
    let sim = boot_collecting(false);
    let (p, a) = mapped(&sim, "/Volumes/hfs/c.bin");
    let v = fault_entering_at_core_shutdown(&sim, &p, a);
    assert!(v.is_empty(), "{v:#?}");
    assert!(!sim.kext_loaded());
}

#[test]
fn a_hook_entering_after_the_core_is_cleared_still_runs_the_filesystems_operation() {
    // A fault that read our entry before stop restored it and enters the
    // hook once the core is cleared, while stop still drains: it gets the
    // filesystem's own pagein from the shim's copy of the originals (it
    // failed open before: EIO, a SIGBUS on a Mac), and stop waits for it.
    let sim = boot_collecting(false);
    let (p, a) = mapped(&sim, HFS_FILE);
    let dispatch = sim.hold_dispatch(Vop::Pagein);
    let done = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let touched = std::thread::scope(|s| {
        let fault = s.spawn(|| {
            let r = p.touch(a, 1);
            done.store(true, Ordering::Release);
            r
        });
        assert!(dispatch.wait_held(1, Duration::from_secs(10)));
        let (done2, fired2) = (Arc::clone(&done), Arc::clone(&fired));
        // Stop's drain before the core is cleared polls three times (two
        // sleeps); the third sleep is the first poll of the drain after.
        sim.on_kext_sleep(2, move || {
            fired2.store(true, Ordering::Release);
            dispatch.release();
            wait_until("the late fault returned", || done2.load(Ordering::Acquire));
        });
        sim.unload_kext()
            .expect("unload once the late fault has returned");
        fault.join().expect("the fault thread")
    });
    assert!(
        fired.load(Ordering::Acquire),
        "the fault was let go in the drain"
    );
    let stats = touched.expect("the late fault is served by the filesystem");
    assert_eq!(stats.pageins, 1, "{stats:?}");
    assert!(
        sim.log_lines()
            .iter()
            .any(|l| l.contains("1 vnode operation(s) reached their filesystem untraced")),
        "{:?}",
        sim.log_lines()
    );
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    assert!(!sim.kext_loaded());
}

const HFS_FILE: &str = "/Volumes/hfs/c.bin";

/// Maps and unmaps one page of `path`: VNOP_MMAP then VNOP_MNOMAP.
fn map_unmap(p: &Proc, path: &str) {
    let fd = p.open(path).expect("open");
    let m = p
        .mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    p.munmap(m).expect("unmap");
    p.close(fd).expect("close");
}
const KERN_FAILURE: i32 = 5;

#[test]
fn unload_is_refused_while_another_kext_hooked_over_our_entries() {
    // The other kext saved our trampolines as its originals: unloading
    // would leave it calling unmapped code (bsd/vfs/kpi_vfs.c dispatches
    // through whatever is in the slot, xnu-11417.121.6).
    let sim = boot_collecting(false);
    let (p, a) = mapped(&sim, HFS_FILE);
    assert!(!vectors_original(&sim), "hfs hooked by the shim");
    let other = sim.foreign_hook(HFS_FILE).expect("the other kext hooks");
    p.touch(a, 1).expect("both hooks forward");
    let refused = sim.unload_kext();
    map_unmap(&p, HFS_FILE);
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(
        refused,
        Err(maptrace_sim::KextError::StopRefused(KERN_FAILURE))
    );
    assert!(sim.kext_loaded(), "stays loaded, tracing");
    assert!(
        sim.log_lines().iter().any(|l| l.contains("hooked over")),
        "{:?}",
        sim.log_lines()
    );
    // The other kext leaves: our trampolines are back in the slots, and
    // now the unload goes through and restores the filesystem's entries.
    assert_eq!(other.unhook(&sim), 0);
    sim.unload_kext()
        .expect("unload once the other kext is gone");
    assert!(vectors_original(&sim));
    map_unmap(&p, HFS_FILE);
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn unload_over_another_kexts_earlier_hook_puts_its_entries_back() {
    // The other kext hooked first; we hooked over it, so its trampolines
    // are our originals, and unload puts them back, not the filesystem's.
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    let other = sim.foreign_hook(HFS_FILE).expect("the other kext hooks");
    load(&sim, short_unload_wait(false)).expect("load");
    let (p, a) = mapped(&sim, HFS_FILE);
    p.touch(a, 1).expect("both hooks forward");
    assert_eq!(other.unhook(&sim), 3, "ours sits over its entries");
    sim.unload_kext().expect("unload");
    assert!(!vectors_original(&sim), "the other kext's hooks are back");
    map_unmap(&p, HFS_FILE);
    assert_eq!(other.unhook(&sim), 0);
    assert!(vectors_original(&sim));
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// Another kext's filesystem `fs` (`Sim::add_fs`) mounted on /Volumes/x
/// with one 8-page file, /Volumes/x/f. Returns its vector's address.
fn fs_with_file(sim: &Sim, fs: &str) -> usize {
    let vector = sim.add_fs(fs).expect("vfs_fsadd");
    sim.mount(fs, "/Volumes/x").expect("mount");
    sim.add_file("/Volumes/x/f", 8 * PAGE).expect("file");
    vector
}

/// Another kext's filesystem `fs` mounted on /Volumes/x with one file,
/// traced through the shim (mapped, faulted, unmapped), then unmounted and
/// removed (vfs_fsremove frees its vector). Returns the freed vector's
/// address.
fn trace_then_remove_fs(sim: &Sim, fs: &str) -> usize {
    let vector = fs_with_file(sim, fs);
    let p = sim.spawn("fsuser", 501);
    let fd = p.open("/Volumes/x/f").expect("open");
    let a = p
        .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    assert!(
        vector_hooked(sim, vector),
        "the other filesystem's vector is hooked"
    );
    p.touch(a, 1).expect("fault");
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
    p.exit();
    sim.unmount("/Volumes/x", false).expect("unmount");
    sim.remove_fs(fs).expect("vfs_fsremove once unmounted");
    vector
}

#[test]
fn unload_after_a_traced_filesystem_went_away_touches_no_freed_vector() {
    let sim = boot_collecting(false);
    trace_then_remove_fs(&sim, "xfs");
    sim.unload_kext().expect("unload");
    assert!(vectors_original(&sim));
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn a_new_vector_at_a_freed_vectors_address_is_hooked() {
    let sim = boot_collecting(false);
    let old = trace_then_remove_fs(&sim, "xfs");
    let new = sim.add_fs("yfs").expect("vfs_fsadd");
    assert_eq!(new, old, "the freed vector's memory is reused");
    sim.mount("yfs", "/Volumes/y").expect("mount");
    sim.add_file("/Volumes/y/g", 4 * PAGE).expect("file");
    let p = sim.spawn("fsuser", 501);
    let fd = p.open("/Volumes/y/g").expect("open");
    let a = p
        .mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    let hooked = vector_hooked(&sim, new);
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
    sim.unload_kext().expect("unload");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    assert!(hooked, "the new filesystem's vector is hooked");
    assert!(vectors_original(&sim));
}

#[test]
fn a_vector_no_mounted_filesystem_uses_keeps_the_kext_loaded() {
    // Unmounted without the MAC check (vfs_unmountbyfsid, a KPI) and then
    // removed: the kext cannot tell a freed vector from one of a type that
    // is registered but unmounted (whose next mount would still call our
    // trampolines), so it touches neither and stays loaded.
    let sim = boot_collecting(false);
    let vector = fs_with_file(&sim, "xfs");
    map_unmap(&sim.spawn("fsuser", 501), "/Volumes/x/f");
    assert!(vector_hooked(&sim, vector));
    sim.unmount_unchecked("/Volumes/x", false).expect("unmount");
    sim.remove_fs("xfs").expect("vfs_fsremove");
    assert_eq!(
        sim.unload_kext(),
        Err(maptrace_sim::KextError::StopRefused(KERN_FAILURE))
    );
    assert!(sim.kext_loaded(), "stays loaded, tracing");
    assert!(
        sim.log_lines()
            .iter()
            .any(|l| l.contains("not in use by a mounted filesystem")),
        "{:?}",
        sim.log_lines()
    );
    map_unmap(&sim.spawn("app", 501), HFS_FILE);
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn a_forced_unmount_of_the_last_mount_of_a_type_traces_its_last_unmaps() {
    // A file in use on the last mount of its type: the hooks stay through
    // the unmount, so vclean's VNOP_MNOMAP (the last unmap) is traced. The
    // vector then belongs to no live vnode and may be freed by
    // vfs_fsremove: the kext never touches it again and refuses to unload
    // (safe) rather than write into it.
    let sim = boot_collecting(false);
    let vector = fs_with_file(&sim, "xfs");
    let p = sim.spawn("fsuser", 501);
    let fd = p.open("/Volumes/x/f").expect("open");
    p.mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    assert!(vector_hooked(&sim, vector));
    let mut dec = Decoder::new();
    let _ = drain(&sim, &mut dec);
    sim.unmount("/Volumes/x", true).expect("forced unmount");
    let recs = drain(&sim, &mut dec);
    let mnomaps = recs.iter().filter(|r| r.kind == EventKind::Mnomap).count();
    assert_eq!(mnomaps, 1, "the forced unmount's last unmap is traced");
    sim.remove_fs("xfs").expect("vfs_fsremove");
    p.exit();
    assert_eq!(
        sim.unload_kext(),
        Err(maptrace_sim::KextError::StopRefused(KERN_FAILURE))
    );
    assert!(sim.kext_loaded(), "stays loaded, tracing");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn the_last_mount_of_a_type_with_nothing_in_use_is_unhooked_first() {
    // Nothing in use: no last unmap can come, so the MAC unmount check (the
    // last moment the filesystem is certainly registered) restores the
    // vector and forgets it; the type's removal then costs nothing.
    let sim = boot_collecting(false);
    let vector = fs_with_file(&sim, "xfs");
    map_unmap(&sim.spawn("fsuser", 501), "/Volumes/x/f");
    assert!(vector_hooked(&sim, vector));
    sim.unmount("/Volumes/x", false).expect("unmount");
    assert!(
        !vector_hooked(&sim, vector),
        "restored at the unmount check"
    );
    sim.remove_fs("xfs").expect("vfs_fsremove");
    sim.unload_kext().expect("unload");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// Vectors the core's table takes in one load (a removed slot comes back
/// only for its own address and originals, src/vectors.rs), and entries in the shim's append-only copy of
/// the originals (MT_SHADOW_MAX, kext-shim/src/mt_vnops.c).
const CORE_VECTORS: usize = maptrace_core::vectors::MAX_VECTORS;
const SHADOW_MAX: usize = 8 * CORE_VECTORS;

/// The kinds of `pid`'s MMAP, PAGEIN and MNOMAP records, sorted.
fn vnop_kinds(recs: &[Record], pid: i32) -> Vec<EventKind> {
    let mut kinds: Vec<EventKind> = recs
        .iter()
        .filter(|r| r.pid == pid as u32)
        .filter(|r| {
            matches!(
                r.kind,
                EventKind::Mmap | EventKind::Pagein | EventKind::Mnomap
            )
        })
        .map(|r| r.kind)
        .collect();
    kinds.sort_unstable();
    kinds
}

/// The same kinds for `pid`'s VNOP_MMAP, VNOP_PAGEIN and VNOP_MNOMAP that
/// reached the filesystem (the simulator's ground truth), sorted.
fn vnops_reached(sim: &Sim, pid: i32) -> Vec<EventKind> {
    let mut kinds: Vec<EventKind> = sim
        .trace()
        .iter()
        .filter(|t| t.pid == pid)
        .filter_map(|t| match t.op {
            TraceOp::Mmap => Some(EventKind::Mmap),
            TraceOp::Pagein => Some(EventKind::Pagein),
            TraceOp::Mnomap => Some(EventKind::Mnomap),
            _ => None,
        })
        .collect();
    kinds.sort_unstable();
    kinds
}

#[test]
fn vectors_past_the_kexts_tables_stay_unhooked_and_untraced() {
    // Filesystem types that stay registered (a removed one's vector comes
    // back at the same address with the same originals), each mounted, its
    // vector seen by an open, then unmounted. Every new vector takes an
    // entry in the copy of the originals before the core's insert, so the
    // core's table fills first (the 65th vector: the core refuses it), and
    // from the 513th on the copy is full and refuses it itself. A refused
    // vector stays unhooked, counted as an error; those hooked before keep
    // tracing.
    let sim = boot_collecting(false);
    // Hooks hfs.
    map_unmap(&sim.spawn("traced", 501), HFS_FILE);
    let hooked_before = sim
        .kernel()
        .vfs
        .live_vectors()
        .iter()
        .filter(|(a, _)| vector_hooked(&sim, *a))
        .count();
    let p = sim.spawn("fsuser", 501);
    let mut errors = stats(&sim, Cred::Root).errors;
    // Three past the copy's limit.
    for i in hooked_before..SHADOW_MAX + 3 {
        let fs = format!("fs{i}");
        let vector = fs_with_file(&sim, &fs);
        let fd = p.open("/Volumes/x/f").expect("open");
        p.close(fd).expect("close");
        let st = stats(&sim, Cred::Root);
        if i < CORE_VECTORS {
            assert!(vector_hooked(&sim, vector), "{fs} hooked");
            assert_eq!(st.errors, errors, "{fs}");
        } else {
            assert!(!vector_hooked(&sim, vector), "{fs} past the tables");
            assert!(st.errors > errors, "{fs}: the refusal is counted");
        }
        assert_eq!(st.vectors_patched as usize, i.min(CORE_VECTORS - 1) + 1);
        errors = st.errors;
        sim.unmount("/Volumes/x", false).expect("unmount");
        assert!(!vector_hooked(&sim, vector), "{fs} unhooked at unmount");
    }

    // One more refused vector: its operations reach the filesystem, and
    // nothing of them is traced.
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let vector = fs_with_file(&sim, "full");
    let q = sim.spawn("untraced", 501);
    let fd = q.open("/Volumes/x/f").expect("open");
    let a = q
        .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    assert!(!vector_hooked(&sim, vector), "not hooked");
    let touched = q.touch(a, 1).expect("the filesystem serves the fault");
    assert_eq!(touched.pageins, 1, "{touched:?}");
    q.munmap(a).expect("unmap");
    q.close(fd).expect("close");
    let reached = vnops_reached(&sim, q.pid());
    for kind in [EventKind::Mmap, EventKind::Pagein, EventKind::Mnomap] {
        assert!(reached.contains(&kind), "{kind:?} reached the filesystem");
    }
    let recs = drain(&sim, &mut dec);
    assert_eq!(vnop_kinds(&recs, q.pid()), [], "{recs:?}");
    assert!(stats(&sim, Cred::Root).errors > errors);
    sim.unmount("/Volumes/x", false).expect("unmount");

    // hfs, hooked before the tables filled, still traces all of it.
    let t = sim.spawn("traced-after", 501);
    map_unmap(&t, HFS_FILE);
    let reached = vnops_reached(&sim, t.pid());
    assert!(reached.contains(&EventKind::Mmap) && reached.contains(&EventKind::Mnomap));
    assert_eq!(vnop_kinds(&drain(&sim, &mut dec), t.pid()), reached);

    // Said once, naming the first type refused: errors alone say neither.
    let said: Vec<String> = sim
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("no room for another vnode-op vector"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains(&format!("filesystem type \"fs{CORE_VECTORS}\"")),
        "{said:?}"
    );

    sim.unload_kext().expect("unload");
    assert!(vectors_original(&sim));
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}
