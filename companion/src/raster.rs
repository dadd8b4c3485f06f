//! PNG pictures (`heatmap --format png`): bug trackers and chats show a PNG
//! inline but not an SVG. resvg renders the very SVG `heatmap` writes, so
//! both formats show the same picture; the PNG loses only the hover titles.

use resvg::{tiny_skia, usvg};
use std::sync::Arc;

/// Pixels per SVG unit: sharp on high-density screens.
pub const SCALE: f32 = 2.0;

/// Most pixels a picture may take (128 MiB of RGBA): the pixmap is
/// allocated whole, and an SVG names its own size.
pub const MAX_PIXELS: u64 = 1 << 25;

/// Families tried, in order, for the SVG's generic `sans-serif` (fontdb's own
/// default, Arial, is missing on most Linux machines and text would vanish).
const SANS_SERIF: &[&str] = &[
    "Helvetica",
    "Arial",
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
];

/// Why a picture could not be rasterized.
#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    /// Not an SVG resvg reads.
    #[error("the SVG did not parse: {0}")]
    Svg(#[from] usvg::Error),
    /// Empty, or more than [`MAX_PIXELS`] at [`SCALE`].
    #[error("a {0}×{1} SVG cannot be rasterized at {SCALE}×")]
    Size(f32, f32),
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// Renders SVG documents to PNG with one font database, loaded once.
pub struct Rasterizer {
    options: usvg::Options<'static>,
}

impl Rasterizer {
    /// With the fonts installed on this machine (a scan of the usual font
    /// directories: tens of milliseconds).
    pub fn with_system_fonts() -> Rasterizer {
        let mut fonts = usvg::fontdb::Database::new();
        fonts.load_system_fonts();
        Rasterizer::with_fonts(fonts)
    }

    /// With exactly `fonts` (none: shapes only, no text).
    pub fn with_fonts(mut fonts: usvg::fontdb::Database) -> Rasterizer {
        let families: Vec<String> = fonts
            .faces()
            .filter_map(|face| face.families.first().map(|(name, _)| name.clone()))
            .collect();
        let sans = SANS_SERIF
            .iter()
            .find(|want| families.iter().any(|f| f == *want))
            .map(|f| (*f).to_owned())
            .or_else(|| families.first().cloned());
        if let Some(sans) = sans {
            fonts.set_sans_serif_family(sans);
        }
        Rasterizer {
            options: usvg::Options {
                fontdb: Arc::new(fonts),
                ..usvg::Options::default()
            },
        }
    }

    /// Whether any font was found: without one, text is left out.
    pub fn has_fonts(&self) -> bool {
        !self.options.fontdb.is_empty()
    }

    /// `svg` as a PNG at [`SCALE`] on a white background.
    pub fn png(&self, svg: &str) -> Result<Vec<u8>, RasterError> {
        let tree = usvg::Tree::from_str(svg, &self.options)?;
        let size = tree.size();
        let mut pixmap = size
            .to_int_size()
            .scale_by(SCALE)
            .filter(|px| u64::from(px.width()) * u64::from(px.height()) <= MAX_PIXELS)
            .and_then(|px| tiny_skia::Pixmap::new(px.width(), px.height()))
            .ok_or(RasterError::Size(size.width(), size.height()))?;
        pixmap.fill(tiny_skia::Color::WHITE);
        resvg::render(
            &tree,
            tiny_skia::Transform::from_scale(SCALE, SCALE),
            &mut pixmap.as_mut(),
        );
        pixmap
            .encode_png()
            .map_err(|e| RasterError::Encode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="50" font-family="sans-serif" font-size="16"><text x="4" y="30">maptrace</text><rect x="150" y="10" width="20" height="20" fill="#1f77b4"/></svg>"##;

    fn decode(png: &[u8]) -> tiny_skia::Pixmap {
        tiny_skia::Pixmap::decode_png(png).expect("a PNG")
    }

    /// Pixels of `p` inside `x0..x1` (in SVG units) that are nearly black.
    fn dark_in(p: &tiny_skia::Pixmap, x0: u32, x1: u32) -> usize {
        let s = SCALE as u32;
        (0..p.height())
            .flat_map(|y| (x0 * s..x1 * s).map(move |x| (x, y)))
            .filter_map(|(x, y)| p.pixel(x, y))
            .filter(|c| c.red() < 80 && c.green() < 80 && c.blue() < 80)
            .count()
    }

    #[test]
    fn shapes_and_text_are_drawn_at_twice_the_svg_size_on_white() {
        let r = Rasterizer::with_system_fonts();
        assert!(
            r.has_fonts(),
            "no system fonts: install one (Debian: fonts-dejavu-core; `cargo xtask test` does)"
        );
        let p = decode(&r.png(SVG).unwrap());
        assert_eq!((p.width(), p.height()), (400, 100));
        let c = p.pixel(160 * 2, 20 * 2).unwrap();
        assert_eq!((c.red(), c.green(), c.blue()), (0x1f, 0x77, 0xb4));
        let corner = p.pixel(0, 0).unwrap();
        assert_eq!(
            (corner.red(), corner.green(), corner.blue()),
            (255, 255, 255)
        );
        // The label's glyphs, in the first 100 units.
        assert!(dark_in(&p, 0, 100) > 100, "the text was not drawn");
    }

    #[test]
    fn without_fonts_the_shapes_are_still_drawn() {
        let r = Rasterizer::with_fonts(usvg::fontdb::Database::new());
        assert!(!r.has_fonts());
        let p = decode(&r.png(SVG).unwrap());
        let c = p.pixel(160 * 2, 20 * 2).unwrap();
        assert_eq!((c.red(), c.green(), c.blue()), (0x1f, 0x77, 0xb4));
        assert_eq!(dark_in(&p, 0, 100), 0);
    }

    #[test]
    fn bad_and_empty_svgs_are_errors() {
        let r = Rasterizer::with_fonts(usvg::fontdb::Database::new());
        assert!(matches!(r.png("<svg"), Err(RasterError::Svg(_))));
        assert!(matches!(r.png("not xml at all"), Err(RasterError::Svg(_))));
        let sized = |w: u32, h: u32| {
            format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"/>"#)
        };
        // Refused before anything is allocated (a 4·10^6-unit square would
        // ask for 256 TB).
        assert!(matches!(
            r.png(&sized(4_000_000, 4_000_000)),
            Err(RasterError::Size(..))
        ));
        assert!(matches!(
            r.png(&sized(4096, 4097)),
            Err(RasterError::Size(..))
        ));
        assert!(r.png(&sized(1024, 512)).is_ok());
    }
}
