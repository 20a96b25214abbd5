//! The terms of the training objective against closed forms, and a resumed run with every
//! term active against an uninterrupted one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Int, Tensor, TensorData};
use signsym_data::{ImageDataset, read_idx};
use signsym_feedback::layers::FeedbackLinearConfig;
use signsym_losses::CrossEntropyConfig;
use signsym_models::{
    FineTuneConfig, JacobianTerm, L2Term, ModelError, Network, SmallCnn, SmallCnnConfig,
    SpectralLayers, SpectralTerm, Step, Task, Term, fine_tune_with,
};

fn data(n: usize) -> ImageDataset {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    read_idx(
        dir.join("mnist-t10k-images-idx3-ubyte.gz"),
        dir.join("mnist-t10k-labels-idx1-ubyte.gz"),
        10,
    )
    .unwrap()
    .select(&(0..n).collect::<Vec<_>>())
}

fn small_cnn(device: &Device) -> Network<SmallCnn> {
    let backbone = SmallCnnConfig::new()
        .with_channels([4, 8])
        .with_hidden(16)
        .init(device)
        .unwrap();
    Network::new(backbone, Task::classification(10), device).unwrap()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().unwrap()
}

fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    use signsym_models::BatchSource;
    data(8).batch(&(0..8).collect::<Vec<_>>(), device).unwrap()
}

/// L2: `(λ/2) Σ‖W‖²` over the layer weights, gradient `λ·W`; biases untouched.
#[test]
fn l2_term_is_half_lambda_times_the_squared_weights() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    device.seed(1);
    let net = small_cnn(&device);
    let (x, y) = batch(&device);
    let mut step = Step::new(&net, &x, &y, (0, 0, 0));
    let lambda = 0.3;
    let mut term = L2Term::new(lambda).unwrap();
    let value = Term::<SmallCnn, _>::value(&mut term, &mut step).unwrap();
    let weights = [
        host(net.backbone.conv1.weight.val()),
        host(net.backbone.conv2.weight.val()),
        host(net.backbone.fc1.weight.val()),
        host(net.head.linear.weight.val()),
    ];
    let expected: f64 = weights
        .iter()
        .flatten()
        .map(|w| f64::from(*w).powi(2))
        .sum::<f64>()
        * lambda
        / 2.0;
    let got = f64::from(host(value.clone())[0]);
    assert!(
        (got - expected).abs() < 1e-5 * expected,
        "{got} vs {expected}"
    );
    let grads = value.backward();
    let g = host(net.backbone.conv2.weight.grad(&grads).unwrap());
    for (g, w) in g.iter().zip(&weights[1]) {
        assert!((g - lambda as f32 * w).abs() < 1e-6);
    }
    assert!(
        net.backbone
            .conv2
            .bias
            .as_ref()
            .unwrap()
            .grad(&grads)
            .is_none()
    );
    assert!(L2Term::new(-1.0).is_err());
}

/// Jacobian: for `f(x) = x·W`, `J v = v·W` exactly (central differences are exact on a linear
/// map), so the estimate is the mean of `‖v·W‖²` over the seeded projections, and its gradient
/// in `W` is `2/(K·B) Σ vᵀ(v·W)`.
#[test]
fn jacobian_term_is_the_projected_norm_in_closed_form() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    device.seed(2);
    let (d_in, d_out, batch, k) = (5, 3, 4, 6);
    let layer = FeedbackLinearConfig::new(d_in, d_out)
        .with_bias(false)
        .init(&device);
    let x = Tensor::<2>::from_data(
        TensorData::new(
            (0..batch * d_in)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>(),
            [batch, d_in],
        ),
        &device,
    );
    let term = JacobianTerm::new(1.0, k, 1e-2).unwrap();
    let estimate = term.estimate(&x, |x| layer.forward(x), 9);
    // The same projections, drawn as the term draws them.
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(9);
    let w = host(layer.weight.val());
    let mut expected = 0.0f64;
    let mut grad = vec![0.0f64; d_in * d_out];
    for _ in 0..k {
        let v: Vec<f32> = (0..batch * d_in)
            .map(|_| rand_distr::StandardNormal.sample(&mut rng))
            .collect();
        for b in 0..batch {
            for o in 0..d_out {
                let jv: f64 = (0..d_in)
                    .map(|i| f64::from(v[b * d_in + i]) * f64::from(w[i * d_out + o]))
                    .sum();
                expected += jv * jv;
                for i in 0..d_in {
                    grad[i * d_out + o] += 2.0 * jv * f64::from(v[b * d_in + i]);
                }
            }
        }
    }
    let scale = (k * batch) as f64;
    let got = f64::from(host(estimate.clone())[0]);
    assert!(
        (got - expected / scale).abs() < 1e-3 * expected / scale,
        "{got} vs {}",
        expected / scale
    );
    let grads = estimate.backward();
    let g = host(layer.weight.grad(&grads).unwrap());
    for (g, e) in g.iter().zip(&grad) {
        assert!(
            (f64::from(*g) - e / scale).abs() < 2e-3 * (1.0 + e.abs() / scale),
            "{g} vs {}",
            e / scale
        );
    }
    assert!(JacobianTerm::new(1.0, 0, 1e-2).is_err());
}

