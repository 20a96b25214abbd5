//! Robust accuracy (or robust mAP) against the attack budget ε, with confidence intervals.

use std::path::Path;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::{MetricsError, invalid};

/// What a curve measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RobustMetric {
    /// Fraction of samples still classified correctly; Wilson score interval.
    Accuracy,
    /// Mean AP@k of the queries (`None` = mAP@all); percentile bootstrap interval over queries.
    MapAtK(Option<usize>),
}

/// One point of a robustness curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Attack budget.
    pub epsilon: f64,
    /// Robust accuracy or robust mAP at this budget.
    pub value: f64,
    /// Number of samples (or queries) behind `value`.
    pub samples: usize,
    /// Lower end of the confidence interval.
    pub ci_low: f64,
    /// Upper end of the confidence interval.
    pub ci_high: f64,
}

/// Robust accuracy or mAP as a function of ε for one model / attack / gradient source.
///
/// ```
/// use signsym_metrics::{RobustMetric, RobustnessCurve};
/// let mut curve = RobustnessCurve::new("usf/pgd/exact", RobustMetric::Accuracy, 0.95)?;
/// curve.push_accuracy(0.0, 90, 100)?;
/// curve.push_accuracy(0.1, 40, 100)?;
/// let p = &curve.points[1];
/// assert!(p.ci_low < 0.4 && 0.4 < p.ci_high);
/// let back = RobustnessCurve::from_json(&curve.to_json()?)?;
/// assert_eq!(back, curve);
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessCurve {
    /// Free-form name (rule, attack, gradient source).
    pub label: String,
    /// What the values are.
    pub metric: RobustMetric,
    /// Confidence level of the intervals, in (0, 1).
    pub confidence: f64,
    /// Points in the order they were added.
    pub points: Vec<CurvePoint>,
}

#[derive(Serialize, Deserialize)]
struct CsvRow {
    label: String,
    metric: String,
    confidence: f64,
    epsilon: f64,
    value: f64,
    samples: usize,
    ci_low: f64,
    ci_high: f64,
}

impl RobustnessCurve {
    /// An empty curve.
    pub fn new(
        label: impl Into<String>,
        metric: RobustMetric,
        confidence: f64,
    ) -> Result<Self, MetricsError> {
        check_confidence(confidence)?;
        Ok(Self {
            label: label.into(),
            metric,
            confidence,
            points: Vec::new(),
        })
    }

    fn check_epsilon(epsilon: f64) -> Result<(), MetricsError> {
        if epsilon.is_finite() && epsilon >= 0.0 {
            Ok(())
        } else {
            Err(invalid(
                "epsilon",
                epsilon,
                "must be finite and non-negative",
            ))
        }
    }

    /// Adds a robust-accuracy point: `correct` of `total` samples survive at `epsilon`.
    pub fn push_accuracy(
        &mut self,
        epsilon: f64,
        correct: usize,
        total: usize,
    ) -> Result<&CurvePoint, MetricsError> {
        if self.metric != RobustMetric::Accuracy {
            return Err(invalid(
                "metric",
                "mAP",
                "push_accuracy needs an accuracy curve",
            ));
        }
        Self::check_epsilon(epsilon)?;
        let (ci_low, ci_high) = wilson_interval(correct, total, self.confidence)?;
        self.points.push(CurvePoint {
            epsilon,
            value: correct as f64 / total as f64,
            samples: total,
            ci_low,
            ci_high,
        });
        Ok(self.points.last().expect("just pushed"))
    }

    /// Adds a robust-mAP point from the per-query AP values at `epsilon`, with a percentile
    /// bootstrap interval (`resamples` draws from `seed`).
    pub fn push_map(
        &mut self,
        epsilon: f64,
        per_query_ap: &[f64],
        resamples: usize,
        seed: u64,
    ) -> Result<&CurvePoint, MetricsError> {
        if self.metric == RobustMetric::Accuracy {
            return Err(invalid("metric", "accuracy", "push_map needs an mAP curve"));
        }
        Self::check_epsilon(epsilon)?;
        let (ci_low, ci_high) =
            bootstrap_mean_interval(per_query_ap, resamples, self.confidence, seed)?;
        self.points.push(CurvePoint {
            epsilon,
            value: per_query_ap.iter().sum::<f64>() / per_query_ap.len() as f64,
            samples: per_query_ap.len(),
            ci_low,
            ci_high,
        });
        Ok(self.points.last().expect("just pushed"))
    }

