//! AutoAttack (Croce & Hein, ICML 2020): a fixed ensemble of parameter-free attacks run one
//! after another, each only on the points the previous ones left robust, so the robust accuracy
//! it reports is the per-sample worst case. Version `standard` runs APGD-CE, APGD-T (targeted
//! DLR over the 9 runner-up classes) and Square (5,000 queries); version `rand` runs APGD-CE and
//! APGD-DLR with expectation over 20 draws of a random backward (brSF). FAB-T, the third attack
//! of the reference suite, is not implemented; the sanity flags of the reference code are.
//!
//! Unlike the reference implementation, every white-box stage takes a [`GradientSource`]: the
//! model's own feedback backward, the exact gradient of the same weights, or a surrogate.

use burn::config::Config;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use signsym_metrics::RobustnessCurve;

use crate::apgd::{Apgd, ApgdConfig, ApgdLoss};
use crate::bounds::{InputBox, Norm, check_batch};
use crate::error::{AttackError, check_count, invalid};
use crate::evaluate::{check_epsilons, chunks, curve_from};
use crate::model::{AttackModel, argmax_rows, check_labels, host};
use crate::pgd::{BoundedAttack, cross_entropy_sum};
use crate::source::{GradientSource, SourceKind};
use crate::square::{Square, SquareConfig};

/// Which attacks AutoAttack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoAttackVersion {
    /// APGD-CE, APGD-T and Square, for deterministic models.
    Standard,
    /// APGD-CE and APGD-DLR with EOT over `eot_draws` draws of the model's own backward, for a
    /// random backward (brSF). Exact and transfer gradients are deterministic and are used as
    /// they are.
    Rand,
}

impl AutoAttackVersion {
    /// `standard` or `rand`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Rand => "rand",
        }
    }
}

/// Settings of [`AutoAttack`]; the defaults are the reference suite's.
#[derive(Config, Debug)]
pub struct AutoAttackConfig {
    /// Norm of the threat model.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Which attacks run.
    #[config(default = "AutoAttackVersion::Standard")]
    pub version: AutoAttackVersion,
    /// APGD iterations.
    #[config(default = 100)]
    pub steps: usize,
    /// APGD-T's runner-up classes.
    #[config(default = 9)]
    pub target_classes: usize,
    /// Square's query budget per sample.
    #[config(default = 5000)]
    pub square_queries: usize,
    /// Draws of the backward averaged by version `rand`.
    #[config(default = 20)]
    pub eot_draws: usize,
    /// Samples per attack call.
    #[config(default = 250)]
    pub batch_size: usize,
    /// The valid input range.
    #[config(default = "InputBox { lower: 0.0, upper: 1.0 }")]
    pub input_box: InputBox,
    /// Seed of every attack.
    #[config(default = 0)]
    pub seed: u64,
}

impl AutoAttackConfig {
    /// Checks the settings and builds the suite.
    pub fn init(&self) -> Result<AutoAttack, AttackError> {
        check_count("batch size", self.batch_size)?;
        check_count("EOT draws", self.eot_draws)?;
        let apgd = |loss: ApgdLoss, salt: u64| {
            ApgdConfig::new()
                .with_norm(self.norm)
                .with_loss(loss)
                .with_steps(self.steps)
                .with_target_classes(self.target_classes)
                .with_input_box(self.input_box)
                .with_seed(crate::source::mix(self.seed, salt))
                .init()
        };
        let mut stages = vec![Stage::White(apgd(ApgdLoss::CrossEntropy, 1)?)];
        match self.version {
            AutoAttackVersion::Standard => {
                stages.push(Stage::White(apgd(ApgdLoss::TargetedDlr, 2)?));
                stages.push(Stage::Square(
                    SquareConfig::new()
                        .with_norm(self.norm)
                        .with_queries(self.square_queries)
                        .with_input_box(self.input_box)
                        .with_seed(crate::source::mix(self.seed, 3))
                        .init()?,
                ));
            }
            AutoAttackVersion::Rand => stages.push(Stage::White(apgd(ApgdLoss::Dlr, 2)?)),
        }
        Ok(AutoAttack {
            config: self.clone(),
            stages,
        })
    }
}

