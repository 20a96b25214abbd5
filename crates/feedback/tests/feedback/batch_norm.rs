//! The batch-norm ops against burn's `batch_norm_train` (values, statistics and all three
//! gradients through burn's own autodiff) and against a host computation in `f64`.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use signsym_feedback::FeedbackError;
use signsym_feedback::ops::{batch_norm_train, channel_affine};

use crate::common::{assert_close, devices, host};

/// Per channel `(mean, biased variance)` of a `[n, c, ...]` host buffer, in `f64`.
fn host_stats(values: &[f32], dims: &[usize]) -> Vec<(f64, f64)> {
    let (n, c) = (dims[0], dims[1]);
    let inner: usize = dims[2..].iter().product();
    (0..c)
        .map(|ch| {
            let all: Vec<f64> = (0..n)
                .flat_map(|s| {
                    let start = (s * c + ch) * inner;
                    values[start..start + inner].iter().map(|&v| v as f64)
                })
                .collect();
            let mean = all.iter().sum::<f64>() / all.len() as f64;
            let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
            (mean, var)
        })
        .collect()
}

fn check_against_burn<const D: usize>(shape: [usize; D], offset: f32, device: &Device) {
    let what = format!("{shape:?} + {offset} on {device:?}");
    let x0 = Tensor::<D>::random(shape, Distribution::Normal(0.0, 2.0), device).add_scalar(offset);
    let channels = shape[1];
    let gamma0 = Tensor::<1>::random([channels], Distribution::Uniform(0.5, 1.5), device);
    let beta0 = Tensor::<1>::random([channels], Distribution::Uniform(-1.0, 1.0), device);
    let weights = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let leaves = || {
        (
            x0.clone().detach().require_grad(),
            gamma0.clone().detach().require_grad(),
            beta0.clone().detach().require_grad(),
        )
    };

    let (x, gamma, beta) = leaves();
    let ours = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5).unwrap();
    let grads = (ours.output.clone() * weights.clone()).sum().backward();
    let ours_grads = (
        x.grad(&grads).unwrap(),
        gamma.grad(&grads).unwrap(),
        beta.grad(&grads).unwrap(),
    );

    let (x, gamma, beta) = leaves();
    let theirs =
        burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let grads = (theirs.output.clone() * weights).sum().backward();
    let theirs_grads = (
        x.grad(&grads).unwrap(),
        gamma.grad(&grads).unwrap(),
        beta.grad(&grads).unwrap(),
    );

    // The statistics against a host computation in f64.
    let stats = host_stats(&host(x0.clone()), &shape);
    let (mean, var) = (host(ours.mean.clone()), host(ours.variance.clone()));
    for (c, &(m, v)) in stats.iter().enumerate() {
        assert!(
            (mean[c] as f64 - m).abs() <= 1e-5 * (1.0 + m.abs()),
            "{what}: mean of channel {c}: {} against {m}",
            mean[c]
        );
        assert!(
            (var[c] as f64 - v).abs() <= 1e-4 * v,
            "{what}: variance of channel {c}: {} against {v}",
            var[c]
        );
    }
    assert_close(&format!("{what}: mean"), ours.mean, theirs.mean, 1e-5);
    assert_close(
        &format!("{what}: variance"),
        ours.variance,
        theirs.variance,
        1e-4,
    );
    assert_close(&format!("{what}: output"), ours.output, theirs.output, 1e-4);
    let (ox, og, ob) = ours_grads;
    let (tx, tg, tb) = theirs_grads;
    assert_close(
        &format!("{what}: dx"),
        Tensor::<D>::from_inner(ox),
        Tensor::<D>::from_inner(tx),
        1e-3,
    );
    assert_close(
        &format!("{what}: dγ"),
        Tensor::<1>::from_inner(og),
        Tensor::<1>::from_inner(tg),
        1e-4,
    );
    assert_close(
        &format!("{what}: dβ"),
        Tensor::<1>::from_inner(ob),
        Tensor::<1>::from_inner(tb),
        1e-5,
    );
}

#[test]
fn batch_norm_train_equals_burns_values_statistics_and_gradients() {
    let _guard = crate::common::serial();
    for device in devices() {
        device.seed(11);
        // ResNet-18's shapes at 32×32 (8×8 after the torchvision stem, 1×1 in the last stage),
        // a row count off the 16-lane blocks, ranks 2 and 3, and a mean far from zero (the
        // variance is the mean of centred squares, not E[x²] − E[x]²).
        check_against_burn([8, 16, 8, 8], 0.0, &device);
        check_against_burn([32, 24, 1, 1], 0.0, &device);
        check_against_burn([3, 5, 7, 9], 100.0, &device);
        check_against_burn([6, 4], 0.0, &device);
        check_against_burn([4, 3, 37], -50.0, &device);
    }
}

