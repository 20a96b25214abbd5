//! HopSkipJump (Chen, Jordan, Wainwright, "HopSkipJumpAttack: a query-efficient decision-based
//! attack", IEEE S&P 2020), batched over samples.

use burn::config::Config;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::bounds::{InputBox, Norm};
use crate::decision::{
    Criterion, MinimizationAttack, MinimizationOutput, Oracle, Search, check_decision_settings,
    normal, symmetric,
};
use crate::error::{AttackError, check_count, check_positive};
use crate::model::AttackModel;

/// Settings of [`HopSkipJump`] (defaults: foolbox's, with a query budget).
#[derive(Config, Debug)]
pub struct HopSkipJumpConfig {
    /// The norm minimised.
    #[config(default = "Norm::L2")]
    pub norm: Norm,
    /// Iterations (gradient estimate, geometric step, bisection).
    #[config(default = 64)]
    pub steps: usize,
    /// Gradient-estimation queries of the first iteration (they grow as `√t`).
    #[config(default = 100)]
    pub initial_gradient_queries: usize,
    /// Most gradient-estimation queries of one iteration.
    #[config(default = 10_000)]
    pub max_gradient_queries: usize,
    /// γ of the bisection tolerance `θ = γ / d^{3/2}` (L2) or `γ / d²` (L∞).
    #[config(default = 1.0)]
    pub gamma: f64,
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

impl HopSkipJumpConfig {
    /// Checks the settings and builds the attack.
    pub fn init(&self) -> Result<HopSkipJump, AttackError> {
        check_count("steps", self.steps)?;
        check_count("initial gradient queries", self.initial_gradient_queries)?;
        check_count("max gradient queries", self.max_gradient_queries)?;
        check_positive("gamma", self.gamma)?;
        check_decision_settings(
            self.query_budget,
            self.init_trials,
            self.max_batch,
            &self.input_box,
        )?;
        Ok(HopSkipJump {
            config: self.clone(),
        })
    }
}

/// The HopSkipJump attack; build it with [`HopSkipJumpConfig::init`].
///
/// Every iteration estimates the boundary's normal at the current point from the decisions at
/// random points around it (with a baseline), takes a geometric step along it and bisects back to
/// the boundary. All samples of the batch advance together and share model calls.
#[derive(Clone, Debug)]
pub struct HopSkipJump {
    config: HopSkipJumpConfig,
}

/// Queries reserved after a gradient estimate for the step search and bisection.
const RESERVE: usize = 40;
/// Most halvings of the geometric step search.
const MAX_HALVINGS: usize = 25;

impl MinimizationAttack for HopSkipJump {
    fn name(&self) -> String {
        format!("hopskipjump-{}", self.config.norm.name())
    }

