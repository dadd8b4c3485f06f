//! `maptrace heatmap`: one picture per file (SVG, or PNG), offset against
//! time.

use super::read::{observe_each, warn_losses};
use super::source::open_source;
use crate::cli::{HeatmapArgs, ImageFormat};
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
        format,
        limit,
    } = a;
    let picture = Picture::new(*format)?;
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
                .is_some_and(|p| maptrace::pipeline::path_under(p, prefix))
            {
                continue;
            }
        }
        let file = dir.join(format!("{}.{}", f.file_stem(), picture.extension()));
        let svg = heatmap::render_with(&f, (*time_axis).into());
        std::fs::write(&file, picture.bytes(svg)?)
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

/// How each heatmap is written.
enum Picture {
    Svg,
    #[cfg(feature = "png")]
    Png(maptrace::raster::Rasterizer),
}

impl Picture {
    /// Loads the system's fonts for PNG output, once (a warning when there
    /// are none: the pictures then have no labels).
    fn new(format: ImageFormat) -> Result<Picture> {
        match format {
            ImageFormat::Svg => Ok(Picture::Svg),
            #[cfg(feature = "png")]
            ImageFormat::Png => {
                let r = maptrace::raster::Rasterizer::with_system_fonts();
                if !r.has_fonts() {
                    eprintln!(
                        "maptrace: no fonts found on this system, so the PNG pictures have no labels; \
                         install one (Debian: apt-get install fonts-dejavu-core) or use --format svg"
                    );
                }
                Ok(Picture::Png(r))
            }
            #[cfg(not(feature = "png"))]
            ImageFormat::Png => Err(maptrace::exit::usage(
                "this maptrace was built without PNG output (cargo feature `png`); use --format svg",
            )),
        }
    }

    fn extension(&self) -> &'static str {
        match self {
            Picture::Svg => "svg",
            #[cfg(feature = "png")]
            Picture::Png(_) => "png",
        }
    }

    fn bytes(&self, svg: String) -> Result<Vec<u8>> {
        match self {
            Picture::Svg => Ok(svg.into_bytes()),
            #[cfg(feature = "png")]
            Picture::Png(r) => Ok(r.png(&svg)?),
        }
    }
}
