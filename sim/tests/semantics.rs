//! XNU semantics the simulator pins without any kext loaded: mapping
//! references, MNOMAP on the last unmap, the page cache, exec, exit, forced
//! unmount, recycling and concurrency.

use maptrace_sim::{
    Config, OpenMode, Platform, Proc, Release, Sim, TraceEvent, TraceOp, map_flags, prot,
};

const PS: u64 = 4096;

/// An Intel Mac with an SSD: 4 KiB pages, whose clusters these tests count.
fn intel() -> Config {
    Config::for_platform(Platform::IntelSsd)
}

fn sim() -> Sim {
    let sim = Sim::boot(intel());
    sim.mount("apfs", "/").unwrap();
    sim.mount("hfs", "/Volumes/Data").unwrap();
    sim.add_file("/bin/app", 16 * PS).unwrap();
    sim.add_file("/Volumes/Data/db", 64 * PS).unwrap();
    sim
}

/// A reader process (uid 501) with `path` open and its first `pages`
/// mapped read-only with `flags` at offset 0: where most tests start.
/// Returns the process, the descriptor and the mapping's address.
fn map_for_reading(sim: &Sim, path: &str, pages: u64, flags: i32) -> (Proc, i32, u64) {
    let p = sim.spawn("reader", 501);
    let fd = p.open(path).unwrap();
    let a = p.mmap(fd, pages * PS, prot::READ, flags, 0).unwrap();
    (p, fd, a)
}

fn events(sim: &Sim, op: TraceOp, path: &str) -> Vec<TraceEvent> {
    sim.trace()
        .into_iter()
        .filter(|e| e.op == op && e.path == path)
        .collect()
}

fn ops(sim: &Sim, op: TraceOp, path: &str) -> usize {
    events(sim, op, path).len()
}

#[test]
fn two_mmaps_raise_usecount_by_one_and_the_last_unmap_fires_one_mnomap() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let fd = p.open(db).unwrap();
    let opened = sim.counts(db).unwrap();
    assert_eq!(opened.usecount, 1, "the open file holds one usecount");
    let a = p
        .mmap(fd, 8 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    let b = p
        .mmap(fd, 8 * PS, prot::READ, map_flags::PRIVATE, 8 * PS)
        .unwrap();
    let c = sim.counts(db).unwrap();
    assert_eq!(c.usecount, 2, "two mmaps take one mapping reference");
    assert!(c.mapped);
    assert_eq!(
        ops(&sim, TraceOp::Mmap, db),
        3,
        "VNOP_MMAP twice for the shared map, once for the private one"
    );
    assert_eq!(ops(&sim, TraceOp::FileCheckMmap, db), 2);
    assert_eq!(ops(&sim, TraceOp::MmapCheck, db), 2);
    p.munmap(a).unwrap();
    assert_eq!(
        sim.counts(db).unwrap().usecount,
        2,
        "unmapping one of two changes nothing"
    );
    assert_eq!(ops(&sim, TraceOp::Mnomap, db), 0);
    p.munmap(b).unwrap();
    let c = sim.counts(db).unwrap();
    assert_eq!(c.usecount, 1, "the last unmap drops the mapping reference");
    assert!(!c.mapped);
    assert_eq!(
        ops(&sim, TraceOp::Mnomap, db),
        1,
        "one MNOMAP for the last unmap"
    );
    assert_eq!(c.iocount, 0);
    p.close(fd).unwrap();
    assert_eq!(sim.counts(db).unwrap().usecount, 0);
    sim.check_balanced().unwrap();
}

#[test]
fn mmap_order_is_mac_check_then_mmap_check_then_mmap() {
    let sim = sim();
    let p = sim.spawn("reader", 501);
    let fd = p.open("/Volumes/Data/db").unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    let order: Vec<TraceOp> = sim.trace().iter().map(|e| e.op).collect();
    assert_eq!(
        order,
        vec![
            TraceOp::Open,
            TraceOp::FileCheckMmap,
            TraceOp::MmapCheck,
            TraceOp::Mmap,
            TraceOp::Mmap
        ]
    );
}

#[test]
fn touching_a_page_twice_pages_it_in_once_in_clusters() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (p, _, a) = map_for_reading(&sim, db, 64, map_flags::SHARED);
    let t = p.touch(a + 5 * PS, 1).unwrap();
    assert_eq!((t.pages, t.hits, t.pageins), (1, 0, 1));
    let t = p.touch(a + 5 * PS, 1).unwrap();
    assert_eq!(
        (t.pages, t.hits, t.pageins),
        (1, 1, 0),
        "a cached page causes no pagein"
    );
    let pageins: Vec<_> = sim
        .trace()
        .into_iter()
        .filter(|e| e.op == TraceOp::Pagein)
        .collect();
    assert_eq!(pageins.len(), 1);
    // A fresh object's cluster is the SSD minimum, 16 KiB, centred on the
    // fault: page 5 reads pages 3..7.
    assert_eq!(
        (pageins[0].offset, pageins[0].size),
        (3 * PS as i64, 4 * PS)
    );
    // Pages 3..7 are resident now; page 6 is a hit, page 7 reads 7..9
    // (resident page 6 is not bridged), page 8 is a hit.
    let t = p.touch(a + 6 * PS, 3 * PS).unwrap();
    assert_eq!((t.pages, t.hits, t.pageins), (3, 2, 1));
    // Past the end of the mapping is a fault.
    assert!(p.touch(a + 64 * PS, 1).is_err());
}

