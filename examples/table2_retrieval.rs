//! Table 2 of arXiv 2502.05925: mAP@k of HyP² hashing codes (32 bits; k = 5,000, or 1,000 for
//! ImageNet-100) after fine-tuning with each rule.
//!
//! ```sh
//! # bundled data: single-label MNIST-style retrieval (queries from the test set)
//! cargo run --release --example table2_retrieval -- --backbone small-cnn --dataset fashion-mnist \
//!     --epochs 1 --backbone-lr 1e-3 --head-lr 1e-2 --train-examples 12000 --test-examples 1000
//! # the paper's protocol on NUS-WIDE (DeepHash lists in data/nus-wide)
//! cargo run --release --features cuda --example table2_retrieval -- --device cuda \
//!     --backbone alexnet --weights alexnet-owt-7be5be79.pth --dataset nus-wide --epochs 20
//! ```

use clap::Parser;
use signsym::study::paper::{PaperArgs, table2_retrieval};

#[derive(Parser, Debug)]
#[command(about = "Table 2: mAP@k with HyP² and 32-bit codes per rule")]
struct Args {
    #[command(flatten)]
    paper: PaperArgs,
    /// Code length.
    #[arg(long, default_value_t = 32)]
    bits: usize,
    /// Depth k of mAP@k (default: 5,000, or 1,000 for ImageNet-100; at most the database).
    #[arg(long)]
    top_k: Option<usize>,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let stop = signsym::study::stop_on_ctrl_c()?;
    println!(
        "{}",
        table2_retrieval(&args.paper, args.bits, args.top_k, Some(stop))?
    );
    Ok(())
}
