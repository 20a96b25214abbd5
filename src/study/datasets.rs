//! Data sets by name, as the examples take them on the command line: the bundled ones (MNIST,
//! Fashion-MNIST, the 8×8 digits, held in memory) and the paper's (CIFAR-10/100 in memory;
//! ImageNet folders and the MS-COCO / NUS-WIDE hashing lists decoded lazily, batch by batch).
//! Pixels stay in `[0, 1]`; [`InputView`] adapts them to a backbone (channels, size, ImageNet
//! normalisation) at batch time, so attacks see the same `[0, 1]` box as the data.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use signsym_attacks::AttackModel;
use signsym_data::{
    Cifar100Labels, CifarPart, ImageDataset, ImageFolder, MultiLabelList, composite_mosaics,
    load_images, read_cifar10, read_cifar100, read_digits_csv, read_hashing_splits, read_idx,
    split_for_hashing, train_test_split,
};
use signsym_metrics::LabelSets;
use signsym_models::{Backbone, BatchSource, ModelError, Network};

use super::error::{StudyError, invalid};

/// A data set the examples know by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// MNIST (bundled, `data/mnist-*.gz`).
    Mnist,
    /// Fashion-MNIST (bundled, `data/fashion-*.gz`).
    FashionMnist,
    /// scikit-learn's 8×8 digits (bundled, `data/sklearn_digits.csv.gz`), split 80/20 by seed.
    Digits,
    /// CIFAR-10, binary version (`<data-dir>/cifar-10-batches-bin`).
    Cifar10,
    /// CIFAR-100, binary version (`<data-dir>/cifar-100-binary`), fine labels.
    Cifar100,
    /// ImageNet: `<data-dir>/train/<class>/*` and `<data-dir>/val/<class>/*`.
    ImageNet,
    /// The 100-class ImageNet hashing protocol: DeepHash lists (`train.txt`, `test.txt`,
    /// `database.txt`, one-hot over 100 classes) with paths relative to `<data-dir>`, or
    /// ImageNet-style folders `<data-dir>/train/<class>/*` (database) and `val/<class>/*`
    /// (queries).
    ImageNet100,
    /// MS-COCO hashing lists (80 classes), as ImageNet100.
    Coco,
    /// NUS-WIDE hashing lists (21 classes), as ImageNet100.
    NusWide,
    /// torchvision's `ImageFolder` layout: `<data-dir>/train/<class>/*` and
    /// `<data-dir>/test/<class>/*` (or `val/`), PNG or JPEG of any size, classes from the folder
    /// names, sorted.
    Folder,
}

impl DatasetName {
    /// Every name, as the command line spells them.
    pub const ALL: [&'static str; 10] = [
        "mnist",
        "fashion-mnist",
        "digits",
        "cifar10",
        "cifar100",
        "imagenet",
        "imagenet100",
        "coco",
        "nus-wide",
        "folder",
    ];

    /// The variants, in the order of [`ALL`](Self::ALL).
    const VARIANTS: [Self; 10] = [
        Self::Mnist,
        Self::FashionMnist,
        Self::Digits,
        Self::Cifar10,
        Self::Cifar100,
        Self::ImageNet,
        Self::ImageNet100,
        Self::Coco,
        Self::NusWide,
        Self::Folder,
    ];

    /// Whether the data set ships in the repository's `data/`.
    pub fn is_bundled(self) -> bool {
        matches!(self, Self::Mnist | Self::FashionMnist | Self::Digits)
    }

    /// Whether it comes as hashing lists (multi-label: retrieval only).
    pub fn is_hashing_list(self) -> bool {
        matches!(self, Self::ImageNet100 | Self::Coco | Self::NusWide)
    }

    /// Number of classes (`None` for a folder: its class folders decide).
    pub fn num_classes(self) -> Option<usize> {
        Some(match self {
            Self::Mnist | Self::FashionMnist | Self::Digits | Self::Cifar10 => 10,
            Self::Cifar100 | Self::ImageNet100 => 100,
            Self::ImageNet => 1000,
            Self::Coco => 80,
            Self::NusWide => 21,
            Self::Folder => return None,
        })
    }

    /// The k of mAP@k in the hashing literature: 1,000 for ImageNet-100, 5,000 otherwise.
    pub fn map_top_k(self) -> usize {
        if self == Self::ImageNet100 {
            1000
        } else {
            5000
        }
    }

    /// The directory the data set is read from when `--data-dir` is not given.
    pub fn default_dir(self) -> PathBuf {
        match self {
            s if s.is_bundled() => PathBuf::from("data"),
            Self::Cifar10 => PathBuf::from("data/cifar-10-batches-bin"),
            Self::Cifar100 => PathBuf::from("data/cifar-100-binary"),
            other => PathBuf::from(format!("data/{other}")),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = Self::VARIANTS
            .iter()
            .position(|d| d == self)
            .expect("every variant is listed");
        f.write_str(Self::ALL[i])
    }
}

impl serde::Serialize for DatasetName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DatasetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl FromStr for DatasetName {
    type Err = StudyError;

