//! Forward + backward of one feedback layer per rule: a linear layer (1024 → 1024, batch 256)
//! and a 3×3 convolution (64 → 64 channels, padding 1, batch 32, 32×32), Flex.
//!
//! Throughput is counted as backpropagation's FLOPs (forward, input gradient, weight gradient:
//! three products of the forward's size), so a rule's GFLOP/s falls exactly as much as it costs
//! more than BP. Every rule runs in the same process as BP; the ratios to BP are printed at the
//! end from criterion's estimates.
//!
//! `cargo bench --bench feedback_kernels`

use std::path::PathBuf;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signsym::feedback::layers::{FeedbackConv2dConfig, FeedbackLinearConfig};
use signsym::feedback::{FeedbackConfig, FeedbackRule};

const LINEAR: (usize, usize, usize) = (256, 1024, 1024);
const CONV: (usize, usize, usize, usize) = (32, 64, 64, 32);

fn linear(c: &mut Criterion, device: &Device) {
    let (batch, inputs, outputs) = LINEAR;
    let flops = 3 * 2 * batch * inputs * outputs;
    let mut group = c.benchmark_group("kernel/linear_1024x1024_b256");
    group.sample_size(20);
    group.throughput(Throughput::Elements(flops as u64));
    let x = Tensor::<2>::random([batch, inputs], Distribution::Default, device);
    let upstream = Tensor::<2>::random([batch, outputs], Distribution::Default, device);
    for rule in FeedbackRule::ALL {
        let layer = FeedbackLinearConfig::new(inputs, outputs)
            .with_feedback(FeedbackConfig::new().with_rule(rule))
            .init(device);
        group.bench_function(BenchmarkId::from_parameter(rule.name()), |b| {
            b.iter(|| {
                let input = x.clone().require_grad();
                let out = layer.forward(input.clone());
                let grads = (out * upstream.clone()).sum().backward();
                // Reading one value of each gradient waits for the work on any backend.
                let dx = input.grad(&grads).expect("input gradient");
                let dw = layer.weight.val().grad(&grads).expect("weight gradient");
                (
                    dx.slice([0..1, 0..1]).into_scalar::<f32>(),
                    dw.slice([0..1, 0..1]).into_scalar::<f32>(),
                )
            })
        });
    }
    group.finish();
}

fn conv(c: &mut Criterion, device: &Device) {
    let (batch, cin, cout, side) = CONV;
    let flops = 3 * 2 * batch * cout * side * side * cin * 9;
    let mut group = c.benchmark_group("kernel/conv3x3_64x64_b32_32x32");
    group.sample_size(20);
    group.throughput(Throughput::Elements(flops as u64));
    let x = Tensor::<4>::random([batch, cin, side, side], Distribution::Default, device);
    let upstream = Tensor::<4>::random([batch, cout, side, side], Distribution::Default, device);
    for rule in FeedbackRule::ALL {
        let layer = FeedbackConv2dConfig::new([cin, cout], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_feedback(FeedbackConfig::new().with_rule(rule))
            .init(device);
        group.bench_function(BenchmarkId::from_parameter(rule.name()), |b| {
            b.iter(|| {
                let input = x.clone().require_grad();
                let out = layer.forward(input.clone());
                let grads = (out * upstream.clone()).sum().backward();
                let dx = input.grad(&grads).expect("input gradient");
                let dw = layer.weight.val().grad(&grads).expect("weight gradient");
                (
                    dx.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>(),
                    dw.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>(),
                )
            })
        });
    }
    group.finish();
}

/// criterion's mean estimate (ns) of one bench, from its output directory.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn ratios(_: &mut Criterion) {
    println!("\nratio of each rule's mean time to BP's (same run):");
    for group in [
        "kernel_linear_1024x1024_b256",
        "kernel_conv3x3_64x64_b32_32x32",
    ] {
        let Some(bp) = mean_ns(group, "bp") else {
            continue;
        };
        let row: Vec<String> = FeedbackRule::ALL
            .iter()
            .filter_map(|r| {
                mean_ns(group, r.name()).map(|t| format!("{} ×{:.3}", r.name(), t / bp))
            })
            .collect();
        println!("  {group}: {}", row.join(", "));
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(0);
    linear(c, &device);
    conv(c, &device);
}

criterion_group!(benches, bench, ratios);
criterion_main!(benches);
