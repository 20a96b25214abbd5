//! The regularizer comparison of arXiv 2405.00679: none, L2, Jacobian and spectral penalties
//! in MNIST pre-training, transferred to Fashion-MNIST; clean and robust accuracy next to the
//! representation's Jacobian norm and power-law exponent α, and a log–log plot of the spectra.
//!
//! ```sh
//! cargo run --release --example regularizer_comparison
//! cargo run --release --example regularizer_comparison -- --rules bp --train-examples 2000
//! ```

use clap::Parser;
use signsym::study::regularizer_comparison::{RegularizerArgs, run};

#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    #[command(flatten)]
    args: RegularizerArgs,
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
