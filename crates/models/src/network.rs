//! A backbone with a task head: the model that is pre-trained, fine-tuned and attacked.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::FeedbackLayer;
use signsym_feedback::{FeedbackError, FeedbackModule, join_path};

use crate::{Backbone, Head, ModelError, Task};

/// Draws the initial values of every lazily initialised float parameter of `module` now, in
/// the module's order.
pub fn materialize<T: Module>(module: &T) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // Reading the value runs its initialiser once.
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// A backbone followed by a [`Head`] where torchvision's last layer was.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_models::{Network, ResNetConfig, Task};
///
/// let device = Device::flex();
/// let backbone = ResNetConfig::resnet18().with_widths([4, 8, 8, 8]).with_cifar_stem(true).init(&device)?;
/// let net = Network::new(backbone, Task::classification(10), &device)?;
/// let logits = net.try_forward(Tensor::<4>::zeros([2, 3, 32, 32], &device))?;
/// assert_eq!(logits.dims(), [2, 10]);
/// # Ok::<(), signsym_models::ModelError>(())
/// ```
#[derive(Module, Debug)]
pub struct Network<M: Backbone> {
    /// The feature extractor.
    pub backbone: M,
    /// The new last layer.
    pub head: Head,
}

impl<M: Backbone> Network<M> {
    /// Puts a freshly initialised head of the given task on `backbone`. Every parameter still
    /// waiting for its initial values (burn draws them lazily, at first use) is drawn here, so
    /// a construction under a seed (`signsym_feedback::random::with_device_seed`) draws under
    /// that seed and not wherever the network is first used.
    pub fn new(backbone: M, task: Task, device: &Device) -> Result<Self, ModelError> {
        let head = Head::new(backbone.feature_dim(), task, device)?;
        let network = Self { backbone, head };
        materialize(&network);
        Ok(network)
    }

    /// Logits (classification) or continuous codes (hashing) of `[batch, channels, h, w]` images.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.features(input))
    }

    /// [`forward`](Self::forward) after checking the input's shape and values.
    pub fn try_forward(&self, input: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        self.check_input(&input)?;
        Ok(self.forward(input))
    }

    /// Binary codes in `{-1, +1}` for retrieval.
    pub fn codes(&self, input: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        self.check_input(&input)?;
        Ok(self.head.codes(self.backbone.features(input)))
    }

    /// A copy that shares no state with `self`.
    ///
    /// burn's `Clone` shares batch-norm running statistics between clones (they sit behind an
    /// `Arc`), so training a clone moves the original's statistics too. Use this to fine-tune
    /// several copies of one pre-trained network. On an autodiff device the copy is in training
    /// mode with the same gradient settings; on a plain device it is an inference copy.
    pub fn duplicate(&self) -> Self {
        let autodiff = self.device().is_ok_and(|d| d.is_autodiff());
        if autodiff {
            self.valid().train()
        } else {
            self.valid()
        }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Result<Device, ModelError> {
        self.devices()
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Data("the network has no parameters".into()))
    }

    /// Writes every parameter and buffer to a safetensors file (keys are the module paths,
    /// `backbone.conv1.weight`, `head.linear.bias`, …; linear weights in burn's `[in, out]`
    /// layout, convolution kernels as PyTorch's), so the same weights can be loaded elsewhere,
    /// for example into a PyTorch replica for cross-checks.
    pub fn save_safetensors(&self, path: impl AsRef<std::path::Path>) -> Result<(), ModelError> {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let path = path.as_ref();
        let mut store = SafetensorsStore::from_file(path).overwrite(true);
        self.save_into(&mut store)
            .map_err(|e| ModelError::WeightFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    /// The head's task.
    pub fn task(&self) -> Task {
        self.head.task
    }

    fn check_input(&self, input: &Tensor<4>) -> Result<(), ModelError> {
        self.backbone.check_input(input.dims())?;
        let finite = input.clone().is_finite().all().into_scalar::<bool>();
        if !finite {
            return Err(ModelError::NonFiniteInput {
                model: self.backbone.name(),
            });
        }
        Ok(())
    }
}

impl<M: Backbone> FeedbackModule for Network<M> {
    fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer)) {
        self.backbone
            .visit_feedback(&join_path(prefix, "backbone"), f);
        self.head.visit_feedback(&join_path(prefix, "head"), f);
    }

    fn visit_feedback_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
    ) -> Result<(), FeedbackError> {
        self.backbone
            .visit_feedback_mut(&join_path(prefix, "backbone"), f)?;
        self.head.visit_feedback_mut(&join_path(prefix, "head"), f)
    }
}
