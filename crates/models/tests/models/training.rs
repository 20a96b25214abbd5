//! The fine-tuning loop: learning-rate groups, exact resumption, rule switching, output shapes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Distribution, Tensor};
use signsym_data::{ImageDataset, read_idx};
use signsym_feedback::{FeedbackRule, set_rule};
use signsym_losses::CrossEntropyConfig;
use signsym_models::{
    AlexNetConfig, Backbone, BatchSource, FineTuneConfig, ModelError, Network, ResNet,
    ResNetConfig, SmallCnn, SmallCnnConfig, Task, Vgg16Config, eval_mode, fine_tune,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

pub(crate) fn mnist_test(n: usize) -> ImageDataset {
    let dir = data_dir();
    let all = read_idx(
        dir.join("mnist-t10k-images-idx3-ubyte.gz"),
        dir.join("mnist-t10k-labels-idx1-ubyte.gz"),
        10,
    )
    .unwrap();
    all.select(&(0..n).collect::<Vec<_>>())
}

pub(crate) fn small_cnn(device: &Device) -> Network<SmallCnn> {
    let backbone = SmallCnnConfig::new()
        .with_channels([4, 8])
        .with_hidden(16)
        .init(device)
        .unwrap();
    Network::new(backbone, Task::classification(10), device).unwrap()
}

/// ResNet-18 with narrow stages and the CIFAR stem, for 1-channel 28 × 28 images.
pub(crate) fn narrow_mnist_resnet(device: &Device) -> Network<ResNet> {
    let backbone = ResNetConfig::resnet18()
        .with_widths([4, 8, 8, 16])
        .with_cifar_stem(true)
        .with_in_channels(1)
        .init(device)
        .unwrap();
    Network::new(backbone, Task::classification(10), device).unwrap()
}

pub(crate) fn snapshot<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
    module
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let data = burn::store::bridge::to_data(&t).unwrap();
            (t.name.clone(), data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn backbone_and_head_learning_rates_set_the_update_sizes() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let data = mnist_test(64);
    let (backbone_lr, head_lr) = (1e-3, 1e-2);
    let net = small_cnn(&device);
    let before = snapshot(&net);
    let config = FineTuneConfig::new()
        .with_backbone_lr(backbone_lr)
        .with_head_lr(head_lr)
        .with_weight_decay(0.0)
        .with_batch_size(64)
        .with_epochs(1)
        .with_progress(false);
    let ce = CrossEntropyConfig::new().init(&device).unwrap();
    let tuned = fine_tune(net, ce, &data, None, &config, None).unwrap();
    let after = snapshot(&tuned.network);
    // Adam's first step moves every parameter with a non-zero gradient by lr·g/(|g| + ε) ≈ lr.
    for ((name, b), (name_after, a)) in before.iter().zip(&after) {
        assert_eq!(name, name_after);
        let step = b
            .iter()
            .zip(a)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let lr = if name.starts_with("head.") {
            head_lr
        } else {
            backbone_lr
        };
        assert!(
            (step as f64 - lr).abs() < 0.01 * lr,
            "{name}: largest update {step}, learning rate {lr}"
        );
    }
}

/// A data source that raises the stop flag when batch number `at` is asked for.
struct StopAt<'a> {
    data: &'a ImageDataset,
    calls: AtomicUsize,
    at: usize,
    stop: Arc<AtomicBool>,
}

impl BatchSource for StopAt<'_> {
    type Target = <ImageDataset as BatchSource>::Target;

    fn len(&self) -> usize {
        self.data.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Self::Target), ModelError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.at {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.data.batch(indices, device)
    }
}

#[test]
fn a_resumed_run_continues_with_identical_numbers() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let data = mnist_test(256);
    let net = small_cnn(&device);
    let ce = CrossEntropyConfig::new().init(&device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = FineTuneConfig::new()
        .with_backbone_lr(1e-3)
        .with_head_lr(3e-3)
        .with_batch_size(32)
        .with_epochs(2)
        .with_rule(Some(FeedbackRule::FrSf))
        .with_seed(11)
        .with_progress(false);

    let straight = fine_tune(net.clone(), ce.clone(), &data, None, &config, None).unwrap();

    // Stopped in the middle of the second epoch (batch 11 of 16), then resumed.
    let stop = Arc::new(AtomicBool::new(false));
    let source = StopAt {
        data: &data,
        calls: AtomicUsize::new(0),
        at: 10,
        stop: stop.clone(),
    };
    let config_ckpt = config
        .clone()
        .with_checkpoint_dir(Some(dir.path().to_path_buf()));
    let err = fine_tune(
        net.clone(),
        ce.clone(),
        &source,
        None,
        &config_ckpt,
        Some(stop),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Interrupted {
                completed_epochs: 1
            }
        ),
        "{err}"
    );
    // A fresh network (other initial weights): everything comes from the checkpoint.
    let fresh = small_cnn(&device);
    let resumed = fine_tune(fresh, ce.clone(), &data, None, &config_ckpt, None).unwrap();

    assert_eq!(snapshot(&straight.network), snapshot(&resumed.network));
    let losses =
        |h: &[signsym_models::EpochStats]| h.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&straight.history), losses(&resumed.history));
    assert_eq!(resumed.history.len(), 2);

    // The checkpoint directory holds one model and one optimizer file, and state.json.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["model-e2-s0.bpk", "optimizer-e2-s0.bpk", "state.json"]
    );

    // Resuming with other settings is refused.
    let other = config_ckpt.clone().with_seed(12);
    let err = fine_tune(small_cnn(&device), ce, &data, None, &other, None).unwrap_err();
    assert!(matches!(err, ModelError::Checkpoint { .. }), "{err}");
}