    fn from_str(s: &str) -> Result<Self, StudyError> {
        let key = s.to_ascii_lowercase().replace('_', "-");
        let key = match key.as_str() {
            "fashion" | "fashionmnist" => "fashion-mnist",
            "nuswide" => "nus-wide",
            "ms-coco" | "mscoco" => "coco",
            "cifar-10" => "cifar10",
            "cifar-100" => "cifar100",
            "imagenet-100" => "imagenet100",
            k => k,
        };
        Self::ALL
            .iter()
            .position(|&n| n == key)
            .map(|i| Self::VARIANTS[i])
            .ok_or_else(|| {
                invalid(
                    "dataset",
                    s,
                    &format!("expected one of {}", Self::ALL.join(", ")),
                )
            })
    }
}

/// Where an [`Images`] set keeps its pixels.
#[derive(Clone, Debug)]
enum Pixels {
    /// Decoded, `height × width × channels` per image, channels last, as `f32` (values that are
    /// not multiples of 1/255, as the 8×8 digits').
    Memory {
        values: Vec<f32>,
        channels: usize,
        height: usize,
        width: usize,
    },
    /// Decoded, as `Memory`, in bytes: value `k` is the pixel `k/255` (IDX, CIFAR and image
    /// files are 8-bit: a quarter of the memory, exactly).
    Bytes {
        values: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
    },
    /// Image files decoded (resized and centre-cropped to `side`, RGB) when a batch asks.
    Files { paths: Vec<PathBuf>, side: usize },
}

/// Labels: one class per image or a label set per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    /// One class per image.
    Single(Vec<usize>),
    /// Classes of each image (multi-label data).
    Multi(Vec<Vec<usize>>),
}

/// A labelled image set in memory or on disk.
#[derive(Clone, Debug)]
pub struct Images {
    pixels: Pixels,
    labels: Labels,
    num_classes: usize,
}

/// `values` as bytes `k` with `values[i] == k/255` exactly, if every value is one.
fn as_bytes(values: &[f32]) -> Option<Vec<u8>> {
    values
        .iter()
        .map(|&v| {
            let k = (v * 255.0).round();
            ((0.0..=255.0).contains(&k) && (k as u8 as f32 / 255.0).to_bits() == v.to_bits())
                .then_some(k as u8)
        })
        .collect()
}

/// In-memory pixels, as bytes when that is exact.
fn memory(values: Vec<f32>, channels: usize, height: usize, width: usize) -> Pixels {
    match as_bytes(&values) {
        Some(values) => Pixels::Bytes {
            values,
            channels,
            height,
            width,
        },
        None => Pixels::Memory {
            values,
            channels,
            height,
            width,
        },
    }
}

impl From<ImageDataset> for Images {
    fn from(d: ImageDataset) -> Self {
        Self {
            pixels: memory(d.images, d.channels, d.height, d.width),
            labels: Labels::Single(d.labels),
            num_classes: d.num_classes,
        }
    }
}

impl From<signsym_data::MultiLabelImages> for Images {
    fn from(d: signsym_data::MultiLabelImages) -> Self {
        Self {
            pixels: memory(d.images, d.channels, d.height, d.width),
            labels: Labels::Multi(d.labels),
            num_classes: d.num_classes,
        }
    }
}

impl Images {
    /// Image files with label sets, decoded at `side × side` when a batch asks.
    pub fn from_list(root: &Path, list: &MultiLabelList, side: usize) -> Self {
        Self {
            pixels: Pixels::Files {
                paths: list.paths.iter().map(|p| root.join(p)).collect(),
                side,
            },
            labels: Labels::Multi(list.labels.clone()),
            num_classes: list.num_classes,
        }
    }

