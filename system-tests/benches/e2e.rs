//! End-to-end benchmarks: the real C shim and the real core on the simulated
//! XNU. The machine is shared and noisy, so every figure has a baseline
//! measured in the same run and BENCHMARKS.md reports the ratio:
//!
//! * `dispatch/*` — one VNOP through the vnode's vector (`DirectVnode`):
//!   `unhooked` before the kext loads, `hooked` through the shim's trampoline
//!   with the kext loaded and recording. Baseline: `dispatch/timestamp`, one
//!   `mach_absolute_time` + `absolutetime_to_nanoseconds` as the shim calls
//!   them (the hook takes two).
//! * `metered/*` — `pagein/hooked` with the simulator's stack meter on (as
//!   every test runs) and off: what the tests pay for the meter.
//! * `throughput/*` — producer threads dispatching VNOP_PAGEIN through the
//!   trampolines while one reader drains `kern.maptrace.events` into the abi
//!   `Decoder`, lossless (asserted). Baselines: `throughput/core`, the same
//!   threads calling `Engine::record` and a reader doing
//!   `drain_prepare`/`drain_commit` + decode, without shim or simulator
//!   (synthetic timestamps); `throughput/core_clocked`, the same with the
//!   two simulated clock reads a hook makes per event (`dispatch/timestamp`).
//! * `workload/*` — a scenario (the demo, and a larger generated one) run
//!   without and with the kext loaded.
//! * `mac_cost/*` — open + mmap + munmap + close of one file, by one thread
//!   and by two at once: `not_loaded` (the baseline) and `loaded_unloadable`
//!   (the default build: a dynamic MAC policy, so every MAC check takes
//!   `mac_policy_mtx` twice). With `--features resident` the loaded case is
//!   `loaded_resident` (a static policy, no lock).
//!
//! Run: `cargo bench -p maptrace-system-tests --bench e2e` (and add
//! `--features resident -- mac_cost` for the resident build). On a machine
//! loaded by other work, `MT_BENCH_CPU_TIME=1` times `dispatch`, `metered`
//! and `throughput` in CPU time (see `Clock`).

use std::hint::black_box;
use std::ops::Range;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maptrace_abi::EventKind;
use maptrace_abi::decode::{DecodeError, Decoder, Record};
use maptrace_abi::raw;
use maptrace_sim::{Config, Cred, DEMO, DirectVnode, GenParams, Proc, Scenario, Sim, prot, xnu};

use maptrace_system_tests::{Tunables, raw_name};

// The core's test helpers: an engine over owned memory, PAGEIN events.
#[path = "../../tests/common/mod.rs"]
mod common;

unsafe extern "C" {
    // The simulator's clock KPIs, the ones the shim's mt_now_ns calls
    // (callable from any thread while a kernel is booted).
    safe fn mach_absolute_time() -> u64;
    fn absolutetime_to_nanoseconds(abs: u64, result: *mut u64);
    // The other KPIs the pagein hook calls. The simulator looks their
    // pointer arguments up as keys and never dereferences them.
    safe fn proc_selfpid() -> i32;
    safe fn current_thread() -> xnu::thread_t;
    safe fn thread_tid(thread: xnu::thread_t) -> u64;
    safe fn vnode_vid(vp: xnu::vnode_t) -> u32;
    safe fn cpu_number() -> i32;
}

/// What a timed part is measured with. The wall clock by default; with
/// `MT_BENCH_CPU_TIME=1` (Linux) the CPU time of the timing thread
/// (`dispatch`, `metered`) or of the whole process (`throughput`: CPU per
/// event rather than events per second), which a machine loaded by other
/// work does not inflate with preemption.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    ThreadCpu,
    ProcessCpu,
}

fn cpu_time_wanted() -> bool {
    cfg!(target_os = "linux") && std::env::var_os("MT_BENCH_CPU_TIME").is_some_and(|v| v == "1")
}

/// The clock of a single-threaded timed part.
fn thread_clock() -> Clock {
    if cpu_time_wanted() {
        Clock::ThreadCpu
    } else {
        Clock::Wall
    }
}

