//! Spectral regularization (Yang, Zavatone-Veth, Pehlevan 2024): penalise the top singular
//! value of each hidden layer's weight so no layer can amplify a small input perturbation much.
//!
//! The penalty is `(γ/2) Σ_l σ_max(W_l)²` over every layer except the last (the head), with
//! convolution kernels reshaped to `[out, in·k…]`. σ_max comes from power iteration with one
//! persistent vector per layer (Miyato et al.'s trick): each call refines the previous
//! estimate, so one iteration per training step suffices once training is under way. The
//! gradient of `σ = uᵀ W v` (u, v held fixed) is `u vᵀ`, the exact gradient of σ_max.

use std::collections::BTreeMap;

use burn::config::Config;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use signsym_feedback::{FeedbackModule, layer_seed};

use crate::error::{LossError, invalid};

/// Settings of [`SpectralRegularizer`].
#[derive(Config, Debug)]
pub struct SpectralRegularizerConfig {
    /// Strength γ.
    #[config(default = 0.01)]
    pub gamma: f64,
    /// Power iterations per call (per layer).
    #[config(default = 1)]
    pub power_iterations: usize,
    /// Leave the last feedback layer (the head) out, as the paper does.
    #[config(default = true)]
    pub skip_last: bool,
    /// Seed of the initial power-iteration vectors (mixed with each layer's path).
    #[config(default = 0)]
    pub seed: u64,
}

impl SpectralRegularizerConfig {
    /// Builds the regularizer; fails for a negative γ or zero iterations.
    pub fn init(&self) -> Result<SpectralRegularizer, LossError> {
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(invalid(
                "gamma",
                self.gamma,
                "must be finite and non-negative",
            ));
        }
        if self.power_iterations == 0 {
            return Err(invalid("power_iterations", 0, "must be at least 1"));
        }
        Ok(SpectralRegularizer {
            config: self.clone(),
            vectors: BTreeMap::new(),
        })
    }
}

/// The spectral penalty with its persistent power-iteration vectors, keyed by layer path.
#[derive(Debug)]
pub struct SpectralRegularizer {
    config: SpectralRegularizerConfig,
    vectors: BTreeMap<String, Tensor<2>>,
}

fn unit(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum().sqrt().clamp_min(1e-12);
    x / norm.unsqueeze::<2>()
}

impl SpectralRegularizer {
    /// The settings.
    pub fn config(&self) -> &SpectralRegularizerConfig {
        &self.config
    }

    /// The persistent power-iteration vectors, by layer path (`[rows, 1]` each).
    pub fn vectors(&self) -> impl Iterator<Item = (&str, &Tensor<2>)> {
        self.vectors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets the power-iteration vector of `name` (a resumed run's), `[rows, 1]`.
    pub fn set_vector(&mut self, name: &str, u: Tensor<2>) {
        self.vectors.insert(name.to_string(), u);
    }

    /// σ_max of `weight` (a matrix on the autodiff graph or not) after this call's power
    /// iterations, as a differentiable `[1]` tensor; the refined vector is kept under `name`.
    pub fn sigma_max(&mut self, name: &str, weight: Tensor<2>) -> Tensor<1> {
        let [rows, _] = weight.dims();
        let fixed = weight.clone().detach();
        let mut u = match self.vectors.remove(name) {
            Some(u) if u.dims() == [rows, 1] => u,
            _ => {
                // Drawn on the host from the layer's own seed: reproducible, and the device's
                // global generator stays untouched.
                let mut rng = ChaCha8Rng::seed_from_u64(layer_seed(self.config.seed, name));
                let values: Vec<f32> = (0..rows).map(|_| StandardNormal.sample(&mut rng)).collect();
                unit(Tensor::<2>::from_data(
                    TensorData::new(values, [rows, 1]),
                    &weight.device(),
                ))
            }
        };
        let mut v = unit(fixed.clone().transpose().matmul(u.clone()));
        for _ in 1..self.config.power_iterations {
            u = unit(fixed.clone().matmul(v.clone()));
            v = unit(fixed.clone().transpose().matmul(u.clone()));
        }
        u = unit(fixed.matmul(v.clone()));
        let sigma = u.clone().transpose().matmul(weight).matmul(v).reshape([1]);
        self.vectors.insert(name.to_string(), u.detach());
        sigma
    }

    /// `(γ/2) Σ σ_max(W)²` over named weight matrices.
    pub fn penalty_of(
        &mut self,
        weights: impl IntoIterator<Item = (String, Tensor<2>)>,
    ) -> Result<Tensor<1>, LossError> {
        let mut total: Option<Tensor<1>> = None;
        for (name, weight) in weights {
            let sigma = self.sigma_max(&name, weight);
            let square = sigma.powi_scalar(2);
            total = Some(match total {
                Some(t) => t + square,
                None => square,
            });
        }
        let total = total.ok_or(LossError::Empty("no weight to regularize"))?;
        Ok(total * (self.config.gamma / 2.0))
    }

    /// The penalty over a model's feedback layers in visiting order, the last one left out
    /// when `skip_last` is set.
    pub fn penalty<M: FeedbackModule + ?Sized>(
        &mut self,
        model: &M,
    ) -> Result<Tensor<1>, LossError> {
        let mut weights = Vec::new();
        model.visit_feedback("", &mut |path, layer| {
            weights.push((path.to_string(), layer.weight_matrix()));
        });
        if self.config.skip_last {
            weights.pop();
        }
        if weights.is_empty() {
            return Err(LossError::Empty(
                "the model has no hidden feedback layer to regularize",
            ));
        }
        self.penalty_of(weights)
    }
}