#[test]
fn a_second_process_sees_pages_the_first_read() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p1 = sim.spawn("a", 501);
    let p2 = sim.spawn("b", 502);
    let a1 = p1
        .mmap(
            p1.open(db).unwrap(),
            4 * PS,
            prot::READ,
            map_flags::SHARED,
            0,
        )
        .unwrap();
    let a2 = p2
        .mmap(
            p2.open(db).unwrap(),
            4 * PS,
            prot::READ,
            map_flags::SHARED,
            0,
        )
        .unwrap();
    assert_eq!(p1.touch(a1, 4 * PS).unwrap().pageins, 1);
    assert_eq!(
        p2.touch(a2, 4 * PS).unwrap().pageins,
        0,
        "one page cache per file"
    );
    assert_eq!(
        sim.counts(db).unwrap().usecount,
        3,
        "two opens + one mapping reference"
    );
}

#[test]
fn exec_maps_segments_without_the_mac_check_and_faults_the_entry_page() {
    let sim = sim();
    let p = sim.spawn("launchd", 0);
    p.exec("/bin/app").unwrap();
    assert_eq!(p.name(), "app");
    assert_eq!(p.mappings().len(), 3, "__TEXT, __DATA, __LINKEDIT");
    assert_eq!(ops(&sim, TraceOp::Mmap, "/bin/app"), 3);
    assert_eq!(
        ops(&sim, TraceOp::FileCheckMmap, "/bin/app"),
        0,
        "exec has no mac_file_check_mmap"
    );
    assert!(ops(&sim, TraceOp::Pagein, "/bin/app") >= 1);
    let c = sim.counts("/bin/app").unwrap();
    assert_eq!(c.usecount, 2, "text reference + one mapping reference");
    sim.check_balanced().unwrap();
}

#[test]
fn exit_unmaps_everything_and_closes_files() {
    let sim = sim();
    let p = sim.spawn("app", 501);
    p.exec("/bin/app").unwrap();
    let fd = p.open("/Volumes/Data/db").unwrap();
    p.mmap(fd, 4 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    p.exit();
    assert!(p.mappings().is_empty());
    assert!(p.fds().is_empty());
    assert_eq!(sim.counts("/bin/app").unwrap().usecount, 0);
    assert_eq!(sim.counts("/Volumes/Data/db").unwrap().usecount, 0);
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/bin/app"), 1);
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/Volumes/Data/db"), 1);
    sim.check_balanced().unwrap();
}

/// safedounmount (bsd/vfs/vfs_syscalls.c, xnu-11417.121.6 and
/// xnu-7195.141.2): only root or the mount's owner unmounts it; a path
/// that is not a mount's root is EINVAL.
#[test]
fn unmount_is_for_root_or_the_mounts_owner() {
    for release in [Release::Sequoia, Release::Catalina] {
        let sim = Sim::boot(Config { release, ..intel() });
        sim.mount("apfs", "/").unwrap();
        sim.mount("hfs", "/Volumes/Data").unwrap();
        sim.add_file("/Volumes/Data/db", 4 * PS).unwrap();
        let user = sim.spawn("umount", 501);
        let other = sim.spawn("umount", 502);
        assert_eq!(
            user.unmount("/Volumes/Data", false).unwrap_err().0,
            1,
            "EPERM: not root, not the owner"
        );
        assert_eq!(
            user.unmount("/Volumes/Data/db", false).unwrap_err().0,
            22,
            "EINVAL: not the root of a mount"
        );
        assert_eq!(user.unmount("/Volumes/None", false).unwrap_err().0, 2);
        sim.add_fs("msdos").unwrap();
        user.mount("msdos", "/Volumes/Stick").unwrap();
        assert_eq!(other.unmount("/Volumes/Stick", false).unwrap_err().0, 1);
        user.unmount("/Volumes/Stick", false)
            .expect("the owner unmounts its own mount");
        sim.spawn("diskarbitrationd", 0)
            .unmount("/Volumes/Data", false)
            .expect("root unmounts any mount");
    }
}

#[test]
fn forced_unmount_unmaps_and_kills_the_mapping() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (p, fd, a) = map_for_reading(&sim, db, 4, map_flags::SHARED);
    assert_eq!(
        sim.unmount("/Volumes/Data", false),
        Err(maptrace_sim::SimError(16)),
        "busy without force"
    );
    sim.unmount("/Volumes/Data", true).unwrap();
    assert_eq!(ops(&sim, TraceOp::Mnomap, db), 1);
    assert!(sim.counts(db).is_none(), "the vnode was reclaimed");
    assert!(p.touch(a, 1).is_err(), "the mapping is dead");
    p.munmap(a).unwrap();
    p.close(fd).unwrap();
    assert_eq!(ops(&sim, TraceOp::Mnomap, db), 1, "no second MNOMAP");
    assert!(p.open(db).is_err());
}

#[test]
fn recycling_gives_the_block_a_new_identity() {
    let sim = sim();
    sim.add_file("/Volumes/Data/other", PS).unwrap();
    let p = sim.spawn("reader", 501);
    let fd = p.open("/Volumes/Data/db").unwrap();
    p.close(fd).unwrap();
    let addr = sim.vnode_addr("/Volumes/Data/db").unwrap();
    let vid = sim.counts("/Volumes/Data/db").unwrap().vid;
    assert!(sim.recycle("/Volumes/Data/db").unwrap());
    let fd = p.open("/Volumes/Data/other").unwrap();
    assert_eq!(
        sim.vnode_addr("/Volumes/Data/other"),
        Some(addr),
        "the block is reused"
    );
    assert_eq!(sim.counts("/Volumes/Data/other").unwrap().vid, vid + 1);
    p.close(fd).unwrap();
}

