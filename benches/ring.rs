//! Hot-path and reader benchmarks of the core, each next to the floor it is
//! judged against, measured in the same run (the machine is shared and
//! noisy, so BENCHMARKS.md reports ratios):
//!
//! * `floor/memcpy64+cas` — a 64-byte copy into a rotating slot plus one CAS;
//! * `record/ring` — reserve + write + commit of a prebuilt record;
//! * `record/engine` — the whole `Engine::record` (filter, vnode id, encode,
//!   ring) as the shim calls it, one vnode throughout (a page-in storm: the
//!   id memo hits);
//! * `record/parts/*` — `Engine::record` taken apart, inlined into the
//!   loop: the ring plus the encoder of a prebuilt event
//!   (`ring+encode_prebuilt`), of an event built per record as the shim
//!   does (`ring+encode`), plus the id memo's hit (`ring+encode+memo`);
//!   `record/engine` adds the kind and config checks and the call;
//! * `record/engine_distinct` — the same with a new vnode every record (the
//!   memo misses: keyed hash plus caching the id);
//! * `record/two_threads` — two threads recording at once on their own shards;
//! * `record/drop_path` — a full shard refusing events;
//! * `peers/arrayqueue` (one thread, and two sharing the queue) and
//!   `peers/rtrb` — the same 64-byte records pushed through
//!   `crossbeam_queue::ArrayQueue` (bounded MPMC) and `rtrb` (SPSC);
//! * `drain/4096` vs `floor/memcpy_batch` — batch drain throughput;
//! * `decode_merge/8192` — decoder + shard merge throughput: borrowed record
//!   views and a merge order (`8192_owned`: owned records moved into runs).
//!
//! Run: `cargo bench --bench ring` (add `-- --quick` for a fast pass).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use maptrace_abi::EventKind;
use maptrace_abi::decode::Decoder;
use maptrace_abi::merge::{merge_into, time_order_with};
use maptrace_abi::raw;
use maptrace_core::id_memo::IdMemo;
use maptrace_core::record;
use maptrace_core::ring::{Ring, SLOT_SIZE};
use maptrace_core::vnode_id::VnodeIdKey;
use maptrace_core::{Engine, HookEvent, Params};
use rtrb::RingBuffer;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Records per timed chunk; the ring is drained (untimed) between chunks.
const CHUNK: u64 = 8192;
const CAP: u32 = 1 << 14;

fn mem(nshards: u32, cap: u32) -> Vec<MaybeUninit<u8>> {
    vec![MaybeUninit::uninit(); Ring::mem_size(nshards, cap).unwrap()]
}

fn params() -> Params {
    Params {
        hash_key: [3, 5],
        generation: 1,
        probe_method: raw::MT_PROBE_OFFSET,
        start_ns: 0,
    }
}

fn event(i: u64) -> HookEvent {
    HookEvent {
        kind: raw::MT_KIND_PAGEIN,
        pid: 501,
        tid: 0x1234,
        timestamp_ns: i,
        duration_ns: 12_000,
        vnode_ptr: 0xffff_ff80_1234_5000,
        vid: 3,
        error: 0,
        offset: (i * 4096) as i64,
        size: 16384,
        usecount: 2,
        kusecount: 0,
        iocount: 1,
        count_method: raw::MT_PROBE_OFFSET,
        prot: 0,
        maxprot: 0,
        flags: 0,
        reserved0: 0,
    }
}

/// Empties every shard without timing it.
fn discard(ring: &Ring<'_>, scratch: &mut [u8]) {
    for s in 0..ring.nshards() as usize {
        loop {
            let p = ring.peek(s, scratch);
            if p.nslots == 0 {
                break;
            }
            ring.release(s, &p);
        }
    }
}

/// Times `iters` calls of `f` on each of `threads` threads (thread t uses
/// shard t), in chunks separated by untimed drains; returns the slowest
/// thread's time.
fn timed_producers<F>(ring: &Ring<'_>, threads: u32, iters: u64, f: F) -> Duration
where
    F: Fn(u32, u64) + Sync,
{
    let mut scratch = vec![0u8; CAP as usize * SLOT_SIZE];
    timed_threads(
        threads,
        iters,
        |t| {
            let f = &f;
            move |i| f(t, i)
        },
        || discard(ring, &mut scratch),
    )
}

/// Times `iters` calls on each of `threads` threads, thread t calling the
/// function `per_thread(t)` gives it, in chunks of `CHUNK` separated by an
/// untimed `between` (which empties the queue); returns the slowest thread's
/// time.
fn timed_threads<M, G>(
    threads: u32,
    iters: u64,
    per_thread: M,
    mut between: impl FnMut(),
) -> Duration
where
    M: Fn(u32) -> G + Sync,
    G: FnMut(u64),
{
    let chunks = iters.div_ceil(CHUNK);
    let barrier = Barrier::new(threads as usize + 1);
    let worst = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, worst, per_thread) = (&barrier, &worst, &per_thread);
            s.spawn(move || {
                let mut f = per_thread(t);
                let mut total = Duration::ZERO;
                for c in 0..chunks {
                    barrier.wait();
                    let n = CHUNK.min(iters - c * CHUNK);
                    let t0 = Instant::now();
                    for i in 0..n {
                        f(i);
                    }
                    total += t0.elapsed();
                    barrier.wait();
                }
                worst.fetch_max(total.as_nanos() as u64, Ordering::Relaxed);
            });
        }
        for _ in 0..chunks {
            barrier.wait();
            barrier.wait();
            between();
        }
    });
    Duration::from_nanos(worst.load(Ordering::Relaxed))
}

