//! `maptrace stream`: events as they happen, as a table, JSON lines or CSV.

use super::read::{for_each_batch, for_each_item};
use super::source::{open_source, wall_anchor};
use crate::cli::{StreamArgs, StreamFormat};
use anyhow::Result;
use maptrace::csv_rows::StreamCsv;
use maptrace::output;
use maptrace::palette::Palette;
use maptrace::pipeline::{Filter, Item, Totals};
use maptrace::source::Source;
use maptrace::wallclock::Anchor;
use maptrace_abi::EventMask;
use std::io::Write;

/// `palette` colours the table only: JSON and CSV never take colour.
pub fn run(
    source: Option<&str>,
    a: &StreamArgs,
    palette: &Palette,
    out: &mut impl Write,
) -> Result<u8> {
    let mut src = open_source(source, a.input.as_deref())?;
    let wall = wall_anchor(src.as_ref(), a.time)?;
    let t = match a.format() {
        StreamFormat::Csv => stream_csv(src.as_mut(), a, wall, out)?,
        StreamFormat::Json => stream(src.as_mut(), a, None, wall, out)?,
        StreamFormat::Table => stream(src.as_mut(), a, Some(palette), wall, out)?,
    };
    Ok(t.exit_status())
}

fn filter(a: &StreamArgs, table: bool) -> Filter {
    let default = if table {
        EventMask::all().difference(output::TABLE_HIDDEN_KINDS)
    } else {
        EventMask::all()
    };
    Filter {
        pids: a.pid.clone(),
        path_prefix: a.path.clone(),
        kinds: a.kind.unwrap_or(default),
    }
}

/// What the filter lets through, counted for the summary.
struct Shown {
    filter: Filter,
    /// Whether any filter was given, or the table's default hides kinds
    /// (else the summary says nothing of it).
    filtering: bool,
    /// Whether the table hides [`output::TABLE_HIDDEN_KINDS`] by default.
    hides_names: bool,
    events: u64,
    /// Events of [`output::TABLE_HIDDEN_KINDS`] kinds left out by that default.
    names_hidden: u64,
}

impl Shown {
    fn new(a: &StreamArgs, table: bool) -> Shown {
        let hides_names = table && a.kind.is_none();
        Shown {
            filter: filter(a, table),
            filtering: !a.pid.is_empty() || a.path.is_some() || a.kind.is_some() || hides_names,
            hides_names,
            events: 0,
            names_hidden: 0,
        }
    }

    /// Whether `item` is shown: losses and corruption always are.
    fn admits(&mut self, item: &Item) -> bool {
        match item {
            Item::Event(ev) => {
                let yes = self.filter.accepts(ev);
                self.events += u64::from(yes);
                self.names_hidden += u64::from(
                    self.hides_names && output::TABLE_HIDDEN_KINDS.contains(ev.rec.kind.mask()),
                );
                yes
            }
            _ => true,
        }
    }

    /// `totals` with the count of shown events, when filtering.
    fn into_totals(self, mut totals: Totals) -> Totals {
        totals.shown = self.filtering.then_some(self.events);
        totals
    }
}

/// JSON lines, or the table in `table`'s palette.
fn stream(
    src: &mut dyn Source,
    a: &StreamArgs,
    table: Option<&Palette>,
    wall: Option<Anchor>,
    out: &mut impl Write,
) -> Result<Totals> {
    let json = table.is_none();
    let palette = table.unwrap_or(&Palette::PLAIN);
    let mut shown = Shown::new(a, !json);
    let mut line = Vec::with_capacity(512);
    let mut lines = output::JsonLines::new();
    if json {
        lines.header();
        out.write_all(lines.as_bytes())?;
    } else {
        output::write_table_header(out, wall.is_some(), palette)?;
    }
    let live = src.is_live();
    lines.clear();
    // Each item is written as the pipeline makes it; a batch's lines go
    // out together.
    let totals = for_each_item(src, &a.limit, |item| {
        match item {
            Some(item) if !shown.admits(item) => {}
            Some(item) if json => lines.item_at(item, wall.as_ref()),
            Some(item) => output::item_line_styled(&mut line, item, wall.as_ref(), palette),
            None => {
                if json {
                    out.write_all(lines.as_bytes())?;
                    lines.clear();
                } else {
                    out.write_all(&line)?;
                    line.clear();
                }
                // A live stream shows each batch as it comes.
                if live {
                    out.flush()?;
                }
            }
        }
        Ok(())
    })?;
    let names_hidden = shown.names_hidden;
    let totals = shown.into_totals(totals);
    if !a.no_summary {
        if json {
            lines.clear();
            lines.summary(&totals);
            out.write_all(lines.as_bytes())?;
        } else {
            output::summary_row_styled(out, &totals, palette)?;
            if names_hidden > 0 {
                writeln!(
                    out,
                    "-- {names_hidden} path and proc rows not shown (each row names its file \
                     and process): --kind all shows them"
                )?;
            }
        }
    }
    out.flush()?;
    Ok(totals)
}

fn stream_csv(
    src: &mut dyn Source,
    a: &StreamArgs,
    wall: Option<Anchor>,
    out: &mut impl Write,
) -> Result<Totals> {
    let mut shown = Shown::new(a, false);
    let mut csv = StreamCsv::with_time(&mut *out, wall)?;
    let live = src.is_live();
    let totals = for_each_batch(src, &a.limit, |items| {
        for item in items.iter().filter(|i| shown.admits(i)) {
            csv.item(item)?;
        }
        if live {
            csv.flush()?;
        }
        Ok(())
    })?;
    let totals = shown.into_totals(totals);
    if !a.no_summary {
        csv.summary(&totals)?;
    }
    csv.flush()?;
    drop(csv);
    out.flush()?;
    Ok(totals)
}
