//! Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that halves itself
//! when progress stalls, on the cross-entropy (APGD-CE), the difference-of-logits-ratio loss
//! (APGD-DLR) or its targeted form over the runner-up classes (APGD-T). The white-box half of
//! AutoAttack, with the gradient from any [`GradientSource`].
//!
//! The algorithm follows the authors' reference implementation (fra31/auto-attack): a random
//! start on the sphere of radius ε, a first step of size 2ε, momentum 0.75, and at each
//! checkpoint (after 22 %, then 19 %, 16 %, … of the iterations, never less than 6 %) the step of
//! every sample halves when fewer than ρ = 75 % of the last iterations raised its loss, or when
//! its best loss did not improve since the previous checkpoint (and the step was not halved
//! there); such a sample restarts from its best point. A sample counts as broken if any iterate
//! was misclassified; the adversarial returned is the last misclassified iterate.

use burn::config::Config;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};
use serde::{Deserialize, Serialize};

use crate::bounds::{InputBox, Norm, l2_norms};
use crate::error::{AttackError, check_count, check_epsilon, invalid};
use crate::model::{AttackModel, argmax_rows, blend, check_labels, host, per_sample, tensor};
use crate::pgd::{AttackOutput, BoundedAttack, like, project};
use crate::source::{GradientSource, mix};

/// The loss APGD ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApgdLoss {
    /// Cross-entropy of the true class (APGD-CE).
    CrossEntropy,
    /// The difference of logits ratio `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)` (APGD-DLR):
    /// invariant to shifting and scaling the logits, so a model cannot hide behind saturated
    /// softmax outputs. Needs at least 3 classes.
    Dlr,
    /// The targeted DLR loss `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`, run once for each of the
    /// `target_classes` runner-up classes `t` of the clean prediction (APGD-T). Needs at least 4
    /// classes.
    TargetedDlr,
}

/// Settings of [`Apgd`]; the defaults are AutoAttack's (100 iterations, one restart, momentum
/// 0.75, ρ = 0.75, 9 target classes for APGD-T).
#[derive(Config, Debug)]
pub struct ApgdConfig {
    /// Norm of the ε-ball.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// The loss.
    #[config(default = "ApgdLoss::CrossEntropy")]
    pub loss: ApgdLoss,
    /// Iterations per run.
    #[config(default = 100)]
    pub steps: usize,
    /// Random restarts (each on the samples still robust).
    #[config(default = 1)]
    pub restarts: usize,
    /// Runner-up classes attacked by [`ApgdLoss::TargetedDlr`] (at most the classes − 1 a model
    /// has are used).
    #[config(default = 9)]
    pub target_classes: usize,
    /// Weight of the new step against the previous one (AutoAttack's α = 0.75).
    #[config(default = 0.75)]
    pub momentum: f64,
    /// Share of the iterations since the last checkpoint that must have raised the loss for the
    /// step size to stay (ρ).
    #[config(default = 0.75)]
    pub rho: f64,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of the random starts (and of random feedback draws).
    #[config(default = 0)]
    pub seed: u64,
}

impl ApgdConfig {
    /// APGD-CE with AutoAttack's defaults.
    pub fn ce() -> Self {
        Self::new()
    }

    /// APGD-DLR (untargeted) with AutoAttack's defaults.
    pub fn dlr() -> Self {
        Self::new().with_loss(ApgdLoss::Dlr)
    }

    /// APGD-T: targeted DLR over the 9 runner-up classes, AutoAttack's defaults.
    pub fn targeted() -> Self {
        Self::new().with_loss(ApgdLoss::TargetedDlr)
    }

    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<Apgd, AttackError> {
        check_count("steps", self.steps)?;
        check_count("restarts", self.restarts)?;
        check_count("target classes", self.target_classes)?;
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(invalid("momentum", self.momentum, "must lie in [0, 1]"));
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return Err(invalid("rho", self.rho, "must lie in (0, 1]"));
        }
        InputBox::new(self.input_box.lower, self.input_box.upper)?;
        Ok(Apgd {
            config: self.clone(),
        })
    }
}

