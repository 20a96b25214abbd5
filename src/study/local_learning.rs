//! The representation study of arXiv 2405.00679 with Krotov and Hopfield's local rule: a layer
//! of competing hidden units learned without labels (frozen), a linear head trained with BP on
//! top (the hybrid), against the same architecture trained end to end with BP, alone and with
//! L2, Jacobian and hidden-layer spectral penalties. Each network is measured the same way:
//! clean accuracy, accuracy under Gaussian and uniform noise of growing L2 norm, FGSM and PGD
//! with the exact gradient, the smallest adversarial L2 distance HopSkipJump finds per image,
//! the Jacobian norm and the power-law exponent α of the hidden representation's covariance
//! spectrum (next to the pixels' own), and, for the hybrid, all of it again after pruning the
//! synapses whose variance over training exceeds a threshold.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Param;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use signsym_attacks::Norm;
use signsym_feedback::FeedbackRule;
use signsym_feedback::random::with_device_seed;
use signsym_local::{HiddenLayer, KrotovHopfieldConfig, LocalError, Trained};
use signsym_models::{Network, Task};

use super::datasets::{
    DECODE_BUDGET, DatasetName, Images, InputView, load_classification, subset_seed,
};
use super::device::DeviceChoice;
use super::error::{StudyError, at_least_one, invalid};
use super::evaluation::{AttackSpec, EntrySpec, Evaluation, SourceChoice, evaluate};
use super::experiments::{
    ShardFlags, Sharding, evaluation_rows, prepare_out, short, write_results,
};
use super::keys::Metric;
use super::output::{ResultRow, text_table};
use super::paper::{parse_dataset, parse_device};
use super::pipeline::{
    Method, NoiseKind, RowBase, Training, feature_spectrum, host, log_log, pixel_spectrum,
    power_law, regularized_methods, train_method,
};
use super::plot::{Panel, Series, plot_panels};

/// The settings of [`run`].
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct LocalLearningArgs {
    /// Comma-separated data sets (mnist, fashion-mnist, digits bundled; cifar10, cifar100,
    /// folder with --data-dir).
    #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist", value_parser = parse_dataset)]
    pub datasets: Vec<DatasetName>,
    /// Where a data set that is not bundled is (default `data/<name>`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Side of image files after decoding (default 32).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Training images (the rule's and the supervised top's; a seeded stratified draw).
    #[arg(long, default_value_t = 10000)]
    pub train_examples: usize,
    /// Test images for clean accuracy.
    #[arg(long, default_value_t = 10000)]
    pub test_examples: usize,
    /// Test images perturbed and attacked (and used for the representation measures).
    #[arg(long, default_value_t = 1000)]
    pub attack_examples: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 1000)]
    pub hidden: usize,
    /// The rule's metric exponent p.
    #[arg(long, default_value_t = 2.0)]
    pub p: f64,
    /// The rank of the inhibited unit.
    #[arg(long, default_value_t = 2)]
    pub k: usize,
    /// The inhibition's strength Δ.
    #[arg(long, default_value_t = 0.4)]
    pub delta: f64,
    /// Epochs of the rule.
    #[arg(long, default_value_t = 100)]
    pub rule_epochs: usize,
    /// The rule's initial learning rate (annealed linearly to 0).
    #[arg(long, default_value_t = 0.1)]
    pub rule_lr: f64,
    /// The power n of the activation `ReLU(s·x·W)^n`.
    #[arg(long, default_value_t = 3.0)]
    pub power: f64,
    /// Epochs of the supervised training (the hybrid's head, the BP networks).
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Batch size of the supervised training.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// L∞ budgets of FGSM and PGD (exact gradient).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1")]
    pub epsilons: Vec<f64>,
    /// PGD steps.
    #[arg(long, default_value_t = 10)]
    pub eval_steps: usize,
    /// L2 norms of the random perturbations.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub noise_norms: Vec<f64>,
    /// Images attacked with HopSkipJump (L2; 0 skips it).
    #[arg(long, default_value_t = 50)]
    pub hsj_examples: usize,
    /// HopSkipJump's queries per image.
    #[arg(long, default_value_t = 1000)]
    pub hsj_queries: usize,
    /// Synapses whose variance over the rule's epochs exceeds this are pruned (2405.00679).
    #[arg(long, default_value_t = 0.0015)]
    pub prune_threshold: f64,
    /// λ of the L2 penalty of the BP variant.
    #[arg(long, default_value_t = 1e-3)]
    pub l2: f64,
    /// λ of the Jacobian penalty of the BP variant.
    #[arg(long, default_value_t = 1e-5)]
    pub jacobian: f64,
    /// γ of the spectral penalty of the BP variant (the hidden layer only).
    #[arg(long, default_value_t = 0.01)]
    pub spectral: f64,
    /// Seed of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu`, `wgpu` or `cuda`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Output directory (default `out/local_learning_robustness`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Attack batches and sharded evaluation.
    #[command(flatten)]
    #[serde(flatten)]
    pub sharding: ShardFlags,
}