    /// An image folder's files with their classes, decoded at `side × side` when a batch asks.
    pub fn from_folder(folder: &ImageFolder, side: usize) -> Self {
        Self {
            pixels: Pixels::Files {
                paths: folder.paths.clone(),
                side,
            },
            labels: Labels::Single(folder.labels.clone()),
            num_classes: folder.classes.len(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.labels {
            Labels::Single(l) => l.len(),
            Labels::Multi(l) => l.len(),
        }
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Channels of the stored pixels (3 for decoded files).
    pub fn channels(&self) -> usize {
        match &self.pixels {
            Pixels::Memory { channels, .. } | Pixels::Bytes { channels, .. } => *channels,
            Pixels::Files { .. } => 3,
        }
    }

    /// Height and width of the stored pixels.
    pub fn size(&self) -> [usize; 2] {
        match &self.pixels {
            Pixels::Memory { height, width, .. } | Pixels::Bytes { height, width, .. } => {
                [*height, *width]
            }
            Pixels::Files { side, .. } => [*side, *side],
        }
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Self, StudyError> {
        self.check(indices)?;
        fn gather<T: Copy>(values: &[T], n: usize, indices: &[usize]) -> Vec<T> {
            let mut out = Vec::with_capacity(indices.len() * n);
            for &i in indices {
                out.extend_from_slice(&values[i * n..(i + 1) * n]);
            }
            out
        }
        let pixels = match &self.pixels {
            Pixels::Memory {
                values,
                channels,
                height,
                width,
            } => Pixels::Memory {
                values: gather(values, channels * height * width, indices),
                channels: *channels,
                height: *height,
                width: *width,
            },
            Pixels::Bytes {
                values,
                channels,
                height,
                width,
            } => Pixels::Bytes {
                values: gather(values, channels * height * width, indices),
                channels: *channels,
                height: *height,
                width: *width,
            },
            Pixels::Files { paths, side } => Pixels::Files {
                paths: indices.iter().map(|&i| paths[i].clone()).collect(),
                side: *side,
            },
        };
        let labels = match &self.labels {
            Labels::Single(l) => Labels::Single(indices.iter().map(|&i| l[i]).collect()),
            Labels::Multi(l) => Labels::Multi(indices.iter().map(|&i| l[i].clone()).collect()),
        };
        Ok(Self {
            pixels,
            labels,
            num_classes: self.num_classes,
        })
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn take(&self, n: usize) -> Result<Self, StudyError> {
        let n = n.min(self.len());
        self.select(&(0..n).collect::<Vec<_>>())
    }

    /// A seeded draw of `n` images (all of them, in their order, when `n` is at least the set's
    /// size) that keeps the class proportions: each class gives `⌊n·share⌋` images, the
    /// remaining ones go to the classes with the largest remainders; multi-label sets are drawn
    /// uniformly. Never a prefix: data sets stored class by class would otherwise give a
    /// subset of one class.
    pub fn stratified(&self, n: usize, seed: u64) -> Result<Self, StudyError> {
        self.select(&self.stratified_indices(n, seed))
    }

    /// The indices [`stratified`](Self::stratified) draws.
    pub fn stratified_indices(&self, n: usize, seed: u64) -> Vec<usize> {
        let len = self.len();
        if n >= len {
            return (0..len).collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut chosen = match &self.labels {
            Labels::Multi(_) => {
                let mut all: Vec<usize> = (0..len).collect();
                all.shuffle(&mut rng);
                all.truncate(n);
                all
            }
            Labels::Single(labels) => {
                let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
                let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
                for (i, &c) in labels.iter().enumerate() {
                    members[c].push(i);
                }
                let mut quota: Vec<usize> = members.iter().map(|m| m.len() * n / len).collect();
                let mut rest: Vec<(usize, usize)> = members
                    .iter()
                    .enumerate()
                    .map(|(c, m)| (m.len() * n % len, c))
                    .collect();
                // Largest remainders first, lower classes first on ties.
                rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let missing = n - quota.iter().sum::<usize>();
                for &(_, c) in rest.iter().take(missing) {
                    quota[c] += 1;
                }
                let mut out = Vec::with_capacity(n);
                for (m, q) in members.iter_mut().zip(quota) {
                    m.shuffle(&mut rng);
                    out.extend_from_slice(&m[..q]);
                }
                out
            }
        };
        chosen.shuffle(&mut rng);
        chosen
    }

    fn check(&self, indices: &[usize]) -> Result<(), StudyError> {
        match indices.iter().find(|&&i| i >= self.len()) {
            Some(i) => Err(invalid(
                "index",
                i,
                &format!("beyond {} images", self.len()),
            )),
            None => Ok(()),
        }
    }

    /// Pixels of the images at `indices`: `(values, channels, height, width)`, channels last.
    fn pixels(&self, indices: &[usize]) -> Result<(Vec<f32>, usize, usize, usize), StudyError> {
        self.check(indices)?;
        match &self.pixels {
            Pixels::Memory {
                values,
                channels,
                height,
                width,
            } => {
                let n = channels * height * width;
                let mut out = Vec::with_capacity(indices.len() * n);
                for &i in indices {
                    out.extend_from_slice(&values[i * n..(i + 1) * n]);
                }
                Ok((out, *channels, *height, *width))
            }
            Pixels::Bytes {
                values,
                channels,
                height,
                width,
            } => {
                let n = channels * height * width;
                let mut out = Vec::with_capacity(indices.len() * n);
                for &i in indices {
                    out.extend(
                        values[i * n..(i + 1) * n]
                            .iter()
                            .map(|&v| f32::from(v) / 255.0),
                    );
                }
                Ok((out, *channels, *height, *width))
            }
            Pixels::Files { paths, side } => {
                let chosen: Vec<&Path> = indices.iter().map(|&i| paths[i].as_path()).collect();
                Ok((load_images(&chosen, *side)?, 3, *side, *side))
            }
        }
    }

    /// Image files decoded once, in parallel with a progress bar, into bytes at the set's side,
    /// when they take at most `budget` bytes that way (a data set larger than that stays on disk
    /// and is decoded batch by batch). In-memory sets are returned as they are.
    pub fn decoded(self, budget: usize, progress: bool) -> Result<Self, StudyError> {
        let Pixels::Files { paths, side } = &self.pixels else {
            return Ok(self);
        };
        let size = paths.len().saturating_mul(side * side * 3);
        if size > budget {
            return Ok(self);
        }
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(paths.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "decoding {bar:30} {pos}/{len} images {elapsed_precise}",
                )
                .expect("valid template"),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let chosen: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let values = signsym_data::load_images_u8(&chosen, *side, &|k| bar.inc(k as u64))?;
        bar.finish_and_clear();
        Ok(Self {
            pixels: Pixels::Bytes {
                values,
                channels: 3,
                height: *side,
                width: *side,
            },
            labels: self.labels,
            num_classes: self.num_classes,
        })
    }

    /// Class of each image at `indices`; an error for multi-label data.
    pub fn classes(&self, indices: &[usize]) -> Result<Vec<usize>, StudyError> {
        self.check(indices)?;
        match &self.labels {
            Labels::Single(l) => Ok(indices.iter().map(|&i| l[i]).collect()),
            Labels::Multi(_) => Err(invalid(
                "labels",
                "multi-label",
                "single-label classification needs one class per image",
            )),
        }
    }

    /// Multi-hot label rows of the images at `indices` (a one-hot row for single-label data).
    pub fn multi_hot(&self, indices: &[usize]) -> Result<Vec<f32>, StudyError> {
        self.check(indices)?;
        let mut out = vec![0.0f32; indices.len() * self.num_classes];
        for (row, &i) in indices.iter().enumerate() {
            let set: &[usize] = match &self.labels {
                Labels::Single(l) => std::slice::from_ref(&l[i]),
                Labels::Multi(l) => &l[i],
            };
            for &c in set {
                out[row * self.num_classes + c] = 1.0;
            }
        }
        Ok(out)
    }

    /// Every image's label set, for mAP.
    pub fn label_sets(&self) -> Result<LabelSets, StudyError> {
        Ok(match &self.labels {
            Labels::Single(l) => LabelSets::from_classes(l, self.num_classes)?,
            Labels::Multi(_) => {
                let all: Vec<usize> = (0..self.len()).collect();
                LabelSets::from_multi_hot(&self.multi_hot(&all)?, self.num_classes)?
            }
        })
    }
}

/// How a backbone sees images: its channels and side, and the normalisation its pre-trained
/// weights expect. Applied at batch time; attacks wrap the network with the same view
/// ([`ViewedModel`]) so their budget ε stays in `[0, 1]` pixel units.
#[derive(Clone, Debug, PartialEq)]
pub struct InputView {
    /// Channels the backbone takes (grey images are repeated to 3).
    pub channels: usize,
    /// Height and width the backbone takes (images of another size are resized bilinearly).
    pub side: usize,
    /// Per-channel mean and standard deviation subtracted and divided (torchvision's ImageNet
    /// statistics for pre-trained backbones); `None` feeds `[0, 1]` pixels.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// torchvision's ImageNet mean and standard deviation.
pub const IMAGENET_STATS: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

impl InputView {
    /// `[0, 1]` pixels of the images at `indices` as `[n, channels, side, side]`.
    pub fn pixels(
        &self,
        images: &Images,
        indices: &[usize],
        device: &Device,
    ) -> Result<Tensor<4>, StudyError> {
        let (values, channels, height, width) = images.pixels(indices)?;
        if channels != self.channels && !(channels == 1 && self.channels == 3) {
            return Err(invalid(
                "channels",
                channels,
                &format!("the backbone takes {} channels", self.channels),
            ));
        }
        let mut x = Tensor::<4>::from_data(
            TensorData::new(values, [indices.len(), height, width, channels]),
            device,
        )
        .permute([0, 3, 1, 2]);
        if channels != self.channels {
            x = x.repeat_dim(1, self.channels);
        }
        if [height, width] != [self.side, self.side] {
            x = interpolate(
                x,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_output_size([self.side, self.side]),
            )
            .clamp(0.0, 1.0);
        }
        Ok(x)
    }

    /// The network input for `[0, 1]` pixels (normalised if the view says so).
    pub fn prepare(&self, pixels: Tensor<4>) -> Tensor<4> {
        match self.normalize {
            None => pixels,
            Some((mean, std)) => {
                let device = pixels.device();
                let c = self.channels;
                let shape = |v: [f32; 3]| {
                    let values: Vec<f32> = (0..c).map(|i| v[i.min(2)]).collect();
                    Tensor::<4>::from_data(TensorData::new(values, [1, c, 1, 1]), &device)
                };
                (pixels - shape(mean)) / shape(std)
            }
        }
    }
}

/// Classification batches (class indices as targets) under a view.
pub struct ClassBatches<'a> {
    /// The images.
    pub images: &'a Images,
    /// How the backbone sees them.
    pub view: &'a InputView,
}

impl BatchSource for ClassBatches<'_> {
    type Target = Tensor<1, Int>;

    fn len(&self) -> usize {
        self.images.len()
    }

    fn validate(&self, outputs: usize) -> Result<(), ModelError> {
        let data = |e: StudyError| ModelError::Data(e.to_string());
        let all: Vec<usize> = (0..self.images.len()).collect();
        let classes = self.images.classes(&all).map_err(data)?;
        // Decoded files are finite by construction; in-memory pixels are checked once.
        let pixels: &[f32] = match &self.images.pixels {
            Pixels::Memory { values, .. } => values,
            // Bytes and decoded files are finite by construction.
            Pixels::Bytes { .. } | Pixels::Files { .. } => &[],
        };
        signsym_models::validate_classes(pixels, &classes, outputs)
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<1, Int>), ModelError> {
        let data = |e: StudyError| ModelError::Data(e.to_string());
        let x = self
            .view
            .pixels(self.images, indices, device)
            .map_err(data)?;
        let classes: Vec<i64> = self
            .images
            .classes(indices)
            .map_err(data)?
            .into_iter()
            .map(|c| c as i64)
            .collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(classes, [indices.len()]), device);
        Ok((self.view.prepare(x), y))
    }
}

/// Hashing batches (multi-hot label rows as targets, as HyP² takes them) under a view.
pub struct HashBatches<'a> {
    /// The images.
    pub images: &'a Images,
    /// How the backbone sees them.
    pub view: &'a InputView,
}

impl BatchSource for HashBatches<'_> {
    type Target = Tensor<2>;

    fn len(&self) -> usize {
        self.images.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<2>), ModelError> {
        let data = |e: StudyError| ModelError::Data(e.to_string());
        let x = self
            .view
            .pixels(self.images, indices, device)
            .map_err(data)?;
        let hot = self.images.multi_hot(indices).map_err(data)?;
        let y = Tensor::<2>::from_data(
            TensorData::new(hot, [indices.len(), self.images.num_classes()]),
            device,
        );
        Ok((self.view.prepare(x), y))
    }
}

/// A network seen through an [`InputView`]: attacks perturb `[0, 1]` pixels and the view's
/// normalisation is part of the attacked function.
pub struct ViewedModel<'a> {
    /// The network (in attack mode).
    pub model: &'a dyn AttackModel,
    /// The view.
    pub view: &'a InputView,
}

impl AttackModel for ViewedModel<'_> {
    fn scores(&self, images: Tensor<4>) -> Tensor<2> {
        self.model.scores(self.view.prepare(images))
    }

