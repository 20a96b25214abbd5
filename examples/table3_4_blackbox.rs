//! Tables 3 and 4 of arXiv 2502.05925: robust accuracy under the decision-based HopSkipJump and
//! Boundary Attack (L2; no gradient, so the rule cannot hide anything from them).
//!
//! ```sh
//! cargo run --release --example table3_4_blackbox -- --backbone small-cnn --dataset fashion-mnist \
//!     --epochs 1 --backbone-lr 1e-3 --head-lr 1e-2 --train-examples 12000 --test-examples 50 \
//!     --queries 2000
//! ```

use clap::Parser;
use signsym::study::paper::{PaperArgs, RobustnessArgs, ShardArgs, table3_4_blackbox};

#[derive(Parser, Debug)]
#[command(about = "Tables 3–4: HopSkipJump and Boundary Attack robust accuracy per rule")]
struct Args {
    #[command(flatten)]
    paper: PaperArgs,
    #[command(flatten)]
    sharding: ShardArgs,
    /// L2 budgets.
    #[arg(long, default_value = "0,0.5,1,2,4", value_delimiter = ',')]
    epsilons: Vec<f64>,
    /// Query budget per image.
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    // Decision-based attacks cost thousands of queries per image: 500 images unless told.
    args.paper.test_examples.get_or_insert(500);
    let attacks = RobustnessArgs {
        epsilons: args.epsilons,
        queries: args.queries,
        ..RobustnessArgs::paper()
    }
    .with_sharding(args.sharding);
    let stop = signsym::study::stop_on_ctrl_c()?;
    println!("{}", table3_4_blackbox(&args.paper, &attacks, Some(stop))?);
    Ok(())
}
