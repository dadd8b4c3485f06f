//! `maptrace report` at scale: a reproducible 10⁶-event recording (real
//! core batches, as `maptrace record` writes them), reported from the file,
//! against a baseline measured in the same run: decoding the same recording
//! through the pipeline with no report. Then the peak RSS of each, in a
//! child process (`/proc/self/status` VmHWM, Linux only).
//!
//! Run: `cargo bench -p maptrace --bench report_scale` (`-- --quick` for
//! the fast pass). `REPORT_SCALE_EVENTS` changes the size; the recording is
//! kept at `REPORT_SCALE_KEEP=FILE` when given, for `/usr/bin/time -v
//! maptrace report FILE`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Mem, Trace, ev};
use criterion::{Criterion, Throughput};
use maptrace::pipeline::{Item, Pipeline, Totals};
use maptrace::replay::FileSource;
use maptrace::report::{self, Builder, View};
use maptrace::source::{Next, Source};
use maptrace_abi::raw;
use std::hint::black_box;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Records in the recording.
const EVENTS: u64 = 1_000_000;
/// Files it touches, and processes touching them.
const FILES: u64 = 2_000;
const PROCS: u64 = 300;
/// Each file's extent paged in: 16 MiB.
const FILE_PAGES: u64 = 4_096;
/// Drained every this many records (two 64 Ki-slot shards never fill).
const DRAIN_EVERY: u64 = 50_000;
/// The child mode: report or decode this recording, print VmHWM in KiB.
const CHILD_ENV: &str = "REPORT_SCALE_CHILD";

/// xorshift64*: the same stream on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A mix like a busy Mac: every file named and mapped by its opener, then
/// mostly page-ins at random offsets by random processes with a skewed
/// latency (most tens of µs, a tail to tens of ms), a last unmap or a new
/// map now and then; 10 files stay mapped (still-mapped suspects).
fn generate(events: u64) -> Vec<Vec<u8>> {
    let mut mem = Mem::new(2, 1 << 16);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vnode = |f: u64| 0xffff_ff80_1000_0000 + f * 0x400;
    let pid = |p: u64| 100 + p as u32;
    for f in 0..FILES {
        t.path(
            (f % 2) as u32,
            vnode(f),
            &format!("/System/Library/Frameworks/F{f}.framework/Versions/A/F{f}"),
        );
        t.mmap_call((f % 2) as u32, pid(f % PROCS), 1000 + f, vnode(f), 1, 5);
    }
    t.drain();
    let mut mapped = vec![true; FILES as usize];
    let mut n = 2 * FILES;
    while n < events {
        let r = rng.next();
        let f = r % FILES;
        let p = (r >> 16) % PROCS;
        let cpu = (n % 2) as u32;
        match (r >> 32) % 100 {
            // A last unmap, or a map starting a new epoch; files 0..10
            // never unmap.
            0 if f >= 10 => {
                let m = &mut mapped[f as usize];
                if *m {
                    t.mnomap(cpu, pid(p), 1000 + p, vnode(f), 2);
                } else {
                    t.exec_map(cpu, pid(p), 1000 + p, vnode(f), 1, 5);
                }
                *m = !*m;
            }
            _ => {
                let mut x = ev(raw::MT_KIND_PAGEIN, pid(p), 1000 + p, t.tick());
                x.vnode_ptr = vnode(f);
                x.offset = (((r >> 40) % FILE_PAGES) * 4096) as i64;
                x.size = 16_384;
                // 90 % 10-60 µs, 9 % 0.1-1 ms, 1 % 1-30 ms.
                x.duration_ns = match (r >> 8) % 100 {
                    0 => 1_000_000 + (r >> 20) % 29_000_000,
                    1..=9 => 100_000 + (r >> 20) % 900_000,
                    _ => 10_000 + (r >> 20) % 50_000,
                };
                x.usecount = 2;
                x.kusecount = 0;
                x.iocount = 1;
                x.count_method = raw::MT_PROBE_OFFSET;
                e.record(cpu, &x);
            }
        }
        n += 1;
        if n % DRAIN_EVERY == 0 {
            t.drain();
        }
    }
    for f in 10..FILES {
        if mapped[f as usize] {
            t.mnomap(0, pid(f % PROCS), 1000 + f, vnode(f), 2);
        }
    }
    t.drain();
    t.batches
}

/// Reads the recording through the pipeline, handing each item to `each`.
fn read(path: &Path, mut each: impl FnMut(&Item)) -> Totals {
    let mut src = FileSource::open(path).expect("the recording opens");
    let mut p = Pipeline::new();
    let mut buf = Vec::new();
    let mut items = Vec::new();
    while let Next::Batch(n) = src.next_batch(&mut buf).expect("the recording reads") {
        items.clear();
        p.feed(&buf[..n], &mut items);
        items.iter().for_each(&mut each);
    }
    items.clear();
    p.finish(&mut items);
    items.iter().for_each(&mut each);
    p.totals()
}

/// The baseline: decode + merge the same recording, count the items.
fn decode(path: &Path) -> usize {
    let mut n = 0;
    read(path, |_| n += 1);
    n
}

/// What `maptrace report FILE` does: build, finish, render the default
/// view as text.
fn report(path: &Path) -> usize {
    let mut b = Builder::new();
    let totals = read(path, |i| b.observe(i));
    let mut r = b.finish(&totals);
    report::sort::apply(&mut r, &View::default());
    let mut out = io::sink();
    report::write_human(&mut out, &r).expect("the sink takes it");
    r.files.len()
}

/// Peak RSS in KiB of this process so far.
fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs this bench binary again as a child doing only `mode` on `path`,
/// and reads back its wall time and peak RSS.
fn child(mode: &str, path: &Path) -> Option<(Duration, u64)> {
    let out = Command::new(std::env::current_exe().ok()?)
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let mut w = s.split_whitespace();
    let ns: u64 = w.next()?.parse().ok()?;
    let kib: u64 = w.next()?.parse().ok()?;
    Some((Duration::from_nanos(ns), kib))
}

fn run_child(spec: &str) {
    let (mode, path) = spec.split_once(':').expect("mode:path");
    let path = PathBuf::from(path);
    let t0 = Instant::now();
    let n = match mode {
        "report" => report(&path),
        _ => decode(&path),
    };
    black_box(n);
    let ns = t0.elapsed().as_nanos();
    println!("{ns} {}", vm_hwm_kib().unwrap_or(0));
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
        return;
    }
    let events = std::env::var("REPORT_SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = std::env::var("REPORT_SCALE_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("scale.mtr"));
    common::write_recording(&path, &generate(events));
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let items = decode(&path);
    println!(
        "recording: {events} events requested, {items} items, {:.1} MB at {}",
        size as f64 / 1e6,
        path.display()
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("report_scale");
    g.throughput(Throughput::Elements(events));
    g.sample_size(10);
    g.bench_function("baseline_decode", |b| b.iter(|| black_box(decode(&path))));
    g.bench_function("report", |b| b.iter(|| black_box(report(&path))));
    g.finish();
    c.final_summary();

    // Peak memory, each in a fresh process so neither inherits the other's.
    for mode in ["decode", "report"] {
        match child(mode, &path) {
            Some((t, kib)) => println!(
                "child {mode}: {:.3} s wall, peak RSS {:.1} MB",
                t.as_secs_f64(),
                kib as f64 / 1024.0
            ),
            None => println!("child {mode}: not measured (needs /proc/self/status)"),
        }
    }
}
