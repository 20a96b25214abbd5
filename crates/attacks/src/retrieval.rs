//! What the hashing attacks share: the database they attack, their output, the optimiser that
//! moves the input and the smoothing schedule of the code.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use signsym_metrics::{LabelSets, PackedCodes};

use crate::bounds::Norm;
use crate::bounds::{InputBox, check_batch};
use crate::error::{AttackError, check_count, check_positive, invalid};
use crate::evaluate::chunks;
use crate::model::{AttackModel, host, tensor};
use crate::pgd::{StepSize, like, project};
use crate::source::{GradientSource, mix};

/// Binary codes and labels of a retrieval database.
#[derive(Clone, Debug)]
pub struct HashDatabase {
    codes: Vec<f32>,
    packed: PackedCodes,
    labels: LabelSets,
}

impl HashDatabase {
    /// A database from real-valued codes `[items, bits]` (signs taken, `≥ 0` is +1) and labels.
    pub fn new(codes: Tensor<2>, labels: LabelSets) -> Result<Self, AttackError> {
        let [items, bits] = codes.dims();
        check_batch("database labels", items, labels.len())?;
        let codes = signs(&host(codes)?)?;
        let packed = PackedCodes::from_real(&codes, bits)?;
        Ok(Self {
            codes,
            packed,
            labels,
        })
    }

    /// Encodes `images` with `model` in batches of `batch_size`.
    pub fn encode(
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: LabelSets,
        batch_size: usize,
    ) -> Result<Self, AttackError> {
        check_count("batch size", batch_size)?;
        let parts = chunks(images.dims()[0], batch_size)
            .map(|range| model.predict_scores(images.clone().slice(range)).inner())
            .collect();
        Self::new(Tensor::cat(parts, 0), labels)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// Whether the database is empty.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Code length.
    pub fn bits(&self) -> usize {
        self.packed.bits()
    }

    /// Codes as ±1, row-major.
    pub fn codes(&self) -> &[f32] {
        &self.codes
    }

    /// Packed codes (for ranking).
    pub fn packed(&self) -> &PackedCodes {
        &self.packed
    }

    /// Labels of the items.
    pub fn labels(&self) -> &LabelSets {
        &self.labels
    }
}

/// ±1 signs of real values (`≥ 0` is +1, as `Network::codes`), refusing NaN.
pub(crate) fn signs(values: &[f32]) -> Result<Vec<f32>, AttackError> {
    values
        .iter()
        .map(|&v| {
            if v.is_nan() {
                Err(AttackError::NonFinite { what: "codes" })
            } else if signsym_metrics::code_bit(v) {
                Ok(1.0)
            } else {
                Ok(-1.0)
            }
        })
        .collect()
}

/// The result of a retrieval attack at a fixed budget.
#[derive(Clone, Debug)]
pub struct RetrievalAttackOutput {
    /// The adversarial queries.
    pub adversarial: Tensor<4>,
    /// Code length.
    pub bits: usize,
    /// ±1 codes of the original queries, row-major.
    pub original_codes: Vec<f32>,
    /// ±1 codes of the adversarial queries, row-major.
    pub adversarial_codes: Vec<f32>,
    /// Hamming distance between each query's original and adversarial code.
    pub hamming: Vec<u32>,
    /// Per query: more than half of the bits flipped.
    pub success: Vec<bool>,
}

impl RetrievalAttackOutput {
    /// Mean Hamming distance between original and adversarial codes.
    pub fn mean_hamming(&self) -> f64 {
        self.hamming.iter().map(|&h| f64::from(h)).sum::<f64>() / self.hamming.len().max(1) as f64
    }
}

/// A white-box attack on a hashing model with a fixed L∞ budget ε (non-targeted: it pushes the
/// query's code away from where it was, so that relevant items fall down the ranking).
pub trait RetrievalAttack {
    /// Short name for reports.
    fn name(&self) -> String;

