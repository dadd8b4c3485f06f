//! `--format csv` for `stream` and `report`, with the `csv` crate's quoting
//! (RFC 4180: a field with a comma, quote or line break is quoted, quotes
//! doubled).
//!
//! The stream's rows are the JSON lines' fields (`contract::Line`), so the
//! two formats cannot drift apart: one fixed header naming every field of
//! every line type, and per row the cells of the fields that line has. A
//! missing field and a JSON `null` are both an empty cell.
//!
//! Paths, process names and decoder messages come from the traced machine:
//! a cell of theirs that a spreadsheet would run as a formula is defused
//! ([`defused`]).

use crate::contract::Line;
use crate::pipeline::{Item, Totals};
use crate::report::Report;
use crate::wallclock::{Anchor, shown_time};
use serde_json::Value;
use std::borrow::Cow;
use std::io::{self, Write};

/// The stream's columns, in order. New fields are only ever appended.
pub const STREAM_COLUMNS: &[&str] = &[
    "type",
    "kind",
    "ts_ns",
    "shard",
    "pos",
    "pid",
    "comm",
    "tid",
    "vnode",
    "path",
    "error",
    "lost_before",
    "prot",
    "vid",
    "duration_ns",
    "offset",
    "size",
    "usecount",
    "kusecount",
    "usecount_minus_kusecount",
    "iocount",
    "count_method",
    "counts_saturated",
    "upl_flags",
    "via",
    "file_pos",
    "maxprot",
    "mmap_flags",
    "call_map",
    "truncated",
    "name",
    "fmode",
    "fflag",
    "mark",
    "arg0",
    "arg1",
    "arg2",
    "reason",
    "count",
    "before_pos",
    "slots",
    "message",
    "generation",
    "batches",
    "events",
    "dropped",
    "gap_slots",
    "corrupt",
    "cut_bytes",
    "schema",
    "version",
    "time",
    "shown",
];

