//! FGSM and PGD-5 throughput (images per second) on the small MNIST CNN (28×28) and ResNet-18
//! (torchvision's stem, 32×32), per feedback rule, batch 32, Flex; then the paired ratio of each
//! rule's attack time to BP's (`support`). Attacks run through `attack_mode`: no weight
//! gradients, whatever the rule. Then AutoAttack (standard, L∞, ε = 0.1, exact gradient) on the
//! small CNN after one epoch of BP on 4,000 bundled MNIST images, 32 test images per call:
//! `scripts/crosscheck_autoattack.py --bench` times torchattacks' AutoAttack on the same
//! weights and images.
//!
//! `cargo bench --bench attacks`

mod support;

// The examples' allocator (see examples/robust_finetune.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signsym::attacks::{
    AutoAttackConfig, BoundedAttack, Fgsm, GradientSource, PgdConfig, attack_mode,
};
use signsym::data::read_idx;
use signsym::feedback::{FeedbackRule, set_rule};
use signsym::losses::CrossEntropyConfig;
use signsym::models::Backbone;
use signsym::models::{
    BatchSource, FineTuneConfig, Network, ResNetConfig, SmallCnnConfig, Task, pretrain,
};

const BATCH: usize = 32;
const EPSILON: f64 = 0.03;

/// One attack call on a copy of `network` under `rule`, on a fixed batch.
fn attacker<M: Backbone>(
    network: &Network<M>,
    rule: FeedbackRule,
    attack: &dyn BoundedAttack,
    source: GradientSource<'static>,
    x: &Tensor<4>,
) -> impl FnMut() -> usize {
    let mut net = network.duplicate();
    set_rule(&mut net, rule, 0).expect("rule");
    let net = attack_mode(net);
    let labels: Vec<usize> = (0..x.dims()[0]).map(|i| i % 10).collect();
    let x = x.clone();
    move || {
        let out = attack
            .run(&net, &x, &labels, EPSILON, &source)
            .expect("attack");
        out.success.iter().filter(|s| **s).count()
    }
}

fn run<M: Backbone>(
    c: &mut Criterion,
    name: &str,
    network: Network<M>,
    shape: [usize; 4],
    device: &Device,
) {
    // As in the evaluations (`robust_accuracy`, the studies): the weights are fixed, so each
    // layer's feedback tensor is formed once and reused by every call.
    let _frozen = signsym_feedback::FrozenWeightsGuard::enter();
    let x = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 1.0), device);
    let pgd = PgdConfig::paper().init().expect("pgd");
    let fgsm = Fgsm::default();
    let attacks: [&dyn BoundedAttack; 2] = [&fgsm, &pgd];
    let mut group = c.benchmark_group(format!("attack/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(shape[0] as u64));
    for attack in attacks {
        for rule in FeedbackRule::ALL {
            let mut f = attacker(&network, rule, attack, GradientSource::Feedback, &x);
            let id = BenchmarkId::new(attack.name(), rule.name());
            group.bench_function(id, |b| b.iter(&mut f));
        }
        // The exact gradient of a uSF model: BP's work on the same weights.
        let mut f = attacker(
            &network,
            FeedbackRule::USf,
            attack,
            GradientSource::Exact,
            &x,
        );
        let id = BenchmarkId::new(attack.name(), "usf-exact");
        group.bench_function(id, |b| b.iter(&mut f));
    }
    group.finish();
    for attack in attacks {
        support::print_paired(
            &format!("attack/{name}/{}", attack.name()),
            support::paired_rounds(10),
            |rule| attacker(&network, rule, attack, GradientSource::Feedback, &x),
        );
    }
}

/// AutoAttack standard on a BP-trained small CNN: images per second.
fn autoattack(c: &mut Criterion, device: &Device) {
    let data = |part: &str| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
        read_idx(
            format!("{dir}/mnist-{part}-images-idx3-ubyte.gz"),
            format!("{dir}/mnist-{part}-labels-idx1-ubyte.gz"),
            10,
        )
        .expect("bundled MNIST")
    };
    let train = data("train").select(&(0..4000).collect::<Vec<_>>());
    let test = data("t10k");
    device.seed(0);
    let cnn = SmallCnnConfig::new().init(device).expect("cnn");
    let network = Network::new(cnn, Task::classification(10), device).expect("network");
    let ce = CrossEntropyConfig::new().init(device).expect("loss");
    let config = FineTuneConfig::pretraining(2e-3)
        .with_epochs(1)
        .with_progress(false);
    let net = pretrain(network, ce, &train, None, &config, None)
        .expect("training")
        .network;
    let net = attack_mode(net);
    let indices: Vec<usize> = (0..BATCH).collect();
    let (x, _) = test.batch(&indices, device).expect("batch");
    let labels: Vec<usize> = indices.iter().map(|&i| test.labels[i]).collect();
    let aa = AutoAttackConfig::new().init().expect("autoattack");
    let mut group = c.benchmark_group("autoattack/small_cnn_28");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("standard-linf-eps0.1-exact", |b| {
        b.iter(|| {
            aa.run(&net, &x, &labels, &[0.1], &GradientSource::Exact)
                .expect("autoattack")
                .curve
                .points[0]
                .value
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let device = support::device();
    autoattack(c, &device);
    device.seed(0);
    let cnn = SmallCnnConfig::new().init(&device).expect("cnn");
    let cnn = Network::new(cnn, Task::classification(10), &device).expect("network");
    run(c, "small_cnn_28", cnn, [BATCH, 1, 28, 28], &device);
    let resnet = ResNetConfig::resnet18().init(&device).expect("resnet");
    let resnet = Network::new(resnet, Task::classification(10), &device).expect("network");
    run(c, "resnet18_32", resnet, [BATCH, 3, 32, 32], &device);
}

criterion_group!(benches, bench);
criterion_main!(benches);
