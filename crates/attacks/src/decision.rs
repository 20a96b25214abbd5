//! What the decision-based (black-box) attacks share: a query-counting oracle, the search for a
//! first adversarial point, the bisection towards the decision boundary and their output.

use burn::tensor::{Device, Tensor};
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::bounds::{InputBox, Norm};
use crate::error::AttackError;
use crate::model::{AttackModel, check_labels, predict, tensor};

/// The result of a perturbation-minimising attack.
#[derive(Clone, Debug)]
pub struct MinimizationOutput {
    /// The smallest adversarial found per sample (the input itself where none was found or the
    /// input is already misclassified).
    pub adversarial: Tensor<4>,
    /// Per sample: `adversarial` is misclassified.
    pub success: Vec<bool>,
    /// Norm of `adversarial − input` per sample (`f64::INFINITY` where no adversarial was found;
    /// 0 for inputs misclassified already).
    pub distances: Vec<f64>,
    /// Distance of the first adversarial point, after its bisection towards the boundary and
    /// before the attack's own iterations.
    pub initial_distances: Vec<f64>,
    /// Model evaluations spent on each sample (never above the budget).
    pub queries: Vec<usize>,
    /// The norm of `distances`.
    pub norm: Norm,
}

impl MinimizationOutput {
    /// Robust accuracy at `epsilon`: the share of samples whose smallest adversarial found is
    /// farther than `epsilon` (misclassified inputs count as 0 away).
    pub fn robust_accuracy(&self, epsilon: f64) -> f64 {
        self.robust_count(epsilon) as f64 / self.distances.len().max(1) as f64
    }

    /// Number of samples robust at `epsilon`.
    pub fn robust_count(&self, epsilon: f64) -> usize {
        self.distances.iter().filter(|&&d| d > epsilon).count()
    }
}

/// A decision-based attack that minimises the perturbation under a query budget.
pub trait MinimizationAttack {
    /// Short name for reports.
    fn name(&self) -> String;

    /// The norm it minimises.
    fn norm(&self) -> Norm;

    /// Attacks `images` with true classes `labels` (untargeted), using only the model's
    /// decisions.
    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
    ) -> Result<MinimizationOutput, AttackError> {
        self.run_with(model, images, Criterion::Untargeted(labels))
    }

    /// Looks for the smallest perturbation that makes the model predict `targets[i]`.
    fn run_targeted(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        targets: &[usize],
    ) -> Result<MinimizationOutput, AttackError> {
        self.run_with(model, images, Criterion::Targeted(targets))
    }

    /// Attacks `images` under an explicit success criterion.
    fn run_with(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        criterion: Criterion<'_>,
    ) -> Result<MinimizationOutput, AttackError>;
}

/// When a decision-based attack's point counts as adversarial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion<'a> {
    /// The model predicts anything but the sample's true class.
    Untargeted(&'a [usize]),
    /// The model predicts the sample's target class.
    Targeted(&'a [usize]),
}

impl Criterion<'_> {
    fn classes(&self) -> &[usize] {
        match self {
            Self::Untargeted(c) | Self::Targeted(c) => c,
        }
    }

    /// Whether prediction `predicted` for sample `i` meets the criterion.
    pub fn is_adversarial(&self, i: usize, predicted: usize) -> bool {
        match self {
            Self::Untargeted(labels) => predicted != labels[i],
            Self::Targeted(targets) => predicted == targets[i],
        }
    }
}

/// The checks both decision-based attacks' settings share.
pub(crate) fn check_decision_settings(
    query_budget: usize,
    init_trials: usize,
    max_batch: usize,
    input_box: &InputBox,
) -> Result<(), AttackError> {
    crate::error::check_count("query budget", query_budget)?;
    crate::error::check_count("max batch", max_batch)?;
    if init_trials > query_budget {
        return Err(crate::error::invalid(
            "init trials",
            init_trials,
            "must not exceed the query budget",
        ));
    }
    InputBox::new(input_box.lower, input_box.upper).map(|_| ())
}

/// Answers "is this point adversarial for sample i?" in batches, counting queries per sample.
pub(crate) struct Oracle<'a> {
    model: &'a dyn AttackModel,
    criterion: Criterion<'a>,
    shape: [usize; 3],
    pub dim: usize,
    device: Device,
    max_batch: usize,
    pub queries: Vec<usize>,
    pub budget: usize,
}