#[test]
fn vnode_layout_has_counts_at_xnu_offsets_and_v_op_per_release() {
    for (release, off) in [(Release::Catalina, 200), (Release::Sequoia, 208)] {
        let sim = Sim::boot(Config {
            release,
            ..Config::default()
        });
        sim.mount("apfs", "/").unwrap();
        sim.add_file("/f", PS).unwrap();
        let p = sim.spawn("r", 501);
        let fd = p.open("/f").unwrap();
        assert_eq!(sim.v_op_offset(), off);
        let addr = sim.vnode_addr("/f").unwrap() as usize;
        assert!(sim.is_kernel_address(addr as u64));
        // SAFETY: the vnode block is 256 bytes of live kernel memory.
        let block = unsafe { std::slice::from_raw_parts(addr as *const u8, 256) };
        let i32_at = |o: usize| i32::from_ne_bytes(block[o..o + 4].try_into().unwrap());
        assert_eq!((i32_at(92), i32_at(96), i32_at(100)), (0, 1, 0));
        let v_op = u64::from_ne_bytes(block[off..off + 8].try_into().unwrap());
        assert!(
            sim.is_kernel_address(v_op),
            "v_op points at a kernel vector"
        );
        // Everything else is poison, so a scan finds the vector only at v_op.
        let hits = sim.find_kernel_addresses(block);
        assert_eq!(hits, vec![off]);
        p.close(fd).unwrap();
    }
}

#[test]
fn descriptor_offsets_differ_between_releases() {
    let a = Sim::boot(Config {
        release: Release::Catalina,
        ..Config::default()
    });
    let ca = a.kernel().vfs.offsets;
    drop(a);
    let b = Sim::boot(Config {
        release: Release::Sequoia,
        ..Config::default()
    });
    let cb = b.kernel().vfs.offsets;
    assert_ne!(ca.mmap, cb.mmap);
    assert_ne!(ca.pagein, cb.pagein);
    assert_ne!(
        ca.close, cb.close,
        "vnop_compound_open_ext comes before vnop_close"
    );
    assert!(
        ca.mmap > 2 && ca.pagein > ca.mmap,
        "realistic offsets, not 0/1/2"
    );
}

#[test]
fn bad_calls_fail_with_errno() {
    let sim = sim();
    let p = sim.spawn("r", 501);
    assert_eq!(p.open("/nope").unwrap_err().0, 2);
    assert_eq!(
        p.mmap(42, PS, prot::READ, map_flags::SHARED, 0)
            .unwrap_err()
            .0,
        9
    );
    let fd = p.open("/bin/app").unwrap();
    assert_eq!(
        p.mmap(fd, PS, prot::READ, map_flags::SHARED, 1)
            .unwrap_err()
            .0,
        22,
        "unaligned offset"
    );
    assert_eq!(
        p.mmap(fd, 0, prot::READ, map_flags::SHARED, 0)
            .unwrap_err()
            .0,
        22
    );
    assert_eq!(p.munmap(0xdead_0000).unwrap_err().0, 22);
    assert_eq!(p.close(99).unwrap_err().0, 9);
    assert_eq!(sim.mount("zfs", "/z").unwrap_err().0, 45);
    assert_eq!(sim.add_file("relative", 1).unwrap_err().0, 2);
}

#[test]
fn concurrent_mapping_and_faulting_stays_balanced() {
    let sim = sim();
    for i in 0..4 {
        sim.add_file(&format!("/Volumes/Data/f{i}"), 32 * PS)
            .unwrap();
    }
    let procs: Vec<_> = (0..6).map(|i| sim.spawn(&format!("w{i}"), 501)).collect();
    std::thread::scope(|s| {
        for (n, p) in procs.iter().enumerate() {
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(n as u64);
                for _ in 0..60 {
                    let path = format!("/Volumes/Data/f{}", rng.usize(..4));
                    let fd = p.open(&path).unwrap();
                    let a = p
                        .mmap(fd, 32 * PS, prot::READ, map_flags::SHARED, 0)
                        .unwrap();
                    p.touch(a + rng.u64(..32) * PS, PS).unwrap();
                    p.munmap(a).unwrap();
                    p.close(fd).unwrap();
                }
            });
        }
    });
    sim.check_balanced().unwrap();
    for i in 0..4 {
        let c = sim.counts(&format!("/Volumes/Data/f{i}")).unwrap();
        assert_eq!((c.usecount, c.iocount, c.mapped), (0, 0, false));
    }
    let t = sim.trace();
    let maps = t.iter().filter(|e| e.op == TraceOp::Mmap).count();
    assert_eq!(maps, 2 * 6 * 60, "two VNOP_MMAPs per shared mmap(2)");
    let mnomaps = t.iter().filter(|e| e.op == TraceOp::Mnomap).count();
    assert!(mnomaps >= 1 && mnomaps <= maps);
    let tids: std::collections::HashSet<u64> = t.iter().map(|e| e.tid).collect();
    assert!(
        tids.len() >= 6,
        "operations ran on several simulated threads"
    );
}

#[test]
fn a_sim_moves_between_threads_and_the_next_boot_waits_for_it() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let sim = sim();
    send_sync(&sim);
    let p = sim.spawn("mover", 501);
    send_sync(&p);
    let t = std::thread::spawn(move || {
        let fd = p.open("/bin/app").unwrap();
        p.close(fd).unwrap();
        sim.counts("/bin/app").unwrap().usecount
    });
    assert_eq!(t.join().unwrap(), 0);
    // The moved Sim was dropped on that thread; booting again works.
    let again = Sim::boot(Config::default());
    assert!(again.counts("/bin/app").is_none(), "a fresh kernel");
}