/// The clock of a multi-threaded timed part.
fn process_clock() -> Clock {
    if cpu_time_wanted() {
        Clock::ProcessCpu
    } else {
        Clock::Wall
    }
}

#[cfg(target_os = "linux")]
fn cpu_ns(clock: Clock) -> u64 {
    unsafe extern "C" {
        fn clock_gettime(id: i32, ts: *mut [i64; 2]) -> i32;
    }
    // CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID (linux/time.h).
    let id = if matches!(clock, Clock::ProcessCpu) {
        2
    } else {
        3
    };
    let mut ts = [0i64; 2];
    // SAFETY: a valid out-pointer to a 64-bit `struct timespec`.
    let rc = unsafe { clock_gettime(id, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

#[cfg(not(target_os = "linux"))]
fn cpu_ns(_: Clock) -> u64 {
    unreachable!("CPU time is only asked for on Linux")
}

/// A started measurement on one of the clocks.
struct Stopwatch(Clock, Instant, u64);

impl Stopwatch {
    fn start(clock: Clock) -> Stopwatch {
        match clock {
            Clock::Wall => Stopwatch(clock, Instant::now(), 0),
            _ => Stopwatch(clock, Instant::now(), cpu_ns(clock)),
        }
    }

    fn elapsed(&self) -> Duration {
        match self.0 {
            Clock::Wall => self.1.elapsed(),
            c => Duration::from_nanos(cpu_ns(c) - self.2),
        }
    }
}

const PAGE: usize = 4096;
/// Dispatches per timed chunk; the ring is drained (untimed) between chunks.
const CHUNK: u64 = 2048;
/// Slots per shard for every load here: a chunk (even of MMAP + PATH
/// records) never fills a shard.
const SLOTS: u32 = 1 << 14;
/// Events producers may be ahead of the reader: below one shard's slots, so
/// the throughput runs cannot drop even when every producer hits one shard.
const MAX_AHEAD: u64 = SLOTS as u64 / 2;
/// Events a producer dispatches between two looks at the reader's progress.
const BURST: u64 = 256;

fn tunables() -> Tunables {
    Tunables {
        nshards: 4,
        slots: SLOTS,
        ..Tunables::default()
    }
}

/// A quiet simulator: no ground-truth trace kept, so long runs stay bounded.
fn boot() -> Sim {
    maptrace_system_tests::boot_fs(Config {
        trace_capacity: 0,
        // The kext's cost, not the test harness's stack meter.
        stack_meter: false,
        ..Config::default()
    })
}

/// One sysctl read of `kern.maptrace.events` into `buf`; its length.
fn read_events(sim: &Sim, buf: &mut [u8]) -> usize {
    sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(buf), Cred::Root)
        .expect("events read")
}

/// Decodes one batch, counting PAGEIN records; a bad record is a failure.
fn count_pageins(dec: &mut Decoder, out: &mut Vec<Result<Record, DecodeError>>, b: &[u8]) -> u64 {
    out.clear();
    dec.decode_into(b, out).expect("a valid batch");
    out.iter()
        .map(|r| r.as_ref().expect("a valid record"))
        .filter(|r| r.kind == EventKind::Pagein)
        .count() as u64
}

/// Drains the shim's ring completely; returns the records read.
fn drain_shim(sim: &Sim, buf: &mut [u8]) -> u64 {
    let mut total = 0;
    loop {
        let n = read_events(sim, buf);
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

/// Loads the shim and empties its ring (start markers); returns a buffer
/// for `kern.maptrace.events` and the hook count so far.
fn load_empty(sim: &Sim) -> (Vec<u8>, u64) {
    maptrace_system_tests::load(sim, tunables()).expect("the shim loads");
    let mut buf = maptrace_system_tests::events_buffer(sim);
    drain_shim(sim, &mut buf);
    (
        buf,
        maptrace_system_tests::stats(sim, Cred::Root).hook_calls,
    )
}

/// Asserts the loaded shim dropped nothing, took no fail-open path and ran
/// at least `dispatched` hooks since its hook count was `since`.
fn assert_lossless(sim: &Sim, since: u64, dispatched: u64) {
    let s = maptrace_system_tests::stats(sim, Cred::Root);
    assert_eq!(s.dropped(), 0, "the benchmark must not drop events");
    assert_eq!(s.errors, 0, "no fail-open path taken");
    assert!(
        s.hook_calls - since >= dispatched,
        "{} hooks for {dispatched} dispatches",
        s.hook_calls - since
    );
}

/// Times `iters` calls of `f` as `p`'s thread in chunks, running `between`
/// untimed after each chunk.
fn timed_chunks(p: &Proc, iters: u64, f: impl Fn(u64), mut between: impl FnMut()) -> Duration {
    let clock = thread_clock();
    p.run_as(|| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            let t0 = Stopwatch::start(clock);
            for i in done..done + n {
                f(i);
            }
            total += t0.elapsed();
            done += n;
            between();
        }
        total
    })
}

/// Nanoseconds since boot as the shim's `mt_now_ns` reads them.
fn sim_now_ns() -> u64 {
    let mut ns = 0u64;
    // SAFETY: a simulator KPI (a kernel is booted); `ns` is a valid
    // out-pointer.
    unsafe { absolutetime_to_nanoseconds(mach_absolute_time(), &raw mut ns) };
    ns
}

fn pagein(vn: &DirectVnode, i: u64) {
    // Clusters of 4 pages spread over the first 64 pages of the file.
    let off = (i % 16 * 4 * PAGE as u64) as i64;
    let err = vn.pagein(black_box(off), 4 * PAGE);
    assert_eq!(err, 0, "pagein failed");
}

fn mmap(vn: &DirectVnode) {
    assert_eq!(vn.mmap(black_box(prot::READ)), 0, "mmap failed");
}

fn bench_dispatch(c: &mut Criterion) {
    if maptrace_sim::SHIM_RESIDENT {
        return; // these unload the kext, which the resident build refuses
    }
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    let sim = boot();
    let p = sim.spawn("bench", 501);
    // Looked up before the load, so the shim's sweep hooks its vector.
    let vn = p.direct_vnode("/data/a.bin").expect("vnode");

    g.bench_function("timestamp", |b| {
        b.iter_custom(|iters| {
            let t0 = Stopwatch::start(thread_clock());
            for _ in 0..iters {
                black_box(sim_now_ns());
            }
            t0.elapsed()
        });
    });
    let vp = sim.vnode_addr("/data/a.bin").expect("vnode") as xnu::vnode_t;
    g.bench_function("hook_kpis", |b| {
        b.iter_custom(|iters| {
            timed_chunks(
                &p,
                iters,
                |_| {
                    black_box(proc_selfpid());
                    black_box(thread_tid(current_thread()));
                    black_box(vnode_vid(black_box(vp)));
                    black_box(cpu_number());
                },
                || {},
            )
        });
    });
    g.bench_function("pagein/unhooked", |b| {
        b.iter_custom(|iters| timed_chunks(&p, iters, |i| pagein(&vn, i), || {}));
    });
    g.bench_function("mmap/unhooked", |b| {
        b.iter_custom(|iters| timed_chunks(&p, iters, |_| mmap(&vn), || {}));
    });

    let (mut buf, hooks_before) = load_empty(&sim);
    let mut hooked = 0;
    g.bench_function("pagein/hooked", |b| {
        b.iter_custom(|iters| {
            hooked += iters;
            timed_chunks(
                &p,
                iters,
                |i| pagein(&vn, i),
                || {
                    drain_shim(&sim, &mut buf);
                },
            )
        });
    });
    g.bench_function("mmap/hooked", |b| {
        b.iter_custom(|iters| {
            hooked += iters;
            timed_chunks(
                &p,
                iters,
                |_| mmap(&vn),
                || {
                    drain_shim(&sim, &mut buf);
                },
            )
        });
    });
    g.finish();
    // The hooked runs really went through the trampolines and lost nothing.
    assert_lossless(&sim, hooks_before, hooked);
    sim.unload_kext().expect("the shim unloads");
}

/// What the tests pay: one hooked VNOP_PAGEIN with the simulator's stack
/// meter on (`Config::stack_meter`, the default), against the same with it
/// off, in one boot each.
fn bench_metered(c: &mut Criterion) {
    if maptrace_sim::SHIM_RESIDENT {
        return; // these unload the kext, which the resident build refuses
    }
    let mut g = c.benchmark_group("metered");
    g.throughput(Throughput::Elements(1));
    for (name, stack_meter) in [("pagein/meter_off", false), ("pagein/meter_on", true)] {
        let sim = maptrace_system_tests::boot_fs(Config {
            trace_capacity: 0,
            stack_meter,
            ..Config::default()
        });
        let p = sim.spawn("bench", 501);
        let vn = p.direct_vnode("/data/a.bin").expect("vnode");
        let (mut buf, hooks_before) = load_empty(&sim);
        let mut hooked = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                hooked += iters;
                timed_chunks(
                    &p,
                    iters,
                    |i| pagein(&vn, i),
                    || {
                        drain_shim(&sim, &mut buf);
                    },
                )
            });
        });
        assert_lossless(&sim, hooks_before, hooked);
        assert!(sim.take_violations().is_empty(), "no stack budget overrun");
        sim.unload_kext().expect("the shim unloads");
    }
    g.finish();
}

