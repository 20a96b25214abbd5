//! Errors of the feedback crate.

use thiserror::Error;

/// Everything that can go wrong when building, loading or running a feedback layer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FeedbackError {
    /// A rule name that is not one of `bp`, `usf`, `frsf`, `brsf`, `fa`.
    #[error("unknown feedback rule `{0}`: expected one of bp, usf, frsf, brsf, fa (any case)")]
    UnknownRule(String),

    /// A scale name that is not one of `unit`, `init-std`, `match-norm`.
    #[error("unknown feedback scale `{0}`: expected one of unit, init-std, match-norm")]
    UnknownScale(String),

    /// A feedback tensor whose shape differs from the weight it stands in for.
    #[error(
        "feedback tensor of layer `{layer}` has shape {found:?}, but its weight has shape {expected:?}"
    )]
    FeedbackShape {
        /// The layer (or tensor-level op) concerned.
        layer: String,
        /// The weight's shape.
        expected: Vec<usize>,
        /// The feedback tensor's shape.
        found: Vec<usize>,
    },

    /// A rule that needs a fixed feedback tensor (frSF, FA) but the layer holds none.
    #[error("layer `{layer}` uses rule {rule} but holds no fixed feedback tensor")]
    MissingFeedback {
        /// The layer concerned.
        layer: String,
        /// The rule that needs the tensor.
        rule: String,
    },

    /// An input whose shape does not fit the layer.
    #[error("{op}: input of shape {found:?} does not fit: {expected}")]
    InputShape {
        /// The op or layer concerned.
        op: &'static str,
        /// What was expected, in words.
        expected: String,
        /// The input's shape.
        found: Vec<usize>,
    },

    /// A magnitude distribution with invalid parameters (for example low ≥ high, or a negative std).
    #[error("invalid magnitude distribution: {0}")]
    InvalidDistribution(String),

    /// A layer configuration that burn would reject (for example channels not divisible by groups).
    #[error("invalid layer configuration: {0}")]
    InvalidConfig(String),

    /// A tensor that should be finite holds NaN or infinity.
    #[error("{what} holds {count} non-finite value(s)")]
    NonFinite {
        /// The tensor concerned.
        what: String,
        /// How many entries are NaN or infinite.
        count: usize,
    },
}
