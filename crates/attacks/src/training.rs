//! Adversarial training as terms of the training loop ([`signsym_models::fine_tune_with`]):
//! the adversarial batch is crafted inside each step by a gradient attack on an untracked
//! inference-mode copy of the network (no weight gradients), from the exact gradient by default
//! or through the network's own feedback backward, in Madry's form (the loss on adversarial
//! examples) or TRADES' (β·KL(clean ‖ adversarial), crafted by maximising that KL); and Sy-FAR's
//! symmetry penalty on the adversarial logits of the batch (arXiv 2509.12939).

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use signsym_losses::{SymmetryRegularizer, SymmetryRegularizerConfig};
use signsym_models::{Backbone, ModelError, Step, Term};

use crate::bounds::{InputBox, Norm, l2_norms};
use crate::error::{AttackError, check_count, check_epsilon, invalid};
use crate::model::attack_mode;
use crate::pgd::{BoundedAttack, StepSize, cross_entropy_sum, project};
use crate::source::{GradientSource, SourceKind};

/// Where the key of the adversarial logits is left for later terms (Sy-FAR).
pub const ADVERSARIAL_LOGITS: &str = "adversarial_logits";

/// How the adversarial batch enters the objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdversarialForm {
    /// Madry et al. (2018): cross-entropy of the adversarial batch (set the task weight to 0
    /// to train on adversarial examples alone, or keep it for a clean + adversarial mix).
    Madry,
    /// TRADES (Zhang et al., 2019): `β · KL(p(clean) ‖ p(adversarial))`, the adversarial batch
    /// crafted by maximising that KL; added to the clean task loss.
    Trades {
        /// β.
        beta: f64,
    },
}

/// The adversarial term; [`AdversarialTerm::new`] checks its settings.
pub struct AdversarialTerm {
    attack: Box<dyn BoundedAttack>,
    epsilon: f64,
    source: SourceKind,
    form: AdversarialForm,
    weight: f64,
    trades_steps: usize,
    trades_step: StepSize,
    input_box: InputBox,
}

fn to_model(e: AttackError) -> ModelError {
    match e {
        AttackError::Model(m) => m,
        other => ModelError::Data(other.to_string()),
    }
}

fn host_labels(targets: &Tensor<1, Int>) -> Result<Vec<usize>, ModelError> {
    targets
        .clone()
        .try_to_vec_as::<i64>()
        .map_err(|e| ModelError::Data(format!("targets: {e:?}")))?
        .into_iter()
        .map(|t| usize::try_from(t).map_err(|_| ModelError::Data(format!("negative target {t}"))))
        .collect()
}

impl AdversarialTerm {
    /// An adversarial term crafting with `attack` at budget `epsilon` from `source` (`Exact` or
    /// `Feedback`), in `form`, weighted `weight`. TRADES crafts with the attack's norm, `steps`
    /// steps of `step` and the box `[0, 1]`.
    pub fn new(
        attack: Box<dyn BoundedAttack>,
        epsilon: f64,
        source: SourceKind,
        form: AdversarialForm,
        weight: f64,
    ) -> Result<Self, AttackError> {
        check_epsilon(epsilon)?;
        if !attack.needs_gradient() {
            return Err(invalid(
                "attack",
                attack.name(),
                "adversarial training crafts with a gradient attack",
            ));
        }
        if !matches!(source, SourceKind::Exact | SourceKind::Feedback) {
            return Err(invalid(
                "source",
                source,
                "adversarial training takes the exact or the feedback gradient",
            ));
        }
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(invalid("weight", weight, "must be finite and non-negative"));
        }
        if let AdversarialForm::Trades { beta } = form
            && !(beta.is_finite() && beta >= 0.0)
        {
            return Err(invalid("beta", beta, "must be finite and non-negative"));
        }
        Ok(Self {
            attack,
            epsilon,
            source,
            form,
            weight,
            trades_steps: 10,
            trades_step: StepSize::Relative(0.25),
            input_box: InputBox::default(),
        })
    }

    /// TRADES' crafting: `steps` signed (L∞) or normalised (L2) steps of `step` (default 10 of
    /// ε/4).
    pub fn with_trades_crafting(
        mut self,
        steps: usize,
        step: StepSize,
    ) -> Result<Self, AttackError> {
        check_count("steps", steps)?;
        step.validate()?;
        self.trades_steps = steps;
        self.trades_step = step;
        Ok(self)
    }

    fn gradient_source(&self) -> GradientSource<'static> {
        match self.source {
            SourceKind::Feedback => GradientSource::Feedback,
            _ => GradientSource::Exact,
        }
    }

    /// TRADES' inner maximisation of `KL(p_clean ‖ p(x'))` from a small Gaussian start.
    fn trades_batch(
        &self,
        model: &dyn crate::model::AttackModel,
        x0: &Tensor<4>,
        p_clean: Tensor<2>,
        seed: u64,
    ) -> Result<Tensor<4>, AttackError> {
        let eps = self.epsilon as f32;
        let dims = x0.dims();
        let n: usize = dims.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise: Vec<f32> = (0..n)
            .map(|_| 0.001 * Distribution::<f32>::sample(&StandardNormal, &mut rng))
            .collect();
        let mut x = self
            .input_box
            .clip(x0.clone() + Tensor::from_data(TensorData::new(noise, dims), &x0.device()));
        let norm = self.attack.norm();
        let step = self.trades_step.at(self.epsilon) as f32;
        let source = self.gradient_source();
        // Fixed weights while crafting (the scope ends before the optimizer step).
        let _frozen = signsym_feedback::FrozenWeightsGuard::enter();
        for t in 0..self.trades_steps {
            let p = p_clean.clone();
            let loss = move |m: &dyn crate::model::AttackModel, x: Tensor<4>| {
                let log_q = log_softmax(m.scores(x), 1);
                (p.clone() * (p.clone().clamp_min(1e-12).log() - log_q)).sum()
            };
            let g =
                source.input_gradient(model, &x, &loss, crate::source::mix(seed, t as u64 + 1))?;
            let direction = match norm {
                Norm::Linf => g.sign(),
                Norm::L2 => g.clone() / l2_norms(g).add_scalar(1e-12),
            };
            x = self
                .input_box
                .clip(project(norm, x0, x + direction.mul_scalar(step), eps));
        }
        Ok(x)
    }
}

