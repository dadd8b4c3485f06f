//! Merging per-shard record runs into one stream ordered by timestamp.
//!
//! Each shard's records arrive in reservation order, which is time order
//! except for small inversions (a producer preempted between reading the clock
//! and reserving). A heads merge — always emit the run whose next record has
//! the smallest (timestamp, shard, pos) — keeps every shard's own order intact
//! while interleaving shards by time, as kdebug's reader does.

use crate::decode::{Record, RecordView};
use alloc::collections::BinaryHeap;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

/// Merges runs (each in its shard's order) into one `Vec` ordered by time.
/// Runs may come from several shards or from several batches of one shard;
/// records of one run are never reordered among themselves.
pub fn merge_by_time(mut runs: Vec<Vec<Record>>) -> Vec<Record> {
    let mut out = Vec::new();
    merge_into(&mut runs, &mut out);
    out
}

/// As [`merge_by_time`], draining `runs` (which keep their capacity) and
/// appending to `out`, so a reader can reuse every buffer across batches.
///
/// The order is computed first from keys read in place (a linear scan of the
/// run heads for a few runs, a heap for many), then every record is moved
/// exactly once.
pub fn merge_into(runs: &mut [Vec<Record>], out: &mut Vec<Record>) {
    let total: usize = runs.iter().map(Vec::len).sum();
    out.reserve(total);
    if let [only] = runs {
        out.append(only);
        return;
    }
    let order = merge_order(runs, total);
    let mut drains: Vec<_> = runs.iter_mut().map(|r| r.drain(..)).collect();
    for i in order {
        if let Some(r) = drains.get_mut(usize::from(i)).and_then(Iterator::next) {
            out.push(r);
        }
    }
}

/// Runs merged by a linear scan of their heads; more use a heap.
const LINEAR_MAX: usize = 8;

/// The run each output position takes its record from.
fn merge_order(runs: &[Vec<Record>], total: usize) -> Vec<u16> {
    let mut order = Vec::with_capacity(total);
    let mut next = vec![0usize; runs.len()];
    let head = |next: &[usize], i: usize| {
        let n = next.get(i).copied().unwrap_or(usize::MAX);
        runs.get(i).and_then(|r| r.get(n)).map(key)
    };
    if runs.len() <= LINEAR_MAX {
        loop {
            let mut best: Option<((u64, u16, u64), usize)> = None;
            for i in 0..runs.len() {
                if let Some(k) = head(&next, i) {
                    if best.is_none_or(|(b, _)| k < b) {
                        best = Some((k, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            order.push(i as u16);
            if let Some(n) = next.get_mut(i) {
                *n += 1;
            }
        }
        return order;
    }
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for i in 0..runs.len() {
        if let Some(k) = head(&next, i) {
            heap.push(Reverse((k, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        order.push(i as u16);
        if let Some(n) = next.get_mut(i) {
            *n += 1;
        }
        if let Some(k) = head(&next, i) {
            heap.push(Reverse((k, i)));
        }
    }
    order
}

fn key(r: &Record) -> (u64, u16, u64) {
    (r.timestamp_ns, r.shard, r.pos)
}

fn view_key(r: &RecordView<'_>) -> (u64, u16, u64) {
    (r.timestamp_ns, r.shard, r.pos)
}

/// The order of [`merge_by_time`] without moving a record: `records` as
/// [`crate::Decoder::feed_views`] gives them (each shard's records of a
/// batch one after another), `order` receives indices into `records`, in
/// time order. A run is a stretch of records of one shard; several batches'
/// records may be given at once, as several runs may be to `merge_by_time`.
pub fn time_order(records: &[RecordView<'_>], order: &mut Vec<u32>) {
    let mut runs = Vec::new();
    time_order_with(records, &mut runs, order);
}

/// As [`time_order`], with a buffer for the runs that a reader reuses.
pub fn time_order_with(
    records: &[RecordView<'_>],
    runs: &mut Vec<(u32, u32)>,
    order: &mut Vec<u32>,
) {
    runs.clear();
    let mut start = 0;
    for i in 1..=records.len() {
        let (Some(a), b) = (records.get(i - 1), records.get(i)) else {
            break;
        };
        if b.is_none_or(|b| b.shard != a.shard) {
            runs.push((start as u32, i as u32));
            start = i;
        }
    }
    order.reserve(records.len());
    let key = |i: u32| {
        let r = records.get(i as usize);
        r.map(|r| (r.timestamp_ns, r.shard, r.pos))
    };
    match runs.as_slice() {
        [] => {}
        [(a, b)] => order.extend(*a..*b),
        [(a0, a1), (b0, b1)] => {
            // The common case (two CPUs): a plain two-way merge.
            let run = |lo: u32, hi: u32| records.get(lo as usize..hi as usize).unwrap_or(&[]);
            let (ra, rb) = (run(*a0, *a1), run(*b0, *b1));
            let (mut a, mut b) = (0, 0);
            while let (Some(x), Some(y)) = (ra.get(a), rb.get(b)) {
                // Ties (one shard's runs of two batches) go to the first
                // run, as in `merge_into`.
                if view_key(y) < view_key(x) {
                    order.push(*b0 + b as u32);
                    b += 1;
                } else {
                    order.push(*a0 + a as u32);
                    a += 1;
                }
            }
            order.extend(*a0 + a as u32..*a1);
            order.extend(*b0 + b as u32..*b1);
        }
        _ if runs.len() <= LINEAR_MAX => loop {
            let mut best: Option<((u64, u16, u64), usize)> = None;
            for (r, &(next, end)) in runs.iter().enumerate() {
                if next < end {
                    if let Some(k) = key(next) {
                        if best.is_none_or(|(b, _)| k < b) {
                            best = Some((k, r));
                        }
                    }
                }
            }
            let Some((_, r)) = best else { break };
            if let Some(run) = runs.get_mut(r) {
                order.push(run.0);
                run.0 += 1;
            }
        },
        _ => {
            let mut heap = BinaryHeap::with_capacity(runs.len());
            for (r, &(next, end)) in runs.iter().enumerate() {
                if let Some(k) = key(next).filter(|_| next < end) {
                    heap.push(Reverse((k, r)));
                }
            }
            while let Some(Reverse((_, r))) = heap.pop() {
                let Some(run) = runs.get_mut(r) else { break };
                order.push(run.0);
                run.0 += 1;
                if let Some(k) = key(run.0).filter(|_| run.0 < run.1) {
                    heap.push(Reverse((k, r)));
                }
            }
        }
    }
}
