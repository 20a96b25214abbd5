//! The Krotov–Hopfield rule against a hand-computed step and a host reference, its convergence
//! to unit p-norm, pruning, determinism and resumption, and the hybrid's accuracy on MNIST.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, Tensor, TensorData};
use signsym_data::read_idx;
use signsym_local::{HiddenLayer, KrotovHopfieldConfig, LocalError, train};
use signsym_losses::CrossEntropyConfig;
use signsym_models::{AccuracyEvaluator, Evaluator, FineTuneConfig, Network, Task, fine_tune};

fn host(t: Tensor<2>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().unwrap()
}

fn layer_with(
    w: Vec<f32>,
    dims: [usize; 2],
    config: &KrotovHopfieldConfig,
    device: &Device,
) -> signsym_local::KrotovHopfield {
    let mut layer = config.init(dims[1], device).unwrap();
    layer.synapses =
        burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(w, dims), device));
    layer
}

/// W = [[1, 0], [0, 1], [.5, .5]], x = [1, 2], p = 2, k = 2, Δ = 0.4, ε = 0.1: currents
/// [1, 2, 1.5]; unit 1 wins, unit 2 (second) is inhibited; g = [0, 1, −0.4], g∘I = [0, 2, −0.6];
/// dW = [[0, 0], [1, 0], [−0.1, −0.5]], max |dW| = 1.
#[test]
fn one_step_by_hand() {
    let device = Device::flex();
    let config = KrotovHopfieldConfig::new()
        .with_hidden(3)
        .with_k(2)
        .with_p(2.0)
        .with_delta(0.4);
    let mut layer = layer_with(vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5], [3, 2], &config, &device);
    let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
    layer.step(x, 0.1, &config).unwrap();
    let w = host(layer.synapses.val());
    let expected = [1.0, 0.0, 0.1, 1.0, 0.49, 0.45];
    for (a, b) in w.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{w:?} vs {expected:?}");
    }
}

