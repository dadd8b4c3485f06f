//! `maptrace export`: the events for other tools (Perfetto UI).

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::{ExportArgs, ExportFormat};
use anyhow::{Context, Result};
use maptrace::perfetto;
use maptrace::text::shown_path;
use std::io::{BufWriter, Write};

pub fn run(source: Option<&str>, a: &ExportArgs, mut out: &mut impl Write) -> Result<u8> {
    let ExportArgs {
        input,
        format: ExportFormat::Perfetto,
        output: dest,
        limit,
    } = a;
    let mut src = open_source(source, input.as_deref())?;
    let mut b = perfetto::Builder::new();
    let totals = observe_each(src.as_mut(), limit, |i| b.observe(i))?;
    let doc = b.finish();
    match dest {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", shown_path(p)))?;
            let mut w = BufWriter::new(f);
            perfetto::write(&mut w, &doc)?;
            w.flush()?;
            eprintln!(
                "wrote {} (open it at https://ui.perfetto.dev)",
                shown_path(p)
            );
        }
        None => {
            perfetto::write(&mut out, &doc)?;
            out.flush()?;
        }
    }
    warn_losses(&totals);
    Ok(totals.exit_status())
}