#[test]
fn a_held_pagein_blocks_the_fault_until_released() {
    use maptrace_sim::Vop;
    use std::time::Duration;
    let sim = sim();
    let (p, _, a) = map_for_reading(&sim, "/Volumes/Data/db", 8, map_flags::SHARED);
    let hold = sim.hold_vnop(Vop::Pagein);
    assert!(
        !hold.wait_held(1, Duration::from_millis(20)),
        "nothing is blocked yet"
    );
    std::thread::scope(|s| {
        let t = s.spawn(|| p.touch(a, 1));
        assert!(hold.wait_held(1, Duration::from_secs(10)));
        assert!(!t.is_finished(), "the fault waits in the filesystem");
        hold.release();
        assert_eq!(t.join().unwrap().unwrap().pageins, 1);
    });
    // Released: later faults do not block.
    assert_eq!(p.touch(a + 4 * PS, 1).unwrap().pageins, 1);
}

#[test]
fn the_trace_keeps_the_newest_events_up_to_its_capacity() {
    let sim = Sim::boot(Config {
        trace_capacity: 3,
        ..Config::default()
    });
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 8 * PS).unwrap();
    let p = sim.spawn("r", 501);
    let fd = p.open("/f").unwrap();
    for _ in 0..3 {
        p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    }
    let t = sim.trace();
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.last().unwrap().seq,
        12,
        "the open and 3 shared mmaps made 13 events (check, mmap_check, mmap, mmap)"
    );
    assert_eq!(t[0].seq, 10);
}

#[test]
fn evicted_pages_are_paged_in_again() {
    let sim = sim();
    let (p, _, a) = map_for_reading(&sim, "/Volumes/Data/db", 8, map_flags::SHARED);
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 2);
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 0);
    assert_eq!(sim.evict("/Volumes/Data/db"), Ok(8));
    // The object remembers the sequential run (vm_object_cluster_size):
    // the re-read streams all 8 pages in one read.
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 1);
    assert_eq!(sim.evict("/nope").unwrap_err().0, 2);
}

#[test]
fn fork_shares_files_and_inherits_mappings_without_vnop_mmap() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let parent = sim.spawn("launchd", 0);
    parent.exec("/bin/app").unwrap();
    let fd = parent.open(db).unwrap();
    let a = parent
        .mmap(fd, 8 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    parent.touch(a, 1).unwrap();
    assert_eq!(sim.counts(db).unwrap().usecount, 2, "open + mapping");
    let text_before = sim.counts("/bin/app").unwrap().usecount;
    let child = parent.fork().unwrap();
    assert_ne!(child.pid(), parent.pid());
    assert_eq!(child.name(), "app");
    assert_eq!(
        sim.counts(db).unwrap().usecount,
        2,
        "fork shares the open and the mapped epoch"
    );
    assert_eq!(
        sim.counts("/bin/app").unwrap().usecount,
        text_before + 1,
        "the child's text reference"
    );
    assert_eq!(
        ops(&sim, TraceOp::Mmap, db),
        2,
        "fork does not call VNOP_MMAP (the 2 are the shared mmap's)"
    );
    assert_eq!(child.touch(a, 1).unwrap().hits, 1, "same pages");
    parent.munmap(a).unwrap();
    parent.close(fd).unwrap();
    assert_eq!(ops(&sim, TraceOp::Mnomap, db), 0, "the child still maps it");
    assert_eq!(
        sim.counts(db).unwrap().usecount,
        2,
        "the child still has the file open"
    );
    sim.check_balanced().unwrap();
    child.exit();
    assert_eq!(
        ops(&sim, TraceOp::Mnomap, db),
        1,
        "the last unmap was the child's"
    );
    assert_eq!(sim.counts(db).unwrap().usecount, 0);
    parent.exit();
    sim.check_balanced().unwrap();
    assert_eq!(
        parent.fork().unwrap_err().0,
        3,
        "an exited process cannot fork"
    );
}

// ------------------------------------------------------------------------
// mmap(2) as osfmk/vm/vm_map.c and bsd/kern/kern_mman.c (xnu-11417.101.15)
// make it.

const RX: i32 = prot::READ | prot::EXEC;
const RWX: i32 = prot::READ | prot::WRITE | prot::EXEC;

/// vm_map_enter_mem_object_control calls memory_object_map for the named
/// object, then hands the same object to vm_map_enter, which calls it again
/// (vm_map.c:5093 and 3698, xnu-11417.101.15; the same in xnu-6153.141.1):
/// two VNOP_MMAPs for one MAP_SHARED mmap(2), one for MAP_PRIVATE (an
/// unnamed copy object reaches vm_map_enter).
#[test]
fn a_shared_mmap_calls_vnop_mmap_twice_and_a_private_one_once() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (p, fd, _) = map_for_reading(&sim, db, 1, map_flags::SHARED);
    let maps = events(&sim, TraceOp::Mmap, db);
    assert_eq!(maps.len(), 2, "memory_object_map twice for MAP_SHARED");
    assert_eq!(maps[0].tid, maps[1].tid, "in the caller's thread");
    assert_eq!(sim.counts(db).unwrap().usecount, 2, "still one mapping ref");
    p.mmap(fd, PS, prot::READ, map_flags::PRIVATE, 0).unwrap();
    assert_eq!(
        events(&sim, TraceOp::Mmap, db).len(),
        3,
        "once for MAP_PRIVATE"
    );
    sim.check_balanced().unwrap();
}

