//! The quick-start study on scikit-learn's 8×8 digits: a small MLP and a small CNN built from
//! feedback layers, trained from scratch under each rule.
//!
//! This is what the `digits_rules` example and the learning tests run; the full pipeline of the
//! paper (pre-training with BP, fine-tuning with each rule, attacks) builds on the same pieces.

use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{PaddingConfig2d, Relu};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::data::ImageDataset;
use crate::feedback::layers::{
    FeedbackConv2d, FeedbackConv2dConfig, FeedbackLinear, FeedbackLinearConfig,
};
use crate::feedback::{FeedbackError, FeedbackModule, FeedbackRule, feedback_module, set_rule};
use crate::models::FusedAdamConfig;

/// A classifier of `[batch, 1, 8, 8]` images into 10 logits.
pub trait DigitsClassifier: Module + FeedbackModule {
    /// Logits `[batch, 10]`.
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;
}

/// A two-layer perceptron, 64 → `hidden` → 10.
#[derive(Module, Debug)]
pub struct DigitsMlp {
    /// Hidden layer.
    pub fc1: FeedbackLinear,
    /// Output layer.
    pub fc2: FeedbackLinear,
    act: Relu,
}
feedback_module!(DigitsMlp { fc1, fc2 });

impl DigitsMlp {
    /// A new MLP with BP layers.
    pub fn new(hidden: usize, device: &Device) -> Self {
        Self {
            fc1: FeedbackLinearConfig::new(64, hidden).init(device),
            fc2: FeedbackLinearConfig::new(hidden, 10).init(device),
            act: Relu::new(),
        }
    }
}

impl DigitsClassifier for DigitsMlp {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = images.flatten::<2>(1, 3);
        self.fc2.forward(self.act.forward(self.fc1.forward(x)))
    }
}

/// Two 3×3 convolutions (the second with stride 2) and a linear read-out.
#[derive(Module, Debug)]
pub struct DigitsCnn {
    /// 1 → `width` channels, 8×8.
    pub conv1: FeedbackConv2d,
    /// `width` → 2·`width` channels, 4×4.
    pub conv2: FeedbackConv2d,
    /// Read-out to 10 classes.
    pub fc: FeedbackLinear,
    act: Relu,
}
feedback_module!(DigitsCnn { conv1, conv2, fc });

impl DigitsCnn {
    /// A new CNN with BP layers.
    pub fn new(width: usize, device: &Device) -> Self {
        Self {
            conv1: FeedbackConv2dConfig::new([1, width], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            conv2: FeedbackConv2dConfig::new([width, 2 * width], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            fc: FeedbackLinearConfig::new(2 * width * 16, 10).init(device),
            act: Relu::new(),
        }
    }
}

impl DigitsClassifier for DigitsCnn {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let h = self.act.forward(self.conv1.forward(images));
        let h = self.act.forward(self.conv2.forward(h));
        self.fc.forward(h.flatten::<2>(1, 3))
    }
}

/// Training settings for the digits study.
#[derive(Config, Debug)]
pub struct DigitsTrainingConfig {
    /// Passes over the training set.
    #[config(default = 20)]
    pub epochs: usize,
    /// Images per step.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Adam learning rate (training from scratch, so larger than the paper's fine-tuning rates).
    #[config(default = 3e-3)]
    pub learning_rate: f64,
    /// Adam's L2 weight decay, as in the paper.
    #[config(default = 5e-4)]
    pub weight_decay: f32,
    /// Seed of the initialisation, the fixed feedback tensors, the shuffling and brSF's draws.
    #[config(default = 0)]
    pub seed: u64,
}

/// What one training run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitsReport {
    /// The rule trained with.
    pub rule: FeedbackRule,
    /// Top-1 accuracy on the held-out set.
    pub test_accuracy: f64,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// The images of `data` as a `[n, channels, height, width]` tensor and the labels.
pub fn to_tensors(data: &ImageDataset, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let images = Tensor::from_data(
        TensorData::new(
            data.images.clone(),
            [data.len(), data.channels, data.height, data.width],
        ),
        device,
    );
    let labels: Vec<i64> = data.labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [data.len()]), device);
    (images, labels)
}

/// Top-1 accuracy of `model` on `data`, in batches of 256 (signsym-metrics' `TopKAccuracy`).
pub fn accuracy<M: DigitsClassifier>(model: &M, data: &ImageDataset, device: &Device) -> f64 {
    let (images, labels) = to_tensors(data, device);
    let mut top1 = signsym_metrics::TopKAccuracy::new(&[1]).expect("k = 1 is valid");
    let n = data.len();
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let logits = model.forward(images.clone().slice(start..end));
        // The logits of a finite model on finite data: the update only fails on NaN logits,
        // which count as wrong here as argmax would make them.
        if top1
            .update(logits, labels.clone().slice(start..end))
            .is_err()
        {
            return f64::NAN;
        }
    }
    top1.accuracy(1).unwrap_or(0.0)
}

/// Trains `model` under `rule` on `train` (all layers, Adam with weight decay) and reports the
/// accuracy on `test`. Deterministic for a seed on the CPU backend.
pub fn train_digits<M: DigitsClassifier>(
    mut model: M,
    rule: FeedbackRule,
    train: &ImageDataset,
    test: &ImageDataset,
    config: &DigitsTrainingConfig,
    device: &Device,
) -> Result<(M, DigitsReport), FeedbackError> {
    set_rule(&mut model, rule, config.seed)?;
    let start = Instant::now();
    let mut optim = FusedAdamConfig::new()
        .with_weight_decay(Some(config.weight_decay))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (images, labels) = to_tensors(train, device);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut final_loss = 0.0;
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        let (mut total, mut batches) = (0.0, 0);
        for chunk in order.chunks(config.batch_size) {
            let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [chunk.len()]), device);
            let x = images.clone().select(0, idx.clone());
            let y = labels.clone().select(0, idx);
            let loss = loss_fn.forward(model.forward(x), y);
            total += f64::from(loss.clone().into_scalar::<f32>());
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.learning_rate, model, grads);
        }
        final_loss = total / batches as f64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let test_accuracy = accuracy(&model.valid(), test, &device.clone().inner());
    Ok((
        model,
        DigitsReport {
            rule,
            test_accuracy,
            final_loss,
            seconds,
        },
    ))
}
