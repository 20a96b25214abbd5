//! Where a gradient attack takes its input gradient from.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use signsym_feedback::exact_gradients;

use crate::error::{AttackError, check_count};
use crate::model::AttackModel;

/// Where a white-box attack's input gradient comes from.
///
/// The forward of a network trained with a feedback rule is an ordinary network; only its
/// backward differs. An attack that follows the model's own backward ([`Feedback`](Self::Feedback),
/// the setting of arXiv 2502.05925) measures how well that pseudo-gradient misleads the attacker;
/// [`Exact`](Self::Exact) is the honest white-box attack on the same function. A model whose
/// robustness holds under `Feedback` but not under `Exact` obfuscates its gradients.
#[derive(Clone, Copy)]
pub enum GradientSource<'a> {
    /// The input gradient through the model's own training rule (sign-symmetry, feedback
    /// alignment, …).
    Feedback,
    /// The exact backpropagation gradient of the same weights (every feedback layer sends `W`
    /// back, inside [`signsym_feedback::exact_gradients`]).
    Exact,
    /// The exact gradient of another model (a surrogate, for example the BP pre-trained network);
    /// success is still judged on the target.
    Transfer(&'a dyn AttackModel),
    /// Expectation over transformation: the mean of `n` draws of the model's own backward, for
    /// rules whose pseudo-gradient is random (brSF redraws its feedback at every backward).
    Eot(usize),
}

impl std::fmt::Debug for GradientSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The kind of a [`GradientSource`], without its surrogate (for reports and serialisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    /// [`GradientSource::Feedback`].
    Feedback,
    /// [`GradientSource::Exact`].
    Exact,
    /// [`GradientSource::Transfer`].
    Transfer,
    /// [`GradientSource::Eot`].
    Eot,
    /// No gradient: a decision-based attack.
    Decision,
}

impl SourceKind {
    /// Whether robust accuracy under this source relies on the model's own (possibly
    /// obfuscating) backward.
    pub fn follows_model_backward(&self) -> bool {
        matches!(self, Self::Feedback | Self::Eot)
    }

    /// Whether this source is a reference an obfuscation check compares against.
    pub fn is_reference(&self) -> bool {
        matches!(self, Self::Exact | Self::Transfer)
    }
}

impl GradientSource<'_> {
    /// Short name: `feedback`, `exact`, `transfer`, `eot<n>`.
    pub fn name(&self) -> String {
        match self {
            Self::Feedback => "feedback".into(),
            Self::Exact => "exact".into(),
            Self::Transfer(_) => "transfer".into(),
            Self::Eot(n) => format!("eot{n}"),
        }
    }

    /// The kind, without the surrogate.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Feedback => SourceKind::Feedback,
            Self::Exact => SourceKind::Exact,
            Self::Transfer(_) => SourceKind::Transfer,
            Self::Eot(_) => SourceKind::Eot,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AttackError> {
        if let Self::Eot(n) = self {
            check_count("EOT draws", *n)?;
        }
        Ok(())
    }

    /// The input gradient of `loss(model, x)` at `x` (on `x`'s device, without autodiff).
    ///
    /// `loss` returns a scalar (`[1]`) and is applied to the surrogate for
    /// [`Transfer`](Self::Transfer). `seed` reseeds the device before each backward, so a random
    /// feedback (brSF) draws the same matrices for the same seed.
    pub fn input_gradient(
        &self,
        model: &dyn AttackModel,
        x: &Tensor<4>,
        loss: &dyn Fn(&dyn AttackModel, Tensor<4>) -> Tensor<1>,
        seed: u64,
    ) -> Result<Tensor<4>, AttackError> {
        let x = x.clone().inner();
        let device = x.device();
        let one = |model: &dyn AttackModel, exact: bool, seed: u64| {
            device.seed(seed);
            let input = x.clone().autodiff().require_grad();
            let out = if exact {
                exact_gradients(|| loss(model, input.clone()))
            } else {
                loss(model, input.clone())
            };
            if !out.is_tracked() {
                // The loss does not depend on a tracked input: the model is not on an
                // autodiff device.
                return Err(AttackError::NotAutodiff);
            }
            let grads = out.backward();
            input.grad(&grads).ok_or(AttackError::NotAutodiff)
        };
        match self {
            Self::Feedback => one(model, false, seed),
            Self::Exact => one(model, true, seed),
            Self::Transfer(surrogate) => one(*surrogate, true, seed),
            Self::Eot(n) => {
                let mut sum = one(model, false, mix(seed, 0))?;
                for draw in 1..*n {
                    sum = sum + one(model, false, mix(seed, draw as u64))?;
                }
                Ok(sum.div_scalar(*n as f32))
            }
        }
    }
}

/// Derives a stream seed from a base seed and an index.
pub(crate) fn mix(seed: u64, index: u64) -> u64 {
    // The same value as before the finaliser was shared: seed + golden + index·C, finalised.
    signsym_feedback::splitmix64(seed.wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9)))
}
