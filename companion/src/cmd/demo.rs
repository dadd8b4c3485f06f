//! `maptrace demo`: the simulator with the real kext, its live stream, then
//! the report.

use super::read::for_each_batch;
use super::source::open_source;
use crate::cli::{DemoArgs, Limit};
use anyhow::Result;
use maptrace::{output, report};
use std::io::Write;

pub fn run(a: &DemoArgs, mut out: &mut impl Write) -> Result<u8> {
    let quiet = a.quiet;
    let spec = match &a.scenario {
        Some(p) => format!("sim:{}", p.display()),
        None => "sim".into(),
    };
    let mut src = open_source(Some(&spec), None)?;
    let mut b = report::Builder::new();
    let limit = Limit { duration: None };
    if !quiet {
        out.write_all(output::TABLE_HEADER.as_bytes())?;
    }
    let mut line = Vec::with_capacity(1 << 16);
    let totals = for_each_batch(src.as_mut(), &limit, |items| {
        line.clear();
        for item in items {
            b.observe(item);
            output::item_line(&mut line, item);
        }
        if !quiet {
            out.write_all(&line)?;
            out.flush()?;
        }
        Ok(())
    })?;
    if !quiet {
        output::summary_row(&mut out, &totals)?;
        writeln!(out)?;
    }
    let mut r = b.finish(&totals);
    report::sort::apply(&mut r, &report::View::default());
    report::write_human(&mut out, &r)?;
    out.flush()?;
    Ok(totals.exit_status())
}
