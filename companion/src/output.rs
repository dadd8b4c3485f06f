//! Rendering the item stream: JSON lines with stable field names (written by
//! hand, because this is the hot path of `stream --json`) and an aligned
//! human table.

use crate::pipeline::{Ev, Item, Loss, MapCall, Totals};
use maptrace_abi::{Counts, Event, Mark, ProbeMethod};
use std::io::{self, Write};

/// `PROT_READ`, `PROT_WRITE`, `PROT_EXEC` as `rwx` letters.
pub fn prot_str(p: u32) -> [u8; 3] {
    [
        if p & 1 != 0 { b'r' } else { b'-' },
        if p & 2 != 0 { b'w' } else { b'-' },
        if p & 4 != 0 { b'x' } else { b'-' },
    ]
}

/// The stable name of a mark.
pub fn mark_name(m: Mark) -> &'static str {
    match m {
        Mark::Start => "start",
        Mark::Config => "config",
        Mark::VectorPatched => "vector_patched",
        Mark::Unknown(_) => "unknown",
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\r' => out.extend_from_slice(b"\\r"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

fn num(out: &mut Vec<u8>, key: &[u8], v: impl itoa::Integer) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn key(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
}

fn prot(out: &mut Vec<u8>, name: &[u8], p: u32) {
    key(out, name);
    out.push(b'"');
    out.extend_from_slice(&prot_str(p));
    out.push(b'"');
}

fn counts_json(out: &mut Vec<u8>, c: &Counts) {
    if c.method == ProbeMethod::None {
        out.extend_from_slice(b",\"usecount\":null,\"kusecount\":null,\"iocount\":null");
    } else {
        num(out, b"usecount", c.usecount);
        num(out, b"kusecount", c.kusecount);
        match c.iocount {
            Some(io) => num(out, b"iocount", io),
            None => out.extend_from_slice(b",\"iocount\":null"),
        }
    }
    key(out, b"count_method");
    json_str(out, c.method.name());
    key(out, b"counts_saturated");
    out.extend_from_slice(if c.saturated { b"true" } else { b"false" });
}

fn call_json(out: &mut Vec<u8>, c: &MapCall) {
    num(out, b"file_pos", c.file_pos);
    prot(out, b"maxprot", c.maxprot);
    num(out, b"mmap_flags", c.mmap_flags);
}

/// Appends one event as a JSON object (no newline).
pub fn event_json(out: &mut Vec<u8>, ev: &Ev) {
    let r = &ev.rec;
    out.extend_from_slice(b"{\"type\":\"event\",\"kind\":\"");
    out.extend_from_slice(r.kind.name().as_bytes());
    out.push(b'"');
    num(out, b"ts_ns", r.timestamp_ns);
    num(out, b"shard", r.shard);
    num(out, b"pos", r.pos);
    num(out, b"pid", r.pid);
    num(out, b"tid", r.tid);
    let _ = write!(out, ",\"vnode\":\"{:016x}\"", r.vnode_id);
    key(out, b"path");
    match &ev.path {
        Some(p) => json_str(out, &p.text),
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
            num(out, b"offset", *offset);
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
        Event::Mark {
            mark,
            arg0,
            arg1,
            arg2,
        } => {
            key(out, b"mark");
            json_str(out, mark_name(*mark));
            num(out, b"arg0", *arg0);
            num(out, b"arg1", *arg1);
            num(out, b"arg2", *arg2);
        }
    }
    out.push(b'}');
}

/// Appends one item as a JSON line (with its newline).
pub fn item_json(out: &mut Vec<u8>, item: &Item) {
    match item {
        Item::Event(ev) => event_json(out, ev),
        Item::Loss(Loss::Dropped {
            shard,
            count,
            before_pos,
        }) => {
            out.extend_from_slice(b"{\"type\":\"loss\",\"reason\":\"dropped\"");
            key(out, b"shard");
            if *shard == u16::MAX {
                out.extend_from_slice(b"null");
            } else {
                out.extend_from_slice(itoa::Buffer::new().format(*shard).as_bytes());
            }
            num(out, b"count", *count);
            key(out, b"before_pos");
            match before_pos {
                Some(p) => out.extend_from_slice(itoa::Buffer::new().format(*p).as_bytes()),
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
            json_str(out, msg);
            out.push(b'}');
        }
        Item::Reload { generation } => {
            out.extend_from_slice(b"{\"type\":\"reload\"");
            num(out, b"generation", *generation);
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
    out.extend_from_slice(b"}\n");
}

/// The table's column titles.
pub const TABLE_HEADER: &str = "       TIME(s)  CPU     PID       TID  KIND        USE KUSE   IO  DETAIL                                 FILE\n";

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{}K", n >> 10)
    } else {
        format!("{n}")
    }
}

/// Nanoseconds as `s.micros`.
pub fn secs(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}

fn counts_cols(c: Option<&Counts>) -> (String, String, String) {
    match c {
        Some(c) if c.method != ProbeMethod::None => (
            c.usecount.to_string(),
            if c.method == ProbeMethod::Offset {
                c.kusecount.to_string()
            } else {
                "-".into()
            },
            c.iocount.map_or("-".into(), |i| i.to_string()),
        ),
        _ => ("-".into(), "-".into(), "-".into()),
    }
}

/// Writes one event as a table row.
pub fn event_row(w: &mut impl Write, ev: &Ev) -> io::Result<()> {
    let r = &ev.rec;
    let (counts, detail) = match &r.event {
        Event::Mmap {
            fflags,
            duration_ns,
            counts,
            ..
        } => {
            let p = String::from_utf8_lossy(&prot_str(*fflags)).into_owned();
            let d = match &ev.call {
                Some(c) => format!(
                    "{p} mmap(2) off={:#x} flags={:#x} {:.1}us",
                    c.file_pos,
                    c.mmap_flags,
                    f64::from(*duration_ns) / 1e3
                ),
                None => format!("{p} exec/loader map {:.1}us", f64::from(*duration_ns) / 1e3),
            };
            (Some(counts), d)
        }
        Event::Pagein {
            offset,
            size,
            duration_ns,
            counts,
            ..
        } => (
            Some(counts),
            format!(
                "off={offset:#x} size={} {:.1}us",
                human_bytes(u64::from(*size)),
                f64::from(*duration_ns) / 1e3
            ),
        ),
        Event::Mnomap {
            duration_ns,
            counts,
            ..
        } => (
            Some(counts),
            format!("last unmap {:.1}us", f64::from(*duration_ns) / 1e3),
        ),
        Event::FileMmap {
            file_pos,
            prot,
            maxprot,
            mmap_flags,
        } => (
            None,
            format!(
                "mmap(2) check prot={} max={} flags={mmap_flags:#x} off={file_pos:#x}",
                String::from_utf8_lossy(&prot_str(*prot)),
                String::from_utf8_lossy(&prot_str(*maxprot))
            ),
        ),
        Event::Path { vid, truncated, .. } => (
            None,
            format!(
                "names vnode (vid {vid}){}",
                if *truncated { " [truncated]" } else { "" }
            ),
        ),
        Event::Mark {
            mark,
            arg0,
            arg1,
            arg2,
        } => (
            None,
            match mark {
                Mark::Start => format!("kext start: {arg2} shards x {arg1} slots"),
                Mark::Config => format!(
                    "config applied: mask={arg0:#x} flags={:#x} pid={}",
                    arg1 >> 32,
                    arg1 & 0xffff_ffff
                ),
                Mark::VectorPatched => format!("vnode-op vector #{arg0} hooked"),
                Mark::Unknown(m) => format!("mark {m}"),
            },
        ),
    };
    let (u, k, i) = counts_cols(counts);
    let err = if r.error != 0 {
        format!(" err={}", r.error)
    } else {
        String::new()
    };
    let file = match (&ev.path, r.vnode_id) {
        (Some(p), _) => p.text.to_string(),
        (None, 0) => String::new(),
        (None, id) => format!("vnode:{id:016x}"),
    };
    writeln!(
        w,
        "{:>14}  {:>3} {:>7} {:>9}  {:<10} {:>4} {:>4} {:>4}  {:<38} {}",
        secs(r.timestamp_ns),
        r.shard,
        r.pid,
        r.tid,
        r.kind.name(),
        u,
        k,
        i,
        format!("{detail}{err}"),
        file
    )
}

/// Writes one item as table row(s); losses and corruption stand out.
pub fn item_row(w: &mut impl Write, item: &Item) -> io::Result<()> {
    match item {
        Item::Event(ev) => event_row(w, ev),
        Item::Loss(Loss::Dropped { shard, count, .. }) if *shard == u16::MAX => {
            writeln!(
                w,
                "!! LOST {count} records at the end of the stream (the kext's rings were full)"
            )
        }
        Item::Loss(Loss::Dropped { shard, count, .. }) => {
            writeln!(
                w,
                "!! LOST {count} records on CPU {shard} here (the kext's ring was full)"
            )
        }
        Item::Loss(Loss::Gap { shard, slots }) => {
            writeln!(
                w,
                "!! GAP on CPU {shard}: {slots} slots never reached this reader (another reader, or lost)"
            )
        }
        Item::Corrupt(msg) => writeln!(w, "!! CORRUPT: {msg}"),
        Item::Reload { generation } => writeln!(
            w,
            "-- kext reloaded (generation {generation:#x}); vnode ids start over"
        ),
    }
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
    if !t.lossy() && t.corrupt == 0 {
        line.push_str(", nothing lost");
    }
    writeln!(w, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn prot_letters() {
        assert_eq!(&prot_str(5), b"r-x");
        assert_eq!(&prot_str(0), b"---");
        assert_eq!(&prot_str(7), b"rwx");
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
                shard: u16::MAX,
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
