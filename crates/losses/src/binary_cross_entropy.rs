//! Binary cross-entropy on logits, for multi-label classification (one sigmoid per class).

use burn::module::Module;
use burn::tensor::Tensor;

use crate::TaskLoss;
use crate::error::{LossError, check_len, invalid};

/// Mean over images and classes of `−y·log σ(z) − (1 − y)·log(1 − σ(z))` for logits `z`
/// `[batch, classes]` and multi-hot targets `y` of the same shape, in the stable form
/// `max(z, 0) − z·y + log(1 + e^(−|z|))`.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_losses::{BinaryCrossEntropy, TaskLoss};
/// let device = Device::flex();
/// let loss = BinaryCrossEntropy::new()
///     .loss(Tensor::<2>::zeros([2, 3], &device), Tensor::<2>::ones([2, 3], &device))?
///     .into_scalar::<f32>();
/// assert!((loss - 2f32.ln()).abs() < 1e-6); // σ(0) = 1/2
/// # Ok::<(), signsym_losses::LossError>(())
/// ```
#[derive(Module, Debug, Default)]
pub struct BinaryCrossEntropy;

impl BinaryCrossEntropy {
    /// The loss.
    pub fn new() -> Self {
        Self
    }

    fn checked_shape(logits: &Tensor<2>, targets: &Tensor<2>) -> Result<(), LossError> {
        let [batch, classes] = logits.dims();
        if batch == 0 {
            return Err(LossError::Empty("empty batch"));
        }
        check_len("target rows", batch, targets.dims()[0])?;
        check_len("target classes", classes, targets.dims()[1])
    }
}

impl TaskLoss for BinaryCrossEntropy {
    type Target = Tensor<2>;

    fn loss(&self, logits: Tensor<2>, targets: Tensor<2>) -> Result<Tensor<1>, LossError> {
        Self::checked_shape(&logits, &targets)?;
        let values = targets.clone().try_to_vec_as::<f32>()?;
        if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(invalid("target", v, "multi-hot targets must be 0 or 1"));
        }
        self.loss_validated(logits, targets)
    }

    fn loss_validated(
        &self,
        logits: Tensor<2>,
        targets: Tensor<2>,
    ) -> Result<Tensor<1>, LossError> {
        Self::checked_shape(&logits, &targets)?;
        let positive = logits.clone().clamp_min(0.0);
        let softplus = logits.clone().abs().neg().exp().add_scalar(1.0).log();
        Ok((positive - logits * targets + softplus).mean())
    }
}
