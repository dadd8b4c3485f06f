//! Exact accounting under stress (issue 8): producer threads map, fault and
//! unmap files on two mounts through the real hooks while a deliberately slow
//! reader drains `kern.maptrace.events` from a ring far too small to keep up,
//! and one copyout fails mid-run. Afterwards, exactly:
//!
//! * per shard, the kext's own counters (`kern.maptrace.stats`) agree with
//!   what the decoder delivered (records and slots) and the losses it placed;
//! * in total, delivered + dropped equals an independent count of what was
//!   produced: what the producers' calls did (the simulator's `TouchStats`
//!   and one map/unmap per iteration) and, when it holds the whole run, the
//!   simulator's trace of what reached the filesystems, plus the PATH records;
//! * no record is corrupted or delivered twice, and each thread's records
//!   on a shard come in the order the thread made them;
//! * the companion's pipeline, fed the same batches, reports every drop on
//!   its shard right before the record that follows it (JSON and table
//!   lines), and its totals and report say the same.
//!
//! `MT_STRESS_EVENTS` sets the events produced (default 20 000: seconds in a
//! debug build) and `MT_STRESS_PRODUCERS` the producer threads (default 3).
//! The long form (10^8 events; the trace comparison is skipped above
//! `EXACT_TRACE_MAX`, every other check runs on the fly):
//!
//! ```sh
//! MT_STRESS_EVENTS=100000000 cargo test --release -p maptrace-system-tests --test stress -- --nocapture
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maptrace::output::{item_json, item_line};
use maptrace::pipeline::{Item, KextDrops, Loss, Pipeline};
use maptrace::report;
use maptrace::sim::SimSysctl;
use maptrace::source::{Next, Source};
use maptrace::sysctl::SysctlSource;
use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_abi::{EventKind, raw, wire};
use maptrace_sim::{Config, Cred, Platform, Proc, Sim, TraceEvent, TraceOp, map_flags, prot};
use maptrace_system_tests::{
    Stats, Tunables, boot_fs, config_bytes, load, raw_name, stats, write_config,
};

/// The Intel SSD platform's page (the tests boot it).
const PAGE: u64 = 4096;
const FILE_PAGES: u64 = 16;
const MAP_LEN: u64 = FILE_PAGES * PAGE;
/// Files each producer cycles through, alternating between the two mounts.
const FILES_PER_PRODUCER: usize = 4;
/// Records one iteration produces, about: FILE_MMAP, PATH + MMAP (twice for
/// the MAP_SHARED half of the iterations: XNU maps a shared call's object
/// twice), one to three PAGEINs (fault clusters grow with the file's
/// sequential run), MNOMAP.
const RECORDS_PER_ITERATION: u64 = 7;
const SHARDS: u32 = 4;
/// Slots per shard: a handful of iterations fill a shard.
const SLOTS: u32 = 64;
/// The reader's buffer: a few records per read.
const READ_BUF: usize = 2048;
/// The reader's pause between reads (what makes it slow).
const READ_PAUSE: Duration = Duration::from_micros(300);
/// The batch whose copyout is made to fail.
const FAULT_AT_BATCH: u64 = 20;
/// Up to this many events the simulator's trace holds the whole run and
/// every record is matched against it.
const EXACT_TRACE_MAX: u64 = 400_000;
const EFAULT: i32 = 14;

/// How big a run is, from the environment.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    events: u64,
    producers: usize,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().replace('_', "").parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name} must be a positive integer, got {v:?}"),
        },
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            events: env_number("MT_STRESS_EVENTS", 20_000),
            producers: env_number("MT_STRESS_PRODUCERS", 3) as usize,
        }
    }

    fn iterations_per_producer(&self) -> u64 {
        self.events
            .div_ceil(RECORDS_PER_ITERATION * self.producers as u64)
    }

    fn exact_trace(&self) -> bool {
        self.events <= EXACT_TRACE_MAX
    }
}

fn file_path(producer: usize, k: usize) -> String {
    if k % 2 == 0 {
        format!("/data/stress/p{producer}/f{k}.bin")
    } else {
        format!("/Volumes/hfs/stress/p{producer}/f{k}.bin")
    }
}

