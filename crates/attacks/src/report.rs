//! A suite of attacks and gradient sources, aggregated per sample to the worst case, with the
//! obfuscation and broken-attack checks.

use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use signsym_metrics::RobustnessCurve;

use crate::autoattack::{AutoAttack, AutoAttackReport};
use crate::bounds::{Norm, check_batch};
use crate::decision::MinimizationAttack;
use crate::diagnostics::gradient_alignment;
use crate::error::{AttackError, check_count, invalid};
use crate::evaluate::{
    check_epsilons, chunks, curve_from, min_norm_per_sample_ticking, robust_per_sample_ticking,
};
use crate::model::AttackModel;
use crate::pgd::BoundedAttack;
use crate::source::{GradientSource, SourceKind};

enum Entry<'a> {
    Bounded {
        attack: &'a dyn BoundedAttack,
        source: GradientSource<'a>,
    },
    Decision(&'a dyn MinimizationAttack),
    AutoAttack {
        suite: &'a AutoAttack,
        source: GradientSource<'a>,
    },
}

/// A set of attacks (each with its gradient source) evaluated on the same samples and budgets.
///
/// A sample counts as broken at ε if *any* entry succeeds on it within ε (AutoAttack's
/// worst-case aggregation); [`RobustnessReport::worst_case`] is the resulting curve and the
/// report's headline ([`RobustnessReport::headline`]), with the per-entry curves beside it.
///
/// ```no_run
/// # use burn::tensor::Tensor;
/// # use signsym_attacks::*;
/// # fn demo(model: &dyn AttackModel, images: Tensor<4>, labels: &[usize]) -> Result<(), AttackError> {
/// let pgd = PgdConfig::paper().init()?;
/// let hsj = HopSkipJumpConfig::new().with_norm(Norm::Linf).init()?;
/// let report = RobustnessSuite::new(Norm::Linf, vec![0.0, 0.01, 0.05, 0.1])?
///     .attack(&pgd, GradientSource::Feedback)
///     .attack(&pgd, GradientSource::Exact)
///     .decision_attack(&hsj)
///     .run(model, &images, labels)?;
/// for flag in &report.obfuscation {
///     println!("{flag}");
/// }
/// # Ok(()) }
/// ```
pub struct RobustnessSuite<'a> {
    norm: Norm,
    epsilons: Vec<f64>,
    entries: Vec<Entry<'a>>,
    batch_size: usize,
    obfuscation_margin: f64,
    curve_tolerance: f64,
    stall_floor: f64,
    confidence: f64,
    gradient_cosine: bool,
    progress: bool,
}

/// The label and source kind a bounded attack's entry carries: `name/source` for a gradient
/// attack, the name and [`SourceKind::Score`] for a score-based one.
pub fn entry_label(
    attack: &dyn BoundedAttack,
    source: &GradientSource<'_>,
) -> (String, SourceKind) {
    if attack.needs_gradient() {
        (
            format!("{}/{}", attack.name(), source.name()),
            source.kind(),
        )
    } else {
        (attack.name(), SourceKind::Score)
    }
}

/// One entry's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryReport {
    /// The entry's label: the attack's name and, for gradient attacks, `/` and the source.
    pub attack: String,
    /// The attack's name alone (`pgd5-linf`, `square-linf`, `autoattack-standard-linf`).
    #[serde(default)]
    pub name: String,
    /// Where its gradient came from.
    pub source: SourceKind,
    /// Robust accuracy per ε.
    pub curve: RobustnessCurve,
    /// Smallest adversarial distance per sample (decision-based attacks only).
    pub distances: Option<Vec<f64>>,
    /// Whether each sample withstood the entry: `per_sample[k][i]` for sample `i` at the curve's
    /// `k`-th ε. What [`merge_entries`] joins shards of an evaluation by; studies that keep only
    /// the curves leave it empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_sample: Vec<Vec<bool>>,
}

