//! The decoder against real batches from the engine, then damaged on
//! purpose: every kind of damage gives its typed error, never a panic and
//! never silently wrong records. Plus the shard merge.

mod common;

use common::{Mem, drain_all, pagein};
use maptrace_abi::decode::{
    BatchError, DecodeError, Decoded, Decoder, HeaderTally, KextDrops, Loss, RecordError,
};
use maptrace_abi::merge::merge_by_time;
use maptrace_abi::raw;
use proptest::prelude::*;
use zerocopy::FromBytes;

/// One batch with `n` pageins on each of `shards` shards.
fn batch(shards: u32, n: u64) -> Vec<u8> {
    let mut mem = Mem::new(shards, 256);
    let e = mem.engine(shards, 256);
    for i in 0..n {
        for s in 0..shards {
            e.record(s, &pagein(1, u64::from(s), i * 10 + u64::from(s)));
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let len = e.drain_prepare(&mut buf, 5).unwrap();
    buf.truncate(len);
    buf
}

fn decode_ok(bytes: &[u8]) -> Vec<maptrace_abi::Record> {
    let (_, items) = Decoder::new().decode(bytes).unwrap();
    items.into_iter().map(Result::unwrap).collect()
}

#[test]
fn batch_level_damage_is_refused_whole() {
    let b = batch(1, 3);
    let mut dec = Decoder::new();
    assert!(matches!(
        dec.decode(&b[..10]),
        Err(BatchError::Truncated { need: 64, have: 10 })
    ));
    assert!(matches!(
        dec.decode(&b[..b.len() - 64]),
        Err(BatchError::Truncated { .. })
    ));
    let mut bad = b.clone();
    bad[0] ^= 0xff;
    assert!(matches!(dec.decode(&bad), Err(BatchError::BadMagic(_))));
    let mut newer = b.clone();
    newer[5] = (raw::MT_ABI_VERSION_MAJOR + 1) as u8; // major byte of abi_version
    let err = dec.decode(&newer).unwrap_err();
    assert!(matches!(err, BatchError::AbiMismatch { .. }));
    assert!(err.to_string().contains("ABI mismatch"), "{err}");
    let mut flags = b.clone();
    flags[8] = 0x80;
    assert_eq!(
        dec.decode(&flags).unwrap_err(),
        BatchError::BadHeader("unknown flags")
    );
    assert_eq!(dec.batches(), 0, "nothing was accepted");
}

#[test]
fn a_corrupted_stamp_is_reported_as_corruption() {
    let mut b = batch(1, 4);
    // Batch header 64, segment header 64, slot 0 = START marker, slot 1 = first pagein.
    let stamp_at = 64 + 64 + 64;
    b[stamp_at] ^= 0x40;
    let (_, items) = Decoder::new().decode(&b).unwrap();
    let errs: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert!(
        matches!(errs[0], DecodeError::StampMismatch { pos: 1, .. }),
        "{errs:?}"
    );
    assert_eq!(
        items.iter().filter(|i| i.is_ok()).count(),
        1,
        "only the record before the damage"
    );
}

#[test]
fn bad_kinds_slot_counts_and_continuations_are_typed() {
    let base = batch(1, 2);
    let head = 64 + 64 + 64; // first pagein
    let mut kind = base.clone();
    kind[head + 8] = 99;
    let (_, items) = Decoder::new().decode(&kind).unwrap();
    assert!(items.iter().any(|i| matches!(
        i,
        Err(DecodeError::BadRecord {
            what: RecordError::UnknownKind(99),
            ..
        })
    )));
    let mut nslots = base.clone();
    nslots[head + 9] = 3; // a PAGEIN never spans slots
    let (_, items) = Decoder::new().decode(&nslots).unwrap();
    assert!(items.iter().any(|i| matches!(
        i,
        Err(DecodeError::BadRecord {
            what: RecordError::BadSlotCount(3),
            ..
        })
    )));

    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    e.record_path(0, &pagein(1, 1, 1), &[b'a'; 100]);
    let mut buf = vec![0u8; 1 << 16];
    let n = e.drain_prepare(&mut buf, 0).unwrap();
    let cont = 64 + 64 + 64 + 64; // marker, path head, first continuation
    buf[cont] = 0x77;
    let (_, items) = Decoder::new().decode(&buf[..n]).unwrap();
    assert!(items.iter().any(|i| matches!(
        i,
        Err(DecodeError::BadRecord {
            what: RecordError::BadContinuation(_),
            ..
        })
    )));
}

#[test]
fn truncated_segments_and_wrong_counts_are_reported() {
    let b = batch(2, 3);
    let mut short = b.clone();
    // Claim more slots in the first segment than the batch holds.
    short[64 + 8..64 + 12].copy_from_slice(&1000u32.to_le_bytes());
    let (_, items) = Decoder::new().decode(&short).unwrap();
    assert!(matches!(
        items.last(),
        Some(Err(DecodeError::TruncatedSegment { segment: 0 }))
    ));
    let mut count = b.clone();
    count[64 + 12..64 + 16].copy_from_slice(&9u32.to_le_bytes());
    let (_, items) = Decoder::new().decode(&count).unwrap();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Err(DecodeError::CountMismatch { announced: 9, .. })))
    );
}

