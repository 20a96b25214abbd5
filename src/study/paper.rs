//! The paper's tables and figures (arXiv 2502.05925) as functions behind the example binaries:
//! the command-line settings they share ([`PaperArgs`]), a fine-tuned network per rule
//! (checkpointed, resumable), and one function per table or figure. Every function merges its
//! rows into `<out>/results.csv` and `results.json` (keyed by backbone, data set, rule, metric,
//! attack, source and ε), so runs for several backbones or data sets into one directory build up
//! the whole table.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use signsym_attacks::{
    Hag, HagConfig, HashDatabase, Norm, PAPER_EPSILONS, Sdha, SdhaConfig, attack_mode,
};
use signsym_attacks::{SourceKind, map_curve, robust_ap_per_query};
use signsym_feedback::FeedbackRule;
use signsym_feedback::random::with_device_seed;
use signsym_losses::{BinaryCrossEntropy, CrossEntropyConfig, HyP2Config};
use signsym_metrics::{MapConfig, PackedCodes, map_at_k, multilabel_metrics};
use signsym_models::{
    AlexNetConfig, Backbone, FineTuneConfig, LoadScope, Network, ResNetConfig, SmallCnnConfig,
    Task, TorchvisionWeights, Vgg16Config,
};

use super::datasets::{
    ClassBatches, DECODE_BUDGET, DatasetName, HashBatches, IMAGENET_STATS, Images, InputView,
    Labels, ViewedModel, accuracy, encode, load_classification, load_retrieval, subset_seed,
};
use super::device::DeviceChoice;
use super::error::{StudyError, invalid};
use super::evaluation::{AttackSpec, EntrySpec, Evaluation, EvaluationPart, evaluate};
pub use super::evaluation::{AutoAttackSubset, SourceChoice};
use super::keys::Metric;
use super::output::{Machine, ResultRow, read_json, text_table, write_csv, write_json};
use super::pipeline::{RowBase, train_network};
use super::plot::plot_panels;
use super::shard::{Shard, shard_files};
use super::summary::{robustness_panels, robustness_tables};

/// A backbone by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneName {
    /// torchvision's AlexNet.
    Alexnet,
    /// torchvision's VGG-16.
    Vgg16,
    /// torchvision's ResNet-18.
    Resnet18,
    /// The small CNN of the bundled-data runs (no torchvision weights).
    SmallCnn,
}

impl BackboneName {
    fn key(self) -> &'static str {
        match self {
            Self::Alexnet => "alexnet",
            Self::Vgg16 => "vgg16",
            Self::Resnet18 => "resnet18",
            Self::SmallCnn => "small_cnn",
        }
    }
}

/// The settings every paper example takes.
#[derive(Clone, Debug, clap::Args, Serialize, Deserialize)]
pub struct PaperArgs {
    /// The backbone (`small-cnn` is for the bundled data).
    #[arg(long, value_enum, default_value = "resnet18")]
    pub backbone: BackboneName,
    /// torchvision weights (`.pth` or safetensors) of the backbone; without them the backbone is
    /// pre-trained here with BP on `--pretrain-dataset`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The data set: mnist, fashion-mnist, digits (bundled), cifar10, cifar100, imagenet,
    /// imagenet100, coco, nus-wide.
    #[arg(long, default_value = "cifar10", value_parser = parse_dataset)]
    pub dataset: DatasetName,
    /// Where the data set is (default: `data/` for bundled sets, `data/<name>` otherwise).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// BP pre-training data when no `--weights` are given (bundled data only).
    #[arg(long, default_value = "mnist", value_parser = parse_dataset)]
    pub pretrain_dataset: DatasetName,
    /// Images for BP pre-training.
    #[arg(long, default_value_t = 12_000)]
    pub pretrain_examples: usize,
    /// Pre-training epochs and learning rate.
    #[arg(long, default_value_t = 1)]
    pub pretrain_epochs: usize,
    /// Pre-training learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub pretrain_lr: f64,
    /// Comma-separated rules among bp, usf, frsf, brsf, fa.
    #[arg(long, default_value = "bp,usf,frsf,brsf,fa", value_delimiter = ',')]
    pub rules: Vec<FeedbackRule>,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate of the backbone.
    #[arg(long, default_value_t = 1e-5)]
    pub backbone_lr: f64,
    /// Learning rate of the new head (and of HyP²'s proxies).
    #[arg(long, default_value_t = 1e-4)]
    pub head_lr: f64,
    /// Training images used (default: all).
    #[arg(long)]
    pub train_examples: Option<usize>,
    /// Test images (classification) or queries (retrieval) scored (default: all; retrieval
    /// splits generated from a seed draw this many queries, default 5,000).
    #[arg(long)]
    pub test_examples: Option<usize>,
    /// Database images for retrieval on single-label data (default: the training set).
    #[arg(long)]
    pub database_examples: Option<usize>,
    /// Input side of the backbone (default: the data's own, at least the backbone's minimum;
    /// 224 for image files).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu`, `wgpu` or `cuda` (the last two need their cargo feature).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Output directory (default: `out/<example>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn parse_dataset(s: &str) -> Result<DatasetName, String> {
    s.parse().map_err(|e: StudyError| e.to_string())
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: StudyError| e.to_string())
}

impl PaperArgs {
    fn data_dir(&self, name: DatasetName) -> PathBuf {
        match (&self.data_dir, name == self.dataset) {
            (Some(dir), true) => dir.clone(),
            _ => name.default_dir(),
        }
    }