/// The entries of one evaluation run in shards of consecutive samples (`parts` in sample order)
/// as one evaluation: per-sample outcomes and distances concatenated, every curve recounted
/// (counts, values, Wilson intervals). This equals the unsplit evaluation's entries exactly when
/// each sample's outcome does not depend on which shard it was in: shards made of the same
/// batches as the unsplit run (what the studies' `--shard` does) or attacks without randomness.
///
/// Shards must hold the same entries (labels, sources, budgets) with their per-sample outcomes.
///
/// ```
/// use signsym_attacks::{EntryReport, SourceKind, merge_entries};
/// use signsym_metrics::{RobustMetric, RobustnessCurve};
///
/// let part = |robust: Vec<bool>| {
///     let mut curve = RobustnessCurve::new("fgsm/exact", RobustMetric::Accuracy, 0.95).unwrap();
///     let k = robust.iter().filter(|r| **r).count();
///     curve.push_accuracy(0.1, k, robust.len()).unwrap();
///     vec![EntryReport { attack: "fgsm/exact".into(), name: "fgsm".into(),
///         source: SourceKind::Exact, curve, distances: None, per_sample: vec![robust] }]
/// };
/// let merged = merge_entries(&[part(vec![true, false]), part(vec![true, true, false])])?;
/// assert_eq!(merged[0].curve.points[0].value, 3.0 / 5.0);
/// assert_eq!(merged[0].per_sample[0], [true, false, true, true, false]);
/// # Ok::<(), signsym_attacks::AttackError>(())
/// ```
pub fn merge_entries(parts: &[Vec<EntryReport>]) -> Result<Vec<EntryReport>, AttackError> {
    let Some(first) = parts.first() else {
        return Err(invalid("shards", 0, "merging needs at least one shard"));
    };
    let epsilons = |e: &EntryReport| e.curve.points.iter().map(|p| p.epsilon).collect::<Vec<_>>();
    let mut merged = Vec::with_capacity(first.len());
    for (k, head) in first.iter().enumerate() {
        let mut robust = vec![Vec::new(); head.curve.points.len()];
        let mut distances = head.distances.as_ref().map(|_| Vec::new());
        for part in parts {
            if part.len() != first.len() {
                return Err(invalid(
                    "shards",
                    part.len(),
                    "hold different numbers of entries",
                ));
            }
            let entry = &part[k];
            if entry.attack != head.attack
                || entry.source != head.source
                || epsilons(entry) != epsilons(head)
            {
                return Err(invalid(
                    "shards",
                    &entry.attack,
                    "hold different entries (attack, source or budgets)",
                ));
            }
            if entry.per_sample.len() != robust.len() {
                return Err(invalid(
                    "shards",
                    &entry.attack,
                    "an entry lacks its per-sample outcomes",
                ));
            }
            for (all, part) in robust.iter_mut().zip(&entry.per_sample) {
                all.extend_from_slice(part);
            }
            match (&mut distances, &entry.distances) {
                (Some(all), Some(d)) => all.extend_from_slice(d),
                (None, None) => {}
                _ => {
                    return Err(invalid(
                        "shards",
                        &entry.attack,
                        "some shards hold distances, others not",
                    ));
                }
            }
        }
        merged.push(EntryReport {
            attack: head.attack.clone(),
            name: head.name.clone(),
            source: head.source,
            curve: curve_from(
                head.curve.label.clone(),
                &epsilons(head),
                &robust,
                head.curve.confidence,
            )?,
            distances,
            per_sample: robust,
        });
    }
    Ok(merged)
}

/// Robust accuracy under the model's own backward exceeds that under a reference source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObfuscationFlag {
    /// The budget.
    pub epsilon: f64,
    /// The entry following the model's backward.
    pub feedback_entry: String,
    /// Its robust accuracy.
    pub feedback: f64,
    /// The reference entry (exact or transfer gradient) with the lowest robust accuracy.
    pub reference_entry: String,
    /// Its robust accuracy.
    pub reference: f64,
}