/// A random case with p = 3, k = 3 and a batch of 4 against a host loop of the rule's formulas.
#[test]
fn a_step_matches_a_host_reference() {
    let device = Device::flex();
    let (hidden, n, b, p, k, delta, eps) =
        (5usize, 6usize, 4usize, 3.0f64, 3usize, 0.3f64, 0.05f64);
    let config = KrotovHopfieldConfig::new()
        .with_hidden(hidden)
        .with_k(k)
        .with_p(p)
        .with_delta(delta);
    let w: Vec<f32> = (0..hidden * n)
        .map(|i| ((i * 7 + 3) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let x: Vec<f32> = (0..b * n)
        .map(|i| ((i * 5 + 1) % 13) as f32 / 13.0)
        .collect();
    let mut layer = layer_with(w.clone(), [hidden, n], &config, &device);
    layer
        .step(
            Tensor::from_data(TensorData::new(x.clone(), [b, n]), &device),
            eps,
            &config,
        )
        .unwrap();
    let got = host(layer.synapses.val());
    // Host reference in f64.
    let wd: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let mut ds = vec![0.0f64; hidden * n];
    let mut xx = vec![0.0f64; hidden];
    let mut g_all = vec![0.0f64; b * hidden];
    for s in 0..b {
        let current: Vec<f64> = (0..hidden)
            .map(|h| {
                (0..n)
                    .map(|i| {
                        wd[h * n + i].signum()
                            * wd[h * n + i].abs().powf(p - 1.0)
                            * f64::from(x[s * n + i])
                    })
                    .sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..hidden).collect();
        order.sort_by(|&a, &c| current[c].total_cmp(&current[a]));
        g_all[s * hidden + order[0]] = 1.0;
        g_all[s * hidden + order[k - 1]] = -delta;
        for h in 0..hidden {
            xx[h] += g_all[s * hidden + h] * current[h];
        }
    }
    for h in 0..hidden {
        for i in 0..n {
            let hebb: f64 = (0..b)
                .map(|s| g_all[s * hidden + h] * f64::from(x[s * n + i]))
                .sum();
            ds[h * n + i] = hebb - xx[h] * wd[h * n + i];
        }
    }
    let nc = ds.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (j, g) in got.iter().enumerate() {
        let want = wd[j] + eps * ds[j] / nc;
        assert!(
            (f64::from(*g) - want).abs() < 1e-5,
            "synapse {j}: {g} vs {want}"
        );
    }
}

/// `samples × dim` Gaussian features whose covariance has eigenvalues `n^(−α)` along a random
/// orthonormal basis (Gram–Schmidt on a seeded Gaussian matrix).
fn power_law_features(alpha: f64, samples: usize, dim: usize, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    let mut gauss = || -> f64 { StandardNormal.sample(&mut rng) };
    let mut basis: Vec<Vec<f64>> = Vec::new();
    while basis.len() < dim {
        let mut v: Vec<f64> = (0..dim).map(|_| gauss()).collect();
        for b in &basis {
            let d: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        basis.push(v.into_iter().map(|x| x / n).collect());
    }
    let mut out = Vec::with_capacity(samples * dim);
    for _ in 0..samples {
        let z: Vec<f64> = (0..dim)
            .map(|k| gauss() * ((k + 1) as f64).powf(-alpha / 2.0))
            .collect();
        for i in 0..dim {
            out.push(basis.iter().zip(&z).map(|(b, c)| b[i] * c).sum::<f64>() as f32);
        }
    }
    out
}

fn mnist(n: usize) -> (Vec<f32>, signsym_data::ImageDataset) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let all = read_idx(
        dir.join("mnist-train-images-idx3-ubyte.gz"),
        dir.join("mnist-train-labels-idx1-ubyte.gz"),
        10,
    )
    .unwrap();
    let d = all.select(&(0..n).collect::<Vec<_>>());
    (d.images.clone(), d)
}

/// The learned vectors converge towards unit p-norm, training is deterministic, an interrupted
/// run resumes to the same synapses, and pruning removes exactly the high-variance synapses.
#[test]
fn training_converges_repeats_resumes_and_prunes() {
    let device = Device::flex();
    let (data, _) = mnist(1000);
    let config = KrotovHopfieldConfig::new()
        .with_hidden(30)
        .with_epochs(30)
        .with_batch_size(20)
        .with_learning_rate(0.04)
        .with_seed(5);
    let a = train(&data, 784, &config, &device, None, false, None).unwrap();
    let first = a.history[0].norm_deviation;
    let last = a.history.last().unwrap().norm_deviation;
    println!("median |Σ|W|^p − 1|: epoch 1 {first:.4}, epoch 30 {last:.4}");
    // N(0, 1) synapses start near Σ w² = 784.
    assert!(first > 100.0 && last < 0.02, "{first} → {last}");
    let b = train(&data, 784, &config, &device, None, false, None).unwrap();
    assert_eq!(host(a.layer.synapses.val()), host(b.layer.synapses.val()));

    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let err = train(
        &data,
        784,
        &config,
        &device,
        Some(dir.path()),
        false,
        Some(stop),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        LocalError::Interrupted {
            completed_epochs: 1
        }
    ));
    let resumed = train(&data, 784, &config, &device, Some(dir.path()), false, None).unwrap();
    let bits = |t: Tensor<2>| host(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(resumed.layer.synapses.val()),
        bits(a.layer.synapses.val())
    );
    assert_eq!(resumed.history, a.history);
    let other = config.clone().with_seed(6);
    assert!(matches!(
        train(&data, 784, &other, &device, Some(dir.path()), false, None),
        Err(LocalError::Checkpoint { .. })
    ));
    // A truncated layer file or a corrupt state file is an error naming it, never a restart.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    let model = dir
        .path()
        .join(state["state"]["model_file"].as_str().unwrap());
    let bytes = std::fs::read(&model).unwrap();
    // One synapse's byte changed (the file still parses) is found by the checksum.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    std::fs::write(&model, &flipped).unwrap();
    match train(&data, 784, &config, &device, Some(dir.path()), false, None) {
        Err(LocalError::Checkpoint { path, message }) => {
            assert_eq!(path, model);
            assert!(message.contains("CRC-32"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    match train(&data, 784, &config, &device, Some(dir.path()), false, None) {
        Err(LocalError::Checkpoint { path, .. }) => assert_eq!(path, model),
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.path().join("state.json"), b"{\"state\": ").unwrap();
    match train(&data, 784, &config, &device, Some(dir.path()), false, None) {
        Err(LocalError::Checkpoint { path, .. }) => assert_eq!(path, dir.path().join("state.json")),
        other => panic!("{other:?}"),
    }

    // Pruning: exactly the synapses whose variance over the snapshots exceeds the threshold.
    let mut layer = a.layer;
    let variance = host(layer.synapse_variance(a.snapshots));
    let threshold = {
        let mut v = variance.clone();
        v.sort_by(f32::total_cmp);
        f64::from(v[v.len() * 9 / 10])
    };
    let before = host(layer.synapses.val());
    let pruned = layer.prune(threshold, a.snapshots).unwrap();
    let after = host(layer.synapses.val());
    let expected = variance
        .iter()
        .filter(|&&v| f64::from(v) > threshold)
        .count();
    assert_eq!(pruned, expected);
    for ((v, b), a) in variance.iter().zip(&before).zip(&after) {
        if f64::from(*v) > threshold {
            assert_eq!(*a, 0.0);
        } else {
            assert_eq!(a, b);
        }
    }
    assert!(pruned > 0 && pruned < variance.len() / 5);
    assert!(KrotovHopfieldConfig::new().with_k(1).validate().is_err());
    assert!(train(&data[..100], 784, &config, &device, None, false, None).is_err());
}

/// The hybrid (frozen rule layer, supervised head) reaches a fixed accuracy on 10,000 bundled
/// MNIST images; the original reports 98.5 % test accuracy with 2,000 units and the full set.
#[test]
fn the_hybrid_learns_mnist() {
    let device = Device::flex().autodiff();
    let (data, train_set) = mnist(6000);
    let config = KrotovHopfieldConfig::new()
        .with_hidden(200)
        .with_p(2.0)
        .with_k(2)
        .with_epochs(30)
        .with_learning_rate(0.1)
        .with_seed(1);
    let rule = train(
        &data,
        784,
        &config,
        &device.clone().inner(),
        None,
        false,
        None,
    )
    .unwrap();
    let test = {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        read_idx(
            dir.join("mnist-t10k-images-idx3-ubyte.gz"),
            dir.join("mnist-t10k-labels-idx1-ubyte.gz"),
            10,
        )
        .unwrap()
        .select(&(0..2000).collect::<Vec<_>>())
    };
    let synapses = rule.layer;
    let mut hidden = HiddenLayer::from_synapses(&synapses, 3.0, 1, 28, &device).unwrap();
    let sample = Tensor::<2>::from_data(
        TensorData::new(data[..784 * 500].to_vec(), [500, 784]),
        &device,
    );
    let scale = hidden.calibrate(sample.reshape([500, 1, 28, 28])).unwrap();
    assert!(scale > 0.0 && scale < 1.0, "{scale}");
    device.seed(2);
    let network = Network::new(hidden, Task::classification(10), &device).unwrap();
    let ce = CrossEntropyConfig::new().init(&device).unwrap();
    let head = FineTuneConfig::new()
        .with_backbone_lr(0.0)
        .with_head_lr(2e-3)
        .with_weight_decay(0.0)
        .with_epochs(5)
        .with_progress(false);
    let trained = fine_tune(network, ce, &train_set, None, &head, None)
        .unwrap()
        .network;
    let accuracy = AccuracyEvaluator::new(&test, 500)
        .evaluate(&trained)
        .unwrap();
    println!("hybrid (200 units, 6,000 images): test accuracy {accuracy:.4}");
    // Measured 0.806 (seed 1); the original reports 98.5 % with 2,000 units, p = 3, k = 7 and
    // the full training set.
    assert!(accuracy > 0.76, "{accuracy}");
    // The hidden representation's spectrum follows a power law over the fitted ranks, and the
    // fit recovers that exponent from synthetic features built with exactly that spectrum.
    let probe = Tensor::<2>::from_data(
        TensorData::new(test.images[..784 * 1000].to_vec(), [1000, 784]),
        &device,
    )
    .reshape([1000, 1, 28, 28]);
    let features = signsym_models::Backbone::features(&trained.backbone, probe);
    let dim = features.dims()[1];
    let spectrum =
        signsym_metrics::activation_spectrum(&host(features.inner()), 1000, dim).unwrap();
    let (first, last) = (2, 50);
    let fit = signsym_metrics::fit_power_law(&spectrum, first, last).unwrap();
    println!(
        "hybrid features: α = {:.3} over ranks {first}-{last}, r² {:.3}",
        fit.alpha, fit.r_squared
    );
    assert!(
        fit.r_squared > 0.95 && fit.alpha > 0.5 && fit.alpha < 4.0,
        "{fit:?}"
    );
    let synthetic = power_law_features(fit.alpha, 4000, 120, 9);
    let again = signsym_metrics::fit_power_law(
        &signsym_metrics::activation_spectrum(&synthetic, 4000, 120).unwrap(),
        first,
        last,
    )
    .unwrap();
    assert!(
        (again.alpha - fit.alpha).abs() < 0.1,
        "{} vs {}",
        again.alpha,
        fit.alpha
    );
    // The rule's layer stayed frozen.
    assert_eq!(
        host(trained.backbone.layer.weight.val().transpose().inner()),
        host(synapses.synapses.val())
    );
}
