//! `maptrace info FILE`: what a recording holds and whether it can be
//! trusted, read through once.

use super::read::for_each_batch;
use crate::cli::{InfoArgs, Limit};
use anyhow::Result;
use maptrace::pagesize::PageSize;
use maptrace::pipeline::Item;
use maptrace::recording::{Cut, PAGE_SIZE_FORMAT};
use maptrace::replay::FileSource;
use maptrace::text::{secs, shown, utc_time};
use maptrace::wallclock::rfc3339_micros;
use serde::Serialize;
use std::io::Write;

/// The description `info` prints (`--json`: this object).
#[derive(Debug, Serialize)]
struct Info {
    file: String,
    format: u16,
    checksummed: bool,
    abi_version: String,
    host: String,
    start_unix_ns: u64,
    start_utc: String,
    /// The kext's clock read together with `start_unix_ns` (format 4 on):
    /// the anchor that maps record times to UTC.
    start_clock_ns: Option<u64>,
    /// The VM page size of the machine recorded on, in bytes (format 5
    /// on; `None`: not known).
    page_size: Option<u64>,
    /// The first and last events' UTC times, through the anchor.
    first_event_utc: Option<String>,
    last_event_utc: Option<String>,
    /// From the first event's timestamp to the last one's.
    duration_ns: u64,
    bytes_read: u64,
    batches: u64,
    events: u64,
    dropped: u64,
    gap_slots: u64,
    /// Corrupt parts: frames failing their checksum and undecodable parts
    /// of batches.
    corrupt: u64,
    corrupt_frames: u64,
    /// Where the file was cut off inside a frame, if it was.
    cut: Option<Cut>,
    closing_stats: bool,
}

pub fn run(a: &InfoArgs, mut out: &mut impl Write) -> Result<u8> {
    let mut src = FileSource::open(&a.input)?;
    let (mut first, mut last) = (u64::MAX, 0u64);
    let totals = for_each_batch(&mut src, &Limit { duration: None }, |items| {
        for i in items {
            if let Item::Event(ev) = i {
                first = first.min(ev.rec.timestamp_ns);
                last = last.max(ev.rec.timestamp_ns);
            }
        }
        Ok(())
    })?;
    let r = src.reader();
    let h = r.header();
    let utc_of = |ns: u64| {
        h.anchor()
            .filter(|_| first <= last)
            .map(|a| rfc3339_micros(a.unix_ns_of(ns)))
    };
    let info = Info {
        file: r.path().to_string(),
        format: r.format(),
        checksummed: r.checksummed(),
        abi_version: format!("{}.{}", h.abi_version >> 8, h.abi_version & 0xff),
        host: h.host.clone(),
        start_unix_ns: h.start_unix_ns,
        start_utc: utc_time(h.start_unix_ns),
        start_clock_ns: h.start_clock_ns,
        page_size: h.page_size.map(PageSize::bytes),
        first_event_utc: utc_of(first),
        last_event_utc: utc_of(last),
        duration_ns: last.saturating_sub(first),
        bytes_read: r.offset(),
        batches: totals.batches,
        events: totals.events,
        dropped: totals.dropped,
        gap_slots: totals.gap_slots,
        corrupt: totals.corrupt,
        corrupt_frames: r.corrupt_frames(),
        cut: r.cut().cloned(),
        closing_stats: r.final_stats().is_some(),
    };
    if a.json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
    } else {
        write_human(out, &info)?;
    }
    out.flush()?;
    Ok(totals.exit_status())
}

fn write_human(w: &mut impl Write, i: &Info) -> std::io::Result<()> {
    writeln!(w, "recording  {}", i.file)?;
    writeln!(
        w,
        "format     {}{}",
        i.format,
        if i.checksummed {
            " (frames checksummed)"
        } else {
            " (no checksums: written by an older maptrace)"
        }
    )?;
    writeln!(w, "kext ABI   {}", i.abi_version)?;
    writeln!(w, "host       {}", shown(&i.host))?;
    writeln!(w, "started    {}", i.start_utc)?;
    match i.start_clock_ns {
        Some(c) => writeln!(
            w,
            "anchor     kext clock {}s since boot at the start: times map to UTC (--time wall)",
            secs(c)
        )?,
        None => writeln!(
            w,
            "anchor     none (format {} has no kext clock reading): only relative times (--time rel)",
            i.format
        )?,
    }
    let unknown = if i.format < PAGE_SIZE_FORMAT {
        format!("format {} has none", i.format)
    } else {
        "the recording does not say".into()
    };
    match i.page_size.map(PageSize::new) {
        Some(Ok(p)) => writeln!(
            w,
            "page size  {p} ({} bytes): `report` counts distinct pages in it",
            p.bytes()
        )?,
        _ => writeln!(
            w,
            "page size  unknown ({unknown}): `report` counts 4 KiB pages (--page-size to choose)"
        )?,
    }
    if let (Some(a), Some(b)) = (&i.first_event_utc, &i.last_event_utc) {
        writeln!(w, "events     {a} .. {b}")?;
    }
    writeln!(
        w,
        "duration   {:.3} s (first to last event)",
        i.duration_ns as f64 / 1e9
    )?;
    writeln!(
        w,
        "contents   {} batches, {} events, {} bytes read",
        i.batches, i.events, i.bytes_read
    )?;
    writeln!(
        w,
        "losses     {} dropped, {} gap slots, {} corrupt parts ({} frames failed their checksum)",
        i.dropped, i.gap_slots, i.corrupt, i.corrupt_frames
    )?;
    match &i.cut {
        Some(c) => writeln!(w, "end        CUT OFF: {c}")?,
        None => writeln!(w, "end        complete (ends after a whole frame)")?,
    }
    writeln!(
        w,
        "stats      {}",
        if i.closing_stats {
            "the kext's closing statistics are present (`maptrace stats FILE`)"
        } else {
            "no closing statistics"
        }
    )
}