impl std::fmt::Display for ObfuscationFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "likely gradient obfuscation at ε = {}: {} keeps {:.3} robust accuracy, {} only {:.3}",
            self.epsilon, self.feedback_entry, self.feedback, self.reference_entry, self.reference
        )
    }
}

/// A curve that does not behave as the curve of a working attack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CurveWarning {
    /// Robust accuracy rises with ε (a larger budget should never help the model).
    Rises {
        /// The curve.
        label: String,
        /// Smaller budget.
        from_epsilon: f64,
        /// Larger budget.
        to_epsilon: f64,
        /// Robust accuracy at the smaller budget.
        from: f64,
        /// Robust accuracy at the larger budget.
        to: f64,
    },
    /// Robust accuracy has started to fall but stops falling although ε grows (at least
    /// doubling), well above zero: a sign of a broken or obfuscated attack.
    Stalls {
        /// The curve.
        label: String,
        /// Smaller budget.
        from_epsilon: f64,
        /// Larger budget.
        to_epsilon: f64,
        /// Robust accuracy at both.
        value: f64,
    },
}

impl std::fmt::Display for CurveWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rises {
                label,
                from_epsilon,
                to_epsilon,
                from,
                to,
            } => write!(
                f,
                "{label}: robust accuracy rises from {from:.3} (ε = {from_epsilon}) to {to:.3} (ε = {to_epsilon})"
            ),
            Self::Stalls {
                label,
                from_epsilon,
                to_epsilon,
                value,
            } => write!(
                f,
                "{label}: robust accuracy stalls at {value:.3} from ε = {from_epsilon} to ε = {to_epsilon}"
            ),
        }
    }
}

/// Everything a [`RobustnessSuite`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessReport {
    /// The threat model's norm.
    pub norm: Norm,
    /// The budgets.
    pub epsilons: Vec<f64>,
    /// Accuracy on the unperturbed samples.
    pub clean_accuracy: f64,
    /// One result per entry, in the order added.
    pub entries: Vec<EntryReport>,
    /// Per-sample worst case over all entries: the headline robust accuracy.
    pub worst_case: RobustnessCurve,
    /// The full report of each AutoAttack entry (stages, queries, sanity flags).
    pub autoattack: Vec<AutoAttackReport>,
    /// Budgets where the model's own backward looks more robust than a reference source.
    pub obfuscation: Vec<ObfuscationFlag>,
    /// Curves that rise or stall.
    pub warnings: Vec<CurveWarning>,
    /// Per-sample cosine between feedback and exact input gradients of the cross-entropy
    /// (when requested).
    pub gradient_cosine: Option<Vec<f64>>,
}

impl<'a> RobustnessSuite<'a> {
    /// An empty suite for budgets `epsilons` measured in `norm`.
    pub fn new(norm: Norm, epsilons: Vec<f64>) -> Result<Self, AttackError> {
        check_epsilons(&epsilons)?;
        if epsilons.windows(2).any(|w| w[1] <= w[0]) {
            return Err(invalid(
                "epsilons",
                format!("{epsilons:?}"),
                "must increase strictly",
            ));
        }
        Ok(Self {
            norm,
            epsilons,
            entries: Vec::new(),
            batch_size: 64,
            obfuscation_margin: 0.05,
            curve_tolerance: 0.02,
            stall_floor: 0.05,
            confidence: 0.95,
            gradient_cosine: false,
            progress: false,
        })
    }

    /// Adds a gradient attack with its gradient source.
    pub fn attack(mut self, attack: &'a dyn BoundedAttack, source: GradientSource<'a>) -> Self {
        self.entries.push(Entry::Bounded { attack, source });
        self
    }

