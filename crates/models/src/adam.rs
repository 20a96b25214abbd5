//! Adam as burn's, with each parameter's update fused into one pass on Flex.

use burn::config::Config;
use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};
use signsym_feedback::AdamUpdate;

/// Settings of [`FusedAdam`]: burn's `AdamConfig` without AMSGrad and gradient clipping, same
/// defaults.
///
/// ```
/// use burn::optim::GradientsParams;
/// use burn::module::{Module, Param};
/// use burn::tensor::{Device, Tensor};
/// use signsym_models::FusedAdamConfig;
/// let device = Device::flex().autodiff();
/// #[derive(Module, Debug)]
/// struct Model { w: Param<Tensor<1>> }
/// let model = Model { w: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)) };
/// let loss = model.w.val().powi_scalar(2).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let mut optimizer = FusedAdamConfig::new().init();
/// let model = optimizer.step(0.1, model, grads);
/// let w = model.w.val().into_data().try_to_vec::<f32>().unwrap();
/// assert!((w[0] - 0.9).abs() < 1e-4 && (w[1] - 1.9).abs() < 1e-4);
/// ```
#[derive(Config, Debug)]
pub struct FusedAdamConfig {
    /// First-moment decay `β₁`.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Second-moment decay `β₂`.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// `ε` of the denominator.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// L2 penalty added to each gradient (`g + λ·θ`), as burn's `WeightDecayConfig`.
    pub weight_decay: Option<f32>,
}

impl FusedAdamConfig {
    /// The optimizer for one parameter group.
    pub fn build(&self) -> FusedAdam {
        FusedAdam {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// The optimizer for a whole module.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.build())
    }
}

/// burn's `Adam` (same formula, same `f32` operations in the same order, same state record, so
/// checkpoints of either load into the other) whose update is one pass per parameter on Flex
/// (`signsym_feedback::ops::adam_update`) instead of a dozen elementwise tensors; other backends
/// run burn's operations.
#[derive(Clone, Debug)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: Option<f32>,
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (moments, time) = match state {
            Some(s) => {
                let momentum = s.momentum;
                (
                    Some((momentum.moment_1, momentum.moment_2)),
                    momentum.time + 1,
                )
            }
            None => (None, 1),
        };
        let update = AdamUpdate {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            lr,
            time,
        };
        // The optimizer hands over a parameter, its gradient and its own state: equal shapes
        // and a step from 1 by construction.
        let (tensor, m, v) = signsym_feedback::ops::adam_update(tensor, grad, moments, update)
            .expect("a parameter, its gradient and its moments share one shape");
        let state = AdamState::new(AdaptiveMomentumState::new(time, m, v));
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
