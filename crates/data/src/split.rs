//! Reproducible train/test splits.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::{DataError, ImageDataset};

/// A train and a test set.
#[derive(Clone, Debug)]
pub struct Split {
    /// Training images.
    pub train: ImageDataset,
    /// Held-out images.
    pub test: ImageDataset,
}

/// Shuffles the indices with a ChaCha8 generator seeded by `seed` and holds out `test_fraction`
/// of them, stratified by class so that every class keeps its share.
pub fn train_test_split(
    data: &ImageDataset,
    test_fraction: f64,
    seed: u64,
) -> Result<Split, DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::InvalidSplit(format!(
            "test fraction must lie in (0, 1), got {test_fraction}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for class in 0..data.num_classes {
        let mut idx: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels[i] == class)
            .collect();
        idx.shuffle(&mut rng);
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    if train.is_empty() || test.is_empty() {
        return Err(DataError::InvalidSplit(
            "split leaves an empty train or test set".into(),
        ));
    }
    Ok(Split {
        train: data.select(&train),
        test: data.select(&test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> ImageDataset {
        ImageDataset {
            images: (0..n).map(|i| i as f32).collect(),
            labels: (0..n).map(|i| i % 2).collect(),
            channels: 1,
            height: 1,
            width: 1,
            num_classes: 2,
        }
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let d = toy(100);
        let s = train_test_split(&d, 0.2, 3).unwrap();
        assert_eq!(s.test.len(), 20);
        assert_eq!(s.train.len(), 80);
        assert_eq!(s.test.labels.iter().filter(|&&l| l == 0).count(), 10);
        let mut all: Vec<f32> = s
            .train
            .images
            .iter()
            .chain(&s.test.images)
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, d.images);
        let again = train_test_split(&d, 0.2, 3).unwrap();
        assert_eq!(again.test.images, s.test.images);
        let other = train_test_split(&d, 0.2, 4).unwrap();
        assert_ne!(other.test.images, s.test.images);
    }

    #[test]
    fn bad_fraction_is_an_error() {
        assert!(train_test_split(&toy(10), 1.0, 0).is_err());
        assert!(train_test_split(&toy(10), f64::NAN, 0).is_err());
    }
}