/// Runs `producers` threads producing `iters` events in all, in bursts
/// (`produce(t, range)` makes one event per index), never more than MAX_AHEAD
/// events ahead of the reader, which calls `read()` (the pageins it consumed,
/// 0 when empty) until it has seen all of them. Returns the time from start
/// to the last event read.
fn pipeline(
    producers: u32,
    iters: u64,
    produce: impl Fn(u32, Range<u64>) + Sync,
    mut read: impl FnMut() -> u64,
) -> Duration {
    let produced = AtomicU64::new(0);
    let consumed = AtomicU64::new(0);
    let start = Barrier::new(producers as usize + 1);
    let per = iters.div_ceil(u64::from(producers));
    std::thread::scope(|s| {
        for t in 0..producers {
            let (produced, consumed, start, produce) = (&produced, &consumed, &start, &produce);
            let mine = per.min(iters.saturating_sub(per * u64::from(t)));
            s.spawn(move || {
                start.wait();
                let mut done = 0;
                while done < mine {
                    // Lossless by construction: wait for the reader rather
                    // than overrun a shard.
                    while produced.load(Ordering::Relaxed)
                        >= consumed.load(Ordering::Acquire) + MAX_AHEAD
                    {
                        std::hint::spin_loop();
                        std::thread::yield_now();
                    }
                    let n = BURST.min(mine - done);
                    produce(t, done..done + n);
                    produced.fetch_add(n, Ordering::Relaxed);
                    done += n;
                }
            });
        }
        start.wait();
        let t0 = Stopwatch::start(process_clock());
        let mut seen = 0;
        while seen < iters {
            let n = read();
            if n == 0 {
                std::thread::yield_now();
            }
            seen += n;
            consumed.store(seen, Ordering::Release);
        }
        assert_eq!(seen, iters, "every event read exactly once");
        t0.elapsed()
    })
}