/// VNOP_MMAP's a_fflags is pager_prot = the mapping's max protection, minus
/// WRITE for copy-on-write (vm_map.c:3674-3680, 5077-5080,
/// xnu-11417.101.15). maxprot is EXECUTE, READ for FREAD, WRITE for a
/// shared map of an FWRITE open or any private map (kern_mman.c:604-651).
#[test]
fn vnop_mmap_sees_the_max_protection_not_the_requested_one() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let ro = p.open(db).unwrap();
    let rw = p.open_mode(db, OpenMode::ReadWrite).unwrap();
    let cases = [
        (ro, prot::READ, map_flags::SHARED, RX, RX),
        (rw, prot::READ, map_flags::SHARED, RWX, RWX),
        (ro, prot::READ | prot::WRITE, map_flags::PRIVATE, RWX, RX),
        (rw, prot::READ, map_flags::PRIVATE, RWX, RX),
    ];
    for (fd, pr, fl, maxprot, fflags) in cases {
        let before = sim.trace().len();
        p.mmap(fd, PS, pr, fl, 0).unwrap();
        let new: Vec<_> = sim.trace().split_off(before);
        let check = new.iter().find(|e| e.op == TraceOp::FileCheckMmap).unwrap();
        assert_eq!(
            (check.prot, check.maxprot),
            (pr, maxprot),
            "mac_file_check_mmap's prot and maxprot for {pr:#x}/{fl:#x}"
        );
        for m in new.iter().filter(|e| e.op == TraceOp::Mmap) {
            assert_eq!(m.prot, fflags, "a_fflags for prot {pr:#x} flags {fl:#x}");
        }
    }
    sim.check_balanced().unwrap();
}

/// A shared writable map of a descriptor opened without FWRITE is EACCES
/// before any MAC check (kern_mman.c:619-648, xnu-11417.101.15); a private
/// writable map of it is fine (copy-on-write never writes the file).
#[test]
fn a_shared_writable_map_of_a_read_only_descriptor_is_eacces() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let ro = p.open(db).unwrap();
    let rw_prot = prot::READ | prot::WRITE;
    assert_eq!(
        p.mmap(ro, PS, rw_prot, map_flags::SHARED, 0).unwrap_err().0,
        13
    );
    assert!(
        sim.trace().iter().all(|t| t.op == TraceOp::Open),
        "refused before mac_file_check_mmap"
    );
    assert_eq!(sim.counts(db).unwrap().iocount, 0, "the iocount went back");
    p.mmap(ro, PS, rw_prot, map_flags::PRIVATE, 0).unwrap();
    let rw = p.open_mode(db, OpenMode::ReadWrite).unwrap();
    p.mmap(rw, PS, rw_prot, map_flags::SHARED, 0).unwrap();
    sim.check_balanced().unwrap();
}

/// A touch of a PROT_NONE mapping is a protection failure before any
/// pager: `vm_map_lookup_and_lock_object` refuses a fault whose type the
/// entry's protection lacks (osfmk/vm/vm_map.c, xnu-11417.121.6), so no
/// VNOP_PAGEIN reaches the filesystem (the process gets SIGBUS: EFAULT here).
#[test]
fn touching_a_prot_none_mapping_faults_without_a_pagein() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let fd = p.open(db).unwrap();
    let none = p.mmap(fd, 4 * PS, 0, map_flags::SHARED, 0).unwrap();
    assert_eq!(p.touch(none, PS).unwrap_err().0, 14, "EFAULT");
    assert_eq!(ops(&sim, TraceOp::Pagein, db), 0);
    // The same pages through a readable mapping page in.
    let r = p
        .mmap(fd, 4 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    p.touch(r, PS).unwrap();
    assert!(ops(&sim, TraceOp::Pagein, db) > 0);
    sim.check_balanced().unwrap();
}

/// mmap implies PROT_READ for a write or execute request ("the hardware
/// does not support writing without read-before-write, or
/// execution-without-read": bsd/kern/kern_mman.c, radar 3777787,
/// xnu-11417.121.6), before the MAC check, so a write-only or exec-only
/// map is readable and its VNOP_MMAP asks for read too.
#[test]
fn a_write_or_exec_only_map_is_also_readable() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("writer", 501);
    let rw = p.open_mode(db, OpenMode::ReadWrite).unwrap();
    for pr in [prot::WRITE, prot::EXEC] {
        let before = sim.trace().len();
        let m = p.mmap(rw, PS, pr, map_flags::SHARED, 0).unwrap();
        p.touch(m, PS).unwrap();
        let new = sim.trace().split_off(before);
        let mac = new
            .iter()
            .find(|t| t.op == TraceOp::FileCheckMmap)
            .expect("the MAC check");
        assert_eq!(mac.prot, pr | prot::READ, "prot {pr:#x}");
    }
    sim.check_balanced().unwrap();
}

/// VNOP_MMAP_CHECK gets `prot & ~PROT_WRITE` for MAP_PRIVATE and prot for
/// MAP_SHARED (kern_mman.c:671-672, xnu-11417.101.15).
#[test]
fn vnop_mmap_check_gets_prot_without_write_for_a_private_map() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("writer", 501);
    let rw = p.open_mode(db, OpenMode::ReadWrite).unwrap();
    let rw_prot = prot::READ | prot::WRITE;
    p.mmap(rw, PS, rw_prot, map_flags::PRIVATE, 0).unwrap();
    p.mmap(rw, PS, rw_prot, map_flags::SHARED, 0).unwrap();
    let checks: Vec<i32> = events(&sim, TraceOp::MmapCheck, db)
        .iter()
        .map(|e| e.prot)
        .collect();
    assert_eq!(checks, vec![prot::READ, rw_prot]);
}