fn io_err(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// The stream's columns whose text comes from the traced machine (a path
/// or process name anyone can choose; a corrupt record's message).
const UNTRUSTED_COLUMNS: &[&str] = &["path", "comm", "name", "message"];

/// `text` as a cell no spreadsheet runs. OWASP ("CSV Injection") lists the
/// first characters that make a cell a formula or command: `=`, `+`, `-`,
/// `@`, tab and carriage return; such a cell gets a `'` in front, which
/// makes it text. A cell already starting with `'` gets one more, so
/// dropping one leading `'` from a defused cell always gives the text back.
pub fn defused(text: &str) -> Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// A cell: strings as they are (defused in an untrusted column), numbers
/// and booleans as JSON writes them, null or missing as nothing.
fn cell(column: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if UNTRUSTED_COLUMNS.contains(&column) => defused(s).into_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Writes the stream as CSV rows.
pub struct StreamCsv<W: Write> {
    w: csv::Writer<W>,
    wall: Option<Anchor>,
}

impl<W: Write> StreamCsv<W> {
    /// A writer that has written the header row and, as the JSON stream
    /// does, the `schema` row.
    pub fn new(w: W) -> io::Result<StreamCsv<W>> {
        StreamCsv::with_time(w, None)
    }

    /// [`StreamCsv::new`], events with their UTC time in the `time` column
    /// when `wall` is given (empty otherwise).
    pub fn with_time(w: W, wall: Option<Anchor>) -> io::Result<StreamCsv<W>> {
        let w = csv::WriterBuilder::new().from_writer(w);
        let mut s = StreamCsv { w, wall };
        s.w.write_record(STREAM_COLUMNS).map_err(io_err)?;
        s.line(&Line::header())?;
        Ok(s)
    }

    fn line(&mut self, line: &Line) -> io::Result<()> {
        let value = serde_json::to_value(line).map_err(io::Error::other)?;
        let map = value.as_object();
        self.w
            .write_record(
                STREAM_COLUMNS
                    .iter()
                    .map(|c| cell(c, map.and_then(|m| m.get(*c)))),
            )
            .map_err(io_err)
    }

    /// One item's row.
    pub fn item(&mut self, item: &Item) -> io::Result<()> {
        self.line(&Line::of_at(item, self.wall.as_ref()))
    }

    /// The closing summary row.
    pub fn summary(&mut self, t: &Totals) -> io::Result<()> {
        self.line(&Line::summary(t))
    }

    /// Hands what is buffered to the underlying writer and flushes it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// The report's columns: one row per file and mapped epoch (a file never
/// mapped in the trace has one row with empty epoch cells); the file's
/// page-in figures and leak suspicion repeat on each of its rows. Columns
/// added later come last, so a reader by position keeps working: the UTC
/// times, then the bytes of a page in `distinct_pages`.
pub const REPORT_COLUMNS: &[&str] = &[
    "vnode",
    "path",
    "epoch",
    "start_ns",
    "end_ns",
    "maps",
    "mmap_calls",
    "exec_maps",
    "usecount_before",
    "usecount_at_unmap",
    "balance",
    "verdict",
    "pageins",
    "pagein_bytes",
    "distinct_pages",
    "first_pagein_ns",
    "last_pagein_ns",
    "pagein_duration_ns",
    "leak_suspect",
    "start_time",
    "end_time",
    "first_pagein_time",
    "last_pagein_time",
    "page_size",
];

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes a report as CSV.
pub fn report_csv(w: impl Write, r: &Report) -> io::Result<()> {
    // UTC times only with `--time wall`; empty cells otherwise.
    let wall = r.summary.clock_anchor.as_ref();
    let utc = |t: Option<u64>| wall.zip(t).map(|(a, t)| shown_time(t, Some(a)));
    let mut w = csv::WriterBuilder::new().from_writer(w);
    w.write_record(REPORT_COLUMNS).map_err(io_err)?;
    for f in &r.files {
        let suspect = r
            .leak_suspects
            .iter()
            .filter(|s| s.vnode == f.vnode)
            .map(|s| s.reason)
            .collect::<Vec<_>>()
            .join(";");
        let p = &f.pageins;
        let tail = [
            p.count.to_string(),
            p.bytes.to_string(),
            p.distinct_pages.to_string(),
            opt(p.first_ns),
            opt(p.last_ns),
            p.total_duration_ns.to_string(),
            suspect,
        ];
        let appended = [
            opt(utc(p.first_ns)),
            opt(utc(p.last_ns)),
            p.page_size.to_string(),
        ];
        let path = f.path.as_deref().map(defused).unwrap_or_default();
        let head = [f.vnode.clone(), path.into_owned()];
        if f.epochs.is_empty() {
            let blank = std::iter::repeat_n(String::new(), 10);
            let row = head
                .iter()
                .cloned()
                .chain(blank)
                .chain(tail.iter().cloned())
                .chain([String::new(), String::new()])
                .chain(appended.iter().cloned());
            w.write_record(row).map_err(io_err)?;
        }
        for (i, e) in f.epochs.iter().enumerate() {
            let verdict = cell("verdict", serde_json::to_value(e.verdict).ok().as_ref());
            let epoch = [
                (i + 1).to_string(),
                opt(e.start_ns),
                opt(e.end_ns),
                e.maps.to_string(),
                e.mmap_calls.to_string(),
                e.exec_maps.to_string(),
                opt(e.usecount_before),
                opt(e.usecount_at_unmap),
                opt(e.balance),
                verdict,
            ];
            let row = head
                .iter()
                .cloned()
                .chain(epoch)
                .chain(tail.iter().cloned())
                .chain([opt(utc(e.start_ns)), opt(utc(e.end_ns))])
                .chain(appended.iter().cloned());
            w.write_record(row).map_err(io_err)?;
        }
    }
    w.flush()
}
