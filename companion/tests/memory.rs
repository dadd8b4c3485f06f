//! The pipeline's state across batches is bounded: names and per-thread
//! pairing state stay within the pipeline's limits however long the stream
//! and however many threads and files come and go, and a constant working
//! set holds a constant state. Checked structurally (entries held), not by
//! timing or by the process's memory.

mod common;

use common::{Mem, Trace, ev};
use maptrace::pipeline::{Item, Limits, Pipeline};
use maptrace_abi::raw;

/// Iterations between drains.
const PER_BATCH: u64 = 200;

/// Feeds `rounds` × `per_round` iterations of map + fault + a failed
/// mmap(2), each on thread and file `i % working_set` (`None`: a new thread
/// and a new file every time); returns the state's entries after each round,
/// the lone checks made and the pipeline.
fn run(
    limits: Limits,
    working_set: Option<u64>,
    rounds: u64,
    per_round: u64,
) -> (Vec<usize>, u64, Pipeline) {
    let mut mem = Mem::new(2, 1 << 12);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    let mut p = Pipeline::with_limits(limits);
    let mut items: Vec<Item> = Vec::new();
    let mut sizes = Vec::new();
    let mut lone = 0;
    for i in 0..rounds * per_round {
        let k = working_set.map_or(i, |n| i % n);
        let (cpu, tid, vnode) = ((i % 2) as u32, 1000 + k, 0x10_0000 + k * 0x100);
        t.path(cpu, vnode, &format!("/data/f{k}.bin"));
        t.mmap_call(cpu, 100, tid, vnode, 1, 5);
        t.pagein(cpu, 100, tid, vnode, (0, 16384), 2);
        // An mmap(2) that failed after its check, on a thread that then exits.
        let ts = t.tick();
        e.record(cpu, &ev(raw::MT_KIND_FILE_MMAP, 100, 1 << 40 | tid, ts));
        lone += 1;
        if i % PER_BATCH == PER_BATCH - 1 {
            t.drain();
            for b in t.batches.drain(..) {
                items.clear();
                p.feed(&b, &mut items);
            }
        }
        if i % per_round == per_round - 1 {
            sizes.push(p.state_entries());
        }
    }
    (sizes, lone, p)
}

const SMALL: Limits = Limits {
    names: 50,
    threads: 40,
};

#[test]
fn a_constant_working_set_holds_a_constant_state() {
    let (sizes, _, p) = run(SMALL, Some(16), 6, 1000);
    assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    assert!(p.state_entries() <= SMALL.max_entries(), "{sizes:?}");
    assert_eq!(
        p.totals().by_kind[maptrace_abi::EventKind::Pagein as usize],
        6000
    );
}

#[test]
fn threads_and_files_that_come_and_go_do_not_grow_the_state() {
    let (sizes, lone, mut p) = run(SMALL, None, 8, 1000);
    let max = SMALL.max_entries();
    assert!(sizes.iter().all(|&n| n <= max), "{sizes:?} > {max}");
    // Forgotten checks are still counted as never followed by a map.
    p.finish(&mut Vec::new());
    assert_eq!(p.totals().unpaired_calls, lone);
}

#[test]
fn recent_names_survive_while_used() {
    // Files named once and then only faulted keep their names while they
    // are in use, however many other files come and go.
    let mut mem = Mem::new(1, 1 << 12);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    let mut p = Pipeline::with_limits(SMALL);
    let hot = 0x9_0000;
    t.path(0, hot, "/data/hot.bin");
    t.exec_map(0, 100, 7, hot, 1, 5);
    for i in 0..1000u64 {
        let v = 0x10_0000 + i * 0x100;
        t.path(0, v, &format!("/data/cold{i}"));
        t.exec_map(0, 100, 8, v, 1, 5);
        t.pagein(0, 100, 7, hot, (0, 4096), 2);
        if i % 10 == 9 {
            t.drain();
        }
    }
    t.drain();
    let mut out = Vec::new();
    for b in &t.batches {
        p.feed(b, &mut out);
    }
    let hot_faults: Vec<_> = out
        .iter()
        .filter_map(|it| match it {
            Item::Event(ev) if ev.rec.kind == maptrace_abi::EventKind::Pagein => Some(ev),
            _ => None,
        })
        .collect();
    assert_eq!(hot_faults.len(), 1000);
    assert!(
        hot_faults
            .iter()
            .all(|ev| ev.path.as_ref().is_some_and(|n| n.text == "/data/hot.bin")),
        "a name in use is kept"
    );
    assert!(p.state_entries() <= SMALL.max_entries());
}
