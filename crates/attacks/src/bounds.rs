//! The box inputs live in, perturbation norms, and the input checks every attack shares.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, invalid};
use crate::model::host;

/// The valid input range `[lower, upper]` of every pixel (default `[0, 1]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputBox {
    /// Smallest valid value.
    pub lower: f32,
    /// Largest valid value.
    pub upper: f32,
}

impl Default for InputBox {
    fn default() -> Self {
        Self {
            lower: 0.0,
            upper: 1.0,
        }
    }
}

impl InputBox {
    /// A box; `lower < upper`, both finite.
    pub fn new(lower: f32, upper: f32) -> Result<Self, AttackError> {
        if !(lower.is_finite() && upper.is_finite() && lower < upper) {
            return Err(invalid(
                "box",
                format!("[{lower}, {upper}]"),
                "needs finite ends with lower < upper",
            ));
        }
        Ok(Self { lower, upper })
    }

    /// Width of the box.
    pub fn width(&self) -> f32 {
        self.upper - self.lower
    }

    /// Clips a tensor into the box.
    pub fn clip<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        x.clamp(self.lower, self.upper)
    }

    /// Clips host values into the box.
    pub(crate) fn clip_host(&self, x: &mut [f32]) {
        for v in x {
            *v = v.clamp(self.lower, self.upper);
        }
    }

    /// Checks that a batch is non-empty, finite and inside the box; returns its host copy.
    pub(crate) fn check(&self, what: &'static str, x: &Tensor<4>) -> Result<Vec<f32>, AttackError> {
        if x.dims()[0] == 0 {
            return Err(AttackError::ShapeMismatch {
                what: "batch size",
                expected: 1,
                got: 0,
            });
        }
        let values = host(x.clone())?;
        self.check_host(what, &values)?;
        Ok(values)
    }

    pub(crate) fn check_host(&self, what: &'static str, values: &[f32]) -> Result<(), AttackError> {
        // The fields are public: a box written by hand (NaN or inverted ends) is refused here,
        // before an attack draws from it.
        InputBox::new(self.lower, self.upper)?;
        let mut min = f32::INFINITY;
        let mut max = f32::NEG_INFINITY;
        for &v in values {
            if !v.is_finite() {
                return Err(AttackError::NonFinite { what });
            }
            min = min.min(v);
            max = max.max(v);
        }
        if min < self.lower || max > self.upper {
            return Err(AttackError::OutOfBox {
                what,
                min,
                max,
                lower: self.lower,
                upper: self.upper,
            });
        }
        Ok(())
    }
}

/// The norm a perturbation is measured (and bounded) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Norm {
    /// Largest absolute change of any pixel.
    Linf,
    /// Euclidean length of the change.
    L2,
}

impl Norm {
    /// Short name (`linf`, `l2`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Linf => "linf",
            Self::L2 => "l2",
        }
    }

    /// Norm of a host vector.
    pub fn of(&self, v: impl IntoIterator<Item = f32>) -> f64 {
        match self {
            Self::Linf => v.into_iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs()))),
            Self::L2 => v
                .into_iter()
                .map(|x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt(),
        }
    }

    /// Norm of `a − b`.
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f64 {
        self.of(a.iter().zip(b).map(|(x, y)| x - y))
    }

    /// Per-sample norms of `a − b` for two host batches of `dim` values per sample.
    pub fn distances(&self, a: &[f32], b: &[f32], dim: usize) -> Vec<f64> {
        a.chunks(dim)
            .zip(b.chunks(dim))
            .map(|(x, y)| self.distance(x, y))
            .collect()
    }
}

/// Per-sample L2 norms of a batch, shaped `[batch, 1, 1, 1]` for broadcasting.
pub(crate) fn l2_norms(x: Tensor<4>) -> Tensor<4> {
    let [b, ..] = x.dims();
    x.powi_scalar(2)
        .flatten::<2>(1, 3)
        .sum_dim(1)
        .sqrt()
        .reshape([b, 1, 1, 1])
}

/// Checks two batch sizes agree.
pub(crate) fn check_batch(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), AttackError> {
    if expected == got {
        Ok(())
    } else {
        Err(AttackError::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_box_is_checked_before_use() {
        let values = [0.2f32, 0.4];
        assert!(InputBox::default().check_host("x", &values).is_ok());
        for (lower, upper) in [(f32::NAN, 1.0), (1.0, 0.0), (0.0, f32::INFINITY)] {
            let hand = InputBox { lower, upper };
            assert!(
                matches!(
                    hand.check_host("x", &values),
                    Err(AttackError::InvalidParameter { .. })
                ),
                "[{lower}, {upper}]"
            );
        }
        // Values outside a valid box are still their own error.
        assert!(InputBox::default().check_host("x", &[1.5]).is_err());
    }
}