    fn out(&self, example: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("out/{example}")))
    }

    fn validate(&self) -> Result<(), StudyError> {
        if self.rules.is_empty() {
            return Err(invalid("rules", "[]", "name at least one rule"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch-size", 0, "must be at least 1"));
        }
        if self.weights.is_some() && self.backbone == BackboneName::SmallCnn {
            return Err(invalid(
                "weights",
                "given",
                "the small CNN has no torchvision weights",
            ));
        }
        if self.weights.is_none() && !self.pretrain_dataset.is_bundled() {
            return Err(invalid(
                "pretrain-dataset",
                self.pretrain_dataset,
                "pre-training here uses a bundled data set; give --weights for ImageNet ones",
            ));
        }
        Ok(())
    }

    /// The fine-tuning settings for `rule`, checkpointing under `dir`.
    fn fine_tune_config(&self, rule: FeedbackRule, dir: PathBuf) -> FineTuneConfig {
        FineTuneConfig::new()
            .with_rule(Some(rule))
            .with_backbone_lr(self.backbone_lr)
            .with_head_lr(self.head_lr)
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_seed(self.seed)
            .with_recalibrate_batches(if self.backbone == BackboneName::Resnet18 {
                20
            } else {
                0
            })
            .with_progress(!self.quiet)
            .with_checkpoint_dir(Some(dir))
    }
}

/// What a study does with each backbone type: generic code the examples run through
/// [`with_backbone`].
trait Study {
    type Output;
    fn run<M: Backbone>(
        self,
        start: Network<M>,
        view: InputView,
    ) -> Result<Self::Output, StudyError>;
}

/// Builds the backbone `args` name with a classification head of `classes` outputs, loads the
/// torchvision weights or pre-trains it with BP on the bundled pre-training set, and hands it
/// to `study` with the input view it needs.
fn with_backbone<S: Study>(
    args: &PaperArgs,
    data_channels: usize,
    data_side: usize,
    out: &std::path::Path,
    device: &Device,
    stop: Option<Arc<AtomicBool>>,
    study: S,
) -> Result<S::Output, StudyError> {
    let pretrained = args.weights.is_some();
    let channels = if pretrained { 3 } else { data_channels };
    let min = match args.backbone {
        BackboneName::Alexnet => 63,
        BackboneName::Vgg16 => 32,
        BackboneName::Resnet18 => 32,
        BackboneName::SmallCnn => 4,
    };
    let side = args.image_size.unwrap_or(data_side.max(min));
    if args.backbone == BackboneName::SmallCnn && !side.is_multiple_of(4) {
        return Err(invalid(
            "image-size",
            side,
            "the small CNN needs a multiple of 4",
        ));
    }
    let view = InputView {
        channels,
        side,
        normalize: pretrained.then_some(IMAGENET_STATS),
    };
    let classes = args
        .pretrain_dataset
        .num_classes()
        .ok_or_else(|| invalid("pretrain-dataset", "folder", "must be a bundled data set"))?;
    // The initial weights (backbone, then head) from the seed alone, whatever other threads draw.
    fn seeded<M: Backbone>(
        device: &Device,
        seed: u64,
        classes: usize,
        init: impl FnOnce() -> Result<M, signsym_models::ModelError>,
    ) -> Result<Network<M>, StudyError> {
        with_device_seed(device, seed, || {
            Ok(Network::new(
                init()?,
                Task::classification(classes),
                device,
            )?)
        })
    }
    let seed = args.seed;
    match args.backbone {
        BackboneName::Alexnet => {
            let net = seeded(device, seed, classes, || {
                AlexNetConfig::new().with_in_channels(channels).init(device)
            })?;
            study.run(prepare(args, net, &view, out, device, stop)?, view)
        }
        BackboneName::Vgg16 => {
            let net = seeded(device, seed, classes, || {
                Vgg16Config::new().with_in_channels(channels).init(device)
            })?;
            study.run(prepare(args, net, &view, out, device, stop)?, view)
        }
        BackboneName::Resnet18 => {
            // Without ImageNet weights, small images keep their resolution (CIFAR stem).
            let net = seeded(device, seed, classes, || {
                ResNetConfig::resnet18()
                    .with_in_channels(channels)
                    .with_cifar_stem(!pretrained && side < 64)
                    .init(device)
            })?;
            study.run(prepare(args, net, &view, out, device, stop)?, view)
        }
        BackboneName::SmallCnn => {
            let net = seeded(device, seed, classes, || {
                SmallCnnConfig::new()
                    .with_in_channels(channels)
                    .with_side(side)
                    .init(device)
            })?;
            study.run(prepare(args, net, &view, out, device, stop)?, view)
        }
    }
}

/// The BP starting point: torchvision's weights, or BP pre-training on a bundled set
/// (checkpointed under `<out>/checkpoints/<backbone>-pretrain-<dataset>`).
fn prepare<M: Backbone>(
    args: &PaperArgs,
    mut network: Network<M>,
    view: &InputView,
    out: &std::path::Path,
    device: &Device,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Network<M>, StudyError> {
    if let Some(path) = &args.weights {
        let report = TorchvisionWeights::new(path).load_into(&mut network, LoadScope::Backbone)?;
        println!("{}: {} tensors loaded", path.display(), report.loaded.len());
        return Ok(network);
    }
    let name = args.pretrain_dataset;
    let data = load_classification(name, &args.data_dir(name), view.side, args.seed)?;
    let train = data
        .train
        .stratified(args.pretrain_examples, subset_seed(args.seed, "pretrain"))?;
    println!(
        "BP pre-training of {} on {} {name} images",
        args.backbone.key(),
        train.len()
    );
    let config = FineTuneConfig::pretraining(args.pretrain_lr)
        .with_epochs(args.pretrain_epochs)
        .with_batch_size(args.batch_size)
        .with_seed(args.seed)
        .with_progress(!args.quiet)
        .with_recalibrate_batches(if args.backbone == BackboneName::Resnet18 {
            20
        } else {
            0
        })
        .with_checkpoint_dir(Some(out.join(format!(
            "checkpoints/{}-pretrain-{name}",
            args.backbone.key()
        ))));
    let ce = CrossEntropyConfig::new().init(device)?;
    let (pretrained, _, _) = train_network(
        &network,
        None,
        ce,
        &mut [],
        &ClassBatches {
            images: &train,
            view,
        },
        &config,
        stop,
    )
    .map_err(to_out(out))?;
    Ok(pretrained)
}

/// A training's interruption reported with the run's output directory (what a rerun resumes).
fn to_out(out: &std::path::Path) -> impl Fn(StudyError) -> StudyError + '_ {
    move |e| e.resumed_from(out)
}

/// Merges `rows` into `<out>/results.csv` and `results.json` (a new row replaces an old one with
/// the same key) and returns all rows.
fn merge_rows(
    out: &std::path::Path,
    args: &PaperArgs,
    rows: Vec<ResultRow>,
) -> Result<Vec<ResultRow>, StudyError> {
    #[derive(Serialize, Deserialize)]
    struct Results {
        settings: Vec<PaperArgs>,
        /// The machine of each run in `settings` (vector features and threads decide the last
        /// digits; see `Machine`).
        #[serde(default)]
        machines: Vec<Machine>,
        rows: Vec<ResultRow>,
    }
    let json = out.join("results.json");
    let mut all = read_json::<Results>(&json)?.unwrap_or(Results {
        settings: Vec::new(),
        machines: Vec::new(),
        rows: Vec::new(),
    });
    all.rows
        .retain(|old| !rows.iter().any(|new| new.key() == old.key()));
    all.rows.extend(rows);
    all.settings.push(args.clone());
    all.machines.push(Machine::current());
    write_csv(&out.join("results.csv"), &all.rows)?;
    write_json(&json, &all)?;
    Ok(all.rows)
}

/// Merges `rows` (see [`merge_rows`]) and plots this backbone's and data set's robustness
/// curves as `<out>/<backbone>-<dataset>.svg` / `.png`; returns those rows and the plot paths.
fn merge_and_plot(
    out: &std::path::Path,
    args: &PaperArgs,
    rows: Vec<ResultRow>,
) -> Result<(Vec<ResultRow>, [PathBuf; 2]), StudyError> {
    let dataset = args.dataset.to_string();
    let mine: Vec<ResultRow> = merge_rows(out, args, rows)?
        .into_iter()
        .filter(|r| r.backbone == args.backbone.key() && r.dataset == dataset)
        .collect();
    let stem = out.join(format!("{}-{dataset}", args.backbone.key()));
    let plots = plot_panels(&robustness_panels(&mine), 2, &stem)?;
    Ok((mine, plots))
}

/// A row of a clean metric.
fn clean_row(
    args: &PaperArgs,
    rule: FeedbackRule,
    metric: Metric,
    value: f64,
    samples: usize,
) -> ResultRow {
    ResultRow::clean(
        args.backbone.key(),
        &args.dataset.to_string(),
        &rule.to_string(),
        metric,
        value,
        samples,
    )
}

/// The clean rows of one metric as a table: a line per backbone × data set, a column per rule.
fn clean_table(rows: &[ResultRow], family: &str) -> String {
    let chosen: Vec<&ResultRow> = rows
        .iter()
        .filter(|r| {
            r.source.is_none()
                && !r.metric.is_robust()
                && (r.metric.family() == family
                    || (family == "accuracy"
                        && matches!(r.metric, Metric::ExactMatch | Metric::ClassMap)))
        })
        .collect();
    let mut rules: Vec<String> = Vec::new();
    let mut lines: Vec<(String, String, Metric)> = Vec::new();
    for r in &chosen {
        if !rules.contains(&r.rule) {
            rules.push(r.rule.clone());
        }
        let line = (r.backbone.clone(), r.dataset.clone(), r.metric);
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let header: Vec<String> = ["backbone / dataset / metric".to_string()]
        .into_iter()
        .chain(rules.iter().cloned())
        .collect();
    let body: Vec<Vec<String>> = lines
        .iter()
        .map(|(b, d, m)| {
            std::iter::once(format!("{b} / {d} / {m}"))
                .chain(rules.iter().map(|rule| {
                    chosen
                        .iter()
                        .find(|r| {
                            &r.backbone == b && &r.dataset == d && r.metric == *m && &r.rule == rule
                        })
                        .map_or("-".into(), |r| format!("{:.4}", r.value))
                }))
                .collect()
        })
        .collect();
    text_table(&header, &body)
}

/// Fine-tunes (or resumes, or loads the finished checkpoint of) a copy of `start` under `rule`.
#[allow(clippy::too_many_arguments)]
fn tune_classifier<M: Backbone>(
    args: &PaperArgs,
    start: &Network<M>,
    rule: FeedbackRule,
    train: &Images,
    view: &InputView,
    out: &std::path::Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Network<M>, StudyError> {
    let device = start.device()?;
    let dir = out.join(format!(
        "checkpoints/{}-{}-classification/{rule}",
        args.backbone.key(),
        args.dataset
    ));
    let ce = CrossEntropyConfig::new().init(&device)?;
    println!("{rule}: fine-tuning on {} images", train.len());
    let (network, _, _) = train_network(
        start,
        Some(Task::classification(train.num_classes())),
        ce,
        &mut [],
        &ClassBatches {
            images: train,
            view,
        },
        &args.fine_tune_config(rule, dir),
        stop,
    )
    .map_err(to_out(out))?;
    Ok(network)
}

/// Multi-label classification (Table 1 on MS-COCO and NUS-WIDE): a copy of `start` with a
/// sigmoid head fine-tuned under `rule` with binary cross-entropy, scored by top-1-in-label-set
/// accuracy (the reading of the paper's Table 1), exact-match accuracy and per-class mAP.
#[allow(clippy::too_many_arguments)]
fn multilabel_rows<M: Backbone>(
    args: &PaperArgs,
    start: &Network<M>,
    rule: FeedbackRule,
    train: &Images,
    test: &Images,
    view: &InputView,
    out: &std::path::Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Vec<ResultRow>, StudyError> {
    let classes = train.num_classes();
    let dir = out.join(format!(
        "checkpoints/{}-{}-multilabel/{rule}",
        args.backbone.key(),
        args.dataset
    ));
    println!("{rule}: multi-label fine-tuning on {} images", train.len());
    let (network, _, _) = train_network(
        start,
        Some(Task::classification(classes)),
        BinaryCrossEntropy::new(),
        &mut [],
        &HashBatches {
            images: train,
            view,
        },
        &args.fine_tune_config(rule, dir),
        stop,
    )
    .map_err(to_out(out))?;
    let scores = encode(&network, test, view, args.batch_size.max(64))?;
    let all: Vec<usize> = (0..test.len()).collect();
    let report = multilabel_metrics(&scores, &test.multi_hot(&all)?, classes, 0.0)?;
    println!(
        "{rule}: top-1-in-set {:.4}, exact match {:.4}, class mAP {:.4} on {} images",
        report.top1_in_set,
        report.exact_match,
        report.class_map,
        test.len()
    );
    Ok([
        (Metric::Accuracy, report.top1_in_set),
        (Metric::ExactMatch, report.exact_match),
        (Metric::ClassMap, report.class_map),
    ]
    .into_iter()
    .map(|(metric, value)| clean_row(args, rule, metric, value, test.len()))
    .collect())
}

/// Fine-tunes a hashing copy of `start` under `rule` with HyP² and `bits`-bit codes.
#[allow(clippy::too_many_arguments)]
fn tune_hasher<M: Backbone>(
    args: &PaperArgs,
    start: &Network<M>,
    rule: FeedbackRule,
    train: &Images,
    view: &InputView,
    bits: usize,
    out: &std::path::Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Network<M>, StudyError> {
    let device = start.device()?;
    let hyp2 = HyP2Config::new(train.num_classes())
        .with_bits(bits)
        .init(&device)?;
    let dir = out.join(format!(
        "checkpoints/{}-{}-hashing{bits}/{rule}",
        args.backbone.key(),
        args.dataset
    ));
    println!("{rule}: HyP² fine-tuning on {} images", train.len());
    let (network, _, _) = train_network(
        start,
        Some(Task::hashing(bits)),
        hyp2,
        &mut [],
        &HashBatches {
            images: train,
            view,
        },
        &args.fine_tune_config(rule, dir),
        stop,
    )
    .map_err(to_out(out))?;
    Ok(network)
}

fn classification_data(args: &PaperArgs) -> Result<(Images, Images), StudyError> {
    let side = args.image_size.unwrap_or(224);
    let data = load_classification(args.dataset, &args.data_dir(args.dataset), side, args.seed)?;
    let train = match args.train_examples {
        Some(n) => data.train.stratified(n, subset_seed(args.seed, "train"))?,
        None => data.train,
    };
    let test = match args.test_examples {
        Some(n) => data.test.stratified(n, subset_seed(args.seed, "test"))?,
        None => data.test,
    };
    Ok((
        train.decoded(DECODE_BUDGET, !args.quiet)?,
        test.decoded(DECODE_BUDGET, !args.quiet)?,
    ))
}

fn retrieval_data(args: &PaperArgs) -> Result<super::datasets::RetrievalData, StudyError> {
    let side = args.image_size.unwrap_or(224);
    let queries = args.test_examples.unwrap_or(5000);
    let train = args.train_examples.unwrap_or(usize::MAX);
    let mut data = load_retrieval(
        args.dataset,
        &args.data_dir(args.dataset),
        side,
        queries,
        train.min(if args.dataset.is_hashing_list() {
            10_000
        } else {
            usize::MAX
        }),
        None,
        args.seed,
    )?;
    if let Some(n) = args.database_examples {
        data.database = data
            .database
            .stratified(n, subset_seed(args.seed, "database"))?;
    }
    if let Some(n) = args.test_examples {
        data.query = data.query.stratified(n, subset_seed(args.seed, "query"))?;
    }
    if let Some(n) = args.train_examples {
        data.train = data.train.stratified(n, subset_seed(args.seed, "train"))?;
    }
    Ok(data)
}

/// Table 1: top-1 accuracy per rule (one backbone and data set per call; rows accumulate).
pub fn table1_classification(
    args: &PaperArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    struct Run<'a> {
        args: &'a PaperArgs,
        train: Images,
        test: Images,
        out: PathBuf,
        stop: Option<Arc<AtomicBool>>,
    }
    impl Study for Run<'_> {
        type Output = Vec<ResultRow>;
        fn run<M: Backbone>(
            self,
            start: Network<M>,
            view: InputView,
        ) -> Result<Vec<ResultRow>, StudyError> {
            let mut rows = Vec::new();
            let multi_label = matches!(self.train.labels(), Labels::Multi(_));
            for &rule in &self.args.rules {
                if multi_label {
                    rows.extend(multilabel_rows(
                        self.args,
                        &start,
                        rule,
                        &self.train,
                        &self.test,
                        &view,
                        &self.out,
                        self.stop.clone(),
                    )?);
                    continue;
                }
                let net = tune_classifier(
                    self.args,
                    &start,
                    rule,
                    &self.train,
                    &view,
                    &self.out,
                    self.stop.clone(),
                )?;
                let acc = accuracy(&net, &self.test, &view, self.args.batch_size.max(64))?;
                println!(
                    "{rule}: top-1 accuracy {acc:.4} on {} images",
                    self.test.len()
                );
                rows.push(clean_row(
                    self.args,
                    rule,
                    Metric::Accuracy,
                    acc,
                    self.test.len(),
                ));
            }
            Ok(rows)
        }
    }
    args.validate()?;
    let out = args.out("table1_classification");
    let (train, test) = if args.dataset.is_hashing_list() {
        // Multi-label lists: the training images and the queries of the retrieval split.
        let data = retrieval_data(args)?;
        (data.train, data.query)
    } else {
        classification_data(args)?
    };
    let device = args.device.device()?;
    let [h, _] = train.size();
    let rows = with_backbone(
        args,
        train.channels(),
        h,
        &out,
        &device,
        stop.clone(),
        Run {
            args,
            train,
            test,
            out: out.clone(),
            stop,
        },
    )?;
    let all = merge_rows(&out, args, rows)?;
    Ok(format!(
        "Top-1 accuracy (results in {})\n{}",
        out.display(),
        clean_table(&all, "accuracy")
    ))
}

/// Table 2: mAP@k of 32-bit HyP² codes per rule.
pub fn table2_retrieval(
    args: &PaperArgs,
    bits: usize,
    top_k: Option<usize>,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    struct Run<'a> {
        args: &'a PaperArgs,
        data: super::datasets::RetrievalData,
        bits: usize,
        top_k: usize,
        out: PathBuf,
        stop: Option<Arc<AtomicBool>>,
    }
    impl Study for Run<'_> {
        type Output = Vec<ResultRow>;
        fn run<M: Backbone>(
            self,
            start: Network<M>,
            view: InputView,
        ) -> Result<Vec<ResultRow>, StudyError> {
            let mut rows = Vec::new();
            let batch = self.args.batch_size.max(64);
            for &rule in &self.args.rules {
                let net = tune_hasher(
                    self.args,
                    &start,
                    rule,
                    &self.data.train,
                    &view,
                    self.bits,
                    &self.out,
                    self.stop.clone(),
                )?;
                let q = PackedCodes::from_real(
                    &encode(&net, &self.data.query, &view, batch)?,
                    self.bits,
                )?;
                let db = PackedCodes::from_real(
                    &encode(&net, &self.data.database, &view, batch)?,
                    self.bits,
                )?;
                let report = map_at_k(
                    &q,
                    &self.data.query.label_sets()?,
                    &db,
                    &self.data.database.label_sets()?,
                    MapConfig::top_k(self.top_k),
                )?;
                println!(
                    "{rule}: mAP@{} {:.4} ({} queries, {} database items)",
                    self.top_k,
                    report.map,
                    q.len(),
                    db.len()
                );
                rows.push(clean_row(
                    self.args,
                    rule,
                    Metric::MapAtK(Some(self.top_k)),
                    report.map,
                    q.len(),
                ));
            }
            Ok(rows)
        }
    }
    args.validate()?;
    let out = args.out("table2_retrieval");
    let data = retrieval_data(args)?;
    let top_k = top_k
        .unwrap_or(args.dataset.map_top_k())
        .min(data.database.len());
    let device = args.device.device()?;
    let [h, _] = data.train.size();
    let channels = data.train.channels();
    let rows = with_backbone(
        args,
        channels,
        h,
        &out,
        &device,
        stop.clone(),
        Run {
            args,
            data,
            bits,
            top_k,
            out: out.clone(),
            stop,
        },
    )?;
    let all = merge_rows(&out, args, rows)?;
    Ok(format!(
        "mAP@k, {bits}-bit codes (results in {})\n{}",
        out.display(),
        clean_table(&all, "map")
    ))
}

/// Which attacks a robustness run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttackSet {
    /// FGSM and PGD (Figure 2).
    GradientClassification,
    /// HopSkipJump and Boundary Attack, L2 (Tables 3 and 4).
    DecisionBased,
}

