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

/// Forward + backward (all three gradients) of `op` (burn's convolution or the extension's) on
/// fixed inputs of the given shapes.
fn conv_op_step<const D: usize>(
    shapes: ([usize; D], [usize; D], usize),
    op: impl Fn(Tensor<D>, Tensor<D>, Tensor<1>) -> Tensor<D>,
    device: &Device,
) -> impl FnMut() -> f32 {
    let (xs, ws, channels) = shapes;
    let x = Tensor::<D>::random(xs, Distribution::Default, device);
    let w = Tensor::<D>::random(ws, Distribution::Default, device);
    let b = Tensor::<1>::random([channels], Distribution::Default, device);
    move || {
        let (input, weight, bias) = (
            x.clone().require_grad(),
            w.clone().require_grad(),
            b.clone().require_grad(),
        );
        let grads = op(input.clone(), weight.clone(), bias.clone())
            .sum()
            .backward();
        // One value of each gradient: the read waits for the work on any backend.
        let first = |t: Option<Tensor<D>>| {
            let one: [core::ops::Range<usize>; D] = core::array::from_fn(|_| 0..1);
            t.expect("gradient").slice(one).into_scalar::<f32>()
        };
        first(input.grad(&grads))
            + first(weight.grad(&grads))
            + bias
                .grad(&grads)
                .expect("bias gradient")
                .sum()
                .into_scalar::<f32>()
    }
}

fn other_convolutions(c: &mut Criterion, device: &Device) {
    use burn::tensor::module::{conv_transpose2d, conv1d};
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
    use signsym::feedback::ops::{feedback_conv_transpose2d, feedback_conv1d};
    // No `support::selected` gate: criterion's own filter picks the functions (a filter may name
    // one of them, as scripts/side_by_side.py does), and the inputs are small.
    let o = ConvOptions::new([1], [2], [1], 1);
    let shapes = ([32, 64, 256], [64, 64, 5], 64);
    let mut group = c.benchmark_group("kernel/conv1d_k5_64x64_b32_256");
    group.sample_size(20);
    let mut burn = conv_op_step(shapes, |x, w, b| conv1d(x, w, Some(b), o.clone()), device);
    group.bench_function("burn", |bench| bench.iter(&mut burn));
    let mut ours = conv_op_step(
        shapes,
        |x, w: Tensor<3>, b| {
            let v = w.clone().detach();
            feedback_conv1d(x, w, Some(b), v, o.clone()).expect("shapes")
        },
        device,
    );
    group.bench_function("signsym", |bench| bench.iter(&mut ours));
    group.finish();

    let o = ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1);
    let shapes = ([32, 64, 16, 16], [64, 32, 4, 4], 32);
    let mut group = c.benchmark_group("kernel/conv_transpose4x4s2_64x32_b32_16x16");
    group.sample_size(20);
    let mut burn = conv_op_step(
        shapes,
        |x, w, b| conv_transpose2d(x, w, Some(b), o.clone()),
        device,
    );
    group.bench_function("burn", |bench| bench.iter(&mut burn));
    let mut ours = conv_op_step(
        shapes,
        |x, w: Tensor<4>, b| {
            let v = w.clone().detach();
            feedback_conv_transpose2d(x, w, Some(b), v, o.clone()).expect("shapes")
        },
        device,
    );
    group.bench_function("signsym", |bench| bench.iter(&mut ours));
    group.finish();
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
