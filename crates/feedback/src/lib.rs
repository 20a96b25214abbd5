#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod backend;
mod diagnostics;
mod error;
#[cfg(feature = "flex")]
mod flex_adam;
#[cfg(feature = "flex")]
mod flex_conv;
#[cfg(feature = "flex")]
mod flex_linear;
#[cfg(feature = "flex")]
mod flex_norm;
#[cfg(feature = "flex")]
mod flex_pool;
mod frozen;
#[cfg(feature = "flex")]
mod fused;
#[cfg(all(test, feature = "flex"))]
mod kernel_tests;
pub mod layers;
pub mod ops;
pub mod random;
mod rule;
mod scope;
mod visit;

pub use backend::{
    AdamUpdate, FeedbackBackend, FeedbackForm, FeedbackKernel, MaybeTensor, ScaleKind,
};
pub use diagnostics::{
    GradientAlignment, exact_input_gradient, input_gradient, input_gradient_alignment,
};
pub use error::FeedbackError;
pub use frozen::{FrozenWeightsGuard, frozen_weights, frozen_weights_active};
pub use rule::{
    FeedbackConfig, FeedbackDistribution, FeedbackRule, FeedbackScale, layer_seed, splitmix64,
};
pub use scope::{ExactGradientsGuard, exact_gradients, exact_gradients_active};
pub use visit::{
    FeedbackModule, LayerSummary, join_path, layer_summaries, set_rule, set_rules, set_scale,
    validate_model,
};
