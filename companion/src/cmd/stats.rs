//! `maptrace stats`: the kext's counters.

use super::source::open_source;
use crate::cli::JsonArgs;
use anyhow::Result;
use maptrace::{control, exit};
use std::io::Write;

pub fn run(source: Option<&str>, a: &JsonArgs, mut out: &mut impl Write) -> Result<u8> {
    let mut src = open_source(source, None)?;
    let bytes = src.stats()?;
    let s = control::parse_stats(&bytes)?;
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        control::write_stats(&mut out, &s)?;
    }
    out.flush()?;
    Ok(exit::OK)
}
