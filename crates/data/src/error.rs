use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong when reading a data set.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is malformed at a given position.
    #[error("{path}: {position}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where, in words (for example `line 12, field 65`).
        position: String,
        /// What is wrong.
        message: String,
    },
    /// A split that cannot be made (for example a test fraction outside (0, 1)).
    #[error("invalid split: {0}")]
    InvalidSplit(String),
}
