#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cifar;
mod composite;
mod digits;
mod error;
mod idx;
mod image_folder;
mod multilabel;
mod open;
mod split;

pub use cifar::{CIFAR_SIDE, Cifar100Labels, CifarPart, read_cifar10, read_cifar100};
pub use composite::{MultiLabelImages, composite_mosaics};
pub use digits::{DIGITS_CLASSES, DIGITS_SIDE, Digits, read_digits_csv};
pub use error::DataError;
pub use idx::read_idx;
pub use image_folder::{ImageFolder, load_images, load_images_u8};
pub use multilabel::{
    HashingSplits, MultiLabelList, multi_hot, read_hashing_splits, read_multilabel_list,
    split_for_hashing,
};
pub use split::{Split, train_test_split};

/// A labelled image data set held in memory: `images[i]` has `height × width × channels` values
/// in `[0, 1]`, row-major, and `labels[i] < num_classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// Pixel values in `[0, 1]`, one flat image after another.
    pub images: Vec<f32>,
    /// Class of each image.
    pub labels: Vec<usize>,
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set is empty.
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

    /// A new data set holding the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageDataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        ImageDataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone_shape()
        }
    }

    fn clone_shape(&self) -> ImageDataset {
        ImageDataset {
            images: Vec::new(),
            labels: Vec::new(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }
}