impl<'a> Oracle<'a> {
    pub(crate) fn new(
        model: &'a dyn AttackModel,
        images: &Tensor<4>,
        criterion: Criterion<'a>,
        budget: usize,
        max_batch: usize,
    ) -> Result<Self, AttackError> {
        let [batch, c, h, w] = images.dims();
        check_labels(criterion.classes(), batch, model.outputs())?;
        Ok(Self {
            model,
            criterion,
            shape: [c, h, w],
            dim: c * h * w,
            device: images.device(),
            max_batch,
            queries: vec![0; batch],
            budget,
        })
    }

    /// Queries left for sample `i`.
    pub(crate) fn remaining(&self, i: usize) -> usize {
        self.budget.saturating_sub(self.queries[i])
    }

    /// The model's class for each point (row of `points`, owned by sample `owners[k]`).
    pub(crate) fn classify(
        &mut self,
        owners: &[usize],
        points: &[f32],
    ) -> Result<Vec<usize>, AttackError> {
        debug_assert_eq!(owners.len() * self.dim, points.len());
        let mut out = Vec::with_capacity(owners.len());
        let [c, h, w] = self.shape;
        for (chunk, rows) in owners
            .chunks(self.max_batch)
            .zip(points.chunks(self.max_batch * self.dim))
        {
            let batch = tensor(rows.to_vec(), [chunk.len(), c, h, w], &self.device);
            for &i in chunk {
                self.queries[i] += 1;
            }
            out.extend(predict(self.model, batch)?);
        }
        Ok(out)
    }

    /// Whether each point (row of `points`, owned by sample `owners[k]`) is adversarial.
    pub(crate) fn adversarial(
        &mut self,
        owners: &[usize],
        points: &[f32],
    ) -> Result<Vec<bool>, AttackError> {
        let classes = self.classify(owners, points)?;
        Ok(owners
            .iter()
            .zip(classes)
            .map(|(&i, p)| self.criterion.is_adversarial(i, p))
            .collect())
    }

    pub(crate) fn to_tensor(&self, values: Vec<f32>, batch: usize) -> Tensor<4> {
        let [c, h, w] = self.shape;
        tensor(values, [batch, c, h, w], &self.device)
    }
}

/// The point `t ∈ [0, 1]` of the way from `x0` to `xa`: a blend for L2, the projection of `xa`
/// onto the L∞ ball of radius `t·‖xa − x0‖∞` for L∞ (as HopSkipJump's L∞ bisection).
pub(crate) fn towards(norm: Norm, x0: &[f32], xa: &[f32], t: f32, out: &mut Vec<f32>) {
    out.clear();
    match norm {
        Norm::L2 => out.extend(x0.iter().zip(xa).map(|(a, b)| a + t * (b - a))),
        Norm::Linf => {
            let radius = t * x0
                .iter()
                .zip(xa)
                .fold(0.0f32, |m, (a, b)| m.max((b - a).abs()));
            out.extend(
                x0.iter()
                    .zip(xa)
                    .map(|(a, b)| a + (b - a).clamp(-radius, radius)),
            );
        }
    }
}

/// Per-sample state of a decision-based attack.
pub(crate) struct Search {
    /// Original inputs, row-major.
    pub x0: Vec<f32>,
    /// Current adversarial points (valid where `found`).
    pub adv: Vec<f32>,
    pub found: Vec<bool>,
    /// Inputs adversarial before any perturbation (misclassified, or already in the target).
    pub misclassified: Vec<bool>,
    pub dim: usize,
}

impl Search {
    pub(crate) fn batch(&self) -> usize {
        self.found.len()
    }

    pub(crate) fn x0(&self, i: usize) -> &[f32] {
        &self.x0[i * self.dim..(i + 1) * self.dim]
    }

    pub(crate) fn adv(&self, i: usize) -> &[f32] {
        &self.adv[i * self.dim..(i + 1) * self.dim]
    }

