//! BP pre-training of a narrow CIFAR-stem ResNet-18 on MNIST, then fine-tuning on Fashion-MNIST
//! with every rule; each must beat a fixed accuracy on (a part of) the Fashion-MNIST test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use signsym_data::{ImageDataset, read_idx};
use signsym_feedback::FeedbackRule;
use signsym_losses::CrossEntropyConfig;
use signsym_models::{AccuracyEvaluator, FineTuneConfig, Network, Task, fine_tune, pretrain};

fn load(prefix: &str, split: &str, n: usize) -> ImageDataset {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let all = read_idx(
        dir.join(format!("{prefix}-{split}-images-idx3-ubyte.gz")),
        dir.join(format!("{prefix}-{split}-labels-idx1-ubyte.gz")),
        10,
    )
    .unwrap();
    all.select(&(0..n).collect::<Vec<_>>())
}

/// Measured here (2-core Xeon, test profile; 1,000 test images): BP 0.579, uSF 0.526,
/// frSF 0.493, brSF 0.507, FA 0.326 after one epoch on 1,500 images (47 steps); chance is 0.1.
/// (With the initial weights drawn before the initialisation became eager: BP 0.523 … FA 0.386:
/// FA moves most with the draw.) The run is seeded, so the numbers repeat on one machine; the
/// margin covers other CPUs' summation orders and FA's spread.
const THRESHOLD: f64 = 0.25;

#[test]
fn mnist_pretrained_resnet_fine_tunes_on_fashion_mnist_under_every_rule() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    device.seed(0);
    let mnist = load("mnist", "train", 2000);
    let fashion_train = load("fashion", "train", 1500);
    let fashion_test = load("fashion", "t10k", 1000);

    let net = crate::training::narrow_mnist_resnet(&device);
    let ce = CrossEntropyConfig::new().init(&device).unwrap();
    let started = Instant::now();
    let pre_config = FineTuneConfig::pretraining(1e-2)
        .with_recalibrate_batches(10)
        .with_epochs(1)
        .with_batch_size(32)
        .with_progress(false);
    let mnist_test = load("mnist", "t10k", 500);
    let mut mnist_eval = AccuracyEvaluator::new(&mnist_test, 250);
    let pre = pretrain(
        net,
        ce.clone(),
        &mnist,
        Some(&mut mnist_eval),
        &pre_config,
        None,
    )
    .unwrap();
    let mnist_acc = pre.history[0].metric.unwrap();
    println!(
        "BP pre-training on MNIST: test accuracy {mnist_acc:.4} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(mnist_acc > 0.75, "{mnist_acc}");

    for rule in FeedbackRule::ALL {
        // A new head for the new task, as in the paper; everything trains.
        let tuned_net = Network::new(
            pre.network.backbone.clone(),
            Task::classification(10),
            &device,
        )
        .unwrap();
        let config = FineTuneConfig::new()
            .with_backbone_lr(1e-3)
            .with_head_lr(3e-2)
            .with_recalibrate_batches(10)
            .with_epochs(1)
            .with_batch_size(32)
            .with_rule(Some(rule))
            .with_seed(1)
            .with_progress(false);
        let mut eval = AccuracyEvaluator::new(&fashion_test, 250);
        let tuned = fine_tune(
            tuned_net,
            ce.clone(),
            &fashion_train,
            Some(&mut eval),
            &config,
            None,
        )
        .unwrap();
        let acc = tuned.history.last().unwrap().metric.unwrap();
        println!(
            "{rule:?}: Fashion-MNIST accuracy {acc:.4} after {} epochs ({:.1} s/epoch)",
            tuned.history.len(),
            tuned.history.iter().map(|e| e.seconds).sum::<f64>() / tuned.history.len() as f64
        );
        assert!(acc > THRESHOLD, "{rule:?}: {acc}");
    }
}