/// Three batches of 5 pageins from one shard, of which another reader took
/// the second: the first and the third.
fn batches_around_a_taken_one() -> [Vec<u8>; 2] {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    let mut buf = vec![0u8; 1 << 16];
    let mut mine = Vec::new();
    for round in 0..3u64 {
        for i in 0..5 {
            e.record(0, &pagein(1, 1, round * 5 + i));
        }
        let n = e.drain_prepare(&mut buf, 0).unwrap();
        e.drain_commit();
        if round != 1 {
            mine.push(buf[..n].to_vec());
        }
    }
    mine.try_into().unwrap()
}

#[test]
fn a_batch_read_by_someone_else_shows_as_a_position_gap() {
    let [first, third] = batches_around_a_taken_one();
    let mut mine = Decoder::new();
    mine.decode(&first).unwrap();
    let (_, items) = mine.decode(&third).unwrap();
    assert!(
        matches!(
            items[0],
            Err(DecodeError::PositionGap {
                expected: 6,
                found: 11,
                ..
            })
        ),
        "{:?}",
        items[0]
    );
    assert_eq!(mine.losses().gap_slots, 5);
}

#[test]
fn a_new_generation_resets_the_history() {
    let a = batch(1, 2);
    let b = batch(1, 2);
    let mut b2 = b.clone();
    b2[24..32].copy_from_slice(&0x1234u64.to_le_bytes()); // another load
    let mut dec = Decoder::new();
    dec.decode(&a).unwrap();
    let (_, items) = dec.decode(&b2).unwrap();
    assert!(
        items.iter().all(Result::is_ok),
        "positions restart with a new generation"
    );
    let (_, items) = dec.decode(&b).unwrap();
    assert!(items.iter().all(Result::is_ok));
}

#[test]
fn merge_interleaves_shards_by_time_and_keeps_each_shard_in_order() {
    let recs = decode_ok(&batch(3, 20));
    let mut runs: Vec<Vec<_>> = vec![Vec::new(); 3];
    for r in recs {
        runs[r.shard as usize].push(r);
    }
    // A late-committed record on shard 1 with an older timestamp.
    runs[1][5].timestamp_ns = 0;
    let merged = merge_by_time(runs.clone());
    assert_eq!(merged.len(), runs.iter().map(Vec::len).sum::<usize>());
    for s in 0..3u16 {
        let pos: Vec<u64> = merged
            .iter()
            .filter(|r| r.shard == s)
            .map(|r| r.pos)
            .collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "shard {s} keeps its order"
        );
    }
    let ts: Vec<u64> = merged.iter().map(|r| r.timestamp_ns).collect();
    let inversions = ts.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions <= 2, "only the planted inversion: {inversions}");
    assert!(merge_by_time(Vec::new()).is_empty());
    assert_eq!(merge_by_time(vec![runs[0].clone()]), runs[0]);
}

proptest! {
    #![proptest_config(common::proptest_config(256))]
    /// Arbitrary bytes, and real batches with arbitrary damage, never panic.
    #[test]
    fn decoder_never_panics(noise in proptest::collection::vec(any::<u8>(), 0..600), at in 0usize..2000, byte in any::<u8>()) {
        let mut dec = Decoder::new();
        let _ = dec.decode(&noise);
        let mut b = batch(2, 6);
        let i = at % b.len();
        b[i] = byte;
        let _ = dec.decode(&b);
        let _ = drain_all;
    }
}

