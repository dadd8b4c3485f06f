//! Stacking filesystems (nullfs, bindfs) with the real shim: their
//! VNOP_MMAP, VNOP_MNOMAP and VNOP_CLOSE call the same operation on the
//! lower vnode through its own vector (bsd/miscfs/nullfs/null_vnops.c:919,
//! 945, 374; bsd/miscfs/bindfs/bind_vnops.c:437, 456, 173,
//! xnu-11417.121.6), so each is recorded once, at the lower file. Their
//! VNOP_PAGEIN reads the lower file with VNOP_READ (null_vnops.c:1057), so a
//! page-in is the upper vnode's, recorded there once.

use maptrace_abi::EventKind;
use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_sim::{Config, Platform, Sim, TraceOp, map_flags, prot};
use maptrace_system_tests::{Tunables, boot_fs, drain, load, vectors_original};

const PAGE: u64 = 4096;
const LOWER: &str = "/Volumes/hfs/d/f.bin";
const UPPER: &str = "/Volumes/null/f.bin";
const FSTYPES: [&str; 2] = ["nullfs", "bindfs"];

/// The harness's filesystems, `fstype` mirroring `/Volumes/hfs/d` on
/// `/Volumes/null`, and the shim loaded.
fn boot(fstype: &str) -> Sim {
    let sim = boot_fs(Config::for_platform(Platform::IntelSsd));
    sim.add_file(LOWER, 16 * PAGE).expect("add file");
    sim.mount_over(fstype, "/Volumes/hfs/d", "/Volumes/null")
        .expect("mount the stacking filesystem");
    load(&sim, Tunables::default()).expect("the shim loads");
    sim
}

fn of_kind(recs: &[Record], pid: i32, kind: EventKind) -> Vec<&Record> {
    recs.iter()
        .filter(|r| r.kind == kind && r.pid == pid as u32)
        .collect()
}

fn path_of(recs: &[Record], vnode_id: u64) -> Option<String> {
    recs.iter().find_map(|r| match &r.event {
        Event::Path { path, .. } if r.vnode_id == vnode_id => {
            Some(String::from_utf8_lossy(path).into_owned())
        }
        _ => None,
    })
}

fn traced(sim: &Sim, op: TraceOp, path: &str) -> usize {
    sim.trace()
        .iter()
        .filter(|t| t.op == op && t.path == path)
        .count()
}

