use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::common::{active_kernel, aux_for};
use super::{FeedbackLayer, impl_feedback_layer, with_rule};
use crate::backend::FeedbackKernel;
use crate::ops::{check_linear_input, linear_with};
use crate::{FeedbackConfig, FeedbackError, FeedbackRule};

/// Configuration of a [`FeedbackLinear`] layer; the same fields and defaults as burn's
/// `LinearConfig`, plus the feedback settings.
#[derive(Config, Debug)]
pub struct FeedbackLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of weight and bias.
    #[config(default = "super::default_initializer()")]
    pub initializer: Initializer,
    /// The backward rule and its parameters.
    #[config(default = "FeedbackConfig::new()")]
    pub feedback: FeedbackConfig,
}

impl FeedbackLinearConfig {
    /// Creates the layer (initialised as burn's `Linear`), panicking on invalid feedback settings.
    pub fn init(&self, device: &Device) -> FeedbackLinear {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the layer, or says why the settings are invalid.
    pub fn try_init(&self, device: &Device) -> Result<FeedbackLinear, FeedbackError> {
        let linear = LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device);
        FeedbackLinear::from_linear(linear, self.feedback.clone())
    }
}

/// A linear layer `y = x·W + b` whose input gradient follows its [`FeedbackRule`].
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_feedback::{FeedbackConfig, FeedbackRule};
/// use signsym_feedback::layers::{FeedbackLayer, FeedbackLinearConfig};
///
/// let device = Device::flex().autodiff();
/// let mut layer = FeedbackLinearConfig::new(4, 3)
///     .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::USf))
///     .init(&device);
/// let y = layer.forward(Tensor::<2>::ones([2, 4], &device));
/// assert_eq!(y.dims(), [2, 3]);
/// layer.set_rule(FeedbackRule::Fa).unwrap(); // draws B from the layer seed
/// assert!(layer.feedback.is_some());
/// ```
#[derive(Module, Debug)]
pub struct FeedbackLinear {
    /// Weight `[d_input, d_output]`, as in burn's `Linear`.
    pub weight: Param<Tensor<2>>,
    /// Bias `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The fixed tensor of frSF (`M`) or FA (`B`), `[d_input, d_output]`; never trained.
    pub feedback: Option<Param<Tensor<2>>>,
    /// Rule, scale, distributions and seed.
    #[module(skip)]
    pub settings: FeedbackConfig,
}

impl_feedback_layer!(FeedbackLinear, "linear", 2);

impl FeedbackLinear {
    /// Wraps a burn `Linear` (its parameters and their ids are kept) under the given settings.
    pub fn from_linear(linear: Linear, settings: FeedbackConfig) -> Result<Self, FeedbackError> {
        let rule = settings.rule;
        let layer = Self {
            weight: linear.weight,
            bias: linear.bias,
            feedback: None,
            settings: settings.with_rule(FeedbackRule::Bp),
        };
        with_rule(layer, rule)
    }

    /// The burn `Linear` with the same parameters (the fixed feedback tensor is dropped).
    pub fn into_linear(self) -> Linear {
        Linear {
            weight: self.weight,
            bias: self.bias,
        }
    }

    fn fans(&self) -> (usize, usize) {
        let [d_input, d_output] = self.weight.lazy_shape().dims::<2>();
        (d_input, d_output)
    }

    /// Applies the layer to `input` of shape `[..., d_input]`.
    ///
    /// # Panics
    /// If the last axis is not `d_input` (see [`try_forward`](Self::try_forward)).
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        match active_kernel(&self.settings, self.fans()) {
            // Backpropagation through the same op (`V = W`): on Flex its input gradient gets the
            // extension's kernel, as every rule's does (see `flex_linear`).
            None => linear_with(input, weight, bias, None, FeedbackKernel::WEIGHT),
            Some(kernel) => {
                let aux = aux_for(&kernel, &self.settings, &self.weight, &self.feedback);
                linear_with(input, weight, bias, aux, kernel)
            }
        }
    }

    /// [`forward`](Self::forward) after checking the input shape and the feedback tensor.
    pub fn try_forward<const D: usize>(
        &self,
        input: Tensor<D>,
    ) -> Result<Tensor<D>, FeedbackError> {
        self.validate()?;
        check_linear_input(&input.dims(), self.fans().0)?;
        Ok(self.forward(input))
    }
}

impl From<Linear> for FeedbackLinear {
    /// A BP layer with burn's parameters.
    fn from(linear: Linear) -> Self {
        Self::from_linear(linear, FeedbackConfig::new()).expect("BP needs no fixed tensor")
    }
}