/// Found by fuzzing: header positions and drop counts near the top of u64
/// overflowed `first_pos + nslots`, `pos + 1`, the gap total and the loss sums
/// (a panic in debug builds, wrong figures in release).
#[test]
fn positions_and_drop_counts_at_the_top_of_u64_neither_overflow_nor_count_backwards_jumps() {
    type S = raw::mt_segment_header;
    let put = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let real = batch(2, 2);
    let (seg0, nslots0) = (
        64,
        u32::from_le_bytes(real[72..76].try_into().unwrap()) as usize,
    );
    let seg1 = seg0 + 64 + nslots0 * 64;
    let mut top = real.clone();
    put(
        &mut top,
        seg0 + std::mem::offset_of!(S, first_pos),
        u64::MAX - 1,
    );
    for seg in [seg0, seg1] {
        put(
            &mut top,
            seg + std::mem::offset_of!(S, dropped_cumulative),
            u64::MAX,
        );
    }

    let mut dec = Decoder::new();
    let (_, items) = dec.decode(&top).unwrap();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Err(DecodeError::StampMismatch { .. }))),
        "moved positions no longer match their stamps: {items:?}"
    );
    let l = dec.losses();
    assert_eq!(l.dropped, u64::MAX, "the two shards' drops saturate");
    assert!(l.unattributed <= l.dropped);

    // Back to position 0: the positions went back, which loses nothing.
    let (_, items) = dec.decode(&real).unwrap();
    let back = items
        .iter()
        .find_map(|i| {
            i.as_ref()
                .err()
                .filter(|e| matches!(e, DecodeError::PositionGap { .. }))
        })
        .expect("a position gap");
    assert!(back.to_string().contains("went back"), "{back}");
    assert_eq!(dec.losses().gap_slots, 0);

    // Two forward jumps of nearly 2^64 slots saturate the gap total.
    for _ in 0..2 {
        dec.decode(&top).unwrap();
        dec.decode(&real).unwrap();
    }
    assert_eq!(dec.losses().gap_slots, u64::MAX);
}