/// What one producer's calls did, as the simulator reported them.
#[derive(Clone, Copy, Debug, Default)]
struct Produced {
    maps: u64,
    /// VNOP_MMAPs: two per MAP_SHARED map, one per MAP_PRIVATE.
    mmaps: u64,
    pageins: u64,
    unmaps: u64,
}

impl Produced {
    /// Records the kext makes for this work: per map a FILE_MMAP; per
    /// VNOP_MMAP a PATH and an MMAP; per page-in a PAGEIN; per last unmap an
    /// MNOMAP.
    fn records(&self) -> u64 {
        self.maps + 2 * self.mmaps + self.pageins + self.unmaps
    }

    fn add(&mut self, o: Produced) {
        self.maps += o.maps;
        self.mmaps += o.mmaps;
        self.pageins += o.pageins;
        self.unmaps += o.unmaps;
    }
}

/// One map, fault-in and last unmap of `path` (open as `fd`). The file's
/// cached pages are evicted first, so every touch pages in again.
fn map_touch_unmap(sim: &Sim, p: &Proc, path: &str, fd: i32, flags: i32) -> Produced {
    sim.evict(path).expect("evict");
    let a = p.mmap(fd, MAP_LEN, prot::READ, flags, 0).expect("mmap");
    let t = p.touch(a, MAP_LEN).expect("touch");
    assert_eq!(t.pages, FILE_PAGES);
    p.munmap(a).expect("munmap");
    Produced {
        maps: 1,
        mmaps: if flags & map_flags::SHARED != 0 { 2 } else { 1 },
        pageins: t.pageins,
        unmaps: 1,
    }
}

fn producer(sim: &Sim, p: &Proc, w: usize, iterations: u64) -> Produced {
    let files: Vec<(String, i32)> = (0..FILES_PER_PRODUCER)
        .map(|k| {
            let path = file_path(w, k);
            let fd = p.open(&path).expect("open");
            (path, fd)
        })
        .collect();
    let mut done = Produced::default();
    for i in 0..iterations as usize {
        let (path, fd) = &files[i % files.len()];
        let flags = if i % 2 == 0 {
            map_flags::SHARED
        } else {
            map_flags::PRIVATE
        };
        done.add(map_touch_unmap(sim, p, path, *fd, flags));
    }
    for (_, fd) in files {
        p.close(fd).expect("close");
    }
    done
}

/// Slots a record occupies in its shard.
fn slots_of(r: &Record) -> u64 {
    match &r.event {
        Event::Path { path, .. } => wire::path_slots(path.len()) as u64,
        _ => 1,
    }
}

/// Per-shard figures seen by the reader.
#[derive(Clone, Copy, Debug, Default)]
struct ShardSeen {
    records: u64,
    slots: u64,
    /// Sum of the decoder's `lost_before`.
    lost: u64,
    /// Sum of the companion's loss markers.
    companion_lost: u64,
    last_pos: Option<u64>,
}

/// Everything the reader checks as batches arrive: the decoder's records
/// and the companion pipeline's items for the same bytes.
struct Checker {
    decoder: Decoder,
    pipeline: Pipeline,
    report: Option<report::Builder>,
    shards: Vec<ShardSeen>,
    /// Last timestamp per (thread, shard): one thread's records on a shard
    /// come in the order it made them.
    last_ts: HashMap<(u64, u16), u64>,
    /// The path each vnode id was named with (one path per vnode).
    paths: HashMap<u64, String>,
    /// Records kept for the trace comparison (small runs only).
    kept: Option<Vec<Record>>,
    known_paths: Vec<String>,
    pids: Vec<u32>,
    batches: u64,
    companion_events: u64,
    loss_markers: u64,
    items: Vec<Item>,
    line: Vec<u8>,
}