impl LocalLearningArgs {
    fn validate(&self) -> Result<(), StudyError> {
        if self.datasets.is_empty() {
            return Err(invalid("datasets", "[]", "name at least one data set"));
        }
        at_least_one(&[
            ("train-examples", self.train_examples),
            ("test-examples", self.test_examples),
            ("attack-examples", self.attack_examples),
            ("epochs", self.epochs),
            ("batch-size", self.batch_size),
            ("eval-steps", self.eval_steps),
        ])?;
        for &e in &self.epsilons {
            if !(e.is_finite() && (0.0..=1.0).contains(&e)) {
                return Err(invalid("epsilons", e, "must lie in [0, 1]"));
            }
        }
        for &r in &self.noise_norms {
            if !(r.is_finite() && r >= 0.0) {
                return Err(invalid("noise-norms", r, "must be finite and non-negative"));
            }
        }
        if !(self.prune_threshold.is_finite() && self.prune_threshold >= 0.0) {
            return Err(invalid(
                "prune-threshold",
                self.prune_threshold,
                "must be non-negative",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("lr", self.lr, "must be positive"));
        }
        self.rule().validate()?;
        self.sharding.validate()?;
        Ok(())
    }

    /// The rule's settings.
    pub fn rule(&self) -> KrotovHopfieldConfig {
        KrotovHopfieldConfig::new()
            .with_hidden(self.hidden)
            .with_p(self.p)
            .with_k(self.k)
            .with_delta(self.delta)
            .with_epochs(self.rule_epochs)
            .with_learning_rate(self.rule_lr)
            .with_seed(self.seed)
    }

    fn training(&self, backbone_lr: f64) -> Training {
        Training {
            backbone_lr,
            head_lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: 0.0,
            seed: self.seed,
            progress: !self.quiet,
        }
    }

    /// FGSM and PGD (exact gradient, Madry's random start) at each ε, HopSkipJump (L2) on the
    /// first images, accuracy under random noise, and the representation measures.
    fn evaluation(&self) -> Evaluation {
        let mut entries = vec![EntrySpec::new(AttackSpec::Fgsm, SourceChoice::Exact)];
        entries.extend(Evaluation::exact_pgd(Vec::new(), self.eval_steps, self.seed).entries);
        if self.hsj_examples > 0 {
            let hsj = AttackSpec::HopSkipJump {
                norm: Norm::L2,
                queries: self.hsj_queries,
            };
            entries.push(EntrySpec::new(hsj, SourceChoice::Exact).on_first(self.hsj_examples));
        }
        Evaluation {
            epsilons: self.epsilons.clone(),
            entries,
            representation: true,
            noise_norms: self.noise_norms.clone(),
            seed: self.seed,
            attack_batch: self.sharding.attack_batch,
            ..Evaluation::default()
        }
    }

    /// The networks trained end to end with BP: plain and with each penalty.
    pub fn bp_methods(&self) -> Vec<Method> {
        regularized_methods("bp", "bp + ", self.l2, self.jacobian, self.spectral)
    }
}

/// The names the hybrid's two rows carry.
pub const HYBRID: &str = "hybrid";
/// The hybrid after pruning.
pub const HYBRID_PRUNED: &str = "hybrid pruned";

/// Runs (or resumes) the study; returns the rows, the summary and the files written.
pub fn run(
    args: &LocalLearningArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Vec<ResultRow>, String, Vec<PathBuf>), StudyError> {
    args.validate()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| "out/local_learning_robustness".into());
    prepare_out(&out, args)?;
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let mut summaries = Vec::new();
    for &dataset in &args.datasets {
        let (r, summary, f) = run_dataset(args, dataset, &out, stop.clone())?;
        rows.extend(r);
        summaries.push(summary);
        files.extend(f);
    }
    if let Some(notice) = args.sharding.sharding().notice(&out) {
        return Ok((Vec::new(), notice, Vec::new()));
    }
    let summary = summaries.join("\n\n");
    println!("\n{summary}");
    files.extend(write_results(&out, args, &rows, &summary)?);
    Ok((rows, summary, files))
}

