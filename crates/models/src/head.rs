//! The new last layer that fine-tuning trains from scratch: logits or a hash code.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use signsym_feedback::feedback_module;
use signsym_feedback::layers::{FeedbackLinear, FeedbackLinearConfig};

use crate::ModelError;
use crate::error::invalid;

/// What the head computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// `num_classes` logits.
    Classification {
        /// Number of classes.
        num_classes: usize,
    },
    /// A `bits`-long code: `tanh(x·W + b)` in training (continuous, as HyP² expects), and
    /// `sign` of it for retrieval ([`Head::codes`]).
    Hashing {
        /// Code length.
        bits: usize,
    },
}

impl Task {
    /// Classification into `num_classes` classes.
    pub fn classification(num_classes: usize) -> Self {
        Self::Classification { num_classes }
    }

    /// Hashing to `bits`-bit codes (the paper uses 32).
    pub fn hashing(bits: usize) -> Self {
        Self::Hashing { bits }
    }

    /// Width of the head's output.
    pub fn outputs(&self) -> usize {
        match *self {
            Self::Classification { num_classes } => num_classes,
            Self::Hashing { bits } => bits,
        }
    }
}

/// One fully connected feedback layer on top of a backbone's features.
#[derive(Module, Debug)]
pub struct Head {
    /// The layer (`[feature_dim, outputs]`, burn's layout).
    pub linear: FeedbackLinear,
    /// What it computes.
    #[module(skip)]
    pub task: Task,
}
feedback_module!(Head { linear });

impl Head {
    /// A new head with burn's (= PyTorch's `nn.Linear`) initialisation: weights and bias
    /// uniform in ±1/√features.
    pub fn new(features: usize, task: Task, device: &Device) -> Result<Self, ModelError> {
        if features == 0 {
            return Err(invalid("features", 0, "the head needs at least one input"));
        }
        if task.outputs() == 0 {
            return Err(invalid("outputs", 0, "a head needs at least one output"));
        }
        let linear = FeedbackLinearConfig::new(features, task.outputs()).try_init(device)?;
        Ok(Self { linear, task })
    }

    /// Logits, or the continuous code in `(-1, 1)`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let out = self.linear.forward(features);
        match self.task {
            Task::Classification { .. } => out,
            Task::Hashing { .. } => out.tanh(),
        }
    }

    /// Binary codes in `{-1, +1}` (zero maps to +1) for a hashing head; logits' signs otherwise.
    pub fn codes(&self, features: Tensor<2>) -> Tensor<2> {
        let out = self.linear.forward(features);
        // `≥ 0` is +1: signsym_metrics::code_bit, on the device.
        out.clone()
            .greater_equal_elem(0.0)
            .float()
            .mul_scalar(2.0)
            .sub_scalar(1.0)
    }
}
