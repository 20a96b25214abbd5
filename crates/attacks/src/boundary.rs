//! The Boundary Attack (Brendel, Rauber, Bethge, "Decision-based adversarial attacks: reliable
//! attacks against black-box machine learning models", ICLR 2018), batched over samples.

use std::collections::VecDeque;

use burn::config::Config;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::bounds::{InputBox, Norm};
use crate::decision::{
    Criterion, MinimizationAttack, MinimizationOutput, Oracle, Search, check_decision_settings,
    normal,
};
use crate::error::{AttackError, check_count, check_positive, invalid};
use crate::model::AttackModel;

/// Settings of [`BoundaryAttack`] (step sizes and adaptation: foolbox's defaults).
#[derive(Config, Debug)]
pub struct BoundaryAttackConfig {
    /// Most iterations (each costs two queries per sample).
    #[config(default = 5000)]
    pub steps: usize,
    /// Initial orthogonal (spherical) step, relative to the current distance.
    #[config(default = 0.01)]
    pub spherical_step: f64,
    /// Initial step towards the input, relative to the current distance.
    #[config(default = 0.01)]
    pub source_step: f64,
    /// A sample stops once its source step falls below this.
    #[config(default = 1e-7)]
    pub source_step_convergence: f64,
    /// Factor by which the steps grow or shrink.
    #[config(default = 1.5)]
    pub step_adaptation: f64,
    /// Adapt the steps every this many iterations.
    #[config(default = 10)]
    pub update_stats_every: usize,
    /// Most model evaluations per sample, first adversarial search included.
    #[config(default = 10_000)]
    pub query_budget: usize,
    /// Uniform-noise draws tried for the first adversarial point.
    #[config(default = 50)]
    pub init_trials: usize,
    /// Most images per model call.
    #[config(default = 1024)]
    pub max_batch: usize,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of all random draws.
    #[config(default = 0)]
    pub seed: u64,
}

impl BoundaryAttackConfig {
    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<BoundaryAttack, AttackError> {
        check_count("steps", self.steps)?;
        check_count("update stats every", self.update_stats_every)?;
        check_decision_settings(
            self.query_budget,
            self.init_trials,
            self.max_batch,
            &self.input_box,
        )?;
        check_positive("spherical step", self.spherical_step)?;
        check_positive("source step", self.source_step)?;
        check_positive("source step convergence", self.source_step_convergence)?;
        if !(self.step_adaptation.is_finite() && self.step_adaptation > 1.0) {
            return Err(invalid(
                "step adaptation",
                self.step_adaptation,
                "must be > 1",
            ));
        }
        Ok(BoundaryAttack {
            config: self.clone(),
        })
    }
}

/// The Boundary Attack (L2); build it with [`BoundaryAttackConfig::init`].
///
/// From an adversarial start it walks along the decision boundary: a random step orthogonal to
/// the direction of the input (on the sphere around it), then a step towards the input, kept
/// when the result is still adversarial. Step sizes adapt to the recent success rates of both
/// moves.
#[derive(Clone, Debug)]
pub struct BoundaryAttack {
    config: BoundaryAttackConfig,
}

/// Recent outcomes of one kind of move.
struct Stats {
    outcomes: VecDeque<bool>,
    capacity: usize,
}