/// Peers: the same 64-byte records through `crossbeam_queue::ArrayQueue`
/// (bounded MPMC, one queue shared by the producers, as an MPMC queue would
/// replace the sharded ring) and `rtrb` (SPSC, one producer), timed like
/// `record/ring` and emptied between chunks the same way.
fn bench_peers(c: &mut Criterion) {
    let mut g = c.benchmark_group("peers");
    g.throughput(Throughput::Elements(1));
    let rec = [7u8; SLOT_SIZE];

    let q = ArrayQueue::<[u8; SLOT_SIZE]>::new(CAP as usize);
    for threads in [1u32, 2] {
        let name = if threads == 1 {
            "arrayqueue"
        } else {
            "arrayqueue/two_threads"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_threads(
                    threads,
                    iters,
                    |_| {
                        let q = &q;
                        move |_| {
                            let _ = q.push(*black_box(&rec));
                        }
                    },
                    || while q.pop().is_some() {},
                )
            });
        });
    }

    let (producer, mut consumer) = RingBuffer::<[u8; SLOT_SIZE]>::new(CAP as usize);
    let producer = Mutex::new(producer);
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            timed_threads(
                1,
                iters,
                |_| {
                    // Locked once per run by its one thread, not per push.
                    let mut p = producer.lock().unwrap();
                    move |_| {
                        let _ = p.push(*black_box(&rec));
                    }
                },
                || {
                    if let Ok(chunk) = consumer.read_chunk(consumer.slots()) {
                        chunk.commit_all();
                    }
                },
            )
        });
    });
    g.finish();
}

fn bench_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));

    // Floor: copy a 64-byte record into a rotating slot of a same-sized
    // buffer, plus one CAS on a counter.
    // Timed in the same kind of tight loop as the ring below.
    g.bench_function("floor/memcpy64+cas", |b| {
        let mut slots = vec![[0u8; SLOT_SIZE]; CAP as usize];
        let word = AtomicU64::new(0);
        let rec = [7u8; SLOT_SIZE];
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters as usize {
                let cur = word.load(Ordering::Relaxed);
                let _ = word.compare_exchange(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed);
                if let Some(slot) = slots.get_mut(i & (CAP as usize - 1)) {
                    *slot = rec;
                }
            }
            t0.elapsed()
        });
        black_box(&slots);
    });

    let mut m = mem(2, CAP);
    let ring = Ring::init(&mut m, 2, CAP).unwrap();
    let rec = [7u8; SLOT_SIZE];
    g.bench_function("ring", |b| {
        b.iter_custom(|iters| {
            timed_producers(&ring, 1, iters, |t, _| {
                let _ = ring.record(t, 1, |w| w.head(black_box(&rec)));
            })
        });
    });
    g.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            timed_producers(&ring, 2, iters, |t, _| {
                let _ = ring.record(t, 1, |w| w.head(black_box(&rec)));
            })
        });
    });

    let mut m = mem(2, CAP);
    let engine = Engine::new(Ring::init(&mut m, 2, CAP).unwrap(), params());
    g.bench_function("engine", |b| {
        b.iter_custom(|iters| {
            timed_producers(engine.ring(), 1, iters, |t, i| {
                black_box(engine.record(t, black_box(&event(i))));
            })
        });
    });

    // The engine's record taken apart, each step adding one stage to the
    // bare ring: the encoder (a constant vnode id), then the id memo's hit,
    // then (`record/engine`) the kind and config checks.
    let mut m = mem(2, CAP);
    let parts = Ring::init(&mut m, 2, CAP).unwrap();
    g.bench_function("parts/ring+encode", |b| {
        b.iter_custom(|iters| {
            timed_producers(&parts, 1, iters, |t, i| {
                let ev = black_box(event(i));
                let head = record::head_of(EventKind::Pagein, &ev, 0x5eed);
                let _ = parts.record(t, 1, |w| {
                    let drops_before = w.drops_before();
                    w.head_with(|body| record::write_fixed(body, head, &ev, drops_before));
                });
            })
        });
    });
    let pre = event(7);
    g.bench_function("parts/ring+encode_prebuilt", |b| {
        b.iter_custom(|iters| {
            timed_producers(&parts, 1, iters, |t, _| {
                let ev = black_box(&pre);
                let head = record::head_of(EventKind::Pagein, ev, 0x5eed);
                let _ = parts.record(t, 1, |w| {
                    let drops_before = w.drops_before();
                    w.head_with(|body| record::write_fixed(body, head, ev, drops_before));
                });
            })
        });
    });
    let (key, memo) = (VnodeIdKey::new(params().hash_key), IdMemo::new());
    g.bench_function("parts/ring+encode+memo", |b| {
        b.iter_custom(|iters| {
            timed_producers(&parts, 1, iters, |t, i| {
                let ev = black_box(event(i));
                let id = memo.id(&key, 1, ev.vnode_ptr, ev.vid);
                let head = record::head_of(EventKind::Pagein, &ev, id);
                let _ = parts.record(t, 1, |w| {
                    let drops_before = w.drops_before();
                    w.head_with(|body| record::write_fixed(body, head, &ev, drops_before));
                });
            })
        });
    });

    // A new vnode every record of a chunk: 8192 vnodes through 256 memo
    // entries, so each entry is rewritten many times before its vnode
    // comes back in the next chunk.
    g.bench_function("engine_distinct", |b| {
        b.iter_custom(|iters| {
            timed_producers(engine.ring(), 1, iters, |t, i| {
                let mut ev = event(i);
                ev.vnode_ptr += i << 8;
                black_box(engine.record(t, black_box(&ev)));
            })
        });
    });

    let mut m = mem(1, 64);
    let full = Ring::init(&mut m, 1, 64).unwrap();
    while full.record(0, 1, |w| w.head(&rec)).is_ok() {}
    g.bench_function("drop_path", |b| {
        b.iter(|| black_box(full.record(0, 1, |w| w.head(black_box(&rec)))));
    });
    g.finish();
}

