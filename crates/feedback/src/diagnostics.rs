//! How far a rule's input gradient is from the exact one.

use burn::tensor::Tensor;

use crate::exact_gradients;
use crate::layers::common::host;
use crate::layers::cosine;

/// Per-sample agreement between a model's feedback input-gradient and its exact (BP)
/// input-gradient for one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct GradientAlignment {
    /// Cosine between the two gradients of each sample (0 where either is zero).
    pub per_sample: Vec<f64>,
    /// Cosine between the two gradients of the whole batch, flattened.
    pub batch: f64,
}

impl GradientAlignment {
    /// Mean of the per-sample cosines.
    pub fn mean(&self) -> f64 {
        if self.per_sample.is_empty() {
            return 0.0;
        }
        self.per_sample.iter().sum::<f64>() / self.per_sample.len() as f64
    }
}

/// The input gradient of `loss(x)` as the model's own rules send it back.
///
/// `x` must live on an autodiff device; `loss` returns a scalar (shape `[1]`) tensor.
pub fn input_gradient<const D: usize>(
    x: Tensor<D>,
    loss: impl Fn(Tensor<D>) -> Tensor<1>,
) -> Tensor<D> {
    let x = x.detach().require_grad();
    let grads = loss(x.clone()).backward();
    x.grad(&grads)
        .unwrap_or_else(|| x.clone().inner().zeros_like())
}

/// The exact input gradient of `loss(x)`: every feedback layer backpropagates with `W`.
pub fn exact_input_gradient<const D: usize>(
    x: Tensor<D>,
    loss: impl Fn(Tensor<D>) -> Tensor<1>,
) -> Tensor<D> {
    let x = x.detach().require_grad();
    let out = exact_gradients(|| loss(x.clone()));
    let grads = out.backward();
    x.grad(&grads)
        .unwrap_or_else(|| x.clone().inner().zeros_like())
}

/// Cosine between the feedback and the exact input gradient of `loss` at `x`, per sample (axis
/// 0) and for the batch. For BP it is 1 everywhere (up to rounding); for the other rules it says
/// how much an attack that follows the rule's pseudo-gradient is misled.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_feedback::layers::FeedbackLinearConfig;
/// use signsym_feedback::{FeedbackConfig, FeedbackRule, input_gradient_alignment};
///
/// let device = Device::flex().autodiff();
/// device.seed(1);
/// let layer = FeedbackLinearConfig::new(8, 4)
///     .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::Fa))
///     .init(&device);
/// let x = Tensor::<2>::random([3, 8], burn::tensor::Distribution::Default, &device);
/// let a = input_gradient_alignment(x, |x| layer.forward(x).powi_scalar(2).sum());
/// assert!(a.batch < 0.999);
/// ```
pub fn input_gradient_alignment<const D: usize>(
    x: Tensor<D>,
    loss: impl Fn(Tensor<D>) -> Tensor<1>,
) -> GradientAlignment {
    let batch = x.dims()[0];
    let feedback = host(input_gradient(x.clone(), &loss));
    let exact = host(exact_input_gradient(x, &loss));
    let per = feedback.len() / batch.max(1);
    let per_sample = (0..batch)
        .map(|i| {
            cosine(
                &feedback[i * per..(i + 1) * per],
                &exact[i * per..(i + 1) * per],
            )
        })
        .collect();
    GradientAlignment {
        per_sample,
        batch: cosine(&feedback, &exact),
    }
}