impl Stats {
    fn new(capacity: usize) -> Self {
        Self {
            outcomes: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn push(&mut self, ok: bool) {
        if self.outcomes.len() == self.capacity {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(ok);
    }

    /// Success rate once the window is full.
    fn rate(&self) -> Option<f64> {
        (self.outcomes.len() == self.capacity)
            .then(|| self.outcomes.iter().filter(|o| **o).count() as f64 / self.capacity as f64)
    }
}

struct Walker {
    spherical_step: f64,
    source_step: f64,
    spherical: Stats,
    step: Stats,
}

impl MinimizationAttack for BoundaryAttack {
    fn name(&self) -> String {
        "boundary-l2".into()
    }

    fn norm(&self) -> Norm {
        Norm::L2
    }

    fn run_with(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        criterion: Criterion<'_>,
    ) -> Result<MinimizationOutput, AttackError> {
        let c = &self.config;
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
        let mut oracle = Oracle::new(model, images, criterion, c.query_budget, c.max_batch)?;
        let mut search = Search::start(&mut oracle, images, &c.input_box, c.init_trials, &mut rng)?;
        let batch = search.batch();
        let dim = oracle.dim;
        let mut active: Vec<usize> = (0..batch)
            .filter(|&i| search.found[i] && !search.misclassified[i])
            .collect();
        // Start on the boundary, as foolbox's blended-noise initialisation does.
        let tol = vec![1e-3f32; active.len()];
        search.bisect(&mut oracle, Norm::L2, &active, &tol, &c.input_box)?;
        let initial = search.distances(Norm::L2);
        let mut walkers: Vec<Walker> = (0..batch)
            .map(|_| Walker {
                spherical_step: c.spherical_step,
                source_step: c.source_step,
                spherical: Stats::new(100),
                step: Stats::new(30),
            })
            .collect();
        let factor = c.step_adaptation;

        for t in 1..=c.steps {
            active.retain(|&i| {
                oracle.remaining(i) >= 2 && walkers[i].source_step >= c.source_step_convergence
            });
            if active.is_empty() {
                break;
            }
            let mut points = Vec::with_capacity(2 * active.len() * dim);
            let mut owners = Vec::with_capacity(2 * active.len());
            for &i in &active {
                let (x0, x) = (search.x0(i), search.adv(i));
                let w = &walkers[i];
                let source: Vec<f32> = x0.iter().zip(x).map(|(a, b)| a - b).collect();
                let source_norm = Norm::L2.of(source.iter().copied());
                // A Gaussian step, orthogonal to the source direction, of the spherical length.
                let mut eta: Vec<f32> = (0..dim).map(|_| normal(&mut rng)).collect();
                let sn2 = source_norm * source_norm;
                if sn2 > 0.0 {
                    let dot: f64 = eta.iter().zip(&source).map(|(e, s)| f64::from(e * s)).sum();
                    for (e, s) in eta.iter_mut().zip(&source) {
                        *e -= (dot / sn2) as f32 * s;
                    }
                }
                let eta_norm = Norm::L2.of(eta.iter().copied()).max(1e-12);
                let scale = (w.spherical_step * source_norm / eta_norm) as f32;
                // Back onto the sphere of radius ‖x0 − x‖ around x0.
                let moved: Vec<f32> = x.iter().zip(&eta).map(|(a, e)| a + scale * e).collect();
                let dir: Vec<f32> = x0.iter().zip(&moved).map(|(a, b)| a - b).collect();
                let dir_norm = Norm::L2.of(dir.iter().copied()).max(1e-12);
                let spherical: Vec<f32> = x0
                    .iter()
                    .zip(&dir)
                    .map(|(a, d)| a - (source_norm / dir_norm) as f32 * d)
                    .collect();
                // Then a step of `source_step · ‖x0 − x‖` towards x0.
                let new_dir: Vec<f32> = x0.iter().zip(&spherical).map(|(a, b)| a - b).collect();
                let new_norm = Norm::L2.of(new_dir.iter().copied()).max(1e-12);
                let length =
                    (w.source_step * source_norm + (new_norm - source_norm)).max(0.0) / new_norm;
                let mut candidate: Vec<f32> = spherical
                    .iter()
                    .zip(&new_dir)
                    .map(|(s, d)| s + length as f32 * d)
                    .collect();
                let mut spherical = spherical;
                c.input_box.clip_host(&mut spherical);
                c.input_box.clip_host(&mut candidate);
                points.extend_from_slice(&spherical);
                points.extend_from_slice(&candidate);
                owners.push(i);
                owners.push(i);
            }
            let hits = oracle.adversarial(&owners, &points)?;
            for (a, &i) in active.iter().enumerate() {
                let (spherical_ok, step_ok) = (hits[2 * a], hits[2 * a + 1]);
                let candidate = &points[(2 * a + 1) * dim..(2 * a + 2) * dim];
                let closer = Norm::L2.distance(candidate, search.x0(i))
                    < Norm::L2.distance(search.adv(i), search.x0(i));
                if step_ok && closer {
                    let candidate = candidate.to_vec();
                    search.set_adv(i, &candidate);
                }
                let w = &mut walkers[i];
                w.spherical.push(spherical_ok);
                if spherical_ok {
                    w.step.push(step_ok);
                }
                if t % c.update_stats_every == 0 {
                    if let Some(p) = w.spherical.rate() {
                        if p > 0.5 {
                            w.spherical_step *= factor;
                            w.source_step *= factor;
                        } else if p < 0.2 {
                            w.spherical_step /= factor;
                            w.source_step /= factor;
                        }
                        w.spherical.outcomes.clear();
                    }
                    if let Some(p) = w.step.rate() {
                        if p > 0.25 {
                            w.source_step *= factor;
                        } else if p < 0.1 {
                            w.source_step /= factor;
                        }
                        w.step.outcomes.clear();
                    }
                }
            }
        }
        Ok(search.finish(&oracle, images, Norm::L2, initial))
    }
}