/// An O_EVTONLY open's reference counts in v_usecount and v_kusecount
/// (vnode_ref_ext, bsd/vfs/vfs_subr.c:2363-2367, xnu-11417.101.15); close
/// drops both.
#[test]
fn an_evtonly_open_is_a_kusecount_too() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("watcher", 501);
    let fd = p.open_mode(db, OpenMode::EvtOnly).unwrap();
    let c = sim.counts(db).unwrap();
    assert_eq!((c.usecount, c.kusecount), (1, 1));
    let plain = p.open(db).unwrap();
    let c = sim.counts(db).unwrap();
    assert_eq!((c.usecount, c.kusecount), (2, 1));
    p.close(fd).unwrap();
    p.close(plain).unwrap();
    let c = sim.counts(db).unwrap();
    assert_eq!((c.usecount, c.kusecount), (0, 0));
    sim.check_balanced().unwrap();
}

// ------------------------------------------------------------------------
// exec and posix_spawn as bsd/kern/kern_exec.c and bsd/kern/mach_loader.c
// (xnu-11417.101.15) run them.

fn with_dyld() -> Sim {
    let sim = sim();
    sim.add_file("/usr/lib/dyld", 32 * PS).unwrap();
    sim.add_file("/bin/tool", 16 * PS).unwrap();
    sim
}

/// __mac_execve maps the new image (exec_activate_image, kern_exec.c:5525)
/// before it terminates the old task (5715): the old image's last unmaps
/// come after the new image's maps.
#[test]
fn exec_maps_the_new_image_before_the_old_one_goes() {
    let sim = with_dyld();
    let p = sim.spawn("sh", 501);
    p.exec("/bin/app").unwrap();
    let fd = p.open("/Volumes/Data/db").unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    let before = sim.trace().len();
    p.exec("/bin/tool").unwrap();
    let t: Vec<(TraceOp, String)> = sim.trace()[before..]
        .iter()
        .map(|e| (e.op, e.path.clone()))
        .collect();
    let first_mnomap = t.iter().position(|(op, _)| *op == TraceOp::Mnomap).unwrap();
    let last_map = t.iter().rposition(|(op, _)| *op == TraceOp::Mmap).unwrap();
    assert!(
        last_map < first_mnomap,
        "maps, then the old task's unmaps: {t:?}"
    );
    assert!(t.contains(&(TraceOp::Mnomap, "/bin/app".into())));
    assert!(t.contains(&(TraceOp::Mnomap, "/Volumes/Data/db".into())));
    assert_eq!(sim.counts("/bin/app").unwrap().usecount, 0);
    assert_eq!(
        sim.counts("/bin/tool").unwrap().usecount,
        2,
        "text + mapping"
    );
    sim.check_balanced().unwrap();
}

/// Re-executing the same binary: the new maps join the mapped epoch the old
/// image holds, so there is no VNOP_MNOMAP and the usecount never drops.
#[test]
fn re_exec_of_the_same_binary_has_no_last_unmap() {
    let sim = with_dyld();
    let p = sim.spawn("app", 501);
    p.exec("/bin/app").unwrap();
    p.exec("/bin/app").unwrap();
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/bin/app"), 0);
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/usr/lib/dyld"), 0);
    assert_eq!(ops(&sim, TraceOp::Mmap, "/bin/app"), 6);
    assert_eq!(sim.counts("/bin/app").unwrap().usecount, 2);
    sim.check_balanced().unwrap();
}

/// load_dylinker maps /usr/lib/dyld with map_segment in the same exec
/// (mach_loader.c:2883-2984); map_segment is copy-on-write, so a_fflags is
/// each segment's maxprot minus WRITE (vm_map.c:5077-5080): __TEXT r-x,
/// __DATA r--, __LINKEDIT r--.
#[test]
fn exec_maps_dyld_and_every_segment_is_copy_on_write() {
    let sim = with_dyld();
    let p = sim.spawn("sh", 501);
    p.exec("/bin/app").unwrap();
    for path in ["/bin/app", "/usr/lib/dyld"] {
        let fflags: Vec<i32> = events(&sim, TraceOp::Mmap, path)
            .iter()
            .map(|e| e.prot)
            .collect();
        assert_eq!(fflags, vec![RX, prot::READ, prot::READ], "{path}");
    }
    assert_eq!(p.mappings().len(), 6, "three segments each");
    assert_eq!(
        sim.counts("/usr/lib/dyld").unwrap().usecount,
        1,
        "the mapping ref"
    );
    assert_eq!(ops(&sim, TraceOp::FileCheckMmap, "/usr/lib/dyld"), 0);
    p.exit();
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/usr/lib/dyld"), 1);
    sim.check_balanced().unwrap();
}