/// The iterations (counted from 1) after which APGD checks its progress, for a run of `steps`
/// iterations, as the paper defines them: `w_j = ⌈p_j·N⌉` with `p_0 = 0`, `p_1 = 0.22` and
/// `p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`, for every `p_j ≤ 1` (computed in exact
/// hundredths; repeated positions of very short runs are merged).
///
/// ```
/// use signsym_attacks::apgd_checkpoints;
/// assert_eq!(apgd_checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
/// ```
pub fn apgd_checkpoints(steps: usize) -> Vec<usize> {
    // p in hundredths.
    let (mut before, mut p) = (0usize, 22usize);
    let mut out: Vec<usize> = Vec::new();
    while p <= 100 {
        let w = (p * steps).div_ceil(100);
        if w > 0 && out.last() != Some(&w) {
            out.push(w);
        }
        let next = p + (p - before).saturating_sub(3).max(6);
        before = p;
        p = next;
    }
    out
}

/// Auto-PGD; build it with [`ApgdConfig::init`].
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_attacks::{ApgdConfig, BoundedAttack, FnModel, GradientSource};
///
/// let device = Device::flex().autodiff();
/// // Class 0 wins above a pixel mean of 0.5, class 1 below; class 2 never does.
/// let model = FnModel::new(3, |x: Tensor<4>| {
///     let m = x.flatten::<2>(1, 3).mean_dim(1);
///     Tensor::cat(vec![m.clone().sub_scalar(0.5), m.clone().neg().add_scalar(0.5), m.mul_scalar(0.0).sub_scalar(1.0)], 1)
/// });
/// let images = Tensor::<4>::full([2, 1, 2, 2], 0.6, &device);
/// let apgd = ApgdConfig::ce().with_steps(10).init()?;
/// let out = apgd.run(&model, &images, &[0, 0], 0.3, &GradientSource::Exact)?;
/// // Lowering every pixel by up to 0.3 makes class 1 win.
/// assert_eq!(out.success, vec![true, true]);
/// # Ok::<(), signsym_attacks::AttackError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Apgd {
    config: ApgdConfig,
}

impl Apgd {
    /// The settings.
    pub fn config(&self) -> &ApgdConfig {
        &self.config
    }
}

/// Per-sample loss of a batch of scores against the true classes (and the targets of the
/// targeted DLR loss), as a `[batch]` tensor on the scores' graph.
struct Objective<'a> {
    loss: ApgdLoss,
    labels: &'a [usize],
    targets: &'a [usize],
}

impl Objective<'_> {
    fn per_sample(&self, scores: Tensor<2>) -> Tensor<1> {
        let [batch, classes] = scores.dims();
        let device = scores.device();
        match self.loss {
            ApgdLoss::CrossEntropy => {
                let index = index_tensor(self.labels.iter().map(|&y| vec![y]), batch, 1, &device);
                log_softmax(scores, 1)
                    .gather(1, index)
                    .reshape([batch])
                    .neg()
            }
            ApgdLoss::Dlr | ApgdLoss::TargetedDlr => {
                // The sorted positions come from the values (as a sort would); the gradient then
                // flows through the gathered logits exactly as through PyTorch's `sort`.
                let values = scores
                    .clone()
                    .detach()
                    .try_to_vec_as::<f32>()
                    .unwrap_or_else(|_| vec![0.0; batch * classes]);
                let columns = values.chunks(classes).enumerate().map(|(i, row)| {
                    let order = descending(row);
                    let y = self.labels[i];
                    match self.loss {
                        ApgdLoss::Dlr => {
                            let other = if order[0] == y { order[1] } else { order[0] };
                            vec![y, other, order[0], order[2], order[2]]
                        }
                        _ => vec![y, self.targets[i], order[0], order[2], order[3]],
                    }
                });
                let g = scores.gather(1, index_tensor(columns, batch, 5, &device));
                let col = |k: usize| g.clone().slice([0..batch, k..k + 1]).reshape([batch]);
                let numerator = col(0) - col(1);
                let denominator = match self.loss {
                    ApgdLoss::Dlr => col(2) - col(3),
                    _ => col(2) - (col(3) + col(4)).mul_scalar(0.5),
                };
                (numerator / denominator.add_scalar(1e-12)).neg()
            }
        }
    }
}

/// The per-sample DLR loss `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²)` of `[batch,
/// classes]` scores (π: the classes sorted by score), differentiable in the scores.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_attacks::dlr_loss;
/// let scores = Tensor::<2>::from_floats([[3.0, 1.0, 2.0, 0.0]], &Device::flex());
/// let loss = dlr_loss(scores, &[0])?.into_scalar::<f32>();
/// assert!((loss + 0.5).abs() < 1e-6); // −(3 − 2) / (3 − 1)
/// # Ok::<(), signsym_attacks::AttackError>(())
/// ```
pub fn dlr_loss(scores: Tensor<2>, labels: &[usize]) -> Result<Tensor<1>, AttackError> {
    let [batch, classes] = scores.dims();
    check_labels(labels, batch, classes)?;
    if classes < 3 {
        return Err(invalid("classes", classes, "the DLR loss needs at least 3"));
    }
    Ok(Objective {
        loss: ApgdLoss::Dlr,
        labels,
        targets: labels,
    }
    .per_sample(scores))
}

