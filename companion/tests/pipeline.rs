//! The pipeline on real core batches: mmap(2) checks pair with the
//! `VNOP_MMAP` that follows on their thread, and only with that one.

mod common;

use common::*;
use maptrace::pipeline::{Ev, Item, Pipeline};
use maptrace_abi::EventKind;

/// `what` of every `VNOP_MMAP`, and the count of unpaired checks.
fn mmaps<T>(batches: &[Vec<u8>], what: impl Fn(&Ev) -> T) -> (Vec<T>, u64) {
    let (items, totals) = decode(batches);
    let maps = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) if e.rec.kind == EventKind::Mmap => Some(what(e)),
            _ => None,
        })
        .collect();
    (maps, totals.unpaired_calls)
}

/// `(timestamp, paired)` of every `VNOP_MMAP`, and the unpaired count.
fn maps(batches: &[Vec<u8>]) -> (Vec<(u64, bool)>, u64) {
    mmaps(batches, |e| (e.rec.timestamp_ns, e.call.is_some()))
}

#[test]
fn a_check_pairs_with_the_next_map_on_its_thread_across_batches() {
    let batches = recorded(2, 256, |t| {
        // Check on CPU 1, map on CPU 0, in different batches.
        t.path(0, DB, "/data/app.db");
        t.mmap_call(1, 200, 2001, DB, 1, 1);
        t.drain();
    });
    let (m, unpaired) = maps(&batches);
    assert_eq!(m.len(), 1);
    assert!(m[0].1, "paired");
    assert_eq!(unpaired, 0);
}

#[test]
fn a_check_that_arrives_after_its_map_does_not_pair_with_a_later_one() {
    let batches = recorded(2, 256, |t| {
        // The map at t=20us on CPU 0 is drained first; its check (t=15us, CPU
        // 1) comes in the next batch, then an exec map at t=30us on the thread.
        t.ts = 20_000 - 10_000;
        t.exec_map(0, 200, 2001, DB, 1, 1);
        t.drain();
        let mut c = ev(maptrace_abi::raw::MT_KIND_FILE_MMAP, 200, 2001, 15_000);
        c.prot = 1;
        t.e.record(1, &c);
        t.ts = 30_000 - 10_000;
        t.exec_map(0, 200, 2001, DB, 2, 5);
        t.drain();
    });
    let (m, unpaired) = maps(&batches);
    assert_eq!(m, vec![(20_000, false), (30_000, false)]);
    assert_eq!(unpaired, 1);
}

#[test]
fn a_check_with_no_map_after_it_is_unpaired() {
    let batches = recorded(1, 256, |t| {
        let c = ev(maptrace_abi::raw::MT_KIND_FILE_MMAP, 200, 2001, 5);
        t.e.record(0, &c);
        t.e.record(0, &c);
        t.drain();
    });
    let (m, unpaired) = maps(&batches);
    assert!(m.is_empty());
    assert_eq!(unpaired, 2, "one replaced by the next, one left at the end");
}

/// Found by fuzzing the recording reader: a stream whose positions go back
/// (a batch replayed) was a gap of nearly 2^64 lost slots, and two of them
/// overflowed the gap total. Going back loses nothing: it is corruption.
#[test]
fn positions_going_back_are_corruption_not_a_huge_gap() {
    let batches = gap_batches();
    let (first, last) = (&batches[0], &batches[batches.len() - 1]);
    let mut p = Pipeline::new();
    let mut items = Vec::new();
    for b in [first, last, first, last, first] {
        p.feed(b, &mut items);
    }
    let gaps: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            Item::Loss(maptrace::pipeline::Loss::Gap { slots, .. }) => Some(*slots),
            _ => None,
        })
        .collect();
    let back = items
        .iter()
        .filter(|i| matches!(i, Item::Corrupt(m) if m.contains("went back")))
        .count();
    assert_eq!(back, 2, "{items:?}");
    assert_eq!(gaps.len(), 2, "only the forward jumps are gaps: {gaps:?}");
    assert!(gaps.iter().all(|&g| g == gaps[0] && g < 16), "{gaps:?}");
    assert_eq!(p.totals().gap_slots, 2 * gaps[0]);
}

