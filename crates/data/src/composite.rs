//! Multi-label images made from single-label ones: 2×2 mosaics whose label set is the union of
//! the four tiles' classes, so retrieval with mAP@k (where relevance is sharing a label) can be
//! exercised on MNIST, Fashion-MNIST or the digits.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::{DataError, ImageDataset};

/// Images with label sets: `images[i]` has `height × width × channels` values in `[0, 1]`
/// (row-major, channels last) and `labels[i]` its classes, ascending and distinct.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiLabelImages {
    /// Pixel values, one flat image after another.
    pub images: Vec<f32>,
    /// Classes of each image.
    pub labels: Vec<Vec<usize>>,
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl MultiLabelImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The label sets as a row-major `[len, num_classes]` multi-hot matrix.
    pub fn multi_hot(&self) -> Vec<f32> {
        crate::multi_hot(&self.labels, self.num_classes)
    }
}

/// `count` mosaics of four images of `data` drawn at random (ChaCha8(`seed`)), each tile shrunk
/// by 2×2 averaging so the mosaic keeps the source's size (which must be even). The label set of
/// a mosaic is the union of its tiles' classes.
///
/// ```
/// use signsym_data::{ImageDataset, composite_mosaics};
/// let data = ImageDataset {
///     images: (0..4 * 16).map(|i| (i / 16) as f32 / 3.0).collect(),
///     labels: vec![0, 1, 2, 3],
///     channels: 1, height: 4, width: 4, num_classes: 4,
/// };
/// let mosaics = composite_mosaics(&data, 10, 7).unwrap();
/// assert_eq!((mosaics.len(), mosaics.height, mosaics.width), (10, 4, 4));
/// assert!(mosaics.labels.iter().all(|l| !l.is_empty() && l.len() <= 4));
/// ```
pub fn composite_mosaics(
    data: &ImageDataset,
    count: usize,
    seed: u64,
) -> Result<MultiLabelImages, DataError> {
    if data.is_empty() || !data.height.is_multiple_of(2) || !data.width.is_multiple_of(2) {
        return Err(DataError::InvalidSplit(format!(
            "mosaics need a non-empty data set with even sides, got {} images of {}×{}",
            data.len(),
            data.height,
            data.width
        )));
    }
    let (h, w, c) = (data.height, data.width, data.channels);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = MultiLabelImages {
        images: Vec::with_capacity(count * data.image_len()),
        labels: Vec::with_capacity(count),
        channels: c,
        height: h,
        width: w,
        num_classes: data.num_classes,
    };
    let mut mosaic = vec![0.0f32; data.image_len()];
    for _ in 0..count {
        let tiles: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..data.len()));
        for (t, &index) in tiles.iter().enumerate() {
            let src = data.image(index);
            // Tile t sits at row block t / 2, column block t % 2.
            let (row0, col0) = ((t / 2) * h / 2, (t % 2) * w / 2);
            for y in 0..h / 2 {
                for x in 0..w / 2 {
                    for ch in 0..c {
                        let at = |yy: usize, xx: usize| src[(yy * w + xx) * c + ch];
                        let mean = (at(2 * y, 2 * x)
                            + at(2 * y, 2 * x + 1)
                            + at(2 * y + 1, 2 * x)
                            + at(2 * y + 1, 2 * x + 1))
                            / 4.0;
                        mosaic[((row0 + y) * w + col0 + x) * c + ch] = mean;
                    }
                }
            }
        }
        out.images.extend_from_slice(&mosaic);
        let mut labels: Vec<usize> = tiles.iter().map(|&i| data.labels[i]).collect();
        labels.sort_unstable();
        labels.dedup();
        out.labels.push(labels);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image i is constant i / 10 (with a checkerboard of ±0.01 that averaging removes).
    fn data(n: usize) -> ImageDataset {
        let mut images = Vec::new();
        for i in 0..n {
            for y in 0..4 {
                for x in 0..6 {
                    let wiggle = if (x + y) % 2 == 0 { 0.01 } else { -0.01 };
                    images.push(i as f32 / 10.0 + wiggle);
                }
            }
        }
        ImageDataset {
            images,
            labels: (0..n).map(|i| i % 3).collect(),
            channels: 1,
            height: 4,
            width: 6,
            num_classes: 3,
        }
    }

    #[test]
    fn mosaic_labels_are_the_union_of_the_tiles() {
        let source = data(9);
        let m = composite_mosaics(&source, 50, 3).unwrap();
        assert_eq!((m.len(), m.height, m.width, m.num_classes), (50, 4, 6, 3));
        for i in 0..m.len() {
            let img = m.image(i);
            // Each quadrant is one constant source image: read back which one, and its class.
            let mut classes: Vec<usize> = [(0, 0), (0, 3), (2, 0), (2, 3)]
                .iter()
                .map(|&(y, x)| {
                    let v = img[y * 6 + x];
                    let src = (v * 10.0).round() as usize;
                    assert!(
                        (v - src as f32 / 10.0).abs() < 1e-5,
                        "tile not averaged: {v}"
                    );
                    for yy in y..y + 2 {
                        for xx in x..x + 3 {
                            assert!((img[yy * 6 + xx] - v).abs() < 1e-6, "tile not constant");
                        }
                    }
                    source.labels[src]
                })
                .collect();
            classes.sort_unstable();
            classes.dedup();
            assert_eq!(m.labels[i], classes, "mosaic {i}");
        }
        // Several mosaics carry more than one label; the draw follows the seed.
        assert!(m.labels.iter().filter(|l| l.len() > 1).count() > 25);
        assert_eq!(m, composite_mosaics(&source, 50, 3).unwrap());
        assert_ne!(m, composite_mosaics(&source, 50, 4).unwrap());
        let hot = m.multi_hot();
        assert_eq!(hot.len(), 150);
        assert_eq!(
            hot.iter().filter(|v| **v == 1.0).count(),
            m.labels.iter().map(Vec::len).sum::<usize>()
        );
    }

    #[test]
    fn odd_sides_and_empty_sets_are_errors() {
        let mut odd = data(2);
        odd.width = 3;
        odd.height = 8;
        assert!(composite_mosaics(&odd, 1, 0).is_err());
        let mut empty = data(0);
        empty.labels.clear();
        assert!(composite_mosaics(&empty, 1, 0).is_err());
    }
}
