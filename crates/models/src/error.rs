use std::path::PathBuf;

use signsym_feedback::FeedbackError;
use signsym_losses::LossError;
use thiserror::Error;

/// What can go wrong when building, loading, running or training a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An input batch has the wrong rank, channels or size for the model.
    #[error("{model}: input of shape {found:?} refused: {reason}")]
    InputShape {
        /// The model.
        model: &'static str,
        /// The input's shape.
        found: Vec<usize>,
        /// What the model needs.
        reason: String,
    },
    /// An input batch holds NaN or infinite values.
    #[error("{model}: the input holds non-finite values")]
    NonFiniteInput {
        /// The model.
        model: &'static str,
    },
    /// A weight file could not be read or parsed (missing, truncated, corrupt, unknown format).
    #[error("cannot read weights from {path}: {message}")]
    WeightFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A weight file's keys do not match the model (and a partial load was not asked for).
    #[error(
        "weight file {path} does not match the model: missing keys {missing:?}, unexpected keys {unexpected:?}"
    )]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// Keys the model needs that the file lacks (torchvision names).
        missing: Vec<String>,
        /// Keys in the file that the model has no place for.
        unexpected: Vec<String>,
    },
    /// Tensors in a weight file have other shapes than the model's parameters.
    #[error("weight file {path}: shape mismatch for {}", describe_shapes(.mismatches))]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// `(file key, file shape, shape the model expects in the file's layout)`.
        mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    /// A tensor in a weight file holds NaN or infinite values.
    #[error("weight file {path}: tensor {key} holds non-finite values")]
    NonFiniteWeight {
        /// The file.
        path: PathBuf,
        /// The tensor's key.
        key: String,
    },
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A data source failed to deliver a batch.
    #[error("data: {0}")]
    Data(String),
    /// The loss refused its input.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A feedback rule could not be applied.
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
    /// The loss became NaN or infinite during training.
    #[error("training diverged at epoch {epoch}, step {step}: loss {loss}")]
    Diverged {
        /// Epoch (from 0).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The loss value.
        loss: f32,
    },
    /// Training was interrupted (Ctrl-C); the last finished epoch is in the checkpoint.
    #[error("interrupted after {completed_epochs} finished epochs")]
    Interrupted {
        /// Epochs finished and checkpointed.
        completed_epochs: usize,
    },
}

fn describe_shapes(mismatches: &[(String, Vec<usize>, Vec<usize>)]) -> String {
    mismatches
        .iter()
        .map(|(key, found, expected)| format!("{key} (file {found:?}, model {expected:?})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    reason: &str,
) -> ModelError {
    ModelError::InvalidConfig {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}