    fn metric_name(&self) -> String {
        match self.metric {
            RobustMetric::Accuracy => "accuracy".into(),
            RobustMetric::MapAtK(Some(k)) => format!("map@{k}"),
            RobustMetric::MapAtK(None) => "map@all".into(),
        }
    }

    /// The curve as JSON.
    pub fn to_json(&self) -> Result<String, MetricsError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// A curve from [`to_json`](Self::to_json)'s output.
    pub fn from_json(json: &str) -> Result<Self, MetricsError> {
        let curve: Self = serde_json::from_str(json)?;
        check_confidence(curve.confidence)?;
        Ok(curve)
    }

    /// Writes curves as one CSV table (a row per point, with the curve's label and metric),
    /// so several rules and attacks land in one file for plotting.
    pub fn write_csv<W: std::io::Write>(curves: &[Self], writer: W) -> Result<(), MetricsError> {
        let mut csv = csv::Writer::from_writer(writer);
        for curve in curves {
            for p in &curve.points {
                csv.serialize(CsvRow {
                    label: curve.label.clone(),
                    metric: curve.metric_name(),
                    confidence: curve.confidence,
                    epsilon: p.epsilon,
                    value: p.value,
                    samples: p.samples,
                    ci_low: p.ci_low,
                    ci_high: p.ci_high,
                })?;
            }
        }
        csv.flush().map_err(|e| MetricsError::Csv(e.into()))?;
        Ok(())
    }

    /// Writes curves to a CSV file (see [`write_csv`](Self::write_csv)).
    pub fn save_csv(curves: &[Self], path: impl AsRef<Path>) -> Result<(), MetricsError> {
        let path = path.as_ref();
        let file = std::fs::File::create(path).map_err(|source| MetricsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::write_csv(curves, std::io::BufWriter::new(file))
    }

    /// Reads curves back from [`write_csv`](Self::write_csv)'s output (rows grouped by label
    /// in order of first appearance).
    pub fn read_csv<R: std::io::Read>(reader: R) -> Result<Vec<Self>, MetricsError> {
        let mut curves: Vec<Self> = Vec::new();
        for row in csv::Reader::from_reader(reader).deserialize() {
            let row: CsvRow = row?;
            let metric = parse_metric(&row.metric)?;
            let point = CurvePoint {
                epsilon: row.epsilon,
                value: row.value,
                samples: row.samples,
                ci_low: row.ci_low,
                ci_high: row.ci_high,
            };
            match curves.iter_mut().find(|c| c.label == row.label) {
                Some(curve) => curve.points.push(point),
                None => {
                    let mut curve = Self::new(row.label, metric, row.confidence)?;
                    curve.points.push(point);
                    curves.push(curve);
                }
            }
        }
        Ok(curves)
    }
}

fn parse_metric(name: &str) -> Result<RobustMetric, MetricsError> {
    match name {
        "accuracy" => Ok(RobustMetric::Accuracy),
        "map@all" => Ok(RobustMetric::MapAtK(None)),
        other => other
            .strip_prefix("map@")
            .and_then(|k| k.parse().ok())
            .map(|k| RobustMetric::MapAtK(Some(k)))
            .ok_or_else(|| invalid("metric", other, "must be accuracy, map@all or map@<k>")),
    }
}

fn check_confidence(confidence: f64) -> Result<(), MetricsError> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(invalid("confidence", confidence, "must lie in (0, 1)"))
    }
}

/// The two-sided standard-normal quantile for a confidence level (1.96 for 0.95).
pub fn normal_quantile(confidence: f64) -> Result<f64, MetricsError> {
    check_confidence(confidence)?;
    let normal = Normal::standard();
    Ok(normal.inverse_cdf(0.5 + confidence / 2.0))
}

