//! What the tests of the Flex input-gradient kernels (`flex_linear`, `flex_conv::formed`) share:
//! inputs, the kernels they run, a `V₀` formed independently of them, and the comparison.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::Distribution;

use crate::backend::{FeedbackForm, FeedbackKernel, ScaleKind};
use crate::random::RandomScope;

/// The key of the random scope the tests run brSF under.
pub(crate) const KEY: u64 = 5;

/// Values in [-1, 1) from a fixed hash of the index, with exact zeros among them (sign 0).
pub(crate) fn values(n: usize, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let bits = crate::splitmix64(salt ^ (i as u64));
            if bits.is_multiple_of(17) {
                0.0
            } else {
                (bits >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            }
        })
        .collect()
}

/// Positive magnitudes for `M` or `B`: [`values`]' absolute values plus 0.1.
pub(crate) fn magnitudes(n: usize, salt: u64) -> Vec<f32> {
    values(n, salt).iter().map(|v| v.abs() + 0.1).collect()
}

/// A contiguous tensor's values.
pub(crate) fn host(t: &FlexTensor) -> Vec<f32> {
    t.as_slice::<f32>().expect("contiguous f32").to_vec()
}

/// Every form (brSF with uniform and normal magnitudes) and every scale.
pub(crate) fn kernels() -> [FeedbackKernel; 8] {
    let k = |form, scale| FeedbackKernel { form, scale };
    [
        FeedbackKernel::WEIGHT,
        k(FeedbackForm::Sign, ScaleKind::MatchNorm),
        k(FeedbackForm::Sign, ScaleKind::Unit),
        k(FeedbackForm::MaskedSign, ScaleKind::MatchNorm),
        k(FeedbackForm::Given, ScaleKind::MatchNorm),
        k(FeedbackForm::Given, ScaleKind::Constant(0.25)),
        k(
            FeedbackForm::RandomMaskedSign(Distribution::Uniform(0.5, 1.5)),
            ScaleKind::MatchNorm,
        ),
        k(
            FeedbackForm::RandomMaskedSign(Distribution::Normal(1.0, 0.2)),
            ScaleKind::MatchNorm,
        ),
    ]
}

/// `V₀` formed independently of the kernels under test: burn's generic ops, or for brSF the
/// whole-tensor fill under the scope key [`KEY`] (itself tested against the per-element stream in
/// `fused`).
pub(crate) fn independent_v0(
    kernel: &FeedbackKernel,
    w: &FlexTensor,
    aux: &FlexTensor,
) -> Vec<f32> {
    let v0 = match kernel.form {
        FeedbackForm::RandomMaskedSign(_) => {
            RandomScope::run(KEY, || {
                crate::fused::feedback_matrix_parts(kernel, w, Some(aux)).expect("counter-based")
            })
            .0
        }
        _ => kernel.form_parts::<Flex>(w.clone(), Some(aux.clone())).0,
    };
    host(&v0)
}

/// `s` by the kernel's scale, the norms summed on the host in f64.
pub(crate) fn factor(kernel: &FeedbackKernel, w: &[f32], v0: &[f32]) -> f64 {
    let squares = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    match kernel.scale {
        ScaleKind::Unit => 1.0,
        ScaleKind::Constant(c) => f64::from(c),
        ScaleKind::MatchNorm => squares(w).sqrt() / squares(v0).sqrt().max(1e-30),
    }
}

/// Panics unless every value of `got` is within `2·10⁻⁵` of the largest `|want|` of `want`.
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 2e-5 * scale,
        "{what}: max error {err} (scale {scale})"
    );
}