enum Stage {
    White(Apgd),
    Square(Square),
}

impl Stage {
    fn attack(&self) -> &dyn BoundedAttack {
        match self {
            Self::White(a) => a,
            Self::Square(s) => s,
        }
    }
}

/// The AutoAttack suite; build it with [`AutoAttackConfig::init`].
///
/// ```no_run
/// # use burn::tensor::Tensor;
/// # use signsym_attacks::*;
/// # fn demo(model: &dyn AttackModel, images: Tensor<4>, labels: &[usize]) -> Result<(), AttackError> {
/// let aa = AutoAttackConfig::new().init()?;
/// let report = aa.run(model, &images, labels, &[0.0, 8.0 / 255.0], &GradientSource::Exact)?;
/// println!("robust accuracy {:.3}", report.curve.points[1].value);
/// for flag in &report.flags {
///     println!("{flag}");
/// }
/// # Ok(()) }
/// ```
pub struct AutoAttack {
    config: AutoAttackConfig,
    stages: Vec<Stage>,
}

/// What one attack of the suite did at every budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The attack (`apgd-ce-linf`, `apgd-t-linf`, `square-linf`, …).
    pub attack: String,
    /// Its gradient source (`score` for Square).
    pub source: SourceKind,
    /// Per ε: robust accuracy after this stage (cumulative over the stages so far).
    pub robust_accuracy: Vec<f64>,
    /// Per ε: samples it attacked (those still robust before it).
    pub attacked: Vec<usize>,
    /// Per ε: forward passes it spent, summed over samples.
    pub queries: Vec<u64>,
    /// Per ε: backward passes it spent, summed over samples.
    pub gradients: Vec<u64>,
}

/// A reason to distrust a robustness number (AutoAttack's checks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SanityFlag {
    /// Some clean inputs have an all-zero input gradient under the source: gradient attacks
    /// cannot move them, whatever their true robustness.
    ZeroGradients {
        /// The source checked.
        source: SourceKind,
        /// Samples with a zero gradient.
        count: usize,
        /// Samples checked.
        samples: usize,
    },
    /// Square, which needs no gradient, broke points every white-box stage left robust: the
    /// signature of gradients that mislead the attacker.
    SquareBeatsWhiteBox {
        /// The budget.
        epsilon: f64,
        /// Robust accuracy after the white-box stages.
        white_box: f64,
        /// Robust accuracy after Square.
        square: f64,
    },
    /// Two forwards of the same inputs disagree: a randomised model needs version `rand`.
    NonDeterministicForward {
        /// The largest difference of the L2-normalised outputs.
        max_difference: f64,
    },
}

impl std::fmt::Display for SanityFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ZeroGradients {
                source,
                count,
                samples,
            } => write!(
                f,
                "{count} of {samples} points have a zero {source} input gradient: gradient attacks cannot judge them"
            ),
            Self::SquareBeatsWhiteBox {
                epsilon,
                white_box,
                square,
            } => write!(
                f,
                "at ε = {epsilon} Square (no gradient) lowers robust accuracy from {white_box:.3} to {square:.3}: the white-box gradients mislead"
            ),
            Self::NonDeterministicForward { max_difference } => write!(
                f,
                "the forward is not deterministic (outputs differ by {max_difference:.2e}): use version rand"
            ),
        }
    }
}

