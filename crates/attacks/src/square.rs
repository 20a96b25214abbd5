//! The Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): a score-based
//! black-box attack by random search. Each query changes one square window of the current best
//! point (vertical stripes of ±ε to start with, then squares whose area shrinks on a fixed
//! schedule); a change is kept when it lowers the margin `z_y − max_{j≠y} z_j`. It needs no
//! gradient, so it is the attack AutoAttack relies on to expose obfuscated gradients: a model
//! whose white-box robustness falls under Square has a backward that misleads.
//!
//! As the reference implementation (fra31/auto-attack) every sample of a batch tries the same
//! window position in a query, with its own signs; the L2 version moves mass between two
//! windows with the pyramid-shaped update of the paper.

use burn::config::Config;
use burn::tensor::Tensor;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::bounds::{InputBox, Norm, l2_norms};
use crate::error::{AttackError, check_epsilon, invalid};
use crate::model::{AttackModel, blend, check_labels, host, tensor};
use crate::pgd::{AttackOutput, BoundedAttack, like};
use crate::source::{GradientSource, mix};

/// Settings of [`Square`]; the defaults are AutoAttack's (5,000 queries, p_init 0.8, one
/// restart).
#[derive(Config, Debug)]
pub struct SquareConfig {
    /// Norm of the ε-ball.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Model evaluations per sample, all restarts and the initial check included.
    #[config(default = 5000)]
    pub queries: usize,
    /// Share of the image a square covers at the start (it shrinks on the paper's schedule).
    #[config(default = 0.8)]
    pub p_init: f64,
    /// Restarts on the samples still robust (they share the query budget).
    #[config(default = 1)]
    pub restarts: usize,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of every draw.
    #[config(default = 0)]
    pub seed: u64,
}

impl SquareConfig {
    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<Square, AttackError> {
        if self.queries < 2 {
            return Err(invalid(
                "queries",
                self.queries,
                "must be at least 2 (the clean check and the first point)",
            ));
        }
        crate::error::check_count("restarts", self.restarts)?;
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(invalid("p_init", self.p_init, "must lie in (0, 1]"));
        }
        InputBox::new(self.input_box.lower, self.input_box.upper)?;
        Ok(Square {
            config: self.clone(),
        })
    }
}

/// The Square Attack; build it with [`SquareConfig::init`].
///
/// It implements [`BoundedAttack`] so that suites can run it beside the gradient attacks; it
/// ignores the gradient source (reports list it as score-based).
#[derive(Clone, Debug)]
pub struct Square {
    config: SquareConfig,
}

/// The share of the image a square covers after `it` of `budget` iterations (the paper's
/// schedule for 10,000 queries, rescaled to the budget as AutoAttack does).
pub(crate) fn p_schedule(p_init: f64, it: usize, budget: usize) -> f64 {
    let it = (it as f64 / budget as f64 * 10_000.0) as usize;
    let halvings = match it {
        0..=10 => 0,
        11..=50 => 1,
        51..=200 => 2,
        201..=500 => 3,
        501..=1000 => 4,
        1001..=2000 => 5,
        2001..=4000 => 6,
        4001..=6000 => 7,
        6001..=8000 => 8,
        _ => 9,
    };
    p_init / f64::from(1u32 << halvings)
}

/// The L2 update's window pattern: `s × s`, positive on the top half and negative on the bottom
/// half, each a sum of nested rectangles weighted `1/(k+1)²`; unit Frobenius norm.
fn eta(s: usize, transpose: bool) -> Vec<f32> {
    fn rectangles(rows: usize, cols: usize) -> Vec<f32> {
        let mut d = vec![0.0f32; rows * cols];
        let (rc, cc) = (rows / 2 + 1, cols / 2 + 1);
        let (mut r0, mut c0) = (rc as isize - 1, cc as isize - 1);
        for k in 0..rc.max(cc) {
            let w = 1.0 / ((k + 1) * (k + 1)) as f32;
            let (r_lo, r_hi) = (
                r0.max(0) as usize,
                ((r0 + 2 * k as isize + 1).max(0) as usize).min(rows),
            );
            let (c_lo, c_hi) = (
                c0.max(0) as usize,
                ((c0 + 2 * k as isize + 1).max(0) as usize).min(cols),
            );
            for r in r_lo..r_hi {
                for c in c_lo..c_hi {
                    d[r * cols + c] += w;
                }
            }
            r0 -= 1;
            c0 -= 1;
        }
        let n = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        d.iter_mut().for_each(|v| *v /= n);
        d
    }
    let top = rectangles(s / 2, s);
    let bottom = rectangles(s - s / 2, s);
    let mut d: Vec<f32> = top
        .into_iter()
        .chain(bottom.into_iter().map(|v| -v))
        .collect();
    let n = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    d.iter_mut().for_each(|v| *v /= n);
    if transpose {
        let mut t = vec![0.0; s * s];
        for r in 0..s {
            for c in 0..s {
                t[c * s + r] = d[r * s + c];
            }
        }
        d = t;
    }
    d
}

