//! Projected gradient descent (L∞ and L2) and FGSM, its single-step L∞ case.

use burn::config::Config;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use serde::{Deserialize, Serialize};

use crate::bounds::{InputBox, Norm, l2_norms};
use crate::error::{AttackError, check_count, check_epsilon, check_positive};
use crate::model::{AttackModel, check_labels, int_tensor, predict, tensor};
use crate::source::{GradientSource, mix};

/// The L∞ budgets of arXiv 2502.05925's robustness tables (inputs in `[0, 1]`), for PGD, FGSM,
/// HAG and SDHA alike.
pub const PAPER_EPSILONS: [f64; 7] = [0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5];

/// The result of an attack at a fixed budget.
#[derive(Clone, Debug)]
pub struct AttackOutput {
    /// The adversarial batch (same shape and device as the input, inside the box and the ε-ball).
    pub adversarial: Tensor<4>,
    /// Per sample: the model misclassifies the adversarial input.
    pub success: Vec<bool>,
    /// The model's prediction on each adversarial input.
    pub predicted: Vec<usize>,
    /// Forward passes spent on each sample (each gradient evaluation's, the attacked model's or
    /// its surrogate's, and the final check).
    pub queries: Vec<usize>,
    /// Backward passes (input gradients) spent on each sample; 0 for black-box attacks.
    pub gradients: Vec<usize>,
}

impl AttackOutput {
    /// Share of samples still classified correctly (the robust accuracy of this batch).
    pub fn robust_accuracy(&self) -> f64 {
        self.success.iter().filter(|s| !**s).count() as f64 / self.success.len().max(1) as f64
    }
}

/// A white-box classification attack with a fixed perturbation budget ε.
pub trait BoundedAttack {
    /// Short name for reports (`fgsm`, `pgd5-linf`, …).
    fn name(&self) -> String;

    /// Perturbation norm ε is measured in.
    fn norm(&self) -> Norm;

    /// Whether the attack follows an input gradient (false for score-based black-box attacks
    /// such as [`Square`](crate::Square), which ignore the gradient source).
    fn needs_gradient(&self) -> bool {
        true
    }

    /// Attacks `images` (true classes `labels`) within `epsilon`, with gradients from `source`.
    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<AttackOutput, AttackError>;
}

/// How large each PGD step is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepSize {
    /// The same step for every ε.
    Absolute(f64),
    /// A fraction of ε (the paper's `ε/3` is `Relative(1/3)`).
    Relative(f64),
}

impl StepSize {
    /// Checks that the size is finite and positive.
    pub(crate) fn validate(&self) -> Result<(), AttackError> {
        match *self {
            Self::Absolute(a) => check_positive("step size", a),
            Self::Relative(r) => check_positive("relative step size", r),
        }
    }

    /// The step for budget `epsilon` (the size is checked at `init`).
    pub(crate) fn at(&self, epsilon: f64) -> f64 {
        match *self {
            Self::Absolute(a) => a,
            Self::Relative(r) => r * epsilon,
        }
    }
}

/// Settings of [`Pgd`]: the untargeted attack of Madry et al. (2018) that ascends the
/// cross-entropy and projects back onto the ε-ball and the box after every step.
#[derive(Config, Debug)]
pub struct PgdConfig {
    /// Norm of the ε-ball.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Number of gradient steps.
    #[config(default = 5)]
    pub steps: usize,
    /// Step size.
    #[config(default = "StepSize::Relative(1.0 / 3.0)")]
    pub step_size: StepSize,
    /// Start from a uniform random point of the ε-ball instead of the input.
    #[config(default = false)]
    pub random_start: bool,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of the random start and of random feedback draws.
    #[config(default = 0)]
    pub seed: u64,
}

impl PgdConfig {
    /// The setting of arXiv 2502.05925: L∞, 5 steps of `ε/3`, no random start.
    pub fn paper() -> Self {
        Self::new()
    }

