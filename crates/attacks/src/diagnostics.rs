//! How far the gradient an attack follows is from the exact one.

use burn::tensor::Tensor;
use signsym_feedback::{GradientAlignment, input_gradient_alignment};

use crate::error::AttackError;
use crate::model::{AttackModel, check_labels};
use crate::pgd::cross_entropy_sum;

/// Per-sample cosine between the input gradient of the cross-entropy through the model's own
/// backward (`GradientSource::Feedback`) and the exact one (`GradientSource::Exact`).
///
/// 1 (up to rounding) for a BP model; below 1 when the rule's pseudo-gradient points elsewhere,
/// which is what can make `Feedback` attacks weak without the model being robust.
pub fn gradient_alignment(
    model: &dyn AttackModel,
    images: &Tensor<4>,
    labels: &[usize],
) -> Result<GradientAlignment, AttackError> {
    check_labels(labels, images.dims()[0], model.outputs())?;
    let x = images.clone().inner().autodiff();
    let alignment = input_gradient_alignment(x, |x| cross_entropy_sum(model.scores(x), labels));
    Ok(alignment)
}
