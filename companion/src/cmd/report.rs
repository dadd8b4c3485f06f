//! `maptrace report`: each file's lifecycle, as text, JSON or CSV.

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::{ReportArgs, ReportFormat};
use anyhow::Result;
use maptrace::{csv_rows, report};
use std::io::Write;

pub fn run(source: Option<&str>, a: &ReportArgs, mut out: &mut impl Write) -> Result<u8> {
    let mut src = open_source(source, a.input.as_deref())?;
    let mut b = report::Builder::new();
    let totals = observe_each(src.as_mut(), &a.limit, |i| b.observe(i))?;
    let r = b.finish(&totals);
    match a.format() {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &r)?;
            writeln!(out)?;
        }
        ReportFormat::Csv => csv_rows::report_csv(&mut out, &r)?,
        ReportFormat::Text => report::write_human(&mut out, &r)?,
    }
    out.flush()?;
    warn_losses(&totals);
    Ok(totals.exit_status())
}
