//! The seeds, end to end: the real shim and core on the simulated kernel,
//! events read through `kern.maptrace.events` and decoded like the
//! companion does, checked against XNU semantics and the simulator's own
//! ground truth (its vnode counts and its trace of what reached the
//! filesystems).

use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_abi::{EventKind, ProbeMethod};
use maptrace_sim::{Config, Platform, Sim, TraceOp, map_flags, prot};
use maptrace_system_tests::{Tunables, boot_loaded, drain};

const PAGE: u64 = 4096;

/// The records of one process in time order (shards are drained in turn).
fn of_pid(recs: &[Record], pid: i32) -> Vec<Record> {
    let mut v: Vec<Record> = recs
        .iter()
        .filter(|r| r.pid == pid as u32)
        .cloned()
        .collect();
    v.sort_by_key(|r| (r.timestamp_ns, r.shard, r.pos));
    v
}

fn kinds(recs: &[Record], kind: EventKind) -> Vec<Record> {
    recs.iter().filter(|r| r.kind == kind).cloned().collect()
}

fn mmap_counts(r: &Record) -> (u16, Option<u16>, ProbeMethod) {
    match &r.event {
        Event::Mmap { counts, .. }
        | Event::Mnomap { counts, .. }
        | Event::Pagein { counts, .. } => (counts.usecount, counts.iocount, counts.method),
        other => panic!("no counts in {other:?}"),
    }
}

fn path_of(recs: &[Record], vnode_id: u64) -> Option<String> {
    recs.iter().find_map(|r| match &r.event {
        Event::Path { path, .. } if r.vnode_id == vnode_id => {
            Some(String::from_utf8_lossy(path).into_owned())
        }
        _ => None,
    })
}

/// Ground truth: (offset, size) of every VNOP_PAGEIN that reached `path`.
fn traced_pageins(sim: &Sim, path: &str) -> Vec<(i64, u64)> {
    sim.trace()
        .iter()
        .filter(|t| t.op == TraceOp::Pagein && t.path == path)
        .map(|t| (t.offset, t.size))
        .collect()
}

fn pageins(recs: &[Record]) -> Vec<(i64, u64)> {
    recs.iter()
        .filter_map(|r| match r.event {
            Event::Pagein { offset, size, .. } => Some((offset, u64::from(size))),
            _ => None,
        })
        .collect()
}

