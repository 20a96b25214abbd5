//! Our AutoAttack beside torchattacks': trains the main job's small CNN (BP pre-training on
//! MNIST, then a BP and a uSF fine-tuned copy on Fashion-MNIST, smaller sizes), exports both as
//! safetensors with the attacked test images, and runs APGD-CE, APGD-T, Square and AutoAttack
//! (standard, L∞) under the exact and the feedback gradient. `scripts/crosscheck_autoattack.py`
//! then loads the same weights into PyTorch, runs torchattacks on the same images and budgets,
//! and prints both sides with their difference.
//!
//! ```sh
//! cargo run --release --example crosscheck_autoattack -- --out out/crosscheck
//! python scripts/crosscheck_autoattack.py out/crosscheck
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use signsym::attacks::{
    ApgdConfig, AutoAttackConfig, BoundedAttack, GradientSource, Norm, RobustnessSuite,
    SquareConfig, attack_mode,
};
use signsym::feedback::FeedbackRule;
use signsym::losses::CrossEntropyConfig;
use signsym::models::{FineTuneConfig, Network, SmallCnnConfig, Task, fine_tune};
use signsym::study::{
    ClassBatches, DatasetName, InputView, load_classification, subset_seed, write_atomic,
    write_json,
};

#[derive(Parser, Debug)]
#[command(
    about = "Export a BP and a uSF small CNN and attack them, for the torchattacks cross-check"
)]
struct Args {
    /// Output directory (weights, images, our numbers).
    #[arg(long, default_value = "out/crosscheck")]
    out: PathBuf,
    /// Fashion-MNIST test images attacked.
    #[arg(long, default_value_t = 200)]
    examples: usize,
    /// L∞ budgets, comma-separated.
    #[arg(long, default_value = "0.03,0.06,0.1", value_delimiter = ',')]
    epsilons: Vec<f64>,
    /// APGD iterations.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Square's queries.
    #[arg(long, default_value_t = 5000)]
    square_queries: usize,
    /// Training images (MNIST pre-training and each fine-tuning).
    #[arg(long, default_value_t = 6000)]
    train_examples: usize,
    /// Directory with the bundled IDX files.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(serde::Serialize)]
struct Row {
    rule: FeedbackRule,
    attack: String,
    source: String,
    epsilon: f64,
    robust_accuracy: f64,
    samples: usize,
    seconds: f64,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = signsym::study::DeviceChoice::Cpu.device()?;
    let view = InputView {
        channels: 1,
        side: 28,
        normalize: None,
    };
    let mnist = load_classification(DatasetName::Mnist, &args.data_dir, 28, 0)?;
    let fashion = load_classification(DatasetName::FashionMnist, &args.data_dir, 28, 0)?;
    let ce = CrossEntropyConfig::new().init(&device)?;
    device.seed(0);
    let backbone = SmallCnnConfig::new().init(&device)?;
    let start = Network::new(backbone, Task::classification(10), &device)?;
    let pre = FineTuneConfig::pretraining(2e-3)
        .with_epochs(1)
        .with_progress(!args.quiet);
    let mnist_train = mnist
        .train
        .stratified(args.train_examples, subset_seed(0, "pretrain"))?;
    let start = fine_tune(
        start,
        ce.clone(),
        &ClassBatches {
            images: &mnist_train,
            view: &view,
        },
        None,
        &pre,
        None,
    )?
    .network;

    let test = fashion
        .test
        .stratified(args.examples, subset_seed(0, "test"))?;
    let all: Vec<usize> = (0..test.len()).collect();
    let images = view.pixels(&test, &all, &device)?;
    let labels = test.classes(&all)?;
    std::fs::create_dir_all(&args.out)?;
    let pixels: Vec<u8> = images
        .clone()
        .try_to_vec_as::<f32>()
        .map_err(|e| format!("{e:?}"))?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_atomic(&args.out.join("images.f32"), &pixels)?;
    write_json(&args.out.join("labels.json"), &labels)?;

    let train = fashion
        .train
        .stratified(args.train_examples, subset_seed(0, "train"))?;
    let apgd_ce = ApgdConfig::ce().with_steps(args.steps).init()?;
    let apgd_t = ApgdConfig::targeted().with_steps(args.steps).init()?;
    let square = SquareConfig::new()
        .with_queries(args.square_queries)
        .init()?;
    let aa = AutoAttackConfig::new()
        .with_steps(args.steps)
        .with_square_queries(args.square_queries)
        .init()?;
    let mut rows = Vec::new();
    for rule in [FeedbackRule::Bp, FeedbackRule::USf] {
        device.seed(0x5eed);
        let net = Network::new(
            start.duplicate().backbone,
            Task::classification(10),
            &device,
        )?;
        let config = FineTuneConfig::new()
            .with_rule(Some(rule))
            .with_backbone_lr(1e-3)
            .with_head_lr(1e-2)
            .with_epochs(1)
            .with_progress(!args.quiet);
        let tuned = fine_tune(
            net,
            ce.clone(),
            &ClassBatches {
                images: &train,
                view: &view,
            },
            None,
            &config,
            None,
        )?
        .network;
        tuned.save_safetensors(args.out.join(format!("{rule}.safetensors")))?;
        let model = attack_mode(tuned);
        let epsilons: Vec<f64> = std::iter::once(0.0)
            .chain(args.epsilons.iter().copied())
            .collect();
        for source in [GradientSource::Exact, GradientSource::Feedback] {
            let attacks: [&dyn BoundedAttack; 3] = [&apgd_ce, &apgd_t, &square];
            for attack in attacks {
                if !attack.needs_gradient() && matches!(source, GradientSource::Feedback) {
                    continue;
                }
                let started = Instant::now();
                let report = RobustnessSuite::new(Norm::Linf, epsilons.clone())?
                    .attack(attack, source)
                    .with_batch_size(250)
                    .run(&model, &images, &labels)?;
                let seconds = started.elapsed().as_secs_f64();
                for p in &report.entries[0].curve.points {
                    rows.push(Row {
                        rule,
                        attack: attack.name(),
                        source: report.entries[0].source.to_string(),
                        epsilon: p.epsilon,
                        robust_accuracy: p.value,
                        samples: p.samples,
                        seconds,
                    });
                }
            }
            let started = Instant::now();
            let report = aa.run(&model, &images, &labels, &epsilons, &source)?;
            let seconds = started.elapsed().as_secs_f64();
            for p in &report.curve.points {
                rows.push(Row {
                    rule,
                    attack: aa.name(),
                    source: report.source.to_string(),
                    epsilon: p.epsilon,
                    robust_accuracy: p.value,
                    samples: p.samples,
                    seconds,
                });
            }
            for flag in &report.flags {
                println!("{rule} / {}: {flag}", source.name());
            }
            println!(
                "{rule} / {}: AutoAttack {:?} in {seconds:.1} s",
                source.name(),
                report
                    .curve
                    .points
                    .iter()
                    .map(|p| p.value)
                    .collect::<Vec<_>>()
            );
        }
    }
    write_json(&args.out.join("ours.json"), &rows)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
