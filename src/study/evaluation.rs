//! The one evaluation of every study: clean accuracy, then a list of attacks, each with its
//! gradient source, on one shard of the attacked images, kept as per-sample outcomes that merge
//! into the rows of the unsharded run.
//!
//! An [`Evaluation`] says what to measure: the threat model (norm, budgets ε), the attack
//! entries ([`EntrySpec`]: an [`AttackSpec`] with a [`SourceChoice`], optionally on the first
//! images only), random-noise accuracy, the fairness of the adversarial confusion matrix, the
//! feedback/exact gradient cosine and the representation measures. [`evaluate`] runs it on a
//! [`Shard`] of the attacked images and returns an [`EvaluationPart`]; [`EvaluationPart::merge`]
//! joins the parts of shards `1/N … N/N` into the part of the whole run, from which
//! [`EvaluationPart::rows`] writes the result rows. Attacks run in batches of
//! [`Evaluation::attack_batch`] that start where the unsharded run's batches start, so a
//! shard's draws and outcomes are the unsharded run's and the merged rows equal its rows.

use std::ops::Range;

use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use signsym_attacks::{
    AttackModel, AutoAttackConfig, BoundaryAttackConfig, BoundedAttack, EntryReport, Fgsm,
    GradientAlignment, GradientSource, HopSkipJumpConfig, InputBox, MinimizationAttack, Norm,
    ObfuscationFlag, PgdConfig, RobustnessSuite, SourceKind, StepSize, attack_mode, entry_label,
    gradient_alignment, merge_entries, min_norm_per_sample, predict,
};
use signsym_feedback::random::RandomScope;
use signsym_metrics::{ConfusionMatrix, RobustMetric, RobustnessCurve, wilson_interval};
use signsym_models::{Backbone, Network};

use super::datasets::{Images, InputView, ViewedModel, accuracy, subset_seed};
use super::error::{StudyError, invalid};
use super::keys::Metric;
use super::output::ResultRow;
use super::pipeline::{NoiseKind, RowBase, add_noise, representation};
use super::shard::{Shard, obfuscation};

/// A gradient source by name (`feedback`, `exact`, or `transfer` from the BP fine-tuned model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceChoice {
    /// [`GradientSource::Feedback`]: the model's own backward.
    Feedback,
    /// [`GradientSource::Exact`]: BP's gradient of the same weights.
    Exact,
    /// [`GradientSource::Transfer`] from a surrogate (the BP fine-tuned network in the studies).
    Transfer,
}

impl SourceChoice {
    /// The gradient source; `surrogate` serves [`Transfer`](Self::Transfer).
    pub fn source<'a>(
        self,
        surrogate: Option<&'a dyn AttackModel>,
    ) -> Result<GradientSource<'a>, StudyError> {
        Ok(match self {
            Self::Feedback => GradientSource::Feedback,
            Self::Exact => GradientSource::Exact,
            Self::Transfer => GradientSource::Transfer(
                surrogate
                    .ok_or_else(|| invalid("sources", "transfer", "needs bp among the rules"))?,
            ),
        })
    }
}

/// An attack of an [`Evaluation`], in the evaluation's norm unless it names its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackSpec {
    /// FGSM: one signed gradient step of ε.
    Fgsm,
    /// PGD: `steps` steps of ε/3 from the input (the paper's), or, with `random_start`,
    /// `steps` steps of `2.5 ε / steps` from a random point of the ε-ball (Madry's).
    Pgd {
        /// Steps.
        steps: usize,
        /// Madry's random start and step size instead of the paper's.
        random_start: bool,
    },
    /// HopSkipJump (decision-based): the smallest adversarial it finds within `queries` model
    /// calls per image, in `norm`. In the evaluation's norm its rows are a robustness curve;
    /// in another, each image's smallest distance.
    HopSkipJump {
        /// The norm the distance is measured in.
        norm: Norm,
        /// Model calls per image.
        queries: usize,
    },
    /// The Boundary Attack (decision-based, L2), as [`HopSkipJump`](Self::HopSkipJump).
    Boundary {
        /// Model calls per image.
        queries: usize,
    },
    /// AutoAttack (standard), reduced: APGD with `steps` iterations, APGD-T with `targets`
    /// runner-up classes, Square with `queries` queries. Run batch by batch: it attacks the
    /// images still robust after each stage together.
    AutoAttack {
        /// APGD iterations (the reference suite: 100).
        steps: usize,
        /// APGD-T's runner-up classes (the reference suite: 9).
        targets: usize,
        /// Square's queries per image (the reference suite: 5,000).
        queries: usize,
    },
}

