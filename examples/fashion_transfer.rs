//! Pre-trains a ResNet-18 with the CIFAR stem on MNIST with BP, then fine-tunes a copy on
//! Fashion-MNIST under each rule (new head, all layers trained), printing test accuracy and time
//! per epoch. Every run checkpoints under `--out`; Ctrl-C stops after the current step and a rerun
//! with the same arguments resumes where it stopped.
//!
//! ```sh
//! cargo run --release --example fashion_transfer
//! cargo run --release --example fashion_transfer -- --widths 64,128,256,512 --rules bp,usf
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use clap::Parser;
use signsym::data::{ImageDataset, read_idx};
use signsym::feedback::FeedbackRule;
use signsym::losses::CrossEntropyConfig;
use signsym::models::{
    AccuracyEvaluator, FineTuneConfig, ModelError, Network, ResNetConfig, Task, fine_tune, pretrain,
};

#[derive(Parser, Debug)]
#[command(about = "MNIST → Fashion-MNIST transfer with each feedback rule")]
struct Args {
    /// Comma-separated rules among bp, usf, frsf, brsf, fa.
    #[arg(long, default_value = "bp,usf,frsf,brsf,fa", value_delimiter = ',')]
    rules: Vec<FeedbackRule>,
    /// Channels of the four ResNet stages (torchvision's: 64,128,256,512).
    #[arg(long, default_value = "16,32,32,64", value_delimiter = ',')]
    widths: Vec<usize>,
    /// MNIST training images used for pre-training (of 60,000).
    #[arg(long, default_value_t = 10_000)]
    pretrain_examples: usize,
    /// Fashion-MNIST training images used for fine-tuning (of 60,000).
    #[arg(long, default_value_t = 10_000)]
    train_examples: usize,
    /// Test images scored after each epoch (of 10,000).
    #[arg(long, default_value_t = 2_000)]
    test_examples: usize,
    /// Pre-training epochs.
    #[arg(long, default_value_t = 1)]
    pretrain_epochs: usize,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Pre-training learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pretrain_lr: f64,
    /// Fine-tuning learning rate of the backbone.
    #[arg(long, default_value_t = 1e-3)]
    backbone_lr: f64,
    /// Fine-tuning learning rate of the new head.
    #[arg(long, default_value_t = 1e-2)]
    head_lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Batches used to re-estimate batch-norm statistics before each evaluation.
    #[arg(long, default_value_t = 20)]
    recalibrate: usize,
    /// Seed of initialisation, shuffling and feedback draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The directory holding the IDX files.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Checkpoints go to `<out>/pretrain` and `<out>/<rule>`.
    #[arg(long, default_value = "out/fashion_transfer")]
    out: PathBuf,
}

fn load(
    args: &Args,
    name: &str,
    split: &str,
    n: usize,
) -> Result<ImageDataset, Box<dyn std::error::Error>> {
    let set = read_idx(
        args.data
            .join(format!("{name}-{split}-images-idx3-ubyte.gz")),
        args.data
            .join(format!("{name}-{split}-labels-idx1-ubyte.gz")),
        10,
    )?;
    let n = n.min(set.len());
    Ok(set.select(&(0..n).collect::<Vec<_>>()))
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let widths: [usize; 4] = args
        .widths
        .clone()
        .try_into()
        .map_err(|w| format!("--widths needs four values, got {w:?}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        eprintln!("\nstopping after this step; rerun to resume");
        flag.store(true, Ordering::SeqCst);
    })?;

    let device = Device::flex().autodiff();
    device.seed(args.seed);
    let mnist = load(&args, "mnist", "train", args.pretrain_examples)?;
    let mnist_test = load(&args, "mnist", "t10k", args.test_examples)?;
    let fashion = load(&args, "fashion", "train", args.train_examples)?;
    let fashion_test = load(&args, "fashion", "t10k", args.test_examples)?;

    let backbone = ResNetConfig::resnet18()
        .with_widths(widths)
        .with_cifar_stem(true)
        .with_in_channels(1)
        .init(&device)?;
    let net = Network::new(backbone, Task::classification(10), &device)?;
    let ce = CrossEntropyConfig::new().init(&device)?;
    let interrupted = |e: ModelError| -> Box<dyn std::error::Error> {
        match e {
            ModelError::Interrupted { .. } => {
                format!("{e}; checkpoints are in {}", args.out.display()).into()
            }
            other => other.into(),
        }
    };

    println!(
        "BP pre-training on {} MNIST images, widths {widths:?}",
        mnist.len()
    );
    let config = FineTuneConfig::pretraining(args.pretrain_lr)
        .with_epochs(args.pretrain_epochs)
        .with_batch_size(args.batch_size)
        .with_recalibrate_batches(args.recalibrate)
        .with_seed(args.seed)
        .with_checkpoint_dir(Some(args.out.join("pretrain")));
    let mut eval = AccuracyEvaluator::new(&mnist_test, 250);
    let pre = pretrain(
        net,
        ce.clone(),
        &mnist,
        Some(&mut eval),
        &config,
        Some(stop.clone()),
    )
    .map_err(interrupted)?;
    report("bp (pre-training, MNIST)", &pre.history);

    println!("\nfine-tuning on {} Fashion-MNIST images", fashion.len());
    for &rule in &args.rules {
        let net = Network::new(
            pre.network.duplicate().backbone,
            Task::classification(10),
            &device,
        )?;
        let config = FineTuneConfig::new()
            .with_rule(Some(rule))
            .with_backbone_lr(args.backbone_lr)
            .with_head_lr(args.head_lr)
            .with_epochs(args.epochs)
            .with_batch_size(args.batch_size)
            .with_recalibrate_batches(args.recalibrate)
            .with_seed(args.seed)
            .with_checkpoint_dir(Some(args.out.join(rule.to_string())));
        let mut eval = AccuracyEvaluator::new(&fashion_test, 250);
        let tuned = fine_tune(
            net,
            ce.clone(),
            &fashion,
            Some(&mut eval),
            &config,
            Some(stop.clone()),
        )
        .map_err(interrupted)?;
        report(&rule.to_string(), &tuned.history);
    }
    Ok(())
}

fn report(what: &str, history: &[signsym::models::EpochStats]) {
    for e in history {
        println!(
            "{what:>26}  epoch {}  loss {:.4}  test accuracy {:.4}  {:.1} s",
            e.epoch + 1,
            e.train_loss,
            e.metric.unwrap_or(f64::NAN),
            e.seconds
        );
    }
}
