//! AlexNet as torchvision defines it (`torchvision.models.alexnet`, the "one weird trick"
//! variant with 64-192-384-256-256 channels).

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Relu};
use burn::tensor::{Device, Tensor};
use signsym_feedback::feedback_module;
use signsym_feedback::layers::{FeedbackConv2d, FeedbackLinear};

use crate::backbone::window_out;
use crate::build::{Init, check_widths, conv, linear};
use crate::error::invalid;
use crate::{Backbone, ModelError};

/// torchvision's `features` indices of the five convolutions.
const CONV_INDICES: [usize; 5] = [0, 3, 6, 8, 10];
/// torchvision's `classifier` indices of the two hidden linear layers.
const LINEAR_INDICES: [usize; 2] = [1, 4];

/// Settings of [`AlexNet`]; the defaults are torchvision's.
#[derive(Config, Debug)]
pub struct AlexNetConfig {
    /// Output channels of the five convolutions.
    #[config(default = "[64, 192, 384, 256, 256]")]
    pub channels: [usize; 5],
    /// Width of the two hidden fully connected layers.
    #[config(default = 4096)]
    pub hidden: usize,
    /// Dropout probability before each hidden fully connected layer.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl AlexNetConfig {
    /// Builds the backbone (PyTorch's default initialisation).
    pub fn init(&self, device: &Device) -> Result<AlexNet, ModelError> {
        check_widths("channels", &self.channels)?;
        check_widths("hidden", &[self.hidden, self.in_channels])?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must lie in [0, 1)"));
        }
        let c = self.channels;
        let specs = [
            ([self.in_channels, c[0]], 11, 4, 2),
            ([c[0], c[1]], 5, 1, 2),
            ([c[1], c[2]], 3, 1, 1),
            ([c[2], c[3]], 3, 1, 1),
            ([c[3], c[4]], 3, 1, 1),
        ];
        let features = specs
            .iter()
            .map(|&(ch, k, s, p)| conv(ch, k, s, p, true, Init::TorchDefault, device))
            .collect::<Result<Vec<_>, _>>()?;
        let classifier = vec![
            linear(c[4] * 36, self.hidden, Init::TorchDefault, device)?,
            linear(self.hidden, self.hidden, Init::TorchDefault, device)?,
        ];
        Ok(AlexNet {
            features,
            classifier,
            pool: MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init(),
            avgpool: AdaptiveAvgPool2dConfig::new([6, 6]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            relu: Relu::new(),
            hidden: self.hidden,
            in_channels: self.in_channels,
        })
    }
}

/// AlexNet without its last layer (`classifier.6`): features are the 4096-wide output of the
/// second hidden layer after its ReLU.
#[derive(Module, Debug)]
pub struct AlexNet {
    /// The five convolutions (torchvision `features.{0,3,6,8,10}`).
    pub features: Vec<FeedbackConv2d>,
    /// The two hidden linear layers (torchvision `classifier.{1,4}`).
    pub classifier: Vec<FeedbackLinear>,
    pool: MaxPool2d,
    avgpool: AdaptiveAvgPool2d,
    dropout: Dropout,
    relu: Relu,
    hidden: usize,
    in_channels: usize,
}
feedback_module!(AlexNet {
    features,
    classifier
});

impl Backbone for AlexNet {
    fn name(&self) -> &'static str {
        "alexnet"
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn min_input_size(&self) -> [usize; 2] {
        // conv 11/4/2, pool 3/2, conv 5 (same), pool 3/2, three convs 3 (same), pool 3/2:
        // every pool needs at least 3 pixels.
        let fits = |h: usize| {
            let a = window_out(h, 11, 4, 2);
            a >= 3 && {
                let b = window_out(a, 3, 2, 0);
                b >= 3 && window_out(b, 3, 2, 0) >= 3
            }
        };
        let side = (11..).find(|&h| fits(h)).expect("some size fits");
        [side, side]
    }

    fn feature_dim(&self) -> usize {
        self.hidden
    }

    fn features(&self, input: Tensor<4>) -> Tensor<2> {
        let f = &self.features;
        let x = crate::pool::max_pool(&self.pool, self.relu.forward(f[0].forward(input)));
        let x = crate::pool::max_pool(&self.pool, self.relu.forward(f[1].forward(x)));
        let x = self.relu.forward(f[2].forward(x));
        let x = self.relu.forward(f[3].forward(x));
        let x = crate::pool::max_pool(&self.pool, self.relu.forward(f[4].forward(x)));
        let x = self.avgpool.forward(x).flatten::<2>(1, 3);
        let drop = |x| crate::dropout::dropout(&self.dropout, x);
        let x = self.relu.forward(self.classifier[0].forward(drop(x)));
        self.relu.forward(self.classifier[1].forward(drop(x)))
    }

    fn torchvision_module(&self, path: &str) -> Option<String> {
        remap_indexed(path, "features", &CONV_INDICES)
            .or_else(|| remap_indexed(path, "classifier", &LINEAR_INDICES))
    }

    fn torchvision_head(&self) -> &'static str {
        "classifier.6"
    }
}

/// `"{list}.{i}"` → `"{list}.{indices[i]}"`.
pub(crate) fn remap_indexed(path: &str, list: &str, indices: &[usize]) -> Option<String> {
    let rest = path.strip_prefix(list)?.strip_prefix('.')?;
    let i: usize = rest.parse().ok()?;
    indices.get(i).map(|tv| format!("{list}.{tv}"))
}
