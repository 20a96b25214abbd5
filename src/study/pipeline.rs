//! The pieces every experiment is configured from: a training [`Method`] (a rule and the terms
//! of its objective) and one training function for all of them ([`train_method`], checkpointed
//! and resumable); the one evaluation is [`evaluate`](super::evaluation::evaluate), whose rows
//! carry typed keys. An experiment is a list of methods and the evaluation it asks for.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use signsym_attacks::{
    AdversarialForm, AdversarialTerm, PgdConfig, SourceKind, StepSize, SymmetryTerm,
};
use signsym_feedback::random::with_device_seed;
use signsym_feedback::{FeedbackModule, FeedbackRule};
use signsym_losses::{CrossEntropyConfig, SpectralRegularizerConfig};
use signsym_metrics::{JacobianConfig, activation_spectrum, fit_power_law, jacobian_frobenius};
use signsym_models::{
    Backbone, EpochStats, FineTuneConfig, JacobianTerm, L2Term, ModelError, Network,
    SpectralLayers, SpectralTerm, Task, Term, fine_tune_with,
};

use super::datasets::{ClassBatches, Images, InputView};
use super::error::{StudyError, invalid};
use super::evaluation::Measure;
use super::keys::Metric;
use super::output::ResultRow;

/// A term of a method's objective, as settings (what a run's `settings.json` records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TermSpec {
    /// PGD adversarial training ([`AdversarialTerm`]) at budget ε (L∞), `steps` steps of
    /// `2.5 ε / steps` from a random start, through `source`, in Madry's form or TRADES'
    /// (β).
    Adversarial {
        /// ε.
        epsilon: f64,
        /// PGD steps.
        steps: usize,
        /// `None`: Madry; `Some(β)`: TRADES.
        trades_beta: Option<f64>,
        /// `exact` or `feedback`.
        source: SourceKind,
    },
    /// Sy-FAR's symmetry penalty λ_sym on the adversarial logits.
    Symmetry {
        /// λ_sym.
        lambda: f64,
    },
    /// The spectral penalty γ over hidden or all layers.
    Spectral {
        /// γ.
        gamma: f64,
        /// Which layers.
        layers: SpectralLayers,
    },
    /// The Jacobian penalty λ of the features.
    Jacobian {
        /// λ.
        lambda: f64,
    },
    /// L2 on the weights, λ.
    L2 {
        /// λ.
        lambda: f64,
    },
}

impl TermSpec {
    /// The term, for a network with `classes` outputs.
    pub fn build<M: Backbone>(
        &self,
        classes: usize,
        seed: u64,
    ) -> Result<Box<dyn Term<M, Tensor<1, Int>>>, StudyError> {
        let attack_error = |e: signsym_attacks::AttackError| StudyError::from(e);
        Ok(match *self {
            Self::Adversarial {
                epsilon,
                steps,
                trades_beta,
                source,
            } => {
                let step = StepSize::Relative(2.5 / steps.max(1) as f64);
                let pgd = PgdConfig::new()
                    .with_steps(steps)
                    .with_step_size(step)
                    .with_random_start(true)
                    .with_seed(seed)
                    .init()
                    .map_err(attack_error)?;
                let form = match trades_beta {
                    None => AdversarialForm::Madry,
                    Some(beta) => AdversarialForm::Trades { beta },
                };
                Box::new(
                    AdversarialTerm::new(Box::new(pgd), epsilon, source, form, 1.0)
                        .and_then(|t| t.with_trades_crafting(steps, step))
                        .map_err(attack_error)?,
                )
            }
            Self::Symmetry { lambda } => Box::new(SymmetryTerm::new(classes, lambda)?),
            Self::Spectral { gamma, layers } => {
                Box::new(SpectralTerm::new(gamma, layers, 1, seed)?)
            }
            Self::Jacobian { lambda } => Box::new(JacobianTerm::new(lambda, 1, 1e-2)?),
            Self::L2 { lambda } => Box::new(L2Term::new(lambda)?),
        })
    }
}

/// BP with no penalty (named `plain`), then with L2 (λ), the Jacobian penalty (λ) and the
/// hidden-layer spectral penalty (γ), named `<prefix>l2 λ=…` and so on: the comparison of
/// arXiv 2405.00679, used by `regularizer_comparison` and `local_learning_robustness`.
pub fn regularized_methods(
    plain: &str,
    prefix: &str,
    l2: f64,
    jacobian: f64,
    spectral: f64,
) -> Vec<Method> {
    let named = |name: String, term: TermSpec| {
        let mut m = Method::standard(&name, FeedbackRule::Bp).with_term(term);
        m.name = name;
        m
    };
    let short = super::experiments::short;
    vec![
        Method::standard(plain, FeedbackRule::Bp),
        named(
            format!("{prefix}l2 λ={}", short(l2)),
            TermSpec::L2 { lambda: l2 },
        ),
        named(
            format!("{prefix}jacobian λ={}", short(jacobian)),
            TermSpec::Jacobian { lambda: jacobian },
        ),
        named(
            format!("{prefix}spectral γ={}", short(spectral)),
            TermSpec::Spectral {
                gamma: spectral,
                layers: SpectralLayers::Hidden,
            },
        ),
    ]
}

