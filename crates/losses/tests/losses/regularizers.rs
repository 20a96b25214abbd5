//! Spectral and Sy-FAR regularizers, and cross-entropy with smoothing, against independent
//! references (an SVD, hand-computed cases).

use burn::tensor::{Device, Int, Tensor, TensorData};
use nalgebra::DMatrix;
use signsym_feedback::feedback_module;
use signsym_feedback::layers::FeedbackLinearConfig;
use signsym_losses::{
    CrossEntropyConfig, SpectralRegularizerConfig, SymmetryRegularizerConfig, TaskLoss,
};

fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.try_to_vec_as::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn matrix(seed: u32, rows: usize, columns: usize) -> Vec<f32> {
    (0..rows * columns)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed * 97)
                % 1000;
            x as f32 / 500.0 - 1.0
        })
        .collect()
}

#[test]
fn sigma_max_and_its_gradient_match_an_svd() {
    let device = Device::flex().autodiff();
    for (seed, rows, columns) in [(1, 5, 3), (2, 4, 7), (3, 6, 6)] {
        let values = matrix(seed, rows, columns);
        let svd = DMatrix::from_row_iterator(rows, columns, values.iter().map(|&v| f64::from(v)))
            .svd(true, true);
        let (index, sigma) = svd
            .singular_values
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let u = svd.u.as_ref().unwrap().column(index).clone_owned();
        let v = svd.v_t.as_ref().unwrap().row(index).transpose();

        let mut reg = SpectralRegularizerConfig::new()
            .with_power_iterations(200)
            .init()
            .unwrap();
        let w = tensor(&values, [rows, columns], &device).require_grad();
        let estimate = reg.sigma_max("w", w.clone());
        let grads = estimate.clone().backward();
        let estimate = host(estimate)[0];
        assert!(
            (estimate - sigma).abs() < 1e-4 * sigma,
            "{estimate} vs {sigma}"
        );
        // dσ/dW = u vᵀ (the sign of the singular pair cancels).
        let grad = host(w.grad(&grads).unwrap());
        for r in 0..rows {
            for c in 0..columns {
                let expected = u[r] * v[c];
                assert!((grad[r * columns + c] - expected).abs() < 1e-3, "{r},{c}");
            }
        }
    }
}

#[test]
fn the_persistent_vector_converges_across_calls() {
    let device = Device::flex();
    let values = matrix(7, 8, 5);
    let sigma = DMatrix::from_row_iterator(8, 5, values.iter().map(|&v| f64::from(v)))
        .singular_values()
        .max();
    let mut reg = SpectralRegularizerConfig::new().init().unwrap();
    let w = tensor(&values, [8, 5], &device);
    let first = host(reg.sigma_max("w", w.clone()))[0];
    let mut last = first;
    for _ in 0..100 {
        last = host(reg.sigma_max("w", w.clone()))[0];
    }
    assert!(first <= sigma + 1e-5);
    assert!((last - sigma).abs() < 1e-4 * sigma, "{last} vs {sigma}");
}

#[derive(burn::module::Module, Debug)]
struct Mlp {
    hidden: signsym_feedback::layers::FeedbackLinear,
    head: signsym_feedback::layers::FeedbackLinear,
}
feedback_module!(Mlp { hidden, head });

#[test]
fn the_model_penalty_skips_the_head() {
    let device = Device::flex();
    let model = Mlp {
        hidden: FeedbackLinearConfig::new(6, 4).init(&device),
        head: FeedbackLinearConfig::new(4, 3).init(&device),
    };
    let hidden = host(model.hidden.weight.val());
    let sigma = DMatrix::from_row_iterator(6, 4, hidden.iter().copied())
        .singular_values()
        .max();
    let mut reg = SpectralRegularizerConfig::new()
        .with_gamma(0.3)
        .with_power_iterations(300)
        .init()
        .unwrap();
    let penalty = host(reg.penalty(&model).unwrap())[0];
    assert!((penalty - 0.15 * sigma * sigma).abs() < 1e-4, "{penalty}");
    let mut all = SpectralRegularizerConfig::new()
        .with_skip_last(false)
        .with_power_iterations(300)
        .init()
        .unwrap();
    assert!(host(all.penalty(&model).unwrap())[0] > 0.01 / 2.0 * sigma * sigma);
    assert!(
        SpectralRegularizerConfig::new()
            .with_gamma(-1.0)
            .init()
            .is_err()
    );
}

