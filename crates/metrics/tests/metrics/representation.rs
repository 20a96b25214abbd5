//! Spectrum, power-law fit and Jacobian norm against known answers.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use signsym_metrics::{
    JacobianConfig, activation_spectrum, fit_power_law, jacobian_frobenius,
    jacobian_frobenius_exact,
};

#[test]
fn power_law_fit_recovers_the_exponent() {
    for alpha in [0.5, 1.0, 1.7] {
        // A known spectrum with ±5 % multiplicative ripple.
        let spectrum: Vec<f64> = (1..=200)
            .map(|n| 2.0 * (n as f64).powf(-alpha) * (1.0 + 0.05 * (n as f64).sin()))
            .collect();
        let fit = fit_power_law(&spectrum, 10, 150).unwrap();
        assert!((fit.alpha - alpha).abs() < 0.02, "{} vs {alpha}", fit.alpha);
        assert!(fit.r_squared > 0.97, "{}", fit.r_squared);
    }
    assert!(fit_power_law(&[1.0, 0.5, 0.0], 1, 3).is_err());
    assert!(fit_power_law(&[1.0, 0.5], 0, 2).is_err());
}

#[test]
fn spectrum_of_sampled_activations_has_the_planted_exponent() {
    // Independent features with variances n^(−1): the covariance spectrum decays with α = 1.
    let (samples, features) = (4000, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let activations: Vec<f32> = (0..samples * features)
        .map(|i| {
            let n = (i % features + 1) as f64;
            let z: f64 = StandardNormal.sample(&mut rng);
            (z * n.powf(-0.5)) as f32
        })
        .collect();
    let spectrum = activation_spectrum(&activations, samples, features).unwrap();
    assert_eq!(spectrum.len(), features);
    assert!(spectrum.windows(2).all(|w| w[0] >= w[1]));
    assert!((spectrum[0] - 1.0).abs() < 0.1, "{}", spectrum[0]);
    let fit = fit_power_law(&spectrum, 1, 30).unwrap();
    assert!((fit.alpha - 1.0).abs() < 0.1, "{}", fit.alpha);
}

#[test]
fn gram_and_covariance_paths_agree() {
    let (samples, features) = (6, 9);
    let activations: Vec<f32> = (0..samples * features)
        .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
        .collect();
    // 6 samples < 9 features: the Gram path. Its transpose problem (9 samples of 6 features)
    // is not the same data, so compare with the covariance computed here by hand instead.
    let spectrum = activation_spectrum(&activations, samples, features).unwrap();
    let mut cov = nalgebra::DMatrix::<f64>::zeros(features, features);
    let x = nalgebra::DMatrix::from_row_iterator(
        samples,
        features,
        activations.iter().map(|&v| f64::from(v)),
    );
    let means: Vec<f64> = x.column_iter().map(|c| c.mean()).collect();
    for a in 0..features {
        for b in 0..features {
            cov[(a, b)] = (0..samples)
                .map(|s| (x[(s, a)] - means[a]) * (x[(s, b)] - means[b]))
                .sum::<f64>()
                / (samples - 1) as f64;
        }
    }
    let mut expected: Vec<f64> = cov.symmetric_eigenvalues().iter().copied().collect();
    expected.sort_by(|a, b| b.total_cmp(a));
    for (a, b) in spectrum.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-9, "{spectrum:?} vs {expected:?}");
    }
    assert!(activation_spectrum(&activations, samples, features + 1).is_err());
    assert!(activation_spectrum(&[f32::NAN, 1.0, 2.0, 3.0], 2, 2).is_err());
}

#[test]
fn jacobian_norm_of_a_linear_map() {
    let device = Device::flex().autodiff();
    let (d_in, d_out) = (12, 5);
    let w: Vec<f32> = (0..d_in * d_out)
        .map(|i| ((i * 37) % 19) as f32 / 9.0 - 1.0)
        .collect();
    let frobenius = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let weight = Tensor::<2>::from_data(TensorData::new(w, [d_in, d_out]), &device);
    let f = |x: Tensor<2>| x.matmul(weight.clone());
    let x = Tensor::<2>::from_data(
        TensorData::new(
            (0..3 * d_in).map(|i| i as f32 / 10.0).collect::<Vec<_>>(),
            [3, d_in],
        ),
        &device,
    );
    let exact = jacobian_frobenius_exact(x.clone(), f).unwrap();
    for n in &exact.per_sample {
        assert!(
            (n - frobenius).abs() < 1e-4 * frobenius,
            "{n} vs {frobenius}"
        );
    }
    let estimate = jacobian_frobenius(x, f, &JacobianConfig::new().with_projections(2000)).unwrap();
    // The relative standard error of the squared norm is about sqrt(2/2000 · Σσ⁴/(Σσ²)²) < 3 %.
    assert!(
        (estimate.mean / frobenius - 1.0).abs() < 0.03,
        "{} vs {frobenius}",
        estimate.mean
    );
    assert!(
        jacobian_frobenius(
            Tensor::<2>::zeros([2, d_in], &device),
            f,
            &JacobianConfig::new().with_projections(0)
        )
        .is_err()
    );
}
