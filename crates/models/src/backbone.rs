//! What every backbone offers: features for a head, input checks, and its torchvision key layout.

use burn::module::{Flag, Module, ModuleDisplay, ModuleMapper, Param};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use signsym_feedback::FeedbackModule;

use crate::ModelError;

/// A feature extractor: a torchvision architecture without its last layer.
pub trait Backbone: Module + ModuleDisplay + FeedbackModule {
    /// A short name (`"alexnet"`, `"vgg16"`, `"resnet18"`, `"small_cnn"`).
    fn name(&self) -> &'static str;

    /// Channels of the input images.
    fn in_channels(&self) -> usize;

    /// The smallest input height and width the architecture accepts.
    fn min_input_size(&self) -> [usize; 2];

    /// Width of the feature vector [`features`](Self::features) returns.
    fn feature_dim(&self) -> usize;

    /// Features `[batch, feature_dim]` of images `[batch, channels, height, width]`.
    fn features(&self, input: Tensor<4>) -> Tensor<2>;

    /// The torchvision module path of one of the backbone's module paths (for example
    /// `features.1` → `features.3` for AlexNet), or `None` when it has no torchvision counterpart.
    fn torchvision_module(&self, path: &str) -> Option<String>;

    /// The torchvision path of the last layer the head replaces (`classifier.6`, `fc`).
    fn torchvision_head(&self) -> &'static str;

    /// Calls `f` on every batch norm of the backbone (none by default).
    fn visit_batch_norms_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        let _ = f;
    }

    /// Checks an input shape against the architecture.
    fn check_input(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        let [batch, channels, height, width] = dims;
        let refuse = |reason: String| ModelError::InputShape {
            model: self.name(),
            found: dims.to_vec(),
            reason,
        };
        if batch == 0 {
            return Err(refuse("empty batch".into()));
        }
        if channels != self.in_channels() {
            return Err(refuse(format!("expects {} channels", self.in_channels())));
        }
        let [min_h, min_w] = self.min_input_size();
        if height < min_h || width < min_w {
            return Err(refuse(format!("images must be at least {min_h}×{min_w}")));
        }
        Ok(())
    }
}

/// Output size of a convolution or pooling window along one axis (PyTorch's floor rule).
pub(crate) fn window_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(kernel) / stride + 1
}

struct TrainingFlags(bool);

impl ModuleMapper for TrainingFlags {
    fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
        flag.with_value(self.0)
    }
}

/// Switches batch norm to its running statistics and turns dropout off, keeping the parameters
/// on the autodiff graph, so that attacks can take input gradients of the inference-mode model.
///
/// (`Module::valid` also turns the training behaviour off, but detaches the parameters from
/// autodiff.)
pub fn eval_mode<M: Module>(module: M) -> M {
    module.map(&mut TrainingFlags(false))
}

/// Turns batch-norm batch statistics and dropout back on (the state a model is built in).
pub fn train_mode<M: Module>(module: M) -> M {
    module.map(&mut TrainingFlags(true))
}
