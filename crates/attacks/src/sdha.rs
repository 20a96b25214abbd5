//! SDHA (Lu et al., "A smart adversarial attack on deep hashing based image retrieval", ICMR
//! 2021): move the query's smoothed code away from the codes of its relevant database items,
//! weighting the nearest ones most, while a distortion term keeps the image close.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use signsym_metrics::LabelSets;

use crate::bounds::InputBox;
use crate::error::{AttackError, check_count, check_positive, invalid};
use crate::model::AttackModel;
use crate::pgd::StepSize;
use crate::retrieval::{
    AlphaSchedule, CodeLoss, HashDatabase, Minimise, Optimizer, RetrievalAttack,
    RetrievalAttackOutput, attack_codes, matrix,
};
use crate::source::GradientSource;

/// Settings of [`Sdha`].
///
/// The loss, minimised over the L∞ ball, is `mse(x', x) − (λ/K)·mean_i Σ_j w_ij·d_ij`, the sum
/// over the database items `j` relevant to query `i` (sharing a label; the query's own code when
/// there is none), with the smooth code distance
/// `d_ij = ½ Σ_k |q_ik − r_jk|·σ(s·q_ik r_jk) + Σ_k (1 − σ(s·q_ik r_jk))`
/// for `q = tanh(α·z')`, and weights `w_ij = (H(sign q_i, r_j) + offset)^(−z)` averaged over the relevant
/// items, so the items still ranked near the query count most.
#[derive(Config, Debug)]
pub struct SdhaConfig {
    /// Iterations.
    #[config(default = 5)]
    pub steps: usize,
    /// How the input moves.
    #[config(default = "Optimizer::SignStep(StepSize::Relative(1.0 / 3.0))")]
    pub optimizer: Optimizer,
    /// Smoothing of the code.
    #[config(default = "AlphaSchedule { start: 0.1, end: 1.0 }")]
    pub alpha: AlphaSchedule,
    /// Weight λ of the code term (divided by the code length).
    #[config(default = 25.0)]
    pub lambda: f64,
    /// Sharpness `s` of the sigmoid in the code distance.
    #[config(default = 5.0)]
    pub sigma: f64,
    /// Exponent `z` of the Hamming-distance weights.
    #[config(default = 0.5)]
    pub z: f64,
    /// Offset added to the Hamming distance before the power (keeps distance 0 finite).
    #[config(default = 1e-8)]
    pub distance_offset: f64,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of random feedback draws.
    #[config(default = 0)]
    pub seed: u64,
}

impl SdhaConfig {
    /// The setting of arXiv 2502.05925: 5 signed steps of `ε/3` (use ε from 0.001 to 0.5).
    pub fn paper() -> Self {
        Self::new()
    }

    /// The original attack's setting: 100 iterations of Adam (lr 0.01, β 0.9/0.999) at
    /// `ε = 8/255`.
    pub fn original() -> Self {
        Self::new().with_steps(100).with_optimizer(Optimizer::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
        })
    }

    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<Sdha, AttackError> {
        check_count("steps", self.steps)?;
        self.optimizer.validate()?;
        self.alpha.validate()?;
        check_positive("lambda", self.lambda)?;
        check_positive("sigma", self.sigma)?;
        check_positive("distance offset", self.distance_offset)?;
        if !(self.z.is_finite() && self.z >= 0.0) {
            return Err(invalid("z", self.z, "must be finite and ≥ 0"));
        }
        InputBox::new(self.input_box.lower, self.input_box.upper)?;
        Ok(Sdha {
            config: self.clone(),
        })
    }
}

/// The SDHA attack; build it with [`SdhaConfig::init`].
#[derive(Clone, Debug)]
pub struct Sdha {
    config: SdhaConfig,
}

/// Relevant reference codes per query: `[batch, items + 1, bits]` (the database, then the
/// query's own code) and the relevance mask `[batch, items + 1]`, each row summing to one item
/// set (the own code only where no database item is relevant).
fn references(
    original: &[f32],
    query_labels: &LabelSets,
    database: &HashDatabase,
) -> (Vec<f32>, Vec<f32>) {
    let (n, bits) = (database.len(), database.bits());
    let batch = query_labels.len();
    let mut codes = Vec::with_capacity(batch * (n + 1) * bits);
    let mut mask = Vec::with_capacity(batch * (n + 1));
    for i in 0..batch {
        codes.extend_from_slice(database.codes());
        codes.extend_from_slice(&original[i * bits..(i + 1) * bits]);
        let start = mask.len();
        mask.extend((0..n).map(|j| {
            if query_labels.shares_label(i, database.labels(), j) {
                1.0f32
            } else {
                0.0
            }
        }));
        let any = mask[start..].iter().any(|&m| m > 0.0);
        mask.push(if any { 0.0 } else { 1.0 });
    }
    (codes, mask)
}

impl RetrievalAttack for Sdha {
    fn name(&self) -> String {
        format!("sdha{}", self.config.steps)
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
        let batch = queries.dims()[0];
        let (sigma, z, offset) = (c.sigma as f32, c.z as f32, c.distance_offset as f32);
        let bits = database.bits();
        let items = database.len() + 1;
        let code_weight = (c.lambda / bits as f64) as f32;
        let iteration = Minimise {
            optimizer: c.optimizer,
            steps: c.steps,
            alpha: c.alpha,
            input_box: c.input_box,
            seed: c.seed,
            source,
        };
        let build = |original: &[f32], x0: &Tensor<4>| -> CodeLoss {
            let (codes, mask) = references(original, query_labels, database);
            let refs = Tensor::<3>::from_data(
                burn::tensor::TensorData::new(codes, [batch, items, bits]),
                &x0.device(),
            );
            let relevant = matrix(mask, batch, items, x0);
            let x0 = x0.clone();
            Box::new(move |alpha: f32, scores: Tensor<2>, x: Tensor<4>| {
                let q = scores.mul_scalar(alpha).tanh().reshape([batch, 1, bits]);
                let gate = sigmoid((q.clone() * refs.clone()).mul_scalar(sigma));
                let distance = ((q.clone() - refs.clone()).abs() * gate.clone())
                    .sum_dim(2)
                    .mul_scalar(0.5)
                    + gate.neg().add_scalar(1.0).sum_dim(2);
                let distance = distance.reshape([batch, items]);
                // Weights from the current binary code: no gradient flows through them.
                let hamming = (q.detach().sign() * refs.clone())
                    .sum_dim(2)
                    .reshape([batch, items])
                    .neg()
                    .add_scalar(bits as f32)
                    .mul_scalar(0.5);
                let weights = hamming.add_scalar(offset).powf_scalar(-z) * relevant.clone();
                // Mean over the relevant items, as in the original loss.
                let weights = weights / relevant.clone().sum_dim(1);
                let code_term = (weights * distance).sum().div_scalar(batch as f32);
                let mse = (x - x0.clone()).powi_scalar(2).mean();
                mse - code_term.mul_scalar(code_weight)
            })
        };
        attack_codes(
            model,
            queries,
            query_labels,
            database,
            epsilon,
            iteration,
            &build,
        )
    }
}