#[test]
fn switching_the_rule_changes_the_input_gradient_not_the_output() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let backbone = ResNetConfig::resnet18()
        .with_widths([4, 8, 8, 8])
        .with_cifar_stem(true)
        .init(&device)
        .unwrap();
    let mut net = eval_mode(Network::new(backbone, Task::classification(10), &device).unwrap());
    device.seed(5);
    let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let probe = Tensor::<2>::random([2, 10], Distribution::Normal(0.0, 1.0), &device);
    let run = |net: &Network<signsym_models::ResNet>| {
        let x = x.clone().require_grad();
        let out = net.forward(x.clone());
        let grads = (out.clone() * probe.clone()).sum().backward();
        let grad = x.grad(&grads).unwrap().try_to_vec_as::<f32>().unwrap();
        (out.inner().try_to_vec_as::<f32>().unwrap(), grad)
    };
    let (out_bp, grad_bp) = run(&net);
    for rule in [FeedbackRule::USf, FeedbackRule::FrSf, FeedbackRule::Fa] {
        set_rule(&mut net, rule, 3).unwrap();
        let (out, grad) = run(&net);
        assert_eq!(out, out_bp, "{rule:?} changed the forward pass");
        let diff: f32 = grad
            .iter()
            .zip(&grad_bp)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = grad_bp.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(
            diff > 0.1 * norm,
            "{rule:?}: input gradient moved by {diff} of {norm}"
        );
    }
    set_rule(&mut net, FeedbackRule::Bp, 3).unwrap();
    assert_eq!(run(&net).1, grad_bp);
}

fn check_shapes<M: Backbone>(backbone: M, size: usize, device: &Device) {
    let features = backbone.feature_dim();
    let x = Tensor::<4>::zeros([2, 3, size, size], device);
    assert_eq!(backbone.features(x.clone()).dims(), [2, features]);
    let classify = Network::new(backbone, Task::classification(7), device).unwrap();
    assert_eq!(classify.try_forward(x.clone()).unwrap().dims(), [2, 7]);
    let hashing = Network::new(classify.backbone, Task::hashing(32), device).unwrap();
    let codes = hashing.try_forward(x.clone()).unwrap();
    assert_eq!(codes.dims(), [2, 32]);
    assert!(
        codes
            .try_to_vec_as::<f32>()
            .unwrap()
            .iter()
            .all(|c| c.abs() < 1.0)
    );
    let binary = hashing.codes(x).unwrap().try_to_vec_as::<f32>().unwrap();
    assert!(binary.iter().all(|c| *c == 1.0 || *c == -1.0));
}

#[test]
fn output_shapes_at_32_and_224_pixels() {
    let _serial = crate::serial();
    let device = Device::flex();
    // Full-size AlexNet and ResNet-18; VGG-16 at full width only at 32×32 (224×224 costs
    // 15 GFLOPs per image) and narrow at 224×224, with the same structure.
    check_shapes(
        ResNetConfig::resnet18().init(&device).unwrap(),
        224,
        &device,
    );
    check_shapes(ResNetConfig::resnet18().init(&device).unwrap(), 32, &device);
    check_shapes(
        ResNetConfig::resnet18()
            .with_cifar_stem(true)
            .init(&device)
            .unwrap(),
        32,
        &device,
    );
    check_shapes(AlexNetConfig::new().init(&device).unwrap(), 224, &device);
    check_shapes(Vgg16Config::new().init(&device).unwrap(), 32, &device);
    check_shapes(
        Vgg16Config::new()
            .with_channels([4, 8, 8, 8, 8])
            .with_hidden(32)
            .init(&device)
            .unwrap(),
        224,
        &device,
    );
    assert_eq!(
        AlexNetConfig::new().init(&device).unwrap().feature_dim(),
        4096
    );
    assert_eq!(
        ResNetConfig::resnet18()
            .init(&device)
            .unwrap()
            .feature_dim(),
        512
    );

    // AlexNet's three 3×3/2 max-pools need 63 pixels: 32×32 is refused, not mis-computed.
    let alexnet = Network::new(
        AlexNetConfig::new().with_hidden(8).init(&device).unwrap(),
        Task::classification(7),
        &device,
    )
    .unwrap();
    let err = alexnet
        .try_forward(Tensor::zeros([1, 3, 32, 32], &device))
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::InputShape { reason, .. } if reason.contains("63×63")),
        "{err}"
    );
    assert!(
        alexnet
            .try_forward(Tensor::zeros([1, 3, 63, 63], &device))
            .is_ok()
    );
    assert!(
        alexnet
            .try_forward(Tensor::zeros([1, 3, 62, 62], &device))
            .is_err()
    );
    // Wrong channels and NaN inputs.
    assert!(matches!(
        alexnet.try_forward(Tensor::zeros([1, 1, 64, 64], &device)),
        Err(ModelError::InputShape { .. })
    ));
    let nan = Tensor::<4>::zeros([1, 3, 64, 64], &device).add_scalar(f32::NAN);
    assert!(matches!(
        alexnet.try_forward(nan),
        Err(ModelError::NonFiniteInput { .. })
    ));
}