    /// Adds a score-based black-box attack such as [`Square`](crate::Square) (it needs no
    /// gradient source).
    pub fn score_attack(self, attack: &'a dyn BoundedAttack) -> Self {
        self.attack(attack, GradientSource::Exact)
    }

    /// Adds AutoAttack with the gradient source of its white-box stages; it counts as one entry
    /// whose per-sample result is the suite's own worst case.
    pub fn autoattack(mut self, suite: &'a AutoAttack, source: GradientSource<'a>) -> Self {
        self.entries.push(Entry::AutoAttack { suite, source });
        self
    }

    /// Adds a decision-based attack.
    pub fn decision_attack(mut self, attack: &'a dyn MinimizationAttack) -> Self {
        self.entries.push(Entry::Decision(attack));
        self
    }

    /// Samples per attack call (default 64).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// How much higher robust accuracy under the model's own backward may be than under a
    /// reference source before it is flagged (default 0.05).
    pub fn with_obfuscation_margin(mut self, margin: f64) -> Self {
        self.obfuscation_margin = margin;
        self
    }

    /// Changes of robust accuracy smaller than this count as flat (default 0.02).
    pub fn with_curve_tolerance(mut self, tolerance: f64) -> Self {
        self.curve_tolerance = tolerance;
        self
    }

    /// Curves that stall below this robust accuracy are not flagged (default 0.05).
    pub fn with_stall_floor(mut self, floor: f64) -> Self {
        self.stall_floor = floor;
        self
    }

    /// Also measure the per-sample cosine between feedback and exact input gradients.
    pub fn with_gradient_cosine(mut self, on: bool) -> Self {
        self.gradient_cosine = on;
        self
    }