/// Settings of the robustness runs beyond [`PaperArgs`].
#[derive(Clone, Debug)]
pub struct RobustnessArgs {
    /// L∞ (or, for the decision-based tables, L2) budgets.
    pub epsilons: Vec<f64>,
    /// Gradient sources of the white-box attacks.
    pub sources: Vec<SourceChoice>,
    /// PGD/HAG/SDHA steps.
    pub steps: usize,
    /// Query budget of the decision-based attacks.
    pub queries: usize,
    /// AutoAttack with the exact gradient on the first test images of a classification run
    /// (`None`: not run).
    pub autoattack: Option<AutoAttackSubset>,
    /// Images per attack batch, also the unit [`shard`](Self::shard) splits the test images in.
    pub attack_batch: usize,
    /// Attack only this part of the test images (train and score every rule as usual) and save
    /// per-sample outcomes under `<out>/shards/`; `merge` joins the parts.
    pub shard: Option<Shard>,
    /// Train nothing: join the shards saved under `<out>/shards/` for these settings into the
    /// rows and plots the unsharded run writes.
    pub merge: bool,
}

/// The command-line flags of sharded evaluation shared by the robustness examples.
#[derive(Clone, Debug, clap::Args)]
pub struct ShardArgs {
    /// Images per attack batch, also the unit of `--shard`.
    #[arg(long, default_value_t = 64)]
    pub attack_batch: usize,
    /// Attack only part I of N of the test images (every rule is still trained and scored);
    /// its per-sample outcomes go to `<out>/shards/`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Train nothing: join the N shards under `<out>/shards/` (written with these settings)
    /// into the rows, tables and plots of the unsharded run.
    #[arg(long, conflicts_with = "shard")]
    pub merge: bool,
}

