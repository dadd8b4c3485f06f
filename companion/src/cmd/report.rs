//! `maptrace report`: a summary, then each file's lifecycle, as text, JSON
//! or CSV, filtered, sorted and cut to the first N.

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::{ReportArgs, ReportFormat, usage_error};
use anyhow::Result;
use maptrace::report::{self, Filter, View};
use maptrace::{csv_rows, exit};
use std::io::Write;

/// The filter the flags ask for; a contradiction is a usage error.
fn filter(a: &ReportArgs) -> Filter {
    Filter::all()
        .pids(&a.pid)
        .comms(&a.comm)
        .paths(&a.path)
        .and_then(|f| f.window(a.since, a.until))
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

pub fn run(source: Option<&str>, a: &ReportArgs, mut out: &mut impl Write) -> Result<u8> {
    let filter = filter(a);
    let mut src = open_source(source, a.input.as_deref())?;
    let mut b = report::Builder::with_filter(filter);
    let totals = observe_each(src.as_mut(), &a.limit, |i| b.observe(i))?;
    let mut r = b.finish(&totals);
    report::sort::apply(&mut r, &view(a));
    match a.format() {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report::Document::of(&r))?;
            writeln!(out)?;
        }
        ReportFormat::Csv => csv_rows::report_csv(&mut out, &r)?,
        ReportFormat::Text => report::write_human(&mut out, &r)?,
    }
    out.flush()?;
    warn_losses(&totals);
    Ok(match totals.exit_status() {
        exit::OK if a.fail_on_suspects && !r.leak_suspects.is_empty() => exit::SUSPECTS,
        status => status,
    })
}