    fn norm(&self) -> Norm {
        self.config.norm
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
        let d = oracle.dim as f64;
        let theta = match c.norm {
            Norm::L2 => c.gamma / d.powf(1.5),
            Norm::Linf => c.gamma / (d * d),
        };
        let live: Vec<usize> = (0..batch)
            .filter(|&i| search.found[i] && !search.misclassified[i])
            .collect();
        let tolerance = |search: &Search, i: usize| -> f32 {
            match c.norm {
                Norm::L2 => theta as f32,
                Norm::Linf => {
                    let radius = Norm::Linf.distance(search.adv(i), search.x0(i)) as f32;
                    (theta as f32).min(theta as f32 / radius.max(f32::MIN_POSITIVE))
                }
            }
        };
        let tol: Vec<f32> = live.iter().map(|&i| tolerance(&search, i)).collect();
        search.bisect(&mut oracle, c.norm, &live, &tol, &c.input_box)?;
        let initial = search.distances(c.norm);
        let mut best = search.adv.clone();
        let mut best_distance = initial.clone();
        let dim = oracle.dim;
        let width = c.input_box.width();

        let mut active = live;
        for t in 1..=c.steps {
            let evals = ((c.initial_gradient_queries as f64 * (t as f64).sqrt()) as usize)
                .min(c.max_gradient_queries);
            active.retain(|&i| oracle.remaining(i) >= evals + RESERVE);
            if active.is_empty() {
                break;
            }
            // Gradient estimate at the boundary point of every active sample.
            let mut owners = Vec::with_capacity(active.len() * evals);
            let mut points = Vec::with_capacity(active.len() * evals * dim);
            let mut directions = Vec::with_capacity(active.len() * evals * dim);
            let mut deltas = Vec::with_capacity(active.len());
            for &i in &active {
                let dist = Norm::distance(&c.norm, search.adv(i), search.x0(i));
                let delta = if t == 1 {
                    0.1 * width
                } else {
                    match c.norm {
                        Norm::L2 => (d.sqrt() * theta * dist) as f32,
                        Norm::Linf => (d * theta * dist) as f32,
                    }
                };
                deltas.push(delta);
                for _ in 0..evals {
                    let mut u: Vec<f32> = (0..dim)
                        .map(|_| match c.norm {
                            Norm::L2 => normal(&mut rng),
                            Norm::Linf => symmetric(&mut rng),
                        })
                        .collect();
                    let len = Norm::L2.of(u.iter().copied()).max(1e-12) as f32;
                    let start = points.len();
                    for (k, v) in u.iter_mut().enumerate() {
                        let p = (search.adv(i)[k] + delta * *v / len)
                            .clamp(c.input_box.lower, c.input_box.upper);
                        // The direction actually probed, after clipping.
                        *v = (p - search.adv(i)[k]) / delta;
                        points.push(p);
                    }
                    debug_assert_eq!(points.len() - start, dim);
                    directions.extend_from_slice(&u);
                    owners.push(i);
                }
            }
            let decisions = oracle.adversarial(&owners, &points)?;
            let mut updates = Vec::with_capacity(active.len() * dim);
            for (a, _) in active.iter().enumerate() {
                let phis: Vec<f32> = decisions[a * evals..(a + 1) * evals]
                    .iter()
                    .map(|&h| if h { 1.0 } else { -1.0 })
                    .collect();
                let mean = phis.iter().sum::<f32>() / evals as f32;
                let mut grad = vec![0.0f32; dim];
                for (e, phi) in phis.iter().enumerate() {
                    // Baseline: subtract the mean decision unless all decisions agree.
                    let weight = if mean.abs() == 1.0 { *phi } else { phi - mean };
                    let u = &directions[(a * evals + e) * dim..(a * evals + e + 1) * dim];
                    for (g, v) in grad.iter_mut().zip(u) {
                        *g += weight * v;
                    }
                }
                let len = Norm::L2.of(grad.iter().copied()).max(1e-12) as f32;
                updates.extend(grad.iter().map(|g| match c.norm {
                    Norm::L2 => g / len,
                    Norm::Linf => g.signum() * (g.abs() > 0.0) as i32 as f32,
                }));
            }
            // Geometric step search: halve until the step lands on the adversarial side.
            let mut steps: Vec<f32> = active
                .iter()
                .map(|&i| {
                    (Norm::distance(&c.norm, search.adv(i), search.x0(i)) / (t as f64).sqrt())
                        as f32
                })
                .collect();
            let mut landed = vec![false; active.len()];
            let mut candidates = vec![0.0f32; active.len() * dim];
            for _ in 0..MAX_HALVINGS {
                let open: Vec<usize> = (0..active.len())
                    .filter(|&a| !landed[a] && oracle.remaining(active[a]) > 0)
                    .collect();
                if open.is_empty() {
                    break;
                }
                let mut probe = Vec::with_capacity(open.len() * dim);
                for &a in &open {
                    let i = active[a];
                    let row = &mut candidates[a * dim..(a + 1) * dim];
                    for k in 0..dim {
                        row[k] = (search.adv(i)[k] + steps[a] * updates[a * dim + k])
                            .clamp(c.input_box.lower, c.input_box.upper);
                    }
                    probe.extend_from_slice(row);
                }
                let owners: Vec<usize> = open.iter().map(|&a| active[a]).collect();
                let hits = oracle.adversarial(&owners, &probe)?;
                for (&a, hit) in open.iter().zip(hits) {
                    if hit {
                        landed[a] = true;
                    } else {
                        steps[a] *= 0.5;
                    }
                }
            }
            let moved: Vec<usize> = (0..active.len()).filter(|&a| landed[a]).collect();
            for &a in &moved {
                let row = candidates[a * dim..(a + 1) * dim].to_vec();
                search.set_adv(active[a], &row);
            }
            let moved: Vec<usize> = moved.iter().map(|&a| active[a]).collect();
            let tol: Vec<f32> = moved.iter().map(|&i| tolerance(&search, i)).collect();
            search.bisect(&mut oracle, c.norm, &moved, &tol, &c.input_box)?;
            for &i in &moved {
                let dist = c.norm.distance(search.adv(i), search.x0(i));
                if dist < best_distance[i] {
                    best_distance[i] = dist;
                    best[i * dim..(i + 1) * dim].copy_from_slice(search.adv(i));
                }
            }
        }
        search.adv = best;
        Ok(search.finish(&oracle, images, c.norm, initial))
    }
}