#[test]
fn two_maps_one_reference_faults_and_one_mnomap() {
    // 4 KiB pages, whose clusters this test counts.
    let sim = boot_loaded(
        Config::for_platform(Platform::IntelSsd),
        Tunables::default(),
    );
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let path = "/data/a.bin";
    let p = sim.spawn("app", 501);
    let fd = p.open(path).expect("open");
    let before = sim.counts(path).expect("vnode").usecount;

    let a1 = p
        .mmap(fd, 16 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map 1");
    let after_first = sim.counts(path).expect("vnode").usecount;
    assert_eq!(after_first, before + 1, "ubc_map takes one reference");
    let a2 = p
        .mmap(fd, 16 * PAGE, prot::READ, map_flags::PRIVATE, 0)
        .expect("map 2");
    assert_eq!(
        sim.counts(path).expect("vnode").usecount,
        after_first,
        "no second reference"
    );

    let recs = of_pid(&drain(&sim, &mut dec), p.pid());
    let mmaps = kinds(&recs, EventKind::Mmap);
    // XNU maps a MAP_SHARED call's object twice, a private one once
    // (osfmk/vm/vm_map.c:5093 and 3698, xnu-11417.101.15).
    assert_eq!(
        mmaps.len(),
        3,
        "two MMAPs for the shared map, one for the private: {recs:#?}"
    );
    // Counts are taken before the original, so before ubc_map's reference.
    assert_eq!(
        mmap_counts(&mmaps[0]),
        (before as u16, mmap_counts(&mmaps[0]).1, ProbeMethod::Offset)
    );
    assert_eq!(mmap_counts(&mmaps[1]).0, after_first as u16);
    assert_eq!(mmap_counts(&mmaps[2]).0, after_first as u16);
    assert!(
        mmap_counts(&mmaps[0]).1.is_some(),
        "the offset method knows iocount"
    );
    assert_eq!(mmaps[0].vnode_id, mmaps[1].vnode_id);
    assert_ne!(mmaps[0].vnode_id, 0);
    let vid = sim.counts(path).expect("vnode").vid;
    for m in &mmaps {
        let Event::Mmap { fflags, vid: v, .. } = m.event else {
            unreachable!()
        };
        // The max protection: r-x for a read-only shared map and for a
        // private (copy-on-write) one, whatever prot asked.
        assert_eq!(fflags, (prot::READ | prot::EXEC) as u32);
        assert_eq!(v, vid);
        assert_eq!(m.error, 0);
    }
    // mmap(2) shows FILE_MMAP first, on the same thread as its MMAP.
    let files = kinds(&recs, EventKind::FileMmap);
    assert_eq!(files.len(), 2);
    for (f, m) in files.iter().zip([&mmaps[0], &mmaps[2]]) {
        assert_eq!(f.tid, m.tid);
        assert!(f.timestamp_ns <= m.timestamp_ns);
        assert_eq!(f.vnode_id, 0, "the MAC hook names no vnode");
    }
    let Event::FileMmap {
        prot: fp,
        file_pos,
        mmap_flags,
        maxprot,
    } = files[1].event
    else {
        unreachable!()
    };
    assert_eq!(
        (fp, file_pos, mmap_flags),
        (prot::READ as u32, 0, map_flags::PRIVATE as u32)
    );
    assert_eq!(
        maxprot,
        (prot::READ | prot::WRITE | prot::EXEC) as u32,
        "maxprot as the kernel passed it"
    );
    assert_eq!(
        path_of(&recs, mmaps[0].vnode_id).as_deref(),
        Some(path),
        "PATH names the file"
    );

    // Faults: page 1 brings in its 16 KiB cluster (0..4, centred but
    // clipped at 0); page 2 is then cached; page 9 brings in 7..11.
    let st = p.touch(a1 + PAGE, 1).expect("touch");
    assert_eq!(st.pageins, 1);
    assert_eq!(
        p.touch(a1 + 2 * PAGE, 1).expect("touch").pageins,
        0,
        "cached page: no pagein"
    );
    assert_eq!(p.touch(a2 + 9 * PAGE, 1).expect("touch").pageins, 1);
    let recs = of_pid(&drain(&sim, &mut dec), p.pid());
    let got = pageins(&recs);
    assert_eq!(got, vec![(0, 4 * PAGE), (7 * PAGE as i64, 4 * PAGE)]);
    assert_eq!(
        got,
        traced_pageins(&sim, path),
        "exactly what reached the filesystem"
    );
    assert!(
        kinds(&recs, EventKind::Path).is_empty(),
        "no PATH from pagein"
    );

    // Unmap both: one MNOMAP, at the last one, counting the mapping reference.
    p.munmap(a1).expect("munmap 1");
    assert!(
        kinds(&drain(&sim, &mut dec), EventKind::Mnomap).is_empty(),
        "not the last mapping"
    );
    p.munmap(a2).expect("munmap 2");
    let recs = of_pid(&drain(&sim, &mut dec), p.pid());
    let mnomaps = kinds(&recs, EventKind::Mnomap);
    assert_eq!(mnomaps.len(), 1);
    assert_eq!(
        mmap_counts(&mnomaps[0]).0,
        after_first as u16,
        "still holding the reference"
    );
    assert_eq!(mnomaps[0].vnode_id, mmaps[0].vnode_id);
    assert_eq!(sim.counts(path).expect("vnode").usecount, before);
    p.close(fd).expect("close");
    sim.check_balanced().expect("balanced counts");
    sim.unload_kext().expect("unload");
}

#[test]
fn exec_maps_segments_without_file_mmap() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let p = sim.spawn("sh", 501);
    p.exec("/bin/tool").expect("exec");
    let recs = of_pid(&drain(&sim, &mut dec), p.pid());
    let mmaps = kinds(&recs, EventKind::Mmap);
    let traced = sim
        .trace()
        .iter()
        .filter(|t| t.op == TraceOp::Mmap && t.pid == p.pid())
        .count();
    assert_eq!(mmaps.len(), traced);
    assert_eq!(mmaps.len(), 3, "text, data, linkedit");
    assert!(
        kinds(&recs, EventKind::FileMmap).is_empty(),
        "exec has no MAC mmap check"
    );
    let prots: Vec<u32> = mmaps
        .iter()
        .map(|m| match m.event {
            Event::Mmap { fflags, .. } => fflags,
            _ => unreachable!(),
        })
        .collect();
    // map_segment is copy-on-write: each segment's maxprot minus WRITE.
    assert_eq!(
        prots,
        vec![
            (prot::READ | prot::EXEC) as u32,
            prot::READ as u32,
            prot::READ as u32
        ]
    );
    assert_eq!(
        path_of(&recs, mmaps[0].vnode_id).as_deref(),
        Some("/bin/tool")
    );
    assert_eq!(pageins(&recs), traced_pageins(&sim, "/bin/tool"));
    assert_eq!(
        pageins(&recs).len(),
        2,
        "dyld touches two pages of distinct clusters"
    );
    p.exit();
    let mn = kinds(&of_pid(&drain(&sim, &mut dec), p.pid()), EventKind::Mnomap);
    assert_eq!(mn.len(), 1, "exit unmaps the image once");
    sim.check_balanced().expect("balanced counts");
}

