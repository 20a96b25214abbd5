//! Multi-label classification metrics (MS-COCO, NUS-WIDE): top-1-in-label-set accuracy,
//! exact-match accuracy and the mean over classes of the average precision of ranking the
//! images by each class's score.

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, check_finite, check_len, invalid};

/// What [`multilabel_metrics`] measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelReport {
    /// Share of images whose highest-scoring class is one of its labels.
    pub top1_in_set: f64,
    /// Share of images whose predicted set (score > threshold) equals its label set.
    pub exact_match: f64,
    /// Mean over classes with at least one positive image of the average precision of ranking
    /// every image by that class's score (ties broken by image index).
    pub class_map: f64,
    /// The average precision of each class (`None` for a class without positives).
    pub class_ap: Vec<Option<f64>>,
    /// Images scored.
    pub samples: usize,
}

/// Multi-label metrics of row-major `[samples, classes]` scores (logits) against multi-hot
/// labels (0/1) of the same shape; a class is predicted when its score exceeds `threshold`
/// (0 for logits: sigmoid > 0.5).
///
/// ```
/// use signsym_metrics::multilabel_metrics;
/// // Two images, three classes.
/// let scores = [2.0, -1.0, 0.5, -0.5, 1.0, -2.0];
/// let labels = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
/// let r = multilabel_metrics(&scores, &labels, 3, 0.0)?;
/// assert_eq!(r.top1_in_set, 0.5); // image 1's best class (1) is not a label
/// assert_eq!(r.exact_match, 0.5); // image 0: {0, 2} = {0, 2}; image 1: {1} ≠ {0}
/// assert_eq!(r.class_ap[1], None);
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
pub fn multilabel_metrics(
    scores: &[f32],
    labels: &[f32],
    classes: usize,
    threshold: f32,
) -> Result<MultiLabelReport, MetricsError> {
    if classes == 0 {
        return Err(invalid("classes", 0, "must be at least 1"));
    }
    check_len("labels", scores.len(), labels.len())?;
    if scores.is_empty() || !scores.len().is_multiple_of(classes) {
        return Err(invalid(
            "scores",
            scores.len(),
            "must be a non-empty multiple of the class count",
        ));
    }
    check_finite("scores", scores)?;
    if let Some(i) = labels.iter().position(|&l| l != 0.0 && l != 1.0) {
        return Err(invalid("labels", labels[i], "must be 0 or 1"));
    }
    let n = scores.len() / classes;
    let (mut top1, mut exact) = (0usize, 0usize);
    for (s, l) in scores.chunks(classes).zip(labels.chunks(classes)) {
        let best = (0..classes).fold(0, |b, c| if s[c] > s[b] { c } else { b });
        top1 += usize::from(l[best] == 1.0);
        exact += usize::from((0..classes).all(|c| (s[c] > threshold) == (l[c] == 1.0)));
    }
    let class_ap: Vec<Option<f64>> = (0..classes)
        .map(|c| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                scores[b * classes + c]
                    .total_cmp(&scores[a * classes + c])
                    .then(a.cmp(&b))
            });
            let positives = (0..n).filter(|&i| labels[i * classes + c] == 1.0).count();
            if positives == 0 {
                return None;
            }
            let (mut hits, mut sum) = (0usize, 0.0f64);
            for (rank, &i) in order.iter().enumerate() {
                if labels[i * classes + c] == 1.0 {
                    hits += 1;
                    sum += hits as f64 / (rank + 1) as f64;
                }
            }
            Some(sum / positives as f64)
        })
        .collect();
    let present: Vec<f64> = class_ap.iter().flatten().copied().collect();
    Ok(MultiLabelReport {
        top1_in_set: top1 as f64 / n as f64,
        exact_match: exact as f64 / n as f64,
        class_map: if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        },
        class_ap,
        samples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // One class over four images, positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
        let scores = [0.9, 0.1, 0.5, 0.3];
        let labels = [1.0, 0.0, 1.0, 0.0];
        let r = multilabel_metrics(&scores, &labels, 1, 0.0).unwrap();
        // Order: 0 (0.9), 2 (0.5), 3 (0.3), 1 (0.1): positives at ranks 1 and 2.
        assert!((r.class_map - 1.0).abs() < 1e-12);
        let labels = [1.0, 1.0, 0.0, 0.0];
        let r = multilabel_metrics(&scores, &labels, 1, 0.0).unwrap();
        // Positives 0 (rank 1) and 1 (rank 4): (1 + 2/4) / 2.
        assert!((r.class_map - 0.75).abs() < 1e-12);
        assert!(multilabel_metrics(&scores, &[1.0, 2.0, 0.0, 0.0], 1, 0.0).is_err());
        assert!(multilabel_metrics(&[f32::NAN], &[1.0], 1, 0.0).is_err());
        assert!(multilabel_metrics(&[1.0, 2.0, 3.0], &[1.0, 0.0, 0.0], 2, 0.0).is_err());
    }
}