/// A batch of a full one-shard ring: `extra` events past its 64 slots were
/// dropped after its last record, so only the header counts them.
fn full_batch(extra: u64) -> Vec<u8> {
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    for i in 0..64 + extra {
        e.record(0, &pagein(1, 1, i));
    }
    let mut buf = vec![0u8; 1 << 16];
    let n = e.drain_prepare(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

fn tail_losses(items: &[Decoded]) -> Vec<(u16, u64)> {
    items
        .iter()
        .filter_map(|d| match d {
            Decoded::Lost(Loss::Dropped {
                shard,
                count,
                before_pos: None,
            }) => Some((*shard, *count)),
            _ => None,
        })
        .collect()
}

#[test]
fn feed_reports_the_old_loads_tail_drops_then_the_reload() {
    let old = full_batch(10);
    let dropped = raw::mt_batch_header::read_from_prefix(&old)
        .unwrap()
        .0
        .total_dropped;
    assert!(dropped > 0, "the ring must have dropped");
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.feed(&old, &mut out).unwrap();
    assert!(
        out.iter().all(|d| matches!(d, Decoded::Record(_))),
        "{out:?}"
    );
    assert!(
        tail_losses(&out).is_empty(),
        "tails wait for a reload or the end"
    );

    let mut new = batch(1, 2);
    new[24..32].copy_from_slice(&0x1234u64.to_le_bytes()); // another load
    out.clear();
    dec.feed(&new, &mut out).unwrap();
    // The old load's drops come first, then the reload, then the records.
    assert_eq!(tail_losses(&out[..1]), [(0, dropped)], "{:?}", &out[..2]);
    assert_eq!(out[1], Decoded::Reload { generation: 0x1234 });
    assert!(out[2..].iter().all(|d| matches!(d, Decoded::Record(_))));
    // Reported once: the end of the stream has nothing more to say.
    out.clear();
    dec.finish(None, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn finish_reports_tail_drops_once_with_the_kexts_counters_of_the_same_load() {
    let b = full_batch(10);
    let h = raw::mt_batch_header::read_from_prefix(&b).unwrap().0;
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.feed(&b, &mut out).unwrap();
    // Counters of another load say nothing about this one.
    let other = KextDrops {
        generation: h.generation ^ 1,
        per_shard: vec![1000],
    };
    let mut end = Vec::new();
    dec.finish(Some(&other), &mut end);
    assert_eq!(tail_losses(&end), [(0, h.total_dropped)]);
    // The kext counted 5 more (after this batch) on shard 0 and 2 on a
    // shard no batch named: only what was not reported yet comes out.
    let kext = KextDrops {
        generation: h.generation,
        per_shard: vec![h.total_dropped + 5, 2],
    };
    end.clear();
    dec.finish(Some(&kext), &mut end);
    assert_eq!(tail_losses(&end), [(0, 5), (1, 2)]);
    end.clear();
    dec.finish(Some(&kext), &mut end);
    assert!(end.is_empty(), "{end:?}");
}

#[test]
fn feed_turns_forward_gaps_into_losses_and_refused_batches_change_nothing() {
    let [first, third] = batches_around_a_taken_one();
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.feed(&first, &mut out).unwrap();
    out.clear();
    dec.feed(&third, &mut out).unwrap();
    assert_eq!(out[0], Decoded::Lost(Loss::Gap { shard: 0, slots: 5 }));
    let mut bad = third.clone();
    bad[0] ^= 1;
    let (before, batches) = (dec.losses(), dec.batches());
    out.clear();
    assert!(matches!(
        dec.feed(&bad, &mut out),
        Err(BatchError::BadMagic(_))
    ));
    assert!(out.is_empty());
    assert_eq!((dec.losses(), dec.batches()), (before, batches));
}

#[test]
fn header_tally_adds_up_loads_and_takes_the_kexts_count_of_the_last() {
    let full = full_batch(10);
    let h = raw::mt_batch_header::read_from_prefix(&full).unwrap().0;
    let mut t = HeaderTally::default();
    t.batch(&full).unwrap();
    // The same load again: cumulative counts are not added twice.
    t.batch(&full).unwrap();
    assert_eq!(t.dropped(), h.total_dropped);
    assert_eq!(t.events(), 2 * h.total_records);
    // Another load restarts the counters; its drops add to the old ones.
    let mut reloaded = full.clone();
    reloaded[24..32].copy_from_slice(&(h.generation ^ 1).to_le_bytes());
    t.batch(&reloaded).unwrap();
    assert_eq!(t.dropped(), 2 * h.total_dropped);
    // The kext's count of another load is ignored; of this one, taken.
    t.kext_dropped(h.generation, 1000);
    assert_eq!(t.dropped(), 2 * h.total_dropped);
    t.kext_dropped(h.generation ^ 1, h.total_dropped + 3);
    assert_eq!(t.dropped(), 2 * h.total_dropped + 3);
    // A refused header counts as refused and changes nothing else.
    let mut bad = full.clone();
    bad[0] ^= 1;
    let before = (t.events(), t.dropped());
    assert!(t.batch(&bad).is_err());
    assert_eq!(
        (t.events(), t.dropped(), t.refused()),
        (before.0, before.1, 1)
    );
}

#[test]
fn proc_open_and_close_records_round_trip_and_names_are_claimed_once() {
    use maptrace_abi::decode::Event;
    let mut mem = Mem::new(1, 256);
    let e = mem.engine(1, 256);
    let mut ev = pagein(7, 1, 10);
    // The name is claimed once per pid, and afresh after a config write.
    assert!(e.proc_claim(7));
    assert!(!e.proc_claim(7));
    assert_eq!(
        e.record_proc(0, &ev, b"a-process-name-longer-than-24\0junk"),
        maptrace_core::RecordResult::Recorded
    );
    e.record_proc(0, &ev, b"short\0junk");
    ev.kind = raw::MT_KIND_OPEN;
    ev.flags = 0x8001; // FREAD | O_EVTONLY
    e.record(0, &ev);
    ev.kind = raw::MT_KIND_CLOSE;
    ev.flags = 1;
    e.record(0, &ev);
    e.proc_forget(7);
    assert!(e.proc_claim(7));
    let mut buf = vec![0u8; 1 << 16];
    let len = e.drain_prepare(&mut buf, 5).unwrap();
    let recs = decode_ok(&buf[..len]);
    let events: Vec<_> = recs
        .iter()
        .skip(1)
        .map(|r| (r.pid, r.event.clone()))
        .collect();
    assert!(
        matches!(&events[0], (7, Event::Proc { name, truncated: true })
        if name.as_slice() == b"a-process-name-longer-th")
    );
    assert!(
        matches!(&events[1], (7, Event::Proc { name, truncated: false })
        if name.as_slice() == b"short")
    );
    assert!(
        matches!(&events[2], (7, Event::Open { fmode: 0x8001, counts, .. })
        if counts.usecount == ev.usecount as u16)
    );
    assert!(matches!(&events[3], (7, Event::Close { fflag: 1, .. })));
    assert_eq!(recs[3].vnode_id, recs[4].vnode_id);
    assert_ne!(recs[3].vnode_id, 0);
    assert_eq!(recs[1].vnode_id, 0);
}

#[test]
fn a_full_ring_forgets_only_the_names_it_drops() {
    use maptrace_abi::decode::Event;
    use maptrace_core::RecordResult::{Dropped, Recorded};
    let mut mem = Mem::new(1, 64);
    let e = mem.engine(1, 64);
    // pid 8 is named while there is room; its events then fill the shard.
    assert!(e.proc_claim(8));
    assert_eq!(e.record_proc(0, &pagein(8, 1, 1), b"eight"), Recorded);
    let mut seq = 2;
    while e.record(0, &pagein(8, 1, seq)) == Recorded {
        seq += 1;
    }
    // A dropped event lost no name: pid 8 is not named again.
    assert!(!e.proc_claim(8));
    // pid 7's PROC record is dropped: only pid 7 is forgotten, and its
    // name is asked for again on each event until one gets through.
    assert!(e.proc_claim(7));
    assert_eq!(e.record_proc(0, &pagein(7, 2, seq), b"seven"), Dropped);
    assert_eq!(e.record(0, &pagein(7, 2, seq)), Dropped);
    assert!(!e.proc_claim(8));
    assert!(e.proc_claim(7));
    assert_eq!(e.record_proc(0, &pagein(7, 2, seq + 1), b"seven"), Dropped);
    assert_eq!(e.record(0, &pagein(7, 2, seq + 1)), Dropped);
    // Room returns: pid 7's name is sent once, pid 8's not at all.
    let mut dec = Decoder::new();
    let (first, _) = drain_all(&e, &mut dec, 1 << 16);
    assert!(e.proc_claim(7));
    assert_eq!(e.record_proc(0, &pagein(7, 2, seq + 2), b"seven"), Recorded);
    assert_eq!(e.record(0, &pagein(7, 2, seq + 2)), Recorded);
    assert!(!e.proc_claim(7));
    assert!(!e.proc_claim(8));
    assert_eq!(e.record(0, &pagein(8, 1, seq + 3)), Recorded);
    let (second, errs) = drain_all(&e, &mut dec, 1 << 16);
    assert!(errs.is_empty(), "{errs:?}");
    let names = |recs: &[maptrace_abi::Record]| {
        recs.iter()
            .filter_map(|r| match &r.event {
                Event::Proc { name, .. } => Some((r.pid, name.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&first), [(8, b"eight".to_vec())]);
    assert_eq!(names(&second), [(7, b"seven".to_vec())]);
    assert_eq!(second.len(), 3, "{second:?}");
}

/// One step of a generated stream.
#[derive(Clone, Debug)]
enum Step {
    /// An event on a shard: kind (0..5, 4 = PATH), timestamp, path length.
    Event(u32, u8, u64, usize),
    /// Drain a batch and deliver it (`false`: another reader took it).
    Drain(bool),
    /// Flip one byte of the next delivered batch.
    Damage(usize, u8),
    /// A new kext load from here (new generation, positions near a wrap).
    Reload,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        24 => (0u32..10, 0u8..5, 0u64..64, 0usize..1100)
            .prop_map(|(s, k, t, l)| Step::Event(s, k, t, l)),
        2 => Just(Step::Drain(true)),
        1 => Just(Step::Drain(false)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Step::Damage(at, b)),
        1 => Just(Step::Reload),
    ]
}

/// The batches a generated run delivers (byte damage included).
fn delivered_batches(nshards: u32, steps: &[Step]) -> Vec<Vec<u8>> {
    const CAP: u32 = 64;
    let kinds = [
        raw::MT_KIND_MMAP,
        raw::MT_KIND_PAGEIN,
        raw::MT_KIND_MNOMAP,
        raw::MT_KIND_FILE_MMAP,
    ];
    let mut out = Vec::new();
    let mut load = 0u64;
    let mut damage = None;
    let mut rest = steps;
    while !rest.is_empty() {
        // Positions just below the 31-bit stamp wrap and the 2^32 drop wrap.
        let start = maptrace_core::ring::RingStart {
            pos: u64::from(raw::MT_STAMP_MASK) - 20 + load * 7,
            drops: u64::from(u32::MAX) - 10,
        };
        let mut mem = Mem::new(nshards, CAP);
        let e = mem.engine_at(nshards, CAP, start);
        let mut buf = vec![0u8; e.drain_capacity()];
        let mut seq = 0u64;
        let mut next_load = None;
        for (i, s) in rest.iter().enumerate() {
            match *s {
                Step::Event(shard, kind, ts, len) => {
                    seq += 1;
                    let shard = shard % nshards;
                    let mut ev = common::event(raw::MT_KIND_PAGEIN, 100 + shard, seq);
                    ev.timestamp_ns = seq * 8 + ts; // mostly rising, some inversions
                    if kind == 4 {
                        let path: Vec<u8> = (0..len).map(|b| b"abc/xyz"[b % 7]).collect();
                        e.record_path(shard, &ev, &path);
                    } else {
                        ev.kind = kinds[usize::from(kind)];
                        e.record(shard, &ev);
                    }
                }
                Step::Drain(mine) => {
                    let n = e.drain_prepare(&mut buf, seq).unwrap();
                    e.drain_commit();
                    if mine && n > 0 {
                        let mut b = buf[..n].to_vec();
                        b[24..32].copy_from_slice(&(0x6e6e + load).to_le_bytes());
                        if let Some((at, byte)) = damage.take() {
                            let at = 64 + at % (b.len() - 64).max(1);
                            if let Some(x) = b.get_mut(at) {
                                *x = byte;
                            }
                        }
                        out.push(b);
                    }
                }
                Step::Damage(at, byte) => damage = Some((at, byte)),
                Step::Reload => {
                    next_load = Some(i + 1);
                    break;
                }
            }
        }
        let n = e.drain_prepare(&mut buf, seq).unwrap();
        if n > 0 {
            let mut b = buf[..n].to_vec();
            b[24..32].copy_from_slice(&(0x6e6e + load).to_le_bytes());
            out.push(b);
        }
        load += 1;
        rest = next_load.map_or(&[][..], |i| &rest[i..]);
    }
    out
}

proptest! {
    #![proptest_config(common::proptest_config(200))]
    /// The borrowed path (`feed_views` + `time_order`) gives exactly what the
    /// owned path (`feed`, shard runs, `merge_by_time`) gives: the same
    /// stream of records, losses, reloads and corruption, the same merged
    /// order, the same loss figures; over PATH records, stamp and drop-count
    /// wraps, full shards, batches another reader took, reloads and damage.
    #[test]
    fn views_and_index_merge_match_the_owned_decode_and_merge(
        nshards in 1u32..=10,
        steps in proptest::collection::vec(step(), 0..300),
    ) {
        use maptrace_abi::merge::time_order;
        let batches = delivered_batches(nshards, &steps);
        let (mut owned, mut fast) = (Decoder::new(), Decoder::new());
        let (mut views, mut notices, mut order) = (Vec::new(), Vec::new(), Vec::new());
        for b in &batches {
            let mut items = Vec::new();
            let a = owned.feed(b, &mut items);
            views.clear();
            notices.clear();
            let f = fast.feed_views(b, &mut views, &mut notices);
            prop_assert_eq!(a, f);
            // The two outputs interleave back into the owned stream.
            let mut rebuilt = Vec::new();
            let mut notes = notices.iter().cloned().peekable();
            for (i, v) in views.iter().enumerate() {
                while let Some((_, n)) = notes.next_if(|(at, _)| *at <= i) {
                    rebuilt.push(Decoded::from(n));
                }
                rebuilt.push(Decoded::Record(v.to_record()));
            }
            rebuilt.extend(notes.map(|(_, n)| Decoded::from(n)));
            prop_assert_eq!(&rebuilt, &items);
            // The companion's merge: one run per shard, in order of appearance.
            let mut runs: Vec<Vec<maptrace_abi::Record>> = Vec::new();
            let mut run_of = std::collections::HashMap::new();
            for d in items {
                if let Decoded::Record(r) = d {
                    let i = *run_of.entry(r.shard).or_insert_with(|| {
                        runs.push(Vec::new());
                        runs.len() - 1
                    });
                    runs[i].push(r);
                }
            }
            let merged = merge_by_time(runs);
            order.clear();
            time_order(&views, &mut order);
            let by_index: Vec<_> = order.iter().map(|&i| views[i as usize].to_record()).collect();
            prop_assert_eq!(by_index, merged);
            prop_assert_eq!(owned.losses(), fast.losses());
        }
        let (mut a, mut f) = (Vec::new(), Vec::new());
        owned.finish(None, &mut a);
        fast.finish(None, &mut f);
        prop_assert_eq!(a, f);
    }
}
