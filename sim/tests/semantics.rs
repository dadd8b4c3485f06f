//! XNU semantics the simulator pins without any kext loaded: mapping
//! references, MNOMAP on the last unmap, the page cache, exec, exit, forced
//! unmount, recycling and concurrency.

use maptrace_sim::{Config, Release, Sim, TraceOp, map_flags, prot};

const PS: u64 = 4096;

fn sim() -> Sim {
    let sim = Sim::boot(Config::default());
    sim.mount("apfs", "/").unwrap();
    sim.mount("hfs", "/Volumes/Data").unwrap();
    sim.add_file("/bin/app", 16 * PS).unwrap();
    sim.add_file("/Volumes/Data/db", 64 * PS).unwrap();
    sim
}

fn ops(sim: &Sim, op: TraceOp, path: &str) -> usize {
    sim.trace()
        .iter()
        .filter(|e| e.op == op && e.path == path)
        .count()
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
    assert_eq!(ops(&sim, TraceOp::Mmap, db), 2, "VNOP_MMAP on every map");
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
        vec![TraceOp::FileCheckMmap, TraceOp::MmapCheck, TraceOp::Mmap]
    );
}

#[test]
fn touching_a_page_twice_pages_it_in_once_in_clusters() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let fd = p.open(db).unwrap();
    let a = p
        .mmap(fd, 64 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
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
    // The default cluster is 4 pages: page 5 reads pages 4..8.
    assert_eq!(
        (pageins[0].offset, pageins[0].size),
        (4 * PS as i64, 4 * PS)
    );
    // Pages 4..8 are resident now; page 6 is a hit, page 8 starts a new cluster.
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

#[test]
fn forced_unmount_unmaps_and_kills_the_mapping() {
    let sim = sim();
    let db = "/Volumes/Data/db";
    let p = sim.spawn("reader", 501);
    let fd = p.open(db).unwrap();
    let a = p
        .mmap(fd, 4 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
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
    assert_eq!(maps, 6 * 60);
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
    let p = sim.spawn("reader", 501);
    let fd = p.open("/Volumes/Data/db").unwrap();
    let a = p
        .mmap(fd, 8 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
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
        8,
        "3 mmaps made 9 events (check, mmap_check, mmap)"
    );
    assert_eq!(t[0].seq, 6);
}

#[test]
fn evicted_pages_are_paged_in_again() {
    let sim = sim();
    let p = sim.spawn("reader", 501);
    let fd = p.open("/Volumes/Data/db").unwrap();
    let a = p
        .mmap(fd, 8 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 2);
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 0);
    assert_eq!(sim.evict("/Volumes/Data/db"), Ok(8));
    assert_eq!(p.touch(a, 8 * PS).unwrap().pageins, 2);
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
        1,
        "fork does not call VNOP_MMAP"
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