/// One drain of the core baseline's engine: the page-ins it returned.
fn drain_core(
    engine: &maptrace_core::Engine<'_>,
    buf: &mut [u8],
    dec: &mut Decoder,
    out: &mut Vec<Result<Record, DecodeError>>,
) -> u64 {
    let n = engine.drain_prepare(buf, 0).expect("drain");
    engine.drain_commit();
    if n == 0 {
        0
    } else {
        count_pageins(dec, out, &buf[..n])
    }
}

fn bench_throughput(c: &mut Criterion) {
    if maptrace_sim::SHIM_RESIDENT {
        return; // these unload the kext, which the resident build refuses
    }
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(1));
    let threads = 2;
    // Booted first: `core_clocked` reads its clock (`core` ignores it).
    let sim = boot();

    // Baseline: the core alone, as the shim drives it.
    let mut mem = common::Mem::new(4, SLOTS);
    let engine = mem.engine(4, SLOTS);
    let mut core_buf = vec![0u8; engine.drain_capacity()];
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    g.bench_function("core", |b| {
        b.iter_custom(|iters| {
            pipeline(
                threads,
                iters,
                |t, range| {
                    for i in range {
                        let ev = common::pagein(501 + t, u64::from(t) + 1, i);
                        black_box(engine.record(t, &ev));
                    }
                },
                || drain_core(&engine, &mut core_buf, &mut dec, &mut out),
            )
        });
    });
    // The same, with the two clock reads every hook that reports a
    // duration makes (`dispatch/timestamp`'s source, on a booted simulator).
    g.bench_function("core_clocked", |b| {
        b.iter_custom(|iters| {
            pipeline(
                threads,
                iters,
                |t, range| {
                    for i in range {
                        let start = sim_now_ns();
                        let mut ev = common::pagein(501 + t, u64::from(t) + 1, i);
                        ev.timestamp_ns = start;
                        ev.duration_ns = sim_now_ns() - start;
                        black_box(engine.record(t, &ev));
                    }
                },
                || drain_core(&engine, &mut core_buf, &mut dec, &mut out),
            )
        });
    });
    let lost: u64 = (0..4).map(|s| engine.ring().counters(s).dropped).sum();
    assert_eq!(lost, 0, "the core baselines must not drop events");

    // The shim on the simulator: trampolines + sysctl reader.
    let procs: Vec<Proc> = (0..threads)
        .map(|t| sim.spawn(&format!("producer{t}"), 501))
        .collect();
    // A file per producer, as independent faulting processes have: no
    // shared page-cache lock between them.
    let vnodes: Vec<DirectVnode> = procs
        .iter()
        .enumerate()
        .map(|(t, p)| {
            let path = format!("/data/producer{t}.bin");
            sim.add_file(&path, 64 * PAGE as u64).expect("file");
            p.direct_vnode(&path).expect("vnode")
        })
        .collect();
    let (mut buf, hooks_before) = load_empty(&sim);
    let mut hooked = 0;
    g.bench_function("shim", |b| {
        b.iter_custom(|iters| {
            hooked += iters;
            pipeline(
                threads,
                iters,
                |t, range| {
                    let vn = &vnodes[t as usize];
                    // One thread identity per burst, as in a process's run.
                    procs[t as usize].run_as(|| range.for_each(|i| pagein(vn, i)));
                },
                || {
                    let n = read_events(&sim, &mut buf);
                    if n == 0 {
                        0
                    } else {
                        count_pageins(&mut dec, &mut out, &buf[..n])
                    }
                },
            )
        });
    });
    g.finish();
    assert_lossless(&sim, hooks_before, hooked);
    sim.unload_kext().expect("the shim unloads");
}

