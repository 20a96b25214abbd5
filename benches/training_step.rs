//! One training step (forward, cross-entropy, backward, Adam with weight decay) per rule, batch
//! 32, Flex: the small MNIST CNN (28×28) and ResNet-18 at 32×32, both with torchvision's stem
//! (the PyTorch reference's setting) and with the CIFAR stem (3×3 stride-1 first convolution, no
//! max-pool: 16× the FLOPs). Then the paired ratio of each rule to BP (`support`), and the peak
//! heap memory of one ResNet-18 step per rule, from a counting allocator.
//!
//! `cargo bench --bench training_step` (the CIFAR-stem ResNet takes seconds per step: filter it
//! out with `cargo bench --bench training_step -- 'small_cnn|resnet18_32|memory'`).

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signsym::feedback::{FeedbackRule, set_rule};
use signsym::models::{Backbone, FusedAdamConfig, Network, ResNetConfig, SmallCnnConfig, Task};

const BATCH: usize = 32;

/// Heap bytes in use now and at the peak since the last reset, over mimalloc (the examples'
/// allocator, so the steps here run as the examples' do).
struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to mimalloc; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size()
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed) + new_size
                    - layout.size()
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A model under a rule, with its optimizer and one fixed batch: each call is one step.
fn trainer<M: Backbone>(
    network: &Network<M>,
    rule: FeedbackRule,
    shape: [usize; 4],
    device: &Device,
) -> impl FnMut() -> f32 + use<M> {
    let mut net = network.duplicate();
    set_rule(&mut net, rule, 0).expect("rule");
    let x = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 1.0), device);
    let labels: Vec<i64> = (0..shape[0] as i64).map(|i| i % 10).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [shape[0]]), device);
    let loss = CrossEntropyLossConfig::new().init(device);
    let mut adam = FusedAdamConfig::new().with_weight_decay(Some(5e-4)).init();
    let mut net = Some(net);
    move || {
        let model = net.take().expect("model");
        let l = loss.forward(model.forward(x.clone()), y.clone());
        let value = l.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        net = Some(adam.step(1e-4, model, grads));
        value
    }
}

fn run<M: Backbone>(
    c: &mut Criterion,
    name: &str,
    network: Network<M>,
    shape: [usize; 4],
    rounds: usize,
    device: &Device,
) {
    let mut group = c.benchmark_group(format!("train_step/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(shape[0] as u64));
    for rule in FeedbackRule::ALL {
        let mut step = trainer(&network, rule, shape, device);
        group.bench_function(BenchmarkId::from_parameter(rule.name()), |b| {
            b.iter(&mut step)
        });
    }
    group.finish();
    support::print_paired(&format!("train_step/{name}"), rounds, |rule| {
        trainer(&network, rule, shape, device)
    });
}

/// Peak heap bytes above the resting level during one step (after two warm-up steps), and the
/// bytes of the fixed feedback tensors the rule adds to the model.
fn peak_memory<M: Backbone>(network: &Network<M>, shape: [usize; 4], device: &Device) {
    if !support::selected("memory") {
        return;
    }
    println!(
        "\npeak heap memory of one step, {:?}, batch {}:",
        &shape[1..],
        shape[0]
    );
    // burn initialises parameters lazily: materialise the shared model first, so that its
    // weights are not charged to the first rule measured.
    trainer(network, FeedbackRule::Bp, shape, device)();
    for rule in FeedbackRule::ALL {
        let before = CURRENT.load(Ordering::Relaxed);
        let mut step = trainer(network, rule, shape, device);
        let with_model = CURRENT.load(Ordering::Relaxed);
        step();
        step();
        let resting = CURRENT.load(Ordering::Relaxed);
        PEAK.store(resting, Ordering::Relaxed);
        step();
        let peak = PEAK.load(Ordering::Relaxed);
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        println!(
            "  {:<5} model + batch {:7.1} MiB · resting after a step {:7.1} MiB · step peak {:7.1} MiB above resting",
            rule.name(),
            mib(with_model - before),
            mib(resting - before),
            mib(peak - resting),
        );
    }
}

fn resnet(cifar_stem: bool, device: &Device) -> Network<signsym::models::ResNet> {
    let backbone = ResNetConfig::resnet18()
        .with_cifar_stem(cifar_stem)
        .init(device)
        .expect("resnet");
    Network::new(backbone, Task::classification(10), device).expect("network")
}

fn bench(c: &mut Criterion) {
    let device = support::device();
    device.seed(0);
    let cnn = SmallCnnConfig::new().init(&device).expect("cnn");
    let cnn = Network::new(cnn, Task::classification(10), &device).expect("network");
    let rounds = support::paired_rounds(20);
    run(c, "small_cnn_28", cnn, [BATCH, 1, 28, 28], rounds, &device);
    let imagenet_stem = resnet(false, &device);
    peak_memory(&imagenet_stem, [BATCH, 3, 32, 32], &device);
    run(
        c,
        "resnet18_32",
        imagenet_stem,
        [BATCH, 3, 32, 32],
        rounds,
        &device,
    );
    run(
        c,
        "resnet18_cifar_stem_32",
        resnet(true, &device),
        [BATCH, 3, 32, 32],
        rounds.div_ceil(5),
        &device,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