impl RobustnessArgs {
    /// These settings with the sharding flags.
    pub fn with_sharding(self, flags: ShardArgs) -> Self {
        Self {
            attack_batch: flags.attack_batch,
            shard: flags.shard,
            merge: flags.merge,
            ..self
        }
    }

    /// What `set` measures on each fine-tuned network: FGSM and PGD (L∞) under each source
    /// and the reduced AutoAttack, or HopSkipJump and the Boundary Attack (L2).
    fn evaluation(&self, set: AttackSet, args: &PaperArgs) -> Evaluation {
        let (norm, mut entries) = match set {
            AttackSet::GradientClassification => {
                let pgd = AttackSpec::Pgd {
                    steps: self.steps,
                    random_start: false,
                };
                let mut entries = Vec::new();
                for attack in [AttackSpec::Fgsm, pgd] {
                    for &source in &self.sources {
                        entries.push(EntrySpec::new(attack.clone(), source));
                    }
                }
                (Norm::Linf, entries)
            }
            AttackSet::DecisionBased => {
                let decision = [
                    AttackSpec::HopSkipJump {
                        norm: Norm::L2,
                        queries: self.queries,
                    },
                    AttackSpec::Boundary {
                        queries: self.queries,
                    },
                ];
                let entries = decision
                    .into_iter()
                    .map(|a| EntrySpec::new(a, SourceChoice::Exact))
                    .collect();
                (Norm::L2, entries)
            }
        };
        if set == AttackSet::GradientClassification {
            entries.extend(self.autoattack.and_then(|a| a.entry()));
        }
        Evaluation {
            norm,
            epsilons: self.epsilons.clone(),
            entries,
            seed: args.seed,
            attack_batch: self.attack_batch,
            clean_batch: args.batch_size.max(64),
            ..Evaluation::default()
        }
    }

