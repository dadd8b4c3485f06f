//! Rendering the item stream: JSON lines with stable field names (written by
//! hand, because this is the hot path of `stream --json`; `contract` holds
//! the same lines as types, and tests hold the two byte-identical) and an
//! aligned human table.

use crate::contract::{SCHEMA_NAME, SCHEMA_VERSION};
use crate::json::push_str as json_str;
use crate::json::{push_hex16_str, push_i64, push_str, push_u64, push_u64_str};
use crate::pipeline::{Ev, Item, Loss, MapCall, Totals};
use crate::text::{mark_name, prot_str, push_secs, push_shown};
use crate::wallclock::{Anchor, rfc3339_micros};
use maptrace_abi::{Counts, Event, EventKind, Mark, ProbeMethod};
use std::io::{self, Write};

/// Appends `,"key":v` for an unsigned value.
#[inline(always)]
fn num(out: &mut Vec<u8>, key: &[u8], v: impl Into<u64>) {
    self::key(out, key);
    push_u64(out, v.into());
}

/// Appends `,"key":v` for a signed value.
#[inline(always)]
fn num_i(out: &mut Vec<u8>, key: &[u8], v: i64) {
    self::key(out, key);
    push_i64(out, v);
}

/// Appends `,"key":"v"`: a 64-bit id as a string of decimal digits.
#[inline(always)]
fn id(out: &mut Vec<u8>, key: &[u8], v: u64) {
    self::key(out, key);
    push_u64_str(out, v);
}

/// The first line of a JSON stream: which contract the lines follow.
pub fn header_json(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"schema\",\"schema\":");
    push_str(out, SCHEMA_NAME);
    num(out, b"version", SCHEMA_VERSION);
    out.extend_from_slice(b"}\n");
}

#[inline(always)]
fn key(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
}

#[inline(always)]
fn prot(out: &mut Vec<u8>, name: &[u8], p: u32) {
    key(out, name);
    out.push(b'"');
    out.extend_from_slice(&prot_str(p));
    out.push(b'"');
}

/// The counts by method: `offset` reads v_usecount, v_kusecount and the raw
/// v_iocount; the `isinuse` fallback measures only usecount - kusecount
/// (what vnode_isinuse compares), so usecount and kusecount are null there.
fn counts_json(out: &mut Vec<u8>, c: &Counts) {
    match c.method {
        ProbeMethod::None => out.extend_from_slice(
            b",\"usecount\":null,\"kusecount\":null,\"usecount_minus_kusecount\":null,\"iocount\":null",
        ),
        ProbeMethod::IsInUse => {
            out.extend_from_slice(b",\"usecount\":null,\"kusecount\":null");
            num(out, b"usecount_minus_kusecount", c.usecount);
            out.extend_from_slice(b",\"iocount\":null");
        }
        ProbeMethod::Offset => {
            num(out, b"usecount", c.usecount);
            num(out, b"kusecount", c.kusecount);
            num(
                out,
                b"usecount_minus_kusecount",
                c.usecount.saturating_sub(c.kusecount),
            );
            match c.iocount {
                Some(io) => num(out, b"iocount", io),
                None => out.extend_from_slice(b",\"iocount\":null"),
            }
        }
    }
    // One constant copy per arm: no length-dependent copy, no escape scan.
    match c.method {
        ProbeMethod::Offset => out.extend_from_slice(b",\"count_method\":\"offset\""),
        ProbeMethod::IsInUse => out.extend_from_slice(b",\"count_method\":\"isinuse\""),
        ProbeMethod::None => out.extend_from_slice(b",\"count_method\":\"none\""),
    }
    if c.saturated {
        out.extend_from_slice(b",\"counts_saturated\":true");
    } else {
        out.extend_from_slice(b",\"counts_saturated\":false");
    }
}

fn call_json(out: &mut Vec<u8>, c: &MapCall) {
    num(out, b"file_pos", c.file_pos);
    prot(out, b"maxprot", c.maxprot);
    num(out, b"mmap_flags", c.mmap_flags);
}

