#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod adam;
pub mod alexnet;
mod backbone;
mod build;
mod checkpoint;
mod dropout;
mod error;
mod head;
mod network;
mod norm;
mod pool;
pub mod pretrained;
pub mod resnet;
pub mod small_cnn;
mod term;
mod train;
pub mod vgg;

pub use adam::{FusedAdam, FusedAdamConfig};
pub use alexnet::{AlexNet, AlexNetConfig};
pub use backbone::{Backbone, eval_mode, train_mode};
pub use checkpoint::{EpochStats, TermStats, atomic_write, file_crc32, verify_crc32};
pub use error::ModelError;
pub use head::{Head, Task};
pub use network::{Network, materialize};
pub use pretrained::{
    LoadReport, LoadScope, TorchvisionParam, TorchvisionWeights, torchvision_layout,
};
pub use resnet::{BasicBlock, Downsample, ResNet, ResNetConfig};
pub use small_cnn::{SmallCnn, SmallCnnConfig};
pub use term::{JacobianTerm, L2Term, SpectralLayers, SpectralTerm, Step, Term};
pub use train::{
    AccuracyEvaluator, BatchSource, Evaluator, FineTuneConfig, FineTuned, Objective, Trainee,
    accuracy, fine_tune, fine_tune_with, pretrain, recalibrate_batch_norm, validate_classes,
};
pub use vgg::{Vgg16, Vgg16Config};
