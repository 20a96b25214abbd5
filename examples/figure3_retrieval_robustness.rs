//! Figure 3 of arXiv 2502.05925: HAG and SDHA robust mAP@k against ε for each rule's HyP²
//! hashing network, under the feedback and the exact gradient.
//!
//! ```sh
//! cargo run --release --example figure3_retrieval_robustness -- --backbone small-cnn \
//!     --dataset mnist --epochs 1 --backbone-lr 1e-3 --head-lr 1e-2 --train-examples 12000 \
//!     --test-examples 200 --database-examples 5000 --epsilons 0,0.05,0.1,0.2
//! ```

use clap::Parser;
use signsym::attacks::PAPER_EPSILONS;
use signsym::study::paper::{
    PaperArgs, RobustnessArgs, ShardArgs, SourceChoice, figure3_retrieval_robustness,
};

#[derive(Parser, Debug)]
#[command(about = "Figure 3: HAG and SDHA robust mAP@k against ε per rule and gradient source")]
struct Args {
    #[command(flatten)]
    paper: PaperArgs,
    #[command(flatten)]
    sharding: ShardArgs,
    /// Code length.
    #[arg(long, default_value_t = 32)]
    bits: usize,
    /// Depth k of mAP@k (default: 5,000, or 1,000 for ImageNet-100; at most the database).
    #[arg(long)]
    top_k: Option<usize>,
    /// L∞ budgets (default: the paper's grid).
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
    /// HAG/SDHA steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let attacks = RobustnessArgs {
        epsilons: args.epsilons.unwrap_or_else(|| PAPER_EPSILONS.to_vec()),
        sources: args.sources,
        steps: args.steps,
        ..RobustnessArgs::paper()
    }
    .with_sharding(args.sharding);
    let stop = signsym::study::stop_on_ctrl_c()?;
    let text =
        figure3_retrieval_robustness(&args.paper, &attacks, args.bits, args.top_k, Some(stop))?;
    println!("{text}");
    Ok(())
}