/// Unloads after a scenario. The demo force-unmounts the only hfs volume with
/// a file in use: the shim keeps that vector hooked (to trace vclean's last
/// unmaps) and refuses to unload until a vnode of an hfs mount is seen again.
fn unload_after(sim: &Sim) {
    if sim.unload_kext().is_ok() {
        return;
    }
    sim.mount("hfs", "/Volumes/Again").expect("mount");
    sim.add_file("/Volumes/Again/f", 1 << 16).expect("file");
    let p = sim.spawn("again", 501);
    let fd = p.open("/Volumes/Again/f").expect("open");
    p.close(fd).expect("close");
    sim.unload_kext().expect("the shim unloads");
}

/// Boots, optionally loads the shim, and times one run of `sc`.
fn run_scenario(sc: &Scenario, loaded: bool) -> Duration {
    let sim = Sim::boot(Config {
        trace_capacity: 0,
        // The kext's cost, not the test harness's stack meter.
        stack_meter: false,
        ..Config::default()
    });
    if loaded {
        maptrace_system_tests::load(&sim, tunables()).expect("the shim loads");
    }
    let t0 = Instant::now();
    let report = sc.run(&sim).expect("the scenario runs");
    let took = t0.elapsed();
    black_box(report);
    if loaded {
        let mut buf = maptrace_system_tests::events_buffer(&sim);
        assert!(drain_shim(&sim, &mut buf) > 0, "the kext recorded the run");
        assert_lossless(&sim, 0, 1);
        unload_after(&sim);
    }
    took
}

