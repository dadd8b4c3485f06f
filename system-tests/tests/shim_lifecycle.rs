//! Load, unload and layout discovery of the real shim on the simulator:
//! both count methods, start failures that leave nothing behind, 100
//! load/unload cycles under load with no call into unloaded code and nothing
//! left behind, and the refused unload while each vnode-op hook is stuck in
//! a filesystem (the kext stays and keeps tracing), and an unload that waits
//! for an events read held in copyout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_abi::{EventKind, ProbeMethod, raw};
use maptrace_sim::context::Vop;
use maptrace_sim::{
    Config, Cred, KextError, Release, SHIM_WITH_KAUTH, Sim, TraceOp, ViolationPolicy, map_flags,
    prot,
};
use maptrace_system_tests::{
    Tunables, boot_collecting, boot_fs, boot_loaded, drain, events_buffer, load, raw_name,
    short_unload_wait, stats, workload,
};

const PAGE: u64 = 4096;
const KERN_FAILURE: i32 = 5;

fn counts(r: &Record) -> maptrace_abi::Counts {
    match r.event {
        Event::Mmap { counts, .. }
        | Event::Pagein { counts, .. }
        | Event::Mnomap { counts, .. } => counts,
        _ => panic!("no counts in {r:?}"),
    }
}

/// Every entry of every live vector of the simulated filesystems:
/// (filesystem, index, entry now, the filesystem's original).
fn vector_entries(sim: &Sim) -> Vec<(String, usize, usize, usize)> {
    let mut out = Vec::new();
    for (addr, info) in sim.kernel().vfs.live_vectors() {
        for (i, orig) in info.originals.iter().enumerate() {
            let now = maptrace_sim::vfs::word(addr + i * 8).load(Ordering::Acquire);
            out.push((info.fs.clone(), i, now, *orig));
        }
    }
    out
}

/// The vectors of the simulated filesystems hold their own entries again.
fn assert_vectors_restored(sim: &Sim) {
    for (fs, i, now, orig) in vector_entries(sim) {
        assert_eq!(now, orig, "{fs} entry {i} not restored");
    }
}

fn assert_nothing_left(sim: &Sim) {
    assert_eq!(sim.allocations_outstanding(), (0, 0));
    assert!(
        sim.sysctl_names()
            .iter()
            .all(|n| !n.starts_with("kern.maptrace")),
        "{:?}",
        sim.sysctl_names()
    );
    assert!(sim.kernel().mac.policies().is_empty());
    assert!(sim.kernel().kauth.our_listeners().is_empty());
    assert!(
        sim.kernel().vfs.kext_fstypes().is_empty(),
        "the probe filesystem is gone"
    );
    assert_vectors_restored(sim);
}

#[test]
fn offsets_are_validated_and_v_op_found_on_every_layout() {
    for (release, v_op) in [
        (Release::Sequoia, None),
        (Release::Catalina, None),
        (Release::Sequoia, Some(136)),
        // The last pointer slot the discovery scans.
        (Release::Sequoia, Some(232)),
    ] {
        let sim = boot_loaded(
            Config {
                release,
                v_op_offset: v_op,
                ..Config::default()
            },
            Tunables::default(),
        );
        let want = format!("v_op at {}", sim.v_op_offset());
        assert!(
            sim.log_lines().iter().any(|l| l.contains(&want)),
            "{want}: {:?}",
            sim.log_lines()
        );
        assert_eq!(stats(&sim, Cred::Root).probe_method, raw::MT_PROBE_OFFSET);
        let mut dec = Decoder::new();
        drain(&sim, &mut dec);
        let p = sim.spawn("app", 501);
        let fd = p.open("/data/a.bin").expect("open");
        p.mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        let c = sim.counts("/data/a.bin").expect("vnode");
        let recs = drain(&sim, &mut dec);
        let m = recs
            .iter()
            .find(|r| r.kind == EventKind::Mmap)
            .expect("an MMAP");
        let got = counts(m);
        assert_eq!(got.method, ProbeMethod::Offset);
        assert_eq!(
            i32::from(got.usecount),
            c.usecount - 1,
            "before ubc_map's reference"
        );
        assert_eq!(i32::from(got.kusecount), c.kusecount);
        // The mmap path holds one iocount while VNOP_MMAP runs.
        assert_eq!(got.iocount, Some(1));
        p.exit();
        sim.unload_kext().expect("unload");
        assert_nothing_left(&sim);
    }
}

