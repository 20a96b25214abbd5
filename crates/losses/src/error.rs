//! Typed errors of the losses.

/// Everything a loss or regularizer can refuse.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
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
    /// A target class is negative or not below the number of classes.
    #[error("target {class} at index {index} is not a class of 0..{classes}")]
    ClassOutOfRange {
        /// Position in the batch.
        index: usize,
        /// The target given.
        class: i64,
        /// Number of classes.
        classes: usize,
    },
    /// A multi-hot label matrix holds a value other than 0 or 1.
    #[error("labels must be 0 or 1; found {value} at index {index}")]
    NotMultiHot {
        /// Flat index of the value.
        index: usize,
        /// The value.
        value: f32,
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
    /// HyP²'s threshold ζ is not known for this code length and class count.
    #[error(
        "no code-table threshold for {bits} bits and {classes} classes (2^{log2} codewords); \
         set HyP2Config::threshold"
    )]
    UnknownThreshold {
        /// Code length.
        bits: usize,
        /// Number of classes.
        classes: usize,
        /// ⌈log₂ classes⌉.
        log2: u32,
    },
    /// There is nothing to regularize.
    #[error("{0}")]
    Empty(&'static str),
    /// A tensor could not be read back to the host.
    #[error("reading a tensor: {0}")]
    Read(String),
}

impl From<burn::tensor::TensorReadError> for LossError {
    fn from(e: burn::tensor::TensorReadError) -> Self {
        LossError::Read(e.to_string())
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    reason: &'static str,
) -> LossError {
    LossError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), LossError> {
    if expected == got {
        Ok(())
    } else {
        Err(LossError::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}

/// Reads integer class targets and checks them against `classes`.
pub(crate) fn read_targets(
    targets: &burn::tensor::Tensor<1, burn::tensor::Int>,
    classes: usize,
) -> Result<Vec<usize>, LossError> {
    targets
        .try_to_vec_as::<i64>()?
        .into_iter()
        .enumerate()
        .map(|(index, class)| {
            usize::try_from(class)
                .ok()
                .filter(|&c| c < classes)
                .ok_or(LossError::ClassOutOfRange {
                    index,
                    class,
                    classes,
                })
        })
        .collect()
}