#[test]
fn task_exit_and_forced_unmount_give_mnomap() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let a = sim.spawn("a", 501);
    let fd = a.open("/data/b.bin").expect("open");
    a.mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    a.exit();
    let recs = of_pid(&drain(&sim, &mut dec), a.pid());
    let mn = kinds(&recs, EventKind::Mnomap);
    assert_eq!(mn.len(), 1, "exit: one MNOMAP");
    assert_eq!(mmap_counts(&mn[0]).0, 2, "open file + mapping reference");
    assert_eq!(sim.counts("/data/b.bin").expect("vnode").usecount, 0);

    let b = sim.spawn("b", 501);
    let hfs = "/Volumes/hfs/c.bin";
    let fd = b.open(hfs).expect("open");
    let addr = b
        .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    b.touch(addr, 1).expect("touch");
    let mmap_id = kinds(&drain(&sim, &mut dec), EventKind::Mmap)[0].vnode_id;
    // Another hfs volume stays mounted, so the hfs vector keeps the hooks
    // (on the last mount of a type they come off at the MAC unmount check,
    // before vclean: shim_unload_safety).
    sim.mount("hfs", "/Volumes/hfs2")
        .expect("a second hfs volume");
    sim.add_file("/Volumes/hfs2/d.bin", PAGE).expect("file");
    let fd2 = b.open("/Volumes/hfs2/d.bin").expect("open");
    sim.unmount("/Volumes/hfs", true).expect("forced unmount");
    let recs = drain(&sim, &mut dec);
    let mn = kinds(&recs, EventKind::Mnomap);
    assert_eq!(mn.len(), 1, "vclean unmaps the busy file once: {recs:#?}");
    assert_eq!(mn[0].vnode_id, mmap_id);
    let traced = sim
        .trace()
        .iter()
        .filter(|t| t.op == TraceOp::Mnomap && t.path == hfs)
        .count();
    assert_eq!(traced, 1);
    b.close(fd2).expect("close");
    b.exit();
    sim.unload_kext().expect("unload");
}

#[test]
fn hfs_and_apfs_vectors_are_patched_once_each() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let mut dec = Decoder::new();
    let p = sim.spawn("app", 501);
    for path in [
        "/data/a.bin",
        "/data/b.bin",
        "/Volumes/hfs/c.bin",
        "/data/a.bin",
    ] {
        let fd = p.open(path).expect("open");
        let a = p
            .mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        p.munmap(a).expect("unmap");
        p.close(fd).expect("close");
    }
    let st = maptrace_system_tests::stats(&sim, maptrace_sim::Cred::Root);
    assert_eq!(st.vectors_patched, 2, "one vector per filesystem");
    let recs = drain(&sim, &mut dec);
    let patched = recs
        .iter()
        .filter(|r| {
            matches!(
                r.event,
                Event::Mark {
                    mark: maptrace_abi::Mark::VectorPatched,
                    ..
                }
            )
        })
        .count();
    assert_eq!(patched, 2);
    assert_eq!(
        kinds(&recs, EventKind::Mmap).len(),
        8,
        "two per MAP_SHARED mmap(2)"
    );
    assert_eq!(kinds(&recs, EventKind::Mnomap).len(), 4);
    assert_eq!(st.errors, 0);
    assert_eq!(st.probe_method, maptrace_abi::raw::MT_PROBE_OFFSET);
}

#[test]
fn batches_carry_no_kernel_address() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let p = sim.spawn("app", 501);
    for path in ["/data/a.bin", "/Volumes/hfs/c.bin"] {
        let fd = p.open(path).expect("open");
        let a = p
            // An offset that is page-aligned on 16 KiB pages too.
            .mmap(fd, 8 * PAGE, prot::READ, map_flags::SHARED, 4 * PAGE)
            .expect("map");
        p.touch(a, 8 * PAGE).expect("touch");
        p.munmap(a).expect("unmap");
    }
    p.exec("/bin/tool").expect("exec");
    let name = maptrace_system_tests::raw_name(maptrace_abi::raw::MT_SYSCTL_EVENTS);
    let mut buf = maptrace_system_tests::events_buffer(&sim);
    let mut total = 0;
    loop {
        let n = sim
            .sysctl_read(name, Some(&mut buf), maptrace_sim::Cred::Root)
            .expect("read");
        if n == 0 {
            break;
        }
        total += n;
        assert_eq!(
            maptrace_system_tests::batch_kernel_addresses(&sim, &buf[..n]),
            Vec::<usize>::new()
        );
    }
    assert!(total > 20 * 64, "{total} bytes read");
    let st = maptrace_system_tests::stats(&sim, maptrace_sim::Cred::Root);
    assert_eq!(st.errors, 0);
    sim.unload_kext().expect("unload");
}