/// An [`AttackSpec`] made ready to run.
enum Built {
    Bounded(Box<dyn BoundedAttack>),
    Decision(Box<dyn MinimizationAttack>),
    Auto(signsym_attacks::AutoAttack),
}

impl AttackSpec {
    fn build(&self, norm: Norm, seed: u64) -> Result<Built, StudyError> {
        Ok(match *self {
            Self::Fgsm => Built::Bounded(Box::new(Fgsm::new(InputBox::new(0.0, 1.0)?)?)),
            Self::Pgd {
                steps,
                random_start: false,
            } => Built::Bounded(Box::new(
                PgdConfig::paper()
                    .with_norm(norm)
                    .with_steps(steps)
                    .with_seed(seed)
                    .init()?,
            )),
            Self::Pgd {
                steps,
                random_start: true,
            } => Built::Bounded(Box::new(
                PgdConfig::new()
                    .with_norm(norm)
                    .with_steps(steps)
                    .with_step_size(StepSize::Relative(2.5 / steps.max(1) as f64))
                    .with_random_start(true)
                    .with_seed(seed)
                    .init()?,
            )),
            Self::HopSkipJump { norm, queries } => Built::Decision(Box::new(
                HopSkipJumpConfig::new()
                    .with_norm(norm)
                    .with_query_budget(queries)
                    .with_seed(seed)
                    .init()?,
            )),
            Self::Boundary { queries } => Built::Decision(Box::new(
                BoundaryAttackConfig::new()
                    .with_query_budget(queries)
                    .with_seed(seed)
                    .init()?,
            )),
            Self::AutoAttack {
                steps,
                targets,
                queries,
            } => Built::Auto(
                AutoAttackConfig::new()
                    .with_norm(norm)
                    .with_steps(steps)
                    .with_target_classes(targets)
                    .with_square_queries(queries)
                    .with_seed(seed)
                    .init()?,
            ),
        })
    }

    /// Whether it follows a gradient (FGSM, PGD): the entries the obfuscation check compares.
    fn is_gradient(&self) -> bool {
        matches!(self, Self::Fgsm | Self::Pgd { .. })
    }
}

/// One entry of an [`Evaluation`]: an attack, its gradient source (ignored by decision-based
/// attacks), and optionally only the first `examples` attacked images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntrySpec {
    /// The attack.
    pub attack: AttackSpec,
    /// Where its gradient comes from.
    pub source: SourceChoice,
    /// Attack only the first this many images (`None`: all).
    pub examples: Option<usize>,
}

impl EntrySpec {
    /// `attack` with `source` on every attacked image.
    pub fn new(attack: AttackSpec, source: SourceChoice) -> Self {
        Self {
            attack,
            source,
            examples: None,
        }
    }

    /// This entry on the first `n` attacked images only.
    pub fn on_first(mut self, n: usize) -> Self {
        self.examples = Some(n);
        self
    }

    /// The attacked images it covers among `n`.
    fn covers(&self, n: usize) -> usize {
        self.examples.map_or(n, |m| m.min(n))
    }
}

/// A reduced AutoAttack on the first images, cheap enough to sit next to FGSM and PGD on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAttackSubset {
    /// Images attacked (the first of the attacked set).
    pub examples: usize,
    /// APGD iterations (the reference suite: 100).
    pub steps: usize,
    /// APGD-T runner-up classes (the reference suite: 9).
    pub targets: usize,
    /// Square queries per image (the reference suite: 5,000).
    pub queries: usize,
}

impl Default for AutoAttackSubset {
    fn default() -> Self {
        Self {
            examples: 50,
            steps: 20,
            targets: 3,
            queries: 500,
        }
    }
}

impl AutoAttackSubset {
    /// The entry: AutoAttack with the exact gradient on the first `examples` images (none when
    /// `examples` is 0).
    pub fn entry(&self) -> Option<EntrySpec> {
        (self.examples > 0).then(|| {
            EntrySpec::new(
                AttackSpec::AutoAttack {
                    steps: self.steps,
                    targets: self.targets,
                    queries: self.queries,
                },
                SourceChoice::Exact,
            )
            .on_first(self.examples)
        })
    }
}

