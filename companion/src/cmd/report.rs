//! `maptrace report`: each file's lifecycle, as text or JSON.

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::ReportArgs;
use anyhow::Result;
use maptrace::report;
use std::io::Write;

pub fn run(source: Option<&str>, a: &ReportArgs, mut out: &mut impl Write) -> Result<u8> {
    let ReportArgs { input, json, limit } = a;
    let mut src = open_source(source, input.as_deref())?;
    let mut b = report::Builder::new();
    let totals = observe_each(src.as_mut(), limit, |i| b.observe(i))?;
    let r = b.finish(&totals);
    if *json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        report::write_human(&mut out, &r)?;
    }
    out.flush()?;
    warn_losses(&totals);
    Ok(totals.exit_status())
}
