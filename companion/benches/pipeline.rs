//! Throughput of the companion's hot paths over a recorded stream of real
//! core batches: decode + merge alone, with JSON lines, with the human
//! table; against baselines measured in the same run: a memcpy of the
//! batch bytes, serde_json of a derived 10-field struct per record,
//! serde_json of the contract's own types (the very bytes `json_only`
//! writes), and a naive `format!`-per-row table writer.
//!
//! Run: `cargo bench -p maptrace --bench pipeline`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Mem, Trace};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use maptrace::contract::Line;
use maptrace::output::{self, JsonLines};
use maptrace::palette::Palette;
use maptrace::pipeline::{Ev, Item, Pipeline};
use maptrace::text::secs;
use maptrace_abi::{Decoder, Event, ProbeMethod};
use serde::Serialize;
use std::hint::black_box;

/// Records in the benchmark stream.
const EVENTS: u64 = 200_000;
/// Output is dropped at this size, as `stream` hands 64 KiB to its
/// buffered stdout.
const FLUSH_AT: usize = 64 << 10;
/// Files the workload touches.
const FILES: u64 = 64;

/// A realistic mix on 2 CPUs: every file named and mapped, then mostly
/// page-ins, with a map and an unmap now and then.
fn stream() -> (Vec<Vec<u8>>, u64) {
    let mut mem = Mem::new(2, 1 << 16);
    let e = mem.engine();
    let mut t = Trace::new(&e);
    for f in 0..FILES {
        t.path(
            (f % 2) as u32,
            0x1000 + f * 0x100,
            &format!("/System/Library/Frameworks/F{f}.framework/Versions/A/F{f}"),
        );
        t.mmap_call(
            (f % 2) as u32,
            100 + f as u32,
            1000 + f,
            0x1000 + f * 0x100,
            1,
            5,
        );
    }
    for i in 0..EVENTS {
        let f = i % FILES;
        let cpu = (i % 2) as u32;
        let vnode = 0x1000 + f * 0x100;
        match i % 50 {
            0 => t.exec_map(cpu, 100 + f as u32, 1000 + f, vnode, 2, 5),
            1 => t.mnomap(cpu, 100 + f as u32, 1000 + f, vnode, 2),
            _ => t.pagein(
                cpu,
                100 + f as u32,
                1000 + f,
                vnode,
                ((i * 16384) as i64, 16384),
                2,
            ),
        }
        if i % 20_000 == 19_999 {
            t.drain();
        }
    }
    t.drain();
    let mut d = Decoder::new();
    let n = t
        .batches
        .iter()
        .map(|b| d.decode(b).map_or(0, |(_, r)| r.len() as u64))
        .sum();
    (t.batches, n)
}

/// The baseline a plain implementation would write.
#[derive(Serialize)]
struct Plain<'a> {
    kind: &'a str,
    ts_ns: u64,
    shard: u16,
    pos: u64,
    pid: u32,
    tid: u64,
    vnode: u64,
    offset: i64,
    size: u32,
    usecount: u16,
}

