//! The Perfetto export and the heatmaps on a 10⁶-event recording: time and
//! peak memory (VmHWM), each next to the same-run cost of merely decoding
//! the recording (read + decode + merge + pipeline, no output).
//!
//! Peak memory is measured in child processes (this bench binary run again
//! with `MAPTRACE_SCALE_JOB` set), one per job, each reading its own
//! `/proc/self/status` at the end: a process' high-water mark cannot be
//! reset, so only a fresh process measures one job alone. Times come from
//! criterion, in process, on the same recording file.
//!
//! Run: `cargo bench -p maptrace --bench scale` (add `-- --quick` for a
//! faster pass). `MAPTRACE_SCALE_EVENTS=N` changes the size;
//! `MAPTRACE_SCALE_KEEP=FILE` keeps the recording (to time the `maptrace`
//! binary on it with `/usr/bin/time -v`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Mem, Trace};
use criterion::Criterion;
use maptrace::heatmap;
use maptrace::perfetto::Exporter;
use maptrace::pipeline::{Item, Pipeline};
use maptrace::replay::FileSource;
use maptrace::source::{Next, Source};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Events in the recording, unless `MAPTRACE_SCALE_EVENTS` says otherwise.
const EVENTS: u64 = 1_000_000;
/// Files the workload touches: each gets more page-ins than a heatmap
/// draws one by one, so the binned view is measured.
const FILES: u64 = 16;
/// Processes (two threads each).
const PROCS: u64 = 8;
const JOB_ENV: &str = "MAPTRACE_SCALE_JOB";
const INPUT_ENV: &str = "MAPTRACE_SCALE_INPUT";
const OUT_ENV: &str = "MAPTRACE_SCALE_OUT";

fn events() -> u64 {
    std::env::var("MAPTRACE_SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS)
}

/// Writes a recording of `n` events on 2 CPUs: every file named and mapped,
/// then mostly page-ins by 8 processes, a map and a last unmap now and then.
fn make_recording(path: &Path, n: u64) {
    let mut mem = Mem::new(2, 1 << 16);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    let who = |i: u64| {
        let p = i % PROCS;
        (100 + p as u32, 1000 + p * 2 + (i / PROCS) % 2)
    };
    for f in 0..FILES {
        let (pid, tid) = who(f);
        let vnode = 0x1000 + f * 0x100;
        t.path(
            (f % 2) as u32,
            vnode,
            &format!("/System/Library/F{f}.dylib"),
        );
        t.mmap_call((f % 2) as u32, pid, tid, vnode, 1, 5);
    }
    for i in 0..n {
        let f = (i / 7) % FILES;
        let cpu = (i % 2) as u32;
        let vnode = 0x1000 + f * 0x100;
        let (pid, tid) = who(i);
        match i % 50 {
            0 => t.exec_map(cpu, pid, tid, vnode, 2, 5),
            1 => t.mnomap(cpu, pid, tid, vnode, 2),
            _ => t.pagein(
                cpu,
                pid,
                tid,
                vnode,
                (((i * 16_384) % (1 << 30)) as i64, 16_384),
                2,
            ),
        }
        if i % 20_000 == 19_999 {
            t.drain();
        }
    }
    t.drain();
    common::write_recording(path, &t.batches);
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Decode,
    Export,
    Heatmap,
}

impl Job {
    const ALL: [Job; 3] = [Job::Decode, Job::Export, Job::Heatmap];

    fn name(self) -> &'static str {
        match self {
            Job::Decode => "decode",
            Job::Export => "export",
            Job::Heatmap => "heatmap",
        }
    }
}

/// Reads the recording through the pipeline, handing each batch's items on.
fn read_all(input: &Path, mut each: impl FnMut(&[Item])) {
    let mut src = FileSource::open(input).expect("recording opens");
    let mut p = Pipeline::new();
    let mut buf = Vec::new();
    let mut items = Vec::new();
    while let Next::Batch(n) = src.next_batch(&mut buf).expect("recording reads") {
        items.clear();
        p.feed(&buf[..n], &mut items);
        each(&items);
    }
    items.clear();
    p.finish(&mut items);
    each(&items);
}