/// A way to train: the rule and the objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// The name the results carry (`standard`, `pgd-at`, `sy-far λ=0.5`, …).
    pub name: String,
    /// The rule of every layer.
    pub rule: FeedbackRule,
    /// Weight of the clean task loss (0 for Madry's adversarial training).
    pub task_weight: f64,
    /// The other terms.
    pub terms: Vec<TermSpec>,
}

impl Method {
    /// Cross-entropy alone.
    pub fn standard(name: &str, rule: FeedbackRule) -> Self {
        Self {
            name: name.into(),
            rule,
            task_weight: 1.0,
            terms: Vec::new(),
        }
    }

    /// This method with one more term.
    pub fn with_term(mut self, term: TermSpec) -> Self {
        self.terms.push(term);
        self
    }

    /// This method with the task loss weighted `weight`.
    pub fn with_task_weight(mut self, weight: f64) -> Self {
        self.task_weight = weight;
        self
    }

    /// A name safe for a directory.
    pub fn slug(&self) -> String {
        let clean: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}-{clean}", self.rule)
    }
}

/// The optimiser settings shared by an experiment's trainings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// Learning rate of the backbone (0 trains the head alone: a linear probe).
    pub backbone_lr: f64,
    /// Learning rate of the head.
    pub head_lr: f64,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam's coupled weight decay.
    pub weight_decay: f64,
    /// Seed of every draw.
    pub seed: u64,
    /// Progress bars.
    pub progress: bool,
}

/// Trains a copy of `start` by `method` on `train` (seen through `view`), with a new
/// classification head when `new_head`; the checkpoint under `dir` makes it resumable and
/// lets a finished training be loaded instead of redone.
#[allow(clippy::too_many_arguments)]
pub fn train_method<M: Backbone>(
    start: &Network<M>,
    new_head: bool,
    method: &Method,
    train: &Images,
    view: &InputView,
    training: &Training,
    dir: PathBuf,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Network<M>, Vec<EpochStats>), StudyError> {
    let classes = train.num_classes();
    let mut terms = method
        .terms
        .iter()
        .map(|t| t.build::<M>(classes, training.seed))
        .collect::<Result<Vec<_>, _>>()?;
    let config = FineTuneConfig::new()
        .with_rule(Some(method.rule))
        .with_task_weight(method.task_weight)
        .with_backbone_lr(training.backbone_lr)
        .with_head_lr(training.head_lr)
        .with_epochs(training.epochs)
        .with_batch_size(training.batch_size)
        .with_weight_decay(training.weight_decay)
        .with_seed(training.seed)
        .with_progress(training.progress)
        .with_checkpoint_dir(Some(dir.clone()));
    let device = start.device()?;
    let ce = CrossEntropyConfig::new().init(&device)?;
    let (network, _, history) = train_network(
        start,
        new_head.then_some(Task::classification(classes)),
        ce,
        &mut terms,
        &ClassBatches {
            images: train,
            view,
        },
        &config,
        stop,
    )?;
    Ok((network, history))
}

/// The one training function of every study: a copy of `start` (with a new head for `task`,
/// drawn from `config.seed ^ 0x5eed`, when given) trained by `objective` plus `terms` on
/// `batches` under `config`, whose checkpoint directory makes it resumable. Returns the network,
/// the trained objective (HyP²'s proxies) and the epochs.
pub fn train_network<M, L, D>(
    start: &Network<M>,
    task: Option<Task>,
    objective: L,
    terms: &mut [Box<dyn Term<M, L::Target> + '_>],
    batches: &D,
    config: &FineTuneConfig,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Network<M>, L, Vec<EpochStats>), StudyError>
where
    M: Backbone,
    L: signsym_models::Objective,
    L::Target: Clone,
    D: signsym_models::BatchSource<Target = L::Target>,
{
    let device = start.device()?;
    let net = match task {
        Some(task) => with_device_seed(&device, config.seed ^ 0x5eed, || {
            Network::new(start.duplicate().backbone, task, &device)
        })?,
        None => start.duplicate(),
    };
    let dir = config.checkpoint_dir.clone().unwrap_or_default();
    let tuned = fine_tune_with(net, objective, terms, batches, None, config, stop).map_err(
        |e| match e {
            ModelError::Interrupted { .. } => StudyError::Interrupted { out: dir },
            other => other.into(),
        },
    )?;
    Ok((tuned.network, tuned.objective, tuned.history))
}

/// The random directions of [`Evaluation::noise_norms`](super::evaluation::Evaluation::noise_norms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseKind {
    /// A standard normal vector, rescaled to the norm.
    Gaussian,
    /// A vector uniform in the cube `[−1, 1]^d`, rescaled to the norm.
    Uniform,
}