    /// foolbox's `LinfPGD` defaults: 40 steps of `0.01/0.3 · ε`, random start.
    pub fn foolbox_linf() -> Self {
        Self::new()
            .with_steps(40)
            .with_step_size(StepSize::Relative(0.01 / 0.3))
            .with_random_start(true)
    }

    /// foolbox's `L2PGD` defaults: 50 steps of `0.025 · ε`, random start.
    pub fn foolbox_l2() -> Self {
        Self::new()
            .with_norm(Norm::L2)
            .with_steps(50)
            .with_step_size(StepSize::Relative(0.025))
            .with_random_start(true)
    }

    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<Pgd, AttackError> {
        check_count("steps", self.steps)?;
        self.step_size.validate()?;
        InputBox::new(self.input_box.lower, self.input_box.upper)?;
        Ok(Pgd {
            config: self.clone(),
        })
    }
}

/// Projected gradient descent; build it with [`PgdConfig::init`].
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_attacks::{BoundedAttack, FnModel, GradientSource, PgdConfig};
///
/// let device = Device::flex().autodiff();
/// // Class 0 scores the pixel sum, class 1 its negation: raising pixels keeps class 0.
/// let model = FnModel::new(2, |x: Tensor<4>| {
///     let s = x.flatten::<2>(1, 3).sum_dim(1);
///     Tensor::cat(vec![s.clone().sub_scalar(1.0), s.neg().add_scalar(1.0)], 1)
/// });
/// let images = Tensor::<4>::full([2, 1, 2, 2], 0.3, &device);
/// let pgd = PgdConfig::paper().init()?;
/// let out = pgd.run(&model, &images, &[1, 1], 0.1, &GradientSource::Exact)?;
/// // Class 1 loses: every pixel moved up by ε.
/// let max = out.adversarial.max().into_scalar::<f32>();
/// assert!((max - 0.4).abs() < 1e-6);
/// assert_eq!(out.success, vec![true, true]);
/// # Ok::<(), signsym_attacks::AttackError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Pgd {
    config: PgdConfig,
}

impl Pgd {
    /// The settings.
    pub fn config(&self) -> &PgdConfig {
        &self.config
    }
}

/// Summed cross-entropy of `scores` against `labels` (a `[1]` tensor): the sum keeps each
/// sample's gradient independent of the batch size.
pub fn cross_entropy_sum(scores: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let [batch, _] = scores.dims();
    let device = scores.device();
    let index = int_tensor(labels, &device).reshape([batch, 1]);
    log_softmax(scores, 1).gather(1, index).sum().neg()
}

impl BoundedAttack for Pgd {
    fn name(&self) -> String {
        format!("pgd{}-{}", self.config.steps, self.config.norm.name())
    }

    fn norm(&self) -> Norm {
        self.config.norm
    }

    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<AttackOutput, AttackError> {
        let c = &self.config;
        check_epsilon(epsilon)?;
        source.validate()?;
        let step = c.step_size.at(epsilon);
        let batch = images.dims()[0];
        c.input_box.check("images", images)?;
        check_labels(labels, batch, model.outputs())?;

        let x0 = images.clone().inner();
        let device = x0.device();
        let eps = epsilon as f32;
        let mut x = if c.random_start && eps > 0.0 {
            let noise = random_start(c.norm, x0.dims(), eps, c.seed, &device);
            c.input_box.clip(x0.clone() + noise)
        } else {
            x0.clone()
        };
        let loss = |m: &dyn AttackModel, x: Tensor<4>| cross_entropy_sum(m.scores(x), labels);
        for t in 0..c.steps {
            let g = source.input_gradient(model, &x, &loss, mix(c.seed, t as u64 + 1))?;
            let direction = match c.norm {
                Norm::Linf => g.sign(),
                Norm::L2 => g.clone() / l2_norms(g).add_scalar(1e-12),
            };
            x = x + direction.mul_scalar(step as f32);
            x = project(c.norm, &x0, x, eps);
            x = c.input_box.clip(x);
        }
        let mut out = finish(model, images, x, labels)?;
        let backward = c.steps * source.backward_passes();
        out.gradients = vec![backward; batch];
        out.queries = vec![backward + 1; batch];
        Ok(out)
    }
}