/// What `maptrace export -o` and `maptrace heatmap -o` do, minus the
/// command line; `Decode` is the baseline.
fn run_job(job: Job, input: &Path, out: &Path) -> usize {
    match job {
        Job::Decode => {
            let mut n = 0;
            read_all(input, |items| n += items.len());
            n
        }
        Job::Export => {
            let f = std::fs::File::create(out.join("trace.json")).unwrap();
            let mut x = Exporter::new(BufWriter::with_capacity(1 << 16, f)).unwrap();
            read_all(input, |items| {
                for it in items {
                    x.observe(it).unwrap();
                }
            });
            let kept = x.retained();
            x.finish().unwrap().flush().unwrap();
            kept
        }
        Job::Heatmap => {
            let mut b = heatmap::Builder::new();
            read_all(input, |items| items.iter().for_each(|i| b.observe(i)));
            let mut n = 0;
            for f in b.finish() {
                let svg = heatmap::render(&f);
                n += svg.len();
                std::fs::write(out.join(format!("{}.svg", f.file_stem())), svg).unwrap();
            }
            n
        }
    }
}

/// This process' peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One job alone in a fresh process: its time and peak memory.
fn measure_in_child(job: Job, input: &Path, out: &Path) -> Option<(Duration, u64)> {
    let exe = std::env::current_exe().ok()?;
    let o = Command::new(exe)
        .env(JOB_ENV, job.name())
        .env(INPUT_ENV, input)
        .env(OUT_ENV, out)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut words = text.split_whitespace();
    let secs: f64 = words.next()?.parse().ok()?;
    let kib: u64 = words.next()?.parse().ok()?;
    Some((Duration::from_secs_f64(secs), kib))
}

fn child(job: &str) {
    let job = Job::ALL
        .into_iter()
        .find(|j| j.name() == job)
        .expect("known job");
    let input = PathBuf::from(std::env::var_os(INPUT_ENV).expect("input"));
    let out = PathBuf::from(std::env::var_os(OUT_ENV).expect("output dir"));
    let started = Instant::now();
    black_box(run_job(job, &input, &out));
    let secs = started.elapsed().as_secs_f64();
    println!("{secs} {}", peak_rss_kib().unwrap_or(0));
}

fn main() {
    if let Ok(job) = std::env::var(JOB_ENV) {
        return child(&job);
    }
    let n = events();
    let dir = tempfile::TempDir::new().unwrap();
    let input = dir.path().join("scale.mtr");
    make_recording(&input, n);
    if let Some(keep) = std::env::var_os("MAPTRACE_SCALE_KEEP") {
        std::fs::copy(&input, keep).unwrap();
    }
    let size = std::fs::metadata(&input).map_or(0, |m| m.len());
    println!(
        "scale: {n} events, recording {:.1} MiB; one fresh process per job",
        size as f64 / 1048576.0
    );
    println!(
        "{:<8} {:>9} {:>12} {:>10} {:>12}",
        "job", "time (s)", "vs decode", "peak MiB", "vs decode"
    );
    let mut base = None;
    for job in Job::ALL {
        let out = dir.path().join(job.name());
        std::fs::create_dir_all(&out).unwrap();
        let Some((t, kib)) = measure_in_child(job, &input, &out) else {
            println!("{:<8} (child failed)", job.name());
            continue;
        };
        let (bt, bk) = *base.get_or_insert((t, kib));
        println!(
            "{:<8} {:>9.3} {:>11.2}x {:>10.1} {:>11.2}x",
            job.name(),
            t.as_secs_f64(),
            t.as_secs_f64() / bt.as_secs_f64().max(1e-9),
            kib as f64 / 1024.0,
            kib as f64 / (bk as f64).max(1.0)
        );
    }

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("scale");
        g.sample_size(10);
        g.throughput(criterion::Throughput::Elements(n));
        for job in Job::ALL {
            let out = dir.path().join(format!("bench-{}", job.name()));
            std::fs::create_dir_all(&out).unwrap();
            g.bench_function(job.name(), |b| {
                b.iter(|| black_box(run_job(job, &input, &out)))
            });
        }
        g.finish();
    }
    c.final_summary();
}
