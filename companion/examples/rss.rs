//! Peak resident memory of `stream`'s and `record`'s per-batch work over a
//! long stream: real core batches (the engine records and drains them) fed
//! to the pipeline and formatted as JSON lines (as `stream --json` does), or
//! counted and framed into a recording (as `record` does), both into a
//! sink. Prints `VmHWM` (Linux) at each power of ten.
//!
//! The workload is the pipeline's worst case for growth: besides faults on
//! a working set of files, a new thread maps a new file every 50 events
//! (recycled vnodes get new ids), and every 200 events an mmap(2) check is
//! never followed by its map.
//!
//! Run: `cargo run --release -p maptrace --example rss -- stream 100000000`
//! (or `record`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Mem, Trace, ev};
use maptrace::output;
use maptrace::pipeline::{Item, Pipeline};
use maptrace::recording;
use maptrace_abi::{HeaderTally, raw};
use std::io::Write;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "stream".into());
    let events: u64 = args
        .next()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let mut mem = Mem::new(2, 1 << 14);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    let mut p = Pipeline::new();
    let mut items: Vec<Item> = Vec::new();
    let mut line = Vec::with_capacity(1 << 20);
    let mut sink = std::io::sink();
    let header = recording::Header {
        abi_version: maptrace_abi::AbiVersion::CURRENT.field(),
        start_unix_ns: 0,
        start_clock_ns: None,
        page_size: None,
        host: "rss".into(),
    };
    let mut rec = recording::Writer::new(std::io::sink(), &header).expect("a sink");
    let mut tally = HeaderTally::default();
    let mut feed = |batch: &[u8]| {
        if mode == "record" {
            rec.write_batch(batch).expect("a sink");
            let _ = tally.batch(batch);
            return;
        }
        items.clear();
        p.feed(batch, &mut items);
        line.clear();
        for it in &items {
            output::item_json(&mut line, it);
        }
        sink.write_all(&line).expect("a sink");
    };
    let (mut made, mut next_report, mut i) = (0u64, 1_000_000u64, 0u64);
    let start = std::time::Instant::now();
    println!("mode {mode}: events VmHWM_KiB seconds");
    while made < events {
        let cpu = (i % 2) as u32;
        if i % 50 == 0 {
            // A new thread maps a new file: new ids for every map.
            let (tid, vnode) = (1_000_000 + i, 0x1000_0000 + i * 0x100);
            t.path(
                cpu,
                vnode,
                &format!("/Applications/App{i}.app/Contents/MacOS/App{i}"),
            );
            t.mmap_call(cpu, 500, tid, vnode, 1, 5);
            made += 3;
        } else if i % 200 == 1 {
            let ts = t.tick();
            e.record(cpu, &ev(raw::MT_KIND_FILE_MMAP, 500, 2_000_000 + i, ts));
            made += 1;
        } else {
            let f = i % 64;
            t.pagein(
                cpu,
                100 + f as u32,
                1000 + f,
                0x1000 + f * 0x100,
                ((i * 16384) as i64, 16384),
                2,
            );
            made += 1;
        }
        i += 1;
        if i % 8192 == 0 {
            t.drain();
            for b in t.batches.drain(..) {
                feed(&b);
            }
        }
        if made >= next_report {
            println!(
                "{made} {} {:.1}",
                vm_hwm_kib(),
                start.elapsed().as_secs_f64()
            );
            next_report *= 10;
        }
    }
    t.drain();
    for b in t.batches.drain(..) {
        feed(&b);
    }
    println!(
        "end {made} {} {:.1} state_entries={} events={} tally={}",
        vm_hwm_kib(),
        start.elapsed().as_secs_f64(),
        p.state_entries(),
        p.totals().events,
        tally.events()
    );
}
