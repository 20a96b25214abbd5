#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod binary_cross_entropy;
mod cross_entropy;
mod error;
mod hyp2;
mod spectral;
mod symmetry;

use burn::tensor::Tensor;

pub use binary_cross_entropy::BinaryCrossEntropy;
pub use cross_entropy::{CrossEntropy, CrossEntropyConfig};
pub use error::LossError;
pub use hyp2::{
    HyP2, HyP2Config, HyP2Settings, PairSelection, code_table_threshold, plotkin_code_size,
};
pub use spectral::{SpectralRegularizer, SpectralRegularizerConfig};
pub use symmetry::{SymmetryRegularizer, SymmetryRegularizerConfig};

/// A task loss: a model's output `[batch, …]` against a target, to a scalar (`[1]`) tensor.
///
/// One interface for classification ([`CrossEntropy`], target = class indices) and hashing
/// ([`HyP2`], target = multi-hot labels), so a training loop is generic over the task.
pub trait TaskLoss {
    /// What the output is compared with.
    type Target;

    /// The mean loss of the batch; a typed error for mismatched shapes or invalid targets.
    fn loss(&self, output: Tensor<2>, target: Self::Target) -> Result<Tensor<1>, LossError>;

    /// [`loss`](Self::loss) for targets already validated (a training loop checks its data set
    /// once): shapes are still checked, but target values need not be read back from the device,
    /// which on a GPU would stall the queue every step. Defaults to `loss`.
    fn loss_validated(
        &self,
        output: Tensor<2>,
        target: Self::Target,
    ) -> Result<Tensor<1>, LossError> {
        self.loss(output, target)
    }
}
