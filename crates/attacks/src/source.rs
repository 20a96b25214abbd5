//! Where a gradient attack takes its input gradient from.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use signsym_feedback::exact_gradients;
use signsym_feedback::random::RandomScope;

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
#[serde(rename_all = "lowercase")]
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
    /// No gradient: a score-based black-box attack (Square).
    Score,
}

impl SourceKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [SourceKind; 6] = [
        Self::Feedback,
        Self::Exact,
        Self::Transfer,
        Self::Eot,
        Self::Decision,
        Self::Score,
    ];

    /// The name reports and CSV files use (`feedback`, `exact`, `transfer`, `eot`, `decision`,
    /// `score`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Feedback => "feedback",
            Self::Exact => "exact",
            Self::Transfer => "transfer",
            Self::Eot => "eot",
            Self::Decision => "decision",
            Self::Score => "score",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SourceKind {
    type Err = AttackError;

    /// Parses [`name`](Self::name) back (case-insensitive).
    ///
    /// ```
    /// use signsym_attacks::SourceKind;
    /// assert_eq!("Exact".parse::<SourceKind>().unwrap(), SourceKind::Exact);
    /// assert!("gradient".parse::<SourceKind>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, AttackError> {
        let key = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == key)
            .ok_or_else(|| {
                crate::error::invalid(
                    "gradient source",
                    s,
                    "expected feedback, exact, transfer, eot, decision or score",
                )
            })
    }
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

    /// Backward passes one gradient evaluation costs (the draws of [`Eot`](Self::Eot), else 1).
    pub fn backward_passes(&self) -> usize {
        match self {
            Self::Eot(n) => *n,
            _ => 1,
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
    /// [`Transfer`](Self::Transfer). Each backward draws in a
    /// [`RandomScope`] seeded with `seed`, so a random feedback (brSF) draws the same matrices
    /// for the same seed, whatever other threads draw meanwhile.
    pub fn input_gradient(
        &self,
        model: &dyn AttackModel,
        x: &Tensor<4>,
        loss: &dyn Fn(&dyn AttackModel, Tensor<4>) -> Tensor<1>,
        seed: u64,
    ) -> Result<Tensor<4>, AttackError> {
        let (gradient, ()) = self.backward(model, x, seed, &|m, input| (loss(m, input), ()))?;
        Ok(gradient)
    }

    /// One gradient evaluation of a per-sample loss: the input gradient of `Σ loss(scores)` at `x`
    /// from this source, with the attacked model's scores and per-sample losses at `x`
    /// (detached, on `x`'s device, without autodiff).
    ///
    /// `loss` maps `[batch, outputs]` scores to `[batch]` losses. With
    /// [`Transfer`](Self::Transfer) the gradient is the surrogate's and the scores and losses
    /// come from one more forward of `model`; with [`Eot`](Self::Eot) the gradient is the mean
    /// of the draws and the scores those of the last draw (the forward is deterministic).
    pub(crate) fn evaluate(
        &self,
        model: &dyn AttackModel,
        x: &Tensor<4>,
        loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
        seed: u64,
    ) -> Result<Evaluation, AttackError> {
        let (gradient, (scores, losses)) = self.backward(model, x, seed, &|m, input| {
            let scores = m.scores(input);
            let losses = loss(scores.clone());
            (losses.clone().sum(), (scores.detach(), losses.detach()))
        })?;
        let (scores, losses) = match self {
            Self::Transfer(_) => {
                let scores = model.predict_scores(x.clone().inner().autodiff());
                let losses = loss(scores.clone());
                (scores, losses)
            }
            _ => (scores, losses),
        };
        Ok(Evaluation {
            gradient,
            scores: scores.inner(),
            losses: losses.inner(),
        })
    }

    /// The input gradient of `objective(model, x).0` through this source, with what the last
    /// evaluation of `objective` returned beside it.
    fn backward<T>(
        &self,
        model: &dyn AttackModel,
        x: &Tensor<4>,
        seed: u64,
        objective: &dyn Fn(&dyn AttackModel, Tensor<4>) -> (Tensor<1>, T),
    ) -> Result<(Tensor<4>, T), AttackError> {
        let x = x.clone().inner();
        let one = |model: &dyn AttackModel, exact: bool, seed: u64| {
            // brSF's draws from this thread's own generator: other threads cannot move it.
            let _draws = RandomScope::enter(seed);
            let input = x.clone().autodiff().require_grad();
            let (out, extra) = if exact {
                exact_gradients(|| objective(model, input.clone()))
            } else {
                objective(model, input.clone())
            };
            if !out.is_tracked() {
                // The loss does not depend on a tracked input: the model is not on an
                // autodiff device.
                return Err(AttackError::NotAutodiff);
            }
            let grads = out.backward();
            let gradient = input.grad(&grads).ok_or(AttackError::NotAutodiff)?;
            Ok((gradient, extra))
        };
        match self {
            Self::Feedback => one(model, false, seed),
            Self::Exact => one(model, true, seed),
            Self::Transfer(surrogate) => one(*surrogate, true, seed),
            Self::Eot(n) => {
                let (mut sum, mut extra) = one(model, false, mix(seed, 0))?;
                for draw in 1..*n {
                    let (g, e) = one(model, false, mix(seed, draw as u64))?;
                    sum = sum + g;
                    extra = e;
                }
                Ok((sum.div_scalar(*n as f32), extra))
            }
        }
    }
}

/// What [`GradientSource::evaluate`] returns.
pub(crate) struct Evaluation {
    /// The input gradient, `[batch, c, h, w]`.
    pub gradient: Tensor<4>,
    /// The attacked model's scores, `[batch, outputs]`.
    pub scores: Tensor<2>,
    /// The per-sample losses of the attacked model, `[batch]`.
    pub losses: Tensor<1>,
}

/// Derives a stream seed from a base seed and an index.
pub(crate) fn mix(seed: u64, index: u64) -> u64 {
    // The same value as before the finaliser was shared: seed + golden + index·C, finalised.
    signsym_feedback::splitmix64(seed.wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9)))
}