/// The per-sample targeted DLR loss `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²)` towards
/// `targets`, differentiable in the scores.
pub fn targeted_dlr_loss(
    scores: Tensor<2>,
    labels: &[usize],
    targets: &[usize],
) -> Result<Tensor<1>, AttackError> {
    let [batch, classes] = scores.dims();
    check_labels(labels, batch, classes)?;
    check_labels(targets, batch, classes)?;
    if classes < 4 {
        return Err(invalid(
            "classes",
            classes,
            "the targeted DLR loss needs at least 4",
        ));
    }
    Ok(Objective {
        loss: ApgdLoss::TargetedDlr,
        labels,
        targets,
    }
    .per_sample(scores))
}

fn index_tensor(
    rows: impl Iterator<Item = Vec<usize>>,
    batch: usize,
    width: usize,
    device: &Device,
) -> Tensor<2, Int> {
    let values: Vec<i64> = rows.flatten().map(|c| c as i64).collect();
    Tensor::from_data(TensorData::new(values, [batch, width]), device)
}

/// Class indices of a row of scores, highest first (stable on ties).
fn descending(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order
}

/// What one APGD run did at every iteration, for inspection ([`Apgd::trace`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApgdTrace {
    /// Per iteration: each sample's step size as the step was taken.
    pub step_sizes: Vec<Vec<f32>>,
    /// Per iteration: each sample's loss at the new iterate.
    pub losses: Vec<Vec<f32>>,
    /// The checkpoints of the run ([`apgd_checkpoints`]).
    pub checkpoints: Vec<usize>,
    /// Per sample: some iterate was misclassified.
    pub broken: Vec<bool>,
}

/// The result of one APGD run on a batch.
struct SingleRun {
    /// Per sample: some iterate was misclassified.
    broken: Vec<bool>,
    /// The last misclassified iterate (the random start where none was).
    adversarial: Tensor<4>,
}

impl Apgd {
    fn minimum_classes(&self) -> usize {
        match self.config.loss {
            ApgdLoss::CrossEntropy => 2,
            ApgdLoss::Dlr => 3,
            ApgdLoss::TargetedDlr => 4,
        }
    }

    /// The random start: uniform on the L∞ sphere of radius ε (scaled so the largest change is
    /// ε) or Gaussian on the L2 sphere, then clipped into the box.
    fn start(&self, x: &Tensor<4>, eps: f32, seed: u64) -> Tensor<4> {
        let dims = x.dims();
        let per: usize = dims[1..].iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = Vec::with_capacity(dims[0] * per);
        for _ in 0..dims[0] {
            let mut row: Vec<f32> = match self.config.norm {
                Norm::Linf => {
                    let u = Uniform::new(-1.0f32, 1.0).expect("valid range");
                    (0..per).map(|_| u.sample(&mut rng)).collect()
                }
                Norm::L2 => (0..per).map(|_| StandardNormal.sample(&mut rng)).collect(),
            };
            let norm = self.config.norm.of(row.iter().copied()) as f32 + 1e-12;
            row.iter_mut().for_each(|v| *v *= eps / norm);
            values.extend(row);
        }
        self.config
            .input_box
            .clip(x.clone() + tensor(values, dims, &x.device()))
    }

    /// Moves `x` by `step` along the normalised gradient, into the ball and the box.
    fn step(
        &self,
        x0: &Tensor<4>,
        x: Tensor<4>,
        grad: Tensor<4>,
        step: Tensor<4>,
        eps: f32,
    ) -> Tensor<4> {
        let direction = match self.config.norm {
            Norm::Linf => grad.sign(),
            Norm::L2 => grad.clone() / l2_norms(grad).add_scalar(1e-12),
        };
        self.project_into_ball(x0, x + direction * step, eps)
    }

    fn project_into_ball(&self, x0: &Tensor<4>, x: Tensor<4>, eps: f32) -> Tensor<4> {
        self.config
            .input_box
            .clip(project(self.config.norm, x0, x, eps))
    }