/// Found by fuzzing the recording reader: two shards whose headers claim
/// nearly 2^64 drops overflowed the total at the end of the stream.
#[test]
fn absurd_drop_counts_in_headers_saturate_the_totals() {
    type B = maptrace_abi::raw::mt_batch_header;
    type S = maptrace_abi::raw::mt_segment_header;
    let mut batch = lifecycle_batches().swap_remove(0);
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let nsegments = word(&batch, std::mem::offset_of!(B, nsegments));
    assert!(nsegments >= 2, "the fixture has two shards");
    let mut seg = size_of::<B>();
    for _ in 0..nsegments {
        let at = seg + std::mem::offset_of!(S, dropped_cumulative);
        batch[at..at + 8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        seg += size_of::<S>() + 64 * word(&batch, seg + std::mem::offset_of!(S, nslots)) as usize;
    }
    let (items, totals) = decode(&[batch]);
    assert_eq!(totals.dropped, u64::MAX);
    let tail_losses = items
        .iter()
        .filter(|i| {
            matches!(
                i,
                Item::Loss(maptrace::pipeline::Loss::Dropped {
                    before_pos: None,
                    ..
                })
            )
        })
        .count();
    assert_eq!(tail_losses, nsegments as usize, "one per shard: {items:?}");
}

/// `(call_map, paired)` of every `VNOP_MMAP`, and the unpaired count.
fn call_maps(batches: &[Vec<u8>]) -> (Vec<(u8, bool)>, u64) {
    mmaps(batches, |e| (e.call_map, e.call.is_some()))
}

/// XNU maps a MAP_SHARED mmap(2)'s named object twice, in
/// vm_map_enter_mem_object_control and again in vm_map_enter
/// (osfmk/vm/vm_map.c:5093 and 3698, xnu-11417.101.15): both VNOP_MMAPs
/// belong to the one call; a third map of the file on the thread does not.
#[test]
fn a_shared_calls_second_map_of_the_same_vnode_belongs_to_the_call() {
    let batches = recorded(1, 256, |t| {
        t.path(0, DB, "/data/app.db");
        t.mmap_call(0, 200, 2001, DB, 1, 5); // MAP_SHARED: check + map 1
        t.exec_map(0, 200, 2001, DB, 2, 5); // map 2 of the same call
        t.exec_map(0, 200, 2001, DB, 2, 5); // another map: no call
        t.drain();
    });
    let (m, unpaired) = call_maps(&batches);
    assert_eq!(m, vec![(1, true), (2, true), (0, false)]);
    assert_eq!(unpaired, 0);
}

/// Only the same vnode, on the same thread, with nothing in between, is
/// the call's second map; a private call maps once.
#[test]
fn a_second_map_pairs_only_right_after_a_shared_call_of_its_vnode() {
    let batches = recorded(1, 256, |t| {
        // Shared call on DB, then a map of LIB: not the call's.
        t.mmap_call(0, 200, 2001, DB, 1, 5);
        t.exec_map(0, 200, 2001, LIB, 1, 5);
        // Shared call on DB, a page-in in between, then a map of DB: not the call's.
        t.mmap_call(0, 200, 2001, DB, 2, 5);
        t.pagein(0, 200, 2001, DB, (0, 4096), 2);
        t.exec_map(0, 200, 2001, DB, 2, 5);
        // A private call (MAP_PRIVATE) maps once.
        let mut c = ev(maptrace_abi::raw::MT_KIND_FILE_MMAP, 200, 2001, t.tick());
        c.prot = 1;
        c.maxprot = 7;
        c.flags = 2;
        t.e.record(0, &c);
        t.exec_map(0, 200, 2001, DB, 2, 5);
        t.exec_map(0, 200, 2001, DB, 2, 5);
        // Another thread's map of DB right after a shared call is not the call's.
        t.mmap_call(0, 200, 2001, DB, 2, 5);
        t.exec_map(0, 200, 2002, DB, 2, 5);
        t.drain();
    });
    let (m, unpaired) = call_maps(&batches);
    assert_eq!(
        m,
        vec![
            (1, true),
            (0, false),
            (1, true),
            (0, false),
            (1, true),
            (0, false),
            (1, true),
            (0, false),
        ]
    );
    assert_eq!(unpaired, 0);
}

/// A PROC record naming `pid` (an exec or a rename when it names it again).
fn proc_name(t: &mut Trace<'_>, pid: u32, name: &str) {
    let ts = t.tick();
    let x = ev(maptrace_abi::raw::MT_KIND_PROC, pid, 2001, ts);
    t.e.record_proc(0, &x, name.as_bytes());
}

/// The JSON line of every event, written by `stream`'s writer (checked
/// against the contract's types), parsed.
fn event_lines(items: &[Item]) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for it in items.iter().filter(|i| matches!(i, Item::Event(_))) {
        let mut w = maptrace::output::JsonLines::new();
        w.item(it);
        let mut want = serde_json::to_vec(&maptrace::contract::Line::of(it)).unwrap();
        want.push(b'\n');
        assert_eq!(w.as_bytes(), &want[..]);
        lines.push(serde_json::from_slice(w.as_bytes()).unwrap());
    }
    lines
}

