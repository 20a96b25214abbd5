//! A small CNN for 28×28 images (MNIST, Fashion-MNIST): two 5×5 convolutions with max-pooling
//! and a hidden fully connected layer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Relu;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};
use signsym_feedback::feedback_module;
use signsym_feedback::layers::{FeedbackConv2d, FeedbackLinear};

use crate::build::{Init, check_widths, conv, linear};
use crate::{Backbone, ModelError};

/// Settings of [`SmallCnn`].
#[derive(Config, Debug)]
pub struct SmallCnnConfig {
    /// Output channels of the two convolutions.
    #[config(default = "[32, 64]")]
    pub channels: [usize; 2],
    /// Width of the hidden fully connected layer (the feature dimension).
    #[config(default = 128)]
    pub hidden: usize,
    /// Input channels.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height and width; the flattened feature map is `channels[1] × (side/4)²`.
    #[config(default = 28)]
    pub side: usize,
}

impl SmallCnnConfig {
    /// Builds the backbone (PyTorch's default initialisation).
    pub fn init(&self, device: &Device) -> Result<SmallCnn, ModelError> {
        check_widths("channels", &self.channels)?;
        check_widths("hidden", &[self.hidden, self.in_channels])?;
        if self.side < 4 {
            return Err(crate::error::invalid(
                "side",
                self.side,
                "must be at least 4",
            ));
        }
        let [c1, c2] = self.channels;
        let pooled = self.side / 4;
        Ok(SmallCnn {
            conv1: conv(
                [self.in_channels, c1],
                5,
                1,
                2,
                true,
                Init::TorchDefault,
                device,
            )?,
            conv2: conv([c1, c2], 5, 1, 2, true, Init::TorchDefault, device)?,
            fc1: linear(
                c2 * pooled * pooled,
                self.hidden,
                Init::TorchDefault,
                device,
            )?,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
            hidden: self.hidden,
            in_channels: self.in_channels,
            side: self.side,
        })
    }
}

/// conv5×5 → ReLU → max-pool 2 → conv5×5 → ReLU → max-pool 2 → linear → ReLU.
#[derive(Module, Debug)]
pub struct SmallCnn {
    /// First convolution (padding 2).
    pub conv1: FeedbackConv2d,
    /// Second convolution (padding 2).
    pub conv2: FeedbackConv2d,
    /// Hidden fully connected layer.
    pub fc1: FeedbackLinear,
    pool: MaxPool2d,
    relu: Relu,
    hidden: usize,
    in_channels: usize,
    side: usize,
}
feedback_module!(SmallCnn { conv1, conv2, fc1 });

impl Backbone for SmallCnn {
    fn name(&self) -> &'static str {
        "small_cnn"
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn min_input_size(&self) -> [usize; 2] {
        [self.side, self.side]
    }

    fn check_input(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        let [batch, channels, height, width] = dims;
        if batch == 0 || channels != self.in_channels || height != self.side || width != self.side {
            return Err(ModelError::InputShape {
                model: "small_cnn",
                found: dims.to_vec(),
                reason: format!(
                    "expects a non-empty batch of {}×{}×{} images",
                    self.in_channels, self.side, self.side
                ),
            });
        }
        Ok(())
    }

    fn feature_dim(&self) -> usize {
        self.hidden
    }

    fn features(&self, input: Tensor<4>) -> Tensor<2> {
        let x = crate::pool::max_pool(&self.pool, self.relu.forward(self.conv1.forward(input)));
        let x = crate::pool::max_pool(&self.pool, self.relu.forward(self.conv2.forward(x)));
        self.relu.forward(self.fc1.forward(x.flatten::<2>(1, 3)))
    }

    fn torchvision_module(&self, path: &str) -> Option<String> {
        // No torchvision counterpart: a PyTorch replica would use the same names.
        Some(path.to_string())
    }

    fn torchvision_head(&self) -> &'static str {
        "fc2"
    }
}