/// What [`evaluate`] measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The threat model's norm.
    pub norm: Norm,
    /// The budgets, increasing; empty: no attack.
    pub epsilons: Vec<f64>,
    /// The attacks, in the order their rows come.
    pub entries: Vec<EntrySpec>,
    /// Per-class robust accuracy and the fairness numbers of the adversarial confusion matrix,
    /// for every PGD entry with the exact gradient.
    pub fairness: bool,
    /// Jacobian norm and power-law exponent of the features, σ_max per layer (over every
    /// attacked image; shard 1 measures them).
    pub representation: bool,
    /// L2 norms of random perturbations (Gaussian and uniform directions) to measure accuracy
    /// under; empty: none.
    pub noise_norms: Vec<f64>,
    /// The per-image cosine between the feedback and the exact input gradient.
    pub gradient_cosine: bool,
    /// Seed of the attacks, the noise and the Jacobian projections.
    pub seed: u64,
    /// Images per attack batch, also the unit shards split the attacked images in.
    pub attack_batch: usize,
    /// Images per batch of the clean accuracy.
    pub clean_batch: usize,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            epsilons: Vec::new(),
            entries: Vec::new(),
            fairness: false,
            representation: false,
            noise_norms: Vec::new(),
            gradient_cosine: false,
            seed: 0,
            attack_batch: 250,
            clean_batch: 500,
        }
    }
}

impl Evaluation {
    /// PGD (L∞, Madry's random start, `steps` steps) with the exact gradient at `epsilons`:
    /// the experiments' headline robust accuracy.
    pub fn exact_pgd(epsilons: Vec<f64>, steps: usize, seed: u64) -> Self {
        Self {
            epsilons,
            entries: vec![EntrySpec::new(
                AttackSpec::Pgd {
                    steps,
                    random_start: true,
                },
                SourceChoice::Exact,
            )],
            seed,
            ..Self::default()
        }
    }

    /// This evaluation with `entry` added after the others.
    pub fn with_entry(mut self, entry: EntrySpec) -> Self {
        self.entries.push(entry);
        self
    }

