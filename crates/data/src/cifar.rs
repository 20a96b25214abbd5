//! CIFAR-10 and CIFAR-100, binary versions (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! A CIFAR-10 record is one label byte then 3,072 pixel bytes (the red, green and blue 32×32
//! planes, rows in order); CIFAR-100 has two label bytes (coarse, fine) in front. Files are plain
//! concatenations of records, so a truncated file is one whose length is not a whole number of
//! records.

use std::path::{Path, PathBuf};

use crate::open::read_maybe_gz;
use crate::{DataError, ImageDataset};

/// Side of a CIFAR image.
pub const CIFAR_SIDE: usize = 32;
const PIXELS: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;

/// Which part of a CIFAR data set to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarPart {
    /// The 50,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

/// Which CIFAR-100 label to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 fine classes.
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// Reads CIFAR-10 from the directory `cifar-10-batches-bin` (files `data_batch_1.bin` …
/// `data_batch_5.bin` and `test_batch.bin`, optionally gzip-compressed) into an [`ImageDataset`]
/// of 32×32×3 images in `[0, 1]`, 10 classes.
///
/// ```no_run
/// use signsym_data::{CifarPart, read_cifar10};
/// let test = read_cifar10("cifar-10-batches-bin", CifarPart::Test)?;
/// assert_eq!((test.len(), test.channels, test.num_classes), (10_000, 3, 10));
/// # Ok::<(), signsym_data::DataError>(())
/// ```
pub fn read_cifar10(dir: impl AsRef<Path>, part: CifarPart) -> Result<ImageDataset, DataError> {
    let dir = dir.as_ref();
    let files: Vec<PathBuf> = match part {
        CifarPart::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        CifarPart::Test => vec![dir.join("test_batch.bin")],
    };
    let mut data = empty(10);
    for file in files {
        read_records(&file, 1, 0, 10, &mut data)?;
    }
    Ok(data)
}

/// Reads CIFAR-100 from the directory `cifar-100-binary` (`train.bin`, `test.bin`) with the fine
/// (100) or coarse (20) labels.
pub fn read_cifar100(
    dir: impl AsRef<Path>,
    part: CifarPart,
    labels: Cifar100Labels,
) -> Result<ImageDataset, DataError> {
    let file = dir.as_ref().join(match part {
        CifarPart::Train => "train.bin",
        CifarPart::Test => "test.bin",
    });
    let (offset, classes) = match labels {
        Cifar100Labels::Coarse => (0, 20),
        Cifar100Labels::Fine => (1, 100),
    };
    let mut data = empty(classes);
    read_records(&file, 2, offset, classes, &mut data)?;
    Ok(data)
}

fn empty(num_classes: usize) -> ImageDataset {
    ImageDataset {
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        num_classes,
    }
}

/// Appends the records of one file: `label_bytes` label bytes, of which the one at
/// `label_offset` is used, then the planar pixels, stored interleaved (height × width × channels).
fn read_records(
    path: &Path,
    label_bytes: usize,
    label_offset: usize,
    num_classes: usize,
    data: &mut ImageDataset,
) -> Result<(), DataError> {
    let bytes = read_maybe_gz(path)?;
    let record = label_bytes + PIXELS;
    let malformed = |position: String, message: String| DataError::Malformed {
        path: path.to_path_buf(),
        position,
        message,
    };
    if bytes.is_empty() {
        return Err(malformed("byte 0".into(), "empty file".into()));
    }
    if bytes.len() % record != 0 {
        let whole = bytes.len() / record;
        return Err(malformed(
            format!("record {whole} (byte {})", whole * record),
            format!(
                "truncated: {} bytes, not a whole number of {record}-byte records",
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / record;
    data.images.reserve(count * PIXELS);
    data.labels.reserve(count);
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = usize::from(r[label_offset]);
        if label >= num_classes {
            return Err(malformed(
                format!("record {i} (byte {})", i * record + label_offset),
                format!("label {label} is not below {num_classes}"),
            ));
        }
        data.labels.push(label);
        let pixels = &r[label_bytes..];
        for p in 0..plane {
            for c in 0..3 {
                data.images.push(f32::from(pixels[c * plane + p]) / 255.0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose pixel at plane `c`, position `p` is `(c * 7 + p) % 256`.
    fn record(labels: &[u8]) -> Vec<u8> {
        let mut r = labels.to_vec();
        for c in 0..3 {
            for p in 0..CIFAR_SIDE * CIFAR_SIDE {
                r.push(((c * 7 + p) % 256) as u8);
            }
        }
        r
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn reads_cifar10_and_interleaves_channels() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5u8 {
            let mut bytes = record(&[i]);
            bytes.extend(record(&[9]));
            write(dir.path(), &format!("data_batch_{i}.bin"), &bytes);
        }
        write(dir.path(), "test_batch.bin", &record(&[3]));
        let train = read_cifar10(dir.path(), CifarPart::Train).unwrap();
        assert_eq!(train.len(), 10);
        assert_eq!(train.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
        // Pixel (row 0, column 1): position 1 of each plane, channel last.
        let img = train.image(0);
        assert_eq!(img.len(), 3072);
        for c in 0..3 {
            assert_eq!(img[3 + c], ((c * 7 + 1) % 256) as f32 / 255.0);
        }
        let test = read_cifar10(dir.path(), CifarPart::Test).unwrap();
        assert_eq!((test.len(), test.labels[0], test.num_classes), (1, 3, 10));
    }

    #[test]
    fn reads_cifar100_fine_and_coarse() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[4, 87]);
        bytes.extend(record(&[19, 0]));
        write(dir.path(), "train.bin", &bytes);
        let fine = read_cifar100(dir.path(), CifarPart::Train, Cifar100Labels::Fine).unwrap();
        assert_eq!((fine.labels.clone(), fine.num_classes), (vec![87, 0], 100));
        let coarse = read_cifar100(dir.path(), CifarPart::Train, Cifar100Labels::Coarse).unwrap();
        assert_eq!(
            (coarse.labels.clone(), coarse.num_classes),
            (vec![4, 19], 20)
        );
        assert_eq!(fine.images, coarse.images);
    }

    #[test]
    fn truncated_files_and_bad_labels_name_file_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[1]);
        bytes.extend(&record(&[2])[..100]);
        write(dir.path(), "test_batch.bin", &bytes);
        let err = read_cifar10(dir.path(), CifarPart::Test).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("test_batch.bin") && text.contains("record 1"),
            "{text}"
        );

        let mut bytes = record(&[1]);
        bytes.extend(record(&[10]));
        write(dir.path(), "test_batch.bin", &bytes);
        let text = read_cifar10(dir.path(), CifarPart::Test)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("record 1") && text.contains("label 10"),
            "{text}"
        );

        write(dir.path(), "test_batch.bin", &[]);
        assert!(matches!(
            read_cifar10(dir.path(), CifarPart::Test),
            Err(DataError::Malformed { .. })
        ));
        // A missing batch file is an I/O error naming it.
        let text = read_cifar10(dir.path(), CifarPart::Train)
            .unwrap_err()
            .to_string();
        assert!(text.contains("data_batch_1.bin"), "{text}");
        // CIFAR-100 with a fine label out of range.
        write(dir.path(), "test.bin", &record(&[3, 100]));
        let text = read_cifar100(dir.path(), CifarPart::Test, Cifar100Labels::Fine)
            .unwrap_err()
            .to_string();
        assert!(text.contains("label 100"), "{text}");
    }
}