    /// Attacks `queries` (labels `query_labels`) against `database` within `epsilon`.
    fn run(
        &self,
        model: &dyn AttackModel,
        queries: &Tensor<4>,
        query_labels: &LabelSets,
        database: &HashDatabase,
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<RetrievalAttackOutput, AttackError>;
}

/// How a retrieval attack moves its input along the gradient of its loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    /// A signed step (as PGD): `x ← x − step·sign(∇)`.
    SignStep(StepSize),
    /// SGD with momentum on the input (HAG's original optimiser: lr 100, momentum 0.9).
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
    },
    /// Adam on the input (SDHA's original optimiser: lr 0.01, β 0.9/0.999).
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
    },
}

impl Optimizer {
    pub(crate) fn validate(&self) -> Result<(), AttackError> {
        match *self {
            Self::SignStep(step) => step.validate(),
            Self::Sgd { lr, momentum } => {
                check_positive("learning rate", lr)?;
                unit_interval("momentum", momentum)
            }
            Self::Adam { lr, beta1, beta2 } => {
                check_positive("learning rate", lr)?;
                unit_interval("beta1", beta1)?;
                unit_interval("beta2", beta2)
            }
        }
    }
}

fn unit_interval(name: &'static str, v: f64) -> Result<(), AttackError> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(name, v, "must lie in [0, 1)"))
    }
}

/// The smoothing `tanh(α·z)` of the code, α moving linearly from `start` to `end` over the
/// iterations (a sharper surrogate of `sign` as the attack proceeds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaSchedule {
    /// α of the first iteration.
    pub start: f64,
    /// α of the last iteration.
    pub end: f64,
}

impl AlphaSchedule {
    pub(crate) fn validate(&self) -> Result<(), AttackError> {
        check_positive("alpha start", self.start)?;
        check_positive("alpha end", self.end)
    }

    pub(crate) fn at(&self, t: usize, steps: usize) -> f32 {
        let f = if steps <= 1 {
            1.0
        } else {
            t as f64 / (steps - 1) as f64
        };
        (self.start + (self.end - self.start) * f) as f32
    }
}

/// The iteration both hashing attacks run: minimise `loss(α, code_scores, x)` over the L∞ ball.
pub(crate) struct Minimise<'a> {
    pub optimizer: Optimizer,
    pub steps: usize,
    pub alpha: AlphaSchedule,
    pub input_box: InputBox,
    pub seed: u64,
    pub source: &'a GradientSource<'a>,
}

impl Minimise<'_> {
    pub(crate) fn run(
        &self,
        model: &dyn AttackModel,
        x0: &Tensor<4>,
        epsilon: f64,
        loss: &dyn Fn(f32, Tensor<2>, Tensor<4>) -> Tensor<1>,
    ) -> Result<Tensor<4>, AttackError> {
        let eps = epsilon as f32;
        let mut x = x0.clone();
        let mut m1: Option<Tensor<4>> = None;
        let mut m2: Option<Tensor<4>> = None;
        for t in 0..self.steps {
            let alpha = self.alpha.at(t, self.steps);
            let objective = |m: &dyn AttackModel, x: Tensor<4>| loss(alpha, m.scores(x.clone()), x);
            let g =
                self.source
                    .input_gradient(model, &x, &objective, mix(self.seed, t as u64 + 1))?;
            let update = match self.optimizer {
                Optimizer::SignStep(step) => g.sign().mul_scalar(step.at(epsilon) as f32),
                Optimizer::Sgd { lr, momentum } => {
                    let v = match m1.take() {
                        Some(v) => v.mul_scalar(momentum as f32) + g,
                        None => g,
                    };
                    m1 = Some(v.clone());
                    v.mul_scalar(lr as f32)
                }
                Optimizer::Adam { lr, beta1, beta2 } => {
                    let (b1, b2) = (beta1 as f32, beta2 as f32);
                    let first = match m1.take() {
                        Some(m) => m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
                        None => g.clone().mul_scalar(1.0 - b1),
                    };
                    let second = match m2.take() {
                        Some(v) => v.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2),
                        None => g.powi_scalar(2).mul_scalar(1.0 - b2),
                    };
                    m1 = Some(first.clone());
                    m2 = Some(second.clone());
                    let k = (t + 1) as i32;
                    let c1 = 1.0 - b1.powi(k);
                    let c2 = 1.0 - b2.powi(k);
                    first.div_scalar(c1) / second.div_scalar(c2).sqrt().add_scalar(1e-8)
                        * (lr as f32)
                }
            };
            x = x - update;
            x = self.input_box.clip(project(Norm::Linf, x0, x, eps));
        }
        Ok(x)
    }
}

