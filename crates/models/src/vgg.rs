//! VGG-16 as torchvision defines it (`torchvision.models.vgg16`, configuration "D", no batch
//! norm).

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Relu};
use burn::tensor::{Device, Tensor};
use signsym_feedback::feedback_module;
use signsym_feedback::layers::{FeedbackConv2d, FeedbackLinear};

use crate::alexnet::remap_indexed;
use crate::build::{Init, check_widths, conv, linear};
use crate::error::invalid;
use crate::{Backbone, ModelError};

/// Convolutions per stage (configuration "D").
const STAGE_CONVS: [usize; 5] = [2, 2, 3, 3, 3];
/// torchvision's `classifier` indices of the two hidden linear layers.
const LINEAR_INDICES: [usize; 2] = [0, 3];

/// torchvision's `features` indices of the thirteen convolutions (each conv is followed by a
/// ReLU, each stage by a max-pool).
fn conv_indices() -> Vec<usize> {
    let mut indices = Vec::new();
    let mut i = 0;
    for convs in STAGE_CONVS {
        for _ in 0..convs {
            indices.push(i);
            i += 2;
        }
        i += 1;
    }
    indices
}

/// Settings of [`Vgg16`]; the defaults are torchvision's.
#[derive(Config, Debug)]
pub struct Vgg16Config {
    /// Channels of the five stages.
    #[config(default = "[64, 128, 256, 512, 512]")]
    pub channels: [usize; 5],
    /// Width of the two hidden fully connected layers.
    #[config(default = 4096)]
    pub hidden: usize,
    /// Dropout probability after each hidden fully connected layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl Vgg16Config {
    /// Builds the backbone with torchvision's initialisation (Kaiming-normal fan-out convs,
    /// N(0, 0.01) linear layers, zero biases).
    pub fn init(&self, device: &Device) -> Result<Vgg16, ModelError> {
        check_widths("channels", &self.channels)?;
        check_widths("hidden", &[self.hidden, self.in_channels])?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must lie in [0, 1)"));
        }
        let mut features = Vec::new();
        let mut c_in = self.in_channels;
        for (stage, &convs) in STAGE_CONVS.iter().enumerate() {
            for _ in 0..convs {
                let c_out = self.channels[stage];
                features.push(conv(
                    [c_in, c_out],
                    3,
                    1,
                    1,
                    true,
                    Init::KaimingFanOut,
                    device,
                )?);
                c_in = c_out;
            }
        }
        let classifier = vec![
            linear(c_in * 49, self.hidden, Init::Normal(0.01), device)?,
            linear(self.hidden, self.hidden, Init::Normal(0.01), device)?,
        ];
        Ok(Vgg16 {
            features,
            classifier,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            avgpool: AdaptiveAvgPool2dConfig::new([7, 7]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            relu: Relu::new(),
            hidden: self.hidden,
            in_channels: self.in_channels,
        })
    }
}

/// VGG-16 without its last layer (`classifier.6`): features are the 4096-wide output of the
/// second hidden layer after its ReLU and dropout.
#[derive(Module, Debug)]
pub struct Vgg16 {
    /// The thirteen convolutions (torchvision `features.{0,2,5,…,28}`).
    pub features: Vec<FeedbackConv2d>,
    /// The two hidden linear layers (torchvision `classifier.{0,3}`).
    pub classifier: Vec<FeedbackLinear>,
    pool: MaxPool2d,
    avgpool: AdaptiveAvgPool2d,
    dropout: Dropout,
    relu: Relu,
    hidden: usize,
    in_channels: usize,
}
feedback_module!(Vgg16 {
    features,
    classifier
});

impl Backbone for Vgg16 {
    fn name(&self) -> &'static str {
        "vgg16"
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn min_input_size(&self) -> [usize; 2] {
        // Five 2×2 max-pools with stride 2.
        [32, 32]
    }

    fn feature_dim(&self) -> usize {
        self.hidden
    }

    fn features(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = input;
        let mut layer = self.features.iter();
        for convs in STAGE_CONVS {
            for conv in layer.by_ref().take(convs) {
                x = self.relu.forward(conv.forward(x));
            }
            x = crate::pool::max_pool(&self.pool, x);
        }
        let x = self.avgpool.forward(x).flatten::<2>(1, 3);
        let x = crate::dropout::dropout(
            &self.dropout,
            self.relu.forward(self.classifier[0].forward(x)),
        );
        crate::dropout::dropout(
            &self.dropout,
            self.relu.forward(self.classifier[1].forward(x)),
        )
    }

    fn torchvision_module(&self, path: &str) -> Option<String> {
        remap_indexed(path, "features", &conv_indices())
            .or_else(|| remap_indexed(path, "classifier", &LINEAR_INDICES))
    }

    fn torchvision_head(&self) -> &'static str {
        "classifier.6"
    }
}
