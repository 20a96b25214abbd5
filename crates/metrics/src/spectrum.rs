//! Eigen-spectrum of a layer's activation covariance and its power-law exponent.
//!
//! Stringer et al. (2019) found that robust visual codes have covariance eigenvalues decaying as
//! `λ_n ∝ n^(−α)` with α close to 1; arXiv 2405.00679 compares α across learning rules.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, check_finite, invalid};

/// Eigenvalues (descending) of the covariance of `activations`, a row-major `samples × features`
/// matrix of one layer's flattened outputs over a data set.
///
/// The covariance is centred and divided by `samples − 1`. When there are fewer samples than
/// features, the eigenvalues come from the `samples × samples` Gram matrix (the same non-zero
/// spectrum at a fraction of the cost); the result then has `samples` entries.
pub fn activation_spectrum(
    activations: &[f32],
    samples: usize,
    features: usize,
) -> Result<Vec<f64>, MetricsError> {
    if samples < 2 {
        return Err(invalid("samples", samples, "must be at least 2"));
    }
    if features == 0 {
        return Err(invalid("features", features, "must be at least 1"));
    }
    crate::error::check_len("activations", samples * features, activations.len())?;
    check_finite("activations", activations)?;
    let mut x = DMatrix::<f64>::from_row_iterator(
        samples,
        features,
        activations.iter().map(|&v| f64::from(v)),
    );
    for mut column in x.column_iter_mut() {
        let mean = column.mean();
        column.add_scalar_mut(-mean);
    }
    let scale = 1.0 / (samples - 1) as f64;
    let gram = if samples < features {
        &x * x.transpose() * scale
    } else {
        x.transpose() * &x * scale
    };
    let mut eigenvalues: Vec<f64> = gram.symmetric_eigenvalues().iter().copied().collect();
    eigenvalues.sort_by(|a, b| b.total_cmp(a));
    Ok(eigenvalues)
}

/// A power law `λ_n = A · n^(−α)` fitted by least squares in log–log space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// The decay exponent α.
    pub alpha: f64,
    /// `ln A`.
    pub log_amplitude: f64,
    /// Coefficient of determination of the log–log fit.
    pub r_squared: f64,
    /// First index used (1-based rank n).
    pub first: usize,
    /// Last index used (1-based rank n, inclusive).
    pub last: usize,
}

/// Fits `λ_n ∝ n^(−α)` to the spectrum over ranks `first..=last` (1-based, as in the papers,
/// which skip the first few and the noisy tail). Every eigenvalue in the range must be positive.
///
/// ```
/// use signsym_metrics::fit_power_law;
/// let spectrum: Vec<f64> = (1..=100).map(|n| 3.0 * (n as f64).powf(-1.2)).collect();
/// let fit = fit_power_law(&spectrum, 5, 80)?;
/// assert!((fit.alpha - 1.2).abs() < 1e-9);
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
pub fn fit_power_law(
    spectrum: &[f64],
    first: usize,
    last: usize,
) -> Result<PowerLawFit, MetricsError> {
    if first == 0 || last > spectrum.len() || last < first + 1 {
        return Err(invalid(
            "rank range",
            format!("{first}..={last} of {}", spectrum.len()),
            "needs 1 <= first < last <= spectrum length",
        ));
    }
    let mut points = Vec::with_capacity(last - first + 1);
    for n in first..=last {
        let lambda = spectrum[n - 1];
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(invalid(
                "eigenvalue",
                format!("λ_{n} = {lambda}"),
                "must be positive and finite inside the fitted range",
            ));
        }
        points.push(((n as f64).ln(), lambda.ln()));
    }
    let m = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / m;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / m;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    Ok(PowerLawFit {
        alpha: -slope,
        log_amplitude: intercept,
        r_squared: if syy == 0.0 {
            1.0
        } else {
            1.0 - residual / syy
        },
        first,
        last,
    })
}
