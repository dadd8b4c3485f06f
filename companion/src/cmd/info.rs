//! `maptrace info FILE`: what a recording holds and whether it can be
//! trusted, read through once.

use super::read::for_each_batch;
use crate::cli::{InfoArgs, Limit};
use anyhow::Result;
use maptrace::pagesize::PageSize;
use maptrace::palette::Palette;
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

pub fn run(a: &InfoArgs, palette: &Palette, mut out: &mut impl Write) -> Result<u8> {
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
        write_human(out, &info, palette)?;
    }
    out.flush()?;
    Ok(totals.exit_status())
}

/// The width of the label column, the space after it included.
const LABEL_WIDTH: usize = 11;

/// Writes the description for people: each label as a heading (as the
/// report's TOTALS and LOSSES), losses and a cut-off end as losses, a
/// lossless one as ok, a recording without checksums as a notice.
fn write_human(w: &mut impl Write, i: &Info, palette: &Palette) -> std::io::Result<()> {
    let (l, n, ok) = (palette.loss, palette.notice, palette.ok);
    let label = |w: &mut dyn Write, name: &str| {
        let h = palette.heading;
        let pad = LABEL_WIDTH - name.len();
        write!(w, "{h}{name}{h:#}{:pad$}", "")
    };
    label(w, "recording")?;
    writeln!(w, "{}", i.file)?;
    label(w, "format")?;
    if i.checksummed {
        writeln!(w, "{} (frames checksummed)", i.format)?;
    } else {
        writeln!(
            w,
            "{} {n}(no checksums: written by an older maptrace){n:#}",
            i.format
        )?;
    }
    label(w, "kext ABI")?;
    writeln!(w, "{}", i.abi_version)?;
    label(w, "host")?;
    writeln!(w, "{}", shown(&i.host))?;
    label(w, "started")?;
    writeln!(w, "{}", i.start_utc)?;
    label(w, "anchor")?;
    match i.start_clock_ns {
        Some(c) => writeln!(
            w,
            "kext clock {}s since boot at the start: times map to UTC (--time wall)",
            secs(c)
        )?,
        None => writeln!(
            w,
            "none (format {} has no kext clock reading): only relative times (--time rel)",
            i.format
        )?,
    }
    let unknown = if i.format < PAGE_SIZE_FORMAT {
        format!("format {} has none", i.format)
    } else {
        "the recording does not say".into()
    };
    label(w, "page size")?;
    match i.page_size.map(PageSize::new) {
        Some(Ok(p)) => writeln!(
            w,
            "{p} ({} bytes): `report` counts distinct pages in it",
            p.bytes()
        )?,
        _ => writeln!(
            w,
            "unknown ({unknown}): `report` counts 4 KiB pages (--page-size to choose)"
        )?,
    }
    if let (Some(a), Some(b)) = (&i.first_event_utc, &i.last_event_utc) {
        label(w, "events")?;
        writeln!(w, "{a} .. {b}")?;
    }
    label(w, "duration")?;
    writeln!(
        w,
        "{:.3} s (first to last event)",
        i.duration_ns as f64 / 1e9
    )?;
    label(w, "contents")?;
    writeln!(
        w,
        "{} batches, {} events, {} bytes read",
        i.batches, i.events, i.bytes_read
    )?;
    let lost = i.dropped + i.gap_slots + i.corrupt + i.corrupt_frames > 0;
    let s = if lost { l } else { ok };
    label(w, "losses")?;
    writeln!(
        w,
        "{s}{} dropped, {} gap slots, {} corrupt parts ({} frames failed their checksum){s:#}",
        i.dropped, i.gap_slots, i.corrupt, i.corrupt_frames
    )?;
    label(w, "end")?;
    match &i.cut {
        Some(c) => writeln!(w, "{l}CUT OFF: {c}{l:#}")?,
        None => writeln!(w, "complete (ends after a whole frame)")?,
    }
    label(w, "stats")?;
    writeln!(
        w,
        "{}",
        if i.closing_stats {
            "the kext's closing statistics are present (`maptrace stats FILE`)"
        } else {
            "no closing statistics"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recording of an older maptrace: no checksums, no anchor, no page
    /// size, nothing lost.
    fn old_recording() -> Info {
        Info {
            file: "old.mtr".into(),
            format: 2,
            checksummed: false,
            abi_version: "1.1".into(),
            host: "vm".into(),
            start_unix_ns: 0,
            start_utc: utc_time(0),
            start_clock_ns: None,
            page_size: None,
            first_event_utc: None,
            last_event_utc: None,
            duration_ns: 0,
            bytes_read: 64,
            batches: 1,
            events: 2,
            dropped: 0,
            gap_slots: 0,
            corrupt: 0,
            corrupt_frames: 0,
            cut: None,
            closing_stats: false,
        }
    }

    #[test]
    fn a_recording_without_checksums_is_a_notice() {
        let (mut plain, mut coloured) = (Vec::new(), Vec::new());
        write_human(&mut plain, &old_recording(), &Palette::PLAIN).unwrap();
        write_human(&mut coloured, &old_recording(), &Palette::ANSI).unwrap();
        let (plain, coloured) = (
            String::from_utf8(plain).unwrap(),
            String::from_utf8(coloured).unwrap(),
        );
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), plain);
        let (n, ok) = (Palette::ANSI.notice, Palette::ANSI.ok);
        let want = format!("format\u{1b}[0m     2 {n}(no checksums");
        assert!(coloured.contains(&want), "{coloured:?}");
        assert!(coloured.contains(&format!("{ok}0 dropped")), "{coloured:?}");
    }
}
