//! The backbones' dropout: burn's `Dropout` settings, with the mask drawn from the thread's
//! random scope (`signsym_feedback::random`) when one is active, so that a training running
//! beside other work draws its masks from its own seed.

use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor};

/// `dropout.forward(x)`, with the mask from the innermost
/// [`RandomScope`](signsym_feedback::random::RandomScope) of this thread when there is one (the
/// training loop enters one per step), else from the device's generator as burn draws it.
pub(crate) fn dropout<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let active = dropout.training.is_enabled() && x.device().is_autodiff() && dropout.prob > 0.0;
    if !active {
        return x;
    }
    let keep = 1.0 - dropout.prob;
    match signsym_feedback::random::scoped_random(
        x.dims(),
        Distribution::Bernoulli(keep),
        &x.device(),
    ) {
        Some(mask) => (x * mask).mul_scalar(1.0 / keep),
        None => dropout.forward(x),
    }
}
