#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod accuracy;
mod error;
mod fairness;
mod jacobian;
mod multilabel;
mod retrieval;
mod robustness;
mod spectrum;

pub use accuracy::TopKAccuracy;
pub use error::MetricsError;
pub use fairness::{ConfusionMatrix, FairnessReport};
pub use jacobian::{JacobianConfig, JacobianNorm, jacobian_frobenius, jacobian_frobenius_exact};
pub use multilabel::{MultiLabelReport, multilabel_metrics};
pub use retrieval::{
    ApNormalizer, LabelSets, MapConfig, PackedCodes, PrecisionRecallCurve, RetrievalReport,
    code_bit, hamming_distance, map_at_k, precision_recall_by_radius, rank,
};
pub use robustness::{
    CurvePoint, RobustMetric, RobustnessCurve, bootstrap_mean_interval, normal_quantile,
    wilson_interval,
};
pub use spectrum::{PowerLawFit, activation_spectrum, fit_power_law};