/// The hidden-only spectral term sends no gradient to the head; its vectors survive a
/// state round trip.
#[test]
fn spectral_term_skips_the_head_and_keeps_its_vectors() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    device.seed(3);
    let net = small_cnn(&device);
    let (x, y) = batch(&device);
    let mut hidden = SpectralTerm::new(0.5, SpectralLayers::Hidden, 3, 4).unwrap();
    let mut step = Step::new(&net, &x, &y, (0, 0, 0));
    let value = Term::<SmallCnn, _>::value(&mut hidden, &mut step).unwrap();
    let grads = value.backward();
    assert!(
        net.head.linear.weight.grad(&grads).is_none(),
        "the head is penalised"
    );
    assert!(net.backbone.fc1.weight.grad(&grads).is_some());
    let mut all = SpectralTerm::new(0.5, SpectralLayers::All, 3, 4).unwrap();
    let grads = Term::<SmallCnn, _>::value(&mut all, &mut step)
        .unwrap()
        .backward();
    assert!(net.head.linear.weight.grad(&grads).is_some());

    // A copy restored from the state gives the next value bit for bit.
    let state = Term::<SmallCnn, Tensor<1, Int>>::state(&hidden).unwrap();
    let mut restored = SpectralTerm::new(0.5, SpectralLayers::Hidden, 3, 4).unwrap();
    Term::<SmallCnn, Tensor<1, Int>>::load_state(&mut restored, state).unwrap();
    let a = host(Term::<SmallCnn, _>::value(&mut hidden, &mut step).unwrap());
    let b = host(Term::<SmallCnn, _>::value(&mut restored, &mut step).unwrap());
    assert_eq!(a[0].to_bits(), b[0].to_bits());
}

/// Raises a stop flag after a given step (its value is zero).
struct StopAt {
    at: (usize, usize),
    flag: Arc<AtomicBool>,
}

impl Term<SmallCnn, Tensor<1, Int>> for StopAt {
    fn name(&self) -> &str {
        "stop"
    }

    fn value(
        &mut self,
        step: &mut Step<'_, SmallCnn, Tensor<1, Int>>,
    ) -> Result<Tensor<1>, ModelError> {
        if (step.epoch, step.step) == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
        Ok(Tensor::zeros([1], &step.images.device()))
    }

    fn fingerprint(&self) -> String {
        "stop".into()
    }
}

fn terms(
    flag: &Arc<AtomicBool>,
    at: (usize, usize),
) -> Vec<Box<dyn Term<SmallCnn, Tensor<1, Int>>>> {
    vec![
        Box::new(L2Term::new(1e-3).unwrap()),
        Box::new(SpectralTerm::new(0.05, SpectralLayers::Hidden, 1, 5).unwrap()),
        Box::new(JacobianTerm::new(0.01, 1, 1e-2).unwrap()),
        Box::new(StopAt {
            at,
            flag: flag.clone(),
        }),
    ]
}

