//! `feedback_matrix` — the `V` every backward uses — against a host reference in f64, on every
//! device (on Flex it is the fused one-pass kernel, elsewhere burn's generic ops), and the
//! statistics and seeding of brSF's magnitudes.

use crate::common::*;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use signsym_feedback::ops::feedback_matrix;
use signsym_feedback::{FeedbackError, FeedbackForm, FeedbackKernel, ScaleKind};

fn sign(x: f32) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `V` computed on the host, in f64.
fn reference(kernel: FeedbackKernel, w: &[f32], aux: &[f32]) -> Vec<f64> {
    let v0: Vec<f64> = w
        .iter()
        .zip(aux)
        .map(|(&w, &a)| match kernel.form {
            FeedbackForm::Weight => f64::from(w),
            FeedbackForm::Sign => sign(w),
            FeedbackForm::MaskedSign => f64::from(a) * sign(w),
            FeedbackForm::Given => f64::from(a),
            FeedbackForm::RandomMaskedSign(_) => unreachable!("random forms are tested apart"),
        })
        .collect();
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let s = match kernel.scale {
        ScaleKind::Unit => 1.0,
        ScaleKind::Constant(c) => f64::from(c),
        ScaleKind::MatchNorm => {
            let v_norm = norm(&mut v0.iter().copied());
            if v_norm == 0.0 {
                0.0
            } else {
                norm(&mut w.iter().map(|&x| f64::from(x))) / v_norm
            }
        }
    };
    v0.iter().map(|v| v * s).collect()
}

/// A weight with exact zeros at every 5th entry, so `sign` meets 0.
fn weight<const D: usize>(shape: [usize; D], device: &Device) -> (Tensor<D>, Vec<f32>) {
    let mut w = host(random(shape, device));
    for x in w.iter_mut().step_by(5) {
        *x = 0.0;
    }
    let t = Tensor::from_data(TensorData::new(w.clone(), shape), device);
    (t, w)
}

/// `feedback_matrix` on a weight of `shape` against [`reference`] for every form and scale.
fn matches_reference<const D: usize>(
    shape: [usize; D],
    device: &Device,
    forms: &[FeedbackForm],
    scales: &[ScaleKind],
) {
    let (w, w_host) = weight(shape, device);
    let aux = random(shape, device);
    let aux_host = host(aux.clone());
    for &form in forms {
        for &scale in scales {
            let kernel = FeedbackKernel { form, scale };
            let got = host(feedback_matrix(w.clone(), Some(aux.clone()), kernel).unwrap());
            let want = reference(kernel, &w_host, &aux_host);
            let top = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max)
                / top;
            assert!(
                err < 2e-6,
                "{form:?} {scale:?} {shape:?} on {device:?}: relative error {err:e}"
            );
        }
    }
}

#[test]
fn feedback_matrix_matches_the_host_reference() {
    let _serial = serial();
    let mut all = devices();
    all.push(Device::flex()); // without autodiff too
    let forms = [
        FeedbackForm::Weight,
        FeedbackForm::Sign,
        FeedbackForm::MaskedSign,
        FeedbackForm::Given,
    ];
    let scales = [
        ScaleKind::Unit,
        ScaleKind::Constant(0.3),
        ScaleKind::MatchNorm,
    ];
    for device in &all {
        // Fewer elements than a SIMD block, a tail after whole blocks, and more than one
        // parallel chunk (16,384 elements).
        for shape in [[3, 2], [3, 7], [200, 100]] {
            matches_reference(shape, device, &forms, &scales);
        }
        // Convolution weights: within one parallel chunk, a 1 × 1 kernel, and several chunks
        // (18,432 elements).
        for shape in [[6, 4, 3, 3], [8, 5, 1, 1], [64, 32, 3, 3]] {
            matches_reference(shape, device, &forms, &scales);
        }
        // An all-zero weight: V₀ = 0 and the match-norm scale must not turn it into NaN.
        let zero = Tensor::<2>::zeros([4, 4], device);
        for form in [FeedbackForm::Sign, FeedbackForm::MaskedSign] {
            let kernel = FeedbackKernel {
                form,
                scale: ScaleKind::MatchNorm,
            };
            let v =
                host(feedback_matrix(zero.clone(), Some(random([4, 4], device)), kernel).unwrap());
            assert!(v.iter().all(|x| *x == 0.0), "{form:?} on {device:?}: {v:?}");
        }
    }
}

fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn random_magnitudes_follow_their_distribution_and_the_device_seed() {
    // Seeds the shared device and reads its draws back: no other test may draw in between.
    let _serial = serial();
    let mut all = devices();
    all.push(Device::flex());
    // 60,000 entries: several parallel chunks on Flex.
    let shape = [300, 200];
    for device in &all {
        let draw = |distribution: Distribution, w: &Tensor<2>| {
            let kernel = FeedbackKernel {
                form: FeedbackForm::RandomMaskedSign(distribution),
                scale: ScaleKind::Unit,
            };
            host(feedback_matrix(w.clone(), None, kernel).unwrap())
        };
        let ones = Tensor::<2>::ones(shape, device);
        let what = |s: &str| format!("{s} on {device:?}");

        device.seed(5);
        let m = draw(Distribution::Uniform(0.0, 1.0), &ones);
        let (mean, std) = moments(&m);
        assert!(
            m.iter().all(|x| (0.0..1.0).contains(x)),
            "{}",
            what("U[0,1) range")
        );
        assert!((mean - 0.5).abs() < 0.01, "{}: mean {mean}", what("U[0,1)"));
        assert!(
            (std - (1.0f64 / 12.0).sqrt()).abs() < 0.01,
            "{}: std {std}",
            what("U[0,1)")
        );

        let m = draw(Distribution::Uniform(0.5, 2.0), &ones);
        let (mean, _) = moments(&m);
        assert!(
            m.iter().all(|x| (0.5..2.0).contains(x)),
            "{}",
            what("U[0.5,2) range")
        );
        assert!(
            (mean - 1.25).abs() < 0.02,
            "{}: mean {mean}",
            what("U[0.5,2)")
        );

        let m = draw(Distribution::Normal(1.0, 0.2), &ones);
        let (mean, std) = moments(&m);
        assert!(
            (mean - 1.0).abs() < 0.01,
            "{}: mean {mean}",
            what("N(1, 0.2)")
        );
        assert!((std - 0.2).abs() < 0.01, "{}: std {std}", what("N(1, 0.2)"));

        // The sign of W is kept, the magnitude is the draw.
        let (w, w_host) = weight(shape, device);
        let v = draw(Distribution::Default, &w);
        for (x, w) in v.iter().zip(&w_host) {
            assert!(
                f64::from(*x) * sign(*w) >= 0.0 && (*w != 0.0 || *x == 0.0),
                "{}: v {x} for w {w}",
                what("sign pattern")
            );
        }

        // Seeding: same seed, same draw; the next draw and another seed differ.
        device.seed(11);
        let a = draw(Distribution::Default, &ones);
        let b = draw(Distribution::Default, &ones);
        device.seed(11);
        assert_eq!(
            a,
            draw(Distribution::Default, &ones),
            "{}",
            what("same seed")
        );
        assert_ne!(a, b, "{}", what("successive draws"));
        device.seed(12);
        assert_ne!(
            a,
            draw(Distribution::Default, &ones),
            "{}",
            what("other seed")
        );
    }
}

/// Flex draws brSF's magnitudes from a counter-based stream at each weight's flat index, so a
/// convolution weight gets the values of the matrix of the same size under the same seed (the
/// generic path of the other backends draws through burn's generator, shape by shape).
#[test]
fn random_magnitudes_of_a_convolution_weight_follow_its_flat_index_on_flex() {
    // Seeds the shared device and reads its draws back: no other test may draw in between.
    let _serial = serial();
    let kernel = FeedbackKernel {
        form: FeedbackForm::RandomMaskedSign(Distribution::Default),
        scale: ScaleKind::Unit,
    };
    for device in [Device::flex(), Device::flex().autodiff()] {
        device.seed(9);
        let conv = host(
            feedback_matrix(Tensor::<4>::ones([300, 8, 5, 5], &device), None, kernel).unwrap(),
        );
        device.seed(9);
        let matrix =
            host(feedback_matrix(Tensor::<2>::ones([300, 200], &device), None, kernel).unwrap());
        assert_eq!(conv, matrix, "{device:?}");
        // And they are draws, not a constant.
        assert!(conv.iter().any(|&x| x != conv[0]), "{device:?}");
    }
}

#[test]
fn feedback_matrix_checks_its_auxiliary_tensor() {
    let _serial = serial();
    let device = Device::flex();
    let w = random::<2>([3, 4], &device);
    let masked = FeedbackKernel {
        form: FeedbackForm::MaskedSign,
        scale: ScaleKind::Unit,
    };
    assert!(matches!(
        feedback_matrix(w.clone(), None, masked),
        Err(FeedbackError::MissingFeedback { .. })
    ));
    assert!(matches!(
        feedback_matrix(w.clone(), Some(random([4, 3], &device)), masked),
        Err(FeedbackError::FeedbackShape { .. })
    ));
    // A strided view (the transpose of a transpose is not re-laid out) still gives sign(W).
    let t = w.clone().transpose();
    let sign = FeedbackKernel {
        form: FeedbackForm::Sign,
        scale: ScaleKind::Unit,
    };
    let v = host(feedback_matrix(t, None, sign).unwrap());
    let want = host(w.transpose().sign());
    assert_eq!(v, want);
}