/// The pipeline escapes a process's name and a file's path (with its vnode
/// id's digits) once and reuses them: a rename, a new path for the same
/// vnode id and a new load must all show in the very next line.
#[test]
fn escaped_names_follow_renames_new_paths_and_reloads() {
    let mut batches = Vec::new();
    let mut ids = Vec::new();
    for generation in [1, 2] {
        let mut mem = Mem::new(1, 256);
        let e = mem.engine_of(generation);
        let mut t = Trace::new(&e);
        if generation == 1 {
            proc_name(&mut t, 200, "first");
            t.path(0, DB, "/data/a\"b");
            t.exec_map(0, 200, 2001, DB, 1, 5);
            proc_name(&mut t, 200, "re\"named\n");
            t.path(0, DB, "/data/new");
            t.pagein(0, 200, 2001, DB, (0, 16384), 2);
        } else {
            // Another load: the vnode is unnamed until its PATH record
            // (in a later batch: a batch's names are learned first).
            t.pagein(0, 200, 2001, DB, (0, 16384), 2);
            t.drain();
            t.path(0, DB, "/data/again");
            t.pagein(0, 200, 2001, DB, (0, 16384), 2);
        }
        t.drain();
        batches.extend(t.batches);
    }
    let (items, _) = decode(&batches);
    for it in &items {
        if let Item::Event(e) = it
            && matches!(e.rec.kind, EventKind::Mmap | EventKind::Pagein)
        {
            ids.push(e.rec.vnode_id);
        }
    }
    let shown: Vec<_> = event_lines(&items)
        .iter()
        .filter(|l| !["path", "proc", "mark"].contains(&l["kind"].as_str().unwrap()))
        .map(|l| {
            (
                l["comm"].as_str().map(String::from),
                l["path"].as_str().map(String::from),
                l["vnode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |x: &str| Some(x.to_string());
    // The same vnode, and the same key: the same id in both loads, whose
    // name must not outlive the first.
    ids.dedup();
    let [id] = ids[..] else { panic!("{ids:?}") };
    let id = format!("{id:016x}");
    assert_eq!(
        shown,
        [
            (s("first"), s("/data/a\"b"), id.clone()),
            (s("re\"named\n"), s("/data/new"), id.clone()),
            (s("re\"named\n"), None, id.clone()),
            (s("re\"named\n"), s("/data/again"), id),
        ]
    );
}

/// `feed_each` hands on exactly the items `feed` collects, in order:
/// events, losses, reloads and corruption alike.
#[test]
fn items_handed_on_one_by_one_are_the_items_collected() {
    let mut batches = lifecycle_batches();
    batches.extend(lossy_batches(3));
    batches.extend(gap_batches());
    batches.extend(reload_batches());
    batches.push(vec![0u8; 100]);
    let (mut collected, mut each) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (Pipeline::new(), Pipeline::new());
    for x in &batches {
        let truncated = a.feed(x, &mut collected);
        assert_eq!(b.feed_each(x, |it| each.push(it)), truncated);
    }
    assert_eq!(format!("{collected:?}"), format!("{each:?}"));
    assert!(collected.iter().any(|i| matches!(i, Item::Loss(_))));
    assert!(collected.iter().any(|i| matches!(i, Item::Reload { .. })));
    assert!(collected.iter().any(|i| matches!(i, Item::Corrupt(_))));
    assert_eq!(a.totals(), b.totals());
}
