//! A loom model of the vnode-id memo's seqlock (`src/id_memo.rs`): writers
//! caching two vnodes that share an entry while a reader looks both up.
//! Loom explores every interleaving and the weak-memory outcomes the
//! orderings allow, and checks that a hit is always the id of the pair it
//! was asked for: a torn entry (the address of one write, the id of
//! another) must read as a miss. The same model over a reader without the
//! second `seq` check must fail, which shows the check is what holds.
//! The two-writer case failed while the writer's CAS was Relaxed: the
//! previous writer's stores could land after the next one's.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_memo`
#![cfg(loom)]

use loom::sync::Arc;
use maptrace_core::id_memo::MemoEntry;

/// Two incarnations of two vnodes sharing one entry: (address, vid, id).
const CACHED: [(u64, u32, u64); 3] = [(0x1000, 3, 111), (0x2000, 3, 222), (0x1000, 4, 333)];
const EPOCH: u32 = 7;

/// A reader: `Some` only with the right id.
type Get = fn(&MemoEntry, u64, u32, u32) -> Option<u64>;

fn check_lookups(e: &MemoEntry, get: Get) {
    for &(addr, vid, id) in &CACHED {
        if let Some(got) = get(e, addr, vid, EPOCH) {
            assert_eq!(got, id, "wrong id for ({addr:#x}, {vid})");
        }
    }
}

/// Entry holds the first pair; `writers` threads each cache another pair
/// while the main thread looks every pair up with `get`.
fn model(writers: usize, get: Get) {
    let mut model = loom::model::Builder::new();
    // Bound 3 with two writers runs for ten minutes; 2 still finds the
    // torn entry a Relaxed writer CAS allows.
    model.preemption_bound = Some(if writers == 1 { 3 } else { 2 });
    model.check(move || {
        let e = Arc::new(MemoEntry::new());
        let (addr, vid, id) = CACHED[0];
        e.put(addr, vid, EPOCH, id);
        let threads: Vec<_> = CACHED[1..=writers]
            .iter()
            .map(|&(addr, vid, id)| {
                let e = e.clone();
                loom::thread::spawn(move || e.put(addr, vid, EPOCH, id))
            })
            .collect();
        check_lookups(&e, get);
        for t in threads {
            t.join().unwrap();
        }
        // Quiescent: whichever write won is read back whole.
        check_lookups(&e, get);
        assert!(
            CACHED
                .iter()
                .any(|&(a, v, _)| get(&e, a, v, EPOCH).is_some())
        );
    });
}

#[test]
fn a_reader_racing_a_writer_never_gets_a_wrong_id() {
    model(1, MemoEntry::get);
}

#[test]
fn two_racing_writers_never_leave_a_torn_entry() {
    model(2, MemoEntry::get);
}

#[test]
#[should_panic(expected = "wrong id")]
fn without_the_seq_recheck_a_torn_entry_gives_a_wrong_id() {
    model(1, MemoEntry::get_without_recheck);
}