struct Data {
    train: Images,
    test: Images,
    attacked: Images,
    view: InputView,
}

fn load(args: &LocalLearningArgs, dataset: DatasetName) -> Result<Data, StudyError> {
    let dir = match (&args.data_dir, dataset.is_bundled()) {
        (Some(dir), false) => dir.clone(),
        _ => dataset.default_dir(),
    };
    let data = load_classification(dataset, &dir, args.image_size.unwrap_or(32), args.seed)?;
    let draw = |images: &Images, n: usize, purpose: &str| {
        images
            .stratified(n, subset_seed(args.seed, purpose))?
            .decoded(DECODE_BUDGET, !args.quiet)
    };
    let train = draw(&data.train, args.train_examples, "train")?;
    let test = draw(&data.test, args.test_examples, "test")?;
    let attacked = draw(&test, args.attack_examples, "attack")?;
    let [side, _] = train.size();
    let view = InputView {
        channels: train.channels(),
        side,
        normalize: None,
    };
    Ok(Data {
        train,
        test,
        attacked,
        view,
    })
}

fn stop_requested(stop: &Option<Arc<AtomicBool>>) -> bool {
    stop.as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
}

fn run_dataset(
    args: &LocalLearningArgs,
    dataset: DatasetName,
    out: &Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(Vec<ResultRow>, String, Vec<PathBuf>), StudyError> {
    let device = args.device.device()?;
    let data = load(args, dataset)?;
    let dir = out.join(dataset.to_string());
    let classes = data.train.num_classes();
    let all: Vec<usize> = (0..data.train.len()).collect();
    let train_pixels = data.view.pixels(&data.train, &all, &device)?;
    let [n, c, side, _] = train_pixels.dims();
    let inputs = c * side * side;
    let calibration = train_pixels.clone().slice(0..n.min(1000));

    println!(
        "\n{dataset}: Krotov–Hopfield rule, {} hidden units",
        args.hidden
    );
    let started = std::time::Instant::now();
    let trained: Trained = signsym_local::train(
        &host(train_pixels.inner(), "training images")?,
        inputs,
        &args.rule(),
        &device.clone().inner(),
        Some(&dir.join("checkpoints/krotov")),
        !args.quiet,
        stop.clone(),
    )
    .map_err(|e| match e {
        LocalError::Interrupted { .. } => StudyError::Interrupted { out: out.into() },
        other => other.into(),
    })?;
    let rule_seconds = started.elapsed().as_secs_f64();
    let deviation = trained
        .history
        .last()
        .map_or(f64::NAN, |e| e.norm_deviation);

    let evaluation = args.evaluation();
    let base = |setting: &str| RowBase {
        backbone: format!("fc{}", args.hidden),
        dataset: dataset.to_string(),
        rule: FeedbackRule::Bp,
        setting: setting.into(),
    };
    let mut rows = Vec::new();
    let attacked: Vec<usize> = (0..data.attacked.len()).collect();
    let probe = data.view.pixels(&data.attacked, &attacked, &device)?;
    let pixel = pixel_spectrum(&probe)?;
    let mut spectra = vec![Series {
        label: "pixels".into(),
        points: log_log(&pixel),
    }];

    // The hybrid: the rule's synapses, frozen, under a head trained with BP.
    // The head's initial weights from the seed alone, whatever else drew before.
    let start = with_device_seed(&device, args.seed, || {
        let mut layer = HiddenLayer::from_synapses(&trained.layer, args.power, c, side, &device)?;
        layer.calibrate(calibration.clone())?;
        Ok::<_, StudyError>(Network::new(layer, Task::classification(classes), &device)?)
    })?;
    let method = Method::standard(HYBRID, FeedbackRule::Bp);
    println!("{dataset}: {HYBRID} (head)");
    let (hybrid, _) = train_method(
        &start,
        false,
        &method,
        &data.train,
        &data.view,
        &args.training(0.0),
        dir.join(format!("checkpoints/{}", method.slug())),
        stop.clone(),
    )?;
    let sharding = args.sharding.sharding();
    // A network's rows: its evaluation (or this shard's part of it, or the merged shards).
    let evaluated = |net: &Network<HiddenLayer>, slug: &str, setting: &str| {
        evaluation_rows(&dir, slug, sharding, &evaluation, &base(setting), |shard| {
            let (test, attacked) = (&data.test, &data.attacked);
            evaluate(
                net,
                None,
                test,
                attacked,
                &data.view,
                &evaluation,
                shard,
                !args.quiet,
            )
        })
    };
    rows.extend(evaluated(&hybrid, &method.slug(), HYBRID)?);
    spectra.push(Series {
        label: HYBRID.into(),
        points: log_log(&feature_spectrum(&hybrid, &probe)?),
    });

    // Pruning: the same head over the synapses that settled.
    let mut pruned_layer = trained.layer;
    let pruned = pruned_layer.prune(args.prune_threshold, trained.snapshots)?;
    let share = pruned as f64 / (args.hidden * inputs) as f64;
    let mut pruned_net = hybrid.duplicate();
    let w = pruned_layer.synapses.val().transpose();
    pruned_net.backbone.layer.weight =
        Param::from_tensor(Tensor::<2>::from_data(w.into_data(), &device)).set_require_grad(false);
    let slug = format!(
        "{}-t{}",
        Method::standard(HYBRID_PRUNED, FeedbackRule::Bp).slug(),
        short(args.prune_threshold)
    );
    println!(
        "{dataset}: {HYBRID_PRUNED} ({pruned} synapses, {:.2} %)",
        100.0 * share
    );
    rows.extend(evaluated(&pruned_net, &slug, HYBRID_PRUNED)?);
    let mut row = ResultRow::clean(
        &format!("fc{}", args.hidden),
        &dataset.to_string(),
        "bp",
        Metric::PrunedShare,
        share,
        args.hidden * inputs,
    )
    .with_setting(HYBRID_PRUNED)
    .with_detail(format!("variance > {}", args.prune_threshold));
    row.epsilon = 0.0;
    rows.push(row);
    spectra.push(Series {
        label: HYBRID_PRUNED.into(),
        points: log_log(&feature_spectrum(&pruned_net, &probe)?),
    });

    // The baselines: the same architecture trained end to end.
    for method in args.bp_methods() {
        if stop_requested(&stop) {
            return Err(StudyError::Interrupted { out: out.into() });
        }
        println!("{dataset}: {}", method.name);
        let start = with_device_seed(&device, args.seed, || {
            let mut layer = HiddenLayer::trainable(args.hidden, args.power, c, side, &device)?;
            layer.calibrate(calibration.clone())?;
            Ok::<_, StudyError>(Network::new(layer, Task::classification(classes), &device)?)
        })?;
        let (net, _) = train_method(
            &start,
            false,
            &method,
            &data.train,
            &data.view,
            &args.training(args.lr),
            dir.join(format!("checkpoints/{}", method.slug())),
            stop.clone(),
        )?;
        rows.extend(evaluated(&net, &method.slug(), &method.name)?);
        spectra.push(Series {
            label: method.name.clone(),
            points: log_log(&feature_spectrum(&net, &probe)?),
        });
    }

    // A shard's outcomes are in its files; its rows are no table.
    if matches!(sharding, Sharding::Part(_)) {
        return Ok((rows, String::new(), Vec::new()));
    }
    // The pixels' own exponent, fitted over the same ranks as the features'.
    if let Some((fit, detail)) = power_law(&pixel)? {
        rows.push(
            ResultRow::clean(
                "pixels",
                &dataset.to_string(),
                "none",
                Metric::PowerLawAlpha,
                fit.alpha,
                probe.dims()[0],
            )
            .with_setting("pixels")
            .with_detail(detail),
        );
    }
    let settings: Vec<String> = std::iter::once(HYBRID.to_string())
        .chain(std::iter::once(HYBRID_PRUNED.to_string()))
        .chain(args.bp_methods().into_iter().map(|m| m.name))
        .collect();
    let summary = summary(
        args,
        dataset,
        &rows,
        &settings,
        rule_seconds,
        deviation,
        share,
    );
    let files = plots(args, dataset, &rows, &settings, spectra, &dir)?;
    Ok((rows, summary, files))
}

fn find<'a>(
    rows: &'a [ResultRow],
    setting: &str,
    metric: Metric,
    attack: &str,
    epsilon: f64,
) -> Option<&'a ResultRow> {
    rows.iter().find(|r| {
        r.setting == setting && r.metric == metric && r.attack == attack && r.epsilon == epsilon
    })
}