#[test]
fn the_layout_probe_never_creates_a_vreg_vnode_without_a_mount() {
    // vnode_create of a VREG with vnfs_mp == NULL is a kernel NULL
    // dereference (bsd/vfs/vfs_subr.c, every tag xnu-3248..xnu-11417.121.6).
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    let loaded = load(&sim, Tunables::default());
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(loaded, Ok(()));
    assert_eq!(stats(&sim, Cred::Root).probe_method, raw::MT_PROBE_OFFSET);
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
}

#[test]
fn counts_elsewhere_fall_back_to_the_isinuse_search() {
    let sim = boot_loaded(
        Config {
            counts_offset: Some(40),
            ..Config::default()
        },
        Tunables::default(),
    );
    assert_eq!(stats(&sim, Cred::Root).probe_method, raw::MT_PROBE_ISINUSE);
    assert!(
        sim.log_lines()
            .iter()
            .any(|l| l.contains("vnode_isinuse search"))
    );
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let a = sim.spawn("a", 501);
    let b = sim.spawn("b", 501);
    let path = "/data/a.bin";
    let fa = a.open(path).expect("open");
    let fb = b.open(path).expect("open");
    let m1 = a
        .mmap(fa, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    b.mmap(fb, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    a.touch(m1, 1).expect("touch");
    let c = sim.counts(path).expect("vnode");
    assert_eq!(c.usecount, 3, "two opens and the mapping");
    let mut recs = drain(&sim, &mut dec);
    recs.sort_by_key(|r| r.timestamp_ns);
    let uses: Vec<(EventKind, u16)> = recs
        .iter()
        .filter(|r| matches!(r.kind, EventKind::Mmap | EventKind::Pagein))
        .map(|r| {
            let k = counts(r);
            assert_eq!(k.method, ProbeMethod::IsInUse);
            assert_eq!(k.iocount, None, "iocount unknown");
            assert_eq!(k.kusecount, 0);
            assert_ne!(r.flags & raw::MT_RF_IOCOUNT_UNKNOWN as u8, 0);
            (r.kind, k.usecount)
        })
        .collect();
    assert_eq!(
        uses,
        // Two MAP_SHARED maps, two VNOP_MMAPs each (XNU maps the named
        // object twice, osfmk/vm/vm_map.c, xnu-11417.101.15).
        vec![
            (EventKind::Mmap, 2),
            (EventKind::Mmap, 3),
            (EventKind::Mmap, 3),
            (EventKind::Mmap, 3),
            (EventKind::Pagein, 3)
        ]
    );
    a.exit();
    b.exit();
    sim.check_balanced()
        .expect("the search leaves no count behind");
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
}

#[test]
fn layout_fallback_counts_are_usecount_minus_kusecount() {
    // An O_EVTONLY watcher's reference is in v_usecount and v_kusecount
    // both; vnode_isinuse (ubc_isinuse_locked) compares their difference,
    // so the fallback measures usecount - kusecount, never usecount.
    let path = "/data/a.bin";
    let mmap_counts = |config: Config| {
        let sim = boot_loaded(config, Tunables::default());
        let mut dec = Decoder::new();
        drain(&sim, &mut dec);
        let w = sim.spawn("watcher", 501);
        let wfd = w.open_evtonly(path).expect("O_EVTONLY open");
        let a = sim.spawn("a", 501);
        let fd = a.open(path).expect("open");
        let c = sim.counts(path).expect("vnode");
        assert_eq!((c.usecount, c.kusecount), (2, 1));
        let m = a
            .mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        a.munmap(m).expect("unmap");
        let recs = drain(&sim, &mut dec);
        let mmap = recs
            .iter()
            .find(|r| r.kind == EventKind::Mmap)
            .expect("an MMAP record");
        let k = counts(mmap);
        a.exit();
        w.close(wfd).expect("close");
        sim.check_balanced().expect("balanced");
        sim.unload_kext().expect("unload");
        k
    };
    let offset = mmap_counts(Config::default());
    assert_eq!(offset.method, ProbeMethod::Offset);
    assert_eq!((offset.usecount, offset.kusecount), (2, 1), "raw fields");
    let fallback = mmap_counts(Config {
        counts_offset: Some(40),
        ..Config::default()
    });
    assert_eq!(fallback.method, ProbeMethod::IsInUse);
    assert_eq!(
        fallback.usecount, 1,
        "the fallback's `usecount` field holds usecount - kusecount"
    );
}

/// Boots `config`, where the layout discovery must fail: start is refused
/// with a log line containing `why`, leaving nothing and no violation.
fn assert_discovery_refused(config: Config, why: &str) -> Sim {
    let sim = boot_fs(config);
    assert_eq!(
        load(&sim, Tunables::default()),
        Err(KextError::StartFailed(KERN_FAILURE))
    );
    assert!(!sim.kext_loaded());
    assert!(
        sim.log_lines().iter().any(|l| l.contains(why)),
        "{why}: {:?}",
        sim.log_lines()
    );
    assert_nothing_left(&sim);
    assert!(sim.take_violations().is_empty());
    sim
}

#[test]
fn discovery_failure_refuses_to_start_and_leaves_nothing() {
    let sim = assert_discovery_refused(
        Config {
            fsadd_error: Some(17),
            ..Config::default()
        },
        "layout discovery failed (17)",
    );
    // The filesystems still work, untouched.
    let p = sim.spawn("app", 501);
    workload(&p, "/data/a.bin");
    sim.check_balanced().expect("balanced");
}

#[test]
fn a_v_op_beyond_the_scanned_bytes_is_not_guessed() {
    // The discovery never reads past the smallest vnode it supports: a
    // layout whose v_op lies further is refused, not probed out of bounds.
    assert_discovery_refused(
        Config {
            v_op_offset: Some(248),
            ..Config::default()
        },
        "layout discovery failed",
    );
}

#[test]
fn bad_ring_tunables_refuse_to_start_and_leave_nothing() {
    let sim = boot_fs(Config::default());
    for t in [
        Tunables {
            slots: 1000,
            ..Tunables::default()
        },
        Tunables {
            nshards: 0,
            ..Tunables::default()
        },
        Tunables {
            nshards: 300,
            ..Tunables::default()
        },
    ] {
        assert_eq!(
            load(&sim, t),
            Err(KextError::StartFailed(KERN_FAILURE)),
            "{t:?}"
        );
        assert_nothing_left(&sim);
    }
    load(&sim, Tunables::default()).expect("good tunables load");
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
}

#[test]
fn discovery_through_mac_alone_and_kauth_registration() {
    // Only the kauth variant (feature `kauth`) can register a listener.
    for kauth in [false, true].into_iter().filter(|k| !k || SHIM_WITH_KAUTH) {
        let sim = boot_loaded(
            Config::default(),
            Tunables {
                kauth,
                ..Tunables::default()
            },
        );
        assert_eq!(sim.kernel().kauth.listeners().len(), usize::from(kauth));
        let mut dec = Decoder::new();
        drain(&sim, &mut dec);
        let p = sim.spawn("app", 501);
        workload(&p, "/Volumes/hfs/c.bin");
        let recs = drain(&sim, &mut dec);
        assert_eq!(
            recs.iter().filter(|r| r.kind == EventKind::Mmap).count(),
            2,
            "one MAP_SHARED mmap(2), two VNOP_MMAPs; kauth {kauth}"
        );
        sim.unload_kext().expect("unload");
        assert_nothing_left(&sim);
    }
}

#[cfg(feature = "kauth")]
#[test]
fn a_full_kauth_table_leaves_discovery_to_mac_and_the_sweep() {
    // KAUTH_SCOPE_MAX_LISTENERS other listeners on the vnode scope make
    // kauth_listen_scope return NULL (kauth_add_callback_to_scope: ENOSPC,
    // bsd/kern/kern_authorization.c, xnu-7195.141.2). The listener only
    // finds vectors, which MAC and the sweep find too: the start goes on.
    static OTHER_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    extern "C" fn other_kext(
        _: maptrace_sim::xnu::kauth_cred_t,
        _: *mut std::ffi::c_void,
        _: maptrace_sim::xnu::kauth_action_t,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) -> i32 {
        OTHER_CALLS.fetch_add(1, Ordering::Relaxed);
        maptrace_sim::xnu::KAUTH_RESULT_DEFER as i32
    }
    let sim = boot_fs(Config::default());
    let k = sim.kernel();
    let others: Vec<usize> = (0..maptrace_sim::kauth::MAX_LISTENERS)
        .map(|_| {
            k.kauth.listen_other(
                k,
                "com.apple.kauth.vnode",
                other_kext as *const () as usize,
                0,
            )
        })
        .collect();
    assert!(others.iter().all(|&h| h != 0), "the table fills");
    load(
        &sim,
        Tunables {
            kauth: true,
            ..Tunables::default()
        },
    )
    .expect("loads without its kauth listener");
    assert_eq!(
        k.kauth.listeners().len(),
        maptrace_sim::kauth::MAX_LISTENERS
    );
    assert!(k.kauth.our_listeners().is_empty());
    let log = sim.log_lines().join("\n");
    assert!(log.contains("kauth listener not registered"), "{log}");
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let p = sim.spawn("app", 501);
    workload(&p, "/Volumes/hfs/c.bin");
    let recs = drain(&sim, &mut dec);
    assert_eq!(recs.iter().filter(|r| r.kind == EventKind::Mmap).count(), 2);
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
    // The other kexts stay, and keep being called, ours gone.
    let before = OTHER_CALLS.load(Ordering::Relaxed);
    workload(&sim.spawn("app", 501), "/Volumes/hfs/c.bin");
    assert!(OTHER_CALLS.load(Ordering::Relaxed) > before);
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    for h in others {
        assert_eq!(k.kauth.unlisten(h), Some(false));
    }
}

#[cfg(not(feature = "kauth"))]
#[test]
fn default_variant_has_no_kauth_listener_and_finds_vectors_through_mac() {
    // bsd/sys/kauth.h (xnu-11417.121.6): kauth_listen_scope is
    // __kpi_deprecated, unsupported from macOS 11; the default shim neither
    // calls nor imports it.
    let sim = boot_loaded(Config::default(), Tunables::default());
    assert!(sim.kernel().kauth.listeners().is_empty());
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let p = sim.spawn("app", 501);
    workload(&p, "/data/a.bin");
    let recs = drain(&sim, &mut dec);
    assert_eq!(
        recs.iter().filter(|r| r.kind == EventKind::Mmap).count(),
        2,
        "one MAP_SHARED mmap(2), two VNOP_MMAPs"
    );
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
}

#[test]
fn an_unloadable_policy_busies_the_mac_policy_list_on_every_check() {
    // security/mac_base.c (xnu-11417.121.6): UNLOADOK makes the policy
    // dynamic, so each MAC check takes mac_policy_mtx; unloaded, none does.
    let sim = boot_loaded(Config::default(), Tunables::default());
    let pol = sim.kernel().mac.policies();
    assert_eq!(pol.len(), 1);
    assert!(!pol[0].is_static, "registered with UNLOADOK");
    let p = sim.spawn("app", 501);
    let before = sim.kernel().mac.busy_acquisitions();
    workload(&p, "/data/a.bin");
    // vnode_check_open, vnode_notify_open, file_check_mmap at least.
    assert!(sim.kernel().mac.busy_acquisitions() >= before + 3);
    sim.unload_kext().expect("unload");
    let after = sim.kernel().mac.busy_acquisitions();
    workload(&p, "/data/a.bin");
    assert_eq!(sim.kernel().mac.busy_acquisitions(), after);
}

#[test]
fn vectors_of_mounted_filesystems_are_patched_by_the_sweep() {
    let sim = boot_fs(Config::default());
    // A process maps a file before the kext loads: its vnode exists.
    let p = sim.spawn("early", 501);
    let fd = p.open("/Volumes/hfs/c.bin").expect("open");
    let a = p
        .mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    load(
        &sim,
        Tunables {
            kauth: false,
            ..Tunables::default()
        },
    )
    .expect("load");
    // Only hfs has an instantiated vnode; apfs's files were never looked up.
    assert_eq!(
        stats(&sim, Cred::Root).vectors_patched,
        1,
        "hfs found by the sweep"
    );
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    // No open, no exec: only the sweep can have hooked the vector.
    p.touch(a, 1).expect("touch");
    p.munmap(a).expect("unmap");
    let recs = drain(&sim, &mut dec);
    assert_eq!(
        recs.iter().filter(|r| r.kind == EventKind::Pagein).count(),
        1
    );
    let mn: Vec<&Record> = recs
        .iter()
        .filter(|r| r.kind == EventKind::Mnomap)
        .collect();
    assert_eq!(mn.len(), 1);
    assert_eq!(counts(mn[0]).usecount, 2);
    p.exit();
    sim.unload_kext().expect("unload");
    assert_nothing_left(&sim);
}

/// Whether any vector entry holds something other than its filesystem's
/// original (our trampoline): the kext is on the VNOP paths.
fn vectors_patched(sim: &Sim) -> bool {
    vector_entries(sim)
        .iter()
        .any(|(_, _, now, orig)| now != orig)
}

/// Kinds of the records of `pid`.
fn kinds_of(recs: &[Record], pid: i32) -> Vec<EventKind> {
    recs.iter()
        .filter(|r| r.pid == pid as u32 && r.kind != EventKind::Path)
        .map(|r| r.kind)
        .collect()
}

#[test]
fn unload_is_refused_while_a_hook_is_stuck_then_succeeds() {
    // Each vnode-op hook in turn stays in flight: its filesystem's original
    // operation is held (slow I/O). The unload is refused, the kext stays
    // loaded and keeps tracing, and once the hook leaves, unload succeeds.
    for vop in [Vop::Pagein, Vop::Mmap, Vop::Mnomap] {
        let sim = boot_loaded(Config::default(), short_unload_wait(SHIM_WITH_KAUTH));
        let mut dec = Decoder::new();
        let p = sim.spawn("stuck", 501);
        let q = sim.spawn("other", 501);
        let fd = p.open("/data/a.bin").expect("open");
        let premapped = p
            .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        let qfd = q.open("/data/b.bin").expect("open");
        let qmap = q
            .mmap(qfd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        drain(&sim, &mut dec);
        std::thread::scope(|s| {
            // Inside the scope: a failed assertion drops (releases) the hold
            // before the scope joins the stuck thread.
            let hold = sim.hold_vnop(vop);
            let stuck = s.spawn(|| match vop {
                Vop::Pagein => p.touch(premapped, 1).map(|_| ()),
                Vop::Mmap => p
                    .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
                    .map(|_| ()),
                _ => p.munmap(premapped),
            });
            assert!(
                hold.wait_held(1, Duration::from_secs(10)),
                "{vop:?} reached the filesystem"
            );
            assert_eq!(
                stats(&sim, Cred::Root).in_flight,
                1,
                "{vop:?} hook in flight"
            );
            assert_eq!(
                sim.unload_kext(),
                Err(KextError::StopRefused(KERN_FAILURE)),
                "{vop:?}"
            );
            assert!(sim.kext_loaded(), "stays loaded");
            assert!(
                sim.log_lines()
                    .iter()
                    .any(|l| l.contains("refusing to unload, still tracing"))
            );
            // It is back on every path: readable, hooked, and tracing the
            // operations that are not held.
            assert_eq!(stats(&sim, Cred::Root).in_flight, 1);
            assert!(vectors_patched(&sim), "{vop:?}: vectors hooked again");
            assert_eq!(sim.kernel().mac.policies().len(), 1);
            let expect = match vop {
                Vop::Pagein => {
                    q.munmap(qmap).expect("unmap");
                    q.mmap(qfd, PAGE, prot::READ, map_flags::SHARED, 0)
                        .expect("map");
                    [EventKind::FileMmap, EventKind::Mnomap, EventKind::Mmap]
                }
                Vop::Mmap => {
                    q.touch(qmap, 1).expect("touch");
                    q.munmap(qmap).expect("unmap");
                    [EventKind::Pagein, EventKind::Mnomap, EventKind::Pagein]
                }
                _ => {
                    q.touch(qmap, 1).expect("touch");
                    let m = q
                        .mmap(qfd, PAGE, prot::READ, map_flags::SHARED, 0)
                        .expect("map");
                    q.touch(m, 1).expect("a cached page");
                    [EventKind::Pagein, EventKind::FileMmap, EventKind::Mmap]
                }
            };
            // Shards are not merged here: compare kinds, not order.
            let got = kinds_of(&drain(&sim, &mut dec), q.pid());
            for k in expect {
                assert!(got.contains(&k), "{vop:?}: events keep flowing: {got:?}");
            }
            hold.release();
            stuck
                .join()
                .expect("the stuck thread")
                .expect("its operation completes");
        });
        // The held operation's own record arrives once it completes.
        let held_kind = match vop {
            Vop::Pagein => EventKind::Pagein,
            Vop::Mmap => EventKind::Mmap,
            _ => EventKind::Mnomap,
        };
        assert!(
            kinds_of(&drain(&sim, &mut dec), p.pid()).contains(&held_kind),
            "{vop:?}"
        );
        assert_eq!(stats(&sim, Cred::Root).in_flight, 0);
        sim.unload_kext().expect("unload once the hook drained");
        assert_nothing_left(&sim);
        p.exit();
        q.exit();
        sim.check_balanced().expect("balanced");
    }
}

/// Sets the flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Cycles of `load_and_unload_while_processes_map_and_fault`.
const LOAD_CYCLES: usize = 100;

#[test]
fn load_and_unload_while_processes_map_and_fault() {
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    // Rings and staging of at most 64 KiB: the arena reuses such blocks, so
    // 100 loads fit in it. No kauth listener: XNU calls a copied kauth
    // callback without its lock (a documented race no bounded wait closes
    // on a starved CPU); `unload_outwaits_a_kauth_callback_in_the_race_window`
    // covers it. MAC and the sweep still find every vector.
    let tunables = Tunables {
        nshards: 2,
        slots: 256,
        staging_max: 16 << 10,
        kauth: false,
        ..Tunables::default()
    };
    let stop = AtomicBool::new(false);
    let files = [
        "/data/a.bin",
        "/data/b.bin",
        "/Volumes/hfs/c.bin",
        "/bin/tool",
    ];
    let mut generations = Vec::new();
    std::thread::scope(|s| {
        // A failed assertion stops the workers too, or the scope never ends.
        let _stop_workers = StopOnDrop(&stop);
        for (i, f) in files.iter().enumerate() {
            let p = sim.spawn("worker", 501);
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if i == 3 {
                        let child = p.clone();
                        child.exec(f).expect("exec");
                    } else {
                        workload(&p, f);
                    }
                }
            });
        }
        for cycle in 0..LOAD_CYCLES {
            if let Err(e) = load(&sim, tunables) {
                let log = sim.log_lines();
                panic!("cycle {cycle}: load under load: {e:?}; {log:#?}");
            }
            // Polls (bounded) until the workers' maps show up: a busy
            // machine may take a while to schedule them.
            let mut dec = Decoder::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                std::thread::sleep(Duration::from_millis(2));
                let recs = drain(&sim, &mut dec);
                if recs.iter().any(|r| r.kind == EventKind::Mmap) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cycle {cycle} saw no MMAP"
                );
            }
            generations.push(dec.generation().expect("a generation"));
            sim.unload_kext().expect("unload under load");
            // No call into unloaded code, no hook left running, nothing
            // leaked (memory, registrations, counts), originals restored.
            let v = sim.take_violations();
            assert!(v.is_empty(), "cycle {cycle}: {v:?}");
            assert_nothing_left(&sim);
        }
    });
    generations.sort_unstable();
    generations.dedup();
    assert_eq!(generations.len(), LOAD_CYCLES, "a new generation per load");
    assert!(sim.take_violations().is_empty());
    for p in sim.kernel().procs.all() {
        if p.pid != 0 {
            sim.proc(p.pid).expect("proc").exit();
        }
    }
    sim.check_balanced().expect("balanced");
}

