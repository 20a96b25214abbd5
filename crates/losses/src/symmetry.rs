//! Sy-FAR's symmetry regularizer ("Symmetry-based Fair Adversarial Robustness", 2025).
//!
//! Under attack, errors between two classes tend to flow one way (a cat becomes a dog far more
//! often than the reverse), which concentrates robust errors on a few classes. Sy-FAR builds a
//! soft confusion matrix from the softmax outputs on adversarial examples,
//! `C_ij = Σ_{x: y=i} p_j(x) / max(n_i, 1)`, and penalises
//! `Σ_{i<j} w_ij |C_ij − C_ji|` with `w_ij = (C_ij + C_ji) / Σ_{k<l} (C_kl + C_lk)`, the pair's
//! share of the error mass. The weights are held constant in the gradient: the penalty pushes
//! towards symmetry and leaves reducing the errors to the classification loss it is added to.

use burn::config::Config;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LossError, check_len, invalid, read_targets};

/// Settings of [`SymmetryRegularizer`].
#[derive(Config, Debug)]
pub struct SymmetryRegularizerConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Strength γ.
    #[config(default = 1.0)]
    pub gamma: f64,
}

impl SymmetryRegularizerConfig {
    /// Builds the regularizer.
    pub fn init(&self) -> Result<SymmetryRegularizer, LossError> {
        if self.num_classes < 2 {
            return Err(invalid(
                "num_classes",
                self.num_classes,
                "must be at least 2",
            ));
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(invalid(
                "gamma",
                self.gamma,
                "must be finite and non-negative",
            ));
        }
        Ok(SymmetryRegularizer {
            classes: self.num_classes,
            gamma: self.gamma,
        })
    }
}

/// Sy-FAR's penalty on the asymmetry of the soft confusion matrix.
#[derive(Clone, Debug)]
pub struct SymmetryRegularizer {
    classes: usize,
    gamma: f64,
}

impl SymmetryRegularizer {
    /// The soft confusion matrix `[classes, classes]` of adversarial logits `[batch, classes]`
    /// and true classes `[batch]`.
    pub fn soft_confusion(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<Tensor<2>, LossError> {
        let [batch, classes] = logits.dims();
        check_len("logit classes", self.classes, classes)?;
        check_len("targets", batch, targets.dims()[0])?;
        if batch == 0 {
            return Err(LossError::Empty("empty batch"));
        }
        let targets = read_targets(&targets, classes)?;
        let device = logits.device();
        let mut onehot = vec![0.0f32; batch * classes];
        let mut counts = vec![0.0f32; classes];
        for (i, &t) in targets.iter().enumerate() {
            onehot[i * classes + t] = 1.0;
            counts[t] += 1.0;
        }
        let inverse: Vec<f32> = counts.iter().map(|n| 1.0 / n.max(1.0)).collect();
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [batch, classes]), &device);
        let inverse = Tensor::<2>::from_data(TensorData::new(inverse, [classes, 1]), &device);
        let probabilities = softmax(logits, 1);
        Ok(onehot.transpose().matmul(probabilities) * inverse)
    }

    /// `γ · Σ_{i<j} w_ij |C_ij − C_ji|` for a given (soft) confusion matrix; zero when C is
    /// symmetric or has no off-diagonal mass.
    pub fn penalty_of(&self, confusion: Tensor<2>) -> Result<Tensor<1>, LossError> {
        let [rows, columns] = confusion.dims();
        check_len("confusion rows", self.classes, rows)?;
        check_len("confusion columns", self.classes, columns)?;
        let device = confusion.device();
        let upper = Tensor::<2>::ones([rows, rows], &device).triu(1);
        let transposed = confusion.clone().transpose();
        let asymmetry = (confusion.clone() - transposed.clone()).abs();
        let mass = (confusion + transposed).detach() * upper.clone();
        let weights = mass.clone() / mass.sum().clamp_min(1e-12).unsqueeze::<2>();
        Ok((weights * asymmetry * upper).sum() * self.gamma)
    }

    /// The penalty on adversarial logits and their true classes.
    pub fn penalty(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<Tensor<1>, LossError> {
        let confusion = self.soft_confusion(logits, targets)?;
        self.penalty_of(confusion)
    }
}
