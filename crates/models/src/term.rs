//! The terms of a training objective beyond the task loss: each sees the network and the batch,
//! returns a scalar that the loop adds to the loss, and is logged per epoch with its share of
//! the step's time. Built in here: L2 on the weights, the spectral penalty of 2405.17181 and a
//! Jacobian penalty; adversarial training and Sy-FAR live in `signsym-attacks`, which crafts the
//! adversarial batch.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use signsym_feedback::FeedbackModule;
use signsym_losses::{SpectralRegularizer, SpectralRegularizerConfig};

use crate::error::invalid;
use crate::{Backbone, ModelError, Network};

/// What a term sees at one training step.
pub struct Step<'a, M: Backbone, T> {
    /// The network being trained (training mode, autodiff device).
    pub network: &'a Network<M>,
    /// The batch's images.
    pub images: &'a Tensor<4>,
    /// The batch's targets.
    pub targets: &'a T,
    /// Epoch and step within it, for terms whose draws follow the step.
    pub epoch: usize,
    /// See `epoch`.
    pub step: usize,
    /// The seed of the run.
    pub seed: u64,
    clean: Option<Tensor<2>>,
    /// What one term leaves for the next (the adversarial batch and its logits, for Sy-FAR).
    pub shared: BTreeMap<&'static str, Tensor<2>>,
}

impl<'a, M: Backbone, T> Step<'a, M, T> {
    /// A step's context.
    pub fn new(
        network: &'a Network<M>,
        images: &'a Tensor<4>,
        targets: &'a T,
        (epoch, step, seed): (usize, usize, u64),
    ) -> Self {
        Self {
            network,
            images,
            targets,
            epoch,
            step,
            seed,
            clean: None,
            shared: BTreeMap::new(),
        }
    }

    /// The network's output on the clean batch, computed once per step (on the graph).
    pub fn clean_output(&mut self) -> Tensor<2> {
        self.clean
            .get_or_insert_with(|| self.network.forward(self.images.clone()))
            .clone()
    }

    /// Whether the clean output has been computed this step.
    pub fn has_clean_output(&self) -> bool {
        self.clean.is_some()
    }

    /// A seed for this step's draws of a term, from the run's seed, the position and the term.
    pub fn seed_for(&self, term: &str) -> u64 {
        signsym_feedback::layer_seed(
            self.seed ^ ((self.epoch as u64) << 32) ^ self.step as u64,
            term,
        )
    }
}

/// A term of the training objective.
///
/// `value` returns the term's contribution to the loss, weight included, as a `[1]` tensor on
/// the autodiff graph. A term with state that changes during training (power-iteration vectors)
/// exposes it through `state`/`load_state`, so checkpoints resume bit-identically.
pub trait Term<M: Backbone, T> {
    /// The name the term is logged under.
    fn name(&self) -> &str;

    /// The term at this step.
    fn value(&mut self, step: &mut Step<'_, M, T>) -> Result<Tensor<1>, ModelError>;

    /// What must match for a checkpoint to be resumed with this term.
    fn fingerprint(&self) -> String;

    /// The term's evolving state, for checkpoints (none by default).
    fn state(&self) -> Result<serde_json::Value, ModelError> {
        Ok(serde_json::Value::Null)
    }

    /// Restores a state written by [`state`](Self::state).
    fn load_state(&mut self, state: serde_json::Value) -> Result<(), ModelError> {
        let _ = state;
        Ok(())
    }
}

/// `(λ/2) Σ ‖W‖²` over the weights of every feedback layer (biases and batch norm excluded).
///
/// The same penalty as the optimiser's coupled weight decay `λ` on those weights (its gradient
/// is `λ·W`), but computed as a term, so it is logged; set `weight_decay = 0` in
/// [`FineTuneConfig`](crate::FineTuneConfig) when using it instead.
#[derive(Clone, Debug)]
pub struct L2Term {
    lambda: f64,
}

impl L2Term {
    /// λ ≥ 0.
    pub fn new(lambda: f64) -> Result<Self, ModelError> {
        check_weight("l2 lambda", lambda)?;
        Ok(Self { lambda })
    }
}

impl<M: Backbone, T> Term<M, T> for L2Term {
    fn name(&self) -> &str {
        "l2"
    }

    fn value(&mut self, step: &mut Step<'_, M, T>) -> Result<Tensor<1>, ModelError> {
        let mut total: Option<Tensor<1>> = None;
        step.network.visit_feedback("", &mut |_, layer| {
            let square = layer.weight_matrix().powi_scalar(2).sum();
            total = Some(match total.take() {
                Some(t) => t + square,
                None => square,
            });
        });
        let total = total.ok_or_else(|| invalid("l2", "model", "has no feedback layer"))?;
        Ok(total.mul_scalar(self.lambda / 2.0))
    }

    fn fingerprint(&self) -> String {
        format!("l2(λ={})", self.lambda)
    }
}

fn check_weight(name: &'static str, value: f64) -> Result<(), ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(name, value, "must be finite and non-negative"))
    }
}

/// Which layers the spectral penalty covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpectralLayers {
    /// Every feedback layer but the last (the head): the regularizer of 2405.17181, for
    /// representations whose last layer is retrained.
    Hidden,
    /// Every feedback layer: the end-to-end baseline the paper compares against.
    All,
}

/// `(γ/2) Σ σ_max(W_l)²` ([`SpectralRegularizer`]), with its persistent power-iteration vectors
/// checkpointed.
#[derive(Debug)]
pub struct SpectralTerm {
    layers: SpectralLayers,
    regularizer: SpectralRegularizer,
    /// Vectors read from a checkpoint, put on the network's device at the next step.
    restored: Vec<SavedVector>,
}