    fn validate(&self) -> Result<(), StudyError> {
        if self.attack_batch == 0 || self.clean_batch == 0 {
            return Err(invalid("attack-batch", 0, "must be at least 1"));
        }
        if !self.entries.is_empty() {
            signsym_attacks::RobustnessSuite::new(self.norm, self.epsilons.clone())?;
        }
        for entry in &self.entries {
            if let AttackSpec::Pgd { steps: 0, .. } = entry.attack {
                return Err(invalid("pgd steps", 0, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// One entry's outcome on a shard: the attack suite's entry report (curve and per-sample
/// outcomes, distances for decision-based attacks) and, for FGSM and PGD, the class predicted
/// for each adversarial image (`predicted[k][i]`: image `i` at the `k`-th ε).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryPart {
    /// The report.
    pub report: EntryReport,
    /// Predictions on the adversarial images (gradient attacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted: Vec<Vec<usize>>,
}

/// What [`evaluate`] measured on one shard, per sample, so that [`merge`](Self::merge) can join
/// shards into the unsharded run's part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationPart {
    /// Which part of the attacked images.
    pub shard: Shard,
    /// Top-1 accuracy on every test image (each shard scores all of them).
    pub clean_accuracy: f64,
    /// Test images behind `clean_accuracy`.
    pub test_examples: usize,
    /// True classes of this shard's attacked images.
    pub labels: Vec<usize>,
    /// Per entry of the evaluation, in order: `None` where the shard holds none of its images.
    pub entries: Vec<Option<EntryPart>>,
    /// Per noise norm and kind (Gaussian, then uniform), the class predicted for each of this
    /// shard's images under noise.
    pub noise: Vec<Vec<usize>>,
    /// The feedback/exact gradient cosine of each of this shard's images (when asked).
    pub cosines: Vec<f64>,
    /// Outputs of the attacked model (the confusion matrix's side).
    pub classes: usize,
    /// What is no per-sample count (the representation measures), from shard 1.
    pub measures: Vec<Measure>,
}

/// A number about a whole network (a Jacobian norm, an exponent, a layer's σ_max), before it
/// becomes a row of that network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// What it is.
    pub metric: Metric,
    /// The number.
    pub value: f64,
    /// Samples behind it.
    pub samples: usize,
    /// The row's detail (a layer, the fitted ranks).
    pub detail: String,
}

impl Measure {
    /// A measure.
    pub fn new(metric: Metric, value: f64, samples: usize, detail: &str) -> Self {
        Self {
            metric,
            value,
            samples,
            detail: detail.into(),
        }
    }
}

/// The attacked function and where a transfer attack's gradient comes from.
pub struct Attacked<'a> {
    /// The model under attack (seen through its view).
    pub model: &'a dyn AttackModel,
    /// The surrogate of [`SourceChoice::Transfer`].
    pub surrogate: Option<&'a dyn AttackModel>,
}

/// Clean accuracy of `network` on `test`, then `evaluation` on `shard`'s part of `attacked`
/// (seen through `view`; the attacked function includes the view's normalisation, so ε is in
/// `[0, 1]` pixel units). `surrogate` serves transfer entries.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<M: Backbone>(
    network: &Network<M>,
    surrogate: Option<&dyn AttackModel>,
    test: &Images,
    attacked: &Images,
    view: &InputView,
    evaluation: &Evaluation,
    shard: Shard,
    progress: bool,
) -> Result<EvaluationPart, StudyError> {
    evaluation.validate()?;
    let clean_accuracy = accuracy(network, test, view, evaluation.clean_batch)?;
    let device = network.device()?;
    let net = attack_mode(network.duplicate());
    let model = ViewedModel { model: &net, view };
    let n = attacked.len();
    let pixels = |range: Range<usize>| -> Result<Tensor<4>, StudyError> {
        let indices: Vec<usize> = range.collect();
        view.pixels(attacked, &indices, &device)
    };
    let all: Vec<usize> = (0..n).collect();
    let labels = attacked.classes(&all)?;
    let unit = evaluation.attack_batch;
    let range = shard.range(n, unit);
    let attacks = attack_shard(
        &Attacked {
            model: &model,
            surrogate,
        },
        &pixels,
        &labels,
        evaluation,
        shard,
        progress,
    )?;

    // Noise is drawn for every image in order (one stream), then this shard's are scored.
    let mut noise = Vec::new();
    if !evaluation.noise_norms.is_empty() {
        let images = pixels(0..n)?;
        for (k, &norm) in evaluation.noise_norms.iter().enumerate() {
            for (j, kind) in [NoiseKind::Gaussian, NoiseKind::Uniform]
                .into_iter()
                .enumerate()
            {
                let seed = subset_seed(evaluation.seed, &format!("noise {k} {j}"));
                let noisy = add_noise(&images, kind, norm, seed)?;
                let mut predicted = Vec::with_capacity(range.len());
                for batch in shard.batches(n, unit) {
                    predicted.extend(predict(&model, noisy.clone().slice(batch))?);
                }
                noise.push(predicted);
            }
        }
    }

    let mut cosines = Vec::new();
    if evaluation.gradient_cosine {
        for batch in shard.batches(n, unit) {
            // brSF's draws seeded by the batch, not by what ran before.
            let seed =
                signsym_feedback::splitmix64(evaluation.seed.wrapping_add(batch.start as u64));
            let x = pixels(batch.clone())?;
            cosines.extend(
                RandomScope::run(seed, || gradient_alignment(&model, &x, &labels[batch]))?
                    .per_sample,
            );
        }
    }

    let measures = if evaluation.representation && shard.index() == 1 {
        representation(network, &pixels(0..n)?, evaluation.seed)?
    } else {
        Vec::new()
    };
    Ok(EvaluationPart {
        shard,
        clean_accuracy,
        test_examples: test.len(),
        labels: labels[range].to_vec(),
        entries: attacks,
        noise,
        cosines,
        classes: model.outputs(),
        measures,
    })
}

/// Every entry of `evaluation` on `shard`'s part of the attacked images (`pixels` gives the
/// images of a range, `labels` the true classes of all).
fn attack_shard(
    attacked: &Attacked<'_>,
    pixels: &dyn Fn(Range<usize>) -> Result<Tensor<4>, StudyError>,
    labels: &[usize],
    evaluation: &Evaluation,
    shard: Shard,
    progress: bool,
) -> Result<Vec<Option<EntryPart>>, StudyError> {
    let n = labels.len();
    let unit = evaluation.attack_batch;
    let eps = &evaluation.epsilons;
    let bar = if progress {
        let total: usize = evaluation
            .entries
            .iter()
            .map(|e| {
                let batches = shard.batches(e.covers(n), unit).count();
                match e.attack {
                    AttackSpec::Fgsm | AttackSpec::Pgd { .. } => batches * eps.len(),
                    _ => batches,
                }
            })
            .sum();
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} batches {elapsed_precise}")
                .map_err(|e| invalid("progress", e, "bad template"))?,
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut parts = Vec::with_capacity(evaluation.entries.len());
    // The weights are fixed for the whole shard: each layer's feedback tensor is formed once,
    // at its first backward, and serves every attack step after it.
    let _frozen = signsym_feedback::FrozenWeightsGuard::enter();
    for entry in &evaluation.entries {
        let m = entry.covers(n);
        let batches: Vec<Range<usize>> = shard.batches(m, unit).collect();
        if batches.is_empty() {
            parts.push(None);
            continue;
        }
        let source = entry.source.source(attacked.surrogate)?;
        let model = attacked.model;
        let part = match entry.attack.build(evaluation.norm, evaluation.seed)? {
            Built::Bounded(attack) => {
                let (label, kind) = entry_label(attack.as_ref(), &source);
                bar.set_prefix(label.clone());
                let mut robust = vec![Vec::new(); eps.len()];
                let mut predicted = vec![Vec::new(); eps.len()];
                for batch in &batches {
                    let x = pixels(batch.clone())?;
                    for (k, &epsilon) in eps.iter().enumerate() {
                        let out =
                            attack.run(model, &x, &labels[batch.clone()], epsilon, &source)?;
                        robust[k].extend(out.success.iter().map(|s| !s));
                        predicted[k].extend(out.predicted);
                        bar.inc(1);
                    }
                }
                EntryPart {
                    report: EntryReport {
                        curve: curve(&label, eps, &robust)?,
                        attack: label,
                        name: attack.name(),
                        source: kind,
                        distances: None,
                        per_sample: robust,
                    },
                    predicted,
                }
            }
            Built::Decision(attack) => {
                bar.set_prefix(attack.name());
                let mut robust = vec![Vec::new(); eps.len().max(1)];
                let mut distances = Vec::new();
                // A budget list for the suite's bookkeeping when the evaluation has none.
                let budgets = if eps.is_empty() {
                    vec![0.0]
                } else {
                    eps.clone()
                };
                for batch in &batches {
                    let x = pixels(batch.clone())?;
                    let (r, d) = min_norm_per_sample(
                        model,
                        attack.as_ref(),
                        &x,
                        &labels[batch.clone()],
                        &budgets,
                        unit,
                    )?;
                    for (all, part) in robust.iter_mut().zip(r) {
                        all.extend(part);
                    }
                    distances.extend(d);
                    bar.inc(1);
                }
                EntryPart {
                    report: EntryReport {
                        curve: curve(&attack.name(), &budgets, &robust)?,
                        attack: attack.name(),
                        name: attack.name(),
                        source: SourceKind::Decision,
                        distances: Some(distances),
                        per_sample: robust,
                    },
                    predicted: Vec::new(),
                }
            }
            Built::Auto(suite) => {
                bar.set_prefix(format!("{}/{}", suite.name(), source.name()));
                let mut reports = Vec::new();
                for batch in &batches {
                    let x = pixels(batch.clone())?;
                    reports.push(
                        RobustnessSuite::new(evaluation.norm, eps.clone())?
                            .autoattack(&suite, source)
                            .run(model, &x, &labels[batch.clone()])?
                            .entries,
                    );
                    bar.inc(1);
                }
                let report = merge_entries(&reports)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("autoattack", 0, "returned no entry"))?;
                EntryPart {
                    report,
                    predicted: Vec::new(),
                }
            }
        };
        parts.push(Some(part));
    }
    bar.finish_and_clear();
    Ok(parts)
}