impl Checker {
    fn new(knobs: Knobs, known_paths: Vec<String>) -> Checker {
        Checker {
            decoder: Decoder::new(),
            pipeline: Pipeline::new(),
            report: knobs.exact_trace().then(report::Builder::new),
            shards: vec![ShardSeen::default(); SHARDS as usize],
            last_ts: HashMap::new(),
            paths: HashMap::new(),
            kept: knobs.exact_trace().then(Vec::new),
            known_paths,
            pids: Vec::new(),
            batches: 0,
            companion_events: 0,
            loss_markers: 0,
            items: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Decodes and checks one batch, then feeds it to the companion.
    fn batch(&mut self, bytes: &[u8]) {
        self.batches += 1;
        let (_, results) = self.decoder.decode(bytes).expect("a valid batch");
        for r in results {
            let r = r.unwrap_or_else(|e| panic!("batch {}: {e}", self.batches));
            self.record(r);
        }
        self.companion(bytes);
    }

    fn record(&mut self, r: Record) {
        let s = &mut self.shards[usize::from(r.shard)];
        assert!(
            s.last_pos.is_none_or(|p| p < r.pos),
            "shard {} pos {} after {:?}: delivered twice or out of order",
            r.shard,
            r.pos,
            s.last_pos
        );
        s.last_pos = Some(r.pos);
        s.records += 1;
        s.slots += slots_of(&r);
        s.lost += r.lost_before;
        if !self.pids.is_empty() {
            self.check_fields(&r);
        }
        if let Some(kept) = self.kept.as_mut().filter(|_| !self.pids.is_empty()) {
            kept.push(r);
        }
    }

    /// What a producer's record must look like.
    fn check_fields(&mut self, r: &Record) {
        assert!(self.pids.contains(&r.pid), "unknown pid in {r:?}");
        let last = self.last_ts.entry((r.tid, r.shard)).or_insert(0);
        assert!(
            r.timestamp_ns >= *last,
            "thread {} went back in time on shard {}: {r:?}",
            r.tid,
            r.shard
        );
        *last = r.timestamp_ns;
        assert_eq!(r.error, 0, "{r:?}");
        match &r.event {
            Event::FileMmap {
                file_pos,
                prot: p,
                mmap_flags,
                ..
            } => {
                assert_eq!((*file_pos, *p), (0, prot::READ as u32), "{r:?}");
                let f = *mmap_flags as i32;
                assert!(f == map_flags::SHARED || f == map_flags::PRIVATE, "{r:?}");
            }
            // The max protection of a read-only shared or a private map.
            Event::Mmap { fflags, .. } => {
                assert_eq!(*fflags, (prot::READ | prot::EXEC) as u32, "{r:?}")
            }
            Event::Pagein { offset, size, .. } => {
                // Clusters are page-aligned, inside the file, at most the SSD
                // maximum (128 KiB, more than the whole file here).
                let (off, size) = (*offset as u64, u64::from(*size));
                assert!(
                    *offset >= 0 && off % PAGE == 0 && size % PAGE == 0 && size > 0,
                    "{r:?}"
                );
                assert!(off + size <= MAP_LEN, "{r:?}");
            }
            Event::Mnomap { .. } | Event::Open { .. } | Event::Close { .. } => {}
            Event::Proc { name, .. } => assert!(!name.is_empty(), "{r:?}"),
            Event::Path { path, .. } => {
                let path = String::from_utf8_lossy(path).into_owned();
                assert!(self.known_paths.contains(&path), "{path}");
                let named = self.paths.entry(r.vnode_id).or_insert_with(|| path.clone());
                assert_eq!(*named, path, "one vnode id, two paths");
            }
            Event::Mark { .. } => panic!("no marker expected during the run: {r:?}"),
        }
    }

    /// Feeds the batch to the companion: every loss marker names the shard
    /// and sits right before the record that follows the loss.
    fn companion(&mut self, bytes: &[u8]) {
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        self.pipeline.feed(bytes, &mut items);
        let mut iter = items.iter().peekable();
        while let Some(item) = iter.next() {
            if let Some(b) = &mut self.report {
                b.observe(item);
            }
            match item {
                Item::Event(_) => self.companion_events += 1,
                Item::Loss(Loss::Dropped {
                    shard,
                    count,
                    before_pos,
                }) => {
                    let next = iter.peek();
                    let Some(Item::Event(ev)) = next else {
                        panic!("loss on shard {shard} not followed by its record: {next:?}");
                    };
                    assert_eq!(
                        (ev.rec.shard, Some(ev.rec.pos), ev.rec.lost_before),
                        (*shard, *before_pos, *count),
                        "a loss marker where the loss was"
                    );
                    self.check_loss_lines(item, *shard, *count, ev.rec.pos);
                    self.shards[usize::from(*shard)].companion_lost += count;
                    self.loss_markers += 1;
                }
                other => panic!("the companion saw {other:?}"),
            }
        }
        self.items = items;
    }

    /// The stream's JSON line and table row for a loss.
    fn check_loss_lines(&mut self, item: &Item, shard: u16, count: u64, pos: u64) {
        self.line.clear();
        item_json(&mut self.line, item);
        assert_eq!(
            String::from_utf8_lossy(&self.line),
            format!(
                "{{\"type\":\"loss\",\"reason\":\"dropped\",\"shard\":{shard},\"count\":{count},\"before_pos\":{pos}}}\n"
            )
        );
        self.line.clear();
        item_line(&mut self.line, item);
        assert_eq!(
            String::from_utf8_lossy(&self.line),
            format!("!! LOST {count} records on shard {shard} here (the kext's ring was full)\n")
        );
    }

    fn delivered(&self) -> u64 {
        self.shards.iter().map(|s| s.records).sum()
    }

    fn lost(&self) -> u64 {
        self.shards.iter().map(|s| s.lost).sum()
    }
}

/// One read of `kern.maptrace.events` into `buf`: `Ok(0)` when empty.
fn read_events(sim: &Sim, buf: &mut [u8]) -> Result<usize, i32> {
    sim.sysctl_read(raw_name(raw::MT_SYSCTL_EVENTS), Some(buf), Cred::Root)
        .map_err(|e| e.errno)
}

/// Reads until an empty read, checking every batch.
fn drain_into(sim: &Sim, c: &mut Checker) {
    let mut buf = vec![0u8; READ_BUF];
    while let Some(n) = read_events(sim, &mut buf).ok().filter(|&n| n > 0) {
        c.batch(&buf[..n]);
    }
}

/// The slow reader: reads a few records at a time with a pause, until the
/// producers are done and the ring is empty. Once, the copyout fails.
fn slow_reader(sim: &Sim, c: &mut Checker, producers_done: impl Fn() -> bool) -> u32 {
    let mut buf = vec![0u8; READ_BUF];
    let mut faults = 0;
    // An empty read copies nothing out, so the fault waits for a batch.
    let mut fault_pending = false;
    // However fast the reader is next to the producers, the ring overflows.
    while stats(sim, Cred::Root).dropped() == 0 && !producers_done() {
        std::thread::sleep(READ_PAUSE);
    }
    loop {
        let done = producers_done();
        if c.batches == FAULT_AT_BATCH && faults == 0 && !fault_pending {
            sim.inject_copyout_faults(1);
            fault_pending = true;
        }
        match read_events(sim, &mut buf) {
            Ok(0) if done => return faults,
            Ok(0) => {}
            Ok(n) => c.batch(&buf[..n]),
            Err(EFAULT) if fault_pending => {
                fault_pending = false;
                faults += 1;
            }
            Err(e) => panic!("events read failed: errno {e}"),
        }
        std::thread::sleep(READ_PAUSE);
    }
}

/// The kext's drop counters, parsed by the companion.
fn kext_drops(sim: &Sim) -> KextDrops {
    let name = raw_name(raw::MT_SYSCTL_STATS);
    let mut buf = vec![0u8; sim.sysctl_read(name, None, Cred::Root).expect("size")];
    let n = sim
        .sysctl_read(name, Some(&mut buf), Cred::Root)
        .expect("stats");
    let s = maptrace::control::parse_stats(&buf[..n]).expect("stats parse");
    KextDrops {
        generation: s.generation,
        per_shard: s.shards.iter().map(|x| x.dropped).collect(),
    }
}

/// Per shard, the kext's counters since `base`: produced slots, dropped,
/// drained slots, drained records.
fn since(now: &Stats, base: &Stats, shard: usize) -> [u64; 4] {
    let (n, b) = (now.shards[shard], base.shards[shard]);
    [n[0] - b[0], n[1] - b[1], n[2] - b[2], n[3] - b[3]]
}

fn traced_since(trace: &[TraceEvent], first_seq: u64) -> Vec<&TraceEvent> {
    trace
        .iter()
        // No record for VNOP_MMAP_CHECK; opens and closes are not in the mask.
        .filter(|t| {
            t.seq >= first_seq
                && !matches!(t.op, TraceOp::MmapCheck | TraceOp::Open | TraceOp::Close)
        })
        .collect()
}

/// The kind a trace event is recorded as.
fn kind_of(op: TraceOp) -> EventKind {
    match op {
        TraceOp::FileCheckMmap => EventKind::FileMmap,
        TraceOp::Mmap => EventKind::Mmap,
        TraceOp::Pagein => EventKind::Pagein,
        TraceOp::Mnomap => EventKind::Mnomap,
        TraceOp::Open => EventKind::Open,
        TraceOp::Close => EventKind::Close,
        TraceOp::MmapCheck => unreachable!("filtered out"),
    }
}

/// Whether record `r` is the record of trace event `t` (the vnode's path
/// when a PATH record named it).
fn matches(r: &Record, t: &TraceEvent, paths: &HashMap<u64, String>) -> bool {
    if r.kind != kind_of(t.op) || r.pid != t.pid as u32 {
        return false;
    }
    let path_ok = paths.get(&r.vnode_id).is_none_or(|p| *p == t.path);
    match &r.event {
        Event::FileMmap { prot: p, .. } => *p == t.prot as u32,
        Event::Mmap { vid, fflags, .. } => path_ok && *vid == t.vid && *fflags == t.prot as u32,
        Event::Pagein { offset, size, .. } => {
            path_ok && *offset == t.offset && u64::from(*size) == t.size
        }
        Event::Mnomap { vid, .. } => path_ok && *vid == t.vid,
        Event::Open { vid, fmode, .. } => path_ok && *vid == t.vid && *fmode == t.prot as u32,
        Event::Close { vid, fflag, .. } => path_ok && *vid == t.vid && *fflag == t.prot as u32,
        _ => false,
    }
}

/// Per thread and shard, the delivered records are a subsequence of what
/// the thread did (the trace): none invented, altered, repeated or moved.
fn check_against_trace(recs: &[Record], trace: &[&TraceEvent], paths: &HashMap<u64, String>) {
    let mut truth: HashMap<u64, Vec<&TraceEvent>> = HashMap::new();
    for t in trace {
        truth.entry(t.tid).or_default().push(t);
    }
    let mut runs: HashMap<(u64, u16), Vec<&Record>> = HashMap::new();
    for r in recs
        .iter()
        .filter(|r| !matches!(r.kind, EventKind::Path | EventKind::Proc))
    {
        runs.entry((r.tid, r.shard)).or_default().push(r);
    }
    let mut per_thread: HashMap<u64, usize> = HashMap::new();
    for ((tid, shard), run) in &runs {
        let t = truth.get(tid).map_or(&[][..], Vec::as_slice);
        let mut at = 0;
        for r in run {
            let found = t[at..].iter().position(|t| matches(r, t, paths));
            let Some(i) = found else {
                panic!("thread {tid} shard {shard}: {r:?} is not in what the thread did next");
            };
            at += i + 1;
        }
        *per_thread.entry(*tid).or_default() += run.len();
    }
    for (tid, n) in per_thread {
        assert!(
            n <= truth[&tid].len(),
            "thread {tid}: more records than events"
        );
    }
}

#[test]
fn every_event_is_delivered_once_or_counted_where_it_was_dropped() {
    let knobs = Knobs::from_env();
    let exact = knobs.exact_trace();
    let iterations = knobs.iterations_per_producer();
    let sim = boot_fs(Config {
        cpus: SHARDS,
        trace_capacity: if exact {
            (knobs.events as usize + 4096) * 2
        } else {
            0
        },
        ..Config::for_platform(Platform::IntelSsd)
    });
    let mut known = Vec::new();
    for w in 0..=knobs.producers {
        for k in 0..FILES_PER_PRODUCER {
            let path = file_path(w, k);
            sim.add_file(&path, MAP_LEN).expect("file");
            known.push(path);
        }
    }
    load_small_ring(&sim);
    let mut c = Checker::new(knobs, known);
    drain_into(&sim, &mut c);
    let base = stats(&sim, Cred::Root);
    assert_eq!(base.dropped(), 0, "nothing lost before the run");
    let (base_records, base_markers) = (c.delivered(), c.loss_markers);
    let seen_base = c.shards.clone();
    let first_seq = sim.trace().last().map_or(0, |t| t.seq + 1);

    let procs: Vec<Proc> = (0..knobs.producers)
        .map(|_| sim.spawn("stress", 501))
        .collect();
    c.pids = procs.iter().map(|p| p.pid() as u32).collect();
    let flusher = sim.spawn("flush", 501);
    c.pids.push(flusher.pid() as u32);

    let started = Instant::now();
    let finished = AtomicUsize::new(0);
    // The reader runs here (the companion's pipeline stays on one thread).
    let (mut produced, faults) = std::thread::scope(|s| {
        let workers: Vec<_> = procs
            .iter()
            .enumerate()
            .map(|(w, p)| {
                let (sim, finished) = (&sim, &finished);
                s.spawn(move || {
                    let done = producer(sim, p, w, iterations);
                    finished.fetch_add(1, Ordering::Release);
                    done
                })
            })
            .collect();
        let faults = slow_reader(&sim, &mut c, || {
            finished.load(Ordering::Acquire) == knobs.producers
        });
        let mut produced = Produced::default();
        for w in workers {
            produced.add(w.join().expect("producer"));
        }
        (produced, faults)
    });
    let elapsed = started.elapsed();
    assert_eq!(faults, 1, "the injected copyout fault was seen");

    // Drops after a shard's last record reach the stream with the shard's
    // next record: map once more (the ring now has room) until every shard
    // has delivered one after its drops. A thread moves to its next CPU at
    // every call, and each of a flush's calls records: flushes reach every
    // CPU.
    let w = knobs.producers;
    let (path, fd) = (
        file_path(w, 0),
        flusher.open(&file_path(w, 0)).expect("open"),
    );
    let mut flushes = 0;
    loop {
        let st = stats(&sim, Cred::Root);
        if (0..SHARDS as usize).all(|i| since(&st, &base, i)[1] == c.shards[i].lost) {
            break;
        }
        if flushes >= 8 * SHARDS {
            // A shard no flush reached: its last drops stay tail drops, which
            // the companion reports at the end from the kext's counters
            // (checked below).
            break;
        }
        produced.add(map_touch_unmap(
            &sim,
            &flusher,
            &path,
            fd,
            map_flags::SHARED,
        ));
        flushes += 1;
        drain_into(&sim, &mut c);
    }
    flusher.close(fd).expect("close");
    drain_into(&sim, &mut c);

    let st = stats(&sim, Cred::Root);
    let delivered = c.delivered() - base_records;
    let dropped = st.dropped() - base.dropped();
    let paths_skipped = st.paths_skipped - base.paths_skipped;
    println!(
        "stress: {} producers, {} events asked, {:.2?} elapsed, {} flush maps",
        knobs.producers, knobs.events, elapsed, flushes
    );
    let mut tail = Vec::new();
    c.pipeline.finish_with(Some(&kext_drops(&sim)), &mut tail);
    let (tail_placed, tail_drops) = losses(&tail);
    assert_eq!(tail_placed, vec![0; SHARDS as usize], "{tail:?}");
    let mut shard_lines = Vec::new();
    for (i, (seen, b)) in c.shards.iter().zip(&seen_base).enumerate() {
        let [
            produced_slots,
            shard_dropped,
            drained_slots,
            drained_records,
        ] = since(&st, &base, i);
        shard_lines.push(format!(
            "  shard {i}: produced {} (delivered {drained_records} + dropped {shard_dropped}), slots {produced_slots}",
            drained_records + shard_dropped
        ));
        assert_eq!(st.shards[i][4], 0, "shard {i} drained");
        assert_eq!(
            produced_slots, drained_slots,
            "shard {i}: every slot drained"
        );
        let decoded = (seen.slots - b.slots, seen.records - b.records);
        assert_eq!(
            decoded,
            (drained_slots, drained_records),
            "shard {i}: decoded"
        );
        assert_eq!(
            seen.lost + tail_drops[i],
            shard_dropped,
            "shard {i}: drops placed by the decoder, or at the end"
        );
        assert_eq!(
            seen.companion_lost + tail_drops[i],
            shard_dropped,
            "shard {i}: companion loss markers"
        );
    }
    let expected = produced.records() - paths_skipped;
    let rate = expected as f64 / elapsed.as_secs_f64();
    println!(
        "  produced {expected} = delivered {delivered} + dropped {dropped} ({} loss markers, {paths_skipped} paths skipped), {rate:.0} events/s",
        c.loss_markers - base_markers
    );
    println!("{}", shard_lines.join("\n"));

    assert!(dropped > 0, "the ring must overflow: {dropped} dropped");
    assert!(delivered > 0, "the reader must get records");
    assert_eq!(produced.maps, produced.unmaps);
    assert!(
        produced.pageins >= produced.maps,
        "evicted files page in again on every map"
    );
    assert_eq!(
        delivered + dropped,
        expected,
        "produced == delivered + dropped"
    );
    assert_eq!(c.lost() + tail_drops.iter().sum::<u64>(), dropped);
    assert_eq!(st.in_flight, 0);
    assert_eq!(st.errors, base.errors, "no hook failed open");

    // The companion: every event and every loss, nothing left over; drops
    // no flush placed come out at the end, on their shard.
    let totals = c.pipeline.totals();
    assert_eq!(totals.events, c.companion_events);
    assert_eq!(totals.events, c.delivered());
    assert_eq!(
        (totals.dropped, totals.gap_slots, totals.corrupt),
        (dropped, 0, 0)
    );
    assert_eq!(totals.exit_status(), maptrace::exit::LOSS);
    if let Some(b) = c.report.take() {
        let r = b.finish(&totals);
        assert_eq!((r.totals.dropped, r.totals.incomplete), (dropped, true));
    }

    if let Some(kept) = &c.kept {
        let trace = sim.trace();
        let ours = traced_since(&trace, first_seq);
        let count = |op| ours.iter().filter(|t| t.op == op).count() as u64;
        assert_eq!(
            count(TraceOp::Pagein),
            produced.pageins,
            "page-ins per the trace"
        );
        assert_eq!(count(TraceOp::Mmap), produced.mmaps);
        assert_eq!(count(TraceOp::Mnomap), produced.unmaps);
        assert_eq!(count(TraceOp::FileCheckMmap), produced.maps);
        let paths = ours.len() as u64 + count(TraceOp::Mmap) - paths_skipped;
        assert_eq!(delivered + dropped, paths, "the trace plus PATH records");
        check_against_trace(&kept[..], &ours, &c.paths);
    }
    sim.check_balanced().expect("balanced");
}

/// Loads the shim with the small ring and records every kind.
fn load_small_ring(sim: &Sim) {
    load(
        sim,
        Tunables {
            nshards: SHARDS,
            slots: SLOTS,
            ..Tunables::default()
        },
    )
    .expect("the shim loads");
    let mask = raw::MT_EVMASK_MMAP
        | raw::MT_EVMASK_PAGEIN
        | raw::MT_EVMASK_MNOMAP
        | raw::MT_EVMASK_FILE_MMAP
        | raw::MT_EVMASK_PATH;
    write_config(sim, &config_bytes(raw::MT_CF_ENABLE, mask, 0), Cred::Root).expect("config");
}

/// Two producers with nobody reading: every shard overflows.
fn burst(sim: &Sim, iterations: u64) {
    std::thread::scope(|s| {
        for w in 0..2 {
            let p = sim.spawn("burst", 501);
            s.spawn(move || producer(sim, &p, w, iterations));
        }
    });
}

/// Reads through the companion's sysctl source until idle; returns the
/// pipeline's items.
fn read_all(src: &mut impl Source, p: &mut Pipeline) -> Vec<Item> {
    let (mut buf, mut items) = (Vec::new(), Vec::new());
    while let Next::Batch(n) = src.next_batch(&mut buf).expect("read") {
        p.feed(&buf[..n], &mut items);
    }
    items
}

/// Per shard: drops placed before a record, and drops at the end
/// (`before_pos: None`), checking each end-of-stream line.
fn losses(items: &[Item]) -> (Vec<u64>, Vec<u64>) {
    let (mut placed, mut tail) = (vec![0; SHARDS as usize], vec![0; SHARDS as usize]);
    for item in items {
        if let Item::Loss(Loss::Dropped {
            shard,
            count,
            before_pos,
        }) = item
        {
            let s = usize::from(*shard);
            if before_pos.is_some() {
                placed[s] += count;
                continue;
            }
            tail[s] += count;
            let mut line = Vec::new();
            item_json(&mut line, item);
            assert_eq!(
                String::from_utf8_lossy(&line),
                format!(
                    "{{\"type\":\"loss\",\"reason\":\"dropped\",\"shard\":{shard},\"count\":{count},\"before_pos\":null}}\n"
                )
            );
            line.clear();
            item_line(&mut line, item);
            assert_eq!(
                String::from_utf8_lossy(&line),
                format!(
                    "!! LOST {count} records on shard {shard} at the end of the stream (the kext's ring was full)\n"
                )
            );
        }
    }
    (placed, tail)
}

#[test]
fn drops_after_the_last_record_read_are_reported_on_their_shard() {
    let sim = std::sync::Arc::new(boot_fs(Config {
        cpus: SHARDS,
        trace_capacity: 0,
        ..Config::for_platform(Platform::IntelSsd)
    }));
    for w in 0..2 {
        for k in 0..FILES_PER_PRODUCER {
            sim.add_file(&file_path(w, k), MAP_LEN).expect("file");
        }
    }
    let open = || {
        SysctlSource::open(
            SimSysctl::new(std::sync::Arc::clone(&sim), Cred::Root),
            "sim",
        )
        .expect("the companion opens the simulator's sysctl")
    };
    load_small_ring(&sim);
    let mut p = Pipeline::new();
    let mut src = open();
    read_all(&mut src, &mut p);

    // Load 1: the drops come after each shard's last record; only the
    // segment headers carry them. A reload must report them first.
    burst(&sim, 40);
    let before_reload = read_all(&mut src, &mut p);
    let first = stats(&sim, Cred::Root);
    assert!(
        first.shards.iter().all(|s| s[1] > 0),
        "every shard overflowed: {first:?}"
    );
    sim.unload_kext().expect("unload");
    load_small_ring(&sim);
    let mut src = open();
    let after_reload = read_all(&mut src, &mut p);
    let reload_at = after_reload
        .iter()
        .position(|i| matches!(i, Item::Reload { .. }))
        .expect("the reload is announced");
    let (placed, tail) = losses(&after_reload[..reload_at]);
    let (placed_before, _) = losses(&before_reload);
    assert_eq!(placed, vec![0; SHARDS as usize]);
    for (i, s) in first.shards.iter().enumerate() {
        assert_eq!(placed_before[i] + tail[i], s[1], "load 1, shard {i}");
    }

    // Load 2: drops nobody read at all; only the kext's counters know them.
    burst(&sim, 40);
    let second = stats(&sim, Cred::Root);
    let mut end = Vec::new();
    p.finish(&mut end);
    assert!(end.is_empty(), "no batch showed these drops: {end:?}");
    let mut end = Vec::new();
    p.finish_with(Some(&kext_drops(&sim)), &mut end);
    let (placed, tail) = losses(&end);
    assert_eq!(placed, vec![0; SHARDS as usize]);
    let dropped: Vec<u64> = second.shards.iter().map(|s| s[1]).collect();
    assert!(dropped.iter().all(|&d| d > 0), "{second:?}");
    assert_eq!(tail, dropped, "load 2: each shard's drops, at the end");
    let t = p.totals();
    assert_eq!(t.dropped, first.dropped() + second.dropped());
    assert_eq!(t.exit_status(), maptrace::exit::LOSS);
    sim.check_balanced().expect("balanced");
}
