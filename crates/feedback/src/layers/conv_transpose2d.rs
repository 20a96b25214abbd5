use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{Device, Tensor};

use super::common::{active_kernel, aux_for, conv_fans};
use super::{FeedbackLayer, impl_feedback_layer, with_rule};
use crate::ops::{check_groups, check_input_channels, conv_transpose2d_with};
use crate::{FeedbackConfig, FeedbackError, FeedbackRule};

/// Configuration of a [`FeedbackConvTranspose2d`]; the same fields and defaults as burn's
/// `ConvTranspose2dConfig`, plus the feedback settings.
#[derive(Config, Debug)]
pub struct FeedbackConvTranspose2dConfig {
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
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Extra size added to one side of the output.
    #[config(default = "[0, 0]")]
    pub padding_out: [usize; 2],
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

impl FeedbackConvTranspose2dConfig {
    /// Creates the layer (initialised as burn's `ConvTranspose2d`), panicking on invalid settings.
    pub fn init(&self, device: &Device) -> FeedbackConvTranspose2d {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the layer, or says why the settings are invalid.
    pub fn try_init(&self, device: &Device) -> Result<FeedbackConvTranspose2d, FeedbackError> {
        check_groups("FeedbackConvTranspose2d", self.groups, self.channels)?;
        let conv = ConvTranspose2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_dilation(self.dilation)
            .with_groups(self.groups)
            .with_padding(self.padding)
            .with_padding_out(self.padding_out)
            .with_bias(self.bias)
            .with_initializer(self.initializer.clone())
            .init(device);
        FeedbackConvTranspose2d::from_conv_transpose2d(conv, self.feedback.clone())
    }
}

/// A 2-d transposed convolution whose input gradient follows its [`FeedbackRule`].
#[derive(Module, Debug)]
pub struct FeedbackConvTranspose2d {
    /// Kernel `[channels_in, channels_out / groups, k₁, k₂]`.
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
    pub padding: [usize; 2],
    /// Extra output size.
    pub padding_out: [usize; 2],
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Rule, scale, distributions and seed.
    #[module(skip)]
    pub settings: FeedbackConfig,
}

impl_feedback_layer!(FeedbackConvTranspose2d, "conv_transpose2d", 4);

impl FeedbackConvTranspose2d {
    /// Wraps a burn `ConvTranspose2d` (its parameters and their ids are kept).
    pub fn from_conv_transpose2d(
        conv: ConvTranspose2d,
        settings: FeedbackConfig,
    ) -> Result<Self, FeedbackError> {
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
            padding_out: conv.padding_out,
            channels: conv.channels,
            settings: settings.with_rule(FeedbackRule::Bp),
        };
        with_rule(layer, rule)
    }

    /// The burn `ConvTranspose2d` with the same parameters (the fixed tensor is dropped).
    pub fn into_conv_transpose2d(self) -> ConvTranspose2d {
        ConvTranspose2d {
            weight: self.weight,
            bias: self.bias,
            stride: self.stride,
            kernel_size: self.kernel_size,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding,
            padding_out: self.padding_out,
            channels: self.channels,
        }
    }

    fn options(&self) -> ConvTransposeOptions<2> {
        ConvTransposeOptions::new(
            self.stride,
            self.padding,
            self.padding_out,
            self.dilation,
            self.groups,
        )
    }

    /// Applies the transposed convolution to `input` of shape `[batch, channels_in, h, w]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let weight = self.weight.val();
        let bias = self.bias.as_ref().map(|b| b.val());
        match active_kernel(&self.settings, conv_fans(&weight.dims())) {
            None => conv_transpose2d(input, weight, bias, self.options()),
            Some(kernel) => {
                let aux = aux_for(&kernel, &self.settings, &self.weight, &self.feedback);
                conv_transpose2d_with(input, weight, bias, aux, self.options(), kernel)
            }
        }
    }

    /// [`forward`](Self::forward) after checking the input shape and the feedback tensor.
    pub fn try_forward(&self, input: Tensor<4>) -> Result<Tensor<4>, FeedbackError> {
        self.validate()?;
        let channels = self.weight.lazy_shape()[0];
        check_input_channels("FeedbackConvTranspose2d", &input.dims(), 4, channels)?;
        Ok(self.forward(input))
    }
}

impl From<ConvTranspose2d> for FeedbackConvTranspose2d {
    /// A BP layer with burn's parameters.
    fn from(conv: ConvTranspose2d) -> Self {
        Self::from_conv_transpose2d(conv, FeedbackConfig::new()).expect("BP needs no fixed tensor")
    }
}
