//! A loom model of the ring protocol: two producers reserving and
//! committing on one 2-slot shard while the reader peeks and releases. Loom
//! explores every interleaving (and the weak-memory outcomes the orderings
//! allow) and checks: no torn record, per-producer order, and
//! delivered + dropped == produced. The reader's scan-then-copy is checked
//! with runs cut by an uncommitted slot (a later producer commits first) and
//! runs that wrap at the shard's end, including a two-slot record.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use maptrace_core::ring::{Ring, RingStart, SLOT_SIZE};
use std::mem::MaybeUninit;

fn record_bytes(producer: u8, seq: u8) -> [u8; SLOT_SIZE] {
    let mut r = [0u8; SLOT_SIZE];
    r[8] = 2; // kind
    r[9] = 1; // nslots
    for b in &mut r[16..] {
        *b = producer * 16 + seq; // the same byte everywhere: a tear is visible
    }
    r
}

fn check_and_collect(buf: &[u8], n: u64, out: &mut Vec<(u8, u8)>) {
    for slot in buf[..n as usize * SLOT_SIZE].chunks(SLOT_SIZE) {
        let v = slot[16];
        assert!(slot[16..].iter().all(|&b| b == v), "torn record");
        out.push((v / 16, v % 16));
    }
}

#[test]
fn producers_and_reader_never_lose_or_tear_a_record() {
    producers_and_reader(RingStart::default());
}

#[test]
fn producers_and_reader_across_the_position_and_stamp_wrap() {
    // The 4 reservations cross position 2^32 (and so stamp 2^31 twice over).
    producers_and_reader(RingStart {
        pos: (1 << 32) - 2,
        drops: 0,
    });
}

fn producers_and_reader(start: RingStart) {
    // Every interleaving with up to 3 preemptions: the state space of the
    // unbounded model does not finish on a small machine.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let mem: &'static mut [MaybeUninit<u8>] = Box::leak(
            vec![MaybeUninit::uninit(); Ring::mem_size(1, 2).unwrap()].into_boxed_slice(),
        );
        let ring = Arc::new(Ring::init_at(mem, 1, 2, start).unwrap());
        let dropped = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let (ring, dropped) = (ring.clone(), dropped.clone());
                loom::thread::spawn(move || {
                    for seq in 0..2u8 {
                        let rec = record_bytes(p, seq);
                        // Producer 0 copies a prebuilt record in; producer 1
                        // writes in place, as the engine does.
                        let pushed = ring.record(0, 1, |w| {
                            if p == 0 {
                                w.head(&rec);
                            } else {
                                w.head_with(|body| body.copy_from_slice(&rec[4..]));
                            }
                        });
                        if pushed.is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut buf = [0u8; 4 * SLOT_SIZE];
        let peek = ring.peek(0, &mut buf);
        check_and_collect(&buf, peek.records, &mut got);
        ring.release(0, &peek);
        for p in producers {
            p.join().unwrap();
        }
        let peek = ring.peek(0, &mut buf);
        check_and_collect(&buf, peek.records, &mut got);
        ring.release(0, &peek);
        let d = dropped.load(Ordering::Relaxed);
        assert_eq!(got.len() as u64 + d, 4, "delivered + dropped == produced");
        assert_eq!(ring.counters(0).dropped, d, "the ring's count is exact");
        for p in 0..2u8 {
            let seqs: Vec<u8> = got.iter().filter(|g| g.0 == p).map(|g| g.1).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "producer order kept");
        }
    });
}

#[test]
fn a_drop_count_read_across_its_wrap_is_never_2_pow_32_too_high() {
    // One producer drops the event that wraps the 32-bit drop count while
    // the reader snapshots the 64-bit total. Read in the wrong order (enq,
    // then the wrap count), the snapshot can pair the old enq with the new
    // wrap count: 2^33 - 1, a phantom 2^32 drops.
    loom::model(|| {
        let mem: &'static mut [MaybeUninit<u8>] = Box::leak(
            vec![MaybeUninit::uninit(); Ring::mem_size(1, 2).unwrap()].into_boxed_slice(),
        );
        let start = RingStart {
            pos: 0,
            drops: u64::from(u32::MAX),
        };
        let ring = Arc::new(Ring::init_at(mem, 1, 2, start).unwrap());
        for seq in 0..2 {
            ring.record(0, 1, |w| w.head(&record_bytes(0, seq)))
                .unwrap();
        }
        let producer = {
            let ring = ring.clone();
            loom::thread::spawn(move || {
                assert!(ring.record(0, 1, |w| w.head(&record_bytes(1, 0))).is_err());
            })
        };
        let seen = ring.counters(0).dropped;
        producer.join().unwrap();
        assert!(
            seen == u64::from(u32::MAX) || seen == 1 << 32,
            "snapshot across the wrap read {seen:#x}"
        );
        assert_eq!(ring.counters(0).dropped, 1 << 32);
    });
}

#[test]
fn a_two_slot_record_written_in_place_across_the_shard_end_is_read_whole() {
    // A 2-slot shard at position 1: the two-slot record takes slots 1 and 0,
    // so the reader's copy is two pieces. A one-slot producer races it for
    // the room; the reader peeks while both run.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let mem: &'static mut [MaybeUninit<u8>] = Box::leak(
            vec![MaybeUninit::uninit(); Ring::mem_size(1, 2).unwrap()].into_boxed_slice(),
        );
        let start = RingStart { pos: 1, drops: 0 };
        let ring = Arc::new(Ring::init_at(mem, 1, 2, start).unwrap());
        let long = {
            let ring = ring.clone();
            loom::thread::spawn(move || {
                ring.record(0, 2, |w| {
                    let mut head = record_bytes(1, 1);
                    head[9] = 2;
                    w.head_with(|body| body.copy_from_slice(&head[4..]));
                    w.continuation_with(1, |body| body.fill(0x11));
                })
                .is_ok()
            })
        };
        let short = {
            let ring = ring.clone();
            loom::thread::spawn(move || ring.record(0, 1, |w| w.head(&record_bytes(2, 2))).is_ok())
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 2 * SLOT_SIZE];
        let mut collect = |got: &mut Vec<u8>| {
            let peek = ring.peek(0, &mut buf);
            let mut at = 0;
            for _ in 0..peek.records {
                let head = &buf[at * SLOT_SIZE..(at + 1) * SLOT_SIZE];
                let v = head[16];
                assert!(head[16..].iter().all(|&b| b == v), "torn head");
                if v == 0x11 {
                    // The long record: its continuation came along, whole.
                    let cont = &buf[(at + 1) * SLOT_SIZE..(at + 2) * SLOT_SIZE];
                    assert_eq!(cont[..4], (0x8000_0001u32).to_le_bytes());
                    assert!(cont[4..].iter().all(|&b| b == 0x11), "torn continuation");
                    at += 2;
                } else {
                    at += 1;
                }
                got.push(v);
            }
            assert_eq!(at as u64, peek.nslots);
            ring.release(0, &peek);
        };
        collect(&mut got);
        let long_in = long.join().unwrap();
        let short_in = short.join().unwrap();
        collect(&mut got);
        assert_eq!(got.len(), usize::from(long_in) + usize::from(short_in));
        assert_eq!(
            ring.counters(0).dropped,
            u64::from(!long_in) + u64::from(!short_in),
            "delivered + dropped == produced"
        );
    });
}
