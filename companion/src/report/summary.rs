//! The report's first lines: what the trace covers, what was lost, how many
//! suspects, and the page-in latency over every file, before any detail.

use super::latency::{Latency, human_ns};
use super::sort::SortKey;
use super::{Report, ReportTotals};
use crate::pagesize::PageSizeFrom;
use crate::palette::Palette;
use crate::wallclock::{Anchor, shown_time};
use schemars::JsonSchema;
use serde::Serialize;
use std::io::{self, Write};

/// What a report covers, in a few figures.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Summary {
    /// The trace's first event, ns since boot (`None`: no event).
    pub first_ns: Option<u64>,
    /// Its last event.
    pub last_ns: Option<u64>,
    /// Files listed (after filters), before `--top`.
    pub files: u64,
    /// Processes listed (after filters), before `--top`.
    pub processes: u64,
    /// Leak suspects among the listed files.
    pub suspects: u64,
    /// Page-in latency over the listed files (`None`: no page-in).
    pub latency: Option<Latency>,
    /// Whether a filter (`--pid`, `--comm`, `--path`, `--since`, `--until`)
    /// narrowed the report.
    pub filtered: bool,
    /// The order of files and processes.
    pub sort: SortKey,
    /// Bytes of a page in every file's `pageins.distinct_pages`.
    pub page_size: u64,
    /// Where `page_size` comes from: `trace` (the traced machine's),
    /// `option` (`--page-size`) or `unknown` (4096: a recording before
    /// format 5).
    pub page_size_from: PageSizeFrom,
    /// Why the page size is a guess, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub page_size_note: Option<String>,
    /// Files left out by `--top`.
    pub files_not_shown: u64,
    /// Processes left out by `--top`.
    pub processes_not_shown: u64,
    /// With `--time wall`: the pair of clock readings that maps every
    /// `*_ns` time of the report (the kext's clock) to Unix time; the text
    /// and CSV then show UTC times.
    // Absent, never null (as the other two): the schema says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Anchor")]
    pub clock_anchor: Option<Anchor>,
    /// With `--time wall`: the first event's UTC time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub first_time: Option<String>,
    /// With `--time wall`: the last event's UTC time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub last_time: Option<String>,
}

impl Summary {
    /// Shows times as UTC through `anchor` (`--time wall`).
    pub fn set_wall_clock(&mut self, anchor: Anchor) {
        self.clock_anchor = Some(anchor);
        self.first_time = self.first_ns.map(|t| shown_time(t, Some(&anchor)));
        self.last_time = self.last_ns.map(|t| shown_time(t, Some(&anchor)));
    }
}

fn span(s: &Summary) -> String {
    match (s.first_ns, s.last_ns) {
        (Some(a), Some(b)) => format!(
            "{} .. {} ({:.3}s)",
            shown_time(a, s.clock_anchor.as_ref()),
            shown_time(b, s.clock_anchor.as_ref()),
            b.saturating_sub(a) as f64 / 1e9
        ),
        _ => "no events".into(),
    }
}

fn losses(t: &ReportTotals, palette: &Palette) -> String {
    let (verdict, style) = if t.incomplete {
        ("INCOMPLETE", palette.loss)
    } else {
        ("nothing lost", palette.ok)
    };
    format!(
        "dropped {}, gap slots {}, corrupt {}, unpaired mmap(2) checks {}{}  ({style}{verdict}{style:#})",
        t.dropped,
        t.gap_slots,
        t.corrupt,
        t.unpaired_mmap_calls,
        super::cut_note(t.cut_bytes),
    )
}

/// The page size distinct pages are counted in, and where it comes from.
fn page_size_line(s: &Summary) -> String {
    let size = super::shown_page_size(s.page_size);
    match (&s.page_size_note, s.page_size_from) {
        (Some(note), _) => note.clone(),
        (None, PageSizeFrom::Trace) => format!("counted in {size} pages (the traced machine's)"),
        (None, PageSizeFrom::Option) => format!("counted in {size} pages (--page-size)"),
        (None, PageSizeFrom::Unknown) => format!("counted in {size} pages (page size unknown)"),
    }
}

/// The latency figures in one line.
pub fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        human_ns(l.p50_ns),
        human_ns(l.p90_ns),
        human_ns(l.p99_ns),
        human_ns(l.max_ns)
    )
}

/// Writes the summary block.
pub fn write_summary(w: &mut impl Write, r: &Report, palette: &Palette) -> io::Result<()> {
    let (s, t) = (&r.summary, &r.totals);
    let (h, l, sus) = (palette.heading, palette.loss, palette.suspect);
    writeln!(
        w,
        "{h}maptrace report:{h:#} {} events, {} files, {} processes{}",
        t.events,
        s.files,
        s.processes,
        if s.filtered { " (filtered)" } else { "" }
    )?;
    if t.incomplete {
        writeln!(
            w,
            "{l}!! INCOMPLETE: {} records dropped, {} slots skipped, {} corrupt parts{}; counts below may miss events{l:#}",
            t.dropped,
            t.gap_slots,
            t.corrupt,
            super::cut_note(t.cut_bytes)
        )?;
    }
    writeln!(w, "  time      {}", span(s))?;
    writeln!(w, "  losses    {}", losses(t, palette))?;
    writeln!(
        w,
        "  suspects  {}",
        match s.suspects {
            0 => "none".to_string(),
            n => format!("{sus}{n}{sus:#} (LEAK SUSPECTS below)"),
        }
    )?;
    match &s.latency {
        Some(l) => writeln!(w, "  page-ins  {} clusters: {}", l.count, latency_line(l))?,
        None => writeln!(w, "  page-ins  none")?,
    }
    writeln!(w, "  pages     {}", page_size_line(s))?;
    let shown = |what: &str, n: u64| match n {
        0 => String::new(),
        n => format!("; {n} more {what} not shown (--top N, --all)"),
    };
    writeln!(
        w,
        "  sorted by {}{}{}",
        s.sort.name(),
        shown("files", s.files_not_shown),
        shown("processes", s.processes_not_shown)
    )
}

/// Writes the closing totals and losses lines.
pub fn write_totals(w: &mut impl Write, t: &ReportTotals, palette: &Palette) -> io::Result<()> {
    let h = palette.heading;
    let kinds: Vec<String> = t.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    writeln!(
        w,
        "{h}TOTALS{h:#}  {} batches, {} events: {}",
        t.batches,
        t.events,
        kinds.join(", ")
    )?;
    writeln!(w, "{h}LOSSES{h:#}  {}", losses(t, palette))?;
    if t.folded_events > 0 {
        writeln!(
            w,
            "… {} events of further (file, process) pairs folded into each file's \"other processes\" (the report keeps {} pairs; totals are exact)",
            t.folded_events,
            super::MAX_PAIRS
        )?;
    }
    if let Some(o) = &t.other_files {
        writeln!(
            w,
            "… {} events of files past the first {} added up: {} maps, {} VNOP_MNOMAPs, {} page-ins ({} bytes), {} opens (their processes keep their maps and page-ins)",
            o.events,
            super::MAX_FILES,
            o.maps,
            o.mnomaps,
            o.pageins,
            o.pagein_bytes,
            o.opens
        )?;
    }
    if t.unlisted_process_events > 0 {
        writeln!(
            w,
            "… {} events of processes past the first {} listed under no process (their files count them)",
            t.unlisted_process_events,
            super::MAX_PROCESSES
        )?;
    }
    Ok(())
}