/// The median of the smallest adversarial distances of one network (∞ where none was found).
fn distances(rows: &[ResultRow], setting: &str) -> Vec<f64> {
    let mut d: Vec<f64> = rows
        .iter()
        .filter(|r| r.setting == setting && r.metric == Metric::MinAdversarialDistance)
        .map(|r| r.value)
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &LocalLearningArgs,
    dataset: DatasetName,
    rows: &[ResultRow],
    settings: &[String],
    rule_seconds: f64,
    deviation: f64,
    share: f64,
) -> String {
    let eps = args.epsilons.iter().copied().fold(0.0, f64::max);
    let noise = args.noise_norms.iter().copied().fold(0.0, f64::max);
    let pgd = format!("pgd{}-linf", args.eval_steps);
    let mut header = vec![
        "network".to_string(),
        "clean".into(),
        format!("gauss ‖δ‖₂={}", short(noise)),
        format!("unif ‖δ‖₂={}", short(noise)),
        format!("fgsm ε={}", short(eps)),
        format!("{pgd} ε={}", short(eps)),
    ];
    if args.hsj_examples > 0 {
        header.push("hsj median L2".into());
    }
    header.extend(["jacobian".into(), "α".into(), "α fit".into()]);
    let cell = |r: Option<&ResultRow>| match r {
        Some(r) => match (r.ci_low, r.ci_high) {
            (Some(lo), Some(hi)) => format!("{:.3} [{lo:.2},{hi:.2}]", r.value),
            _ => format!("{:.3}", r.value),
        },
        None => "-".into(),
    };
    let mut body = Vec::new();
    for s in settings {
        let mut line = vec![
            s.clone(),
            cell(find(rows, s, Metric::Accuracy, "none", 0.0)),
            cell(find(
                rows,
                s,
                Metric::NoiseAccuracy,
                NoiseKind::Gaussian.name(),
                noise,
            )),
            cell(find(
                rows,
                s,
                Metric::NoiseAccuracy,
                NoiseKind::Uniform.name(),
                noise,
            )),
            cell(find(rows, s, Metric::RobustAccuracy, "fgsm", eps)),
            cell(find(rows, s, Metric::RobustAccuracy, &pgd, eps)),
        ];
        if args.hsj_examples > 0 {
            let d = distances(rows, s);
            line.push(
                d.get(d.len() / 2)
                    .map_or("-".into(), |m| format!("{m:.2} (n={})", d.len())),
            );
        }
        let alpha = find(rows, s, Metric::PowerLawAlpha, "none", 0.0);
        line.push(cell(find(rows, s, Metric::JacobianNorm, "none", 0.0)));
        line.push(alpha.map_or("-".into(), |r| format!("{:.3}", r.value)));
        line.push(alpha.map_or(String::new(), |r| r.detail.clone()));
        body.push(line);
    }
    let pixels = find(rows, "pixels", Metric::PowerLawAlpha, "none", 0.0)
        .map_or("-".into(), |r| format!("{:.3} ({})", r.value, r.detail));
    format!(
        "{dataset}: {} hidden units (p = {}, k = {}, Δ = {}), rule {} epochs in {rule_seconds:.1} s, \
         median |Σ|W|^p − 1| = {deviation:.4}; pruned {:.2} % of synapses (variance > {}).\n\
         Accuracy on {} test images; noise, FGSM and PGD (exact gradient) on {} with 95 % Wilson \
         intervals; HopSkipJump L2 ({} queries) on {}; α of the hidden layer's covariance \
         spectrum (pixels: {pixels}).\n\n{}",
        args.hidden,
        args.p,
        args.k,
        args.delta,
        args.rule_epochs,
        100.0 * share,
        args.prune_threshold,
        args.test_examples,
        args.attack_examples,
        args.hsj_queries,
        args.hsj_examples,
        text_table(&header, &body)
    )
}