    fn outputs(&self) -> usize {
        self.model.outputs()
    }

    fn predict_scores(&self, images: Tensor<4>) -> Tensor<2> {
        self.model.predict_scores(self.view.prepare(images))
    }
}

/// Top-1 accuracy of `network` on `images`, in inference mode without autodiff.
pub fn accuracy<M: Backbone>(
    network: &Network<M>,
    images: &Images,
    view: &InputView,
    batch_size: usize,
) -> Result<f64, StudyError> {
    if images.is_empty() {
        return Err(invalid("evaluation set", 0, "is empty"));
    }
    let model = network.valid();
    let device = model.device()?;
    let indices: Vec<usize> = (0..images.len()).collect();
    let mut top1 = signsym_metrics::TopKAccuracy::new(&[1])?;
    for chunk in indices.chunks(batch_size.max(1)) {
        let x = view.prepare(view.pixels(images, chunk, &device)?);
        let scores = model
            .try_forward(x)?
            .try_to_vec_as::<f32>()
            .map_err(|e| invalid("scores", format!("{e:?}"), "unreadable"))?;
        top1.update_scores(&scores, model.task().outputs(), &images.classes(chunk)?)?;
    }
    Ok(top1.accuracy(1).unwrap_or(0.0))
}

/// Continuous codes (pre-sign) of every image, row-major `[n, bits]`, inference mode.
pub fn encode<M: Backbone>(
    network: &Network<M>,
    images: &Images,
    view: &InputView,
    batch_size: usize,
) -> Result<Vec<f32>, StudyError> {
    let model = network.valid();
    let device = model.device()?;
    let indices: Vec<usize> = (0..images.len()).collect();
    let mut codes = Vec::new();
    for chunk in indices.chunks(batch_size.max(1)) {
        let x = view.prepare(view.pixels(images, chunk, &device)?);
        let out = model.try_forward(x)?;
        codes.extend(
            out.try_to_vec_as::<f32>()
                .map_err(|e| invalid("codes", format!("{e:?}"), "unreadable"))?,
        );
    }
    Ok(codes)
}