/// A robust-accuracy curve from per-sample outcomes (Wilson intervals at 95 %), as the attack
/// suite draws it.
fn curve(
    label: &str,
    epsilons: &[f64],
    robust: &[Vec<bool>],
) -> Result<RobustnessCurve, StudyError> {
    let mut curve = RobustnessCurve::new(label, RobustMetric::Accuracy, 0.95)?;
    for (&epsilon, row) in epsilons.iter().zip(robust) {
        curve.push_accuracy(epsilon, row.iter().filter(|r| **r).count(), row.len())?;
    }
    Ok(curve)
}

impl EvaluationPart {
    /// The parts of shards `1/N … N/N` of one evaluation, in order, as the part of the whole
    /// run: per-sample outcomes concatenated, every curve recounted.
    pub fn merge(parts: &[EvaluationPart]) -> Result<EvaluationPart, StudyError> {
        let Some(first) = parts.first() else {
            return Err(invalid("shards", 0, "no shard to merge"));
        };
        for (k, part) in parts.iter().enumerate() {
            if part.shard != Shard::new(k + 1, parts.len())?
                || part.entries.len() != first.entries.len()
                || part.noise.len() != first.noise.len()
            {
                return Err(invalid(
                    "shards",
                    part.shard,
                    "must be one evaluation's shards 1/N … N/N, in order",
                ));
            }
        }
        let mut entries = Vec::with_capacity(first.entries.len());
        for k in 0..first.entries.len() {
            let present: Vec<&EntryPart> =
                parts.iter().filter_map(|p| p.entries[k].as_ref()).collect();
            if present.is_empty() {
                entries.push(None);
                continue;
            }
            let reports: Vec<Vec<EntryReport>> =
                present.iter().map(|p| vec![p.report.clone()]).collect();
            let report = merge_entries(&reports)?
                .into_iter()
                .next()
                .ok_or_else(|| invalid("shards", k, "merged to no entry"))?;
            let mut predicted = vec![Vec::new(); present[0].predicted.len()];
            for p in &present {
                for (all, part) in predicted.iter_mut().zip(&p.predicted) {
                    all.extend(part.iter().copied());
                }
            }
            entries.push(Some(EntryPart { report, predicted }));
        }
        let concat = |f: &dyn Fn(&EvaluationPart) -> &Vec<usize>| -> Vec<usize> {
            parts.iter().flat_map(|p| f(p).iter().copied()).collect()
        };
        let noise = (0..first.noise.len())
            .map(|k| concat(&|p| &p.noise[k]))
            .collect();
        Ok(EvaluationPart {
            shard: Shard::WHOLE,
            clean_accuracy: first.clean_accuracy,
            test_examples: first.test_examples,
            labels: concat(&|p| &p.labels),
            entries,
            noise,
            cosines: parts
                .iter()
                .flat_map(|p| p.cosines.iter().copied())
                .collect(),
            classes: first.classes,
            measures: first.measures.clone(),
        })
    }

