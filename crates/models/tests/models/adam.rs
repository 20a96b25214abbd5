//! The fused Adam against burn's `Adam`: the same parameters and moments to the bit.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, decay::WeightDecayConfig};
use burn::tensor::{Device, Tensor, TensorData};
use signsym_feedback::AdamUpdate;
use signsym_models::{BatchSource, FusedAdamConfig};

use crate::training::{mnist_test, small_cnn, snapshot};

/// Five steps of each optimizer from the same network on the same batches, with and without
/// weight decay: every parameter equal to the bit after every step. The network stays shared
/// with a clone for the first step, so the copy path (another holder of the buffer) runs too.
#[test]
fn fused_adam_equals_burn_adam_to_the_bit() {
    let _serial = crate::serial();
    let device = Device::flex().autodiff();
    let data = mnist_test(64);
    let indices: Vec<usize> = (0..32).collect();
    let (x, _) = data.batch(&indices, &device).unwrap();
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i] as i64).collect();
    let y = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(labels, [32]), &device);
    let ce = CrossEntropyLossConfig::new().init(&device);
    for decay in [None, Some(5e-4f32)] {
        let net = small_cnn(&device);
        let mut burn_adam: ModuleOptimizer = AdamConfig::new()
            .with_weight_decay(decay.map(WeightDecayConfig::new))
            .init();
        let mut fused: ModuleOptimizer = FusedAdamConfig::new().with_weight_decay(decay).init();
        let (mut a, mut b) = (net.clone(), net.clone());
        for step in 0..5 {
            let grads_a = GradientsParams::from_grads(
                ce.forward(a.forward(x.clone()), y.clone()).backward(),
                &a,
            );
            let grads_b = GradientsParams::from_grads(
                ce.forward(b.forward(x.clone()), y.clone()).backward(),
                &b,
            );
            a = burn_adam.step(1e-2, a, grads_a);
            b = fused.step(1e-2, b, grads_b);
            let (sa, sb) = (snapshot(&a), snapshot(&b));
            assert_eq!(sa.len(), sb.len());
            for ((name, va), (_, vb)) in sa.iter().zip(&sb) {
                let same = va.iter().zip(vb).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "decay {decay:?}, step {step}: {name} differs");
            }
        }
        // The parameters moved: the comparison above was not between two untouched networks.
        let (s0, s5) = (snapshot(&net), snapshot(&b));
        assert!(s0.iter().zip(&s5).any(|((_, p), (_, q))| p != q));
    }
}

/// The tensor-level update against a host loop of the formula, on the device the tests run
/// on, plus its typed errors.
#[test]
fn adam_update_follows_the_formula_and_refuses_bad_shapes() {
    let device = Device::flex();
    let theta = [0.5f32, -1.0, 2.0, 0.0];
    let grads = [[0.1f32, -0.2, 0.3, 0.0], [-0.4, 0.1, 0.2, 1.0]];
    let tensor =
        |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let update = |time| AdamUpdate {
        beta_1: 0.8,
        beta_2: 0.9,
        epsilon: 1e-3,
        weight_decay: Some(0.1),
        lr: 0.05,
        time,
    };
    // Host reference in f64.
    let (mut p, mut m, mut v) = (theta.map(f64::from), [0.0f64; 4], [0.0f64; 4]);
    let mut state: Option<(Tensor<1>, Tensor<1>)> = None;
    let mut t = tensor(&theta);
    for (k, g) in grads.iter().enumerate() {
        let time = k + 1;
        for i in 0..4 {
            let gi = f64::from(g[i]) + 0.1 * p[i];
            m[i] = 0.8 * m[i] + 0.2 * gi;
            v[i] = 0.9 * v[i] + 0.1 * gi * gi;
            let (mh, vh) = (
                m[i] / (1.0 - 0.8f64.powi(time as i32)),
                v[i] / (1.0 - 0.9f64.powi(time as i32)),
            );
            p[i] -= 0.05 * mh / (vh.sqrt() + 1e-3);
        }
        let (nt, nm, nv) =
            signsym_feedback::ops::adam_update(t, tensor(g), state, update(time)).unwrap();
        let got = nt.clone().into_data().try_to_vec::<f32>().unwrap();
        for i in 0..4 {
            assert!(
                (f64::from(got[i]) - p[i]).abs() < 1e-5,
                "step {time}, {i}: {} vs {}",
                got[i],
                p[i]
            );
        }
        t = nt;
        state = Some((nm, nv));
    }
    let bad =
        signsym_feedback::ops::adam_update(tensor(&theta), tensor(&[1.0, 2.0]), None, update(1));
    assert!(matches!(
        bad,
        Err(signsym_feedback::FeedbackError::InputShape { .. })
    ));
    let zero = signsym_feedback::ops::adam_update(tensor(&theta), tensor(&theta), None, update(0));
    assert!(matches!(
        zero,
        Err(signsym_feedback::FeedbackError::InvalidConfig(_))
    ));
}
