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

    /// Attacks `images` with true classes `labels`, using only the model's decisions.
    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
    ) -> Result<MinimizationOutput, AttackError>;
}

/// Answers "is this point adversarial for sample i?" in batches, counting queries per sample.
pub(crate) struct Oracle<'a> {
    model: &'a dyn AttackModel,
    labels: &'a [usize],
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
        labels: &'a [usize],
        budget: usize,
        max_batch: usize,
    ) -> Result<Self, AttackError> {
        let [batch, c, h, w] = images.dims();
        check_labels(labels, batch, model.outputs())?;
        Ok(Self {
            model,
            labels,
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

    /// Whether each point (row of `points`, owned by sample `owners[k]`) is misclassified.
    pub(crate) fn adversarial(
        &mut self,
        owners: &[usize],
        points: &[f32],
    ) -> Result<Vec<bool>, AttackError> {
        debug_assert_eq!(owners.len() * self.dim, points.len());
        let mut out = Vec::with_capacity(owners.len());
        let [c, h, w] = self.shape;
        for (chunk, rows) in owners
            .chunks(self.max_batch)
            .zip(points.chunks(self.max_batch * self.dim))
        {
            let batch = tensor(rows.to_vec(), [chunk.len(), c, h, w], &self.device);
            let predicted = predict(self.model, batch)?;
            for (&i, p) in chunk.iter().zip(predicted) {
                self.queries[i] += 1;
                out.push(p != self.labels[i]);
            }
        }
        Ok(out)
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
    /// Inputs misclassified before any perturbation.
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

    /// Finds a first adversarial point per sample: the input itself if misclassified, else
    /// uniform noise in the box (up to `trials` draws), else the nearest other input of the
    /// batch the model does not put in this sample's class.
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
        let misclassified = oracle.adversarial(&all, &x0)?;
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
        // Other inputs of the batch: their classes are known from the first query.
        let open: Vec<usize> = (0..batch)
            .filter(|&i| !search.found[i] && oracle.remaining(i) > 0)
            .collect();
        for i in open {
            let mut candidates: Vec<(f64, usize)> = (0..batch)
                .filter(|&j| j != i && oracle.labels[j] != oracle.labels[i])
                .map(|j| (Norm::L2.distance(search.x0(i), search.x0(j)), j))
                .collect();
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, j) in candidates.into_iter().take(4) {
                if oracle.remaining(i) == 0 {
                    break;
                }
                let point = search.x0(j).to_vec();
                if oracle.adversarial(&[i], &point)?[0] {
                    search.set_adv(i, &point);
                    search.found[i] = true;
                    break;
                }
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
        let adversarial = if images.is_autodiff() {
            adversarial.autodiff()
        } else {
            adversarial
        };
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