#[cfg(feature = "kauth")]
#[test]
fn unload_outwaits_a_kauth_callback_in_the_race_window() {
    // kauth copies a callback, then calls it without the scope lock: the
    // in-flight count cannot see that window; the quiet polls of the drain
    // wait outlast it.
    let sim = boot_loaded(
        Config {
            kauth_race_delay: Duration::from_millis(15),
            ..Config::default()
        },
        Tunables::default(),
    );
    let p = sim.spawn("app", 501);
    std::thread::scope(|s| {
        let t = s.spawn(|| p.open("/data/a.bin"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sim.kernel().kauth.in_race_window() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "never entered the window"
            );
            std::thread::yield_now();
        }
        sim.unload_kext().expect("unload");
        t.join().expect("opener").expect("open succeeds");
    });
    assert!(sim.take_violations().is_empty());
    assert_nothing_left(&sim);
}

/// The kext's record kind for a traced operation (VNOP_MMAP_CHECK has none).
fn traced_kind(op: TraceOp) -> Option<EventKind> {
    match op {
        TraceOp::FileCheckMmap => Some(EventKind::FileMmap),
        TraceOp::Mmap => Some(EventKind::Mmap),
        TraceOp::Pagein => Some(EventKind::Pagein),
        TraceOp::Mnomap => Some(EventKind::Mnomap),
        TraceOp::Open => Some(EventKind::Open),
        TraceOp::Close => Some(EventKind::Close),
        TraceOp::MmapCheck => None,
    }
}

