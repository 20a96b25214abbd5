use std::path::PathBuf;

/// What the local rules refuse.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A setting out of range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// Sizes that must agree do not.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// Which size.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// Bad input data.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint that cannot be read or does not match the settings.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stop was requested; the last finished epoch is saved.
    #[error("interrupted after {completed_epochs} epochs (rerun to resume)")]
    Interrupted {
        /// Epochs finished.
        completed_epochs: usize,
    },
    /// A model error (writing a checkpoint, building the hybrid).
    #[error(transparent)]
    Model(#[from] signsym_models::ModelError),
}