#[test]
fn symmetry_penalty_matches_hand_computed_cases() {
    let device = Device::flex();
    let reg = SymmetryRegularizerConfig::new(3)
        .with_gamma(2.0)
        .init()
        .unwrap();
    let symmetric = tensor(
        &[0.6, 0.3, 0.1, 0.3, 0.5, 0.2, 0.1, 0.2, 0.7],
        [3, 3],
        &device,
    );
    assert_eq!(host(reg.penalty_of(symmetric).unwrap())[0], 0.0);

    // Off-diagonal pairs: (0,1): 0.3 vs 0.1, (0,2): 0.1 vs 0.1, (1,2): 0.0 vs 0.4.
    let c = tensor(
        &[0.6, 0.3, 0.1, 0.1, 0.9, 0.0, 0.1, 0.4, 0.5],
        [3, 3],
        &device,
    );
    // Masses 0.4, 0.2, 0.4 (total 1.0); asymmetries 0.2, 0, 0.4.
    let expected = 2.0 * (0.4 * 0.2 + 0.2 * 0.0 + 0.4 * 0.4);
    let value = host(reg.penalty_of(c).unwrap())[0];
    assert!((value - expected).abs() < 1e-6, "{value} vs {expected}");
}

#[test]
fn soft_confusion_is_row_normalised_by_class_counts() {
    let device = Device::flex();
    let reg = SymmetryRegularizerConfig::new(3).init().unwrap();
    // Logits equal within a row give uniform probabilities; a large logit gives a one-hot.
    let logits = tensor(
        &[0.0, 0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 50.0, 0.0],
        [3, 3],
        &device,
    );
    let targets = Tensor::<1, Int>::from_ints([0, 0, 1], &device);
    let c = host(reg.soft_confusion(logits.clone(), targets).unwrap());
    let third = 1.0 / 3.0;
    let expected = [
        (third + 1.0) / 2.0,
        third / 2.0,
        third / 2.0, //
        0.0,
        1.0,
        0.0, //
        0.0,
        0.0,
        0.0, // class 2 has no sample: max(n, 1) keeps the row at zero
    ];
    for (a, b) in c.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{c:?}");
    }
    assert!(
        host(
            reg.penalty(
                logits.clone(),
                Tensor::<1, Int>::from_ints([0, 0, 1], &device)
            )
            .unwrap()
        )[0] > 0.0
    );
    assert!(
        reg.penalty(logits, Tensor::<1, Int>::from_ints([0, 0, 3], &device))
            .is_err()
    );
}

#[test]
fn cross_entropy_smoothing_matches_the_formula() {
    let device = Device::flex();
    let logits = tensor(&[2.0, 0.0, -1.0, 0.5, 0.5, 0.0], [2, 3], &device);
    let targets = Tensor::<1, Int>::from_ints([0, 2], &device);
    let alpha = 0.1;
    let ce = CrossEntropyConfig::new()
        .with_label_smoothing(Some(alpha as f32))
        .init(&device)
        .unwrap();
    let value = host(ce.loss(logits, targets).unwrap())[0];
    let rows = [[2.0f64, 0.0, -1.0], [0.5, 0.5, 0.0]];
    let mut expected = 0.0;
    for (row, target) in rows.iter().zip([0usize, 2]) {
        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        for (c, v) in row.iter().enumerate() {
            let q = alpha / 3.0 + if c == target { 1.0 - alpha } else { 0.0 };
            expected -= q * (v - lse);
        }
    }
    expected /= 2.0;
    assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
    assert!(
        CrossEntropyConfig::new()
            .with_label_smoothing(Some(1.5))
            .init(&device)
            .is_err()
    );
}