/// Image files are decoded once into bytes at the model's side when the whole split takes at
/// most this much memory that way (4 GiB: 85,000 images at 128 × 128, 28,000 at 224 × 224);
/// larger splits stay on disk and are decoded batch by batch.
pub const DECODE_BUDGET: usize = 4 << 30;

/// The seed of the subset drawn for `purpose` (`"train"`, `"test"`, …) from a run's seed:
/// one stream per purpose, so the training draw does not decide the test draw.
pub fn subset_seed(seed: u64, purpose: &str) -> u64 {
    signsym_feedback::layer_seed(seed, purpose)
}

/// A classification data set: training and test images.
#[derive(Clone, Debug)]
pub struct ClassificationData {
    /// Training images.
    pub train: Images,
    /// Test images (ImageNet: the validation set).
    pub test: Images,
    /// The name of each class (the folder names of an image folder).
    pub class_names: Vec<String>,
}

/// Fashion-MNIST's class names.
const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// CIFAR-10's class names.
const CIFAR10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// `train/` and `test/` (or `val/`) image folders with the same classes, every class folder
/// holding at least one image; errors name the path.
fn open_split_folders(dir: &Path) -> Result<(ImageFolder, ImageFolder), StudyError> {
    let train = ImageFolder::open(dir.join("train"))?;
    let test_dir = ["test", "val"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_dir())
        .ok_or_else(|| invalid("data-dir", dir.display(), "holds neither test/ nor val/"))?;
    let test = ImageFolder::open(&test_dir)?;
    if train.classes != test.classes {
        let only = |a: &ImageFolder, b: &ImageFolder| {
            a.classes
                .iter()
                .filter(|c| !b.classes.contains(c))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(invalid(
            "data-dir",
            dir.display(),
            &format!(
                "train/ and {} hold different class folders (only in train/: [{}]; only in {}: [{}])",
                test_dir.display(),
                only(&train, &test),
                test_dir.display(),
                only(&test, &train)
            ),
        ));
    }
    Ok((train, test))
}

/// Reads a single-label data set for classification; `side` is the decode size of files
/// (ImageNet folders), ignored for in-memory sets. `seed` splits the digits.
pub fn load_classification(
    name: DatasetName,
    dir: &Path,
    side: usize,
    seed: u64,
) -> Result<ClassificationData, StudyError> {
    let idx = |prefix: &str, part: &str| {
        read_idx(
            dir.join(format!("{prefix}-{part}-images-idx3-ubyte.gz")),
            dir.join(format!("{prefix}-{part}-labels-idx1-ubyte.gz")),
            10,
        )
    };
    let (train, test): (Images, Images) = match name {
        DatasetName::Mnist => (idx("mnist", "train")?.into(), idx("mnist", "t10k")?.into()),
        DatasetName::FashionMnist => (
            idx("fashion", "train")?.into(),
            idx("fashion", "t10k")?.into(),
        ),
        DatasetName::Digits => {
            let all = read_digits_csv(dir.join("sklearn_digits.csv.gz"))?;
            let split = train_test_split(&all, 0.2, seed)?;
            (split.train.into(), split.test.into())
        }
        DatasetName::Cifar10 => (
            read_cifar10(dir, CifarPart::Train)?.into(),
            read_cifar10(dir, CifarPart::Test)?.into(),
        ),
        DatasetName::Cifar100 => (
            read_cifar100(dir, CifarPart::Train, Cifar100Labels::Fine)?.into(),
            read_cifar100(dir, CifarPart::Test, Cifar100Labels::Fine)?.into(),
        ),
        DatasetName::ImageNet | DatasetName::Folder => {
            let (train, test) = open_split_folders(dir)?;
            let names = train.classes.clone();
            // Listed only: the caller draws its subset, then decodes it ([`Images::decoded`]).
            return Ok(ClassificationData {
                train: Images::from_folder(&train, side),
                test: Images::from_folder(&test, side),
                class_names: names,
            });
        }
        other => {
            return Err(invalid(
                "dataset",
                other,
                "is a multi-label hashing list: use it for retrieval (table2, figure3)",
            ));
        }
    };
    let class_names = match name {
        DatasetName::FashionMnist => FASHION.iter().map(|s| s.to_string()).collect(),
        DatasetName::Cifar10 => CIFAR10.iter().map(|s| s.to_string()).collect(),
        _ => (0..train.num_classes()).map(|c| c.to_string()).collect(),
    };
    Ok(ClassificationData {
        train,
        test,
        class_names,
    })
}

/// A retrieval data set: training images, queries and the database they are ranked against.
#[derive(Clone, Debug)]
pub struct RetrievalData {
    /// Training images.
    pub train: Images,
    /// Queries.
    pub query: Images,
    /// Database.
    pub database: Images,
}

/// Reads a retrieval data set. Hashing lists come with their DeepHash split when `data-dir`
/// holds `train.txt`, `test.txt` and `database.txt`, or are split from `all.txt` with `seed`
/// (`queries` queries, `train` training entries from the database). Single-label sets use their
/// test set's first `queries` images as queries and the training set as database; `mosaics`
/// instead turns them into that many 2×2 multi-label mosaics (labels: the union) before the
/// split, so retrieval is scored on label sets as for MS-COCO.
pub fn load_retrieval(
    name: DatasetName,
    dir: &Path,
    side: usize,
    queries: usize,
    train: usize,
    mosaics: Option<usize>,
    seed: u64,
) -> Result<RetrievalData, StudyError> {
    if name == DatasetName::ImageNet100
        && dir.join("train").is_dir()
        && !dir.join("database.txt").exists()
    {
        // ImageNet-style folders: the validation images are the queries, the training images
        // the database, and `train` of them (drawn with `seed`) train the hashing network.
        let database = ImageFolder::open(dir.join("train"))?;
        let val = ImageFolder::open(dir.join("val"))?;
        if database.classes != val.classes {
            return Err(invalid(
                "data-dir",
                dir.display(),
                "train/ and val/ hold different class folders",
            ));
        }
        let database = Images::from_folder(&database, side).decoded(DECODE_BUDGET, true)?;
        return Ok(RetrievalData {
            train: database.stratified(train, subset_seed(seed, "train"))?,
            query: Images::from_folder(&val, side)
                .stratified(queries, subset_seed(seed, "query"))?
                .decoded(DECODE_BUDGET, true)?,
            database,
        });
    }
    if name.is_hashing_list() {
        let classes = name
            .num_classes()
            .expect("hashing lists have a fixed class count");
        let splits = if dir.join("database.txt").exists() {
            read_hashing_splits(dir, classes)?
        } else {
            let all = signsym_data::read_multilabel_list(dir.join("all.txt"), classes)?;
            split_for_hashing(&all, queries, train, seed)?
        };
        let decode = |list| Images::from_list(dir, list, side).decoded(DECODE_BUDGET, true);
        return Ok(RetrievalData {
            train: decode(&splits.train)?,
            query: decode(&splits.query)?,
            database: decode(&splits.database)?,
        });
    }
    let data = load_classification(name, dir, side, seed)?;
    match mosaics {
        None => Ok(RetrievalData {
            train: data.train.stratified(train, subset_seed(seed, "train"))?,
            query: data.test.stratified(queries, subset_seed(seed, "query"))?,
            database: data.train,
        }),
        Some(count) => {
            let as_dataset = |images: &Images| -> Result<ImageDataset, StudyError> {
                let all: Vec<usize> = (0..images.len()).collect();
                let (values, channels, height, width) = images.pixels(&all)?;
                Ok(ImageDataset {
                    images: values,
                    labels: images.classes(&all)?,
                    channels,
                    height,
                    width,
                    num_classes: images.num_classes(),
                })
            };
            let database: Images =
                composite_mosaics(&as_dataset(&data.train)?, count, seed)?.into();
            let query: Images =
                composite_mosaics(&as_dataset(&data.test)?, queries, seed ^ 0x9e37)?.into();
            Ok(RetrievalData {
                train: database.stratified(train, subset_seed(seed, "train"))?,
                query,
                database,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Images {
        ImageDataset {
            images: (0..3 * 4).map(|v| v as f32 / 12.0).collect(),
            labels: vec![2, 0, 1],
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 3,
        }
        .into()
    }

    #[test]
    fn imagenet100_folders_give_queries_database_and_a_seeded_training_draw() {
        let dir = tempfile::tempdir().unwrap();
        for (part, per_class) in [("train", 3), ("val", 2)] {
            for (c, class) in ["n01", "n02"].iter().enumerate() {
                let folder = dir.path().join(part).join(class);
                std::fs::create_dir_all(&folder).unwrap();
                for i in 0..per_class {
                    let shade = (40 * c + 10 * i) as u8;
                    image::RgbImage::from_pixel(6, 4, image::Rgb([shade, shade, shade]))
                        .save(folder.join(format!("{i}.png")))
                        .unwrap();
                }
            }
        }
        let load = |seed| {
            load_retrieval(DatasetName::ImageNet100, dir.path(), 4, 3, 4, None, seed).unwrap()
        };
        let data = load(7);
        assert_eq!(
            (data.database.len(), data.query.len(), data.train.len()),
            (6, 3, 4)
        );
        let Labels::Single(mut queries) = data.query.labels().clone() else {
            panic!("single-label queries")
        };
        queries.sort();
        assert_eq!(queries, vec![0, 0, 1], "a stratified draw of 3 from 2 + 2");
        assert_eq!(data.train.size(), [4, 4]);
        let pixels = InputView {
            channels: 3,
            side: 4,
            normalize: None,
        }
        .pixels(
            &data.query,
            &[data
                .query
                .classes(&[0, 1, 2])
                .unwrap()
                .iter()
                .position(|&c| c == 1)
                .unwrap()],
            &Device::flex(),
        )
        .unwrap()
        .try_to_vec_as::<f32>()
        .unwrap();
        assert!(pixels.iter().all(|&v| (v - 40.0 / 255.0).abs() < 1e-6));
        assert_eq!(load(7).train.labels(), data.train.labels());
        let other = (0..20).any(|s| load(s).train.labels() != data.train.labels());
        assert!(other, "the training draw ignores the seed");
        std::fs::remove_dir_all(dir.path().join("val/n02")).unwrap();
        let err = load_retrieval(DatasetName::ImageNet100, dir.path(), 4, 3, 4, None, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("different class folders"), "{err}");
    }

    /// A folder stored class by class: a prefix of it is one class; the draw keeps proportions.
    #[test]
    fn subsets_of_a_class_sorted_folder_are_stratified_not_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        for (c, class) in ["a", "b", "c"].iter().enumerate() {
            for part in ["train", "val"] {
                let folder = dir.path().join(part).join(class);
                std::fs::create_dir_all(&folder).unwrap();
                for i in 0..(10 + 5 * c) {
                    image::RgbImage::from_pixel(5, 5, image::Rgb([(20 * c + i) as u8; 3]))
                        .save(folder.join(format!("{i:02}.png")))
                        .unwrap();
                }
            }
        }
        let data = load_classification(DatasetName::ImageNet, dir.path(), 4, 0).unwrap();
        assert_eq!(data.train.len(), 45);
        let count = |images: &Images| {
            let mut n = [0usize; 3];
            for c in images
                .classes(&(0..images.len()).collect::<Vec<_>>())
                .unwrap()
            {
                n[c] += 1;
            }
            n
        };
        // 45 images as 10 / 15 / 20: 9 of them are 2 / 3 / 4.
        let draw = data
            .train
            .stratified(9, 3)
            .unwrap()
            .decoded(1 << 20, false)
            .unwrap();
        assert_eq!(count(&draw), [2, 3, 4]);
        assert_eq!(
            count(&data.train.take(9).unwrap()),
            [9, 0, 0],
            "the prefix this replaces"
        );
        // Largest remainders: 10 of 45 are 2.22 / 3.33 / 4.44 → 2 / 3 / 5.
        assert_eq!(count(&data.train.stratified(10, 3).unwrap()), [2, 3, 5]);
        let indices = |seed| data.train.stratified_indices(9, seed);
        assert_eq!(indices(3), indices(3));
        assert!(
            (0..10).any(|s| indices(s) != indices(3)),
            "the draw ignores its seed"
        );
        assert_eq!(
            data.train.stratified_indices(100, 3),
            (0..45).collect::<Vec<_>>()
        );
        assert_eq!(draw.size(), [4, 4]);
    }

    #[test]
    fn names_parse_and_print_back() {
        for name in DatasetName::ALL {
            let parsed: DatasetName = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        assert_eq!(
            "NUS_WIDE".parse::<DatasetName>().unwrap(),
            DatasetName::NusWide
        );
        let err = "svhn".parse::<DatasetName>().unwrap_err().to_string();
        assert!(err.contains("svhn") && err.contains("cifar10"), "{err}");
    }

    #[test]
    fn view_repeats_grey_resizes_and_normalises() {
        let device = Device::flex();
        let images = tiny();
        let view = InputView {
            channels: 3,
            side: 4,
            normalize: Some(IMAGENET_STATS),
        };
        let x = view.pixels(&images, &[1], &device).unwrap();
        assert_eq!(x.dims(), [1, 3, 4, 4]);
        let v = x.clone().try_to_vec_as::<f32>().unwrap();
        // Bilinear with aligned corners keeps the corner pixels: image 1 is 4/12 … 7/12.
        assert!((v[0] - 4.0 / 12.0).abs() < 1e-6 && (v[15] - 7.0 / 12.0).abs() < 1e-6);
        assert_eq!(&v[0..16], &v[16..32], "grey repeated to every channel");
        let n = view.prepare(x).try_to_vec_as::<f32>().unwrap();
        assert!((n[16] - (4.0 / 12.0 - 0.456) / 0.224).abs() < 1e-5);
        let wrong = InputView {
            channels: 2,
            side: 2,
            normalize: None,
        };
        assert!(wrong.pixels(&images, &[0], &device).is_err());
        assert!(view.pixels(&images, &[3], &device).is_err());
    }

    #[test]
    fn labels_as_classes_multi_hot_and_sets() {
        let images = tiny().select(&[2, 0]).unwrap();
        assert_eq!(images.classes(&[0, 1]).unwrap(), vec![1, 2]);
        assert_eq!(images.multi_hot(&[1]).unwrap(), vec![0.0, 0.0, 1.0]);
        let multi: Images = signsym_data::MultiLabelImages {
            images: vec![0.0; 8],
            labels: vec![vec![0, 2], vec![1]],
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 3,
        }
        .into();
        assert_eq!(
            multi.multi_hot(&[0, 1]).unwrap(),
            vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
        );
        assert!(multi.classes(&[0]).is_err());
        let sets = multi.label_sets().unwrap();
        assert!(!sets.shares_label(0, &sets, 1));
    }
}
