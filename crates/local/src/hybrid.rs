//! The hybrid network of Krotov and Hopfield: a layer of hidden units on the flattened image,
//! `h = ReLU(s·x·W)^n`, under a supervised head. With the synapses of the local rule the layer is
//! frozen and only the head trains (the hybrid); with the layer trainable the same architecture
//! trained end to end with backpropagation is the baseline. It is a [`Backbone`], so the
//! training loop, every attack and every measure of signsym apply to both.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use signsym_feedback::feedback_module;
use signsym_feedback::layers::{FeedbackLinear, FeedbackLinearConfig};
use signsym_models::{Backbone, ModelError};

use crate::{KrotovHopfield, LocalError};

/// `ReLU(s·x·W)^n` over flattened `[channels, side, side]` images. The scale `s` (1 unless
/// [`HiddenLayer::calibrate`] sets it) keeps the powered activations near 1, which a linear head
/// trained with Adam needs: unit-norm synapses give currents of order ‖x‖, and their cube is
/// in the hundreds (the original divides by a fixed β inside a tanh for the same reason).
#[derive(Module, Debug)]
pub struct HiddenLayer {
    /// The layer (`[inputs, hidden]`, burn's layout; no bias, as the original).
    pub layer: FeedbackLinear,
    /// The activation's power n.
    #[module(skip)]
    pub power: f64,
    /// Channels of the input images.
    #[module(skip)]
    pub channels: usize,
    /// Side of the input images.
    #[module(skip)]
    pub side: usize,
    /// Whether the layer is frozen (the hybrid) or trained (the baseline).
    #[module(skip)]
    pub frozen: bool,
    /// The scale s of the currents.
    #[module(skip)]
    pub scale: f64,
}
feedback_module!(HiddenLayer { layer });

impl HiddenLayer {
    /// The hybrid's first layer on `device` (an autodiff device, to train a head on it): the
    /// rule's synapses, frozen.
    pub fn from_synapses(
        synapses: &KrotovHopfield,
        power: f64,
        channels: usize,
        side: usize,
        device: &burn::tensor::Device,
    ) -> Result<Self, LocalError> {
        let [hidden, inputs] = synapses.dims();
        check(power, channels, side, inputs)?;
        let w = Tensor::<2>::from_data(synapses.synapses.val().transpose().into_data(), device);
        let mut layer = FeedbackLinearConfig::new(inputs, hidden)
            .with_bias(false)
            .try_init(device)
            .map_err(|e| LocalError::Data(e.to_string()))?;
        layer.weight = Param::from_tensor(w).set_require_grad(false);
        Ok(Self {
            layer,
            power,
            channels,
            side,
            frozen: true,
            scale: 1.0,
        })
    }

    /// The baseline: the same architecture, trainable, with PyTorch's default initialisation.
    pub fn trainable(
        hidden: usize,
        power: f64,
        channels: usize,
        side: usize,
        device: &burn::tensor::Device,
    ) -> Result<Self, LocalError> {
        let inputs = channels * side * side;
        check(power, channels, side, inputs)?;
        let layer = FeedbackLinearConfig::new(inputs, hidden)
            .with_bias(false)
            .try_init(device)
            .map_err(|e| LocalError::Data(e.to_string()))?;
        Ok(Self {
            layer,
            power,
            channels,
            side,
            frozen: false,
            scale: 1.0,
        })
    }

    /// Sets the scale so that the largest current of an image averages 1 over `sample`
    /// (`[batch, channels, side, side]`); returns it.
    pub fn calibrate(&mut self, sample: Tensor<4>) -> Result<f64, LocalError> {
        let dims = sample.dims();
        self.check_input(dims)?;
        let currents = self.layer.forward(sample.flatten::<2>(1, 3));
        let typical = f64::from(currents.max_dim(1).mean().into_scalar::<f32>());
        if !(typical.is_finite() && typical > 0.0) {
            return Err(LocalError::Data(format!(
                "the largest current averages {typical} over the sample: no positive scale"
            )));
        }
        self.scale = 1.0 / typical;
        Ok(self.scale)
    }
}

fn check(power: f64, channels: usize, side: usize, inputs: usize) -> Result<(), LocalError> {
    if !(power.is_finite() && power >= 1.0) {
        return Err(LocalError::InvalidConfig {
            name: "power",
            value: power.to_string(),
            reason: "must be finite and at least 1",
        });
    }
    if channels * side * side != inputs {
        return Err(LocalError::Shape {
            what: "inputs (channels × side²)",
            expected: inputs,
            got: channels * side * side,
        });
    }
    Ok(())
}

impl Backbone for HiddenLayer {
    fn name(&self) -> &'static str {
        if self.frozen {
            "krotov_hopfield"
        } else {
            "hidden_layer_bp"
        }
    }

    fn in_channels(&self) -> usize {
        self.channels
    }

    fn min_input_size(&self) -> [usize; 2] {
        [self.side, self.side]
    }

    fn check_input(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        let [batch, c, h, w] = dims;
        if batch == 0 || c != self.channels || h != self.side || w != self.side {
            return Err(ModelError::InputShape {
                model: self.name(),
                found: dims.to_vec(),
                reason: format!(
                    "expects a non-empty batch of {}×{}×{} images",
                    self.channels, self.side, self.side
                ),
            });
        }
        Ok(())
    }

    fn feature_dim(&self) -> usize {
        self.layer.weight.lazy_shape().dims::<2>()[1]
    }

    fn features(&self, input: Tensor<4>) -> Tensor<2> {
        let currents = self.layer.forward(input.flatten::<2>(1, 3));
        let h = relu(if self.scale == 1.0 {
            currents
        } else {
            currents.mul_scalar(self.scale as f32)
        });
        if self.power == 1.0 {
            h
        } else {
            h.powf_scalar(self.power)
        }
    }

    fn torchvision_module(&self, path: &str) -> Option<String> {
        Some(path.to_string())
    }

    fn torchvision_head(&self) -> &'static str {
        "head"
    }
}