    /// Shows a progress bar over attacked batches on stderr (default off).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Runs every entry on `images` (true classes `labels`).
    pub fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
    ) -> Result<RobustnessReport, AttackError> {
        check_count("batch size", self.batch_size)?;
        check_batch("labels", images.dims()[0], labels.len())?;
        for (name, v) in [
            ("obfuscation margin", self.obfuscation_margin),
            ("curve tolerance", self.curve_tolerance),
            ("stall floor", self.stall_floor),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(name, v, "must be finite and ≥ 0"));
            }
        }
        if self.entries.is_empty() {
            return Err(invalid("entries", 0, "the suite needs at least one attack"));
        }
        let n = labels.len();
        let batches = n.div_ceil(self.batch_size);
        let bar = if self.progress {
            let total: usize = self
                .entries
                .iter()
                .map(|e| match e {
                    Entry::Bounded { .. } => batches * self.epsilons.len(),
                    Entry::Decision(_) => batches,
                    Entry::AutoAttack { suite, .. } => {
                        n.div_ceil(suite.config().batch_size)
                            * suite.attacks().len()
                            * self.epsilons.len()
                    }
                })
                .sum();
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} batches {elapsed_precise}",
                )
                .expect("valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let tick = || bar.inc(1);
        let mut entries = Vec::new();
        let mut autoattack = Vec::new();
        let mut worst = vec![vec![true; n]; self.epsilons.len()];
        let mut per_sample = Vec::new();
        for entry in &self.entries {
            let (attack, name, source, robust, distances) = match entry {
                Entry::Bounded { attack, source } => {
                    if attack.norm() != self.norm {
                        return Err(invalid(
                            "attack norm",
                            attack.norm().name(),
                            "differs from the suite's norm",
                        ));
                    }
                    let (label, kind) = entry_label(*attack, source);
                    bar.set_prefix(label.clone());
                    let robust = robust_per_sample_ticking(
                        model,
                        *attack,
                        images,
                        labels,
                        &self.epsilons,
                        source,
                        self.batch_size,
                        &tick,
                    )?;
                    (label, attack.name(), kind, robust, None)
                }
                Entry::AutoAttack { suite, source } => {
                    if suite.norm() != self.norm {
                        return Err(invalid(
                            "attack norm",
                            suite.norm().name(),
                            "differs from the suite's norm",
                        ));
                    }
                    let label = format!("{}/{}", suite.name(), source.name());
                    bar.set_prefix(label.clone());
                    let report =
                        suite.run_ticking(model, images, labels, &self.epsilons, source, &tick)?;
                    let robust = report.robust.clone();
                    let kind = report.source;
                    autoattack.push(report);
                    (label, suite.name(), kind, robust, None)
                }
                Entry::Decision(attack) => {
                    if attack.norm() != self.norm {
                        return Err(invalid(
                            "attack norm",
                            attack.norm().name(),
                            "differs from the suite's norm",
                        ));
                    }
                    bar.set_prefix(attack.name());
                    let (robust, distances) = min_norm_per_sample_ticking(
                        model,
                        *attack,
                        images,
                        labels,
                        &self.epsilons,
                        self.batch_size,
                        &tick,
                    )?;
                    (
                        attack.name(),
                        attack.name(),
                        SourceKind::Decision,
                        robust,
                        Some(distances),
                    )
                }
            };
            for (w, r) in worst.iter_mut().zip(&robust) {
                for (a, b) in w.iter_mut().zip(r) {
                    *a &= *b;
                }
            }
            per_sample.push(robust.clone());
            entries.push(EntryReport {
                curve: curve_from(attack.clone(), &self.epsilons, &robust, self.confidence)?,
                attack,
                name,
                source,
                distances,
                per_sample: robust,
            });
        }
        bar.finish_and_clear();
        let worst_case = curve_from("worst case".into(), &self.epsilons, &worst, self.confidence)?;
        // In batches, as the attacks: one forward over the whole set could exhaust memory.
        let mut top1 = signsym_metrics::TopKAccuracy::new(&[1])?;
        for range in chunks(n, self.batch_size) {
            let scores =
                crate::model::host(model.predict_scores(images.clone().slice(range.clone())))?;
            top1.update_scores(&scores, model.outputs(), &labels[range])?;
        }
        let clean_accuracy = top1.accuracy(1).unwrap_or(0.0);
        let mut obfuscation = obfuscation_flags(&entries, self.obfuscation_margin);
        obfuscation.extend(worst_case_flags(
            &entries,
            &per_sample,
            &self.epsilons,
            self.obfuscation_margin,
        ));
        let mut warnings = Vec::new();
        for curve in entries.iter().map(|e| &e.curve).chain([&worst_case]) {
            warnings.extend(curve_warnings(
                curve,
                self.curve_tolerance,
                self.stall_floor,
            ));
        }
        let gradient_cosine = if self.gradient_cosine {
            Some(gradient_alignment(model, images, labels)?.per_sample)
        } else {
            None
        };
        Ok(RobustnessReport {
            norm: self.norm,
            epsilons: self.epsilons.clone(),
            clean_accuracy,
            entries,
            worst_case,
            autoattack,
            obfuscation,
            warnings,
            gradient_cosine,
        })
    }
}

impl RobustnessReport {
    /// The headline robust-accuracy curve: the per-sample worst case over every entry.
    pub fn headline(&self) -> &RobustnessCurve {
        &self.worst_case
    }
}

/// Flags each budget where an entry following the model's backward keeps more than `margin`
/// robust accuracy above the best reference entry (same attack if there is one, else any).
pub fn obfuscation_flags(entries: &[EntryReport], margin: f64) -> Vec<ObfuscationFlag> {
    let base = |e: &EntryReport| e.name.clone();
    let mut flags = Vec::new();
    for feedback in entries.iter().filter(|e| e.source.follows_model_backward()) {
        let references: Vec<&EntryReport> =
            entries.iter().filter(|e| e.source.is_reference()).collect();
        let same: Vec<&EntryReport> = references
            .iter()
            .copied()
            .filter(|e| base(e) == base(feedback))
            .collect();
        let pool = if same.is_empty() { references } else { same };
        for (k, point) in feedback.curve.points.iter().enumerate() {
            let best = pool
                .iter()
                .map(|e| (e, e.curve.points[k].value))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((reference, value)) = best
                && point.value - value > margin
            {
                flags.push(ObfuscationFlag {
                    epsilon: point.epsilon,
                    feedback_entry: feedback.attack.clone(),
                    feedback: point.value,
                    reference_entry: reference.attack.clone(),
                    reference: value,
                });
            }
        }
    }
    flags
}