    /// One APGD run on a batch whose samples are all classified correctly.
    #[allow(clippy::too_many_arguments)]
    fn single_run(
        &self,
        model: &dyn AttackModel,
        x0: &Tensor<4>,
        objective: &Objective<'_>,
        epsilon: f64,
        source: &GradientSource<'_>,
        seed: u64,
        gradients: &mut usize,
        mut trace: Option<&mut ApgdTrace>,
    ) -> Result<SingleRun, AttackError> {
        let c = &self.config;
        let batch = x0.dims()[0];
        let classes = model.outputs();
        let device = x0.device();
        let eps = epsilon as f32;
        let labels = objective.labels;
        let loss = |scores: Tensor<2>| objective.per_sample(scores);
        let checkpoints = apgd_checkpoints(c.steps);
        let mut last_checkpoint = 0;

        let mut x = self.start(x0, eps, mix(seed, 0));
        let first = source.evaluate(model, &x, &loss, mix(seed, 1))?;
        *gradients += source.backward_passes();
        let mut grad = first.gradient;
        let mut grad_best = grad.clone();
        let predicted = argmax_rows(&host(first.scores)?, classes);
        let mut broken: Vec<bool> = predicted.iter().zip(labels).map(|(p, y)| p != y).collect();
        let mut loss_best = host(first.losses)?;
        let mut x_best = x.clone();
        let mut x_best_adv = x.clone();
        let mut step = vec![2.0 * eps; batch];
        let mut x_old = x.clone();
        let mut loss_best_last_check = loss_best.clone();
        // As the reference code: "reduced at the last check" starts true, so the first check
        // judges by oscillation alone.
        let mut reduced_last_check = vec![true; batch];
        let mut loss_steps = vec![vec![0.0f32; batch]; c.steps];

        for i in 0..c.steps {
            let momentum = if i > 0 { c.momentum as f32 } else { 1.0 };
            let previous_move = x.clone() - x_old;
            x_old = x.clone();
            if let Some(t) = trace.as_deref_mut() {
                t.step_sizes.push(step.clone());
            }
            let z = self.step(x0, x.clone(), grad, per_sample(&step, &device), eps);
            let mixed =
                x.clone() + (z - x).mul_scalar(momentum) + previous_move.mul_scalar(1.0 - momentum);
            x = self.project_into_ball(x0, mixed, eps);

            let e = source.evaluate(model, &x, &loss, mix(seed, i as u64 + 2))?;
            *gradients += source.backward_passes();
            grad = e.gradient;
            let predicted = argmax_rows(&host(e.scores)?, classes);
            let wrong: Vec<bool> = predicted.iter().zip(labels).map(|(p, y)| p != y).collect();
            x_best_adv = blend(&wrong, x.clone(), x_best_adv);
            broken.iter_mut().zip(&wrong).for_each(|(b, w)| *b |= *w);

            let losses = host(e.losses)?;
            let improved: Vec<bool> = losses.iter().zip(&loss_best).map(|(l, b)| l > b).collect();
            x_best = blend(&improved, x.clone(), x_best);
            grad_best = blend(&improved, grad.clone(), grad_best);
            for ((best, l), up) in loss_best.iter_mut().zip(&losses).zip(&improved) {
                if *up {
                    *best = *l;
                }
            }
            if let Some(t) = trace.as_deref_mut() {
                t.losses.push(losses.clone());
            }
            loss_steps[i] = losses;

            if checkpoints.contains(&(i + 1)) {
                // The iterations since the previous checkpoint.
                let k = i + 1 - last_checkpoint;
                last_checkpoint = i + 1;
                let mut halve = vec![false; batch];
                for s in 0..batch {
                    let rises = (0..k)
                        .filter(|&back| {
                            let j = i - back;
                            // Python's `loss_steps[-1]` at the first check: the last row, zero.
                            let before = if j > 0 {
                                loss_steps[j - 1][s]
                            } else {
                                loss_steps[c.steps - 1][s]
                            };
                            loss_steps[j][s] > before
                        })
                        .count();
                    let oscillates = rises as f64 <= k as f64 * c.rho;
                    let stuck = !reduced_last_check[s] && loss_best_last_check[s] >= loss_best[s];
                    halve[s] = oscillates || stuck;
                }
                for (st, h) in step.iter_mut().zip(&halve) {
                    if *h {
                        *st /= 2.0;
                    }
                }
                x = blend(&halve, x_best.clone(), x);
                grad = blend(&halve, grad_best.clone(), grad);
                reduced_last_check = halve;
                loss_best_last_check = loss_best.clone();
            }
        }
        Ok(SingleRun {
            broken,
            adversarial: x_best_adv,
        })
    }
}