impl NoiseKind {
    /// The name rows carry as their attack.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian-noise-l2",
            Self::Uniform => "uniform-noise-l2",
        }
    }
}

/// `images + δ` clamped to `[0, 1]`, with one random direction `δ` of L2 norm `norm` per image,
/// drawn from `seed`.
pub fn add_noise(
    images: &Tensor<4>,
    kind: NoiseKind,
    norm: f64,
    seed: u64,
) -> Result<Tensor<4>, StudyError> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal, Uniform};
    let dims = images.dims();
    let per = dims[1] * dims[2] * dims[3];
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    let uniform =
        Uniform::new_inclusive(-1.0f32, 1.0).map_err(|e| invalid("noise", e, "no range"))?;
    let mut x = host(images.clone(), "images")?;
    for image in x.chunks_mut(per) {
        let delta: Vec<f32> = (0..per)
            .map(|_| match kind {
                NoiseKind::Gaussian => StandardNormal.sample(&mut rng),
                NoiseKind::Uniform => uniform.sample(&mut rng),
            })
            .collect();
        let length = delta
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = if length > 0.0 {
            (norm / length) as f32
        } else {
            0.0
        };
        for (v, d) in image.iter_mut().zip(delta) {
            *v = (*v + d * scale).clamp(0.0, 1.0);
        }
    }
    Ok(tensor4(x, dims, images))
}

/// The identity every row of one evaluated network carries.
#[derive(Clone, Debug)]
pub struct RowBase {
    /// The backbone's name.
    pub backbone: String,
    /// The data set's name.
    pub dataset: String,
    /// The rule.
    pub rule: FeedbackRule,
    /// The method's name.
    pub setting: String,
}

impl RowBase {
    /// A clean row of `metric` for this network.
    pub fn row(&self, metric: Metric, value: f64, samples: usize) -> ResultRow {
        ResultRow::clean(
            &self.backbone,
            &self.dataset,
            &self.rule.to_string(),
            metric,
            value,
            samples,
        )
        .with_setting(&self.setting)
    }
}

/// Ranks of the covariance spectrum the power law is fitted over: from the 2nd to a quarter of
/// the available ranks (the first is the mean direction's, the tail is noise at these sizes).
pub fn fit_range(len: usize) -> (usize, usize) {
    (2, (len / 4).max(3).min(len))
}

/// The power law fitted to a spectrum over [`fit_range`] of its positive eigenvalues, with the
/// `ranks a-b, r² c` detail rows carry; `None` when too few eigenvalues are positive.
pub fn power_law(
    spectrum: &[f64],
) -> Result<Option<(signsym_metrics::PowerLawFit, String)>, StudyError> {
    let positive = spectrum.iter().take_while(|&&v| v > 1e-12).count();
    let (first, last) = fit_range(positive);
    if last <= first {
        return Ok(None);
    }
    let fit = fit_power_law(spectrum, first, last)?;
    let detail = format!("ranks {first}-{last}, r² {:.3}", fit.r_squared);
    Ok(Some((fit, detail)))
}

/// `(log10 n, log10 λ_n)` of the positive eigenvalues, for log–log plots of spectra.
pub fn log_log(spectrum: &[f64]) -> Vec<(f64, f64)> {
    spectrum
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 1e-12)
        .map(|(i, v)| (((i + 1) as f64).log10(), v.log10()))
        .collect()
}