    /// The paper's ε grid, feedback and exact gradients, 5 steps, 10,000 queries.
    pub fn paper() -> Self {
        Self {
            epsilons: PAPER_EPSILONS.to_vec(),
            sources: vec![SourceChoice::Feedback, SourceChoice::Exact],
            steps: 5,
            queries: 10_000,
            autoattack: Some(AutoAttackSubset::default()),
            attack_batch: 64,
            shard: None,
            merge: false,
        }
    }
}

/// One rule's part of a robustness run: clean accuracy on every test image and the attacks on
/// one shard of them, with per-sample outcomes (what [`rows_from_shards`] recounts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RuleAttacks {
    rule: FeedbackRule,
    evaluation: EvaluationPart,
}

/// A shard's saved outcomes (per rule) and the settings they were made with.
#[derive(Serialize, Deserialize)]
struct ShardFile<T> {
    shard: Shard,
    settings: serde_json::Value,
    rules: Vec<T>,
}

/// The settings that decide a robustness run's numbers, for comparing shards (not where the
/// output goes, nor the progress display).
fn shard_settings(
    args: &PaperArgs,
    attacks: &RobustnessArgs,
) -> Result<serde_json::Value, StudyError> {
    let mut value =
        serde_json::to_value(args).map_err(|e| invalid("settings", e, "cannot be recorded"))?;
    if let Some(map) = value.as_object_mut() {
        map.remove("out");
        map.remove("quiet");
        map.insert("epsilons".into(), serde_json::json!(attacks.epsilons));
        map.insert(
            "sources".into(),
            serde_json::json!(format!("{:?}", attacks.sources)),
        );
        map.insert("steps".into(), serde_json::json!(attacks.steps));
        map.insert("queries".into(), serde_json::json!(attacks.queries));
        map.insert(
            "autoattack".into(),
            serde_json::json!(format!("{:?}", attacks.autoattack)),
        );
        map.insert(
            "attack_batch".into(),
            serde_json::json!(attacks.attack_batch),
        );
    }
    Ok(value)
}

