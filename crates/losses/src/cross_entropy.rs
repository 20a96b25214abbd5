//! Cross-entropy for classification (burn's, with validated inputs and optional smoothing).

use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::TaskLoss;
use crate::error::{LossError, check_len, invalid, read_targets};

/// Settings of [`CrossEntropy`].
#[derive(Config, Debug)]
pub struct CrossEntropyConfig {
    /// Label smoothing α in [0, 1]: the target distribution becomes `(1 − α)·onehot + α/C`.
    pub label_smoothing: Option<f32>,
}

impl CrossEntropyConfig {
    /// Builds the loss; fails for a smoothing outside [0, 1].
    pub fn init(&self, device: &Device) -> Result<CrossEntropy, LossError> {
        if let Some(alpha) = self.label_smoothing
            && !(0.0..=1.0).contains(&alpha)
        {
            return Err(invalid("label_smoothing", alpha, "must lie in [0, 1]"));
        }
        Ok(CrossEntropy {
            inner: CrossEntropyLossConfig::new()
                .with_smoothing(self.label_smoothing)
                .init(device),
        })
    }
}

/// Mean cross-entropy of logits `[batch, classes]` against class indices `[batch]`.
///
/// A [`Module`] without parameters, so a training loop can hold it beside a loss that has some
/// (HyP²'s proxies).
///
/// ```
/// use burn::tensor::{Device, Int, Tensor};
/// use signsym_losses::{CrossEntropyConfig, TaskLoss};
/// let device = Device::flex();
/// let ce = CrossEntropyConfig::new().init(&device)?;
/// let logits = Tensor::<2>::zeros([2, 4], &device);
/// let targets = Tensor::<1, Int>::from_ints([0, 3], &device);
/// let loss = ce.loss(logits, targets)?.into_scalar::<f32>();
/// assert!((loss - 4f32.ln()).abs() < 1e-6);
/// assert!(ce.loss(Tensor::<2>::zeros([2, 4], &device),
///                 Tensor::<1, Int>::from_ints([0, 4], &device)).is_err());
/// # Ok::<(), signsym_losses::LossError>(())
/// ```
#[derive(Module, Debug)]
pub struct CrossEntropy {
    inner: CrossEntropyLoss,
}

impl TaskLoss for CrossEntropy {
    type Target = Tensor<1, Int>;

    fn loss(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Result<Tensor<1>, LossError> {
        let [batch, classes] = logits.dims();
        if batch == 0 {
            return Err(LossError::Empty("empty batch"));
        }
        check_len("targets", batch, targets.dims()[0])?;
        read_targets(&targets, classes)?;
        Ok(self.inner.forward(logits, targets))
    }

    fn loss_validated(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
    ) -> Result<Tensor<1>, LossError> {
        let [batch, _] = logits.dims();
        if batch == 0 {
            return Err(LossError::Empty("empty batch"));
        }
        check_len("targets", batch, targets.dims()[0])?;
        Ok(self.inner.forward(logits, targets))
    }
}