#[test]
fn duplicates_share_no_batch_norm_statistics_while_clones_do() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let backbone = ResNetConfig::resnet18()
        .with_widths([4, 4, 4, 4])
        .with_cifar_stem(true)
        .init(&device)
        .unwrap();
    let net = Network::new(backbone, Task::classification(3), &device).unwrap();
    let mean = |n: &Network<signsym_models::ResNet>| {
        n.valid()
            .backbone
            .bn1
            .running_mean
            .value()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let start = mean(&net);
    let x = Tensor::<4>::ones([2, 3, 8, 8], &device);

    let copy = net.duplicate();
    let _ = copy.forward(x.clone());
    assert_ne!(
        mean(&copy),
        start,
        "a training-mode forward moves the statistics"
    );
    assert_eq!(
        mean(&net),
        start,
        "the duplicate's update leaked into the original"
    );

    let clone = net.clone();
    let _ = clone.forward(x);
    assert_ne!(
        mean(&net),
        start,
        "burn's clone shares the statistics (if this fails, burn changed and duplicate() can go)"
    );
}

/// Images with one-hot float labels, the targets HyP² takes.
struct OneHot<'a>(&'a ImageDataset);

impl BatchSource for OneHot<'_> {
    type Target = Tensor<2>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<2>), ModelError> {
        let (images, classes) = self.0.batch(indices, device)?;
        Ok((images, classes.one_hot(self.0.num_classes).float()))
    }
}

#[test]
fn hashing_fine_tune_trains_the_hyp2_proxies_at_the_head_rate() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let data = mnist_test(64);
    let backbone = SmallCnnConfig::new()
        .with_channels([4, 8])
        .with_hidden(16)
        .init(&device)
        .unwrap();
    let net = Network::new(backbone, Task::hashing(16), &device).unwrap();
    let hyp2 = signsym_losses::HyP2Config::new(10)
        .with_bits(16)
        .init(&device)
        .unwrap();
    let proxies_before = hyp2.proxies.val().into_data().try_to_vec::<f32>().unwrap();
    let config = FineTuneConfig::new()
        .with_backbone_lr(1e-3)
        .with_head_lr(1e-2)
        .with_weight_decay(0.0)
        .with_batch_size(64)
        .with_epochs(1)
        .with_progress(false);
    let tuned = fine_tune(net, hyp2, &OneHot(&data), None, &config, None).unwrap();
    let after = tuned
        .objective
        .proxies
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let step = proxies_before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!((step - 1e-2).abs() < 1e-4, "largest proxy update {step}");
    assert!(tuned.history[0].train_loss.is_finite());
}

/// Recalibration makes a batch norm's running mean the plain average of its batch means —
/// checked on the stem's batch norm against the stem convolution's output averaged on the host —
/// and leaves the network's momenta as they were.
#[test]
fn batch_norm_recalibration_averages_the_batch_means() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut net = narrow_mnist_resnet(&device);
    let data = mnist_test(96);
    let batches: Vec<Vec<usize>> = (0..3).map(|b| (b * 32..(b + 1) * 32).collect()).collect();
    signsym_models::recalibrate_batch_norm(
        &mut net,
        &data,
        batches.iter().map(|b| b.as_slice()),
        &device,
    )
    .unwrap();
    let channels = 4;
    let mut expected = vec![0f64; channels];
    for b in &batches {
        let (x, _) = data.batch(b, &device).unwrap();
        let y = net.backbone.conv1.forward(x);
        let [n, c, h, w] = y.dims();
        let values = y.into_data().try_to_vec::<f32>().unwrap();
        for (ch, e) in expected.iter_mut().enumerate() {
            let sum: f64 = (0..n)
                .flat_map(|i| values[(i * c + ch) * h * w..(i * c + ch + 1) * h * w].iter())
                .map(|&v| f64::from(v))
                .sum();
            *e += sum / (n * h * w) as f64 / batches.len() as f64;
        }
    }
    // `value_sync`: the last batch's update waits in a per-thread slot until the next read that
    // synchronises (as `valid()` does before an evaluation).
    let running = net
        .backbone
        .bn1
        .running_mean
        .value_sync()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for (ch, (r, e)) in running.iter().zip(&expected).enumerate() {
        assert!(
            (f64::from(*r) - e).abs() < 1e-4 * (1.0 + e.abs()),
            "channel {ch}: {r} vs {e}"
        );
    }
    // Not the initial statistics (zeros): the batches moved them.
    assert!(expected.iter().any(|e| e.abs() > 1e-3));
    assert_eq!(net.backbone.bn1.momentum, 0.1);
}