/// The label of the reference side of [`worst_case_flags`].
pub const WORST_CASE_REFERENCE: &str =
    "worst case of the same attacks under reference sources and the black-box attacks";

/// Flags each budget where the per-sample worst case over the entries that follow the model's
/// backward keeps more than `margin` robust accuracy above the per-sample worst case over the
/// reference-source entries of the same attacks and every black-box entry: the union of the
/// model's own gradients looks more robust than the same attacks (and gradient-free ones) find
/// it. `robust[e][k][i]` says whether sample `i` withstood entry `e` at `epsilons[k]`.
pub fn worst_case_flags(
    entries: &[EntryReport],
    robust: &[Vec<Vec<bool>>],
    epsilons: &[f64],
    margin: f64,
) -> Vec<ObfuscationFlag> {
    let feedback: Vec<usize> = (0..entries.len())
        .filter(|&e| entries[e].source.follows_model_backward())
        .collect();
    let attacked: Vec<&String> = feedback.iter().map(|&e| &entries[e].name).collect();
    let reference: Vec<usize> = (0..entries.len())
        .filter(|&e| {
            let entry = &entries[e];
            matches!(entry.source, SourceKind::Decision | SourceKind::Score)
                || (entry.source.is_reference() && attacked.contains(&&entry.name))
        })
        .collect();
    if feedback.is_empty() || reference.is_empty() {
        return Vec::new();
    }
    // Decision-based entries may run on a subset: only same-sized outcomes combine.
    let n = robust[feedback[0]].first().map_or(0, Vec::len);
    let worst = |set: &[usize], k: usize| -> Option<f64> {
        let rows: Vec<&Vec<bool>> = set.iter().map(|&e| &robust[e][k]).collect();
        if n == 0 || rows.iter().any(|r| r.len() != n) {
            return None;
        }
        let kept = (0..n).filter(|&i| rows.iter().all(|r| r[i])).count();
        Some(kept as f64 / n as f64)
    };
    let mut flags = Vec::new();
    for (k, &epsilon) in epsilons.iter().enumerate() {
        if let (Some(f), Some(r)) = (worst(&feedback, k), worst(&reference, k))
            && f - r > margin
        {
            flags.push(ObfuscationFlag {
                epsilon,
                feedback_entry: "worst case of the feedback-gradient entries".into(),
                feedback: f,
                reference_entry: WORST_CASE_REFERENCE.into(),
                reference: r,
            });
        }
    }
    flags
}

/// Rising and stalling segments of a robust-accuracy curve.
pub fn curve_warnings(curve: &RobustnessCurve, tolerance: f64, floor: f64) -> Vec<CurveWarning> {
    let points = &curve.points;
    let Some(first) = points.first() else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for pair in points.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.value > a.value + tolerance {
            warnings.push(CurveWarning::Rises {
                label: curve.label.clone(),
                from_epsilon: a.epsilon,
                to_epsilon: b.epsilon,
                from: a.value,
                to: b.value,
            });
        } else if a.value < first.value - tolerance
            && (b.value - a.value).abs() <= tolerance
            && b.epsilon >= 2.0 * a.epsilon
            && b.value > floor
        {
            warnings.push(CurveWarning::Stalls {
                label: curve.label.clone(),
                from_epsilon: a.epsilon,
                to_epsilon: b.epsilon,
                value: b.value,
            });
        }
    }
    warnings
}