/// Wilson score interval for a binomial proportion `successes / total`.
///
/// Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and n successes.
pub fn wilson_interval(
    successes: usize,
    total: usize,
    confidence: f64,
) -> Result<(f64, f64), MetricsError> {
    if total == 0 {
        return Err(MetricsError::Empty("sample"));
    }
    if successes > total {
        return Err(invalid("successes", successes, "must not exceed the total"));
    }
    let z = normal_quantile(confidence)?;
    let n = total as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17.
    let low = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if successes == total {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Ok((low, high))
}

/// Percentile bootstrap interval of the mean of `values` (`resamples` resamples with
/// replacement, drawn from `seed`).
pub fn bootstrap_mean_interval(
    values: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Result<(f64, f64), MetricsError> {
    check_confidence(confidence)?;
    if values.is_empty() {
        return Err(MetricsError::Empty("sample"));
    }
    if resamples == 0 {
        return Err(invalid("resamples", resamples, "must be at least 1"));
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite {
            what: "values",
            index,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    let at = |q: f64| {
        let index = (q * (resamples - 1) as f64).round() as usize;
        means[index.min(resamples - 1)]
    };
    Ok((at(alpha), at(1.0 - alpha)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_a_hand_computed_case() {
        // 8 of 10 at 95 %: the textbook interval is (0.4902, 0.9433).
        let (lo, hi) = wilson_interval(8, 10, 0.95).unwrap();
        assert!((lo - 0.4902).abs() < 1e-4, "{lo}");
        assert!((hi - 0.9433).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson_interval(0, 20, 0.95).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.1611).abs() < 1e-4, "{hi}");
        assert!((normal_quantile(0.95).unwrap() - 1.959964).abs() < 1e-5);
    }

    #[test]
    fn bootstrap_is_seeded_and_covers_the_mean() {
        let values: Vec<f64> = (0..200).map(|i| (i % 7) as f64 / 7.0).collect();
        let mean = values.iter().sum::<f64>() / 200.0;
        let a = bootstrap_mean_interval(&values, 2000, 0.95, 3).unwrap();
        let b = bootstrap_mean_interval(&values, 2000, 0.95, 3).unwrap();
        assert_eq!(a, b);
        assert!(a.0 < mean && mean < a.1);
        // The interval spans about ±1.96 standard errors of the mean.
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 200.0;
        let se = (var / 200.0).sqrt();
        let width = a.1 - a.0;
        assert!(
            (width / (2.0 * 1.96 * se) - 1.0).abs() < 0.1,
            "{width} vs se {se}"
        );
    }

    #[test]
    fn csv_round_trips_several_curves() {
        let mut a = RobustnessCurve::new("bp", RobustMetric::Accuracy, 0.95).unwrap();
        a.push_accuracy(0.0, 9, 10).unwrap();
        a.push_accuracy(0.1, 3, 10).unwrap();
        let mut b = RobustnessCurve::new("usf", RobustMetric::MapAtK(Some(5000)), 0.9).unwrap();
        b.push_map(0.0, &[0.5, 0.7, 0.9], 100, 1).unwrap();
        let mut out = Vec::new();
        RobustnessCurve::write_csv(&[a.clone(), b.clone()], &mut out).unwrap();
        let back = RobustnessCurve::read_csv(out.as_slice()).unwrap();
        assert_eq!(back, vec![a, b]);
    }

    #[test]
    fn invalid_inputs_are_typed_errors() {
        assert!(RobustnessCurve::new("x", RobustMetric::Accuracy, 1.0).is_err());
        let mut c = RobustnessCurve::new("x", RobustMetric::Accuracy, 0.95).unwrap();
        assert!(c.push_accuracy(-0.1, 1, 2).is_err());
        assert!(c.push_accuracy(0.1, 3, 2).is_err());
        assert!(c.push_accuracy(0.1, 0, 0).is_err());
        assert!(c.push_map(0.1, &[0.5], 10, 0).is_err());
    }
}