fn bench_workload(c: &mut Criterion) {
    if maptrace_sim::SHIM_RESIDENT {
        return; // these unload the kext, which the resident build refuses
    }
    let mut g = c.benchmark_group("workload");
    let demo = Scenario::parse(DEMO).expect("the demo parses");
    let generated = maptrace_sim::scenario::generate(
        8,
        &GenParams {
            procs: 4,
            files: 8,
            ops_per_proc: 200,
            ..GenParams::default()
        },
    );
    for (name, sc) in [("demo", &demo), ("generated", &generated)] {
        for (state, loaded) in [("unloaded", false), ("loaded", true)] {
            g.bench_function(format!("{name}/{state}"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run_scenario(sc, loaded)).sum());
            });
        }
    }
    g.finish();
}

/// One open + mmap + munmap + close of `path` by `p`.
fn open_map(p: &Proc, path: &str) {
    let fd = p.open(black_box(path)).expect("open");
    let a = p
        .mmap(
            fd,
            4 * PAGE as u64,
            prot::READ,
            maptrace_sim::map_flags::SHARED,
            0,
        )
        .expect("mmap");
    p.munmap(a).expect("munmap");
    p.close(fd).expect("close");
}

/// `iters` open+mmap cycles by each of `procs`, all at once; the slowest
/// thread's time.
fn open_map_threads(procs: &[Proc], iters: u64) -> Duration {
    let start = Barrier::new(procs.len());
    std::thread::scope(|s| {
        let threads: Vec<_> = procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let start = &start;
                s.spawn(move || {
                    let path = if i % 2 == 0 {
                        "/data/a.bin"
                    } else {
                        "/data/b.bin"
                    };
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        open_map(p, path);
                    }
                    t0.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("worker"))
            .max()
            .unwrap_or_default()
    })
}

fn bench_mac_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("mac_cost");
    g.throughput(Throughput::Elements(1));
    let loaded_name = if maptrace_sim::SHIM_RESIDENT {
        "loaded_resident"
    } else {
        "loaded_unloadable"
    };
    for (state, loaded) in [("not_loaded", false), (loaded_name, true)] {
        let sim = boot();
        let mut buf = Vec::new();
        if loaded {
            buf = load_empty(&sim).0;
        }
        let procs = [sim.spawn("bench0", 501), sim.spawn("bench1", 501)];
        for threads in [1, 2] {
            g.bench_function(format!("{threads}t/{state}"), |b| {
                b.iter_custom(|iters| {
                    let busy = sim.kernel().mac.busy_acquisitions();
                    let mut took = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        // Chunks the ring holds; drained untimed in between.
                        let n = (CHUNK / 4).min(iters - done);
                        took += open_map_threads(&procs[..threads], n);
                        if loaded {
                            drain_shim(&sim, &mut buf);
                        }
                        done += n;
                    }
                    // The model the figures rest on: only an unloadable policy busies the list.
                    let busied = sim.kernel().mac.busy_acquisitions() > busy;
                    assert_eq!(busied, loaded && !maptrace_sim::SHIM_RESIDENT);
                    took
                });
            });
        }
        if loaded && !maptrace_sim::SHIM_RESIDENT {
            sim.unload_kext().expect("the shim unloads");
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = e2e;
    config = config();
    targets = bench_dispatch, bench_metered, bench_throughput, bench_workload, bench_mac_cost
}
criterion_main!(e2e);
