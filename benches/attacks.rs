//! FGSM and PGD-5 throughput (images per second) on the small MNIST CNN and a narrow CIFAR
//! ResNet-18, per feedback rule and gradient source, batch 32, Flex.
//!
//! `cargo bench --bench attacks`

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signsym::attacks::{BoundedAttack, Fgsm, GradientSource, PgdConfig, attack_mode};
use signsym::feedback::{FeedbackRule, set_rule};
use signsym::models::{Backbone, Network, ResNetConfig, SmallCnnConfig, Task};

const BATCH: usize = 32;

fn run<M: Backbone>(
    c: &mut Criterion,
    name: &str,
    network: Network<M>,
    shape: [usize; 4],
    device: &Device,
) {
    let mut group = c.benchmark_group(format!("attack/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    let x = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 1.0), device);
    let labels: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
    let pgd = PgdConfig::paper().init().expect("pgd");
    let fgsm = Fgsm::default();
    for rule in [FeedbackRule::Bp, FeedbackRule::USf, FeedbackRule::BrSf] {
        let mut net = network.duplicate();
        set_rule(&mut net, rule, 0).expect("rule");
        // Attacks need no parameter gradients: untracked parameters skip the weight-gradient
        // half of every backward.
        let net = attack_mode(net);
        for (source, tag) in [
            (GradientSource::Feedback, "feedback"),
            (GradientSource::Exact, "exact"),
        ] {
            if rule == FeedbackRule::Bp && tag == "exact" {
                continue;
            }
            for attack in [&fgsm as &dyn BoundedAttack, &pgd] {
                let id = BenchmarkId::new(attack.name(), format!("{}/{tag}", rule.name()));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        attack
                            .run(&net, &x, &labels, 0.03, &source)
                            .expect("attack")
                    })
                });
            }
        }
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(0);
    let cnn = SmallCnnConfig::new().init(&device).expect("cnn");
    let cnn = Network::new(cnn, Task::classification(10), &device).expect("network");
    run(c, "small_cnn_28", cnn, [BATCH, 1, 28, 28], &device);
    let resnet = ResNetConfig::resnet18()
        .with_widths([16, 32, 64, 128])
        .with_cifar_stem(true)
        .init(&device)
        .expect("resnet");
    let resnet = Network::new(resnet, Task::classification(10), &device).expect("network");
    run(c, "resnet18_narrow_32", resnet, [BATCH, 3, 32, 32], &device);
}

criterion_group!(benches, bench);
criterion_main!(benches);