/// Appends one event as a JSON object (no newline).
pub fn event_json(out: &mut Vec<u8>, ev: &Ev) {
    event_json_at(out, ev, None);
}

/// [`event_json`], with the event's UTC time as `time` after `ts_ns` when
/// `wall` maps the kext's clock to it (`--time wall`).
pub fn event_json_at(out: &mut Vec<u8>, ev: &Ev, wall: Option<&Anchor>) {
    let r = &ev.rec;
    out.reserve(JSON_LINE_RESERVE + ev.path.as_ref().map_or(0, |p| p.json.len()));
    match r.kind {
        EventKind::Mmap => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"mmap\""),
        EventKind::Pagein => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"pagein\""),
        EventKind::Mnomap => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"mnomap\""),
        EventKind::FileMmap => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"file_mmap\""),
        EventKind::Path => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"path\""),
        EventKind::Mark => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"mark\""),
        EventKind::Proc => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"proc\""),
        EventKind::Open => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"open\""),
        EventKind::Close => out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"close\""),
    }
    num(out, b"ts_ns", r.timestamp_ns);
    if let Some(a) = wall {
        key(out, b"time");
        push_str(out, &rfc3339_micros(a.unix_ns_of(r.timestamp_ns)));
    }
    num(out, b"shard", r.shard);
    num(out, b"pos", r.pos);
    num(out, b"pid", r.pid);
    if let Some(c) = &ev.comm {
        key(out, b"comm");
        json_str(out, c.as_ref());
    }
    id(out, b"tid", r.tid);
    out.extend_from_slice(b",\"vnode\":");
    push_hex16_str(out, r.vnode_id);
    out.extend_from_slice(b",\"path\":");
    match &ev.path {
        Some(p) => out.extend_from_slice(&p.json),
        None => out.extend_from_slice(b"null"),
    }
    num(out, b"error", r.error);
    num(out, b"lost_before", r.lost_before);
    match &r.event {
        Event::Mmap {
            fflags,
            vid,
            duration_ns,
            counts,
        } => {
            prot(out, b"prot", *fflags);
            num(out, b"vid", *vid);
            num(out, b"duration_ns", *duration_ns);
            counts_json(out, counts);
            match &ev.call {
                Some(c) => {
                    out.extend_from_slice(b",\"via\":\"mmap\"");
                    call_json(out, c);
                    num(out, b"call_map", ev.call_map);
                }
                None => out.extend_from_slice(b",\"via\":\"exec\""),
            }
        }
        Event::Pagein {
            offset,
            size,
            duration_ns,
            counts,
            upl_flags,
        } => {
            num_i(out, b"offset", *offset);
            num(out, b"size", *size);
            num(out, b"duration_ns", *duration_ns);
            counts_json(out, counts);
            num(out, b"upl_flags", *upl_flags);
        }
        Event::Mnomap {
            vid,
            duration_ns,
            counts,
        } => {
            num(out, b"vid", *vid);
            num(out, b"duration_ns", *duration_ns);
            counts_json(out, counts);
        }
        Event::FileMmap {
            file_pos,
            prot: p,
            maxprot,
            mmap_flags,
        } => {
            num(out, b"file_pos", *file_pos);
            prot(out, b"prot", *p);
            prot(out, b"maxprot", *maxprot);
            num(out, b"mmap_flags", *mmap_flags);
        }
        Event::Path { vid, truncated, .. } => {
            num(out, b"vid", *vid);
            key(out, b"truncated");
            out.extend_from_slice(if *truncated { b"true" } else { b"false" });
        }
        Event::Proc { name, truncated } => {
            key(out, b"name");
            json_str(out, &String::from_utf8_lossy(name));
            key(out, b"truncated");
            out.extend_from_slice(if *truncated { b"true" } else { b"false" });
        }
        Event::Open { vid, fmode, counts } => {
            num(out, b"vid", *vid);
            num(out, b"fmode", *fmode);
            counts_json(out, counts);
        }
        Event::Close {
            vid,
            fflag,
            duration_ns,
            counts,
        } => {
            num(out, b"vid", *vid);
            num(out, b"fflag", *fflag);
            num(out, b"duration_ns", *duration_ns);
            counts_json(out, counts);
        }
        Event::Mark {
            mark,
            arg0,
            arg1,
            arg2,
        } => {
            key(out, b"mark");
            push_str(out, mark_name(*mark));
            num(out, b"arg0", *arg0);
            id(out, b"arg1", *arg1);
            id(out, b"arg2", *arg2);
        }
    }
    out.push(b'}');
}

