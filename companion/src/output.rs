//! Rendering the item stream: JSON lines with stable field names (written by
//! hand, because this is the hot path of `stream --json`; `contract` holds
//! the same lines as types, and tests hold the two byte-identical) and an
//! aligned human table.

use crate::contract::{SCHEMA_NAME, SCHEMA_VERSION};
use crate::json::{
    Cursor, DigitsMemo, WINDOW, Window, escaped_max, push_str, push_u64, push_u64_str,
};
use crate::palette::{Palette, push_styled};
use crate::pipeline::{Ev, Item, Loss, Totals};
use crate::text::{mark_name, prot_str, push_secs, push_shown, shown};
use crate::wallclock::{Anchor, rfc3339_micros};
use maptrace_abi::{Counts, Event, EventKind, Mark, ProbeMethod, Record};
use std::borrow::Cow;
use std::io::{self, Write};

/// Appends `,"key":v` for an unsigned value.
#[inline(always)]
fn num(out: &mut Vec<u8>, key: &[u8], v: impl Into<u64>) {
    self::key(out, key);
    push_u64(out, v.into());
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

/// The ASCII digit of `v` (below 10).
#[inline(always)]
fn digit(v: u32) -> u8 {
    b'0' + v as u8
}

/// `PROT_*` as `"r-x"`.
#[inline(always)]
fn prot(c: &mut Window<'_>, p: u32) {
    let [r, w, x] = prot_str(p);
    c.lit(&[b'"', r, w, x, b'"']);
}

/// The counts by method: `offset` reads v_usecount, v_kusecount and the raw
/// v_iocount; the `isinuse` fallback measures only usecount - kusecount
/// (what vnode_isinuse compares), so usecount and kusecount are null there.
#[inline(always)]
fn counts_json(c: &mut Window<'_>, n: &Counts) {
    match n.method {
        // The usual counts are single digits: one copy for the whole run.
        ProbeMethod::Offset
            if n.usecount < 10
                && n.kusecount <= n.usecount
                && n.iocount.is_some_and(|io| io < 10) =>
        {
            let io = n.iocount.unwrap_or(0);
            c.lit_with(
                b",\"usecount\":0,\"kusecount\":0,\"usecount_minus_kusecount\":0,\"iocount\":0,\
                  \"count_method\":\"offset\",\"counts_saturated\":",
                [
                    (12, digit(n.usecount.into())),
                    (26, digit(n.kusecount.into())),
                    (55, digit((n.usecount - n.kusecount).into())),
                    (67, digit(io.into())),
                ],
            );
        }
        ProbeMethod::Offset => {
            c.lit(b",\"usecount\":");
            c.u64(n.usecount.into());
            c.lit(b",\"kusecount\":");
            c.u64(n.kusecount.into());
            c.lit(b",\"usecount_minus_kusecount\":");
            c.u64(n.usecount.saturating_sub(n.kusecount).into());
            c.lit(b",\"iocount\":");
            match n.iocount {
                Some(io) => c.u64(io.into()),
                None => c.lit(b"null"),
            }
            c.lit(b",\"count_method\":\"offset\",\"counts_saturated\":");
        }
        ProbeMethod::IsInUse => {
            c.lit(b",\"usecount\":null,\"kusecount\":null,\"usecount_minus_kusecount\":");
            c.u64(n.usecount.into());
            c.lit(b",\"iocount\":null,\"count_method\":\"isinuse\",\"counts_saturated\":");
        }
        ProbeMethod::None => c.lit(
            b",\"usecount\":null,\"kusecount\":null,\"usecount_minus_kusecount\":null,\
              \"iocount\":null,\"count_method\":\"none\",\"counts_saturated\":",
        ),
    }
    c.bool(n.saturated);
}

/// The most bytes an event line takes besides its path, its process name
/// and a PROC record's name (every number at its widest: a mapping through
/// mmap(2) is the longest, 511 bytes, and the keys of the time and the
/// name; `event_lines_fit_their_room` checks every kind at its widest).
const EVENT_BYTES: usize = 576;

/// The room of an event line besides its path and names: its bytes, and
/// the room of the cursor's last window past them.
const EVENT_ROOM: usize = EVENT_BYTES + WINDOW;

/// The opening of an event line up to the value of `ts_ns`.
#[inline(always)]
fn kind_prefix(c: &mut Window<'_>, kind: EventKind) {
    match kind {
        EventKind::Mmap => c.lit(b"{\"type\":\"event\",\"kind\":\"mmap\",\"ts_ns\":"),
        EventKind::Pagein => c.lit(b"{\"type\":\"event\",\"kind\":\"pagein\",\"ts_ns\":"),
        EventKind::Mnomap => c.lit(b"{\"type\":\"event\",\"kind\":\"mnomap\",\"ts_ns\":"),
        EventKind::FileMmap => c.lit(b"{\"type\":\"event\",\"kind\":\"file_mmap\",\"ts_ns\":"),
        EventKind::Path => c.lit(b"{\"type\":\"event\",\"kind\":\"path\",\"ts_ns\":"),
        EventKind::Mark => c.lit(b"{\"type\":\"event\",\"kind\":\"mark\",\"ts_ns\":"),
        EventKind::Proc => c.lit(b"{\"type\":\"event\",\"kind\":\"proc\",\"ts_ns\":"),
        EventKind::Open => c.lit(b"{\"type\":\"event\",\"kind\":\"open\",\"ts_ns\":"),
        EventKind::Close => c.lit(b"{\"type\":\"event\",\"kind\":\"close\",\"ts_ns\":"),
    }
}

/// Appends one event as a JSON object (no newline).
pub fn event_json(out: &mut Vec<u8>, ev: &Ev) {
    event_json_at(out, ev, None);
}

/// [`event_json`], with the event's UTC time as `time` after `ts_ns` when
/// `wall` maps the kext's clock to it (`--time wall`).
pub fn event_json_at(out: &mut Vec<u8>, ev: &Ev, wall: Option<&Anchor>) {
    write_event(out, ev, wall, false);
}

/// The digits of the last line's multi-digit numbers that often repeat or
/// rise slowly from line to line, kept by a writer across its lines: about
/// 40 % of a page-in line's time was their conversion.
#[derive(Clone, Copy, Debug, Default)]
struct LineMemo {
    ts_ns: DigitsMemo,
    /// By shard (modulo [`POS_MEMOS`]): lines interleave the shards, and
    /// each shard's positions count up by one.
    pos: [DigitsMemo; POS_MEMOS],
    offset: DigitsMemo,
    size: DigitsMemo,
    duration_ns: DigitsMemo,
}

/// The shards whose positions [`LineMemo`] keeps apart.
const POS_MEMOS: usize = 4;

/// Appends one event as a JSON object, and its newline if `newline`.
#[inline(always)]
fn write_event(out: &mut Vec<u8>, ev: &Ev, wall: Option<&Anchor>, newline: bool) {
    let time = wall.map(|a| rfc3339_micros(a.unix_ns_of(ev.rec.timestamp_ns)));
    let start = out.len();
    let mut c = Cursor::open(out, event_room(ev, time.as_deref()));
    event_into(
        &mut c,
        ev,
        time.as_deref(),
        newline,
        &mut LineMemo::default(),
    );
    let n = c.written();
    out.truncate(start + n);
}

/// The most bytes [`event_into`] writes for `ev` (and its UTC `time`).
#[inline(always)]
fn event_room(ev: &Ev, time: Option<&str>) -> usize {
    // The path with the id (the fragment the pipeline keeps), or null.
    let path = ev
        .path
        .as_ref()
        .map_or(b"null".len(), |p| p.id_and_json_len());
    let comm = ev.comm.as_ref().map_or(0, |c| c.json().len());
    let name = match &ev.rec.event {
        Event::Proc { name, .. } => escaped_max(name.len()),
        _ => 0,
    };
    let time = time.map_or(0, |t| b",\"time\":".len() + escaped_max(t.len()));
    EVENT_ROOM + path + comm + name + time
}

/// Writes one event as a JSON object, and its newline if `newline`, in at
/// most [`event_room`] bytes. Inlined, so the cursor stays in registers.
/// The runs between the variable-length parts (the UTC time, the process
/// name, the path) are each written through one window.
#[inline(always)]
fn event_into(c: &mut Cursor<'_>, ev: &Ev, time: Option<&str>, newline: bool, memo: &mut LineMemo) {
    let r = &ev.rec;
    c.fixed(|w| {
        kind_prefix(w, r.kind);
        w.u64_memo(r.timestamp_ns, &mut memo.ts_ns);
        if time.is_some() {
            w.lit(b",\"time\":");
        }
    });
    if let Some(t) = time {
        c.escaped(t);
    }
    c.fixed(|w| {
        // Few machines have more than 10 CPUs: one copy for both keys then.
        if r.shard < 10 {
            w.lit_with(b",\"shard\":0,\"pos\":", [(9, digit(r.shard.into()))]);
        } else {
            w.lit(b",\"shard\":");
            w.u64(r.shard.into());
            w.lit(b",\"pos\":");
        }
        w.count_memo(r.pos, &mut memo.pos[usize::from(r.shard) % POS_MEMOS]);
        w.lit(b",\"pid\":");
        w.u64(r.pid.into());
        if ev.comm.is_some() {
            w.lit(b",\"comm\":");
        }
    });
    if let Some(comm) = &ev.comm {
        c.bytes(comm.json());
    }
    // The id's digits come escaped with the path the pipeline learned for
    // that id; a path attached to another id (never by the pipeline) is
    // written after the id's own digits.
    let found = ev.path.as_ref().map(|p| (p.id_and_json(r.vnode_id), p));
    c.fixed(|w| {
        w.lit(b",\"tid\":\"");
        w.u64(r.tid);
        w.lit(b"\",\"vnode\":\"");
        if !matches!(found, Some((Some(_), _))) {
            w.hex16(r.vnode_id);
            w.lit(b"\",\"path\":");
        }
    });
    c.bytes(match found {
        Some((Some(fragment), _)) => fragment,
        Some((None, p)) => p.json(),
        None => b"null",
    });
    event_fields(c, ev, memo);
    c.fixed(|w| {
        if newline {
            w.lit(b"}\n");
        } else {
            w.byte(b'}');
        }
    });
}

/// `error` and `lost_before`, the fields after the path.
#[inline(always)]
fn error_and_lost(w: &mut Window<'_>, r: &Record) {
    // Nearly every record: no error, nothing lost before it.
    if r.error == 0 && r.lost_before == 0 {
        w.lit(b",\"error\":0,\"lost_before\":0");
    } else {
        w.lit(b",\"error\":");
        w.u64(r.error.into());
        w.lit(b",\"lost_before\":");
        w.u64(r.lost_before);
    }
}

/// `error`, `lost_before` and the fields of each kind, those of most
/// kinds in one window.
#[inline(always)]
fn event_fields(c: &mut Cursor<'_>, ev: &Ev, memo: &mut LineMemo) {
    let r = &ev.rec;
    match &r.event {
        Event::Pagein {
            offset,
            size,
            duration_ns,
            counts,
            upl_flags,
        } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"offset\":");
            if *offset < 0 {
                w.byte(b'-');
            }
            w.u64_memo(offset.unsigned_abs(), &mut memo.offset);
            w.lit(b",\"size\":");
            w.u64_memo((*size).into(), &mut memo.size);
            w.lit(b",\"duration_ns\":");
            w.u64_memo((*duration_ns).into(), &mut memo.duration_ns);
            counts_json(w, counts);
            w.lit(b",\"upl_flags\":");
            w.u64((*upl_flags).into());
        }),
        Event::Mmap {
            fflags,
            vid,
            duration_ns,
            counts,
        } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"prot\":");
            prot(w, *fflags);
            w.lit(b",\"vid\":");
            w.u64((*vid).into());
            w.lit(b",\"duration_ns\":");
            w.u64_memo((*duration_ns).into(), &mut memo.duration_ns);
            counts_json(w, counts);
            match &ev.call {
                Some(call) => {
                    w.lit(b",\"via\":\"mmap\",\"file_pos\":");
                    w.u64(call.file_pos);
                    w.lit(b",\"maxprot\":");
                    prot(w, call.maxprot);
                    w.lit(b",\"mmap_flags\":");
                    w.u64(call.mmap_flags.into());
                    w.lit(b",\"call_map\":");
                    w.u64(ev.call_map.into());
                }
                None => w.lit(b",\"via\":\"exec\""),
            }
        }),
        Event::Mnomap {
            vid,
            duration_ns,
            counts,
        } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"vid\":");
            w.u64((*vid).into());
            w.lit(b",\"duration_ns\":");
            w.u64_memo((*duration_ns).into(), &mut memo.duration_ns);
            counts_json(w, counts);
        }),
        Event::FileMmap {
            file_pos,
            prot: p,
            maxprot,
            mmap_flags,
        } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"file_pos\":");
            w.u64(*file_pos);
            w.lit(b",\"prot\":");
            prot(w, *p);
            w.lit(b",\"maxprot\":");
            prot(w, *maxprot);
            w.lit(b",\"mmap_flags\":");
            w.u64((*mmap_flags).into());
        }),
        Event::Path { vid, truncated, .. } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"vid\":");
            w.u64((*vid).into());
            w.lit(b",\"truncated\":");
            w.bool(*truncated);
        }),
        Event::Proc { name, truncated } => {
            c.fixed(|w| {
                error_and_lost(w, r);
                w.lit(b",\"name\":");
            });
            c.escaped(&String::from_utf8_lossy(name));
            c.fixed(|w| {
                w.lit(b",\"truncated\":");
                w.bool(*truncated);
            });
        }
        Event::Open { vid, fmode, counts } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"vid\":");
            w.u64((*vid).into());
            w.lit(b",\"fmode\":");
            w.u64((*fmode).into());
            counts_json(w, counts);
        }),
        Event::Close {
            vid,
            fflag,
            duration_ns,
            counts,
        } => c.fixed(|w| {
            error_and_lost(w, r);
            w.lit(b",\"vid\":");
            w.u64((*vid).into());
            w.lit(b",\"fflag\":");
            w.u64((*fflag).into());
            w.lit(b",\"duration_ns\":");
            w.u64_memo((*duration_ns).into(), &mut memo.duration_ns);
            counts_json(w, counts);
        }),
        Event::Mark {
            mark,
            arg0,
            arg1,
            arg2,
        } => {
            c.fixed(|w| {
                error_and_lost(w, r);
                w.lit(b",\"mark\":");
            });
            c.escaped(mark_name(*mark));
            c.fixed(|w| {
                w.lit(b",\"arg0\":");
                w.u64((*arg0).into());
                w.lit(b",\"arg1\":\"");
                w.u64(*arg1);
                w.lit(b"\",\"arg2\":\"");
                w.u64(*arg2);
                w.byte(b'"');
            });
        }
    }
}