/// Everything an [`AutoAttack`] run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoAttackReport {
    /// The version run.
    pub version: AutoAttackVersion,
    /// The threat model's norm.
    pub norm: Norm,
    /// The white-box stages' gradient source.
    pub source: SourceKind,
    /// The budgets.
    pub epsilons: Vec<f64>,
    /// Accuracy on the unperturbed samples.
    pub clean_accuracy: f64,
    /// Per ε and sample: robust against every stage.
    pub robust: Vec<Vec<bool>>,
    /// Robust accuracy per ε (the per-sample worst case), with Wilson intervals.
    pub curve: RobustnessCurve,
    /// One report per stage, in the order run.
    pub stages: Vec<StageReport>,
    /// The sanity checks that failed.
    pub flags: Vec<SanityFlag>,
}

impl AutoAttack {
    /// The settings.
    pub fn config(&self) -> &AutoAttackConfig {
        &self.config
    }

    /// `autoattack-standard` or `autoattack-rand`, with the norm.
    pub fn name(&self) -> String {
        format!(
            "autoattack-{}-{}",
            self.config.version.name(),
            self.config.norm.name()
        )
    }

    /// The norm of the threat model.
    pub fn norm(&self) -> Norm {
        self.config.norm
    }

    /// The attacks run, in order.
    pub fn attacks(&self) -> Vec<&dyn BoundedAttack> {
        self.stages.iter().map(Stage::attack).collect()
    }

