//! Robustness curves as figures: one panel per attack and gradient source, one line per rule.
//! The same drawing code renders into plotters' SVG backend and into its bitmap backend (encoded
//! as PNG by the `image` crate), with DejaVu Sans embedded in the binary and rasterised by
//! ab_glyph, so a machine without fonts still gets labelled PNGs.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

use super::error::StudyError;
use super::output::write_atomic;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry (the rule).
    pub label: String,
    /// `(ε, value)` points, in the order of the panel's ε grid.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, axis labels and its lines. The x values of the longest line are
/// placed at equal spacing and labelled by value (an ε grid, class indices, a γ grid).
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title (`"PGD-5, exact gradient"`).
    pub title: String,
    /// x-axis label (`"ε (L∞)"`).
    pub x_label: String,
    /// y-axis label (`"robust accuracy"`).
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_W: u32 = 420;
const PANEL_H: u32 = 320;

/// The colour of a rule's line, the same in every figure.
fn colour(label: &str, index: usize) -> RGBColor {
    match label {
        "bp" => RGBColor(0, 0, 0),
        "usf" => RGBColor(31, 119, 180),
        "frsf" => RGBColor(255, 127, 14),
        "brsf" => RGBColor(44, 160, 44),
        "fa" => RGBColor(214, 39, 40),
        _ => {
            let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// Draws `panels` in a grid of `columns` and writes `<stem>.svg` and `<stem>.png`; the x axis
/// places the ε grid at equal spacing (the paper's grid spans three decades and starts at 0).
pub fn plot_panels(
    panels: &[Panel],
    columns: usize,
    stem: &Path,
) -> Result<[PathBuf; 2], StudyError> {
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    let fail = |path: &Path, e: &dyn std::fmt::Display| StudyError::Plot {
        path: path.into(),
        message: e.to_string(),
    };
    if panels.is_empty() {
        return Err(fail(&svg_path, &"nothing to plot"));
    }
    let columns = columns.clamp(1, panels.len());
    let rows = panels.len().div_ceil(columns);
    let size = (PANEL_W * columns as u32, PANEL_H * rows as u32);
    register_font();
    let mut svg = String::new();
    draw_figure(
        SVGBackend::with_string(&mut svg, size),
        panels,
        rows,
        columns,
    )
    .map_err(|e| fail(&svg_path, &e))?;
    write_atomic(&svg_path, svg.as_bytes())?;
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw_figure(
        BitMapBackend::with_buffer(&mut rgb, size),
        panels,
        rows,
        columns,
    )
    .map_err(|e| fail(&png_path, &e))?;
    let png = encode_png(rgb, size).map_err(|e| fail(&png_path, &e))?;
    write_atomic(&png_path, &png)?;
    Ok([svg_path, png_path])
}

/// A matrix as a grid of coloured cells (white 0 to dark red at the largest value), with its
/// value printed in each cell.
#[derive(Clone, Debug)]
pub struct HeatMap {
    /// Title.
    pub title: String,
    /// Label of the rows (y) and of the columns (x).
    pub axes: [String; 2],
    /// Rows × columns values, row-major.
    pub values: Vec<f64>,
    /// Number of rows (= columns).
    pub size: usize,
}

/// Draws `maps` in a grid of `columns` and writes `<stem>.svg` and `<stem>.png`.
pub fn plot_heatmaps(
    maps: &[HeatMap],
    columns: usize,
    stem: &Path,
) -> Result<[PathBuf; 2], StudyError> {
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    let fail = |path: &Path, e: &dyn std::fmt::Display| StudyError::Plot {
        path: path.into(),
        message: e.to_string(),
    };
    if maps.is_empty()
        || maps
            .iter()
            .any(|m| m.size == 0 || m.values.len() != m.size * m.size)
    {
        return Err(fail(
            &svg_path,
            &"nothing to plot, or a matrix of the wrong size",
        ));
    }
    let columns = columns.clamp(1, maps.len());
    let rows = maps.len().div_ceil(columns);
    let size = (PANEL_W * columns as u32, (PANEL_W + 20) * rows as u32);
    register_font();
    let mut svg = String::new();
    draw_heatmaps(SVGBackend::with_string(&mut svg, size), maps, rows, columns)
        .map_err(|e| fail(&svg_path, &e))?;
    write_atomic(&svg_path, svg.as_bytes())?;
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw_heatmaps(
        BitMapBackend::with_buffer(&mut rgb, size),
        maps,
        rows,
        columns,
    )
    .map_err(|e| fail(&png_path, &e))?;
    let png = encode_png(rgb, size).map_err(|e| fail(&png_path, &e))?;
    write_atomic(&png_path, &png)?;
    Ok([svg_path, png_path])
}

fn draw_heatmaps<DB: DrawingBackend>(
    backend: DB,
    maps: &[HeatMap],
    rows: usize,
    columns: usize,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    for (map, area) in maps.iter().zip(&root.split_evenly((rows, columns))) {
        let n = map.size;
        let top = map
            .values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(1e-12, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(&map.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(36)
            .build_cartesian_2d(0..n, 0..n)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_desc(map.axes[1].as_str())
            .y_desc(map.axes[0].as_str())
            .label_style(("sans-serif", 10))
            .draw()?;
        chart.draw_series(
            (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| {
                    let v = map.values[i * n + j];
                    let t = if v.is_finite() {
                        (v / top).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let c = RGBColor(
                        255,
                        (255.0 * (1.0 - t)) as u8,
                        (255.0 * (1.0 - 0.8 * t)) as u8,
                    );
                    // Row i at the top, as a matrix is read.
                    let y = n - 1 - i;
                    Rectangle::new([(j, y), (j + 1, y + 1)], c.filled())
                }),
        )?;
    }
    root.present()?;
    Ok(())
}

/// Makes the embedded DejaVu Sans plotters' "sans-serif" (ab_glyph has no system fonts).
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a valid TrueType file shipped inside the dejavu crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Every panel of a figure on one backend.
fn draw_figure<DB: DrawingBackend>(
    backend: DB,
    panels: &[Panel],
    rows: usize,
    columns: usize,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows, columns));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(panel, area)?;
    }
    root.present()?;
    Ok(())
}

/// PNG bytes of an RGB buffer.
fn encode_png(rgb: Vec<u8>, (width, height): (u32, u32)) -> Result<Vec<u8>, String> {
    let image = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| "buffer of the wrong size".to_string())?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(bytes.into_inner())
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    // The ε grid of the longest series defines the ticks.
    let grid: Vec<f64> = panel
        .series
        .iter()
        .max_by_key(|s| s.points.len())
        .map(|s| s.points.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let position = |epsilon: f64| {
        grid.iter()
            .position(|&e| e == epsilon)
            .map(|i| i as f64)
            .unwrap_or(f64::NAN)
    };
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let x_max = (grid.len().max(2) - 1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(-0.2..x_max + 0.2, 0.0..y_max * 1.02)?;
    let tick = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < grid.len() {
            format!("{}", grid[i as usize])
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(grid.len().max(2))
        .x_label_formatter(&tick)
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style(("sans-serif", 11))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (index, series) in panel.series.iter().enumerate() {
        let c = colour(&series.label, index);
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|&(e, v)| (position(e), v))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_labelled_svg_and_a_png_with_ink() {
        let dir = tempfile::tempdir().unwrap();
        let grid = [0.0, 0.05, 0.1];
        let panel = |title: &str| Panel {
            title: title.into(),
            x_label: "ε (L∞)".into(),
            y_label: "robust accuracy".into(),
            series: ["bp", "usf"]
                .iter()
                .enumerate()
                .map(|(k, r)| Series {
                    label: r.to_string(),
                    points: grid
                        .iter()
                        .map(|&e| (e, 0.9 - e * (k + 1) as f64))
                        .collect(),
                })
                .collect(),
        };
        let [svg, png] = plot_panels(
            &[panel("FGSM, feedback"), panel("FGSM, exact")],
            2,
            &dir.path().join("fig"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for needle in ["FGSM, exact", "usf", "0.05", "<polyline"] {
            assert!(text.contains(needle), "{needle} missing from the SVG");
        }
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let image = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (2 * PANEL_W, PANEL_H));
        // Dark pixels: axes, lines and text. A title band with no text would leave the top rows
        // blank, so count ink in the caption row of the first panel.
        let dark = |y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (0..PANEL_W).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let p = image.get_pixel(x, y).0;
                    u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) < 200
                })
                .count()
        };
        assert!(dark(0, 28) > 50, "no caption text rendered");
        assert_eq!(dark(PANEL_H - 2, PANEL_H), 0);
    }

    #[test]
    fn refuses_an_empty_figure() {
        let dir = tempfile::tempdir().unwrap();
        assert!(plot_panels(&[], 1, &dir.path().join("x")).is_err());
    }
}
