//! Trains a small CNN (or MLP) on scikit-learn's 8×8 digits under each rule and prints the
//! held-out accuracy and the wall time per rule.
//!
//! ```sh
//! cargo run --release --example digits_rules
//! cargo run --release --example digits_rules -- --model mlp --rules bp,usf --epochs 10
//! ```

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use clap::Parser;
use signsym::data::{read_digits_csv, train_test_split};
use signsym::digits::{DigitsCnn, DigitsMlp, DigitsReport, DigitsTrainingConfig, train_digits};
use signsym::feedback::FeedbackRule;

#[derive(Parser, Debug)]
#[command(about = "Train on the 8×8 digits with each feedback rule")]
struct Args {
    /// `cnn` or `mlp`.
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Comma-separated rules among bp, usf, frsf, brsf, fa.
    #[arg(long, default_value = "bp,usf,frsf,brsf,fa", value_delimiter = ',')]
    rules: Vec<FeedbackRule>,
    /// Training epochs.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Seed of initialisation, split, shuffling and feedback draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The digits file.
    #[arg(long, default_value = "data/sklearn_digits.csv.gz")]
    data: PathBuf,
    /// `cpu` (Flex) or `wgpu` (needs the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where the CSV of results goes.
    #[arg(long, default_value = "out/digits_rules")]
    out: PathBuf,
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        other => Err(format!("unknown or disabled device `{other}`")),
    }
}

// mimalloc reuses freed blocks per thread instead of returning them to the system and
// faulting them in again: 7-14 % off a ResNet-18 training step (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = device(&args.device)?.autodiff();
    let data = read_digits_csv(&args.data)?;
    let split = train_test_split(&data, 0.2, args.seed)?;
    let config = DigitsTrainingConfig::new()
        .with_epochs(args.epochs)
        .with_seed(args.seed);
    println!(
        "digits: {} train / {} test images, model {}, {} epochs, device {}",
        split.train.len(),
        split.test.len(),
        args.model,
        args.epochs,
        args.device
    );
    let started = Instant::now();
    let mut reports: Vec<DigitsReport> = Vec::new();
    for &rule in &args.rules {
        // The same initial weights for every rule.
        device.seed(args.seed);
        let report = match args.model.as_str() {
            "cnn" => {
                let model = DigitsCnn::new(8, &device);
                train_digits(model, rule, &split.train, &split.test, &config, &device)?.1
            }
            "mlp" => {
                let model = DigitsMlp::new(64, &device);
                train_digits(model, rule, &split.train, &split.test, &config, &device)?.1
            }
            other => return Err(format!("unknown model `{other}` (cnn or mlp)").into()),
        };
        println!(
            "  {:<5} accuracy {:6.2} %  loss {:.4}  {:6.1} s",
            rule.name(),
            100.0 * report.test_accuracy,
            report.final_loss,
            report.seconds
        );
        reports.push(report);
    }

    println!("\n| rule | test accuracy | final loss | wall time |");
    println!("|------|---------------|------------|-----------|");
    for r in &reports {
        println!(
            "| {:<4} | {:>11.2} % | {:>10.4} | {:>7.1} s |",
            r.rule.name(),
            100.0 * r.test_accuracy,
            r.final_loss,
            r.seconds
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let csv = args.out.join(format!("{}.csv", args.model));
    let mut text = String::from("rule,test_accuracy,final_loss,seconds\n");
    for r in &reports {
        text.push_str(&format!(
            "{},{:.6},{:.6},{:.3}\n",
            r.rule.name(),
            r.test_accuracy,
            r.final_loss,
            r.seconds
        ));
    }
    std::fs::write(&csv, text)?;
    println!(
        "\nwrote {} (total {:.1} s)",
        csv.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