/// The table row the obvious way: `format!` for every cell and the row,
/// a `String` per line (the same columns as `output::item_line`, COMM included; page-ins,
/// maps and unmaps are all this stream has besides its 64 PATH records).
fn naive_row(ev: &Ev) -> String {
    let r = &ev.rec;
    let (counts, detail) = match &r.event {
        Event::Pagein {
            offset,
            size,
            duration_ns,
            counts,
            ..
        } => (
            Some(counts),
            format!(
                "off={:#x} size={}K {}.{}us",
                offset,
                size / 1024,
                duration_ns / 1000,
                duration_ns % 1000 / 100
            ),
        ),
        Event::Mmap {
            duration_ns,
            counts,
            ..
        } => (
            Some(counts),
            format!(
                "r-x exec/loader map {}.{}us",
                duration_ns / 1000,
                duration_ns % 1000 / 100
            ),
        ),
        Event::Mnomap {
            duration_ns,
            counts,
            ..
        } => (
            Some(counts),
            format!(
                "last unmap {}.{}us",
                duration_ns / 1000,
                duration_ns % 1000 / 100
            ),
        ),
        _ => (None, String::new()),
    };
    let cell = |v: Option<u16>| v.map_or("-".to_string(), |v| v.to_string());
    let (use_, kuse, io) = match counts.filter(|c| c.method != ProbeMethod::None) {
        Some(c) => (
            cell(Some(c.usecount)),
            cell((c.method == ProbeMethod::Offset).then_some(c.kusecount)),
            cell(c.iocount),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let path = ev.path.as_ref().map_or(String::new(), |p| p.text.clone());
    let comm = ev.comm.as_ref().map_or("-", |c| c.text.as_str());
    format!(
        "{:>14} {:>5} {:>7} {:>9} {:<16.16} {:<10} {:>4} {:>4} {:>4}  {:<44} {}\n",
        secs(r.timestamp_ns),
        r.shard,
        r.pid,
        r.tid,
        comm,
        r.kind.name(),
        use_,
        kuse,
        io,
        detail,
        path
    )
}

fn bench(c: &mut Criterion) {
    let (batches, n) = stream();
    let mut g = c.benchmark_group("companion");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);

    g.bench_function("baseline_memcpy", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for x in &batches {
                out.clear();
                out.extend_from_slice(black_box(x));
            }
            black_box(out.len())
        })
    });

    // The decoded stream, for the output-only measurements.
    let mut p = Pipeline::new();
    let mut all: Vec<Item> = Vec::new();
    for b in &batches {
        p.feed(b, &mut all);
    }
    g.bench_function("baseline_serde_json_per_record", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for it in &all {
                let Item::Event(ev) = it else { continue };
                let r = &ev.rec;
                let (offset, size, usecount) = match &r.event {
                    Event::Pagein {
                        offset,
                        size,
                        counts,
                        ..
                    } => (*offset, *size, counts.usecount),
                    _ => (0, 0, 0),
                };
                let plain = Plain {
                    kind: r.kind.name(),
                    ts_ns: r.timestamp_ns,
                    shard: r.shard,
                    pos: r.pos,
                    pid: r.pid,
                    tid: r.tid,
                    vnode: r.vnode_id,
                    offset,
                    size,
                    usecount,
                };
                serde_json::to_writer(&mut out, &plain).unwrap();
                out.push(b'\n');
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    // The naive rows are the real ones: the baseline does the same work.
    for it in &all {
        let Item::Event(ev) = it else { continue };
        if matches!(ev.rec.event, Event::Pagein { .. } | Event::Mnomap { .. }) {
            let mut line = Vec::new();
            output::item_line(&mut line, it);
            assert_eq!(naive_row(ev).as_bytes(), &line[..]);
        }
    }
    g.bench_function("baseline_serde_json_contract_types", |b| {
        let mut out = Vec::with_capacity(1 << 21);
        b.iter(|| {
            out.clear();
            for it in &all {
                serde_json::to_writer(&mut out, &Line::of(it)).unwrap();
                out.push(b'\n');
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    g.bench_function("baseline_table_format_per_row", |b| {
        let mut out = Vec::with_capacity(1 << 21);
        b.iter(|| {
            out.clear();
            for it in &all {
                let Item::Event(ev) = it else { continue };
                out.extend_from_slice(naive_row(ev).as_bytes());
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    g.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut n = 0;
            for x in &batches {
                n += d.decode(x).map_or(0, |(_, r)| r.len());
            }
            black_box(n)
        })
    });

    // What `stream --json` runs: lines written in place into a buffer kept
    // across batches.
    g.bench_function("json_only", |b| {
        let mut out = JsonLines::new();
        b.iter(|| {
            out.clear();
            for it in &all {
                out.item(it);
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    // The same lines appended to a `Vec` (each line's room zeroed first).
    g.bench_function("json_only_vec", |b| {
        let mut out = Vec::with_capacity(1 << 21);
        b.iter(|| {
            out.clear();
            for it in &all {
                output::item_json(&mut out, it);
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    g.bench_function("table_only", |b| {
        let mut out = Vec::with_capacity(1 << 21);
        b.iter(|| {
            out.clear();
            for it in &all {
                output::item_line(&mut out, it);
                if out.len() > FLUSH_AT {
                    out.clear();
                }
            }
            black_box(out.len())
        })
    });

    // The table as `stream` writes it, the palette known only at run time:
    // off (no colour, the default in a pipe) and on (`--color always`).
    for (name, palette) in [
        ("table_only_palette_off", Palette::PLAIN),
        ("table_only_colour", Palette::ANSI),
    ] {
        let palette = black_box(palette);
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(1 << 21);
            b.iter(|| {
                out.clear();
                for it in &all {
                    output::item_line_styled(&mut out, it, None, &palette);
                    if out.len() > FLUSH_AT {
                        out.clear();
                    }
                }
                black_box(out.len())
            })
        });
    }

    g.bench_function("decode_merge", |b| {
        b.iter(|| {
            let mut p = Pipeline::new();
            let mut items = Vec::new();
            let mut n = 0;
            for x in &batches {
                items.clear();
                p.feed(x, &mut items);
                n += items.len();
            }
            black_box(n)
        })
    });

    g.bench_function("decode_merge_json", |b| {
        b.iter(|| {
            let mut p = Pipeline::new();
            let mut items = Vec::new();
            let mut out = JsonLines::new();
            for x in &batches {
                items.clear();
                p.feed(x, &mut items);
                for it in &items {
                    out.item(it);
                    if out.len() > FLUSH_AT {
                        out.clear();
                    }
                }
            }
            black_box(out.len())
        })
    });

    // The same lines, each item written as the pipeline makes it
    // (`Pipeline::feed_each`, what `stream` runs): no batch of items
    // stored and read back.
    g.bench_function("decode_merge_json_each", |b| {
        b.iter(|| {
            let mut p = Pipeline::new();
            let mut out = JsonLines::new();
            for x in &batches {
                p.feed_each(x, |it| {
                    out.item(&it);
                    if out.len() > FLUSH_AT {
                        out.clear();
                    }
                });
            }
            black_box(out.len())
        })
    });

    g.bench_function("decode_merge_table", |b| {
        b.iter(|| {
            let mut p = Pipeline::new();
            let mut items = Vec::new();
            let mut out = Vec::with_capacity(1 << 20);
            for x in &batches {
                items.clear();
                p.feed(x, &mut items);
                for it in &items {
                    output::item_line(&mut out, it);
                    if out.len() > FLUSH_AT {
                        out.clear();
                    }
                }
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
