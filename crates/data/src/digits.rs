//! scikit-learn's 8×8 handwritten digits (the UCI optical-digits test set, 1,797 images).

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::open::open_maybe_gz;
use crate::{DataError, ImageDataset};

/// Side length of a digits image.
pub const DIGITS_SIDE: usize = 8;
/// Number of digit classes.
pub const DIGITS_CLASSES: usize = 10;
const PIXELS: usize = DIGITS_SIDE * DIGITS_SIDE;
/// Largest pixel value in the file (4×4 blocks of a 32×32 bitmap, counted).
const MAX_VALUE: f32 = 16.0;

/// The digits data set, pixels scaled to `[0, 1]`.
pub type Digits = ImageDataset;

/// Reads `sklearn_digits.csv` (or `.csv.gz`, detected by its magic bytes): one image per line,
/// 64 comma-separated pixel values in 0..=16 followed by the label in 0..=9.
///
/// Any malformed line gives [`DataError::Malformed`] naming the line and field.
pub fn read_digits_csv(path: impl AsRef<Path>) -> Result<Digits, DataError> {
    let path = path.as_ref();
    let reader = open_maybe_gz(path)?;
    let malformed = |line: usize, field: Option<usize>, message: String| DataError::Malformed {
        path: path.to_path_buf(),
        position: match field {
            Some(f) => format!("line {line}, field {f}"),
            None => format!("line {line}"),
        },
        message,
    };

    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| malformed(number, None, format!("unreadable: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != PIXELS + 1 {
            return Err(malformed(
                number,
                None,
                format!("expected {} fields, found {}", PIXELS + 1, fields.len()),
            ));
        }
        for (f, field) in fields[..PIXELS].iter().enumerate() {
            let value: f32 = field.trim().parse().map_err(|_| {
                malformed(number, Some(f + 1), format!("`{field}` is not a number"))
            })?;
            if !(0.0..=MAX_VALUE).contains(&value) {
                return Err(malformed(
                    number,
                    Some(f + 1),
                    format!("pixel value {value} outside 0..=16"),
                ));
            }
            images.push(value / MAX_VALUE);
        }
        let label_field = fields[PIXELS].trim();
        let label: usize = label_field
            .parse()
            .ok()
            .filter(|&l| l < DIGITS_CLASSES)
            .ok_or_else(|| {
                malformed(
                    number,
                    Some(PIXELS + 1),
                    format!("label `{label_field}` is not a digit 0..=9"),
                )
            })?;
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(malformed(0, None, "no images in file".into()));
    }
    Ok(ImageDataset {
        images,
        labels,
        channels: 1,
        height: DIGITS_SIDE,
        width: DIGITS_SIDE,
        num_classes: DIGITS_CLASSES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("signsym-digits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        path
    }

    fn row(value: &str, label: &str) -> String {
        let mut fields = vec![value; PIXELS];
        fields.push(label);
        fields.join(",")
    }

    #[test]
    fn reads_plain_csv_and_scales_to_unit_interval() {
        let path = write(
            "ok.csv",
            &format!("{}\n{}\n", row("16", "3"), row("4", "9")),
        );
        let d = read_digits_csv(&path).unwrap();
        assert_eq!(d.labels, vec![3, 9]);
        assert_eq!(d.image(0)[0], 1.0);
        assert_eq!(d.image(1)[63], 0.25);
    }

    #[test]
    fn short_line_names_the_line() {
        let path = write("short.csv", &format!("{}\n1,2,3\n", row("1", "1")));
        let err = read_digits_csv(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("expected 65 fields"),
            "{err}"
        );
    }

    #[test]
    fn bad_pixel_and_bad_label_name_the_field() {
        let path = write("pixel.csv", &row("17", "1"));
        let err = read_digits_csv(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1, field 1") && err.contains("17"),
            "{err}"
        );
        let path = write("label.csv", &row("1", "10"));
        let err = read_digits_csv(&path).unwrap_err().to_string();
        assert!(err.contains("field 65"), "{err}");
        let path = write("nan.csv", &row("x", "1"));
        assert!(matches!(
            read_digits_csv(&path),
            Err(DataError::Malformed { .. })
        ));
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_panic() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/sklearn_digits.csv.gz"
        ))
        .unwrap();
        let dir = std::env::temp_dir().join(format!("signsym-digits-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("truncated.csv.gz");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_digits_csv(&path).is_err());
    }

    #[test]
    fn missing_file_is_io_error() {
        assert!(matches!(
            read_digits_csv("/nonexistent/digits.csv"),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn bundled_file_has_1797_images_of_all_classes() {
        let d = read_digits_csv(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/sklearn_digits.csv.gz"
        ))
        .unwrap();
        assert_eq!(d.len(), 1797);
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l] += 1;
        }
        assert!(
            counts.iter().all(|&c| (170..=190).contains(&c)),
            "{counts:?}"
        );
    }
}
