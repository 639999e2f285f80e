//! What both figures share: the embedded font, the palette, and writing one drawing as PNG and SVG.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// Font family the figures ask for; [`register_fonts`] maps it to the embedded DejaVu Sans.
/// Sizes are even: plotters 0.3.7's ab_glyph renderer truncates half a size plus each glyph's
/// top toward zero, which at odd sizes sets digits a pixel lower than the decimal point.
pub(crate) const FONT: &str = "sans-serif";

/// Text colour for labels (dark grey reads better than pure black next to coloured marks).
pub(crate) const INK: RGBColor = RGBColor(40, 40, 40);

/// Light grey for separators and grid lines.
pub(crate) const RULE: RGBColor = RGBColor(200, 200, 200);

/// Categorical palette (Tableau 10, in its order).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0xba, 0xb0, 0xac),
];

/// `#rrggbb`, as the SVG backend writes colours.
pub fn hex(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

/// Register DejaVu Sans with plotters' `ab_glyph` text renderer, once per process.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failure here (it cannot happen with the embedded fonts) surfaces as a drawing
        // error naming the figure at the first text drawn.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// A figure drawn the same way on any plotters backend.
pub(crate) trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw on `root`; errors are plotters' messages.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Result of drawing: plotters' error message.
pub(crate) type DrawResult = std::result::Result<(), String>;

/// plotters' error as a message (its error types carry the backend as a type parameter).
pub(crate) fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draw `figure` into `png` (8-bit RGB) and `svg`, each written to a temporary file and renamed.
pub(crate) fn write_figure(figure: &impl Figure, png: &Path, svg: &Path) -> Result<()> {
    register_fonts();
    let (w, h) = figure.size();
    let failed = |path: &Path, reason: String| Error::Draw {
        path: path.to_path_buf(),
        reason,
    };

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(|r| failed(svg, r))?;
        root.present().map_err(|e| failed(svg, msg(e)))?;
    }
    whittle::fsutil::write_atomic(svg, text.as_bytes())?;

    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(|r| failed(png, r))?;
        root.present().map_err(|e| failed(png, msg(e)))?;
    }
    let mut encoded = Vec::new();
    {
        let mut encoder = ::png::Encoder::new(&mut encoded, w, h);
        encoder.set_color(::png::ColorType::Rgb);
        encoder.set_depth(::png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| failed(png, msg(e)))?;
        writer
            .write_image_data(&rgb)
            .map_err(|e| failed(png, msg(e)))?;
        writer.finish().map_err(|e| failed(png, msg(e)))?;
    }
    whittle::fsutil::write_atomic(png, &encoded)?;
    Ok(())
}

/// Width in pixels of `text` in `style` on `area` (for laying out legends by hand).
pub(crate) fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
) -> std::result::Result<i32, String> {
    area.estimate_text_size(text, style)
        .map(|(w, _)| w as i32)
        .map_err(msg)
}
