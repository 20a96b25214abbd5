//! Forward + backward of one feedback layer per rule: a linear layer (1024 → 1024, batch 256)
//! and a 3×3 convolution (64 → 64 channels, padding 1, batch 32, 32×32), Flex.
//!
//! Throughput is counted as backpropagation's FLOPs (forward, input gradient, weight gradient:
//! three products of the forward's size), so a rule's GFLOP/s falls exactly as much as it costs
//! more than BP. After criterion's absolute timings, each rule is timed against BP in alternating
//! rounds of the same process (`SIGNSYM_PAIRED_ROUNDS`, default 30; 0 skips) and the median
//! ratio printed, in CPU time and in wall time (see `support`).
//!
//! Also the max pooling of the small CNN (2×2/2 on its first block's 32 × 28 × 28 maps, batch
//! 32) and of ResNet's stem (3×3/2, padding 1, 64 × 16 × 16), forward + backward: burn's
//! `max_pool2d` against the extension's op (`signsym::feedback::ops::max_pool2d`).
//!
//! And a 1-d convolution (64 → 64 channels, kernel 5, padding 2, batch 32, length 256) and a
//! transposed 2-d convolution (64 → 32 channels, kernel 4, stride 2, padding 1: 16 × 16 → 32 × 32,
//! batch 32), forward + backward (input, weight and bias gradients): burn's op against the
//! extension's (`feedback_conv1d`, `feedback_conv_transpose2d` with `V = W`), which on Flex run
//! the extension's 2-d convolution kernels.
//!
//! `cargo bench --bench feedback_kernels`

mod support;

// The examples' allocator (see examples/robust_finetune.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signsym::feedback::FeedbackConfig;
use signsym::feedback::FeedbackRule;
use signsym::feedback::layers::{FeedbackConv2dConfig, FeedbackLinearConfig};

const LINEAR: (usize, usize, usize) = (256, 1024, 1024);
const CONV: (usize, usize, usize, usize) = (32, 64, 64, 32);

/// Forward, backward, and a read of one value of each gradient (which waits for the work on any
/// backend).
fn linear_step(rule: FeedbackRule, device: &Device) -> impl FnMut() -> (f32, f32) + use<> {
    let (batch, inputs, outputs) = LINEAR;
    let x = Tensor::<2>::random([batch, inputs], Distribution::Default, device);
    let upstream = Tensor::<2>::random([batch, outputs], Distribution::Default, device);
    let layer = FeedbackLinearConfig::new(inputs, outputs)
        .with_feedback(FeedbackConfig::new().with_rule(rule))
        .init(device);
    move || {
        let input = x.clone().require_grad();
        let grads = (layer.forward(input.clone()) * upstream.clone())
            .sum()
            .backward();
        let dx = input.grad(&grads).expect("input gradient");
        let dw = layer.weight.val().grad(&grads).expect("weight gradient");
        (
            dx.slice([0..1, 0..1]).into_scalar::<f32>(),
            dw.slice([0..1, 0..1]).into_scalar::<f32>(),
        )
    }
}

fn conv_step(rule: FeedbackRule, device: &Device) -> impl FnMut() -> (f32, f32) + use<> {
    let (batch, cin, cout, side) = CONV;
    let x = Tensor::<4>::random([batch, cin, side, side], Distribution::Default, device);
    let upstream = Tensor::<4>::random([batch, cout, side, side], Distribution::Default, device);
    let layer = FeedbackConv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_feedback(FeedbackConfig::new().with_rule(rule))
        .init(device);
    move || {
        let input = x.clone().require_grad();
        let grads = (layer.forward(input.clone()) * upstream.clone())
            .sum()
            .backward();
        let dx = input.grad(&grads).expect("input gradient");
        let dw = layer.weight.val().grad(&grads).expect("weight gradient");
        (
            dx.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>(),
            dw.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>(),
        )
    }
}

fn run<F: FnMut() -> (f32, f32)>(
    c: &mut Criterion,
    name: &str,
    flops: usize,
    device: &Device,
    step: impl Fn(FeedbackRule, &Device) -> F,
) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.throughput(Throughput::Elements(flops as u64));
    for rule in FeedbackRule::ALL {
        let mut f = step(rule, device);
        group.bench_function(BenchmarkId::from_parameter(rule.name()), |b| b.iter(&mut f));
    }
    group.finish();
    support::print_paired(name, support::paired_rounds(30), |rule| step(rule, device));
}

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(0);
    let (batch, inputs, outputs) = LINEAR;
    let flops = 3 * 2 * batch * inputs * outputs;
    run(
        c,
        "kernel/linear_1024x1024_b256",
        flops,
        &device,
        linear_step,
    );
    let (batch, cin, cout, side) = CONV;
    let flops = 3 * 2 * batch * cout * side * side * cin * 9;
    run(
        c,
        "kernel/conv3x3_64x64_b32_32x32",
        flops,
        &device,
        conv_step,
    );
    pooling(c, &device);
    other_convolutions(c, &device);
}

