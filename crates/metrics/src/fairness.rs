//! Fairness of robustness (after Sy-FAR): which classes an attack breaks, and towards which.

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, invalid};

/// Counts of (true class, predicted class), rows = true class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty `classes × classes` matrix.
    pub fn new(classes: usize) -> Result<Self, MetricsError> {
        if classes < 2 {
            return Err(invalid("classes", classes, "must be at least 2"));
        }
        Ok(Self {
            classes,
            counts: vec![0; classes * classes],
        })
    }

    /// Adds pairs of (true, predicted) classes, for example predictions on adversarial inputs.
    pub fn update(&mut self, truth: &[usize], predicted: &[usize]) -> Result<(), MetricsError> {
        crate::error::check_len("predictions", truth.len(), predicted.len())?;
        for (index, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
            for (what, class) in [("truth", t), ("predicted", p)] {
                if class >= self.classes {
                    return Err(MetricsError::ClassOutOfRange {
                        what,
                        index,
                        class,
                        classes: self.classes,
                    });
                }
            }
            self.counts[t * self.classes + p] += 1;
        }
        Ok(())
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Count of samples of class `truth` predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Rows divided by `max(n_i, 1)`: the rate at which class i is predicted as j (the
    /// normalisation Sy-FAR's soft confusion matrix uses).
    pub fn row_normalised(&self) -> Vec<f64> {
        let c = self.classes;
        let mut rates = vec![0.0; c * c];
        for i in 0..c {
            let n: u64 = self.counts[i * c..(i + 1) * c].iter().sum();
            for j in 0..c {
                rates[i * c + j] = self.counts[i * c + j] as f64 / n.max(1) as f64;
            }
        }
        rates
    }

    /// Per-class accuracy, worst class, asymmetry and target shares.
    pub fn fairness(&self) -> FairnessReport {
        let c = self.classes;
        let rates = self.row_normalised();
        let per_class_accuracy: Vec<Option<f64>> = (0..c)
            .map(|i| {
                let n: u64 = self.counts[i * c..(i + 1) * c].iter().sum();
                (n > 0).then(|| rates[i * c + i])
            })
            .collect();
        let worst_class = per_class_accuracy
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let present: Vec<f64> = per_class_accuracy.iter().flatten().copied().collect();
        let mean_class_accuracy = if present.is_empty() {
            None
        } else {
            Some(present.iter().sum::<f64>() / present.len() as f64)
        };
        let mut asymmetry = vec![0.0; c * c];
        let mut total_asymmetry = 0.0;
        for i in 0..c {
            for j in 0..c {
                let a = (rates[i * c + j] - rates[j * c + i]).abs();
                asymmetry[i * c + j] = a;
                if i < j {
                    total_asymmetry += a;
                }
            }
        }
        let errors: u64 = (0..c)
            .flat_map(|i| (0..c).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| self.count(i, j))
            .sum();
        let target_share = (0..c)
            .map(|j| {
                let into_j: u64 = (0..c).filter(|&i| i != j).map(|i| self.count(i, j)).sum();
                if errors == 0 {
                    0.0
                } else {
                    into_j as f64 / errors as f64
                }
            })
            .collect();
        FairnessReport {
            per_class_accuracy,
            worst_class,
            mean_class_accuracy,
            asymmetry,
            total_asymmetry,
            target_share,
        }
    }
}

/// Fairness of (robust) predictions across classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FairnessReport {
    /// Accuracy of each class (`None` for a class with no sample).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// The class with the lowest accuracy and that accuracy.
    pub worst_class: Option<(usize, f64)>,
    /// Mean of the per-class accuracies of the classes present.
    pub mean_class_accuracy: Option<f64>,
    /// `|C_ij − C_ji|` of the row-normalised confusion matrix, row-major `classes × classes`.
    pub asymmetry: Vec<f64>,
    /// `Σ_{i<j} |C_ij − C_ji|`.
    pub total_asymmetry: f64,
    /// Share of all misclassifications that land on each class (sums to 1 when any error).
    pub target_share: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_class_case() {
        let mut m = ConfusionMatrix::new(3).unwrap();
        // Class 0: 4 samples, 3 right, 1 -> 1. Class 1: 2 samples, both -> 0. Class 2: none.
        m.update(&[0, 0, 0, 0, 1, 1], &[0, 0, 0, 1, 0, 0]).unwrap();
        let f = m.fairness();
        assert_eq!(f.per_class_accuracy, vec![Some(0.75), Some(0.0), None]);
        assert_eq!(f.worst_class, Some((1, 0.0)));
        assert_eq!(f.mean_class_accuracy, Some(0.375));
        // C01 = 1/4, C10 = 2/2.
        assert!((f.asymmetry[1] - 0.75).abs() < 1e-12);
        assert!((f.asymmetry[3] - 0.75).abs() < 1e-12);
        assert!((f.total_asymmetry - 0.75).abs() < 1e-12);
        assert_eq!(f.target_share, vec![2.0 / 3.0, 1.0 / 3.0, 0.0]);
        assert!(m.update(&[3], &[0]).is_err());
        assert!(m.update(&[0, 1], &[0]).is_err());
    }
}