/// The power-iteration vector of one layer, as a checkpoint stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SavedVector {
    layer: String,
    values: Vec<f32>,
}

impl SpectralTerm {
    /// The penalty of strength γ over `layers`, with `power_iterations` per step and a seed for
    /// the first vectors.
    pub fn new(
        gamma: f64,
        layers: SpectralLayers,
        power_iterations: usize,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let regularizer = SpectralRegularizerConfig::new()
            .with_gamma(gamma)
            .with_power_iterations(power_iterations)
            .with_skip_last(layers == SpectralLayers::Hidden)
            .with_seed(seed)
            .init()?;
        Ok(Self {
            layers,
            regularizer,
            restored: Vec::new(),
        })
    }

    /// The regularizer (its σ_max estimates and vectors).
    pub fn regularizer(&mut self) -> &mut SpectralRegularizer {
        &mut self.regularizer
    }
}

impl<M: Backbone, T> Term<M, T> for SpectralTerm {
    fn name(&self) -> &str {
        match self.layers {
            SpectralLayers::Hidden => "spectral",
            SpectralLayers::All => "spectral_all",
        }
    }

    fn value(&mut self, step: &mut Step<'_, M, T>) -> Result<Tensor<1>, ModelError> {
        if !self.restored.is_empty() {
            let device = step.network.device()?;
            for v in self.restored.drain(..) {
                let rows = v.values.len();
                let u = Tensor::<2>::from_data(TensorData::new(v.values, [rows, 1]), &device);
                self.regularizer.set_vector(&v.layer, u);
            }
        }
        Ok(self.regularizer.penalty(step.network)?)
    }

    fn fingerprint(&self) -> String {
        let c = self.regularizer.config();
        format!(
            "spectral({:?}, γ={}, iterations={}, seed={})",
            self.layers, c.gamma, c.power_iterations, c.seed
        )
    }

    fn state(&self) -> Result<serde_json::Value, ModelError> {
        let saved: Vec<SavedVector> = self
            .regularizer
            .vectors()
            .map(|(layer, u)| {
                u.clone()
                    .try_to_vec_as::<f32>()
                    .map(|values| SavedVector {
                        layer: layer.to_string(),
                        values,
                    })
                    .map_err(|e| ModelError::Data(format!("spectral vector: {e:?}")))
            })
            .collect::<Result<_, _>>()?;
        serde_json::to_value(saved).map_err(|e| ModelError::Data(e.to_string()))
    }

    fn load_state(&mut self, state: serde_json::Value) -> Result<(), ModelError> {
        if state.is_null() {
            return Ok(());
        }
        self.restored =
            serde_json::from_value(state).map_err(|e| ModelError::Data(e.to_string()))?;
        Ok(())
    }
}

/// `λ·‖∂f(x)/∂x‖_F²` of the backbone's features `f`, averaged over the batch, estimated from
/// `projections` random directions `v ~ N(0, I)` by central differences:
/// `E‖J v‖² = ‖J‖_F²` and `J v ≈ (f(x + h v) − f(x − h v)) / 2h`. Unlike a double backward,
/// this is an ordinary forward, so its gradient follows every layer's own rule like the task
/// loss's does (exact for a piecewise-linear network away from its kinks).
#[derive(Clone, Debug)]
pub struct JacobianTerm {
    lambda: f64,
    projections: usize,
    step_size: f64,
}

impl JacobianTerm {
    /// λ ≥ 0, at least one projection, and the finite-difference step `h` (in input units; 1e-2
    /// is small next to a pixel's [0, 1] range and large next to f32 rounding).
    pub fn new(lambda: f64, projections: usize, step_size: f64) -> Result<Self, ModelError> {
        check_weight("jacobian lambda", lambda)?;
        if projections == 0 {
            return Err(invalid("projections", 0, "must be at least 1"));
        }
        if !(step_size.is_finite() && step_size > 0.0) {
            return Err(invalid(
                "step size",
                step_size,
                "must be finite and positive",
            ));
        }
        Ok(Self {
            lambda,
            projections,
            step_size,
        })
    }

    /// The estimate for a function `f` of `x` with projections drawn from `seed` (the term's
    /// value without λ), on the graph of `f`'s parameters.
    pub fn estimate<const D: usize, const O: usize>(
        &self,
        x: &Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<O>,
        seed: u64,
    ) -> Tensor<1> {
        let dims = x.dims();
        let batch = dims[0].max(1);
        let n: usize = dims.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let h = self.step_size as f32;
        let mut total: Option<Tensor<1>> = None;
        for _ in 0..self.projections {
            let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            let v = Tensor::<D>::from_data(TensorData::new(v, dims), &x.device()).mul_scalar(h);
            let jv = (f(x.clone() + v.clone()) - f(x.clone() - v)).div_scalar(2.0 * h);
            let square = jv.powi_scalar(2).sum();
            total = Some(match total.take() {
                Some(t) => t + square,
                None => square,
            });
        }
        total
            .expect("at least one projection")
            .div_scalar((self.projections * batch) as f32)
    }
}

impl<M: Backbone, T> Term<M, T> for JacobianTerm {
    fn name(&self) -> &str {
        "jacobian"
    }

    fn value(&mut self, step: &mut Step<'_, M, T>) -> Result<Tensor<1>, ModelError> {
        let seed = step.seed_for("jacobian");
        let images = step.images.clone().detach();
        let backbone = &step.network.backbone;
        Ok(self
            .estimate(&images, |x| backbone.features(x), seed)
            .mul_scalar(self.lambda))
    }

    fn fingerprint(&self) -> String {
        format!(
            "jacobian(λ={}, projections={}, h={})",
            self.lambda, self.projections, self.step_size
        )
    }
}