/// Projects `x` onto the ε-ball around `x0`.
pub(crate) fn project(norm: Norm, x0: &Tensor<4>, x: Tensor<4>, eps: f32) -> Tensor<4> {
    match norm {
        Norm::Linf => x
            .max_pair(x0.clone().sub_scalar(eps))
            .min_pair(x0.clone().add_scalar(eps)),
        Norm::L2 => {
            let delta = x - x0.clone();
            let norms = l2_norms(delta.clone());
            // min(1, ε/‖δ‖); a zero δ stays zero.
            let factor = norms
                .clone()
                .add_scalar(1e-12)
                .recip()
                .mul_scalar(eps)
                .clamp_max(1.0);
            x0.clone() + delta * factor
        }
    }
}

/// A uniform draw from the ε-ball (L∞: uniform per pixel; L2: uniform in the ball).
fn random_start(norm: Norm, dims: [usize; 4], eps: f32, seed: u64, device: &Device) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0));
    let per: usize = dims[1..].iter().product();
    let mut values = Vec::with_capacity(dims[0] * per);
    match norm {
        Norm::Linf => {
            let u = Uniform::new_inclusive(-eps, eps).expect("eps > 0");
            values.extend((0..dims[0] * per).map(|_| u.sample(&mut rng)));
        }
        Norm::L2 => {
            for _ in 0..dims[0] {
                let dir: Vec<f32> = (0..per).map(|_| StandardNormal.sample(&mut rng)).collect();
                let len = dir.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let u: f32 = Uniform::new(0.0f32, 1.0).expect("range").sample(&mut rng);
                let radius = eps * u.powf(1.0 / per as f32);
                values.extend(dir.iter().map(|v| v / len * radius));
            }
        }
    }
    tensor(values, dims, device)
}

/// `x` (computed without autodiff) with autodiff again when the caller's `images` had it.
pub(crate) fn like(images: &Tensor<4>, x: Tensor<4>) -> Tensor<4> {
    if images.is_autodiff() {
        x.autodiff()
    } else {
        x
    }
}

/// Puts the adversarial batch back on the caller's device and judges it.
pub(crate) fn finish(
    model: &dyn AttackModel,
    images: &Tensor<4>,
    x: Tensor<4>,
    labels: &[usize],
) -> Result<AttackOutput, AttackError> {
    let adversarial = like(images, x);
    let predicted = predict(model, adversarial.clone())?;
    let success = predicted.iter().zip(labels).map(|(p, l)| p != l).collect();
    let n = labels.len();
    Ok(AttackOutput {
        adversarial,
        success,
        predicted,
        queries: vec![1; n],
        gradients: vec![0; n],
    })
}

/// The fast gradient sign method (Goodfellow et al., 2015): one L∞ step of size ε.
///
/// Identical to [`Pgd`] with one step of `ε` and no random start (foolbox defines it the same
/// way).
#[derive(Clone, Debug)]
pub struct Fgsm {
    pgd: Pgd,
}

impl Fgsm {
    /// FGSM for inputs in `input_box`.
    pub fn new(input_box: InputBox) -> Result<Self, AttackError> {
        let pgd = PgdConfig::new()
            .with_steps(1)
            .with_step_size(StepSize::Relative(1.0))
            .with_input_box(input_box)
            .init()?;
        Ok(Self { pgd })
    }
}

impl Default for Fgsm {
    fn default() -> Self {
        Self::new(InputBox::default()).expect("valid defaults")
    }
}

impl BoundedAttack for Fgsm {
    fn name(&self) -> String {
        "fgsm".into()
    }

    fn norm(&self) -> Norm {
        Norm::Linf
    }

    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<AttackOutput, AttackError> {
        self.pgd.run(model, images, labels, epsilon, source)
    }
}