    /// The entries' reports, in the evaluation's order (those no shard held left out).
    pub fn reports(&self) -> Vec<EntryReport> {
        self.entries
            .iter()
            .flatten()
            .map(|e| e.report.clone())
            .collect()
    }

    /// Budgets where the model's own backward looks more robust than a reference source, per
    /// gradient attack and for the per-sample worst case, over the FGSM and PGD entries that
    /// cover every attacked image.
    pub fn obfuscation(&self, evaluation: &Evaluation) -> Vec<ObfuscationFlag> {
        let n = self.labels.len();
        let gradient: Vec<EntryReport> = evaluation
            .entries
            .iter()
            .zip(&self.entries)
            .filter(|(spec, _)| spec.attack.is_gradient() && spec.covers(n) == n)
            .filter_map(|(_, part)| part.as_ref().map(|p| p.report.clone()))
            .collect();
        obfuscation(&gradient, &evaluation.epsilons)
    }

    /// The mean feedback/exact gradient cosine (NaN without cosines).
    pub fn gradient_cosine(&self) -> f64 {
        GradientAlignment {
            per_sample: self.cosines.clone(),
            batch: f64::NAN,
        }
        .mean()
    }

    /// The result rows: clean accuracy, noise accuracy, each entry's curve (with the fairness
    /// numbers after each budget of a PGD entry with the exact gradient) or, for a
    /// decision-based attack in another norm, each image's smallest distance, then the
    /// representation rows.
    pub fn rows(
        &self,
        evaluation: &Evaluation,
        base: &RowBase,
    ) -> Result<Vec<ResultRow>, StudyError> {
        let mut rows = vec![base.row(Metric::Accuracy, self.clean_accuracy, self.test_examples)];
        let labels = &self.labels;
        let n = labels.len();
        let accuracy_row = |predicted: &[usize], metric: Metric| -> Result<ResultRow, StudyError> {
            let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
            let (lo, hi) = wilson_interval(correct, n, 0.95)?;
            let mut row = base.row(metric, correct as f64 / n.max(1) as f64, n);
            row.ci_low = Some(lo);
            row.ci_high = Some(hi);
            Ok(row)
        };
        let kinds = [NoiseKind::Gaussian, NoiseKind::Uniform];
        for (k, predicted) in self.noise.iter().enumerate() {
            let mut row = accuracy_row(predicted, Metric::NoiseAccuracy)?;
            row.attack = kinds[k % 2].name().into();
            row.epsilon = evaluation
                .noise_norms
                .get(k / 2)
                .copied()
                .unwrap_or(f64::NAN);
            rows.push(row);
        }
        for (spec, part) in evaluation.entries.iter().zip(&self.entries) {
            let Some(part) = part else { continue };
            let report = &part.report;
            let own_norm = match spec.attack {
                AttackSpec::HopSkipJump { norm, .. } => norm,
                AttackSpec::Boundary { .. } => Norm::L2,
                _ => evaluation.norm,
            };
            if own_norm != evaluation.norm {
                for (i, d) in report.distances.iter().flatten().enumerate() {
                    let mut row = base.row(Metric::MinAdversarialDistance, *d, 1);
                    row.attack = report.name.clone();
                    row.detail = format!("image {i}");
                    rows.push(row);
                }
                continue;
            }
            let fairness = evaluation.fairness
                && matches!(spec.attack, AttackSpec::Pgd { .. })
                && spec.source == SourceChoice::Exact;
            for (k, point) in report.curve.points.iter().enumerate() {
                let mut row = base.row(Metric::RobustAccuracy, point.value, point.samples);
                row.attack = report.name.clone();
                row.source = Some(report.source);
                row.epsilon = point.epsilon;
                row.ci_low = Some(point.ci_low);
                row.ci_high = Some(point.ci_high);
                rows.push(row.clone());
                if let (true, Some(predicted)) = (fairness, part.predicted.get(k)) {
                    rows.extend(fairness_rows(&row, predicted, labels, self.classes)?);
                }
            }
        }
        rows.extend(self.measures.iter().map(|m| {
            base.row(m.metric, m.value, m.samples)
                .with_detail(&m.detail)
        }));
        Ok(rows)
    }
}