/// Margins `z_y − max_{j≠y} z_j` and arg-max classes of host scores.
fn margins(scores: &[f32], classes: usize, labels: &[usize]) -> (Vec<f32>, Vec<usize>) {
    scores
        .chunks(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let other = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != y)
                .map(|(_, &v)| v)
                .fold(f32::NEG_INFINITY, f32::max);
            let predicted = crate::model::argmax_rows(row, classes)[0];
            (row[y] - other, predicted)
        })
        .unzip()
}

/// Per-channel L2 norms over the spatial axes, `[n, c, 1, 1]`.
fn spatial_norms(x: Tensor<4>) -> Tensor<4> {
    x.powi_scalar(2).sum_dim(3).sum_dim(2).sqrt()
}

/// ±1 per sample and channel, `[n, c, 1, 1]`.
fn signs(rng: &mut ChaCha8Rng, n: usize, c: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let v: Vec<f32> = (0..n * c)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    tensor(v, [n, c, 1, 1], device)
}

impl Square {
    /// The settings.
    pub fn config(&self) -> &SquareConfig {
        &self.config
    }

    /// The first point of a restart: vertical stripes of ±ε (L∞), or a 5×5 grid of the L2
    /// pattern with random signs scaled to radius ε (L2).
    fn start(&self, x0: &Tensor<4>, eps: f32, rng: &mut ChaCha8Rng) -> Tensor<4> {
        let [n, c, h, w] = x0.dims();
        let device = x0.device();
        let b = &self.config.input_box;
        match self.config.norm {
            Norm::Linf => {
                let v: Vec<f32> = (0..n * c * w)
                    .map(|_| if rng.random::<bool>() { eps } else { -eps })
                    .collect();
                b.clip(x0.clone() + tensor(v, [n, c, 1, w], &device))
            }
            Norm::L2 => {
                let s = (h / 5).max(1);
                let start = (h.saturating_sub(s * 5)) / 2;
                let mut delta = Tensor::<4>::zeros([n, c, h, w], &device);
                let mut vh = start;
                for _ in 0..h / s {
                    let mut vw = start;
                    for _ in 0..w / s {
                        if vh + s <= h && vw + s <= w {
                            let pattern =
                                tensor(eta(s, rng.random::<f64>() > 0.5), [1, 1, s, s], &device);
                            let window = [0..n, 0..c, vh..vh + s, vw..vw + s];
                            let old = delta.clone().slice(window.clone());
                            delta = delta
                                .slice_assign(window, old + pattern * signs(rng, n, c, &device));
                        }
                        vw += s;
                    }
                    vh += s;
                }
                let unit = delta.clone() / l2_norms(delta).add_scalar(1e-12);
                b.clip(x0.clone() + unit.mul_scalar(eps))
            }
        }
    }

    /// A candidate for every sample: the current best point with one window changed.
    fn candidate(
        &self,
        x0: &Tensor<4>,
        best: &Tensor<4>,
        eps: f32,
        p: f64,
        rng: &mut ChaCha8Rng,
    ) -> Tensor<4> {
        let [n, c, h, w] = x0.dims();
        let device = x0.device();
        let b = &self.config.input_box;
        let features = (c * h * w) as f64;
        let side = |min: usize| {
            ((p * features / c as f64).sqrt().round() as usize)
                .max(min)
                .min(h.min(w))
        };
        let position = |rng: &mut ChaCha8Rng, s: usize| {
            let mut span = |len: usize| {
                if len > s {
                    rng.random_range(0..len - s)
                } else {
                    0
                }
            };
            (span(h), span(w))
        };
        match self.config.norm {
            Norm::Linf => {
                let s = side(1);
                let (vh, vw) = position(rng, s);
                let window = [0..n, 0..c, vh..vh + s, vw..vw + s];
                let centre = x0.clone().slice(window.clone());
                let moved = best.clone().slice(window.clone())
                    + signs(rng, n, c, &device).mul_scalar(2.0 * eps);
                let moved = b.clip(
                    moved
                        .max_pair(centre.clone().sub_scalar(eps))
                        .min_pair(centre.add_scalar(eps)),
                );
                best.clone().slice_assign(window, moved)
            }
            Norm::L2 => {
                let mut s = side(3);
                if s % 2 == 0 {
                    s = if s < h.min(w) { s + 1 } else { s - 1 };
                }
                let (vh, vw) = position(rng, s);
                let (vh2, vw2) = position(rng, s);
                let w1 = [0..n, 0..c, vh..vh + s, vw..vw + s];
                let w2 = [0..n, 0..c, vh2..vh2 + s, vw2..vw2 + s];
                let delta = best.clone() - x0.clone();
                let norm_window1 = spatial_norms(delta.clone().slice(w1.clone()));
                let norm_image = l2_norms(delta.clone());
                // ‖δ‖ over the union of both windows.
                let mut mask = vec![0.0f32; h * w];
                for (r0, c0) in [(vh, vw), (vh2, vw2)] {
                    for r in r0..r0 + s {
                        for col in c0..c0 + s {
                            mask[r * w + col] = 1.0;
                        }
                    }
                }
                let norm_windows = l2_norms(delta.clone() * tensor(mask, [1, 1, h, w], &device));
                let pattern = tensor(eta(s, rng.random::<f64>() > 0.5), [1, 1, s, s], &device);
                let fresh = pattern * signs(rng, n, c, &device)
                    + delta.clone().slice(w1.clone()) / norm_window1.add_scalar(1e-12);
                let room = (norm_image
                    .powi_scalar(2)
                    .neg()
                    .add_scalar(eps * eps)
                    .clamp_min(0.0)
                    / c as f32
                    + norm_windows.powi_scalar(2))
                .sqrt();
                let fresh = fresh.clone() / spatial_norms(fresh).add_scalar(1e-12) * room;
                let delta = delta.slice_assign(w2, Tensor::zeros([n, c, s, s], &device));
                let delta = delta.slice_assign(w1, fresh);
                let unit = delta.clone() / l2_norms(delta).add_scalar(1e-12);
                b.clip(x0.clone() + unit.mul_scalar(eps))
            }
        }
    }
}

