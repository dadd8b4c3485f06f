//! The ring and engine end to end: events in through `Engine::record*`,
//! batches out through the drain, checked with the real `maptrace-abi`
//! decoder. Wrap, full, exact drops, multi-slot records across the ring end,
//! failed copyouts, concurrent producers with a concurrent drainer, and a
//! model-based property test.

mod common;

use common::{Mem, drain_all, event, events, pagein};
use maptrace_abi::decode::{Decoder, Event as Ev};
use maptrace_abi::{EventKind, raw};
use maptrace_core::Ring;
use maptrace_core::engine::MIN_DRAIN_BUFFER;
use maptrace_core::ring::{RingStart, SLOT_SIZE};
use maptrace_core::{DrainError, RecordResult};
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const BIG: usize = 1 << 20;

fn offsets(recs: &[maptrace_abi::Record]) -> Vec<i64> {
    events(recs)
        .iter()
        .filter_map(|r| match r.event {
            Ev::Pagein { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

#[test]
fn records_come_out_in_order_with_every_field() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    for i in 0..10 {
        assert_eq!(e.record(0, &pagein(42, 7, i)), RecordResult::Recorded);
    }
    let mut dec = Decoder::new();
    let (recs, errs) = drain_all(&e, &mut dec, BIG);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        recs[0].kind,
        EventKind::Mark,
        "a START marker opens the generation"
    );
    assert_eq!(offsets(&recs), (0..10).collect::<Vec<_>>());
    let r = events(&recs)[3];
    assert_eq!((r.pid, r.tid, r.timestamp_ns, r.lost_before), (42, 7, 3, 0));
    assert_ne!(r.vnode_id, 0);
    assert_ne!(
        r.vnode_id,
        pagein(42, 7, 3).vnode_ptr,
        "ids are hashes, never addresses"
    );
    match &r.event {
        Ev::Pagein {
            size,
            duration_ns,
            counts,
            ..
        } => {
            assert_eq!((*size, *duration_ns), (4096, 1000));
            assert_eq!((counts.usecount, counts.iocount), (2, Some(1)));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Nothing left: a second drain is empty.
    assert_eq!(e.drain_prepare(&mut vec![0; BIG], 0), Ok(0));
}

#[test]
fn full_shard_drops_the_new_event_and_the_next_record_says_how_many() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    // The START marker took one slot; fill the rest.
    for i in 0..63 {
        assert_eq!(e.record(0, &pagein(1, 1, i)), RecordResult::Recorded);
    }
    for i in 0..5 {
        assert_eq!(e.record(0, &pagein(1, 1, 100 + i)), RecordResult::Dropped);
    }
    let mut dec = Decoder::new();
    let (recs, errs) = drain_all(&e, &mut dec, BIG);
    assert!(errs.is_empty());
    assert_eq!(
        offsets(&recs),
        (0..63).collect::<Vec<_>>(),
        "the oldest records survive"
    );
    assert_eq!(e.record(0, &pagein(1, 1, 200)), RecordResult::Recorded);
    let (recs, _) = drain_all(&e, &mut dec, BIG);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].lost_before, 5,
        "loss is placed exactly where it happened"
    );
    let l = dec.losses();
    assert_eq!((l.dropped, l.unattributed), (5, 0));
    let c = e.ring().counters(0);
    assert_eq!((c.produced_slots, c.dropped, c.drained_slots), (65, 5, 65));
}

#[test]
fn trailing_drops_are_reported_before_any_later_record() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    for i in 0..70 {
        e.record(0, &pagein(1, 1, i));
    }
    let mut dec = Decoder::new();
    drain_all(&e, &mut dec, BIG);
    let l = dec.losses();
    assert_eq!(
        (l.dropped, l.unattributed),
        (7, 7),
        "known from the segment header alone"
    );
}

