//! Layer constructors shared by the backbones, with torchvision's initialisations.

use burn::module::Param;
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::{
    FeedbackConv2d, FeedbackConv2dConfig, FeedbackLinear, FeedbackLinearConfig,
};

use crate::ModelError;

/// How a layer's weights start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// PyTorch's default for `nn.Conv2d` / `nn.Linear`: U(±1/√fan_in) for weights and bias
    /// (burn's default initializer gives the same bound).
    TorchDefault,
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, bias zero (VGG, ResNet convs).
    KaimingFanOut,
    /// `normal_(0, std)`, bias zero (VGG's linear layers: std 0.01).
    Normal(f64),
}

impl Init {
    fn initializer(self) -> Initializer {
        match self {
            Self::TorchDefault => Initializer::KaimingUniform {
                gain: 1.0 / 3.0f64.sqrt(),
                fan_out_only: false,
            },
            Self::KaimingFanOut => Initializer::KaimingNormal {
                gain: 2.0f64.sqrt(),
                fan_out_only: true,
            },
            Self::Normal(std) => Initializer::Normal { mean: 0.0, std },
        }
    }

    fn zero_bias(self) -> bool {
        !matches!(self, Self::TorchDefault)
    }
}

/// A square convolution `[c_in → c_out]`, kernel `k`, stride `s`, symmetric padding `p`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    channels: [usize; 2],
    k: usize,
    s: usize,
    p: usize,
    bias: bool,
    init: Init,
    device: &Device,
) -> Result<FeedbackConv2d, ModelError> {
    let mut layer = FeedbackConv2dConfig::new(channels, [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .with_initializer(init.initializer())
        .try_init(device)?;
    if bias && init.zero_bias() {
        layer.bias = Some(Param::from_tensor(Tensor::zeros([channels[1]], device)));
    }
    Ok(layer)
}

/// A linear layer `[d_in → d_out]` with bias.
pub(crate) fn linear(
    d_in: usize,
    d_out: usize,
    init: Init,
    device: &Device,
) -> Result<FeedbackLinear, ModelError> {
    let mut layer = FeedbackLinearConfig::new(d_in, d_out)
        .with_initializer(init.initializer())
        .try_init(device)?;
    if init.zero_bias() {
        layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    Ok(layer)
}

/// Refuses a zero width.
pub(crate) fn check_widths(name: &'static str, widths: &[usize]) -> Result<(), ModelError> {
    if let Some(w) = widths.iter().find(|&&w| w == 0) {
        return Err(crate::error::invalid(
            name,
            format!("{widths:?}"),
            &format!("widths must be positive, found {w}"),
        ));
    }
    Ok(())
}
