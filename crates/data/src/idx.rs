//! MNIST-style IDX files (optionally gzip-compressed): images `idx3` of `u8` pixels, labels `idx1`.

use std::path::{Path, PathBuf};

use crate::open::read_maybe_gz;
use crate::{DataError, ImageDataset};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads an IDX image file and its label file into an [`ImageDataset`] (one channel, pixels
/// scaled to `[0, 1]`). Gzip-compressed files are decompressed. `num_classes` bounds the labels.
///
/// ```no_run
/// let train = signsym_data::read_idx("data/mnist-train-images-idx3-ubyte.gz",
///                                    "data/mnist-train-labels-idx1-ubyte.gz", 10)?;
/// assert_eq!((train.len(), train.height, train.width), (60_000, 28, 28));
/// # Ok::<(), signsym_data::DataError>(())
/// ```
pub fn read_idx(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    num_classes: usize,
) -> Result<ImageDataset, DataError> {
    let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
    let image_bytes = read_maybe_gz(images_path)?;
    let label_bytes = read_maybe_gz(labels_path)?;

    let (image_dims, pixels) = parse(images_path, &image_bytes, IMAGES_MAGIC, 3)?;
    let (label_dims, classes) = parse(labels_path, &label_bytes, LABELS_MAGIC, 1)?;
    let [count, height, width] = [image_dims[0], image_dims[1], image_dims[2]];
    if label_dims[0] != count {
        return Err(malformed(
            labels_path,
            "header",
            format!("{} labels for {count} images", label_dims[0]),
        ));
    }
    if let Some((i, &label)) = classes
        .iter()
        .enumerate()
        .find(|&(_, &c)| c as usize >= num_classes)
    {
        return Err(malformed(
            labels_path,
            &format!("label {i}"),
            format!("class {label} is not below {num_classes}"),
        ));
    }
    Ok(ImageDataset {
        images: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: classes.iter().map(|&c| c as usize).collect(),
        channels: 1,
        height,
        width,
        num_classes,
    })
}

/// The whole file, decompressed if it is gzip (detected by its magic bytes).
/// Checks the header and the payload length; returns the dimensions and the payload.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    rank: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let header = 4 * (1 + rank);
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    // The magic number first: a swapped or foreign file is named as such, not as "short".
    if bytes.len() >= 4 && word(0) != magic {
        return Err(malformed(
            path,
            "magic number",
            format!("{:#010x}, expected {magic:#010x}", word(0)),
        ));
    }
    if bytes.len() < header {
        return Err(malformed(
            path,
            "header",
            format!("{} bytes, the header needs {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (1..=rank).map(|i| word(i) as usize).collect();
    // Checked: three 32-bit dimensions can claim more bytes than a usize counts.
    let expected = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let payload = &bytes[header..];
    if expected != Some(payload.len()) {
        let expected = dims.iter().map(|&d| d as u128).product::<u128>();
        return Err(malformed(
            path,
            "payload",
            format!(
                "{} bytes, the header {dims:?} needs {expected}",
                payload.len()
            ),
        ));
    }
    Ok((dims, payload))
}

fn malformed(path: &Path, position: &str, message: String) -> DataError {
    DataError::Malformed {
        path: PathBuf::from(path),
        position: position.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_a_hand_made_pair_and_rejects_corruption() {
        let dir = std::env::temp_dir().join(format!("signsym-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = write(
            &dir,
            "i.idx",
            &idx(IMAGES_MAGIC, &[2, 1, 2], &[0, 255, 51, 102]),
        );
        let labels = write(&dir, "l.idx", &idx(LABELS_MAGIC, &[2], &[3, 1]));
        let data = read_idx(&images, &labels, 4).unwrap();
        assert_eq!(data.labels, vec![3, 1]);
        assert_eq!(data.images, vec![0.0, 1.0, 0.2, 0.4]);
        assert_eq!((data.height, data.width, data.channels), (1, 2, 1));

        // A label beyond the classes, a truncated payload, a swapped magic number.
        assert!(
            matches!(read_idx(&images, &labels, 3), Err(DataError::Malformed { position, .. }) if position == "label 0")
        );
        let short = write(&dir, "s.idx", &idx(IMAGES_MAGIC, &[2, 1, 2], &[0, 1, 2]));
        assert!(
            matches!(read_idx(&short, &labels, 4), Err(DataError::Malformed { position, .. }) if position == "payload")
        );
        assert!(
            matches!(read_idx(&labels, &images, 4), Err(DataError::Malformed { position, .. }) if position == "magic number")
        );
        let one_label = write(&dir, "o.idx", &idx(LABELS_MAGIC, &[1], &[0]));
        assert!(read_idx(&images, &one_label, 4).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