/// Interrupted inside an epoch and resumed, a run with every term active ends with the same
/// weights and the same log as an uninterrupted one.
#[test]
fn resume_with_every_term_is_bit_identical() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let train = data(96);
    let run = |dir: Option<PathBuf>, at: (usize, usize)| {
        device.seed(6);
        let flag = Arc::new(AtomicBool::new(false));
        let config = FineTuneConfig::new()
            .with_epochs(2)
            .with_batch_size(16)
            .with_backbone_lr(1e-3)
            .with_head_lr(1e-2)
            .with_seed(8)
            .with_progress(false)
            .with_checkpoint_dir(dir);
        let ce = CrossEntropyConfig::new().init(&device).unwrap();
        let mut t = terms(&flag, at);
        fine_tune_with(
            small_cnn(&device),
            ce,
            &mut t,
            &train,
            None,
            &config,
            Some(flag),
        )
    };
    let straight = run(None, (99, 99)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = run(Some(dir.path().into()), (1, 2));
    assert!(matches!(
        first,
        Err(ModelError::Interrupted {
            completed_epochs: 1
        })
    ));
    let resumed = run(Some(dir.path().into()), (99, 99)).unwrap();
    let params = |n: &Network<SmallCnn>| {
        n.clone()
            .collect(None, None, false)
            .into_iter()
            .flat_map(|t| {
                burn::store::bridge::to_data(&t)
                    .unwrap()
                    .try_to_vec::<f32>()
                    .unwrap()
            })
            .map(f32::to_bits)
            .collect::<Vec<_>>()
    };
    assert_eq!(params(&straight.network), params(&resumed.network));
    let strip = |h: &[signsym_models::EpochStats]| {
        h.iter()
            .map(|e| {
                (
                    e.train_loss.to_bits(),
                    e.terms
                        .iter()
                        .map(|t| (t.name.clone(), t.mean.to_bits()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&straight.history), strip(&resumed.history));
    let names: Vec<&str> = straight.history[0]
        .terms
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["task", "l2", "spectral", "jacobian", "stop"]);
    assert!(
        straight.history[0]
            .terms
            .iter()
            .all(|t| t.mean.is_finite() && t.seconds >= 0.0)
    );
    assert!(straight.history[0].terms[2].mean > 0.0 && straight.history[0].terms[4].mean == 0.0);
}

/// Training with the hidden-layer spectral term lowers σ_max of every penalised layer.
#[test]
fn spectral_term_lowers_the_penalised_singular_values() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let train = data(256);
    let sigma = |net: &Network<SmallCnn>| {
        let mut r = signsym_losses::SpectralRegularizerConfig::new()
            .with_power_iterations(100)
            .with_skip_last(false)
            .init()
            .unwrap();
        use signsym_feedback::FeedbackModule;
        let mut out = Vec::new();
        net.visit_feedback("", &mut |path, layer| {
            out.push((path.to_string(), layer.weight_matrix().detach()));
        });
        out.into_iter()
            .map(|(p, w)| r.sigma_max(&p, w).into_scalar::<f32>())
            .collect::<Vec<_>>()
    };
    let run = |gamma: Option<f64>| {
        device.seed(4);
        let config = FineTuneConfig::new()
            .with_epochs(3)
            .with_backbone_lr(3e-3)
            .with_head_lr(3e-3)
            .with_seed(4)
            .with_progress(false);
        let ce = CrossEntropyConfig::new().init(&device).unwrap();
        let mut t: Vec<Box<dyn Term<SmallCnn, Tensor<1, Int>>>> = match gamma {
            Some(g) => vec![Box::new(
                SpectralTerm::new(g, SpectralLayers::Hidden, 1, 0).unwrap(),
            )],
            None => Vec::new(),
        };
        fine_tune_with(small_cnn(&device), ce, &mut t, &train, None, &config, None)
            .unwrap()
            .network
    };
    let (plain, penalised) = (sigma(&run(None)), sigma(&run(Some(0.5))));
    println!("σ_max without {plain:?}, with the hidden-layer term {penalised:?}");
    for k in 0..plain.len() - 1 {
        assert!(
            penalised[k] < plain[k],
            "layer {k}: {} vs {}",
            penalised[k],
            plain[k]
        );
    }
}