/// Appends one item as a JSON line (with its newline).
pub fn item_json(out: &mut Vec<u8>, item: &Item) {
    item_json_at(out, item, None);
}

/// [`item_json`], events with their UTC time when `wall` is given.
pub fn item_json_at(out: &mut Vec<u8>, item: &Item, wall: Option<&Anchor>) {
    match item {
        Item::Event(ev) => return write_event(out, ev, wall, true),
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

/// JSON lines written into a buffer that stays initialized: `stream
/// --json`'s writer. A line is written in place into room the buffer
/// already has, so no byte is zeroed or copied twice (the free functions
/// above, on a `Vec`, zero the room of every line first). The bytes past
/// [`JsonLines::as_bytes`] are stale lines, never shown.
#[derive(Debug, Default)]
pub struct JsonLines {
    buf: Vec<u8>,
    len: usize,
    /// The lines written through the `Vec` writers (rare: losses, reloads,
    /// corruption, the header and summary), buffer reused.
    scratch: Vec<u8>,
    /// The digits of the last event line's numbers.
    memo: LineMemo,
}

impl JsonLines {
    /// An empty writer.
    pub fn new() -> JsonLines {
        JsonLines::default()
    }

    /// The lines written since the last [`JsonLines::clear`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes written since the last [`JsonLines::clear`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written since the last [`JsonLines::clear`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the lines written (the buffer is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// `room` bytes after the lines, grown (and zeroed) only when the
    /// buffer is too short: doubling, so a stream grows it a few times.
    #[inline(always)]
    fn room(&mut self, room: usize) -> &mut [u8] {
        let end = self.reserve(room);
        &mut self.buf[self.len..end]
    }

    /// Grows the buffer to hold `room` bytes after the lines, as
    /// [`JsonLines::room`]; returns where that room ends.
    #[inline(always)]
    fn reserve(&mut self, room: usize) -> usize {
        let end = self.len + room;
        if end > self.buf.len() {
            self.grow(end);
        }
        end
    }

    #[cold]
    fn grow(&mut self, end: usize) {
        let size = end.max(2 * self.buf.len()).max(64 << 10);
        self.buf.resize(size, 0);
    }

    /// Appends bytes already formatted.
    fn push(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends one item's line, the bytes [`item_json`] writes.
    #[inline]
    pub fn item(&mut self, item: &Item) {
        self.item_at(item, None);
    }

    /// Appends one item's line, the bytes [`item_json_at`] writes.
    #[inline]
    pub fn item_at(&mut self, item: &Item, wall: Option<&Anchor>) {
        match item {
            Item::Event(ev) => {
                let time = wall.map(|a| rfc3339_micros(a.unix_ns_of(ev.rec.timestamp_ns)));
                let end = self.reserve(event_room(ev, time.as_deref()));
                // The buffer and the memo are borrowed apart.
                let mut c = Cursor::new(&mut self.buf[self.len..end]);
                event_into(&mut c, ev, time.as_deref(), true, &mut self.memo);
                self.len += c.written();
            }
            _ => {
                let mut line = std::mem::take(&mut self.scratch);
                line.clear();
                item_json_at(&mut line, item, wall);
                self.push(&line);
                self.scratch = line;
            }
        }
    }

    /// Appends the stream's first line, as [`header_json`].
    pub fn header(&mut self) {
        let mut line = Vec::new();
        header_json(&mut line);
        self.push(&line);
    }

    /// Appends the closing summary line, as [`summary_json`].
    pub fn summary(&mut self, t: &Totals) {
        let mut line = Vec::new();
        summary_json(&mut line, t);
        self.push(&line);
    }
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
    if let Some(shown) = t.shown {
        num(out, b"shown", shown);
    }
    out.extend_from_slice(b"}\n");
}

/// Kinds the table leaves out unless asked for (`stream --kind`): each row
/// already names its file (what a PATH record says) and its process (what a
/// PROC record says). JSON and CSV keep every kind.
pub const TABLE_HIDDEN_KINDS: maptrace_abi::EventMask =
    maptrace_abi::EventMask::PATH.union(maptrace_abi::EventMask::PROC);

/// Whether the table leaves `item` out by default ([`TABLE_HIDDEN_KINDS`]).
pub fn hidden_by_default(item: &Item) -> bool {
    matches!(item, Item::Event(ev) if TABLE_HIDDEN_KINDS.contains(ev.rec.kind.mask()))
}

/// Room for a table row without its path: one reservation a line instead
/// of a capacity check growing the buffer mid-line.
const TABLE_LINE_RESERVE: usize = 192;

/// Width of the table's KIND column.
const KIND_WIDTH: usize = 10;

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

/// Writes the column titles (relative times, or UTC when `wall`) in the
/// palette's heading style.
pub fn write_table_header(w: &mut impl Write, wall: bool, palette: &Palette) -> io::Result<()> {
    let h = palette.heading;
    let title = table_header(wall).trim_end_matches('\n');
    writeln!(w, "{h}{title}{h:#}")
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
/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

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
                shown(&String::from_utf8_lossy(name)),
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
    event_line_styled(out, ev, wall, &Palette::PLAIN);
}

/// [`event_line_at`], the kind in the palette's colour for it (escapes
/// outside the column's padding, so columns still line up).
#[inline]
pub fn event_line_styled(out: &mut Vec<u8>, ev: &Ev, wall: Option<&Anchor>, palette: &Palette) {
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
    // Escaped like a path (a process names itself), then cut on a
    // character boundary.
    let comm = ev
        .comm
        .as_ref()
        .map_or(Cow::Borrowed("-"), |c| shown(&c.text));
    left(out, cut_to(&comm, COMM_WIDTH).as_bytes(), COMM_WIDTH);
    out.push(b' ');
    let kind = r.kind.name().as_bytes();
    push_styled(out, palette.kind(r.kind), kind);
    out.resize(out.len() + KIND_WIDTH.saturating_sub(kind.len()), b' ');
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
    item_line_styled(w, item, wall, &Palette::PLAIN);
}

/// [`item_line_at`] in `palette`'s colours: a loss, a gap or corruption
/// in the loss style, a reload as a notice.
pub fn item_line_styled(w: &mut Vec<u8>, item: &Item, wall: Option<&Anchor>, palette: &Palette) {
    let (l, n) = (palette.loss, palette.notice);
    let _ = match item {
        Item::Event(ev) => {
            event_line_styled(w, ev, wall, palette);
            Ok(())
        }
        Item::Loss(Loss::Dropped {
            shard,
            count,
            before_pos: None,
        }) => {
            writeln!(
                w,
                "{l}!! LOST {count} records on shard {shard} at the end of the stream (the kext's ring was full){l:#}"
            )
        }
        Item::Loss(Loss::Dropped { shard, count, .. }) => {
            writeln!(
                w,
                "{l}!! LOST {count} records on shard {shard} here (the kext's ring was full){l:#}"
            )
        }
        Item::Loss(Loss::Gap { shard, slots }) => {
            writeln!(
                w,
                "{l}!! GAP on shard {shard}: {slots} slots never reached this reader (another reader, or lost){l:#}"
            )
        }
        Item::Corrupt(msg) => writeln!(w, "{l}!! CORRUPT: {msg}{l:#}"),
        Item::Reload { generation } => writeln!(
            w,
            "{n}-- kext reloaded (generation {generation:#x}); vnode ids start over{n:#}"
        ),
    };
}

/// Writes the closing summary of a table stream.
pub fn summary_row(w: &mut impl Write, t: &Totals) -> io::Result<()> {
    summary_row_styled(w, t, &Palette::PLAIN)
}

/// [`summary_row`] in `palette`'s colours: each loss in the loss style,
/// "nothing lost" in the ok style.
pub fn summary_row_styled(w: &mut impl Write, t: &Totals, palette: &Palette) -> io::Result<()> {
    let (l, ok) = (palette.loss, palette.ok);
    let mut line = format!("-- {} events in {} batches", t.events, t.batches);
    if let Some(shown) = t.shown {
        line.push_str(&format!(" ({shown} shown by the filters)"));
    }
    if t.dropped > 0 {
        line.push_str(&format!(
            ", {l}{} LOST{l:#} (dropped by the kext)",
            t.dropped
        ));
    }
    if t.gap_slots > 0 {
        line.push_str(&format!(", {l}{} slots skipped{l:#} (gaps)", t.gap_slots));
    }
    if t.corrupt > 0 {
        line.push_str(&format!(", {l}{} CORRUPT parts{l:#}", t.corrupt));
    }
    if t.cut_bytes > 0 {
        line.push_str(&format!(
            ", {l}recording CUT OFF{l:#} ({} bytes of its last frame unread)",
            t.cut_bytes
        ));
    }
    if !t.lossy() && t.corrupt == 0 {
        line.push_str(&format!(", {ok}nothing lost{ok:#}"));
    }
    writeln!(w, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::SPAN;

    /// COMM is cut to its column on a character boundary: a name whose
    /// 16th byte is inside a character loses that whole character.
    #[test]
    fn comm_is_cut_on_a_character_boundary() {
        let name = "abcdefghijklmnoé"; // 'é' is bytes 15 and 16
        assert_eq!(cut_to(name, COMM_WIDTH), "abcdefghijklmno");
        assert_eq!(cut_to("short", COMM_WIDTH), "short");
        assert_eq!(cut_to("ééééééééé", COMM_WIDTH), "éééééééé");
        assert_eq!(cut_to("", COMM_WIDTH), "");
    }

    fn counts_of(method: ProbeMethod) -> serde_json::Value {
        let c = Counts {
            usecount: 5,
            kusecount: 2,
            iocount: (method == ProbeMethod::Offset).then_some(1),
            method,
            saturated: false,
        };
        let mut out = b"{\"x\":0".to_vec();
        let mut cur = Cursor::open(&mut out, 256 + WINDOW);
        cur.fixed(|w| counts_json(w, &c));
        let n = cur.written();
        out.truncate(6 + n);
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

    /// Every kind with every number at its widest.
    fn widest_events() -> Vec<Event> {
        let counts = Counts {
            usecount: u16::MAX,
            kusecount: 0,
            iocount: Some(u16::MAX),
            method: ProbeMethod::Offset,
            saturated: false,
        };
        vec![
            Event::Mmap {
                fflags: u32::MAX,
                vid: u32::MAX,
                duration_ns: u32::MAX,
                counts,
            },
            Event::Pagein {
                offset: i64::MIN,
                size: u32::MAX,
                duration_ns: u32::MAX,
                counts,
                upl_flags: u16::MAX,
            },
            Event::Mnomap {
                vid: u32::MAX,
                duration_ns: u32::MAX,
                counts,
            },
            Event::FileMmap {
                file_pos: u64::MAX,
                prot: u32::MAX,
                maxprot: u32::MAX,
                mmap_flags: u32::MAX,
            },
            Event::Path {
                vid: u32::MAX,
                path: Vec::new(),
                truncated: false,
            },
            Event::Proc {
                name: Vec::new(),
                truncated: false,
            },
            Event::Open {
                vid: u32::MAX,
                fmode: u32::MAX,
                counts,
            },
            Event::Close {
                vid: u32::MAX,
                fflag: u32::MAX,
                duration_ns: u32::MAX,
                counts,
            },
            Event::Mark {
                mark: Mark::VectorPatched,
                arg0: u32::MAX,
                arg1: u64::MAX,
                arg2: u64::MAX,
            },
        ]
    }

    #[test]
    fn event_lines_fit_their_room() {
        let mut longest = 0;
        for event in widest_events() {
            let ev = Ev {
                rec: maptrace_abi::Record {
                    shard: u16::MAX,
                    pos: u64::MAX,
                    lost_before: u64::MAX,
                    kind: EventKind::from_name(event_kind_name(&event)).unwrap(),
                    flags: 0,
                    error: u8::MAX,
                    pid: u32::MAX,
                    timestamp_ns: u64::MAX,
                    tid: u64::MAX,
                    vnode_id: u64::MAX,
                    event,
                },
                path: None,
                call: Some(Box::new(crate::pipeline::MapCall {
                    file_pos: u64::MAX,
                    prot: u32::MAX,
                    maxprot: u32::MAX,
                    mmap_flags: u32::MAX,
                    timestamp_ns: u64::MAX,
                })),
                call_map: 2,
                comm: None,
            };
            let mut out = Vec::new();
            item_json(&mut out, &Item::Event(ev));
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
            // The path's `null` is counted in the path's room.
            longest = longest.max(out.len() - b"null".len());
        }
        // With the keys of a process name and a UTC time, within the
        // bound, and each window's bytes within its span.
        assert!(
            longest + 2 * b",\"time\":".len() <= EVENT_BYTES,
            "{longest}"
        );
        assert!(longest <= SPAN, "{longest}");
        assert_eq!(
            longest, 511,
            "the longest line changed: update EVENT_ROOM's comment"
        );
    }

    fn event_kind_name(e: &Event) -> &'static str {
        match e {
            Event::Mmap { .. } => "mmap",
            Event::Pagein { .. } => "pagein",
            Event::Mnomap { .. } => "mnomap",
            Event::FileMmap { .. } => "file_mmap",
            Event::Path { .. } => "path",
            Event::Mark { .. } => "mark",
            Event::Proc { .. } => "proc",
            Event::Open { .. } => "open",
            Event::Close { .. } => "close",
        }
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