#[test]
fn wraps_many_times_around_a_small_ring() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    let mut seq = 0;
    for lap in 0..50 {
        for _ in 0..(17 + lap % 40) {
            assert_eq!(e.record(0, &pagein(1, 1, seq)), RecordResult::Recorded);
            seq += 1;
        }
        let (recs, errs) = drain_all(&e, &mut dec, BIG);
        assert!(errs.is_empty(), "{errs:?}");
        got.extend(offsets(&recs));
    }
    assert_eq!(got, (0..seq as i64).collect::<Vec<_>>());
    assert_eq!(dec.losses().dropped, 0);
}

#[test]
fn path_records_span_slots_and_wrap_around_the_ring_end() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let mut dec = Decoder::new();
    // Move the position to 60 so the next path record (10 slots) wraps.
    for i in 0..59 {
        e.record(0, &pagein(1, 1, i));
    }
    drain_all(&e, &mut dec, BIG);
    let path: Vec<u8> = b"/Volumes/data/"
        .iter()
        .copied()
        .cycle()
        .take(500)
        .collect();
    let ev = event(raw::MT_KIND_MMAP, 9, 1);
    assert_eq!(e.record_path(0, &ev, &path), RecordResult::Recorded);
    assert_eq!(e.record(0, &pagein(1, 1, 999)), RecordResult::Recorded);
    let (recs, errs) = drain_all(&e, &mut dec, BIG);
    assert!(errs.is_empty(), "{errs:?}");
    match &recs[0].event {
        Ev::Path {
            path: p,
            truncated,
            vid,
        } => {
            assert_eq!(p, &path);
            assert!(!truncated);
            assert_eq!(*vid, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        recs[0].vnode_id, recs[1].vnode_id,
        "the path names the same vnode id as its events"
    );
    assert_eq!(recs[0].pos, 60);
    assert_eq!(
        recs[1].pos,
        60 + 10,
        "the next record follows the path's 10 slots"
    );
}

#[test]
fn overlong_paths_are_cut_and_flagged() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let path = vec![b'x'; 3000];
    assert_eq!(
        e.record_path(0, &event(raw::MT_KIND_MMAP, 1, 1), &path),
        RecordResult::Recorded
    );
    let (recs, _) = drain_all(&e, &mut Decoder::new(), BIG);
    match &events(&recs)[0].event {
        Ev::Path {
            path, truncated, ..
        } => assert_eq!((path.len(), *truncated), (1024, true)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_failed_copyout_loses_nothing() {
    let mut mem = Mem::new(2, 64);
    let e = mem.engine(2, 64);
    for i in 0..20 {
        e.record(i as u32, &pagein(1, 1, i));
    }
    let mut buf = vec![0u8; BIG];
    let first = e.drain_prepare(&mut buf, 0).unwrap();
    let copy = buf[..first].to_vec();
    e.drain_abort(); // copyout failed
    let again = e.drain_prepare(&mut buf, 0).unwrap();
    assert_eq!(first, again);
    // Same records; only the round-robin start may differ.
    let mut d1 = Decoder::new();
    let mut d2 = Decoder::new();
    let mut a: Vec<_> = d1
        .decode(&copy)
        .unwrap()
        .1
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut b: Vec<_> = d2
        .decode(&buf[..again])
        .unwrap()
        .1
        .into_iter()
        .map(Result::unwrap)
        .collect();
    a.sort_by_key(|r| (r.shard, r.pos));
    b.sort_by_key(|r| (r.shard, r.pos));
    assert_eq!(a, b);
    e.drain_commit();
    assert_eq!(e.drain_prepare(&mut buf, 0), Ok(0));
}

#[test]
fn small_buffers_split_batches_and_flag_truncation() {
    let mut mem = Mem::new(2, 256);
    let e = mem.engine(2, 256);
    for i in 0..300 {
        e.record((i % 2) as u32, &pagein(1, i % 2, i));
    }
    let mut tiny = vec![0u8; MIN_DRAIN_BUFFER - 1];
    assert_eq!(
        e.drain_prepare(&mut tiny, 0),
        Err(DrainError::BufferTooSmall)
    );
    let mut buf = vec![0u8; MIN_DRAIN_BUFFER];
    let n = e.drain_prepare(&mut buf, 0).unwrap();
    let b = maptrace_abi::decode::parse_batch_header(&buf[..n]).unwrap();
    assert_ne!(b.header.flags & raw::MT_BF_TRUNCATED, 0);
    e.drain_abort();
    let mut dec = Decoder::new();
    let (recs, errs) = drain_all(&e, &mut dec, MIN_DRAIN_BUFFER);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(events(&recs).len(), 300);
    assert!(dec.batches() > 10, "many small batches");
}

#[test]
fn config_filters_and_counts_what_it_filters() {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let mut c = e.config_get();
    c.event_mask = raw::MT_EVMASK_MMAP;
    c.flags = raw::MT_CF_ENABLE | raw::MT_CF_PID_FILTER;
    c.pid = 5;
    e.config_set(zerocopy::IntoBytes::as_bytes(&c), 77).unwrap();
    assert!(e.wants(raw::MT_KIND_MMAP, 5));
    assert!(!e.wants(raw::MT_KIND_MMAP, 6));
    assert!(!e.wants(raw::MT_KIND_PAGEIN, 5));
    assert!(!e.wants(99, 5));
    assert_eq!(
        e.record(0, &event(raw::MT_KIND_MMAP, 5, 1)),
        RecordResult::Recorded
    );
    assert_eq!(
        e.record(0, &event(raw::MT_KIND_MMAP, 6, 2)),
        RecordResult::Filtered
    );
    assert_eq!(
        e.record(0, &event(raw::MT_KIND_PAGEIN, 5, 3)),
        RecordResult::Filtered
    );
    assert_eq!(
        e.record(0, &event(raw::MT_KIND_PATH, 5, 3)),
        RecordResult::Rejected,
        "paths go through record_path"
    );
    assert_eq!(e.record(0, &event(0, 5, 3)), RecordResult::Rejected);
    // Three refused wants() and two filtered records.
    assert_eq!((e.filtered(), e.errors()), (5, 2));
    // A malformed write changes nothing.
    let mut bad = c;
    bad.reserved[1] = 1;
    assert!(
        e.config_set(zerocopy::IntoBytes::as_bytes(&bad), 78)
            .is_err()
    );
    assert_eq!(e.config_get(), c);
    e.shutdown();
    assert_eq!(
        e.record(0, &event(raw::MT_KIND_MMAP, 5, 4)),
        RecordResult::Filtered
    );
    assert!(
        e.config_set(zerocopy::IntoBytes::as_bytes(&c), 79).is_err(),
        "shut down is final"
    );
}

#[test]
fn markers_describe_the_tracer_and_pass_any_pid_filter() {
    // A pid filter selects processes' events; the CONFIG marker that
    // records that very filter, and a later VECTOR_PATCHED, are the
    // tracer's own and must still reach the reader. Only the mask's MARK
    // bit (and ENABLE) turn them off.
    let marks = |filter: u32, mask: u32| {
        let mut mem = Mem::new(1, 64);
        let e = mem.engine(1, 64);
        let mut c = e.config_get();
        c.flags = raw::MT_CF_ENABLE | filter;
        c.pid = 5;
        c.event_mask = mask;
        e.config_set(zerocopy::IntoBytes::as_bytes(&c), 77).unwrap();
        e.vector_insert(0x1000, [1, 2, 3, 4], 78).unwrap();
        let mut dec = Decoder::new();
        let (recs, errs) = drain_all(&e, &mut dec, MIN_DRAIN_BUFFER);
        assert!(errs.is_empty(), "{errs:?}");
        recs.iter()
            .filter_map(|r| match r.event {
                Ev::Mark { mark, .. } => Some(mark),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    use maptrace_abi::Mark;
    let all = [Mark::Start, Mark::Config, Mark::VectorPatched];
    assert_eq!(marks(raw::MT_CF_PID_FILTER, raw::MT_EVMASK_ALL), all);
    assert_eq!(marks(raw::MT_CF_PID_EXCLUDE, raw::MT_EVMASK_ALL), all);
    // Excluding pid 0 (the markers' pid) does not hide them either.
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let mut c = e.config_get();
    c.flags = raw::MT_CF_ENABLE | raw::MT_CF_PID_EXCLUDE;
    c.pid = 0;
    e.config_set(zerocopy::IntoBytes::as_bytes(&c), 77).unwrap();
    let mut dec = Decoder::new();
    let (recs, _) = drain_all(&e, &mut dec, MIN_DRAIN_BUFFER);
    assert_eq!(recs.iter().filter(|r| r.kind == EventKind::Mark).count(), 2);
    // The mask's MARK bit is what turns them off.
    let no_marks = raw::MT_EVMASK_ALL & !raw::MT_EVMASK_MARK;
    assert_eq!(marks(raw::MT_CF_PID_FILTER, no_marks), [Mark::Start]);
}

#[test]
fn stats_agree_with_what_was_drained() {
    let mut mem = Mem::new(2, 64);
    let e = mem.engine(2, 64);
    for i in 0..100 {
        e.record((i % 2) as u32, &pagein(1, 1, i));
    }
    let mut dec = Decoder::new();
    let (recs, _) = drain_all(&e, &mut dec, BIG);
    let mut buf = vec![0u8; e.stats_size()];
    assert!(
        e.stats(Default::default(), &mut buf[..e.stats_size() - 1])
            .is_none()
    );
    e.stats(
        maptrace_core::ShimCounters {
            hook_calls: 9,
            hooks_in_flight: 1,
            errors: 0,
            paths_skipped: 2,
        },
        &mut buf,
    )
    .unwrap();
    let stats = maptrace_abi::StatsView::parse(&buf).expect("stats parse");
    let h = stats.header;
    assert_eq!(
        (h.magic, h.nshards, h.slots_per_shard, h.hook_calls),
        (raw::MT_STATS_MAGIC, 2, 64, 9)
    );
    let drained: u64 = stats.shards().map(|s| s.drained_records).sum();
    let dropped = stats.dropped();
    assert_eq!(drained, recs.len() as u64);
    assert_eq!(drained + dropped, 101, "100 events + the START marker");
    assert_eq!(dropped, dec.losses().dropped);
}

#[test]
fn concurrent_producers_and_drainer_account_for_every_event() {
    // Under Miri (interpreted, every schedule explored slowly) fewer events
    // into the smallest shards, so the full and wrap paths are still taken.
    const PER_THREAD: u64 = if cfg!(miri) { 150 } else { 200_000 };
    const THREADS: u64 = 3;
    const CAP: u32 = if cfg!(miri) { 64 } else { 1024 };
    const MIGRATE_EVERY: u64 = if cfg!(miri) { 50 } else { 1000 };
    let mut mem = Mem::new(2, CAP);
    let e = mem.engine(2, CAP);
    let done = AtomicBool::new(false);
    let recorded = AtomicU64::new(0);
    let dropped = AtomicU64::new(0);
    let mut dec = Decoder::new();
    let (recs, errs) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (e, recorded, dropped) = (&e, &recorded, &dropped);
                s.spawn(move || {
                    for i in 0..PER_THREAD {
                        // Threads share shards on purpose: migration must be safe.
                        match e.record((t + i / MIGRATE_EVERY) as u32, &pagein(t as u32, t, i)) {
                            RecordResult::Recorded => recorded.fetch_add(1, Ordering::Relaxed),
                            RecordResult::Dropped => dropped.fetch_add(1, Ordering::Relaxed),
                            other => panic!("unexpected {other:?}"),
                        };
                    }
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut all = (Vec::new(), Vec::new());
            while !done.load(Ordering::Acquire) {
                let (r, x) = drain_all(&e, &mut dec, 256 << 10);
                all.0.extend(r);
                all.1.extend(x);
                std::thread::yield_now();
            }
            let (r, x) = drain_all(&e, &mut dec, 256 << 10);
            all.0.extend(r);
            all.1.extend(x);
            all
        });
        // A producer that panics fails the test here instead of hanging it.
        for p in producers {
            p.join().unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    // Drops after a shard's last drained record reach no batch header (an
    // empty drain writes none): one more record per shard, into rings the
    // reader emptied, places every drop before a record.
    let (mut recs, mut errs) = (recs, errs);
    for shard in 0..2u32 {
        let sentinel = pagein(99, 99, u64::from(shard));
        assert_eq!(e.record(shard, &sentinel), RecordResult::Recorded);
        recorded.fetch_add(1, Ordering::Relaxed);
    }
    let (r, x) = drain_all(&e, &mut dec, 256 << 10);
    recs.extend(r);
    errs.extend(x);
    assert!(errs.is_empty(), "{:?}", &errs[..errs.len().min(5)]);
    let evs = events(&recs);
    assert_eq!(
        evs.len() as u64,
        recorded.load(Ordering::Relaxed),
        "delivered == recorded"
    );
    let d = dropped.load(Ordering::Relaxed);
    assert_eq!(
        dec.losses().dropped,
        d,
        "drops reported == drops seen by producers"
    );
    assert_eq!(
        evs.len() as u64 + d,
        PER_THREAD * THREADS + 2,
        "produced (and the two sentinels) == delivered + dropped"
    );
    let lost: u64 = recs.iter().map(|r| r.lost_before).sum::<u64>() + dec.losses().unattributed;
    assert_eq!(
        lost, d,
        "every drop is placed in the stream or reported as trailing"
    );
    // Each producer's events keep their order within each shard.
    for t in 0..THREADS {
        for shard in 0..2u16 {
            let seq: Vec<i64> = evs
                .iter()
                .filter(|r| r.tid == t && r.shard == shard)
                .filter_map(|r| {
                    if let Ev::Pagein { offset, .. } = r.event {
                        Some(offset)
                    } else {
                        None
                    }
                })
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "order kept for tid {t} shard {shard}"
            );
        }
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Fixed(u32),
    Path(u32, usize),
    Drain(usize),
    AbortedDrain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..4).prop_map(Op::Fixed),
        1 => ((0u32..4), 0usize..1100).prop_map(|(s, l)| Op::Path(s, l)),
        1 => (0usize..3).prop_map(Op::Drain),
        1 => Just(Op::AbortedDrain),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    /// Against a model: every recorded event comes out exactly once, in
    /// per-shard order, and drops are exactly the ones the ring reported.
    #[test]
    fn ring_matches_its_model(ops in proptest::collection::vec(op(), 1..400)) {
        let mut mem = Mem::new(3, 64);
        let e = mem.engine(3, 64);
        let mut dec = Decoder::new();
        let (mut expected, mut got) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
        let mut drops = 0u64;
        let sizes = [MIN_DRAIN_BUFFER, 4096 + MIN_DRAIN_BUFFER, BIG];
        for (seq, op) in ops.into_iter().enumerate() {
            let seq = seq as u64;
            match op {
                Op::Fixed(s) => match e.record(s, &pagein(1, 1, seq)) {
                    RecordResult::Recorded => expected[s as usize % 3].push(seq),
                    RecordResult::Dropped => drops += 1,
                    other => prop_assert!(false, "unexpected {:?}", other),
                },
                Op::Path(s, len) => {
                    let path = vec![b'p'; len];
                    match e.record_path(s, &pagein(1, 1, seq), &path) {
                        RecordResult::Recorded => expected[s as usize % 3].push(seq),
                        RecordResult::Dropped => drops += 1,
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Drain(size) => {
                    let (recs, errs) = drain_all(&e, &mut dec, sizes[size]);
                    prop_assert!(errs.is_empty(), "{:?}", errs);
                    for r in events(&recs) {
                        got[r.shard as usize].push(r.timestamp_ns);
                    }
                }
                Op::AbortedDrain => {
                    let mut buf = vec![0u8; BIG];
                    e.drain_prepare(&mut buf, 0).unwrap();
                    e.drain_abort();
                }
            }
        }
        let (recs, errs) = drain_all(&e, &mut dec, BIG);
        prop_assert!(errs.is_empty(), "{:?}", errs);
        for r in events(&recs) {
            got[r.shard as usize].push(r.timestamp_ns);
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(dec.losses().dropped, drops);
    }
}

// ---------------------------------------------------------------- wrap paths
//
// The ring's counters wrap: positions at 2^32 (`enq` keeps 32 bits), stamps at
// 2^31 (`MT_STAMP_MASK`), drops at 2^32 (with a separate wrap count). Rings
// started just before each wrap reach those paths without billions of events.

/// Records `n` PAGEINs (offsets `from..from + n`) on shard 0, drains them,
/// and checks order, positions and that nothing was lost or corrupt.
fn record_and_drain_across(start: RingStart, n: u64) {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine_at(1, 64, start);
    let mut dec = Decoder::new();
    let mut all = Vec::new();
    // Several laps of the 64-slot shard, draining every 40 records.
    for round in 0..n.div_ceil(40) {
        for i in round * 40..((round + 1) * 40).min(n) {
            assert_eq!(e.record(0, &pagein(1, 1, i)), RecordResult::Recorded);
        }
        let (recs, errs) = drain_all(&e, &mut dec, BIG);
        assert!(errs.is_empty(), "start {start:?}: {errs:?}");
        all.extend(recs);
    }
    assert_eq!(offsets(&all), (0..n as i64).collect::<Vec<_>>());
    // START marker first, then the events, one slot each, no gap.
    let pos: Vec<u64> = all.iter().map(|r| r.pos).collect();
    assert_eq!(pos, (start.pos..start.pos + n + 1).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.lost_before == 0));
    let c = e.ring().counters(0);
    assert_eq!(c.produced_slots, start.pos + n + 1);
    assert_eq!(c.drained_slots, start.pos + n + 1);
    assert_eq!(c.dropped, start.drops);
}

#[test]
fn positions_wrap_past_2_pow_32_without_loss_or_reorder() {
    record_and_drain_across(
        RingStart {
            pos: (1 << 32) - 70,
            drops: 0,
        },
        200,
    );
}

#[test]
fn stamps_wrap_past_2_pow_31_without_loss_or_reorder() {
    record_and_drain_across(
        RingStart {
            pos: (1 << 31) - 70,
            drops: 0,
        },
        200,
    );
}

#[test]
fn the_drop_count_wraps_past_2_pow_32_and_stays_exact() {
    let start = RingStart {
        pos: 0,
        drops: (1 << 32) - 3,
    };
    let mut mem = Mem::new(1, 64);
    let e = mem.engine_at(1, 64, start);
    let mut dec = Decoder::new();
    // The START marker and 63 events fill the shard; 5 more are dropped,
    // carrying the 32-bit drop count across its wrap.
    for i in 0..63 {
        assert_eq!(e.record(0, &pagein(1, 1, i)), RecordResult::Recorded);
    }
    for i in 63..68 {
        assert_eq!(e.record(0, &pagein(1, 1, i)), RecordResult::Dropped);
    }
    assert_eq!(e.ring().counters(0).dropped, (1 << 32) + 2);
    let mut buf = vec![0u8; BIG];
    let n = e.drain_prepare(&mut buf, 0).unwrap();
    let h: raw::mt_batch_header = zerocopy::FromBytes::read_from_prefix(&buf[..n]).unwrap().0;
    assert_eq!(
        h.total_dropped,
        (1 << 32) + 2,
        "64-bit total across the wrap"
    );
    e.drain_commit();
    let (_, items) = dec.decode(&buf[..n]).unwrap();
    assert!(items.iter().all(Result::is_ok), "{items:?}");
    // The next record carries drops_before == 2 (mod 2^32): 5 lost before it.
    assert_eq!(e.record(0, &pagein(1, 1, 99)), RecordResult::Recorded);
    let (recs, errs) = drain_all(&e, &mut dec, BIG);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(offsets(&recs), [99]);
    assert_eq!(recs[0].lost_before, 5, "the delta survives the 32-bit wrap");
}

#[test]
fn path_records_span_the_ring_end_at_the_position_and_stamp_wrap() {
    // Slot index of 2^32 - 3 is 61: a 10-slot PATH runs 61..63, 0..6, and its
    // positions and stamps cross 2^32 (and so 2^31 for the stamps).
    let start = RingStart {
        pos: (1 << 32) - 4,
        drops: 0,
    };
    let mut mem = Mem::new(1, 64);
    let e = mem.engine_at(1, 64, start);
    let mut dec = Decoder::new();
    drain_all(&e, &mut dec, BIG); // the START marker
    let path: Vec<u8> = b"/System/Library/"
        .iter()
        .copied()
        .cycle()
        .take(500)
        .collect();
    let ev = event(raw::MT_KIND_MMAP, 9, 1);
    assert_eq!(e.record_path(0, &ev, &path), RecordResult::Recorded);
    assert_eq!(e.record(0, &pagein(1, 1, 7)), RecordResult::Recorded);
    let (recs, errs) = drain_all(&e, &mut dec, BIG);
    assert!(errs.is_empty(), "{errs:?}");
    match &recs[0].event {
        Ev::Path { path: p, .. } => assert_eq!(p, &path),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(recs[0].pos, (1 << 32) - 3);
    assert_eq!(recs[1].pos, (1 << 32) + 7, "after the path's 10 slots");
}

/// A whole slot as the drain hands it out: the stamp word (or continuation
/// marker), then 60 bytes of `fill`.
fn slot_bytes(word: u32, fill: u8) -> [u8; SLOT_SIZE] {
    let mut s = [fill; SLOT_SIZE];
    s[..4].copy_from_slice(&word.to_le_bytes());
    s
}

/// A prebuilt one-slot record: nslots 1 (record byte 9), `fill` elsewhere.
fn one_slot(fill: u8) -> [u8; SLOT_SIZE] {
    let mut s = [fill; SLOT_SIZE];
    s[9] = 1;
    s
}

#[test]
fn a_drain_stops_at_an_uncommitted_slot_and_copies_runs_across_the_ring_end() {
    // Positions 61..66 of a 64-slot shard: the run wraps after slot 63.
    let mut mem = Mem::new(1, 64);
    let start = RingStart { pos: 61, drops: 0 };
    let ring = Ring::init_at(mem.bytes(), 1, 64, start).unwrap();
    let mut buf = vec![0u8; 8 * SLOT_SIZE];
    ring.record(0, 1, |w| w.head(&one_slot(0xc1))).unwrap(); // pos 61
    ring.record(0, 1, |w| {
        // pos 62, still uncommitted: written in place, byte by byte.
        w.head_with(|body| {
            body.fill(0xa2);
            body[5] = 1;
        });
        ring.record(0, 1, |w| w.head(&one_slot(0xb3))).unwrap(); // pos 63
        ring.record(0, 2, |w| {
            // pos 64..66: a two-slot record on slots 0 and 1.
            let mut head = one_slot(0xd4);
            head[9] = 2;
            w.head(&head);
            w.continuation_with(1, |body| body.fill(0xd5));
        })
        .unwrap();
        let peek = ring.peek(0, &mut buf);
        assert_eq!((peek.records, peek.nslots), (1, 1), "cut at pos 62");
        assert_eq!(buf[..SLOT_SIZE], one_slot_with_stamp(62, 0xc1));
        assert_eq!(peek.backlog_after, 4);
        ring.release(0, &peek);
    })
    .unwrap();
    let peek = ring.peek(0, &mut buf);
    assert_eq!((peek.first_pos, peek.records, peek.nslots), (62, 3, 4));
    let mut expected = Vec::new();
    expected.extend_from_slice(&one_slot_with_stamp(63, 0xa2));
    expected.extend_from_slice(&one_slot_with_stamp(64, 0xb3));
    let mut head = one_slot_with_stamp(65, 0xd4);
    head[9] = 2;
    expected.extend_from_slice(&head);
    expected.extend_from_slice(&slot_bytes(raw::MT_STAMP_CONT | 1, 0xd5));
    assert_eq!(buf[..4 * SLOT_SIZE], expected[..], "two pieces, in order");
    ring.release(0, &peek);
    assert_eq!(ring.peek(0, &mut buf).nslots, 0);
}

/// [`one_slot`] as drained: its stamp word set.
fn one_slot_with_stamp(stamp: u32, fill: u8) -> [u8; SLOT_SIZE] {
    let mut s = one_slot(fill);
    s[..4].copy_from_slice(&stamp.to_le_bytes());
    s
}

#[test]
fn a_drain_that_cannot_take_a_whole_record_takes_the_run_before_it() {
    let mut mem = Mem::new(1, 64);
    let ring = Ring::init_at(mem.bytes(), 1, 64, RingStart { pos: 62, drops: 0 }).unwrap();
    ring.record(0, 1, |w| w.head(&one_slot(1))).unwrap();
    ring.record(0, 3, |w| {
        let mut head = one_slot(2);
        head[9] = 3;
        w.head(&head);
        w.continuation(1, &[3; 60]);
        w.continuation(2, &[4; 60]);
    })
    .unwrap();
    let mut buf = vec![0u8; 3 * SLOT_SIZE];
    let peek = ring.peek(0, &mut buf);
    assert_eq!((peek.records, peek.nslots, peek.truncated), (1, 1, true));
    assert_eq!(buf[..SLOT_SIZE], one_slot_with_stamp(63, 1));
    assert!(
        buf[SLOT_SIZE..].iter().all(|&b| b == 0),
        "nothing past the run"
    );
}

#[test]
fn remembered_vnode_ids_are_the_keyed_ids_through_evictions_and_recycling() {
    use maptrace_core::id_memo::SLOTS;
    use maptrace_core::vnode_id::VnodeIdKey;
    // Under Miri (interpreted) just enough vnodes to evict some entries.
    const VNODES: u64 = if cfg!(miri) {
        SLOTS as u64 + 8
    } else {
        2 * SLOTS as u64
    };
    const CAP: u32 = if cfg!(miri) { 1024 } else { 2048 };
    let key = VnodeIdKey::new([7, 11]); // the key of `Mem::engine`
    let mut mem = Mem::new(1, CAP);
    let e = mem.engine(1, CAP);
    // More vnodes than memo entries, each seen three times (hit or evicted),
    // the last time recycled (vid + 1).
    let vnodes = VNODES;
    let mut expected = Vec::new();
    for round in 0..3u32 {
        for v in 0..vnodes {
            let mut ev = pagein(42, 7, expected.len() as u64);
            ev.vnode_ptr = 0xffff_ff80_4000_0000 + v * 0xf8;
            ev.vid = 1 + u32::from(round == 2);
            assert_eq!(e.record(0, &ev), RecordResult::Recorded);
            expected.push(key.id(ev.vnode_ptr, ev.vid));
        }
    }
    let (recs, errs) = drain_all(&e, &mut Decoder::new(), e.drain_capacity());
    assert!(errs.is_empty(), "{errs:?}");
    let ids: Vec<u64> = events(&recs).iter().map(|r| r.vnode_id).collect();
    assert_eq!(ids, expected);
}