fn plots(
    args: &LocalLearningArgs,
    dataset: DatasetName,
    rows: &[ResultRow],
    settings: &[String],
    spectra: Vec<Series>,
    dir: &Path,
) -> Result<Vec<PathBuf>, StudyError> {
    let mut files = Vec::new();
    let spectra_panel = Panel {
        title: format!("{dataset}: covariance spectra of the hidden layer"),
        x_label: "log10 rank".into(),
        y_label: "log10 eigenvalue".into(),
        series: spectra,
    };
    files.extend(plot_panels(&[spectra_panel], 1, &dir.join("spectra"))?);
    let curve = |metric: Metric, attack: &str, xs: &[f64]| -> Vec<Series> {
        settings
            .iter()
            .map(|s| Series {
                label: s.clone(),
                points: std::iter::once(0.0)
                    .chain(xs.iter().copied())
                    .filter_map(|x| {
                        let r = if x == 0.0 {
                            find(rows, s, Metric::Accuracy, "none", 0.0)
                        } else {
                            find(rows, s, metric, attack, x)
                        };
                        r.map(|r| (x, r.value))
                    })
                    .collect(),
            })
            .collect()
    };
    let pgd = format!("pgd{}-linf", args.eval_steps);
    let panels = vec![
        Panel {
            title: "Gaussian noise".into(),
            x_label: "‖δ‖₂".into(),
            y_label: "accuracy".into(),
            series: curve(
                Metric::NoiseAccuracy,
                NoiseKind::Gaussian.name(),
                &args.noise_norms,
            ),
        },
        Panel {
            title: "uniform noise".into(),
            x_label: "‖δ‖₂".into(),
            y_label: "accuracy".into(),
            series: curve(
                Metric::NoiseAccuracy,
                NoiseKind::Uniform.name(),
                &args.noise_norms,
            ),
        },
        Panel {
            title: "FGSM, exact gradient".into(),
            x_label: "ε (L∞)".into(),
            y_label: "robust accuracy".into(),
            series: curve(Metric::RobustAccuracy, "fgsm", &args.epsilons),
        },
        Panel {
            title: format!("PGD-{}, exact gradient", args.eval_steps),
            x_label: "ε (L∞)".into(),
            y_label: "robust accuracy".into(),
            series: curve(Metric::RobustAccuracy, &pgd, &args.epsilons),
        },
    ];
    files.extend(plot_panels(&panels, 2, &dir.join("robustness"))?);
    if args.hsj_examples > 0 {
        // Empirical distribution: the share of images with a smallest adversarial within d.
        let series = settings
            .iter()
            .map(|s| {
                let d = distances(rows, s);
                let m = d.len().max(1) as f64;
                Series {
                    label: s.clone(),
                    points: d
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, v)| (*v, (i + 1) as f64 / m))
                        .collect(),
                }
            })
            .collect();
        let panel = Panel {
            title: format!(
                "{dataset}: smallest adversarial distance (HopSkipJump L2, {} queries)",
                args.hsj_queries
            ),
            x_label: "L2 distance".into(),
            y_label: "share of images".into(),
            series,
        };
        files.extend(plot_panels(&[panel], 1, &dir.join("hsj_distances"))?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_threshold_or_empty_set_list_is_refused() {
        let mut args = <LocalLearningArgs as clap::FromArgMatches>::from_arg_matches(
            &<LocalLearningArgs as clap::Args>::augment_args(clap::Command::new("t"))
                .get_matches_from(["t"]),
        )
        .unwrap();
        assert!(args.validate().is_ok());
        args.prune_threshold = f64::NAN;
        assert!(args.validate().is_err());
        args.prune_threshold = 0.0015;
        args.k = 1;
        assert!(args.validate().is_err());
        args.k = 2;
        args.datasets.clear();
        assert!(args.validate().is_err());
    }
}