/// The rows of the unsharded run from its shards' parts (`parts[k]`: shard `k + 1`'s rules).
fn rows_from_shards(
    args: &PaperArgs,
    evaluation: &Evaluation,
    parts: &[Vec<RuleAttacks>],
) -> Result<Vec<ResultRow>, StudyError> {
    let Some(first) = parts.first() else {
        return Err(invalid("shards", 0, "no shard to merge"));
    };
    let mut rows = Vec::new();
    for (k, head) in first.iter().enumerate() {
        let mine: Vec<EvaluationPart> = parts
            .iter()
            .map(|p| {
                p.get(k)
                    .filter(|r| r.rule == head.rule)
                    .map(|r| r.evaluation.clone())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("shards", head.rule, "hold different rules"))?;
        let merged = EvaluationPart::merge(&mine)?;
        for flag in merged.obfuscation(evaluation) {
            println!("{}: {flag}", head.rule);
        }
        let base = RowBase {
            backbone: args.backbone.key().into(),
            dataset: args.dataset.to_string(),
            rule: head.rule,
            setting: String::new(),
        };
        rows.extend(merged.rows(evaluation, &base)?);
    }
    Ok(rows)
}

fn robustness_run(
    args: &PaperArgs,
    attacks: &RobustnessArgs,
    set: AttackSet,
    example: &str,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    struct Run<'a> {
        args: &'a PaperArgs,
        attacks: &'a RobustnessArgs,
        set: AttackSet,
        train: Images,
        test: Images,
        out: PathBuf,
        stop: Option<Arc<AtomicBool>>,
    }
    impl Study for Run<'_> {
        type Output = Vec<RuleAttacks>;
        fn run<M: Backbone>(
            self,
            start: Network<M>,
            view: InputView,
        ) -> Result<Vec<RuleAttacks>, StudyError> {
            let a = self.attacks;
            let mut tuned = Vec::new();
            for &rule in &self.args.rules {
                let net = tune_classifier(
                    self.args,
                    &start,
                    rule,
                    &self.train,
                    &view,
                    &self.out,
                    self.stop.clone(),
                )?;
                tuned.push((rule, attack_mode(net)));
            }
            let bp = tuned
                .iter()
                .find(|(r, _)| *r == FeedbackRule::Bp)
                .map(|(_, n)| ViewedModel {
                    model: n,
                    view: &view,
                });
            let surrogate = bp.as_ref().map(|m| m as &dyn signsym_attacks::AttackModel);
            let evaluation = a.evaluation(self.set, self.args);
            let shard = a.shard.unwrap_or(Shard::WHOLE);
            let mut out = Vec::new();
            for (rule, net) in &tuned {
                out.push(RuleAttacks {
                    rule: *rule,
                    evaluation: evaluate(
                        net,
                        surrogate,
                        &self.test,
                        &self.test,
                        &view,
                        &evaluation,
                        shard,
                        !self.args.quiet,
                    )?,
                });
            }
            Ok(out)
        }
    }
    args.validate()?;
    if attacks.attack_batch == 0 {
        return Err(invalid("attack-batch", 0, "must be at least 1"));
    }
    let out = args.out(example);
    let key = format!("{example}-{}-{}", args.backbone.key(), args.dataset);
    let shards = out.join("shards");
    let settings = shard_settings(args, attacks)?;
    let parts = sharded_parts(attacks, &shards, &key, settings, || {
        let (train, test) = classification_data(args)?;
        let device = args.device.device()?;
        let [h, _] = train.size();
        with_backbone(
            args,
            train.channels(),
            h,
            &out,
            &device,
            stop.clone(),
            Run {
                args,
                attacks,
                set,
                train,
                test,
                out: out.clone(),
                stop,
            },
        )
    })?;
    let parts = match parts {
        Parts::All(parts) => parts,
        Parts::Saved(notice) => return Ok(notice),
    };
    let rows = rows_from_shards(args, &attacks.evaluation(set, args), &parts)?;
    let (mine, [svg, png]) = merge_and_plot(&out, args, rows)?;
    Ok(format!(
        "{}\n{}plots: {}, {}",
        clean_table(&mine, "accuracy"),
        robustness_tables(&mine),
        svg.display(),
        png.display()
    ))
}

