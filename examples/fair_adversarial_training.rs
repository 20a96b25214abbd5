//! Sy-FAR: standard training, PGD adversarial training and PGD adversarial training with
//! Sy-FAR's symmetry penalty over a λ grid, under BP and uSF fine-tuning; clean and robust
//! accuracy (PGD, exact gradient), per-class robust accuracy and the fairness of the
//! adversarial confusion matrix; a table, CSV, JSON and plots under `--out`.
//!
//! ```sh
//! cargo run --release --example fair_adversarial_training
//! cargo run --release --example fair_adversarial_training -- --rules bp --train-examples 2000
//! ```

use clap::Parser;
use signsym::study::fair_adversarial::{FairArgs, run};

#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    #[command(flatten)]
    args: FairArgs,
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