/// The kernel reads the Mach-O header with vn_rdwr (kern_exec.c:2533,
/// mach_loader.c get_macho_vnode), so page 0 is cached and never paged in
/// by the loader; the image then runs on cloneproc's new thread
/// (kern_exec.c:5498), so dyld's first faults have another thread id than
/// the exec's maps.
#[test]
fn exec_caches_the_header_and_faults_on_a_new_thread() {
    let sim = with_dyld();
    let p = sim.spawn("sh", 501);
    p.exec("/bin/app").unwrap();
    let maps = events(&sim, TraceOp::Mmap, "/bin/app");
    let pageins = events(&sim, TraceOp::Pagein, "/bin/app");
    assert!(
        !pageins.is_empty(),
        "dyld faults the entry and __DATA pages"
    );
    assert!(
        pageins.iter().all(|e| e.offset != 0),
        "the header page came in by VNOP_READ: {pageins:?}"
    );
    assert!(
        pageins
            .iter()
            .all(|e| e.tid != maps[0].tid && e.pid == maps[0].pid)
    );
    // Later operations stay on the new thread.
    let fd = p.open("/Volumes/Data/db").unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::PRIVATE, 0).unwrap();
    assert_eq!(
        events(&sim, TraceOp::Mmap, "/Volumes/Data/db")[0].tid,
        pageins[0].tid
    );
}

/// posix_spawn runs load_machfile in the parent's thread (kern_exec.c:4511)
/// and ubc_map uses vfs_context_current(): the child's image and dyld maps
/// are the parent's (launchd's, for an app launch); the child faults.
#[test]
fn spawn_maps_as_the_parent_and_the_child_faults() {
    let sim = with_dyld();
    let launchd = sim.spawn("launchd", 0);
    let fd = launchd.open("/Volumes/Data/db").unwrap();
    let child = launchd.posix_spawn("/bin/app").unwrap();
    assert_ne!(child.pid(), launchd.pid());
    assert_eq!(child.name(), "app");
    assert!(child.fds().is_empty(), "POSIX_SPAWN_CLOEXEC_DEFAULT");
    let maps = events(&sim, TraceOp::Mmap, "/bin/app");
    assert_eq!(maps.len(), 3);
    assert!(maps.iter().all(|e| e.pid == launchd.pid()));
    assert!(
        events(&sim, TraceOp::Mmap, "/usr/lib/dyld")
            .iter()
            .all(|e| e.pid == launchd.pid())
    );
    assert_eq!(ops(&sim, TraceOp::Pagein, "/bin/app"), 0, "not started yet");
    let t = child.start().unwrap();
    assert!(t.pageins >= 1);
    assert!(
        events(&sim, TraceOp::Pagein, "/bin/app")
            .iter()
            .all(|e| e.pid == child.pid())
    );
    assert_eq!(child.mappings().len(), 6);
    assert!(launchd.mappings().is_empty(), "the maps are the child's");
    assert_eq!(
        sim.counts("/bin/app").unwrap().usecount,
        2,
        "text + mapping"
    );
    child.exit();
    assert_eq!(ops(&sim, TraceOp::Mnomap, "/bin/app"), 1);
    launchd.close(fd).unwrap();
    sim.check_balanced().unwrap();
}

// ------------------------------------------------------------------------
// Forced unmount and jetsam.

/// The MNOMAP of a forced unmount runs in the thread of the process that
/// called unmount(2), with vflush's iocount on top of ubc_unmap's
/// (bsd/vfs/vfs_subr.c:2945, bsd/kern/ubc_subr.c:2256, xnu-11417.101.15).
#[test]
fn a_forced_unmount_unmaps_in_the_callers_thread_with_iocount_2() {
    use maptrace_sim::Vop;
    use std::time::Duration;
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (reader, fd, _) = map_for_reading(&sim, db, 1, map_flags::SHARED);
    let umount = sim.spawn("umount", 0);
    let hold = sim.hold_vnop(Vop::Mnomap);
    std::thread::scope(|s| {
        let t = s.spawn(|| umount.unmount("/Volumes/Data", true));
        assert!(hold.wait_held(1, Duration::from_secs(10)));
        let c = sim.counts(db).unwrap();
        assert_eq!(
            (c.usecount, c.iocount),
            (2, 2),
            "open + mapping; vflush + ubc_unmap"
        );
        hold.release();
        t.join().unwrap().unwrap();
    });
    let m = events(&sim, TraceOp::Mnomap, db);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].pid, umount.pid(), "the unmount(2) caller's");
    reader.close(fd).unwrap();
}

/// Without a caller, Sim::unmount is diskarbitrationd's (an eject), not
/// kernel_task's.
#[test]
fn an_eject_unmaps_as_diskarbitrationd() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (reader, fd, _) = map_for_reading(&sim, db, 1, map_flags::SHARED);
    sim.unmount("/Volumes/Data", true).unwrap();
    let m = events(&sim, TraceOp::Mnomap, db);
    let p = sim.proc(m[0].pid).unwrap();
    assert_eq!((p.name(), p.uid()), ("diskarbitrationd".into(), 0));
    reader.close(fd).unwrap();
}

/// jetsam_do_kill calls exit_with_reason from the memorystatus thread
/// (bsd/kern/kern_memorystatus.c, xnu-11417.101.15): the victim's last
/// unmaps are pid 0's.
#[test]
fn a_jetsam_kill_unmaps_as_the_kernel() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("victim", 501);
    let fd = p.open(db).unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
    sim.jetsam(&p).unwrap();
    let m = events(&sim, TraceOp::Mnomap, db);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].pid, 0);
    assert!(p.mappings().is_empty() && p.fds().is_empty());
    assert_eq!(sim.jetsam(&p).unwrap_err().0, 3, "already gone");
    sim.check_balanced().unwrap();
}

// ------------------------------------------------------------------------
// Page-ins as osfmk/vm/vm_object.c, vm_fault.c, bsd_vm.c and
// bsd/vm/vnode_pager.c (xnu-11417.101.15) make them.

