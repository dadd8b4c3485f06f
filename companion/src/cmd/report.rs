//! `maptrace report`: a summary, then each file's lifecycle, as text, JSON
//! or CSV, filtered, sorted and cut to the first N.

use super::read::{observe_each, warn_losses};
use super::source::{open_source, wall_anchor};
use crate::cli::{Bound, ReportArgs, ReportFormat, usage_error};
use anyhow::Result;
use maptrace::pagesize::PageBasis;
use maptrace::palette::Palette;
use maptrace::report::{self, Filter, View};
use maptrace::source::Source;
use maptrace::{csv_rows, exit};
use std::io::Write;

/// The filter the flags ask for; a contradiction is a usage error. A UTC
/// bound maps to the kext's clock through the source's anchor.
fn filter(a: &ReportArgs, src: &dyn Source) -> Filter {
    let secs = |b: &Option<Bound>| match b {
        Some(Bound::Secs(v)) => Some(*v),
        _ => None,
    };
    let clock = |flag: &str, b: &Option<Bound>| match b {
        Some(Bound::Utc(text, unix_ns)) => match src.anchor() {
            Some(anchor) => Some((anchor.clock_ns_of(*unix_ns), text.clone())),
            None => usage_error(format!(
                "--{flag} {text}: a UTC time needs the source's clock anchor, and {} has none \
                 (recordings before format 4 keep only their start time); give seconds after \
                 the trace's first record instead",
                src.describe()
            )),
        },
        _ => None,
    };
    let (since, until) = (clock("since", &a.since), clock("until", &a.until));
    let shown = (
        since.as_ref().map_or("", |s| s.1.as_str()),
        until.as_ref().map_or("", |u| u.1.as_str()),
    );
    Filter::all()
        .pids(&a.pid)
        .comms(&a.comm)
        .paths(&a.path)
        .and_then(|f| f.window(secs(&a.since), secs(&a.until)))
        .and_then(|f| {
            f.clock_window(
                since.as_ref().map(|s| s.0),
                until.as_ref().map(|u| u.0),
                shown,
            )
        })
        .unwrap_or_else(|e| usage_error(e))
}

/// Text shows the first [`report::sort::DEFAULT_TOP`]; JSON and CSV everything,
/// unless `--top` says otherwise.
fn view(a: &ReportArgs) -> View {
    let top = match (a.all, a.top) {
        (true, _) | (false, Some(0)) => None,
        (false, Some(n)) => Some(n),
        (false, None) if a.format() != ReportFormat::Text => None,
        (false, None) => Some(report::sort::DEFAULT_TOP),
    };
    View { sort: a.sort, top }
}

/// `palette` colours the text only: JSON and CSV never take colour.
pub fn run(
    source: Option<&str>,
    a: &ReportArgs,
    palette: &Palette,
    mut out: &mut impl Write,
) -> Result<u8> {
    let mut src = open_source(source, a.input.as_deref())?;
    let filter = filter(a, src.as_ref());
    let wall = wall_anchor(src.as_ref(), a.time)?;
    let mut b = report::Builder::with_filter(filter);
    b.set_page_basis(PageBasis::resolve(a.page_size, src.page_size()));
    if let Some(anchor) = wall {
        b.set_wall_clock(anchor);
    }
    let totals = observe_each(src.as_mut(), &a.limit, |i| b.observe(i))?;
    let mut r = b.finish(&totals);
    report::sort::apply(&mut r, &view(a));
    if let Some(anchor) = wall {
        r.summary.set_wall_clock(anchor);
    }
    match a.format() {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report::Document::of(&r))?;
            writeln!(out)?;
        }
        ReportFormat::Csv => csv_rows::report_csv(&mut out, &r)?,
        ReportFormat::Text => report::write_human_styled(&mut out, &r, palette)?,
    }
    out.flush()?;
    warn_losses(&totals);
    Ok(match totals.exit_status() {
        exit::OK if a.fail_on_suspects && !r.leak_suspects.is_empty() => exit::SUSPECTS,
        status => status,
    })
}
