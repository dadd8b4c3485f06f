//! `maptrace stats`: the kext's counters, live or as a recording closes.

use super::source::open_source;
use crate::cli::StatsArgs;
use anyhow::Result;
use maptrace::palette::Palette;
use maptrace::{control, exit};
use std::io::Write;

pub fn run(
    source: Option<&str>,
    a: &StatsArgs,
    palette: &Palette,
    mut out: &mut impl Write,
) -> Result<u8> {
    let mut src = open_source(source, a.input.as_deref())?;
    let bytes = src.stats()?;
    let s = control::parse_stats(&bytes)?;
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        control::write_stats_styled(&mut out, &s, palette)?;
    }
    out.flush()?;
    Ok(exit::OK)
}