/// Forward + backward (all three gradients) of a 1-d (`transposed == false`) or transposed 2-d
/// convolution, through burn's op or the extension's.
fn other_conv_step(ours: bool, transposed: bool, device: &Device) -> impl FnMut() -> f32 + use<> {
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
    let (x, w, b) = if transposed {
        (
            Tensor::<4>::random([32, 64, 16, 16], Distribution::Default, device),
            Tensor::<4>::random([64, 32, 4, 4], Distribution::Default, device),
            Tensor::<1>::random([32], Distribution::Default, device),
        )
    } else {
        (
            Tensor::<3>::random([32, 64, 256], Distribution::Default, device).unsqueeze_dim(2),
            Tensor::<3>::random([64, 64, 5], Distribution::Default, device).unsqueeze_dim(2),
            Tensor::<1>::random([64], Distribution::Default, device),
        )
    };
    let conv1d = ConvOptions::new([1], [2], [1], 1);
    let up = ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1);
    move || {
        let (input, weight, bias) = (
            x.clone().require_grad(),
            w.clone().require_grad(),
            b.clone().require_grad(),
        );
        let y: Tensor<4> = match (transposed, ours) {
            (true, true) => signsym::feedback::ops::feedback_conv_transpose2d(
                input.clone(),
                weight.clone(),
                Some(bias.clone()),
                weight.clone().detach(),
                up.clone(),
            )
            .expect("shapes"),
            (true, false) => burn::tensor::module::conv_transpose2d(
                input.clone(),
                weight.clone(),
                Some(bias.clone()),
                up.clone(),
            ),
            (false, true) => signsym::feedback::ops::feedback_conv1d(
                input.clone().squeeze_dim(2),
                weight.clone().squeeze_dim(2),
                Some(bias.clone()),
                weight.clone().detach().squeeze_dim(2),
                conv1d.clone(),
            )
            .expect("shapes")
            .unsqueeze_dim(2),
            (false, false) => burn::tensor::module::conv1d(
                input.clone().squeeze_dim(2),
                weight.clone().squeeze_dim(2),
                Some(bias.clone()),
                conv1d.clone(),
            )
            .unsqueeze_dim(2),
        };
        let grads = y.sum().backward();
        let first = |t: Tensor<4>| t.slice([0..1, 0..1, 0..1, 0..1]).into_scalar::<f32>();
        first(input.grad(&grads).expect("input gradient"))
            + first(weight.grad(&grads).expect("weight gradient"))
            + bias
                .grad(&grads)
                .expect("bias gradient")
                .sum()
                .into_scalar::<f32>()
    }
}

fn other_convolutions(c: &mut Criterion, device: &Device) {
    for (name, transposed) in [
        ("kernel/conv1d_k5_64x64_b32_256", false),
        ("kernel/conv_transpose4x4s2_64x32_b32_16x16", true),
    ] {
        // No `support::selected` gate: criterion's own filter picks the functions (a filter may
        // name one of them, as scripts/side_by_side.py does), and the inputs are small.
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        for (label, ours) in [("burn", false), ("signsym", true)] {
            let mut f = other_conv_step(ours, transposed, device);
            group.bench_function(label, |b| b.iter(&mut f));
        }
        group.finish();
    }
}

/// Forward + backward of a max pooling through `ours` (the extension's op) or burn's.
fn pool_step(
    ours: bool,
    shape: [usize; 4],
    kernel: usize,
    padding: usize,
    device: &Device,
) -> impl FnMut() -> f32 + use<> {
    let x = Tensor::<4>::random(shape, Distribution::Default, device);
    let (k, p) = ([kernel; 2], [padding; 2]);
    move || {
        let input = x.clone().require_grad();
        let y = if ours {
            signsym::feedback::ops::max_pool2d(input.clone(), k, [2, 2], p)
        } else {
            burn::tensor::module::max_pool2d(
                input.clone(),
                burn::tensor::ops::MaxPoolOptions {
                    kernel_size: k,
                    stride: [2, 2],
                    padding: p.map(|v| (v, v)),
                    dilation: [1, 1],
                    ceil_mode: false,
                },
            )
        };
        let grads = y.sum().backward();
        input
            .grad(&grads)
            .expect("input gradient")
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar()
    }
}

fn pooling(c: &mut Criterion, device: &Device) {
    for (name, shape, kernel, padding) in [
        (
            "kernel/maxpool2x2_small_cnn_b32_32x28x28",
            [32, 32, 28, 28],
            2,
            0,
        ),
        (
            "kernel/maxpool3x3_resnet_stem_b32_64x16x16",
            [32, 64, 16, 16],
            3,
            1,
        ),
    ] {
        if !support::selected(name) {
            continue;
        }
        let mut group = c.benchmark_group(name);
        group.sample_size(30);
        for (label, ours) in [("burn", false), ("signsym", true)] {
            let mut f = pool_step(ours, shape, kernel, padding, device);
            group.bench_function(label, |b| b.iter(&mut f));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