#[test]
fn batch_norm_train_input_gradient_matches_finite_differences() {
    // An independent check of the closed form: central differences in f64 of the loss
    // Σ w·y, y computed on the host from the definition.
    let device = Device::flex().autodiff();
    let shape = [3, 2, 2, 2];
    let values: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
    let weights: Vec<f64> = (0..24).map(|i| ((i * 5 % 13) as f64 - 6.0) * 0.1).collect();
    let (gamma, beta) = ([1.3f32, 0.7], [0.2f32, -0.4]);
    let loss = |v: &[f64]| -> f64 {
        let mut total = 0.0;
        for c in 0..2 {
            let idx: Vec<usize> = (0..3)
                .flat_map(|n| (0..4).map(move |i| (n * 2 + c) * 4 + i))
                .collect();
            let mean = idx.iter().map(|&i| v[i]).sum::<f64>() / 12.0;
            let var = idx.iter().map(|&i| (v[i] - mean).powi(2)).sum::<f64>() / 12.0;
            for &i in &idx {
                let y = (v[i] - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
                total += weights[i] * y;
            }
        }
        total
    };
    let base: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let x = Tensor::<4>::from_data(TensorData::new(values, shape), &device).require_grad();
    let g = Tensor::<1>::from_floats(gamma, &device);
    let b = Tensor::<1>::from_floats(beta, &device);
    let w = Tensor::<4>::from_data(
        TensorData::new(weights.iter().map(|&v| v as f32).collect(), shape),
        &device,
    );
    let y = batch_norm_train(x.clone(), g, b, 1e-5).unwrap().output;
    let dx = host(Tensor::<4>::from_inner(
        x.grad(&(y * w).sum().backward()).unwrap(),
    ));
    for i in 0..24 {
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += 1e-4;
        down[i] -= 1e-4;
        let fd = (loss(&up) - loss(&down)) / 2e-4;
        assert!(
            (dx[i] as f64 - fd).abs() <= 1e-3 * (1.0 + fd.abs()),
            "dx[{i}] = {} against finite differences {fd}",
            dx[i]
        );
    }
}

#[test]
fn channel_affine_equals_broadcast_ops_and_its_gradient_is_the_scale() {
    let _guard = crate::common::serial();
    for device in devices() {
        device.seed(5);
        for shape in [[4, 6, 5, 3], [32, 16, 1, 1]] {
            let x =
                Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let scale = Tensor::<1>::random([shape[1]], Distribution::Normal(0.0, 1.0), &device);
            let shift = Tensor::<1>::random([shape[1]], Distribution::Normal(0.0, 1.0), &device);
            let weights = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let per_channel = |t: Tensor<1>| t.reshape([1, shape[1], 1, 1]);
            let y = channel_affine(x.clone(), scale.clone(), Some(shift.clone())).unwrap();
            let want = x.clone() * per_channel(scale.clone()) + per_channel(shift);
            assert_close("channel_affine output", y.clone(), want, 1e-6);
            let dx = x.grad(&(y * weights.clone()).sum().backward()).unwrap();
            let want = weights.inner() * per_channel(scale.clone()).inner();
            assert_close(
                "channel_affine dx",
                Tensor::<4>::from_inner(dx),
                Tensor::<4>::from_inner(want),
                1e-6,
            );
            // Without a shift, on a plain device too.
            let plain = x.clone().inner();
            let y = channel_affine(plain.clone(), scale.clone().inner(), None).unwrap();
            assert_close("no shift", y, plain * per_channel(scale).inner(), 1e-6);
        }
    }
}

#[test]
fn batch_norm_ops_reject_bad_shapes_and_epsilon() {
    let device = Device::flex();
    let x = Tensor::<4>::zeros([2, 3, 4, 4], &device);
    let ones = |n| Tensor::<1>::ones([n], &device);
    let shape_error =
        |r: Result<_, FeedbackError>| matches!(r, Err(FeedbackError::InputShape { .. }));
    assert!(shape_error(
        batch_norm_train(x.clone(), ones(2), ones(3), 1e-5).map(|_| ())
    ));
    assert!(shape_error(
        batch_norm_train(x.clone(), ones(3), ones(4), 1e-5).map(|_| ())
    ));
    assert!(shape_error(
        batch_norm_train(Tensor::<1>::zeros([3], &device), ones(3), ones(3), 1e-5).map(|_| ())
    ));
    assert!(shape_error(
        batch_norm_train(
            Tensor::<4>::zeros([0, 3, 4, 4], &device),
            ones(3),
            ones(3),
            1e-5
        )
        .map(|_| ())
    ));
    for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            batch_norm_train(x.clone(), ones(3), ones(3), eps),
            Err(FeedbackError::InvalidConfig(_))
        ));
    }
    assert!(shape_error(
        channel_affine(x.clone(), ones(2), None).map(|_| ())
    ));
    assert!(shape_error(
        channel_affine(x, ones(3), Some(ones(5))).map(|_| ())
    ));
}