#[test]
fn unload_refuses_rather_than_hang_on_a_read_stuck_in_copyout() {
    // XNU's sysctl_unregister_oid sleeps THREAD_UNINT until the OID's
    // running handlers return (bsd/kern/kern_newsysctl.c, xnu-11417.121.6),
    // and kmod stop runs under OSKext's lock: a reader stuck in copyout (its
    // buffer on a hung network mapping) would hang the unload for good.
    // Stop waits for it as long as for hooks, then refuses.
    let sim = boot_collecting(SHIM_WITH_KAUTH);
    let buf = events_buffer(&sim);
    let (finished, unloaded, read) = std::thread::scope(|s| {
        let sim = &sim;
        // Inside the scope: a failed assertion drops (releases) the hold
        // before the scope joins the reader and the unload.
        let hold = sim.hold_copyout();
        let reader = s.spawn(move || {
            let mut buf = buf;
            sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(&mut buf), Cred::Root)
        });
        assert!(hold.wait_held(1, Duration::from_secs(10)), "in copyout");
        let unload = s.spawn(move || sim.unload_kext());
        // Bounded, not a speed check: the old shim's unload never returns
        // while the handler is held.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !unload.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = unload.is_finished();
        hold.release();
        let unloaded = unload.join().expect("unload thread");
        (finished, unloaded, reader.join().expect("reader"))
    });
    assert!(finished, "unload returned while the reader was stuck");
    assert_eq!(unloaded, Err(KextError::StopRefused(KERN_FAILURE)));
    read.expect("the held read completes once let go");
    assert!(sim.kext_loaded(), "stays loaded, tracing");
    assert!(
        sim.log_lines()
            .iter()
            .any(|l| l.contains("a sysctl request is still running")),
        "{:?}",
        sim.log_lines()
    );
    // Still tracing, and the sysctls are open again.
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    workload(&sim.spawn("app", 501), "/data/a.bin");
    let recs = drain(&sim, &mut dec);
    assert!(recs.iter().any(|r| r.kind == EventKind::Mmap), "{recs:?}");
    sim.unload_kext().expect("unload once the reader is gone");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn unload_waits_for_an_events_read_held_in_copyout() {
    // A reader of kern.maptrace.events is inside the shim's handler, in
    // copyout, while the kext is unloaded: stop unregisters the sysctls
    // first and unregister waits for the running handler. Released, the
    // read returns a whole batch (or, with a copyout fault, EFAULT: the
    // batch goes back to the ring, which the unload then frees).
    for fault in [false, true] {
        let sim = boot_fs(Config {
            policy: ViolationPolicy::Collect,
            ..Config::default()
        });
        load(&sim, Tunables::default()).expect("load");
        let mut dec = Decoder::new();
        drain(&sim, &mut dec);
        let p = sim.spawn("app", 501);
        workload(&p, "/data/a.bin");
        let mut want: Vec<(EventKind, i64, u64)> = sim
            .trace()
            .iter()
            .filter(|t| t.pid == p.pid())
            .filter_map(|t| Some((traced_kind(t.op)?, t.offset, t.size)))
            .collect();
        assert!(want.iter().any(|w| w.0 == EventKind::Pagein), "{want:?}");
        let buf = events_buffer(&sim);
        let (read, buf) = std::thread::scope(|s| {
            let sim = &sim;
            // Inside the scope: a failed assertion drops (releases) the hold
            // before the scope joins the reader and the unload.
            let hold = sim.hold_copyout();
            let reader = s.spawn(move || {
                let mut buf = buf;
                let r =
                    sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(&mut buf), Cred::Root);
                (r, buf)
            });
            assert!(hold.wait_held(1, Duration::from_secs(10)), "in copyout");
            assert_eq!(sim.kernel().threads_in_kext(), 1, "the handler runs");
            if fault {
                sim.inject_copyout_faults(1);
            }
            let unload = s.spawn(move || sim.unload_kext());
            // Bounded, not a speed check: however long it is given, the
            // unload cannot return while the handler is inside.
            std::thread::sleep(Duration::from_millis(200));
            assert!(!unload.is_finished(), "unload waits for the handler");
            assert!(sim.kext_loaded());
            hold.release();
            unload
                .join()
                .expect("unload thread")
                .expect("unload succeeds once the handler returned");
            reader.join().expect("reader")
        });
        if fault {
            assert_eq!(read.map_err(|e| e.errno), Err(14), "EFAULT");
            assert!(buf.iter().all(|&b| b == 0), "nothing copied out");
        } else {
            let n = read.expect("the held read completes");
            let (_, recs) = dec.decode(&buf[..n]).expect("a whole batch");
            let mut got: Vec<(EventKind, i64, u64)> = recs
                .into_iter()
                .map(|r| r.expect("an untorn record"))
                // Paths and names are not operations: compare the rest.
                .filter(|r| {
                    r.pid == p.pid() as u32 && !matches!(r.kind, EventKind::Path | EventKind::Proc)
                })
                .map(|r| {
                    assert_eq!(r.lost_before, 0, "nothing lost");
                    match r.event {
                        Event::Pagein { offset, size, .. } => (r.kind, offset, u64::from(size)),
                        _ => (r.kind, 0, 0),
                    }
                })
                .collect();
            // The trace keeps offsets and sizes of pageins only.
            for w in &mut want {
                if w.0 != EventKind::Pagein {
                    (w.1, w.2) = (0, 0);
                }
            }
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "the batch holds every traced operation");
        }
        assert_eq!(
            sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), None, Cred::Root)
                .map_err(|e| e.errno),
            Err(2),
            "the sysctl went with the kext"
        );
        assert_eq!(sim.take_violations(), vec![], "fault: {fault}");
        assert_nothing_left(&sim);
        p.exit();
        sim.check_balanced().expect("balanced");
    }
}