/// A time of a few milliseconds after a small pid reads, across the two
/// fields, as an address with zero low bytes; the batch scan reads each
/// clock field whole, so it flags no such value, and still finds an address
/// planted in a clock field or beside one.
#[test]
fn a_clock_reading_in_a_batch_is_no_address_but_one_planted_there_is() {
    use maptrace_abi::raw::mt_rec_header as R;
    use std::mem::offset_of;
    let sim = boot_loaded(Config::default(), Tunables::default());
    let p = sim.spawn("app", 501);
    let fd = p.open("/data/a.bin").expect("open");
    p.close(fd).expect("close");
    let name = maptrace_system_tests::raw_name(maptrace_abi::raw::MT_SYSCTL_EVENTS);
    let mut buf = maptrace_system_tests::events_buffer(&sim);
    let n = sim
        .sysctl_read(name, Some(&mut buf), maptrace_sim::Cred::Root)
        .expect("read");
    let mut batch = buf[..n].to_vec();
    // A kernel address with zero low 24 bits: the arena holds many.
    let arena = sim.kernel_address_ranges()[0].clone();
    let v = (arena.start + 0xff_ffff) & !0xff_ffff;
    assert!(arena.contains(&v), "{arena:x?}");
    // The first head slot: the batch's first segment's first slot.
    let at = offset_of!(maptrace_abi::raw::mt_batch_header, header_size);
    let slot = usize::from(u16::from_le_bytes([batch[at], batch[at + 1]]))
        + size_of::<maptrace_abi::raw::mt_segment_header>();
    let pid = slot + offset_of!(R, pid);
    let ts = slot + offset_of!(R, timestamp_ns);
    batch[pid..pid + 4].copy_from_slice(&0x42u32.to_le_bytes());
    batch[ts..ts + 8].copy_from_slice(&(v >> 24).to_le_bytes());
    assert!(
        sim.find_kernel_addresses(&batch).contains(&(pid + 1)),
        "a blind scan reads pid and time as one address"
    );
    assert_eq!(
        maptrace_system_tests::batch_kernel_addresses(&sim, &batch),
        Vec::<usize>::new()
    );
    let mut planted = batch.clone();
    planted[ts..ts + 8].copy_from_slice(&v.to_le_bytes());
    assert_eq!(
        maptrace_system_tests::batch_kernel_addresses(&sim, &planted),
        vec![ts]
    );
    let id = slot + offset_of!(R, vnode_id);
    let mut planted = batch.clone();
    planted[id..id + 8].copy_from_slice(&v.to_le_bytes());
    assert_eq!(
        maptrace_system_tests::batch_kernel_addresses(&sim, &planted),
        vec![id]
    );
    sim.unload_kext().expect("unload");
}

#[test]
fn a_recycled_vnode_gets_a_new_vid_and_path() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let mut dec = Decoder::new();
    let p = sim.spawn("app", 501);
    let map_once = |path: &str| {
        let fd = p.open(path).expect("open");
        let a = p
            .mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        p.munmap(a).expect("unmap");
        p.close(fd).expect("close");
    };
    map_once("/data/a.bin");
    let old = sim.counts("/data/a.bin").expect("vnode");
    let old_addr = sim.vnode_addr("/data/a.bin").expect("addr");
    assert!(
        sim.recycle("/data/a.bin").expect("recycle"),
        "unused: reclaimed now"
    );
    map_once("/data/b.bin");
    assert_eq!(
        sim.vnode_addr("/data/b.bin"),
        Some(old_addr),
        "the block was reused"
    );
    let recs = of_pid(&drain(&sim, &mut dec), p.pid());
    let mmaps = kinds(&recs, EventKind::Mmap);
    assert_eq!(mmaps.len(), 4, "two per MAP_SHARED mmap(2)");
    let vids: Vec<u32> = mmaps
        .iter()
        .map(|m| match m.event {
            Event::Mmap { vid, .. } => vid,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(vids, vec![old.vid, old.vid, old.vid + 1, old.vid + 1]);
    // The id keys the address with the vid: same block, new file, new identity.
    assert_ne!(
        mmaps[0].vnode_id, mmaps[2].vnode_id,
        "a recycled vnode continued the old file's identity"
    );
    let mut paths: Vec<(u32, String)> = recs
        .iter()
        .filter_map(|r| match &r.event {
            Event::Path { vid, path, .. } => {
                Some((*vid, String::from_utf8_lossy(path).into_owned()))
            }
            _ => None,
        })
        .collect();
    paths.dedup();
    assert_eq!(
        paths,
        vec![
            (old.vid, "/data/a.bin".to_string()),
            (old.vid + 1, "/data/b.bin".to_string())
        ]
    );
    sim.check_balanced().expect("balanced");
}