fn pageins_of(sim: &Sim, path: &str) -> Vec<(i64, u64, i32)> {
    events(sim, TraceOp::Pagein, path)
        .iter()
        .map(|e| (e.offset, e.size, e.prot))
        .collect()
}

/// vnode_pagein takes an iocount with vnode_getalways_from_pager before
/// VNOP_PAGEIN since macOS 11 (bsd/vm/vnode_pager.c:629 in
/// xnu-11417.101.15, 622 in xnu-7195.141.2); xnu-6153.141.1 (10.15) takes
/// none.
#[test]
fn a_pagein_holds_an_iocount_since_macos_11_but_not_on_catalina() {
    use maptrace_sim::Vop;
    use std::time::Duration;
    for (release, io) in [(Release::Sequoia, 1), (Release::Catalina, 0)] {
        let sim = Sim::boot(Config { release, ..intel() });
        sim.mount("hfs", "/Volumes/Data").unwrap();
        sim.add_file("/Volumes/Data/db", 8 * PS).unwrap();
        let (p, _, a) = map_for_reading(&sim, "/Volumes/Data/db", 8, map_flags::SHARED);
        let hold = sim.hold_vnop(Vop::Pagein);
        std::thread::scope(|s| {
            let t = s.spawn(|| p.touch(a, 1));
            assert!(hold.wait_held(1, Duration::from_secs(10)));
            let c = sim.counts("/Volumes/Data/db").unwrap();
            assert_eq!((c.usecount, c.iocount), (2, io), "{release:?}");
            hold.release();
            t.join().unwrap().unwrap();
        });
        assert_eq!(sim.counts("/Volumes/Data/db").unwrap().iocount, 0);
    }
}

/// vnode_pager_cluster_read passes 0 or UPL_IOSTREAMING (bsd_vm.c:851-856),
/// never UPL_IOSYNC; a sequential run of 3 pages or more streams and reads
/// ahead only (vm_object.c:6774-6782).
#[test]
fn fault_pageins_pass_0_or_iostreaming_and_sequential_runs_stream() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (p, _, a) = map_for_reading(&sim, db, 64, map_flags::SHARED);
    p.touch(a, 64 * PS).unwrap();
    let got = pageins_of(&sim, db);
    assert!(
        got.iter().all(|(_, _, f)| *f == 0 || *f == 0x100),
        "{got:?}"
    );
    assert_eq!(got[0], (0, 4 * PS, 0), "a fresh object primes with 16 KiB");
    assert_eq!(
        got[1],
        (4 * PS as i64, 4 * PS, 0x100),
        "3 pages used: stream"
    );
    let sizes: Vec<u64> = got.iter().map(|g| g.1).collect();
    assert!(
        sizes.iter().any(|s| *s > 4 * PS),
        "the run grows the cluster: {sizes:?}"
    );
    assert!(
        got.len() < 16,
        "fewer, larger reads than fixed 16 KiB clusters"
    );
    assert!(
        got.iter().all(|(_, s, _)| *s <= 128 << 10),
        "SSD maximum 128 KiB"
    );
}

/// A random fault's cluster is centred on it (head = trunc_page(pre / 2),
/// vm_object.c:6868), never bridges resident pages and stays inside the map
/// entry's [lo_offset, hi_offset) (vm_map.c:14875-14877).
#[test]
fn clusters_are_centred_on_the_fault_and_clipped_to_the_mapping() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let (p, fd, a) = map_for_reading(&sim, db, 64, map_flags::PRIVATE);
    p.touch(a + 5 * PS, 1).unwrap();
    p.touch(a, 1).unwrap();
    assert_eq!(
        pageins_of(&sim, db),
        vec![(3 * PS as i64, 4 * PS, 0), (0, 3 * PS, 0)],
        "12K+16K, then 0K+12K up to the resident page"
    );
    // A mapping of pages 20..22: a fault on page 20 reads nothing before it.
    let w = p
        .mmap(fd, 2 * PS, prot::READ, map_flags::PRIVATE, 20 * PS)
        .unwrap();
    p.touch(w, 1).unwrap();
    assert_eq!(pageins_of(&sim, db)[2], (20 * PS as i64, 2 * PS, 0));
}

/// Apple silicon: 16 KiB pages (ARM_PGSHIFT 14, osfmk/arm64/proc_reg.h), an
/// SSD minimum of 16 KiB, so a first fault reads one page; the default
/// Config is this platform, whose timebase (125/3) it pairs with.
#[test]
fn apple_silicon_faults_one_16k_page_then_streams() {
    let c = Config::default();
    assert_eq!((c.page_size, c.timebase), (16384, (125, 3)));
    let sim = Sim::boot(c);
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 1 << 20).unwrap();
    let p = sim.spawn("r", 501);
    let fd = p.open("/f").unwrap();
    let a = p
        .mmap(fd, 1 << 20, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    let t = p.touch(a + 3 * 16384 + 100, 1).unwrap();
    assert_eq!((t.pages, t.pageins), (1, 1));
    assert_eq!(pageins_of(&sim, "/f"), vec![(3 * 16384, 16384, 0)]);
    p.touch(a, 1 << 20).unwrap();
    let got = pageins_of(&sim, "/f");
    assert!(got.iter().all(|(o, s, _)| o % 16384 == 0 && s % 16384 == 0));
    assert!(
        got.iter().any(|(_, s, f)| *s > 16384 && *f == 0x100),
        "{got:?}"
    );
}