/// The shards of `key` under `dir`, `1/N … N/N`, each written with `settings`.
fn read_shards<T: serde::de::DeserializeOwned>(
    dir: &std::path::Path,
    key: &str,
    settings: &serde_json::Value,
) -> Result<Vec<Vec<T>>, StudyError> {
    let mut parts = Vec::new();
    let files = shard_files(dir, key)?;
    let count = files.len();
    for (k, path) in files.into_iter().enumerate() {
        let shard = Shard::new(k + 1, count)?;
        let file = read_json::<ShardFile<T>>(&path)?
            .ok_or_else(|| invalid("shard file", path.display(), "vanished while merging"))?;
        if file.settings != *settings || file.shard != shard {
            return Err(invalid(
                "shard file",
                path.display(),
                "was written with other settings than these",
            ));
        }
        parts.push(file.rules);
    }
    Ok(parts)
}

/// Figure 2: FGSM and PGD robust accuracy against ε under each gradient source.
pub fn figure2_classification_robustness(
    args: &PaperArgs,
    attacks: &RobustnessArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    robustness_run(
        args,
        attacks,
        AttackSet::GradientClassification,
        "figure2_classification_robustness",
        stop,
    )
}

/// Tables 3 and 4: HopSkipJump and Boundary Attack (L2, decision-based) robust accuracy.
pub fn table3_4_blackbox(
    args: &PaperArgs,
    attacks: &RobustnessArgs,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    robustness_run(
        args,
        attacks,
        AttackSet::DecisionBased,
        "table3_4_blackbox",
        stop,
    )
}

/// One retrieval attack's part of a shard: per ε, the AP@k of each of the shard's queries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RetrievalEntry {
    attack: String,
    source: SourceKind,
    /// The k of mAP@k.
    top_k: usize,
    /// `[ε][query]`.
    per_query: Vec<Vec<f64>>,
}

/// One rule's part of a retrieval robustness run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RuleRetrieval {
    rule: FeedbackRule,
    entries: Vec<RetrievalEntry>,
}

/// Figure 3: HAG and SDHA robust mAP@k against ε under each gradient source.
pub fn figure3_retrieval_robustness(
    args: &PaperArgs,
    attacks: &RobustnessArgs,
    bits: usize,
    top_k: Option<usize>,
    stop: Option<Arc<AtomicBool>>,
) -> Result<String, StudyError> {
    struct Run<'a> {
        args: &'a PaperArgs,
        attacks: &'a RobustnessArgs,
        data: super::datasets::RetrievalData,
        bits: usize,
        top_k: usize,
        out: PathBuf,
        stop: Option<Arc<AtomicBool>>,
    }
    impl Study for Run<'_> {
        type Output = Vec<RuleRetrieval>;
        fn run<M: Backbone>(
            self,
            start: Network<M>,
            view: InputView,
        ) -> Result<Vec<RuleRetrieval>, StudyError> {
            let a = self.attacks;
            let device = start.device()?;
            let batch = self.args.batch_size.max(64);
            let unit = a.attack_batch;
            let n = self.data.query.len();
            // Whole attack batches of the unsharded run: a shard repeats their draws exactly.
            let range = a.shard.unwrap_or(Shard::WHOLE).range(n, unit);
            let indices: Vec<usize> = range.clone().collect();
            let queries = view.pixels(&self.data.query, &indices, &device)?;
            let query_labels = self.data.query.label_sets()?.slice(range.clone())?;
            let db_labels = self.data.database.label_sets()?;
            let hag: Hag = HagConfig::paper()
                .with_steps(a.steps)
                .with_seed(self.args.seed)
                .init()?;
            let sdha: Sdha = SdhaConfig::paper()
                .with_steps(a.steps)
                .with_seed(self.args.seed)
                .init()?;
            let mut tuned = Vec::new();
            for &rule in &self.args.rules {
                let net = tune_hasher(
                    self.args,
                    &start,
                    rule,
                    &self.data.train,
                    &view,
                    self.bits,
                    &self.out,
                    self.stop.clone(),
                )?;
                tuned.push((rule, attack_mode(net)));
            }
            let bp = tuned
                .iter()
                .find(|(r, _)| *r == FeedbackRule::Bp)
                .map(|(_, n)| ViewedModel {
                    model: n,
                    view: &view,
                });
            let surrogate = bp.as_ref().map(|m| m as &dyn signsym_attacks::AttackModel);
            let mut out = Vec::new();
            for (rule, net) in &tuned {
                let codes = encode(net, &self.data.database, &view, batch)?;
                let database = HashDatabase::new(
                    Tensor::<2>::from_data(
                        TensorData::new(codes, [self.data.database.len(), self.bits]),
                        &device,
                    ),
                    db_labels.clone(),
                )?;
                let model = ViewedModel {
                    model: net,
                    view: &view,
                };
                let mut entries = Vec::new();
                for attack in [&hag as &dyn signsym_attacks::RetrievalAttack, &sdha] {
                    for s in &a.sources {
                        let source = s.source(surrogate)?;
                        println!("{rule}: {} / {}", attack.name(), source.name());
                        let per_query = if range.is_empty() {
                            vec![Vec::new(); a.epsilons.len()]
                        } else {
                            robust_ap_per_query(
                                &model,
                                attack,
                                &queries,
                                &query_labels,
                                &database,
                                &a.epsilons,
                                &source,
                                MapConfig::top_k(self.top_k),
                                unit,
                            )?
                        };
                        entries.push(RetrievalEntry {
                            attack: attack.name(),
                            source: source.kind(),
                            top_k: self.top_k,
                            per_query,
                        });
                    }
                }
                out.push(RuleRetrieval {
                    rule: *rule,
                    entries,
                });
            }
            Ok(out)
        }
    }
    args.validate()?;
    if attacks.attack_batch == 0 {
        return Err(invalid("attack-batch", 0, "must be at least 1"));
    }
    let out = args.out("figure3_retrieval_robustness");
    let key = format!(
        "figure3_retrieval_robustness-{}-{}-{bits}",
        args.backbone.key(),
        args.dataset
    );
    let shards = out.join("shards");
    let mut settings = shard_settings(args, attacks)?;
    if let Some(map) = settings.as_object_mut() {
        map.insert("bits".into(), serde_json::json!(bits));
        map.insert("top_k".into(), serde_json::json!(top_k));
    }
    let parts = sharded_parts(attacks, &shards, &key, settings, || {
        let data = retrieval_data(args)?;
        let top_k = top_k
            .unwrap_or(args.dataset.map_top_k())
            .min(data.database.len());
        let device = args.device.device()?;
        let [h, _] = data.train.size();
        let channels = data.train.channels();
        with_backbone(
            args,
            channels,
            h,
            &out,
            &device,
            stop.clone(),
            Run {
                args,
                attacks,
                data,
                bits,
                top_k,
                out: out.clone(),
                stop,
            },
        )
    })?;
    let parts = match parts {
        Parts::All(parts) => parts,
        Parts::Saved(notice) => return Ok(notice),
    };
    let rows = retrieval_rows(args, &attacks.epsilons, &parts)?;
    let (mine, [svg, png]) = merge_and_plot(&out, args, rows)?;
    Ok(format!(
        "{}plots: {}, {}",
        robustness_tables(&mine),
        svg.display(),
        png.display()
    ))
}