/// Per-class robust accuracy, the worst and mean class, the asymmetry of the adversarial
/// confusion matrix (total and per pair) and the largest share of errors into one class, as
/// rows beside the robust-accuracy row `row`.
fn fairness_rows(
    row: &ResultRow,
    predicted: &[usize],
    labels: &[usize],
    classes: usize,
) -> Result<Vec<ResultRow>, StudyError> {
    let n = labels.len();
    let mut confusion = ConfusionMatrix::new(classes)?;
    confusion.update(labels, predicted)?;
    let report = confusion.fairness();
    let mut rows = Vec::new();
    let mut add = |metric: Metric, value: f64, samples: usize, detail: String| {
        let mut r = row.clone().with_detail(detail);
        r.metric = metric;
        r.value = value;
        r.samples = samples;
        r.ci_low = None;
        r.ci_high = None;
        rows.push(r);
    };
    for (c, a) in report.per_class_accuracy.iter().enumerate() {
        if let Some(a) = a {
            let count = labels.iter().filter(|&&l| l == c).count();
            add(Metric::ClassRobustAccuracy, *a, count, format!("class {c}"));
        }
    }
    if let Some((c, a)) = report.worst_class {
        add(Metric::WorstClassRobustAccuracy, a, n, format!("class {c}"));
    }
    if let Some(m) = report.mean_class_accuracy {
        add(Metric::MeanClassRobustAccuracy, m, n, String::new());
    }
    add(Metric::Asymmetry, report.total_asymmetry, n, String::new());
    let (target, share) = report
        .target_share
        .iter()
        .enumerate()
        .fold((0, 0.0), |b, (j, &s)| if s > b.1 { (j, s) } else { b });
    add(Metric::MaxTargetShare, share, n, format!("class {target}"));
    for (i, v) in report.asymmetry.iter().enumerate() {
        add(
            Metric::Asymmetry,
            *v,
            n,
            format!("pair {} {}", i / classes, i % classes),
        );
    }
    Ok(rows)
}