/// Appends one item as a JSON line (with its newline).
pub fn item_json(out: &mut Vec<u8>, item: &Item) {
    item_json_at(out, item, None);
}

/// [`item_json`], events with their UTC time when `wall` is given.
pub fn item_json_at(out: &mut Vec<u8>, item: &Item, wall: Option<&Anchor>) {
    match item {
        Item::Event(ev) => event_json_at(out, ev, wall),
        Item::Loss(Loss::Dropped {
            shard,
            count,
            before_pos,
        }) => {
            out.extend_from_slice(b"{\"type\":\"loss\",\"reason\":\"dropped\"");
            num(out, b"shard", *shard);
            num(out, b"count", *count);
            key(out, b"before_pos");
            match before_pos {
                Some(p) => push_u64(out, *p),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        Item::Loss(Loss::Gap { shard, slots }) => {
            out.extend_from_slice(b"{\"type\":\"loss\",\"reason\":\"gap\"");
            num(out, b"shard", *shard);
            num(out, b"slots", *slots);
            out.push(b'}');
        }
        Item::Corrupt(msg) => {
            out.extend_from_slice(b"{\"type\":\"corrupt\",\"message\":");
            push_str(out, msg);
            out.push(b'}');
        }
        Item::Reload { generation } => {
            out.extend_from_slice(b"{\"type\":\"reload\"");
            id(out, b"generation", *generation);
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// Appends the closing summary line of a JSON stream.
pub fn summary_json(out: &mut Vec<u8>, t: &Totals) {
    out.extend_from_slice(b"{\"type\":\"summary\"");
    num(out, b"batches", t.batches);
    num(out, b"events", t.events);
    num(out, b"dropped", t.dropped);
    num(out, b"gap_slots", t.gap_slots);
    num(out, b"corrupt", t.corrupt);
    num(out, b"cut_bytes", t.cut_bytes);
    out.extend_from_slice(b"}\n");
}

/// Room for a table row or JSON line without its path: one reservation a
/// line instead of a capacity check growing the buffer mid-line.
const TABLE_LINE_RESERVE: usize = 192;
const JSON_LINE_RESERVE: usize = 512;

/// Width of the table's detail column.
const DETAIL_WIDTH: usize = 44;

/// The table's column titles.
pub const TABLE_HEADER: &str = "       TIME(s) SHARD     PID       TID COMM             KIND        USE KUSE   IO  DETAIL                                       FILE\n";

/// The column titles with `--time wall`: the time column holds a UTC time
/// (`2026-12-05T06:28:09.123456Z`, 27 characters).
pub const TABLE_HEADER_WALL: &str = "TIME(UTC)                   SHARD     PID       TID COMM             KIND        USE KUSE   IO  DETAIL                                       FILE\n";

/// The column titles for relative times, or UTC times when `wall`.
pub fn table_header(wall: bool) -> &'static str {
    if wall {
        TABLE_HEADER_WALL
    } else {
        TABLE_HEADER
    }
}

/// Width of the COMM column (a longer name is cut).
const COMM_WIDTH: usize = 16;

/// Appends a duration in microseconds with one decimal (`12.3us`).
fn push_us(out: &mut Vec<u8>, ns: u32) {
    out.extend_from_slice(itoa::Buffer::new().format(ns / 1000).as_bytes());
    out.push(b'.');
    out.push(b'0' + ((ns % 1000) / 100) as u8);
    out.extend_from_slice(b"us");
}

/// Appends `0x` and the value in lower-case hex.
fn push_hex(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(b"0x");
    let digits = if v == 0 {
        1
    } else {
        (64 - v.leading_zeros()).div_ceil(4)
    };
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a byte count the way people read it (`16K`, `1M`, `1000`).
fn push_bytes(out: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        out.extend_from_slice(b.format(n >> 20).as_bytes());
        out.push(b'M');
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        out.extend_from_slice(b.format(n >> 10).as_bytes());
        out.push(b'K');
    } else {
        out.extend_from_slice(b.format(n).as_bytes());
    }
}

/// Appends `s` right-aligned in `width` columns.
fn right(out: &mut Vec<u8>, s: &[u8], width: usize) {
    out.resize(out.len() + width.saturating_sub(s.len()), b' ');
    out.extend_from_slice(s);
}

/// Appends `s` left-aligned in `width` columns.
fn left(out: &mut Vec<u8>, s: &[u8], width: usize) {
    out.extend_from_slice(s);
    out.resize(out.len() + width.saturating_sub(s.len()), b' ');
}

fn right_num(out: &mut Vec<u8>, n: impl itoa::Integer, width: usize) {
    right(out, itoa::Buffer::new().format(n).as_bytes(), width);
}

/// Appends the detail column of an event.
fn detail(d: &mut Vec<u8>, ev: &Ev) {
    let r = &ev.rec;
    match &r.event {
        Event::Mmap {
            fflags,
            duration_ns,
            ..
        } => {
            d.extend_from_slice(&prot_str(*fflags));
            match &ev.call {
                Some(c) => {
                    d.extend_from_slice(b" mmap(2) off=");
                    push_hex(d, c.file_pos);
                    d.extend_from_slice(b" flags=");
                    push_hex(d, u64::from(c.mmap_flags));
                    if ev.call_map > 1 {
                        d.extend_from_slice(b" (same call, map 2)");
                    }
                }
                None => d.extend_from_slice(b" exec/loader map"),
            }
            d.push(b' ');
            push_us(d, *duration_ns);
        }
        Event::Pagein {
            offset,
            size,
            duration_ns,
            ..
        } => {
            d.extend_from_slice(b"off=");
            push_hex(d, *offset as u64);
            d.extend_from_slice(b" size=");
            push_bytes(d, u64::from(*size));
            d.push(b' ');
            push_us(d, *duration_ns);
        }
        Event::Mnomap { duration_ns, .. } => {
            d.extend_from_slice(b"last unmap ");
            push_us(d, *duration_ns);
        }
        Event::FileMmap {
            file_pos,
            prot,
            maxprot,
            mmap_flags,
        } => {
            d.extend_from_slice(b"mmap(2) check prot=");
            d.extend_from_slice(&prot_str(*prot));
            d.extend_from_slice(b" max=");
            d.extend_from_slice(&prot_str(*maxprot));
            d.extend_from_slice(b" flags=");
            push_hex(d, u64::from(*mmap_flags));
            d.extend_from_slice(b" off=");
            push_hex(d, *file_pos);
        }
        Event::Path { vid, truncated, .. } => {
            let _ = write!(
                d,
                "names vnode (vid {vid}){}",
                if *truncated { " [truncated]" } else { "" }
            );
        }
        Event::Proc { name, truncated } => {
            let _ = write!(
                d,
                "names pid {}: {}{}",
                r.pid,
                String::from_utf8_lossy(name),
                if *truncated { " [truncated]" } else { "" }
            );
        }
        Event::Open { fmode, counts, .. } => {
            let _ = write!(d, "open fmode={fmode:#x} usecount now {}", counts.usecount);
        }
        Event::Close {
            fflag, duration_ns, ..
        } => {
            let _ = write!(d, "last close fflag={fflag:#x} ");
            push_us(d, *duration_ns);
        }
        Event::Mark {
            mark,
            arg0,
            arg1,
            arg2,
        } => {
            let _ = match mark {
                Mark::Start => write!(d, "kext start: {arg2} shards x {arg1} slots"),
                Mark::Config => write!(
                    d,
                    "config applied: mask={arg0:#x} flags={:#x} pid={}",
                    arg1 >> 32,
                    arg1 & 0xffff_ffff
                ),
                Mark::VectorPatched => write!(d, "vnode-op vector #{arg0} hooked"),
                Mark::Unknown(m) => write!(d, "mark {m}"),
            };
        }
    }
    if r.error != 0 {
        d.extend_from_slice(b" err=");
        d.extend_from_slice(itoa::Buffer::new().format(r.error).as_bytes());
    }
}

/// Appends one event as a table row (with its newline).
pub fn event_line(out: &mut Vec<u8>, ev: &Ev) {
    event_line_at(out, ev, None);
}

/// [`event_line`], the time as UTC when `wall` is given (under
/// [`TABLE_HEADER_WALL`]).
pub fn event_line_at(out: &mut Vec<u8>, ev: &Ev, wall: Option<&Anchor>) {
    let r = &ev.rec;
    out.reserve(TABLE_LINE_RESERVE + ev.path.as_ref().map_or(0, |p| p.text.len()));
    if let Some(a) = wall {
        out.extend_from_slice(rfc3339_micros(a.unix_ns_of(r.timestamp_ns)).as_bytes());
    } else {
        // The time right-aligned in 14 columns, written in place: `s.micros`
        // is the seconds' digits plus seven.
        let secs_len = itoa::Buffer::new()
            .format(r.timestamp_ns / 1_000_000_000)
            .len()
            + 7;
        out.resize(out.len() + 14usize.saturating_sub(secs_len), b' ');
        push_secs(out, r.timestamp_ns);
    }
    out.push(b' ');
    right_num(out, r.shard, 5);
    out.push(b' ');
    right_num(out, r.pid, 7);
    out.push(b' ');
    right_num(out, r.tid, 9);
    out.push(b' ');
    let comm = ev.comm.as_deref().unwrap_or("-").as_bytes();
    left(out, &comm[..comm.len().min(COMM_WIDTH)], COMM_WIDTH);
    out.push(b' ');
    left(out, r.kind.name().as_bytes(), 10);
    let counts = match &r.event {
        Event::Mmap { counts, .. }
        | Event::Pagein { counts, .. }
        | Event::Mnomap { counts, .. } => Some(counts).filter(|c| c.method != ProbeMethod::None),
        _ => None,
    };
    match counts {
        Some(c) => {
            out.push(b' ');
            right_num(out, c.usecount, 4);
            out.push(b' ');
            if c.method == ProbeMethod::Offset {
                right_num(out, c.kusecount, 4);
            } else {
                right(out, b"-", 4);
            }
            out.push(b' ');
            match c.iocount {
                Some(io) => right_num(out, io, 4),
                None => right(out, b"-", 4),
            }
        }
        None => out.extend_from_slice(b"    -    -    -"),
    }
    out.extend_from_slice(b"  ");
    let mark = out.len();
    detail(out, ev);
    let used = out.len() - mark;
    // Pad the detail column only when a file follows: no trailing blanks.
    let pad = |out: &mut Vec<u8>| {
        out.resize(out.len() + DETAIL_WIDTH.saturating_sub(used), b' ');
        out.push(b' ');
    };
    match (&ev.path, r.vnode_id) {
        (Some(p), _) => {
            pad(out);
            push_shown(out, &p.text);
        }
        (None, 0) => {}
        (None, id) => {
            pad(out);
            let _ = write!(out, "vnode:{id:016x}");
        }
    }
    out.push(b'\n');
}

/// Writes one event as a table row.
pub fn event_row(w: &mut impl Write, ev: &Ev) -> io::Result<()> {
    let mut line = Vec::with_capacity(160);
    event_line(&mut line, ev);
    w.write_all(&line)
}

/// Writes one item as table row(s); losses and corruption stand out.
pub fn item_row(w: &mut impl Write, item: &Item) -> io::Result<()> {
    let mut line = Vec::with_capacity(160);
    item_line(&mut line, item);
    w.write_all(&line)
}

/// Appends one item as table row(s) to a line buffer.
pub fn item_line(w: &mut Vec<u8>, item: &Item) {
    item_line_at(w, item, None);
}

/// [`item_line`], event times as UTC when `wall` is given.
pub fn item_line_at(w: &mut Vec<u8>, item: &Item, wall: Option<&Anchor>) {
    let _ = match item {
        Item::Event(ev) => {
            event_line_at(w, ev, wall);
            Ok(())
        }
        Item::Loss(Loss::Dropped {
            shard,
            count,
            before_pos: None,
        }) => {
            writeln!(
                w,
                "!! LOST {count} records on shard {shard} at the end of the stream (the kext's ring was full)"
            )
        }
        Item::Loss(Loss::Dropped { shard, count, .. }) => {
            writeln!(
                w,
                "!! LOST {count} records on shard {shard} here (the kext's ring was full)"
            )
        }
        Item::Loss(Loss::Gap { shard, slots }) => {
            writeln!(
                w,
                "!! GAP on shard {shard}: {slots} slots never reached this reader (another reader, or lost)"
            )
        }
        Item::Corrupt(msg) => writeln!(w, "!! CORRUPT: {msg}"),
        Item::Reload { generation } => writeln!(
            w,
            "-- kext reloaded (generation {generation:#x}); vnode ids start over"
        ),
    };
}

/// Writes the closing summary of a table stream.
pub fn summary_row(w: &mut impl Write, t: &Totals) -> io::Result<()> {
    let mut line = format!("-- {} events in {} batches", t.events, t.batches);
    if t.dropped > 0 {
        line.push_str(&format!(", {} LOST (dropped by the kext)", t.dropped));
    }
    if t.gap_slots > 0 {
        line.push_str(&format!(", {} slots skipped (gaps)", t.gap_slots));
    }
    if t.corrupt > 0 {
        line.push_str(&format!(", {} CORRUPT parts", t.corrupt));
    }
    if t.cut_bytes > 0 {
        line.push_str(&format!(
            ", recording CUT OFF ({} bytes of its last frame unread)",
            t.cut_bytes
        ));
    }
    if !t.lossy() && t.corrupt == 0 {
        line.push_str(", nothing lost");
    }
    writeln!(w, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(method: ProbeMethod) -> serde_json::Value {
        let c = Counts {
            usecount: 5,
            kusecount: 2,
            iocount: (method == ProbeMethod::Offset).then_some(1),
            method,
            saturated: false,
        };
        let mut out = b"{\"x\":0".to_vec();
        counts_json(&mut out, &c);
        out.push(b'}');
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn the_isinuse_fallback_is_not_called_usecount() {
        // vnode_isinuse measures v_usecount - v_kusecount (ubc_isinuse_locked).
        let v = counts_of(ProbeMethod::IsInUse);
        assert_eq!(v["usecount"], serde_json::Value::Null, "{v}");
        assert_eq!(v["kusecount"], serde_json::Value::Null, "{v}");
        assert_eq!(v["usecount_minus_kusecount"], 5, "{v}");
        assert_eq!(v["iocount"], serde_json::Value::Null, "{v}");
        let v = counts_of(ProbeMethod::Offset);
        assert_eq!(
            (
                &v["usecount"],
                &v["kusecount"],
                &v["usecount_minus_kusecount"],
                &v["iocount"]
            ),
            (&5.into(), &2.into(), &3.into(), &1.into()),
            "{v}"
        );
        let v = counts_of(ProbeMethod::None);
        assert_eq!(
            v["usecount_minus_kusecount"],
            serde_json::Value::Null,
            "{v}"
        );
    }

    #[test]
    fn loss_lines_are_valid_json() {
        for item in [
            Item::Loss(Loss::Dropped {
                shard: 2,
                count: 5,
                before_pos: Some(9),
            }),
            Item::Loss(Loss::Dropped {
                shard: 1,
                count: 1,
                before_pos: None,
            }),
            Item::Loss(Loss::Gap { shard: 0, slots: 3 }),
            Item::Corrupt("bad \"thing\"".into()),
            Item::Reload { generation: 7 },
        ] {
            let mut out = Vec::new();
            item_json(&mut out, &item);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v["type"].is_string(), "{v}");
        }
    }
}
