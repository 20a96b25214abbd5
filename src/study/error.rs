//! The one error type of the reproduction pipeline.

use std::path::PathBuf;

/// What can go wrong in a study run; every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A setting is out of range or inconsistent with another.
    #[error("invalid setting `{name}` = {value}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Its value, as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading a data set failed.
    #[error(transparent)]
    Data(#[from] signsym_data::DataError),
    /// Building, loading or training a model failed.
    #[error(transparent)]
    Model(#[from] signsym_models::ModelError),
    /// An attack failed.
    #[error(transparent)]
    Attack(#[from] signsym_attacks::AttackError),
    /// A loss could not be built.
    #[error(transparent)]
    Loss(#[from] signsym_losses::LossError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] signsym_metrics::MetricsError),
    /// A local learning rule refused its settings or its checkpoint.
    #[error(transparent)]
    Local(#[from] signsym_local::LocalError),
    /// A feedback rule could not be set.
    #[error(transparent)]
    Feedback(#[from] signsym_feedback::FeedbackError),
    /// Reading or writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An output or resume file could not be (de)serialised.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("plot {path}: {message}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The stop flag (Ctrl-C) was raised; what finished is saved and a rerun resumes.
    #[error("interrupted; finished parts are saved under {out}, rerun the same command to resume")]
    Interrupted {
        /// The output directory.
        out: PathBuf,
    },
}

impl StudyError {
    /// This error, an interruption reported with the run's output directory `out` (what a
    /// rerun resumes) instead of the inner training's.
    pub(crate) fn resumed_from(self, out: &std::path::Path) -> Self {
        match self {
            Self::Interrupted { .. } => Self::Interrupted { out: out.into() },
            other => other,
        }
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl std::fmt::Display,
    reason: &str,
) -> StudyError {
    StudyError::Invalid {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The first of `counts` that is 0, as an error: every count setting must be at least 1.
pub(crate) fn at_least_one(counts: &[(&'static str, usize)]) -> Result<(), StudyError> {
    match counts.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(invalid(name, 0, "must be at least 1")),
        None => Ok(()),
    }
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StudyError {
    let path = path.into();
    move |source| StudyError::Io { path, source }
}
