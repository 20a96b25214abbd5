//! Typed errors of the attacks.

use signsym_metrics::MetricsError;
use signsym_models::ModelError;

/// Everything an attack or an evaluation can refuse.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// A setting is outside its valid range (ε < 0, zero steps, step size ≤ 0, …).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The setting's name.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// Two inputs that must agree in size do not.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which quantity.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// An input holds NaN or infinity.
    #[error("{what} holds a non-finite value")]
    NonFinite {
        /// Which input.
        what: &'static str,
    },
    /// Inputs lie outside the attack's box `[lower, upper]`.
    #[error("{what} lies in [{min}, {max}], outside the box [{lower}, {upper}]")]
    OutOfBox {
        /// Which input.
        what: &'static str,
        /// Smallest value found.
        min: f32,
        /// Largest value found.
        max: f32,
        /// The box's lower end.
        lower: f32,
        /// The box's upper end.
        upper: f32,
    },
    /// A gradient attack was given inputs on a device without autodiff.
    #[error(
        "gradient attacks need the model and inputs on an autodiff device (Device::autodiff())"
    )]
    NotAutodiff,
    /// A label is not a class of the model.
    #[error("label {label} at index {index} is not a class of 0..{classes}")]
    LabelOutOfRange {
        /// Position in the batch.
        index: usize,
        /// The label given.
        label: i64,
        /// Number of classes (model outputs).
        classes: usize,
    },
    /// The model failed on the input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A metric refused its input.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Tensor data could not be read back.
    #[error("tensor data: {0}")]
    Data(String),
}

impl From<burn::tensor::TensorReadError> for AttackError {
    fn from(e: burn::tensor::TensorReadError) -> Self {
        Self::Data(format!("{e:?}"))
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> AttackError {
    AttackError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

/// Checks that an ε is finite and non-negative.
pub(crate) fn check_epsilon(epsilon: f64) -> Result<(), AttackError> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            "epsilon",
            epsilon,
            "must be finite and non-negative",
        ))
    }
}

/// Checks a strictly positive finite setting.
pub(crate) fn check_positive(name: &'static str, value: f64) -> Result<(), AttackError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(name, value, "must be finite and positive"))
    }
}

/// Checks a count that must be at least one.
pub(crate) fn check_count(name: &'static str, value: usize) -> Result<(), AttackError> {
    if value == 0 {
        Err(invalid(name, value, "must be at least 1"))
    } else {
        Ok(())
    }
}