/// Maps the whole file through the stacking mount (MAP_SHARED: ubc_map's
/// two VNOP_MMAPs), touches it, unmaps and closes; returns the records.
fn map_touch_unmap(sim: &Sim, fstype: &str) -> (i32, Vec<Record>, u64) {
    let mut dec = Decoder::new();
    let p = sim.spawn("reader", 501);
    let fd = p.open(UPPER).expect("open through the mirror");
    let a = p
        .mmap(fd, 16 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("mmap");
    let t = p.touch(a, 16 * PAGE).expect("touch");
    assert!(t.pageins > 0, "{fstype}: the touch faults");
    p.munmap(a).expect("munmap");
    p.close(fd).expect("close");
    let recs = drain(sim, &mut dec);
    (p.pid(), recs, t.pageins)
}

/// What a map through `fstype` leaves in the ring: each operation once,
/// maps and unmaps at the lower file under its own path, page-ins at the
/// upper vnode.
fn assert_recorded_once(sim: &Sim, fstype: &str, pid: i32, recs: &[Record], pageins: u64) {
    let mmaps = of_kind(recs, pid, EventKind::Mmap);
    assert_eq!(
        mmaps.len(),
        traced(sim, TraceOp::Mmap, LOWER),
        "{fstype}: one MMAP per VNOP_MMAP that reached the lower file"
    );
    assert_eq!(mmaps.len(), 2, "{fstype}: MAP_SHARED maps twice");
    let lower_id = mmaps[0].vnode_id;
    assert!(mmaps.iter().all(|r| r.vnode_id == lower_id));
    assert_eq!(path_of(recs, lower_id).as_deref(), Some(LOWER), "{fstype}");
    for r in &mmaps {
        let Event::Mmap { counts, .. } = &r.event else {
            unreachable!()
        };
        assert_eq!(
            counts.usecount, 1,
            "{fstype}: the lower vnode's usecount (the mirror's reference)"
        );
    }

    let ins = of_kind(recs, pid, EventKind::Pagein);
    assert_eq!(ins.len() as u64, pageins, "{fstype}: one PAGEIN per fault");
    assert_eq!(ins.len(), traced(sim, TraceOp::Pagein, UPPER), "{fstype}");
    assert!(
        ins.iter().all(|r| r.vnode_id != lower_id),
        "{fstype}: page-ins are the upper vnode's"
    );

    let unmaps = of_kind(recs, pid, EventKind::Mnomap);
    assert_eq!(unmaps.len(), 1, "{fstype}: one MNOMAP");
    assert_eq!(unmaps[0].vnode_id, lower_id, "{fstype}");
    let closes = of_kind(recs, pid, EventKind::Close);
    assert_eq!(closes.len(), 1, "{fstype}: one CLOSE");
    assert_eq!(closes[0].vnode_id, lower_id, "{fstype}");
}

fn unload_clean(sim: &Sim, fstype: &str) {
    sim.unload_kext().expect("unload");
    assert!(vectors_original(sim), "{fstype}: every vector restored");
    sim.check_balanced().expect("balanced");
}

#[test]
fn a_map_through_a_stacking_mount_is_recorded_once_at_the_lower_file() {
    for fstype in FSTYPES {
        let sim = boot(fstype);
        // The lower filesystem's vector is hooked (a file of it was opened
        // directly), as the root volume's always is.
        let other = sim.spawn("other", 502);
        let fd = other.open("/Volumes/hfs/c.bin").expect("open");
        other.close(fd).expect("close");

        let (pid, recs, pageins) = map_touch_unmap(&sim, fstype);
        assert_recorded_once(&sim, fstype, pid, &recs, pageins);
        unload_clean(&sim, fstype);
    }
}

#[test]
fn a_lower_filesystem_first_reached_through_the_mirror_is_traced_once_seen() {
    for fstype in FSTYPES {
        // Nothing on the lower filesystem was seen before, and the hooks
        // never sweep other mounts (they run inside open and exec, where
        // waiting on every mount's iterate lock could hang): the maps and
        // unmaps that nullfs forwards to the lower file go untraced, while
        // the mirror's own page-ins are traced.
        let sim = boot(fstype);
        let (pid, recs, pageins) = map_touch_unmap(&sim, fstype);
        assert!(
            traced(&sim, TraceOp::Mmap, LOWER) > 0,
            "{fstype}: forwarded"
        );
        for kind in [EventKind::Mmap, EventKind::Mnomap, EventKind::Close] {
            assert_eq!(of_kind(&recs, pid, kind).len(), 0, "{fstype}: {kind:?}");
        }
        let ins = of_kind(&recs, pid, EventKind::Pagein);
        assert_eq!(ins.len() as u64, pageins, "{fstype}: the mirror's page-ins");

        // Once a vnode of the lower filesystem is seen itself, a map
        // through the mirror is recorded once, at the lower file (its
        // pages are cached now: no page-ins).
        let other = sim.spawn("other", 502);
        let fd = other.open("/Volumes/hfs/c.bin").expect("open");
        other.close(fd).expect("close");
        let before = traced(&sim, TraceOp::Mmap, LOWER);
        let p = sim.spawn("again", 501);
        let fd = p.open(UPPER).expect("open through the mirror");
        let a = p
            .mmap(fd, 16 * PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("mmap");
        p.munmap(a).expect("munmap");
        p.close(fd).expect("close");
        let recs = drain(&sim, &mut Decoder::new());
        let mmaps = of_kind(&recs, p.pid(), EventKind::Mmap);
        assert_eq!(mmaps.len(), traced(&sim, TraceOp::Mmap, LOWER) - before);
        assert_eq!(mmaps.len(), 2, "{fstype}: MAP_SHARED maps twice");
        assert_eq!(path_of(&recs, mmaps[0].vnode_id).as_deref(), Some(LOWER));
        assert_eq!(of_kind(&recs, p.pid(), EventKind::Mnomap).len(), 1);
        unload_clean(&sim, fstype);
    }
}
