//! Merging per-shard record runs into one stream ordered by timestamp.
//!
//! Each shard's records arrive in reservation order, which is time order
//! except for small inversions (a producer preempted between reading the clock
//! and reserving). A heads merge — always emit the run whose next record has
//! the smallest (timestamp, shard, pos) — keeps every shard's own order intact
//! while interleaving shards by time, as kdebug's reader does.

use crate::decode::Record;
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;

/// Merges runs (each in its shard's order) into one `Vec` ordered by time.
/// Runs may come from several shards or from several batches of one shard;
/// records of one run are never reordered among themselves.
pub fn merge_by_time(runs: Vec<Vec<Record>>) -> Vec<Record> {
    let total = runs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<_> = runs.into_iter().map(|r| r.into_iter().peekable()).collect();
    match iters.len() {
        0 => return out,
        1 => {
            out.extend(iters.pop().into_iter().flatten());
            return out;
        }
        _ => {}
    }
    // Heap of (key of the run's head, run index).
    let mut heap = BinaryHeap::with_capacity(iters.len());
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(r) = it.peek() {
            heap.push(Reverse((key(r), i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(it) = iters.get_mut(i) else { continue };
        if let Some(r) = it.next() {
            out.push(r);
        }
        if let Some(next) = it.peek() {
            heap.push(Reverse((key(next), i)));
        }
    }
    out
}

fn key(r: &Record) -> (u64, u16, u64) {
    (r.timestamp_ns, r.shard, r.pos)
}
