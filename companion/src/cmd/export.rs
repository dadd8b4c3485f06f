//! `maptrace export`: the events for other tools (Perfetto UI), written as
//! they are read.

use super::read::{for_each_item, warn_losses};
use super::source::open_source;
use crate::cli::{ExportArgs, ExportFormat, Limit};
use anyhow::{Context, Result};
use maptrace::perfetto::Exporter;
use maptrace::pipeline::Totals;
use maptrace::source::Source;
use maptrace::text::shown_path;
use std::io::{BufWriter, Write};

/// Hands every item of `src` to the exporter as the pipeline makes it.
fn export_each<W: Write>(
    src: &mut dyn Source,
    limit: &Limit,
    x: &mut Exporter<W>,
) -> Result<Totals> {
    for_each_item(src, limit, |item| {
        item.map_or(Ok(()), |i| x.observe(i))?;
        Ok(())
    })
}

pub fn run(source: Option<&str>, a: &ExportArgs, out: &mut impl Write) -> Result<u8> {
    let ExportArgs {
        input,
        format: ExportFormat::Perfetto,
        output: dest,
        limit,
    } = a;
    // The source first: a bad input leaves no empty output file behind.
    let mut src = open_source(source, input.as_deref())?;
    let totals = match dest {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", shown_path(p)))?;
            let mut x = Exporter::new(BufWriter::with_capacity(1 << 16, f))?;
            let totals = export_each(src.as_mut(), limit, &mut x)?;
            x.finish()?;
            eprintln!(
                "wrote {} (open it at https://ui.perfetto.dev)",
                shown_path(p)
            );
            totals
        }
        None => {
            let mut x = Exporter::new(&mut *out)?;
            let totals = export_each(src.as_mut(), limit, &mut x)?;
            x.finish()?;
            totals
        }
    };
    warn_losses(&totals);
    Ok(totals.exit_status())
}