/// The features' Jacobian norm and spectrum exponent on `images`, and σ_max of every layer.
pub(crate) fn representation<M: Backbone>(
    network: &Network<M>,
    images: &Tensor<4>,
    seed: u64,
) -> Result<Vec<Measure>, StudyError> {
    let mut measures = Vec::new();
    let model = signsym_models::eval_mode(network.duplicate());
    let n = images.dims()[0];
    let backbone = &model.backbone;
    let mut total = 0.0;
    for start in (0..n).step_by(100) {
        let x = images.clone().slice(start..(start + 100).min(n));
        let norm = jacobian_frobenius(
            x,
            |x| backbone.features(x),
            &JacobianConfig::new().with_projections(8).with_seed(seed),
        )?;
        total += norm.per_sample.iter().sum::<f64>();
    }
    measures.push(Measure::new(Metric::JacobianNorm, total / n as f64, n, ""));
    let features = model.valid().backbone.features(images.clone().inner());
    let dim = features.dims()[1];
    let values = features
        .try_to_vec_as::<f32>()
        .map_err(|e| invalid("features", format!("{e:?}"), "unreadable"))?;
    let spectrum = activation_spectrum(&values, n, dim)?;
    if let Some((fit, detail)) = power_law(&spectrum)? {
        measures.push(Measure::new(Metric::PowerLawAlpha, fit.alpha, n, &detail));
    }
    let mut sigma = SpectralRegularizerConfig::new()
        .with_power_iterations(50)
        .with_skip_last(false)
        .init()?;
    let mut weights = Vec::new();
    network.visit_feedback("", &mut |path, layer| {
        weights.push((path.to_string(), layer.weight_matrix().detach()));
    });
    for (path, w) in weights {
        let s = sigma.sigma_max(&path, w).into_scalar::<f32>();
        measures.push(Measure::new(Metric::SigmaMax, f64::from(s), 1, &path));
    }
    Ok(measures)
}

/// The covariance spectrum of the features of `images` (eigenvalues, descending), for
/// log–log plots.
pub fn feature_spectrum<M: Backbone>(
    network: &Network<M>,
    images: &Tensor<4>,
) -> Result<Vec<f64>, StudyError> {
    let model = network.valid();
    let features = model.backbone.features(images.clone().inner());
    let [n, dim] = features.dims();
    let values = features
        .try_to_vec_as::<f32>()
        .map_err(|e| invalid("features", format!("{e:?}"), "unreadable"))?;
    Ok(activation_spectrum(&values, n, dim)?)
}

/// The covariance spectrum of the raw pixels of `images`.
pub fn pixel_spectrum(images: &Tensor<4>) -> Result<Vec<f64>, StudyError> {
    let [n, c, h, w] = images.dims();
    let values = images
        .clone()
        .inner()
        .try_to_vec_as::<f32>()
        .map_err(|e| invalid("pixels", format!("{e:?}"), "unreadable"))?;
    Ok(activation_spectrum(&values, n, c * h * w)?)
}

/// Rows' values by `(setting, rule)` for one metric and ε, for tables.
pub fn value_of(
    rows: &[ResultRow],
    rule: FeedbackRule,
    setting: &str,
    metric: Metric,
    epsilon: Option<f64>,
    detail: &str,
) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r.rule == rule.to_string()
                && r.setting == setting
                && r.metric == metric
                && epsilon.is_none_or(|e| r.epsilon == e)
                && r.detail == detail
        })
        .map(|r| r.value)
}

/// `[n, c]`-scores host copy of tensor data, or an error naming `what`.
pub fn host<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, StudyError> {
    t.try_to_vec_as::<f32>()
        .map_err(|e| invalid("tensor", format!("{what}: {e:?}"), "unreadable"))
}

/// A `[n, c, h, w]` tensor from host values (for the noise evaluation).
pub fn tensor4(values: Vec<f32>, dims: [usize; 4], like: &Tensor<4>) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, dims), &like.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Away from the box's edges the perturbation has exactly the asked L2 norm, per image, for
    /// both kinds; the same seed gives the same noise and another seed other noise.
    #[test]
    fn noise_has_the_asked_norm_and_follows_the_seed() {
        let device = burn::tensor::Device::flex();
        let x = Tensor::<4>::full([3, 1, 8, 8], 0.5, &device);
        for kind in [NoiseKind::Gaussian, NoiseKind::Uniform] {
            let noisy = add_noise(&x, kind, 0.5, 7).unwrap();
            let delta = host(noisy.clone() - x.clone(), "delta").unwrap();
            for image in delta.chunks(64) {
                let norm = image
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!((norm - 0.5).abs() < 1e-4, "{kind:?}: {norm}");
                // Per-pixel changes stay far below 0.5, so nothing was clamped.
                assert!(image.iter().all(|v| v.abs() < 0.5));
            }
            let again = host(add_noise(&x, kind, 0.5, 7).unwrap(), "again").unwrap();
            assert_eq!(again, host(noisy, "noisy").unwrap());
            let other = host(add_noise(&x, kind, 0.5, 8).unwrap(), "other").unwrap();
            assert_ne!(other, again);
        }
        // Clamping to [0, 1] can only shorten the perturbation.
        let edge = Tensor::<4>::full([2, 1, 8, 8], 1.0, &device);
        let clipped = host(
            add_noise(&edge, NoiseKind::Gaussian, 4.0, 1).unwrap(),
            "clipped",
        )
        .unwrap();
        assert!(clipped.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
