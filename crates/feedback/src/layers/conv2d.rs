use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::common::{active_kernel, aux_for, conv_fans, same_padding};
use super::{FeedbackLayer, impl_feedback_layer, with_rule};
use crate::FeedbackKernel;
use crate::ops::{check_groups, check_input_channels, conv2d_with};
use crate::{FeedbackConfig, FeedbackError, FeedbackRule};

/// Configuration of a [`FeedbackConv2d`]; the same fields and defaults as burn's `Conv2dConfig`,
/// plus the feedback settings.
#[derive(Config, Debug)]
pub struct FeedbackConv2dConfig {
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Dilation.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Groups.
    #[config(default = "1")]
    pub groups: usize,
    /// Padding.
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
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

impl FeedbackConv2dConfig {
    /// Creates the layer (initialised as burn's `Conv2d`), panicking on invalid settings.
    pub fn init(&self, device: &Device) -> FeedbackConv2d {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the layer, or says why the settings are invalid.
    pub fn try_init(&self, device: &Device) -> Result<FeedbackConv2d, FeedbackError> {
        check_groups("FeedbackConv2d", self.groups, self.channels)?;
        let conv = Conv2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_padding(self.padding.clone())
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device);
        FeedbackConv2d::from_conv2d(conv, self.feedback.clone())
    }
}

/// A 2-d convolution whose input gradient follows its [`FeedbackRule`].
#[derive(Module, Debug)]
pub struct FeedbackConv2d {
    /// Kernel `[channels_out, channels_in / groups, k₁, k₂]`.
    pub weight: Param<Tensor<4>>,
    /// Bias `[channels_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The fixed tensor of frSF (`M`) or FA (`B`), shaped as the kernel; never trained.
    pub feedback: Option<Param<Tensor<4>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Padding.
    #[module(skip)]
    pub padding: PaddingConfig2d,
    /// Rule, scale, distributions and seed.
    #[module(skip)]
    pub settings: FeedbackConfig,
}

impl_feedback_layer!(FeedbackConv2d, "conv2d", 4);

impl FeedbackConv2d {
    /// Wraps a burn `Conv2d` (its parameters and their ids are kept) under the given settings.
    pub fn from_conv2d(conv: Conv2d, settings: FeedbackConfig) -> Result<Self, FeedbackError> {
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

    /// The burn `Conv2d` with the same parameters (the fixed feedback tensor is dropped).
    pub fn into_conv2d(self) -> Conv2d {
        Conv2d {
            weight: self.weight,
            bias: self.bias,
            stride: self.stride,
            kernel_size: self.kernel_size,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding,
        }
    }

    fn options(&self, height: usize, width: usize) -> ConvOptions<2> {
        let k = self.kernel_size;
        let s = self.stride;
        let padding = match self.padding {
            PaddingConfig2d::Valid => [(0, 0), (0, 0)],
            PaddingConfig2d::Same => [
                same_padding(k[0], s[0], height),
                same_padding(k[1], s[1], width),
            ],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        };
        ConvOptions::new_with_padding(self.stride, padding, self.dilation, self.groups)
    }

    /// Applies the convolution to `input` of shape `[batch, channels_in, height, width]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = input.dims();
        let options = self.options(height, width);
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        match active_kernel(&self.settings, conv_fans(&weight.dims())) {
            // Backpropagation through the same op (`V = W`): the forward is burn's kernel, and
            // the backward gets the extension's faster Flex kernels.
            None => conv2d_with(input, weight, bias, None, options, FeedbackKernel::WEIGHT),
            Some(kernel) => {
                let aux = aux_for(&kernel, &self.settings, &self.weight, &self.feedback);
                conv2d_with(input, weight, bias, aux, options, kernel)
            }
        }
    }

    /// [`forward`](Self::forward) after checking the input shape and the feedback tensor.
    pub fn try_forward(&self, input: Tensor<4>) -> Result<Tensor<4>, FeedbackError> {
        self.validate()?;
        let channels = self.weight.lazy_shape()[1] * self.groups;
        check_input_channels("FeedbackConv2d", &input.dims(), 4, channels)?;
        Ok(self.forward(input))
    }
}

impl From<Conv2d> for FeedbackConv2d {
    /// A BP layer with burn's parameters.
    fn from(conv: Conv2d) -> Self {
        Self::from_conv2d(conv, FeedbackConfig::new()).expect("BP needs no fixed tensor")
    }
}
