//! ResNet-18 as torchvision defines it (`torchvision.models.resnet18`: BasicBlocks [2, 2, 2, 2],
//! 1×1 convolution + batch norm downsampling), with an optional CIFAR stem.

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use signsym_feedback::feedback_module;
use signsym_feedback::layers::FeedbackConv2d;

use crate::build::{Init, check_widths, conv};
use crate::error::invalid;
use crate::norm::batch_norm;
use crate::{Backbone, ModelError};

/// Settings of [`ResNet`]; [`ResNetConfig::resnet18`] gives torchvision's ResNet-18.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Channels of the four stages (`layer1` … `layer4`).
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// BasicBlocks per stage.
    #[config(default = "[2, 2, 2, 2]")]
    pub blocks: [usize; 4],
    /// The CIFAR stem for 32×32 inputs: a 3×3 stride-1 `conv1` and no max-pool, instead of
    /// torchvision's 7×7 stride-2 `conv1` followed by a 3×3 stride-2 max-pool.
    #[config(default = false)]
    pub cifar_stem: bool,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl ResNetConfig {
    /// torchvision's ResNet-18.
    pub fn resnet18() -> Self {
        Self::new()
    }

    /// Builds the backbone with torchvision's initialisation (Kaiming-normal fan-out convs,
    /// batch norm γ = 1, β = 0).
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        check_widths("widths", &self.widths)?;
        check_widths("in_channels", &[self.in_channels])?;
        if self.blocks.contains(&0) {
            return Err(invalid(
                "blocks",
                format!("{:?}", self.blocks),
                "every stage needs a block",
            ));
        }
        let w0 = self.widths[0];
        let (conv1, maxpool) = if self.cifar_stem {
            (
                conv(
                    [self.in_channels, w0],
                    3,
                    1,
                    1,
                    false,
                    Init::KaimingFanOut,
                    device,
                )?,
                None,
            )
        } else {
            let pool = MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init();
            (
                conv(
                    [self.in_channels, w0],
                    7,
                    2,
                    3,
                    false,
                    Init::KaimingFanOut,
                    device,
                )?,
                Some(pool),
            )
        };
        let mut c_in = w0;
        let mut stages = Vec::new();
        for (i, (&width, &blocks)) in self.widths.iter().zip(&self.blocks).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let mut stage = Vec::new();
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                stage.push(BasicBlock::new(c_in, width, s, device)?);
                c_in = width;
            }
            stages.push(stage);
        }
        let [layer1, layer2, layer3, layer4]: [Vec<BasicBlock>; 4] =
            stages.try_into().expect("four stages");
        Ok(ResNet {
            conv1,
            bn1: BatchNormConfig::new(w0).init(device),
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            relu: Relu::new(),
            out_channels: c_in,
            in_channels: self.in_channels,
        })
    }
}

/// The 1×1 convolution and batch norm that match a block's shortcut to its output
/// (torchvision `downsample.0` and `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1×1 convolution with the block's stride, no bias.
    pub conv: FeedbackConv2d,
    /// Batch norm after it.
    pub bn: BatchNorm,
}
feedback_module!(Downsample { conv });

/// torchvision's BasicBlock: conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3×3 convolution (carries the stride).
    pub conv1: FeedbackConv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// Second 3×3 convolution.
    pub conv2: FeedbackConv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// Shortcut projection, where stride or width change.
    pub downsample: Option<Downsample>,
    relu: Relu,
}
feedback_module!(BasicBlock {
    conv1,
    conv2,
    downsample
});

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Result<Self, ModelError> {
        let downsample = if stride != 1 || c_in != c_out {
            Some(Downsample {
                conv: conv(
                    [c_in, c_out],
                    1,
                    stride,
                    0,
                    false,
                    Init::KaimingFanOut,
                    device,
                )?,
                bn: BatchNormConfig::new(c_out).init(device),
            })
        } else {
            None
        };
        Ok(Self {
            conv1: conv(
                [c_in, c_out],
                3,
                stride,
                1,
                false,
                Init::KaimingFanOut,
                device,
            )?,
            bn1: BatchNormConfig::new(c_out).init(device),
            conv2: conv([c_out, c_out], 3, 1, 1, false, Init::KaimingFanOut, device)?,
            bn2: BatchNormConfig::new(c_out).init(device),
            downsample,
            relu: Relu::new(),
        })
    }

    /// The block's output.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(down) => batch_norm(&down.bn, down.conv.forward(input.clone())),
            None => input.clone(),
        };
        let x = self
            .relu
            .forward(batch_norm(&self.bn1, self.conv1.forward(input)));
        let x = batch_norm(&self.bn2, self.conv2.forward(x));
        self.relu.forward(x + identity)
    }
}

/// ResNet without its last layer (`fc`): features are the globally average-pooled output of
/// `layer4`.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution (7×7 stride 2, or 3×3 stride 1 with the CIFAR stem), no bias.
    pub conv1: FeedbackConv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3×3 stride-2 max-pool (absent with the CIFAR stem).
    pub maxpool: Option<MaxPool2d>,
    /// Stage 1.
    pub layer1: Vec<BasicBlock>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<BasicBlock>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<BasicBlock>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<BasicBlock>,
    avgpool: AdaptiveAvgPool2d,
    relu: Relu,
    out_channels: usize,
    in_channels: usize,
}
feedback_module!(ResNet {
    conv1,
    layer1,
    layer2,
    layer3,
    layer4
});

impl Backbone for ResNet {
    fn name(&self) -> &'static str {
        "resnet18"
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn min_input_size(&self) -> [usize; 2] {
        // Every convolution and the max-pool are padded enough to map 1 pixel to 1 pixel.
        [1, 1]
    }

    fn feature_dim(&self) -> usize {
        self.out_channels
    }

    fn features(&self, input: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(batch_norm(&self.bn1, self.conv1.forward(input)));
        if let Some(pool) = &self.maxpool {
            x = crate::pool::max_pool(pool, x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        self.avgpool.forward(x).flatten::<2>(1, 3)
    }

    fn torchvision_module(&self, path: &str) -> Option<String> {
        Some(
            path.replace(".downsample.conv", ".downsample.0")
                .replace(".downsample.bn", ".downsample.1"),
        )
    }

    fn torchvision_head(&self) -> &'static str {
        "fc"
    }

    fn visit_batch_norms_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.bn1);
        for block in self
            .layer1
            .iter_mut()
            .chain(&mut self.layer2)
            .chain(&mut self.layer3)
            .chain(&mut self.layer4)
        {
            f(&mut block.bn1);
            f(&mut block.bn2);
            if let Some(down) = &mut block.downsample {
                f(&mut down.bn);
            }
        }
    }
}
