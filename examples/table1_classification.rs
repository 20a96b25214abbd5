//! Table 1 of arXiv 2502.05925: top-1 accuracy after fine-tuning with each rule. One backbone
//! and data set per run; runs into the same `--out` build up the table.
//!
//! ```sh
//! # bundled data, no downloads (a small CNN pre-trained here with BP on MNIST)
//! cargo run --release --example table1_classification -- --backbone small-cnn \
//!     --dataset fashion-mnist --epochs 1 --backbone-lr 1e-3 --head-lr 1e-2 --train-examples 12000
//! # the paper's protocol (see docs/reproducing.md)
//! cargo run --release --features cuda --example table1_classification -- --device cuda \
//!     --backbone resnet18 --weights resnet18-f37072fd.pth --dataset cifar10 \
//!     --data-dir data/cifar-10-batches-bin --image-size 224 --epochs 10
//! ```

use clap::Parser;
use signsym::study::paper::{PaperArgs, table1_classification};

#[derive(Parser, Debug)]
#[command(about = "Table 1: top-1 accuracy per backbone × data set × rule")]
struct Args {
    #[command(flatten)]
    paper: PaperArgs,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let stop = signsym::study::stop_on_ctrl_c()?;
    println!("{}", table1_classification(&args.paper, Some(stop))?);
    Ok(())
}
