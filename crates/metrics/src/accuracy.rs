//! Top-1 and top-k accuracy accumulated over batches.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, check_finite, check_len, invalid};

/// Streaming top-k accuracy for several k at once.
///
/// A sample is correct at k when fewer than k classes rank above its target. Ties rank the
/// lower class index first (as `argmax` does), so the count never depends on a sort's whims.
///
/// ```
/// use signsym_metrics::TopKAccuracy;
/// let mut acc = TopKAccuracy::new(&[1, 2])?;
/// // Two samples, three classes.
/// acc.update_scores(&[0.1, 0.7, 0.2, 0.5, 0.1, 0.4], 3, &[2, 0])?;
/// assert_eq!(acc.accuracy(1), Some(0.5));
/// assert_eq!(acc.accuracy(2), Some(1.0));
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopKAccuracy {
    ks: Vec<usize>,
    correct: Vec<u64>,
    total: u64,
}

impl TopKAccuracy {
    /// Tracks accuracy at each k in `ks` (each at least 1).
    pub fn new(ks: &[usize]) -> Result<Self, MetricsError> {
        if ks.is_empty() {
            return Err(MetricsError::Empty("ks"));
        }
        if let Some(&k) = ks.iter().find(|&&k| k == 0) {
            return Err(invalid("k", k, "must be at least 1"));
        }
        Ok(Self {
            ks: ks.to_vec(),
            correct: vec![0; ks.len()],
            total: 0,
        })
    }

    /// Adds a batch of scores (row-major `[batch, classes]`) and target classes.
    pub fn update_scores(
        &mut self,
        scores: &[f32],
        classes: usize,
        targets: &[usize],
    ) -> Result<(), MetricsError> {
        if classes == 0 {
            return Err(invalid("classes", classes, "must be at least 1"));
        }
        check_len("scores", targets.len() * classes, scores.len())?;
        check_finite("scores", scores)?;
        if let Some((index, &class)) = targets.iter().enumerate().find(|(_, c)| **c >= classes) {
            return Err(MetricsError::ClassOutOfRange {
                what: "targets",
                index,
                class,
                classes,
            });
        }
        for (row, &target) in scores.chunks_exact(classes).zip(targets) {
            let t = row[target];
            let above = row
                .iter()
                .enumerate()
                .filter(|&(c, &s)| s > t || (s == t && c < target))
                .count();
            for (k, correct) in self.ks.iter().zip(&mut self.correct) {
                if above < *k {
                    *correct += 1;
                }
            }
        }
        self.total += targets.len() as u64;
        Ok(())
    }

    /// Adds a batch of logits `[batch, classes]` and integer targets `[batch]`.
    pub fn update(
        &mut self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<(), MetricsError> {
        let [batch, classes] = logits.dims();
        check_len("targets", batch, targets.dims()[0])?;
        let scores = logits.try_to_vec_as::<f32>()?;
        let targets = targets.try_to_vec_as::<i64>()?;
        let targets = targets
            .iter()
            .enumerate()
            .map(|(index, &t)| {
                usize::try_from(t).map_err(|_| MetricsError::NegativeClass {
                    what: "targets",
                    index,
                    class: t,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.update_scores(&scores, classes, &targets)
    }

    /// Accuracy at `k` so far; `None` before any sample or for a k not tracked.
    pub fn accuracy(&self, k: usize) -> Option<f64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        (self.total > 0).then(|| self.correct[i] as f64 / self.total as f64)
    }

    /// Correct count at `k` so far.
    pub fn correct(&self, k: usize) -> Option<u64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        Some(self.correct[i])
    }

    /// Samples seen.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.correct.fill(0);
        self.total = 0;
    }
}
