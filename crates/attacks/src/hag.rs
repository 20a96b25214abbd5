//! HAG (Yang et al., "Adversarial examples for Hamming space search", IEEE T-Cybernetics 2018):
//! push each bit of the smoothed code `tanh(α·z)` to the opposite sign of the original code.

use burn::config::Config;
use burn::tensor::Tensor;
use signsym_metrics::LabelSets;

use crate::bounds::InputBox;
use crate::error::{AttackError, check_count, check_positive};
use crate::model::AttackModel;
use crate::pgd::StepSize;
use crate::retrieval::{
    AlphaSchedule, HashDatabase, Minimise, Optimizer, RetrievalAttack, RetrievalAttackOutput,
    attack_codes, matrix,
};
use crate::source::GradientSource;

/// Settings of [`Hag`].
///
/// The loss, minimised over the L∞ ball, is
/// `mean_i (⟨m_i∘h'_i, b_i⟩ / |m_i| + 1)² + β·mean_i (mean_k m_ik h'_ik)²`, where `b` is the
/// original code, `h' = tanh(α·z')` the smoothed adversarial code and `m` masks the bits that are
/// not yet flipped by a margin (`|h' − b| < 1 + threshold`). The first term reaches its minimum
/// when every unflipped bit is flipped; the second keeps the code balanced.
#[derive(Config, Debug)]
pub struct HagConfig {
    /// Iterations.
    #[config(default = 5)]
    pub steps: usize,
    /// How the input moves.
    #[config(default = "Optimizer::SignStep(StepSize::Relative(1.0 / 3.0))")]
    pub optimizer: Optimizer,
    /// Smoothing of the code.
    #[config(default = "AlphaSchedule { start: 0.1, end: 1.0 }")]
    pub alpha: AlphaSchedule,
    /// Margin past which a bit counts as flipped.
    #[config(default = 0.5)]
    pub threshold: f64,
    /// Weight of the balance term.
    #[config(default = 1.0)]
    pub beta: f64,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of random feedback draws.
    #[config(default = 0)]
    pub seed: u64,
}

impl HagConfig {
    /// The setting of arXiv 2502.05925: 5 signed steps of `ε/3` (use ε from 0.001 to 0.5).
    pub fn paper() -> Self {
        Self::new()
    }

    /// The original attack's setting: 100 iterations of SGD (lr 100, momentum 0.9) at
    /// `ε = 8/255`.
    pub fn original() -> Self {
        Self::new().with_steps(100).with_optimizer(Optimizer::Sgd {
            lr: 100.0,
            momentum: 0.9,
        })
    }

    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<Hag, AttackError> {
        check_count("steps", self.steps)?;
        self.optimizer.validate()?;
        self.alpha.validate()?;
        check_positive("threshold", self.threshold)?;
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(crate::error::invalid(
                "beta",
                self.beta,
                "must be finite and ≥ 0",
            ));
        }
        InputBox::new(self.input_box.lower, self.input_box.upper)?;
        Ok(Hag {
            config: self.clone(),
        })
    }
}

/// The HAG attack; build it with [`HagConfig::init`].
#[derive(Clone, Debug)]
pub struct Hag {
    config: HagConfig,
}

/// HAG's loss for smoothed codes `h` `[batch, bits]` and original ±1 codes `b`.
pub(crate) fn hag_loss(h: Tensor<2>, b: Tensor<2>, threshold: f32, beta: f32) -> Tensor<1> {
    let [batch, bits] = h.dims();
    let mask = (h.clone().detach() - b.clone())
        .abs()
        .lower_elem(1.0 + threshold)
        .float();
    let masked = h * mask.clone();
    let agreement = (masked.clone() * b).sum_dim(1) / mask.sum_dim(1).add_scalar(1e-8);
    let first = agreement
        .add_scalar(1.0)
        .powi_scalar(2)
        .sum()
        .div_scalar(batch as f32);
    let balance = masked
        .sum_dim(1)
        .div_scalar(bits as f32)
        .powi_scalar(2)
        .sum();
    first + balance.mul_scalar(beta / batch as f32)
}

impl RetrievalAttack for Hag {
    fn name(&self) -> String {
        format!("hag{}", self.config.steps)
    }

    fn run(
        &self,
        model: &dyn AttackModel,
        queries: &Tensor<4>,
        query_labels: &LabelSets,
        database: &HashDatabase,
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<RetrievalAttackOutput, AttackError> {
        let c = &self.config;
        let (threshold, beta) = (c.threshold as f32, c.beta as f32);
        let iteration = Minimise {
            optimizer: c.optimizer,
            steps: c.steps,
            alpha: c.alpha,
            input_box: c.input_box,
            seed: c.seed,
            source,
        };
        let bits = model.outputs();
        attack_codes(
            model,
            queries,
            query_labels,
            database,
            epsilon,
            iteration,
            &|original, x0| {
                let b = matrix(original.to_vec(), original.len() / bits, bits, x0);
                Box::new(move |alpha, z, _x| {
                    hag_loss(z.mul_scalar(alpha).tanh(), b.clone(), threshold, beta)
                })
            },
        )
    }
}
