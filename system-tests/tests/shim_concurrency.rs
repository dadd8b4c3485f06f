//! Several processes on several threads at once through the real shim:
//! every event the kernel produced is accounted for, delivered or counted
//! as dropped, never both and never lost silently.

use std::collections::HashSet;

use maptrace_abi::decode::{Decoder, Record};
use maptrace_abi::{EventKind, raw};
use maptrace_sim::{Config, Cred, Platform, Proc, Sim, map_flags, prot};
use maptrace_system_tests::{
    Tunables, boot_loaded, config_bytes, drain, event_records, stats, traced, write_config,
};

const PAGE: u64 = 4096;
const WORKERS: usize = 6;
const ROUNDS: usize = 12;

/// Maps a fresh file each round (so it faults), touches it, unmaps.
fn worker(p: &Proc, w: usize) {
    for r in 0..ROUNDS {
        let path = format!("/data/w{w}/f{r}.bin");
        let fd = p.open(&path).expect("open");
        let a = p
            .mmap(fd, 16 * PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
        let b = p
            .mmap(fd, 16 * PAGE, prot::READ, map_flags::PRIVATE, 0)
            .expect("map");
        p.touch(a, 16 * PAGE).expect("touch");
        p.munmap(a).expect("unmap");
        p.munmap(b).expect("unmap");
        p.close(fd).expect("close");
    }
}

/// Boots with per-worker files and records only the four event kinds.
fn setup(t: Tunables) -> (Sim, Decoder, usize) {
    let sim = boot_loaded(
        // 4 KiB pages, whose clusters the tests count.
        Config {
            cpus: 4,
            ..Config::for_platform(Platform::IntelSsd)
        },
        t,
    );
    for w in 0..WORKERS {
        for r in 0..ROUNDS {
            sim.add_file(&format!("/data/w{w}/f{r}.bin"), 16 * PAGE)
                .expect("file");
        }
    }
    let mask = raw::MT_EVMASK_MMAP
        | raw::MT_EVMASK_PAGEIN
        | raw::MT_EVMASK_MNOMAP
        | raw::MT_EVMASK_FILE_MMAP;
    write_config(&sim, &config_bytes(raw::MT_CF_ENABLE, mask, 0), Cred::Root).expect("config");
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let t0 = traced(&sim);
    (sim, dec, t0)
}

fn run_workers(sim: &Sim) {
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let p = sim.spawn("worker", 501);
            s.spawn(move || worker(&p, w));
        }
    });
}

#[test]
fn delivered_plus_dropped_equals_produced_with_a_full_ring() {
    let (sim, mut dec, t0) = setup(Tunables {
        nshards: 2,
        slots: 64,
        ..Tunables::default()
    });
    run_workers(&sim);
    let recs = drain(&sim, &mut dec);
    let produced = traced(&sim) - t0;
    let st = stats(&sim, Cred::Root);
    let delivered = event_records(&recs);
    assert!(
        st.dropped() > 0,
        "a 128-slot ring must overflow ({produced} events)"
    );
    assert_eq!(
        delivered as u64 + st.dropped(),
        produced as u64,
        "delivered {delivered}, dropped {}",
        st.dropped()
    );
    assert_eq!(recs.len(), delivered, "only the four configured kinds");
    // Later records say where the loss was, never more than was counted.
    let p = sim.spawn("late", 501);
    for path in ["/data/a.bin", "/data/b.bin", "/bin/tool"] {
        let fd = p.open(path).expect("open");
        p.mmap(fd, PAGE, prot::READ, map_flags::SHARED, 0)
            .expect("map");
    }
    let later = drain(&sim, &mut dec);
    assert_eq!(
        event_records(&later),
        9,
        "3 mmap(2) checks, 2 VNOP_MMAPs per MAP_SHARED call"
    );
    let lost: u64 = recs.iter().chain(&later).map(|r| r.lost_before).sum();
    assert!(
        lost <= st.dropped() && lost > 0,
        "lost_before {lost}, dropped {}",
        st.dropped()
    );
    assert_eq!(
        stats(&sim, Cred::Root).dropped(),
        st.dropped(),
        "nothing dropped with room"
    );
    p.exit();
    let mut seen = HashSet::new();
    assert!(recs.iter().all(|r| seen.insert((r.shard, r.pos))));
    assert_eq!(st.in_flight, 0);
    assert!(st.hook_calls >= produced as u64);
    sim.check_balanced().expect("balanced");
}

#[test]
fn nothing_is_dropped_with_room_and_each_threads_events_are_whole() {
    let (sim, mut dec, t0) = setup(Tunables {
        nshards: 4,
        slots: 8192,
        ..Tunables::default()
    });
    run_workers(&sim);
    let recs = drain(&sim, &mut dec);
    let produced = traced(&sim) - t0;
    let st = stats(&sim, Cred::Root);
    assert_eq!(st.dropped(), 0);
    assert_eq!(event_records(&recs), produced);
    // Per thread and round: FILE_MMAP, MMAP, MMAP (shared: XNU maps the
    // named object twice), FILE_MMAP, MMAP (private), pageins, MNOMAP.
    let tids: HashSet<u64> = recs.iter().map(|r| r.tid).collect();
    assert_eq!(tids.len(), WORKERS);
    for tid in tids {
        let mut mine: Vec<&Record> = recs.iter().filter(|r| r.tid == tid).collect();
        mine.sort_by_key(|r| (r.timestamp_ns, r.kind != EventKind::FileMmap));
        let count = |k| mine.iter().filter(|r| r.kind == k).count();
        assert_eq!(count(EventKind::Mmap), 3 * ROUNDS);
        assert_eq!(count(EventKind::FileMmap), 2 * ROUNDS);
        assert_eq!(count(EventKind::Mnomap), ROUNDS);
        assert_eq!(
            count(EventKind::Pagein),
            ROUNDS * 3,
            "16 pages: 16 KiB centred on page 0, then streaming 16 KiB and 32 KiB"
        );
        let mut seen_ids = HashSet::new();
        for r in mine.iter().filter(|r| r.kind == EventKind::Mmap) {
            seen_ids.insert(r.vnode_id);
        }
        assert_eq!(seen_ids.len(), ROUNDS, "one vnode id per file");
    }
    sim.check_balanced().expect("balanced");
}
