//! Krotov–Hopfield local learning against BP (arXiv 2405.00679): a frozen layer of competing
//! hidden units under a BP-trained head, the same network trained end to end with BP (alone,
//! with L2, Jacobian and spectral penalties), and the hybrid after pruning its high-variance
//! synapses; clean accuracy, noise, FGSM/PGD (exact gradient), HopSkipJump distances, Jacobian
//! norm and the covariance spectrum's power-law exponent, on MNIST and Fashion-MNIST.
//!
//! ```sh
//! cargo run --release --example local_learning_robustness
//! cargo run --release --example local_learning_robustness -- --datasets cifar10 --data-dir data/cifar-10-batches-bin
//! ```

use clap::Parser;
use signsym::study::local_learning::{LocalLearningArgs, run};

#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    #[command(flatten)]
    args: LocalLearningArgs,
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
