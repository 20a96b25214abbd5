//! The main job: BP pre-training of a small CNN on MNIST, fine-tuning of a copy under each rule
//! (BP, uSF, frSF, brSF, FA) on Fashion-MNIST, clean accuracy on the full test set, FGSM and PGD
//! robust accuracy over an ε grid under the feedback and the exact gradient, and HopSkipJump on
//! a subset. Writes a table, CSV, JSON and SVG/PNG plots under `--out` (printed at the end).
//! Ctrl-C stops cleanly; rerunning the same command resumes.
//!
//! ```sh
//! cargo run --release --example robust_finetune
//! cargo run --release --example robust_finetune -- --rules bp,usf --attack-examples 100
//! # Across machines: each runs one shard of the attacked images into a copy of one --out
//! # (copy it after the first shard has trained, and the others load its checkpoints), then
//! # the shards' rules/*.shard-*.json are gathered into one --out and merged.
//! cargo run --release --example robust_finetune -- --shard 1/2 --out run
//! cargo run --release --example robust_finetune -- --shard 2/2 --out run
//! cargo run --release --example robust_finetune -- --merge --out run
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use signsym::feedback::FeedbackRule;
use signsym::study::robust_finetune::{Outputs, RobustFinetuneConfig, merge, run, run_shard};
use signsym::study::{DeviceChoice, Shard};

#[derive(Parser, Debug)]
#[command(about = "The robust fine-tuning study at small scale on the bundled data")]
struct Args {
    /// Comma-separated rules among bp, usf, frsf, brsf, fa.
    #[arg(long, default_value = "bp,usf,frsf,brsf,fa", value_delimiter = ',')]
    rules: Vec<FeedbackRule>,
    /// MNIST images for BP pre-training.
    #[arg(long, default_value_t = 12_000)]
    pretrain_examples: usize,
    /// Fashion-MNIST images for fine-tuning.
    #[arg(long, default_value_t = 12_000)]
    train_examples: usize,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Backbone learning rate of fine-tuning.
    #[arg(long, default_value_t = 1e-3)]
    backbone_lr: f64,
    /// Head learning rate of fine-tuning.
    #[arg(long, default_value_t = 1e-2)]
    head_lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Fashion-MNIST test images for clean accuracy.
    #[arg(long, default_value_t = 10_000)]
    test_examples: usize,
    /// Test images attacked with FGSM and PGD.
    #[arg(long, default_value_t = 250)]
    attack_examples: usize,
    /// L∞ budgets, comma-separated and increasing.
    #[arg(long, default_value = "0,0.02,0.05,0.1,0.2,0.3", value_delimiter = ',')]
    epsilons: Vec<f64>,
    /// Images per attack batch, also the unit of `--shard`.
    #[arg(long, default_value_t = 64)]
    attack_batch: usize,
    /// Attack only part I of N of the attacked images (train and score as usual); `--merge`
    /// joins the N parts.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Join the shards found in `--out` (its settings.json decides the settings) into the
    /// tables, CSV, JSON and plots of the unsharded run.
    #[arg(long, conflicts_with = "shard")]
    merge: bool,
    /// Test images attacked with HopSkipJump (0 skips it).
    #[arg(long, default_value_t = 20)]
    hsj_examples: usize,
    /// HopSkipJump's query budget per image.
    #[arg(long, default_value_t = 1000)]
    hsj_queries: usize,
    /// Test images attacked with AutoAttack, exact gradient (0 skips it).
    #[arg(long, default_value_t = 50)]
    autoattack_examples: usize,
    /// AutoAttack's APGD iterations (the reference suite: 100).
    #[arg(long, default_value_t = 20)]
    autoattack_steps: usize,
    /// AutoAttack's APGD-T runner-up classes (the reference suite: 9).
    #[arg(long, default_value_t = 3)]
    autoattack_targets: usize,
    /// AutoAttack's Square queries per image (the reference suite: 5,000).
    #[arg(long, default_value_t = 500)]
    autoattack_queries: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory with the bundled IDX files.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// `cpu`, `wgpu` or `cuda` (the last two need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Output directory.
    #[arg(long, default_value = "out/robust_finetune")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let stop = signsym::study::stop_on_ctrl_c()?;
    let config = RobustFinetuneConfig::new()
        .with_rules(args.rules)
        .with_pretrain_examples(args.pretrain_examples)
        .with_train_examples(args.train_examples)
        .with_epochs(args.epochs)
        .with_backbone_lr(args.backbone_lr)
        .with_head_lr(args.head_lr)
        .with_batch_size(args.batch_size)
        .with_test_examples(args.test_examples)
        .with_attack_examples(args.attack_examples)
        .with_epsilons(args.epsilons)
        .with_attack_batch(args.attack_batch)
        .with_hsj_examples(args.hsj_examples)
        .with_hsj_queries(args.hsj_queries)
        .with_autoattack_examples(args.autoattack_examples)
        .with_autoattack_steps(args.autoattack_steps)
        .with_autoattack_targets(args.autoattack_targets)
        .with_autoattack_queries(args.autoattack_queries)
        .with_seed(args.seed)
        .with_data_dir(args.data_dir)
        .with_device(args.device)
        .with_out(args.out.clone())
        .with_progress(!args.quiet);
    let started = Instant::now();
    let outputs: Outputs = if args.merge {
        merge(&args.out)?.1
    } else if let Some(shard) = args.shard {
        let parts = run_shard(&config, shard, Some(stop))?;
        println!(
            "shard {shard} done in {:.0} s: {} rule files in {}; merge with --merge --out {} \
             once every shard's rules/<rule>.shard-I-of-{}.json is there",
            started.elapsed().as_secs_f64(),
            parts.len(),
            args.out.join("rules").display(),
            args.out.display(),
            shard.count()
        );
        return Ok(());
    } else {
        run(&config, Some(stop))?.1
    };
    println!(
        "done in {:.0} s; outputs in {}: {}, {}, {}, {}, {}",
        started.elapsed().as_secs_f64(),
        args.out.display(),
        outputs.csv.display(),
        outputs.json.display(),
        outputs.plots[0].display(),
        outputs.plots[1].display(),
        outputs.summary.display()
    );
    Ok(())
}