impl Apgd {
    /// One run (the first restart, the first target class) on every sample, misclassified ones
    /// included, recording the step sizes and losses of each iteration.
    pub fn trace(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilon: f64,
        source: &GradientSource<'_>,
    ) -> Result<ApgdTrace, AttackError> {
        check_epsilon(epsilon)?;
        source.validate()?;
        let batch = images.dims()[0];
        self.config.input_box.check("images", images)?;
        let classes = model.outputs();
        check_labels(labels, batch, classes)?;
        let clean = host(model.predict_scores(images.clone()))?;
        let targets: Vec<usize> = (0..batch)
            .map(|i| descending(&clean[i * classes..(i + 1) * classes])[1.min(classes - 1)])
            .collect();
        let objective = Objective {
            loss: self.config.loss,
            labels,
            targets: &targets,
        };
        let mut trace = ApgdTrace {
            checkpoints: apgd_checkpoints(self.config.steps),
            ..ApgdTrace::default()
        };
        let mut spent = 0;
        let run = self.single_run(
            model,
            &images.clone().inner(),
            &objective,
            epsilon,
            source,
            mix(self.config.seed, 0),
            &mut spent,
            Some(&mut trace),
        )?;
        trace.broken = run.broken;
        Ok(trace)
    }
}

impl BoundedAttack for Apgd {
    fn name(&self) -> String {
        let loss = match self.config.loss {
            ApgdLoss::CrossEntropy => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
            ApgdLoss::TargetedDlr => "apgd-t",
        };
        format!("{loss}-{}", self.config.norm.name())
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
        let dims = images.dims();
        let batch = dims[0];
        let x0 = c.input_box.check("images", images)?;
        let classes = model.outputs();
        check_labels(labels, batch, classes)?;
        if classes < self.minimum_classes() {
            return Err(invalid(
                "model outputs",
                classes,
                "too few classes for this loss (DLR needs 3, targeted DLR 4)",
            ));
        }
        let x_all = images.clone().inner();
        let clean = host(model.predict_scores(images.clone()))?;
        let mut robust: Vec<bool> = argmax_rows(&clean, classes)
            .iter()
            .zip(labels)
            .map(|(p, y)| p == y)
            .collect();
        let per: usize = dims[1..].iter().product();
        let mut adversarial = x0.clone();
        let mut gradients = vec![0usize; batch];
        if epsilon > 0.0 {
            // (target rank, restart) pairs; untargeted runs have rank 0.
            let ranks: Vec<usize> = match c.loss {
                ApgdLoss::TargetedDlr => (2..=(c.target_classes + 1).min(classes)).collect(),
                _ => vec![0],
            };
            let mut run_index = 0u64;
            for &rank in &ranks {
                for _ in 0..c.restarts {
                    let todo: Vec<usize> = (0..batch).filter(|&i| robust[i]).collect();
                    if todo.is_empty() {
                        break;
                    }
                    let index = Tensor::<1, Int>::from_data(
                        TensorData::new(
                            todo.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                            [todo.len()],
                        ),
                        &x_all.device(),
                    );
                    let x = x_all.clone().select(0, index);
                    let y: Vec<usize> = todo.iter().map(|&i| labels[i]).collect();
                    let targets: Vec<usize> = todo
                        .iter()
                        .map(|&i| {
                            let order = descending(&clean[i * classes..(i + 1) * classes]);
                            order[rank.saturating_sub(1)]
                        })
                        .collect();
                    let objective = Objective {
                        loss: c.loss,
                        labels: &y,
                        targets: &targets,
                    };
                    let mut spent = 0;
                    let run = self.single_run(
                        model,
                        &x,
                        &objective,
                        epsilon,
                        source,
                        mix(c.seed, run_index),
                        &mut spent,
                        None,
                    )?;
                    run_index += 1;
                    let adv = host(run.adversarial)?;
                    for (k, &i) in todo.iter().enumerate() {
                        gradients[i] += spent;
                        if run.broken[k] {
                            robust[i] = false;
                            adversarial[i * per..(i + 1) * per]
                                .copy_from_slice(&adv[k * per..(k + 1) * per]);
                        }
                    }
                }
            }
        }
        let x = like(images, tensor(adversarial, dims, &x_all.device()));
        let predicted = crate::model::predict(model, x.clone())?;
        let success = predicted.iter().zip(labels).map(|(p, l)| p != l).collect();
        Ok(AttackOutput {
            adversarial: x,
            success,
            predicted,
            queries: gradients.iter().map(|g| g + 2).collect(),
            gradients,
        })
    }
}