/// The rows of a retrieval robustness run from its shards' parts (`parts[k]`: shard `k + 1`'s
/// rules): each attack's per-query APs concatenated over the shards, then averaged with
/// bootstrap intervals as the unsharded run does.
fn retrieval_rows(
    args: &PaperArgs,
    epsilons: &[f64],
    parts: &[Vec<RuleRetrieval>],
) -> Result<Vec<ResultRow>, StudyError> {
    let Some(first) = parts.first() else {
        return Err(invalid("shards", 0, "no shard to merge"));
    };
    let mut rows = Vec::new();
    for (k, head) in first.iter().enumerate() {
        for (j, entry) in head.entries.iter().enumerate() {
            let mut per_query = vec![Vec::new(); epsilons.len()];
            for part in parts {
                let theirs = part
                    .get(k)
                    .filter(|r| r.rule == head.rule)
                    .and_then(|r| r.entries.get(j))
                    .filter(|e| e.attack == entry.attack && e.source == entry.source)
                    .ok_or_else(|| {
                        invalid("shards", head.rule, "hold different rules or attacks")
                    })?;
                for (all, mine) in per_query.iter_mut().zip(&theirs.per_query) {
                    all.extend(mine.iter().copied());
                }
            }
            let curve = map_curve(
                format!("{}/{}", entry.attack, entry.source.name()),
                MapConfig::top_k(entry.top_k),
                epsilons,
                &per_query,
            )?;
            rows.extend(ResultRow::from_curve(
                &curve,
                args.backbone.key(),
                &args.dataset.to_string(),
                &head.rule.to_string(),
                &entry.attack,
                entry.source,
            ));
        }
    }
    Ok(rows)
}

/// What a robustness example's run has to tabulate: every shard's part, or nothing (this run was
/// one shard, saved).
enum Parts<T> {
    /// The parts of shards `1/N … N/N` (one part for an unsharded run).
    All(Vec<Vec<T>>),
    /// This shard's part was saved; the line says where.
    Saved(String),
}

/// The sharding scaffold of the robustness examples: with `--merge`, the parts of `key` saved
/// under `dir` with `settings`; else this run's part (`run`), saved there when it is a shard.
fn sharded_parts<T: Serialize + serde::de::DeserializeOwned>(
    attacks: &RobustnessArgs,
    dir: &std::path::Path,
    key: &str,
    settings: serde_json::Value,
    run: impl FnOnce() -> Result<Vec<T>, StudyError>,
) -> Result<Parts<T>, StudyError> {
    if attacks.merge {
        return Ok(Parts::All(read_shards(dir, key, &settings)?));
    }
    let part = run()?;
    Ok(match attacks.shard {
        Some(shard) => Parts::Saved(save_shard(dir, key, shard, settings, part)?),
        None => Parts::All(vec![part]),
    })
}

/// Writes one shard's parts as `<dir>/<key>.shard-I-of-N.json` with the settings they were made
/// with, and says where.
fn save_shard<T: Serialize>(
    dir: &std::path::Path,
    key: &str,
    shard: Shard,
    settings: serde_json::Value,
    rules: Vec<T>,
) -> Result<String, StudyError> {
    let path = dir.join(format!("{key}.{}.json", shard.tag()));
    write_json(
        &path,
        &ShardFile {
            shard,
            settings,
            rules,
        },
    )?;
    Ok(format!(
        "shard {shard} saved to {}; when all {} are in {}, rerun with --merge",
        path.display(),
        shard.count(),
        dir.display()
    ))
}
