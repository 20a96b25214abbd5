//! The typed keys of a result row: what was measured ([`Metric`]) and where an attack's
//! gradient came from (`SourceKind`, or none for clean numbers). They print and parse as the
//! strings the CSV files hold.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use signsym_attacks::SourceKind;

use super::error::{StudyError, invalid};

/// What a result row's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Top-1 accuracy (multi-label data: the top-1 class is one of the image's labels).
    Accuracy,
    /// Multi-label: the predicted label set (sigmoid > 0.5) equals the true one.
    ExactMatch,
    /// Multi-label: mean over classes of the average precision of ranking images by the class
    /// score (the usual MS-COCO multi-label metric).
    ClassMap,
    /// Accuracy under attack.
    RobustAccuracy,
    /// mAP of the top `k` retrieved items (`None`: all).
    MapAtK(Option<usize>),
    /// mAP@k under attack.
    RobustMapAtK(Option<usize>),
    /// Robust accuracy of one class (the row's `detail` names it).
    ClassRobustAccuracy,
    /// The lowest robust accuracy of any class.
    WorstClassRobustAccuracy,
    /// Robust accuracy averaged over classes.
    MeanClassRobustAccuracy,
    /// `Σ_{i<j} |C_ij − C_ji|` of the row-normalised confusion matrix under attack.
    Asymmetry,
    /// The largest share of the misclassifications under attack that go to one class.
    MaxTargetShare,
    /// Mean Frobenius norm of the input Jacobian of the features.
    JacobianNorm,
    /// Power-law exponent α of the features' covariance spectrum.
    PowerLawAlpha,
    /// The largest singular value of a layer's weight (the row's `detail` names the layer).
    SigmaMax,
    /// Accuracy under random noise of growing norm (the row's ε is the noise's norm).
    NoiseAccuracy,
    /// The smallest adversarial distance a decision-based attack found (per image: `detail`).
    MinAdversarialDistance,
    /// The share of a layer's synapses removed by pruning.
    PrunedShare,
}

impl Metric {
    /// Whether the value is measured under attack.
    pub fn is_robust(&self) -> bool {
        matches!(self, Self::RobustAccuracy | Self::RobustMapAtK(_))
    }

    /// The clean counterpart's prefix for tables (`accuracy`, `map@`).
    pub fn family(&self) -> &'static str {
        match self {
            Self::Accuracy | Self::RobustAccuracy => "accuracy",
            Self::MapAtK(_) | Self::RobustMapAtK(_) => "map",
            _ => "other",
        }
    }
}

const NAMES: [(&str, Metric); 15] = [
    ("accuracy", Metric::Accuracy),
    ("exact_match", Metric::ExactMatch),
    ("class_map", Metric::ClassMap),
    ("robust_accuracy", Metric::RobustAccuracy),
    ("class_robust_accuracy", Metric::ClassRobustAccuracy),
    (
        "worst_class_robust_accuracy",
        Metric::WorstClassRobustAccuracy,
    ),
    (
        "mean_class_robust_accuracy",
        Metric::MeanClassRobustAccuracy,
    ),
    ("asymmetry", Metric::Asymmetry),
    ("max_target_share", Metric::MaxTargetShare),
    ("jacobian_norm", Metric::JacobianNorm),
    ("power_law_alpha", Metric::PowerLawAlpha),
    ("sigma_max", Metric::SigmaMax),
    ("noise_accuracy", Metric::NoiseAccuracy),
    ("min_adversarial_distance", Metric::MinAdversarialDistance),
    ("pruned_share", Metric::PrunedShare),
];

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = |k: &Option<usize>| k.map_or("all".to_string(), |k| k.to_string());
        match self {
            Self::MapAtK(top) => write!(f, "map@{}", k(top)),
            Self::RobustMapAtK(top) => write!(f, "robust_map@{}", k(top)),
            other => {
                let name = NAMES
                    .iter()
                    .find(|(_, m)| m == other)
                    .map(|(n, _)| *n)
                    .expect("every other metric is named");
                f.write_str(name)
            }
        }
    }
}

impl FromStr for Metric {
    type Err = StudyError;

    fn from_str(s: &str) -> Result<Self, StudyError> {
        let top = |rest: &str| -> Result<Option<usize>, StudyError> {
            if rest == "all" {
                Ok(None)
            } else {
                rest.parse()
                    .map(Some)
                    .map_err(|_| invalid("metric", s, "map@k needs a number or `all`"))
            }
        };
        if let Some(rest) = s.strip_prefix("robust_map@") {
            return Ok(Self::RobustMapAtK(top(rest)?));
        }
        if let Some(rest) = s.strip_prefix("map@") {
            return Ok(Self::MapAtK(top(rest)?));
        }
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| invalid("metric", s, "not a metric signsym writes"))
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The gradient source of a row as the CSV spells it: a [`SourceKind`]'s name, or `none` for a
/// clean number.
pub mod source_key {
    use super::*;

    /// Serialises `None` as `none`.
    pub fn serialize<S: Serializer>(v: &Option<SourceKind>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_ref().map_or("none", |k| k.name()))
    }

    /// Parses what [`serialize`] writes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SourceKind>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(None);
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_print_and_parse_back() {
        for (_, m) in NAMES {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        for m in [Metric::MapAtK(Some(5000)), Metric::RobustMapAtK(None)] {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        assert_eq!(Metric::MapAtK(Some(1000)).to_string(), "map@1000");
        assert!("map@x".parse::<Metric>().is_err());
        assert!("speed".parse::<Metric>().is_err());
    }
}