impl BoundedAttack for Square {
    fn name(&self) -> String {
        format!("square-{}", self.config.norm.name())
    }

    fn norm(&self) -> Norm {
        self.config.norm
    }

    fn needs_gradient(&self) -> bool {
        false
    }

    fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilon: f64,
        _source: &GradientSource<'_>,
    ) -> Result<AttackOutput, AttackError> {
        let c = &self.config;
        check_epsilon(epsilon)?;
        let [batch, ..] = images.dims();
        c.input_box.check("images", images)?;
        let classes = model.outputs();
        check_labels(labels, batch, classes)?;
        let x0 = images.clone().inner();
        let eps = epsilon as f32;
        let scores = |x: &Tensor<4>| -> Result<(Vec<f32>, Vec<usize>), AttackError> {
            let s = host(model.predict_scores(like(images, x.clone())))?;
            Ok(margins(&s, classes, labels))
        };
        let (mut margin, mut predicted) = scores(&x0)?;
        let mut queries = vec![1usize; batch];
        let mut best = x0.clone();
        if epsilon > 0.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(c.seed, 0));
            for _ in 0..c.restarts {
                let open: Vec<bool> = margin
                    .iter()
                    .zip(&queries)
                    .map(|(&m, &q)| m > 0.0 && q < c.queries)
                    .collect();
                if !open.iter().any(|&o| o) {
                    break;
                }
                // A restart's own best point, margin and loss (the margin is the loss).
                let mut x = self.start(&x0, eps, &mut rng);
                let (mut m, mut p) = scores(&x)?;
                for i in 0..batch {
                    if open[i] {
                        queries[i] += 1;
                    }
                }
                let budget = c.queries.saturating_sub(2) / c.restarts.max(1);
                for it in 0..budget {
                    let active: Vec<bool> = (0..batch)
                        .map(|i| open[i] && m[i] > 0.0 && queries[i] < c.queries)
                        .collect();
                    if !active.iter().any(|&a| a) {
                        break;
                    }
                    let candidate =
                        self.candidate(&x0, &x, eps, p_schedule(c.p_init, it, budget), &mut rng);
                    // Only the active samples are evaluated (and charged); the others keep
                    // their point.
                    let rows: Vec<usize> = (0..batch).filter(|&i| active[i]).collect();
                    let index = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
                        burn::tensor::TensorData::new(
                            rows.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                            [rows.len()],
                        ),
                        &x0.device(),
                    );
                    let sub_labels: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
                    let s = host(
                        model.predict_scores(like(images, candidate.clone().select(0, index))),
                    )?;
                    let (new_m, new_p) = margins(&s, classes, &sub_labels);
                    let mut keep = vec![false; batch];
                    for (k, &i) in rows.iter().enumerate() {
                        queries[i] += 1;
                        if new_m[k] < m[i] || new_m[k] <= 0.0 {
                            keep[i] = true;
                            m[i] = new_m[k];
                            p[i] = new_p[k];
                        }
                    }
                    x = blend(&keep, candidate, x);
                }
                // Adopt the restart's result where it broke the sample (or improved it).
                let adopt: Vec<bool> = (0..batch).map(|i| open[i] && m[i] < margin[i]).collect();
                for i in 0..batch {
                    if adopt[i] {
                        margin[i] = m[i];
                        predicted[i] = p[i];
                    }
                }
                best = blend(&adopt, x, best);
            }
        }
        // Judged as every attack judges: the prediction at the returned point (a margin of
        // exactly 0 stops the search but counts as broken only if the arg-max moved).
        let success = predicted.iter().zip(labels).map(|(p, y)| p != y).collect();
        Ok(AttackOutput {
            adversarial: like(images, best),
            success,
            predicted,
            queries,
            gradients: vec![0; batch],
        })
    }
}