    /// The source the white-box stages use: version `rand` averages the model's own backward
    /// over draws.
    fn stage_source<'a>(&self, source: &GradientSource<'a>) -> GradientSource<'a> {
        match (self.config.version, source) {
            (AutoAttackVersion::Rand, GradientSource::Feedback) => {
                GradientSource::Eot(self.config.eot_draws)
            }
            _ => *source,
        }
    }

    /// Runs the suite at every budget on `images` (true classes `labels`), the white-box stages
    /// with gradients from `source`.
    pub fn run(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilons: &[f64],
        source: &GradientSource<'_>,
    ) -> Result<AutoAttackReport, AttackError> {
        self.run_ticking(model, images, labels, epsilons, source, &|| {})
    }

    /// [`run`](Self::run), calling `tick` after every attacked batch.
    pub(crate) fn run_ticking(
        &self,
        model: &dyn AttackModel,
        images: &Tensor<4>,
        labels: &[usize],
        epsilons: &[f64],
        source: &GradientSource<'_>,
        tick: &dyn Fn(),
    ) -> Result<AutoAttackReport, AttackError> {
        check_epsilons(epsilons)?;
        source.validate()?;
        let n = images.dims()[0];
        check_batch("labels", n, labels.len())?;
        if n == 0 {
            return Err(invalid("images", 0, "needs at least one sample"));
        }
        // The weights are fixed for the whole evaluation: each layer's feedback tensor is formed
        // once.
        let _frozen = signsym_feedback::FrozenWeightsGuard::enter();
        let classes = model.outputs();
        check_labels(labels, n, classes)?;
        self.config.input_box.check("images", images)?;
        let bs = self.config.batch_size;
        let stage_source = self.stage_source(source);

        let mut clean = vec![false; n];
        let mut flags = Vec::new();
        let mut zero = 0;
        for range in chunks(n, bs) {
            let x = images.clone().slice(range.clone());
            let y = &labels[range.clone()];
            let scores = host(model.predict_scores(x.clone()))?;
            for (k, p) in argmax_rows(&scores, classes).into_iter().enumerate() {
                clean[range.start + k] = p == y[k];
            }
            if range.start == 0 {
                // Two more forwards of the first batch: do they agree?
                let again = host(model.predict_scores(x.clone()))?;
                let difference = normalised_difference(&scores, &again, classes);
                if difference > 1e-4 {
                    flags.push(SanityFlag::NonDeterministicForward {
                        max_difference: difference,
                    });
                }
            }
            let loss = |m: &dyn AttackModel, x: Tensor<4>| cross_entropy_sum(m.scores(x), y);
            let g = host(stage_source.input_gradient(model, &x, &loss, self.config.seed)?)?;
            let per = g.len() / y.len();
            zero += g
                .chunks(per)
                .filter(|row| row.iter().all(|&v| v == 0.0))
                .count();
        }
        if zero > 0 {
            flags.push(SanityFlag::ZeroGradients {
                source: stage_source.kind(),
                count: zero,
                samples: n,
            });
        }

        let mut stages: Vec<StageReport> = self
            .stages
            .iter()
            .map(|s| StageReport {
                attack: s.attack().name(),
                source: if s.attack().needs_gradient() {
                    stage_source.kind()
                } else {
                    SourceKind::Score
                },
                robust_accuracy: Vec::new(),
                attacked: Vec::new(),
                queries: Vec::new(),
                gradients: Vec::new(),
            })
            .collect();
        let mut robust_per_eps = Vec::with_capacity(epsilons.len());
        for &epsilon in epsilons {
            let mut robust = clean.clone();
            for (stage, report) in self.stages.iter().zip(&mut stages) {
                let todo: Vec<usize> = (0..n).filter(|&i| robust[i]).collect();
                let (mut queries, mut gradients) = (0u64, 0u64);
                if epsilon > 0.0 {
                    for part in todo.chunks(bs) {
                        let index = Tensor::<1, Int>::from_data(
                            TensorData::new(
                                part.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                                [part.len()],
                            ),
                            &images.device(),
                        );
                        let x = images.clone().select(0, index);
                        let y: Vec<usize> = part.iter().map(|&i| labels[i]).collect();
                        let out = stage.attack().run(model, &x, &y, epsilon, &stage_source)?;
                        for (k, &i) in part.iter().enumerate() {
                            if out.success[k] {
                                robust[i] = false;
                            }
                        }
                        queries += out.queries.iter().map(|&q| q as u64).sum::<u64>();
                        gradients += out.gradients.iter().map(|&g| g as u64).sum::<u64>();
                        tick();
                    }
                }
                report
                    .attacked
                    .push(if epsilon > 0.0 { todo.len() } else { 0 });
                report.queries.push(queries);
                report.gradients.push(gradients);
                report
                    .robust_accuracy
                    .push(robust.iter().filter(|&&r| r).count() as f64 / n as f64);
            }
            robust_per_eps.push(robust);
        }
        for (k, &epsilon) in epsilons.iter().enumerate() {
            let square = self
                .stages
                .iter()
                .position(|s| matches!(s, Stage::Square(_)));
            if let Some(s) = square
                && s > 0
            {
                let white_box = stages[s - 1].robust_accuracy[k];
                let after = stages[s].robust_accuracy[k];
                if after < white_box - 0.002 {
                    flags.push(SanityFlag::SquareBeatsWhiteBox {
                        epsilon,
                        white_box,
                        square: after,
                    });
                }
            }
        }
        let curve = curve_from(self.name(), epsilons, &robust_per_eps, 0.95)?;
        Ok(AutoAttackReport {
            version: self.config.version,
            norm: self.config.norm,
            source: stage_source.kind(),
            epsilons: epsilons.to_vec(),
            clean_accuracy: clean.iter().filter(|&&c| c).count() as f64 / n as f64,
            robust: robust_per_eps,
            curve,
            stages,
            flags,
        })
    }
}

/// The largest L2 distance between matching rows of two score batches after normalising each
/// row to unit length (AutoAttack's randomisation check).
fn normalised_difference(a: &[f32], b: &[f32], classes: usize) -> f64 {
    fn unit(row: &[f32]) -> Vec<f64> {
        let n = row
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt()
            + 1e-10;
        row.iter().map(|v| f64::from(*v) / n).collect()
    }
    a.chunks(classes)
        .zip(b.chunks(classes))
        .map(|(x, y)| {
            unit(x)
                .iter()
                .zip(unit(y))
                .map(|(p, q)| (p - q).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .fold(0.0, f64::max)
}