impl<M: Backbone> Term<M, Tensor<1, Int>> for AdversarialTerm {
    fn name(&self) -> &str {
        "adversarial"
    }

    fn value(&mut self, step: &mut Step<'_, M, Tensor<1, Int>>) -> Result<Tensor<1>, ModelError> {
        let labels = host_labels(step.targets)?;
        let batch = labels.len();
        // An inference-mode copy whose parameters track nothing: crafting takes input gradients
        // only, and leaves the batch-norm statistics alone.
        let model = attack_mode(step.network.clone());
        let x = step.images.clone().detach();
        let seed = step.seed_for("adversarial");
        match self.form {
            AdversarialForm::Madry => {
                // Fixed weights while crafting (the scope ends before the optimizer step).
                let out = signsym_feedback::frozen_weights(|| {
                    self.attack
                        .run(&model, &x, &labels, self.epsilon, &self.gradient_source())
                })
                .map_err(to_model)?;
                let logits = step.network.forward(out.adversarial.detach());
                step.shared.insert(ADVERSARIAL_LOGITS, logits.clone());
                let ce = cross_entropy_sum(logits, &labels).div_scalar(batch as f32);
                Ok(ce.mul_scalar(self.weight))
            }
            AdversarialForm::Trades { beta } => {
                let clean = step.clean_output();
                let p_clean = softmax(clean.clone().detach(), 1);
                let adv = self
                    .trades_batch(&model, &x, p_clean, seed)
                    .map_err(to_model)?;
                let logits = step.network.forward(adv.detach());
                step.shared.insert(ADVERSARIAL_LOGITS, logits.clone());
                let p = softmax(clean, 1);
                let kl = (p.clone() * (p.clamp_min(1e-12).log() - log_softmax(logits, 1)))
                    .sum()
                    .div_scalar(batch as f32);
                Ok(kl.mul_scalar(beta * self.weight))
            }
        }
    }

    fn fingerprint(&self) -> String {
        format!(
            "adversarial({}, ε={}, source={}, form={:?}, weight={}, trades={}×{:?})",
            self.attack.name(),
            self.epsilon,
            self.source,
            self.form,
            self.weight,
            self.trades_steps,
            self.trades_step
        )
    }
}

/// Sy-FAR: `λ_sym` times the symmetry penalty of the soft confusion matrix of the batch's
/// adversarial logits (an [`AdversarialTerm`] must come before it in the objective).
#[derive(Clone, Debug)]
pub struct SymmetryTerm {
    regularizer: SymmetryRegularizer,
    lambda: f64,
}

impl SymmetryTerm {
    /// λ_sym ≥ 0 over `classes` classes.
    pub fn new(classes: usize, lambda: f64) -> Result<Self, ModelError> {
        let regularizer = SymmetryRegularizerConfig::new(classes)
            .with_gamma(lambda)
            .init()?;
        Ok(Self {
            regularizer,
            lambda,
        })
    }
}

impl<M: Backbone> Term<M, Tensor<1, Int>> for SymmetryTerm {
    fn name(&self) -> &str {
        "symmetry"
    }

    fn value(&mut self, step: &mut Step<'_, M, Tensor<1, Int>>) -> Result<Tensor<1>, ModelError> {
        let logits = step
            .shared
            .get(ADVERSARIAL_LOGITS)
            .cloned()
            .ok_or_else(|| {
                ModelError::Data("the symmetry term needs an adversarial term before it".into())
            })?;
        Ok(self.regularizer.penalty(logits, step.targets.clone())?)
    }

    fn fingerprint(&self) -> String {
        format!("symmetry(λ={})", self.lambda)
    }
}