fn bench_drain(c: &mut Criterion) {
    let mut g = c.benchmark_group("drain");
    const N: u64 = 4096;
    g.throughput(Throughput::Elements(N * 2));
    let mut m = mem(2, 1 << 13);
    let engine = Engine::new(Ring::init(&mut m, 2, 1 << 13).unwrap(), params());
    let mut buf = vec![0u8; engine.drain_capacity()];
    // The START marker would make the first batch one record longer.
    engine.drain_prepare(&mut buf, 0).unwrap();
    engine.drain_commit();
    let fill = |e: &Engine<'_>| {
        for i in 0..N {
            e.record(0, &event(i));
            e.record(1, &event(i));
        }
    };
    g.bench_function("floor/memcpy_batch", |b| {
        let src = vec![1u8; (2 * N as usize) * SLOT_SIZE];
        let mut dst = vec![0u8; src.len()];
        b.iter(|| dst.copy_from_slice(black_box(&src)));
    });
    g.bench_function("4096x2", |b| {
        b.iter_batched(
            || fill(&engine),
            |()| {
                let n = engine.drain_prepare(&mut buf, 1).unwrap();
                engine.drain_commit();
                black_box(n)
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_merge");
    const N: u64 = 4096;
    let mut m = mem(2, 1 << 13);
    let engine = Engine::new(Ring::init(&mut m, 2, 1 << 13).unwrap(), params());
    for i in 0..N {
        engine.record(0, &event(2 * i));
        engine.record(1, &event(2 * i + 1));
    }
    let mut buf = vec![0u8; engine.drain_capacity()];
    let n = engine.drain_prepare(&mut buf, 0).unwrap();
    buf.truncate(n);
    let records = Decoder::new().decode(&buf).unwrap().1.len() as u64;
    g.throughput(Throughput::Elements(records));
    g.bench_function("floor/memcpy_batch", |b| {
        let mut dst = vec![0u8; buf.len()];
        b.iter(|| dst.copy_from_slice(black_box(&buf)));
    });
    // As a reader uses them: one decoder and reused buffers across batches.
    // The fast path: records stay in the batch bytes as views, and the merge
    // gives an order of indices.
    let mut views = Vec::new();
    let mut notices = Vec::new();
    let (mut runs, mut order) = (Vec::new(), Vec::new());
    g.bench_function("8192", |b| {
        b.iter(|| {
            views.clear();
            notices.clear();
            order.clear();
            // A fresh generation each time: the decoder expects new positions.
            let mut dec = Decoder::new();
            dec.feed_views(black_box(&buf), &mut views, &mut notices)
                .unwrap();
            time_order_with(&views, &mut runs, &mut order);
            black_box(order.len())
        });
    });
    // The owned path: a `Record` per event, moved into shard runs and then
    // into the merged output.
    let mut items = Vec::new();
    let mut runs = vec![Vec::new(), Vec::new()];
    let mut merged = Vec::new();
    g.bench_function("8192_owned", |b| {
        b.iter(|| {
            items.clear();
            merged.clear();
            let mut dec = Decoder::new();
            dec.decode_into(black_box(&buf), &mut items).unwrap();
            for r in items.drain(..).flatten() {
                runs[usize::from(r.shard)].push(r);
            }
            merge_into(&mut runs, &mut merged);
            black_box(merged.len())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_record, bench_peers, bench_drain, bench_decode
}
criterion_main!(benches);
