//! Figure 2 of arXiv 2502.05925: FGSM and PGD (5 steps of ε/3) robust accuracy against ε for
//! each rule, under the model's own feedback gradient and the exact gradient of the same
//! weights (and, on request, a transfer gradient from the BP fine-tuned model).
//!
//! ```sh
//! cargo run --release --example figure2_classification_robustness -- --backbone small-cnn \
//!     --dataset fashion-mnist --epochs 1 --backbone-lr 1e-3 --head-lr 1e-2 \
//!     --train-examples 12000 --test-examples 500 --epsilons 0,0.01,0.05,0.1,0.2
//! ```

use clap::Parser;
use signsym::attacks::PAPER_EPSILONS;
use signsym::study::paper::{
    AutoAttackSubset, PaperArgs, RobustnessArgs, ShardArgs, SourceChoice,
    figure2_classification_robustness,
};

#[derive(Parser, Debug)]
#[command(about = "Figure 2: FGSM and PGD robust accuracy against ε per rule and gradient source")]
struct Args {
    #[command(flatten)]
    paper: PaperArgs,
    #[command(flatten)]
    sharding: ShardArgs,
    /// L∞ budgets (default: the paper's 0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5).
    #[arg(long, value_delimiter = ',')]
    epsilons: Option<Vec<f64>>,
    /// Gradient sources.
    #[arg(
        long,
        value_enum,
        default_value = "feedback,exact",
        value_delimiter = ','
    )]
    sources: Vec<SourceChoice>,
    /// PGD steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Test images attacked with a reduced AutoAttack (exact gradient; 0 skips it).
    #[arg(long, default_value_t = 50)]
    autoattack_examples: usize,
    /// AutoAttack's APGD iterations (the reference suite: 100).
    #[arg(long, default_value_t = 20)]
    autoattack_steps: usize,
    /// AutoAttack's Square queries per image (the reference suite: 5,000).
    #[arg(long, default_value_t = 500)]
    autoattack_queries: usize,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    // The paper attacks 5,000 test images.
    args.paper.test_examples.get_or_insert(5000);
    let attacks = RobustnessArgs {
        epsilons: args.epsilons.unwrap_or_else(|| PAPER_EPSILONS.to_vec()),
        sources: args.sources,
        steps: args.steps,
        autoattack: Some(AutoAttackSubset {
            examples: args.autoattack_examples,
            steps: args.autoattack_steps,
            queries: args.autoattack_queries,
            ..AutoAttackSubset::default()
        }),
        ..RobustnessArgs::paper()
    }
    .with_sharding(args.sharding);
    let stop = signsym::study::stop_on_ctrl_c()?;
    println!(
        "{}",
        figure2_classification_robustness(&args.paper, &attacks, Some(stop))?
    );
    Ok(())
}
