use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::common::{active_kernel, aux_for, conv_fans, same_padding};
use super::{FeedbackLayer, impl_feedback_layer, with_rule};
use crate::ops::{check_groups, check_input_channels, conv1d_with};
use crate::{FeedbackConfig, FeedbackError, FeedbackRule};

/// Configuration of a [`FeedbackConv1d`]; the same fields and defaults as burn's `Conv1dConfig`,
/// plus the feedback settings.
#[derive(Config, Debug)]
pub struct FeedbackConv1dConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Kernel size.
    pub kernel_size: usize,
    /// Stride.
    #[config(default = "1")]
    pub stride: usize,
    /// Dilation.
    #[config(default = "1")]
    pub dilation: usize,
    /// Groups.
    #[config(default = "1")]
    pub groups: usize,
    /// Padding.
    #[config(default = "PaddingConfig1d::Valid")]
    pub padding: PaddingConfig1d,
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

impl FeedbackConv1dConfig {
    /// Creates the layer (initialised as burn's `Conv1d`), panicking on invalid settings.
    pub fn init(&self, device: &Device) -> FeedbackConv1d {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the layer, or says why the settings are invalid.
    pub fn try_init(&self, device: &Device) -> Result<FeedbackConv1d, FeedbackError> {
        check_groups(
            "FeedbackConv1d",
            self.groups,
            [self.channels_in, self.channels_out],
        )?;
        let conv = Conv1dConfig::new(self.channels_in, self.channels_out, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_padding(self.padding.clone())
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device);
        FeedbackConv1d::from_conv1d(conv, self.feedback.clone())
    }
}

/// A 1-d convolution whose input gradient follows its [`FeedbackRule`].
#[derive(Module, Debug)]
pub struct FeedbackConv1d {
    /// Kernel `[channels_out, channels_in / groups, k]`.
    pub weight: Param<Tensor<3>>,
    /// Bias `[channels_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The fixed tensor of frSF (`M`) or FA (`B`), shaped as the kernel; never trained.
    pub feedback: Option<Param<Tensor<3>>>,
    /// Stride.
    pub stride: usize,
    /// Kernel size.
    pub kernel_size: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups.
    pub groups: usize,
    /// Padding.
    #[module(skip)]
    pub padding: PaddingConfig1d,
    /// Rule, scale, distributions and seed.
    #[module(skip)]
    pub settings: FeedbackConfig,
}

impl_feedback_layer!(FeedbackConv1d, "conv1d", 3);

impl FeedbackConv1d {
    /// Wraps a burn `Conv1d` (its parameters and their ids are kept) under the given settings.
    pub fn from_conv1d(conv: Conv1d, settings: FeedbackConfig) -> Result<Self, FeedbackError> {
        let rule = settings.rule;
        let layer = Self {
            weight: conv.weight,
            bias: conv.bias,
            feedback: None,
            stride: conv.stride,
            kernel_size: conv.kernel_size,
            dilation: conv.dilation,
            groups: conv.groups,
            padding: conv.padding,
            settings: settings.with_rule(FeedbackRule::Bp),
        };
        with_rule(layer, rule)
    }

    /// The burn `Conv1d` with the same parameters (the fixed feedback tensor is dropped).
    pub fn into_conv1d(self) -> Conv1d {
        Conv1d {
            weight: self.weight,
            bias: self.bias,
            stride: self.stride,
            kernel_size: self.kernel_size,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding,
        }
    }

    fn options(&self, length: usize) -> ConvOptions<1> {
        let padding = match self.padding {
            PaddingConfig1d::Valid => (0, 0),
            PaddingConfig1d::Same => same_padding(self.kernel_size, self.stride, length),
            PaddingConfig1d::Explicit(left, right) => (left, right),
        };
        ConvOptions::new_with_padding([self.stride], [padding], [self.dilation], self.groups)
    }

    /// Applies the convolution to `input` of shape `[batch, channels_in, length]`.
    pub fn forward(&self, input: Tensor<3>) -> Tensor<3> {
        let options = self.options(input.dims()[2]);
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        match active_kernel(&self.settings, conv_fans(&weight.dims())) {
            None => conv1d(input, weight, bias, options),
            Some(kernel) => {
                let aux = aux_for(&kernel, &self.settings, &self.weight, &self.feedback);
                conv1d_with(input, weight, bias, aux, options, kernel)
            }
        }
    }

    /// [`forward`](Self::forward) after checking the input shape and the feedback tensor.
    pub fn try_forward(&self, input: Tensor<3>) -> Result<Tensor<3>, FeedbackError> {
        self.validate()?;
        let channels = self.weight.lazy_shape()[1] * self.groups;
        check_input_channels("FeedbackConv1d", &input.dims(), 3, channels)?;
        Ok(self.forward(input))
    }
}

impl From<Conv1d> for FeedbackConv1d {
    /// A BP layer with burn's parameters.
    fn from(conv: Conv1d) -> Self {
        Self::from_conv1d(conv, FeedbackConfig::new()).expect("BP needs no fixed tensor")
    }
}
