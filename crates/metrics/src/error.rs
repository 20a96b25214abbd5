//! Typed errors of the metrics.

use std::path::PathBuf;

/// Everything a metric can refuse.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Two inputs that must agree in size do not.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which quantity.
        what: &'static str,
        /// The size required by the other input.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// An input that must not be empty is.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An input holds NaN or an infinity.
    #[error("{what} holds a non-finite value at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
    },
    /// A class index is not below the number of classes.
    #[error("{what}: class {class} at index {index} is not below the number of classes {classes}")]
    ClassOutOfRange {
        /// Which input.
        what: &'static str,
        /// Position of the offending entry.
        index: usize,
        /// The class given.
        class: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A class index is negative.
    #[error("{what}: class {class} at index {index} is negative")]
    NegativeClass {
        /// Which input.
        what: &'static str,
        /// Position of the offending entry.
        index: usize,
        /// The class given.
        class: i64,
    },
    /// A parameter is outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// What it must satisfy.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A tensor could not be read back to the host.
    #[error("reading a tensor: {0}")]
    Read(String),
    /// A CSV file could not be written or parsed.
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A JSON document could not be written or parsed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    reason: &'static str,
) -> MetricsError {
    MetricsError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

pub(crate) fn check_finite(what: &'static str, values: &[f32]) -> Result<(), MetricsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite { what, index }),
        None => Ok(()),
    }
}

pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), MetricsError> {
    if expected == got {
        Ok(())
    } else {
        Err(MetricsError::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}

impl From<burn::tensor::TensorReadError> for MetricsError {
    fn from(e: burn::tensor::TensorReadError) -> Self {
        MetricsError::Read(e.to_string())
    }
}
