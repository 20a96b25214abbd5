//! Spectral regularization for transfer: MNIST pre-training without, with the hidden-layer
//! and with the end-to-end spectral penalty over a γ grid; a new head on Fashion-MNIST (frozen
//! backbone) and fine-tuning under each rule; clean and robust accuracy against γ, σ_max per
//! layer.
//!
//! ```sh
//! cargo run --release --example spectral_transfer
//! cargo run --release --example spectral_transfer -- --rules bp --train-examples 2000
//! ```

use clap::Parser;
use signsym::study::spectral_transfer::{SpectralArgs, run};

#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    #[command(flatten)]
    args: SpectralArgs,
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let stop = signsym::study::stop_on_ctrl_c()?;
    let started = std::time::Instant::now();
    run(&cli.args, Some(stop))?;
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
