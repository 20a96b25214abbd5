//! Feedback layers: drop-in replacements for burn's `Linear`, `Conv1d`, `Conv2d` and
//! `ConvTranspose2d` whose backward rule can be changed at run time.
//!
//! Each layer has the same record keys as burn's (`weight`, `bias`), plus `feedback` for the fixed
//! random tensor of frSF (`M`) and FA (`B`), so burn records and PyTorch state dicts load into it
//! unchanged (with partial loading allowed for `feedback`, which such files do not have).

pub(crate) mod common;
mod conv1d;
mod conv2d;
mod conv_transpose2d;
mod linear;

pub use common::cosine;
pub use conv_transpose2d::{FeedbackConvTranspose2d, FeedbackConvTranspose2dConfig};
pub use conv1d::{FeedbackConv1d, FeedbackConv1dConfig};
pub use conv2d::{FeedbackConv2d, FeedbackConv2dConfig};
pub use linear::{FeedbackLinear, FeedbackLinearConfig};

use crate::{FeedbackConfig, FeedbackError, FeedbackRule, FeedbackScale};

/// What every feedback layer offers, as a trait object for model-wide visitors.
pub trait FeedbackLayer {
    /// `"linear"`, `"conv1d"`, `"conv2d"` or `"conv_transpose2d"`.
    fn kind(&self) -> &'static str;

    /// The layer's rule, scale, distributions and seed.
    fn settings(&self) -> &FeedbackConfig;

    /// The layer's rule.
    fn rule(&self) -> FeedbackRule {
        self.settings().rule
    }

    /// Switches the rule without touching the weights. Switching to frSF or FA draws the fixed
    /// tensor from the layer seed unless the layer already uses that rule; switching to another
    /// rule drops it.
    fn set_rule(&mut self, rule: FeedbackRule) -> Result<(), FeedbackError>;

    /// Sets the scale of `V`.
    fn set_scale(&mut self, scale: FeedbackScale);

    /// Sets the layer seed and redraws the fixed tensor, if the rule keeps one.
    fn set_seed(&mut self, seed: u64) -> Result<(), FeedbackError>;

    /// The weight's shape.
    fn weight_shape(&self) -> Vec<usize>;

    /// The weight as a matrix: its first axis as rows, the other axes flattened into columns
    /// (`[d_in, d_out]` for linear, `[out, in/groups·k…]` for convolutions). It stays on the
    /// autodiff graph, so penalties on it (spectral regularization) train the weight.
    fn weight_matrix(&self) -> burn::tensor::Tensor<2>;

    /// Checks that the fixed tensor the rule needs is present and has the weight's shape.
    fn validate(&self) -> Result<(), FeedbackError>;

    /// Cosine between the flattened weight and feedback tensor (1 for BP).
    fn alignment(&self) -> Result<f64, FeedbackError>;
}

/// Implements [`FeedbackLayer`] for a layer with `weight`, `feedback` and `settings` fields.
macro_rules! impl_feedback_layer {
    ($layer:ty, $kind:literal, $rank:literal) => {
        impl $crate::layers::FeedbackLayer for $layer {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn settings(&self) -> &$crate::FeedbackConfig {
                &self.settings
            }

            fn set_rule(
                &mut self,
                rule: $crate::FeedbackRule,
            ) -> Result<(), $crate::FeedbackError> {
                $crate::layers::common::switch_rule(
                    &mut self.settings,
                    &mut self.feedback,
                    rule,
                    &self.weight,
                )
            }

            fn set_scale(&mut self, scale: $crate::FeedbackScale) {
                self.settings.scale = scale;
            }

            fn set_seed(&mut self, seed: u64) -> Result<(), $crate::FeedbackError> {
                self.settings.seed = seed;
                let shape = self.weight.lazy_shape().dims::<$rank>();
                self.feedback = $crate::layers::common::draw_fixed(
                    &self.settings,
                    self.settings.rule,
                    shape,
                    &self.weight.lazy_device(),
                )?;
                Ok(())
            }

            fn weight_shape(&self) -> Vec<usize> {
                self.weight.lazy_shape().as_slice().to_vec()
            }

            fn weight_matrix(&self) -> burn::tensor::Tensor<2> {
                let weight = self.weight.val();
                let dims = weight.dims();
                let columns = dims[1..].iter().product::<usize>();
                weight.reshape([dims[0], columns])
            }

            fn validate(&self) -> Result<(), $crate::FeedbackError> {
                $crate::layers::common::validate_feedback(
                    $kind,
                    &self.settings,
                    &self.weight,
                    &self.feedback,
                )
            }

            fn alignment(&self) -> Result<f64, $crate::FeedbackError> {
                $crate::layers::common::alignment(
                    $kind,
                    &self.settings,
                    &self.weight,
                    &self.feedback,
                )
            }
        }
    };
}
pub(crate) use impl_feedback_layer;

/// Builds a feedback layer from a burn layer's parts: BP first, then the configured rule.
pub(crate) fn with_rule<L: FeedbackLayer>(
    mut layer: L,
    rule: FeedbackRule,
) -> Result<L, FeedbackError> {
    layer.set_rule(rule)?;
    Ok(layer)
}

/// Burn's default initializer for its layers (Kaiming uniform with gain 1/√3).
pub(crate) fn default_initializer() -> burn::nn::Initializer {
    burn::nn::Initializer::KaimingUniform {
        gain: 1.0 / 3.0f64.sqrt(),
        fan_out_only: false,
    }
}