    pub(crate) fn set_adv(&mut self, i: usize, v: &[f32]) {
        self.adv[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
    }

    /// Finds a first adversarial point per sample: the input itself if already adversarial,
    /// else uniform noise in the box (up to `trials` draws), else the nearest other input of the
    /// batch whose class meets the sample's criterion.
    pub(crate) fn start(
        oracle: &mut Oracle<'_>,
        images: &Tensor<4>,
        input_box: &InputBox,
        trials: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, AttackError> {
        let x0 = input_box.check("images", images)?;
        let dim = oracle.dim;
        let batch = images.dims()[0];
        let all: Vec<usize> = (0..batch).collect();
        let predicted = oracle.classify(&all, &x0)?;
        let misclassified: Vec<bool> = predicted
            .iter()
            .enumerate()
            .map(|(i, &p)| oracle.criterion.is_adversarial(i, p))
            .collect();
        let mut search = Self {
            adv: x0.clone(),
            x0,
            found: misclassified.clone(),
            misclassified,
            dim,
        };
        let uniform = Uniform::new_inclusive(input_box.lower, input_box.upper).expect("valid box");
        for _ in 0..trials {
            let open: Vec<usize> = (0..batch)
                .filter(|&i| !search.found[i] && oracle.remaining(i) > 0)
                .collect();
            if open.is_empty() {
                break;
            }
            let noise: Vec<f32> = (0..open.len() * dim).map(|_| uniform.sample(rng)).collect();
            let hits = oracle.adversarial(&open, &noise)?;
            for (k, (&i, hit)) in open.iter().zip(hits).enumerate() {
                if hit {
                    search.set_adv(i, &noise[k * dim..(k + 1) * dim]);
                    search.found[i] = true;
                }
            }
        }
        // Other inputs of the batch whose class (known from the first query) meets this
        // sample's criterion: the nearest one is adversarial without another query.
        for i in 0..batch {
            if search.found[i] {
                continue;
            }
            let nearest = (0..batch)
                .filter(|&j| j != i && oracle.criterion.is_adversarial(i, predicted[j]))
                .map(|j| (Norm::L2.distance(search.x0(i), search.x0(j)), j))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, j)) = nearest {
                let point = search.x0(j).to_vec();
                search.set_adv(i, &point);
                search.found[i] = true;
            }
        }
        Ok(search)
    }

    /// Moves each listed sample's adversarial point towards its input by bisection on `t`
    /// (`towards`), until the bracket is narrower than `tolerance[i]` or the budget runs out.
    /// The point kept is always adversarial.
    pub(crate) fn bisect(
        &mut self,
        oracle: &mut Oracle<'_>,
        norm: Norm,
        samples: &[usize],
        tolerance: &[f32],
        input_box: &InputBox,
    ) -> Result<(), AttackError> {
        let dim = self.dim;
        let mut low = vec![0.0f32; samples.len()];
        let mut high = vec![1.0f32; samples.len()];
        let anchors: Vec<Vec<f32>> = samples.iter().map(|&i| self.adv(i).to_vec()).collect();
        let mut point = Vec::with_capacity(dim);
        loop {
            let open: Vec<usize> = (0..samples.len())
                .filter(|&k| high[k] - low[k] > tolerance[k] && oracle.remaining(samples[k]) > 0)
                .collect();
            if open.is_empty() {
                break;
            }
            let mut points = Vec::with_capacity(open.len() * dim);
            for &k in &open {
                let mid = 0.5 * (low[k] + high[k]);
                towards(norm, self.x0(samples[k]), &anchors[k], mid, &mut point);
                input_box.clip_host(&mut point);
                points.extend_from_slice(&point);
            }
            let owners: Vec<usize> = open.iter().map(|&k| samples[k]).collect();
            let hits = oracle.adversarial(&owners, &points)?;
            for (&k, hit) in open.iter().zip(hits) {
                let mid = 0.5 * (low[k] + high[k]);
                if hit {
                    high[k] = mid;
                } else {
                    low[k] = mid;
                }
            }
        }
        for (k, &i) in samples.iter().enumerate() {
            if high[k] < 1.0 {
                towards(norm, self.x0(i), &anchors[k], high[k], &mut point);
                input_box.clip_host(&mut point);
                self.set_adv(i, &point);
            }
        }
        Ok(())
    }

    /// Distance of each sample's adversarial point (∞ where none was found).
    pub(crate) fn distances(&self, norm: Norm) -> Vec<f64> {
        (0..self.batch())
            .map(|i| {
                if self.misclassified[i] {
                    0.0
                } else if self.found[i] {
                    norm.distance(self.adv(i), self.x0(i))
                } else {
                    f64::INFINITY
                }
            })
            .collect()
    }

    pub(crate) fn finish(
        self,
        oracle: &Oracle<'_>,
        images: &Tensor<4>,
        norm: Norm,
        initial_distances: Vec<f64>,
    ) -> MinimizationOutput {
        let distances = self.distances(norm);
        let batch = self.batch();
        let adversarial = oracle.to_tensor(self.adv, batch);
        let adversarial = crate::pgd::like(images, adversarial);
        MinimizationOutput {
            adversarial,
            success: self.found,
            distances,
            initial_distances,
            queries: oracle.queries.clone(),
            norm,
        }
    }
}

/// A standard normal draw.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rand_distr::StandardNormal.sample(rng)
}

/// A uniform draw in `[-1, 1]`.
pub(crate) fn symmetric(rng: &mut ChaCha8Rng) -> f32 {
    rng.random_range(-1.0f32..=1.0)
}