/// A retrieval loss: `(α, code scores, input) ↦ scalar`, minimised by [`Minimise`].
pub(crate) type CodeLoss = Box<dyn Fn(f32, Tensor<2>, Tensor<4>) -> Tensor<1>>;

/// A whole retrieval attack: checks, the iteration on `loss` built from the original codes, the
/// codes of the result. `build_loss` gets the queries' ±1 codes and the inputs (no autodiff).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attack_codes(
    model: &dyn AttackModel,
    queries: &Tensor<4>,
    query_labels: &LabelSets,
    database: &HashDatabase,
    epsilon: f64,
    iteration: Minimise<'_>,
    build_loss: &dyn Fn(&[f32], &Tensor<4>) -> CodeLoss,
) -> Result<RetrievalAttackOutput, AttackError> {
    crate::error::check_epsilon(epsilon)?;
    iteration.source.validate()?;
    let original = prepare(model, queries, query_labels, database, &iteration.input_box)?;
    let x0 = queries.clone().inner();
    let loss = build_loss(&original, &x0);
    let x = iteration.run(model, &x0, epsilon, &*loss)?;
    finish_retrieval(model, queries, x, original)
}

/// Codes, Hamming distances and success of a finished retrieval attack.
fn finish_retrieval(
    model: &dyn AttackModel,
    queries: &Tensor<4>,
    x: Tensor<4>,
    original_codes: Vec<f32>,
) -> Result<RetrievalAttackOutput, AttackError> {
    let bits = model.outputs();
    let adversarial = like(queries, x);
    let adversarial_codes = signs(&host(model.predict_scores(adversarial.clone()))?)?;
    let before = PackedCodes::from_real(&original_codes, bits)?;
    let after = PackedCodes::from_real(&adversarial_codes, bits)?;
    let hamming: Vec<u32> = (0..before.len())
        .map(|i| before.hamming(i, &after, i))
        .collect();
    let success = hamming.iter().map(|&h| 2 * h as usize > bits).collect();
    Ok(RetrievalAttackOutput {
        adversarial,
        bits,
        original_codes,
        adversarial_codes,
        hamming,
        success,
    })
}

/// Checks a retrieval attack's inputs; returns the queries' ±1 codes.
fn prepare(
    model: &dyn AttackModel,
    queries: &Tensor<4>,
    query_labels: &LabelSets,
    database: &HashDatabase,
    input_box: &InputBox,
) -> Result<Vec<f32>, AttackError> {
    input_box.check("queries", queries)?;
    check_batch("query labels", queries.dims()[0], query_labels.len())?;
    check_batch("database code bits", model.outputs(), database.bits())?;
    check_batch(
        "label classes",
        database.labels().classes(),
        query_labels.classes(),
    )?;
    signs(&host(model.predict_scores(queries.clone()))?)
}

/// A `[rows, cols]` tensor from host values on `x`'s device.
pub(crate) fn matrix(values: Vec<f32>, rows: usize, cols: usize, x: &Tensor<4>) -> Tensor<2> {
    tensor(values, [rows, cols], &x.device())
}
