//! `maptrace heatmap`: one SVG per file, offset against time.

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::HeatmapArgs;
use anyhow::{Context, Result, bail};
use maptrace::heatmap;
use maptrace::text::{shown, shown_path};
use std::io::Write;

pub fn run(source: Option<&str>, a: &HeatmapArgs, out: &mut impl Write) -> Result<u8> {
    let HeatmapArgs {
        input,
        output: dir,
        path,
        time_axis,
        limit,
    } = a;
    let mut src = open_source(source, input.as_deref())?;
    let mut b = heatmap::Builder::new();
    let totals = observe_each(src.as_mut(), limit, |i| b.observe(i))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", shown_path(dir)))?;
    let mut written = 0;
    let past_cap = b.events_past_file_cap();
    for f in b.finish() {
        if let Some(prefix) = path {
            if !f
                .path
                .as_deref()
                .is_some_and(|p| p.starts_with(prefix.as_str()))
            {
                continue;
            }
        }
        let file = dir.join(format!("{}.svg", f.file_stem()));
        std::fs::write(&file, heatmap::render_with(&f, (*time_axis).into()))
            .with_context(|| format!("cannot write {}", shown_path(&file)))?;
        writeln!(
            out,
            "{}  {}",
            shown_path(&file),
            shown(f.path.as_deref().unwrap_or("(path unknown)"))
        )?;
        written += 1;
    }
    out.flush()?;
    if past_cap > 0 {
        eprintln!(
            "maptrace: {past_cap} page-ins, maps and unmaps of files past the first {} were not drawn (memory cap)",
            heatmap::MAX_FILES
        );
    }
    if written == 0 {
        bail!(
            "no file had page-ins or maps to draw{}",
            path.as_ref()
                .map_or(String::new(), |p| format!(" under `{}`", shown(p)))
        );
    }
    warn_losses(&totals);
    Ok(totals.exit_status())
}
