//! What the training-method experiments share (`fair_adversarial_training`, `spectral_transfer`,
//! `regularizer_comparison`): their command-line settings, the data (seeded stratified
//! subsets of a pre-training and a target set), the small CNN sized for the data, BP
//! pre-training, and the output directory (settings refused if they differ, results as CSV and
//! JSON, a summary, plots).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use signsym_feedback::FeedbackRule;
use signsym_feedback::random::with_device_seed;
use signsym_models::{Network, SmallCnn, SmallCnnConfig, Task};

use super::datasets::{
    DECODE_BUDGET, DatasetName, Images, InputView, load_classification, subset_seed,
};
use super::device::DeviceChoice;
use super::error::{StudyError, at_least_one, invalid};
use super::evaluation::{Evaluation, EvaluationPart, evaluate};
use super::output::{ResultRow, read_json, write_atomic, write_csv, write_json};
use super::paper::{parse_dataset, parse_device};
use super::pipeline::{Method, RowBase, Training, train_method};
use super::shard::{Shard, shard_files};

/// The settings every training-method experiment takes.
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct ExperimentArgs {
    /// The target data set (mnist, fashion-mnist, digits bundled; cifar10, cifar100, folder,
    /// imagenet with --data-dir).
    #[arg(long, default_value = "fashion-mnist", value_parser = parse_dataset)]
    pub dataset: DatasetName,
    /// Where the target data set is (default: `data/` for bundled sets, `data/<name>` else).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The pre-training data set (bundled; default: the experiment's).
    #[arg(long, value_parser = parse_dataset)]
    pub pretrain_dataset: Option<DatasetName>,
    /// Side of image files after decoding (default: the data's own, 32 for files); a multiple
    /// of 4.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Comma-separated rules among bp, usf, frsf, brsf, fa.
    #[arg(long, value_delimiter = ',', default_value = "bp,usf")]
    pub rules: Vec<FeedbackRule>,
    /// Images for BP pre-training (a seeded stratified draw).
    #[arg(long, default_value_t = 6000)]
    pub pretrain_examples: usize,
    /// Training images of each method (a seeded stratified draw).
    #[arg(long, default_value_t = 4000)]
    pub train_examples: usize,
    /// Test images for clean accuracy.
    #[arg(long, default_value_t = 2000)]
    pub test_examples: usize,
    /// Test images attacked (and used for the representation measures).
    #[arg(long, default_value_t = 500)]
    pub attack_examples: usize,
    /// Epochs of each training.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// L∞ budget of the evaluation (and of adversarial training).
    #[arg(long, default_value_t = 0.1)]
    pub epsilon: f64,
    /// PGD steps of the evaluation.
    #[arg(long, default_value_t = 10)]
    pub eval_steps: usize,
    /// Seed of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu`, `wgpu` or `cuda`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Output directory (default `out/<experiment>`).
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

/// The flags of sharded evaluation the experiments share: the attack batch (which decides the
/// numbers, so it is recorded with the settings) and which part to run (which does not).
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct ShardFlags {
    /// Images per attack batch, also the unit `--shard` splits the attacked images in.
    #[arg(long, default_value_t = 250)]
    #[serde(default = "default_attack_batch")]
    pub attack_batch: usize,
    /// Attack only part I of N of the attacked images (every network is still trained, or
    /// loaded from the checkpoints in `--out`); the per-image outcomes go to
    /// `<out>/shards/`.
    #[arg(long, value_name = "I/N")]
    #[serde(skip)]
    pub shard: Option<Shard>,
    /// Join the N shards under `<out>/shards/` into the tables of the unsharded run (nothing
    /// is attacked; networks are loaded from the checkpoints in `--out` where a measure needs
    /// them).
    #[arg(long, conflicts_with = "shard")]
    #[serde(skip)]
    pub merge: bool,
}

impl Default for ShardFlags {
    fn default() -> Self {
        Self {
            attack_batch: default_attack_batch(),
            shard: None,
            merge: false,
        }
    }
}

impl ShardFlags {
    /// Which part of the evaluation this run does.
    pub fn sharding(&self) -> Sharding {
        Sharding::from_flags(self.shard, self.merge)
    }

    pub(crate) fn validate(&self) -> Result<(), StudyError> {
        if self.attack_batch == 0 {
            return Err(invalid("attack-batch", 0, "must be at least 1"));
        }
        Ok(())
    }
}

fn default_attack_batch() -> usize {
    250
}

/// Which part of an evaluation a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharding {
    /// All of it.
    Whole,
    /// One shard, saved for a later merge.
    Part(Shard),
    /// None: the saved shards are joined.
    Merge,
}

impl Sharding {
    /// From the `--shard` and `--merge` flags.
    pub fn from_flags(shard: Option<Shard>, merge: bool) -> Self {
        match (shard, merge) {
            (_, true) => Self::Merge,
            (Some(s), false) => Self::Part(s),
            (None, false) => Self::Whole,
        }
    }

    /// For a shard run, the line that says where its outcomes went (it writes no tables).
    pub fn notice(&self, out: &Path) -> Option<String> {
        match self {
            Self::Part(shard) => Some(format!(
                "shard {shard} saved under {}; when all {} are there, rerun with --merge",
                out.join("shards").display(),
                shard.count()
            )),
            _ => None,
        }
    }
}

impl ExperimentArgs {
    pub(crate) fn validate(&self) -> Result<(), StudyError> {
        self.sharding.validate()?;
        if self.rules.is_empty() {
            return Err(invalid("rules", "[]", "name at least one rule"));
        }
        at_least_one(&[
            ("pretrain-examples", self.pretrain_examples),
            ("train-examples", self.train_examples),
            ("test-examples", self.test_examples),
            ("attack-examples", self.attack_examples),
            ("epochs", self.epochs),
            ("batch-size", self.batch_size),
            ("eval-steps", self.eval_steps),
        ])?;
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(invalid("epsilon", self.epsilon, "must lie in [0, 1]"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("lr", self.lr, "must be positive"));
        }
        Ok(())
    }

    /// Which part of the evaluation this run does.
    pub fn sharding(&self) -> Sharding {
        self.sharding.sharding()
    }

    /// PGD with the exact gradient at `--epsilon` (`--eval-steps` steps, Madry's random start)
    /// in batches of `--attack-batch`.
    pub fn evaluation(&self) -> Evaluation {
        Evaluation {
            attack_batch: self.sharding.attack_batch,
            ..Evaluation::exact_pgd(vec![self.epsilon], self.eval_steps, self.seed)
        }
    }

    /// The optimiser settings of every training.
    pub fn training(&self) -> Training {
        Training {
            backbone_lr: self.lr,
            head_lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: 0.0,
            seed: self.seed,
            progress: !self.quiet,
        }
    }
}

/// An experiment's data: seeded stratified subsets, the input view and the attacked images.
pub struct ExperimentData {
    /// Pre-training images.
    pub pretrain: Images,
    /// Training images of the target set.
    pub train: Images,
    /// Test images of the target set (clean accuracy).
    pub test: Images,
    /// Attacked test images.
    pub attacked: Images,
    /// How the network sees the images.
    pub view: InputView,
    /// The names of the target classes.
    pub classes: Vec<String>,
}

fn data_dir(args: &ExperimentArgs, name: DatasetName) -> PathBuf {
    match (&args.data_dir, name == args.dataset) {
        (Some(dir), true) => dir.clone(),
        _ => name.default_dir(),
    }
}

/// Loads the target set (and the pre-training set, `pretrain` or the target itself) and draws
/// the subsets.
pub fn load(args: &ExperimentArgs, pretrain: DatasetName) -> Result<ExperimentData, StudyError> {
    let file_side = args.image_size.unwrap_or(32);
    let target = load_classification(
        args.dataset,
        &data_dir(args, args.dataset),
        file_side,
        args.seed,
    )?;
    let [h, _] = target.train.size();
    let side = args.image_size.unwrap_or(h);
    if side < 4 || !side.is_multiple_of(4) {
        return Err(invalid(
            "image-size",
            side,
            "the small CNN needs a multiple of 4",
        ));
    }
    let draw = |images: &Images, n: usize, purpose: &str| {
        images
            .stratified(n, subset_seed(args.seed, purpose))?
            .decoded(DECODE_BUDGET, !args.quiet)
    };
    let train = draw(&target.train, args.train_examples, "train")?;
    let test = draw(&target.test, args.test_examples, "test")?;
    let attacked = draw(&test, args.attack_examples, "attack")?;
    let pre = if pretrain == args.dataset {
        draw(&target.train, args.pretrain_examples, "pretrain")?
    } else {
        let data = load_classification(pretrain, &data_dir(args, pretrain), file_side, args.seed)?;
        draw(&data.train, args.pretrain_examples, "pretrain")?
    };
    let view = InputView {
        channels: train.channels().max(pre.channels()),
        side,
        normalize: None,
    };
    Ok(ExperimentData {
        classes: target.class_names.clone(),
        pretrain: pre,
        train,
        test,
        attacked,
        view,
    })
}

/// The experiments' backbone: the main job's small CNN for the data's channels and side.
pub fn backbone(
    view: &InputView,
    classes: usize,
    seed: u64,
    device: &burn::tensor::Device,
) -> Result<Network<SmallCnn>, StudyError> {
    with_device_seed(device, seed, || {
        let backbone = SmallCnnConfig::new()
            .with_in_channels(view.channels)
            .with_side(view.side)
            .init(device)?;
        Ok(Network::new(
            backbone,
            Task::classification(classes),
            device,
        )?)
    })
}

/// BP pre-training by `method` (cross-entropy unless it adds terms), checkpointed under
/// `<out>/checkpoints/pretrain-<method>`.
pub fn pretrain(
    args: &ExperimentArgs,
    data: &ExperimentData,
    method: &Method,
    out: &Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Network<SmallCnn>, StudyError> {
    let device = args.device.device()?;
    let start = backbone(&data.view, data.pretrain.num_classes(), args.seed, &device)?;
    let training = Training {
        epochs: args.epochs,
        ..args.training()
    };
    let (net, _) = train_method(
        &start,
        false,
        method,
        &data.pretrain,
        &data.view,
        &training,
        out.join(format!("checkpoints/pretrain-{}", method.slug())),
        stop,
    )?;
    Ok(net)
}

/// The output directory of an experiment: refuses one that holds a run with other settings,
/// records these (the settings as serialised: what a run does not record, such as which shard
/// it attacks, may differ).
pub fn prepare_out<T: Serialize + for<'de> Deserialize<'de>>(
    out: &Path,
    settings: &T,
) -> Result<(), StudyError> {
    let path = out.join("settings.json");
    // Compared as recorded: what is not recorded (which shard a run does) is no other setting.
    let recorded =
        |s: &T| serde_json::to_value(s).map_err(|e| invalid("settings", e, "cannot be recorded"));
    if let Some(previous) = read_json::<T>(&path)?
        && recorded(&previous)? != recorded(settings)?
    {
        return Err(invalid(
            "out",
            out.display(),
            "holds a run with other settings (see its settings.json): choose another --out or \
             delete it",
        ));
    }
    write_json(&path, settings)
}

/// Writes `results.csv`, `results.json` (settings and rows) and `summary.txt`.
pub fn write_results<T: Serialize>(
    out: &Path,
    settings: &T,
    rows: &[ResultRow],
    summary: &str,
) -> Result<[PathBuf; 3], StudyError> {
    #[derive(Serialize)]
    struct Results<'a, T> {
        settings: &'a T,
        machine: super::output::Machine,
        rows: &'a [ResultRow],
    }
    let csv = out.join("results.csv");
    let json = out.join("results.json");
    let text = out.join("summary.txt");
    write_csv(&csv, rows)?;
    write_json(
        &json,
        &Results {
            settings,
            machine: super::output::Machine::current(),
            rows,
        },
    )?;
    write_atomic(&text, summary.as_bytes())?;
    Ok([csv, json, text])
}

/// The rows of one trained network, cached in `<out>/rows/<slug>.json` so a rerun skips what
/// is finished.
pub fn cached_rows(
    out: &Path,
    slug: &str,
    compute: impl FnOnce() -> Result<Vec<ResultRow>, StudyError>,
) -> Result<Vec<ResultRow>, StudyError> {
    let path = out.join(format!("rows/{slug}.json"));
    if let Some(rows) = read_json::<Vec<ResultRow>>(&path)? {
        return Ok(rows);
    }
    let rows = compute()?;
    write_json(&path, &rows)?;
    Ok(rows)
}

/// The rows of one network's `evaluation`, by `sharding`: the whole run computes them with
/// `part(Shard::WHOLE)` (cached in `<out>/rows/<slug>.json`); a shard run saves
/// `part(shard)` as `<out>/shards/<slug>.shard-I-of-N.json` and returns no rows; a merge joins
/// those files (`part` is not called: nothing is trained or attacked).
pub fn evaluation_rows(
    out: &Path,
    slug: &str,
    sharding: Sharding,
    evaluation: &Evaluation,
    base: &RowBase,
    part: impl FnOnce(Shard) -> Result<EvaluationPart, StudyError>,
) -> Result<Vec<ResultRow>, StudyError> {
    let rows = |part: &EvaluationPart| part.rows(evaluation, base);
    match sharding {
        Sharding::Whole => cached_rows(out, slug, || rows(&part(Shard::WHOLE)?)),
        Sharding::Part(shard) => {
            let path = out.join(format!("shards/{slug}.{}.json", shard.tag()));
            if read_json::<EvaluationPart>(&path)?.is_none() {
                write_json(&path, &part(shard)?)?;
            }
            Ok(Vec::new())
        }
        Sharding::Merge => cached_rows(out, slug, || {
            let mut parts = Vec::new();
            for path in shard_files(&out.join("shards"), slug)? {
                parts.push(read_json::<EvaluationPart>(&path)?.ok_or_else(|| {
                    invalid("shard file", path.display(), "vanished while merging")
                })?);
            }
            rows(&EvaluationPart::merge(&parts)?)
        }),
    }
}

/// What [`evaluation_rows`] asks for when it must compute: `method` trained from `start` with a
/// new head (or its finished checkpoint under `<out>/checkpoints/<slug>` loaded), then evaluated
/// on a shard.
pub fn trained_part<'a>(
    start: &'a Network<SmallCnn>,
    method: &'a Method,
    data: &'a ExperimentData,
    training: &'a Training,
    evaluation: &'a Evaluation,
    out: &'a Path,
    stop: Option<Arc<AtomicBool>>,
) -> impl FnOnce(Shard) -> Result<EvaluationPart, StudyError> + 'a {
    move |shard| {
        let dir = out.join(format!("checkpoints/{}", method.slug()));
        let (net, _) = train_method(
            start,
            true,
            method,
            &data.train,
            &data.view,
            training,
            dir,
            stop,
        )?;
        let (test, attacked) = (&data.test, &data.attacked);
        let progress = training.progress;
        evaluate(
            &net, None, test, attacked, &data.view, evaluation, shard, progress,
        )
    }
}

/// The transfer of a pre-trained backbone to the target set: a new head trained alone on the
/// frozen backbone (`probe`, BP), then the whole network fine-tuned under each rule
/// (`fine-tune`), each evaluated; the rows carry `<pretraining> / <transfer>` as their setting.
#[allow(clippy::too_many_arguments)]
pub fn transfer_rows(
    args: &ExperimentArgs,
    data: &ExperimentData,
    pretrained: &Network<SmallCnn>,
    pretraining: &str,
    evaluation: &Evaluation,
    out: &Path,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Vec<ResultRow>, StudyError> {
    let mut rows = Vec::new();
    let probe = (FeedbackRule::Bp, "probe", 0.0);
    let tunes = args.rules.iter().map(|&r| (r, "fine-tune", args.lr));
    for (rule, mode, backbone_lr) in std::iter::once(probe).chain(tunes) {
        if stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(StudyError::Interrupted { out: out.into() });
        }
        let setting = format!("{pretraining} / {mode}");
        let method = Method::standard(&setting, rule);
        let slug = method.slug();
        println!("{rule} / {setting}");
        let base = RowBase {
            backbone: "small_cnn".into(),
            dataset: args.dataset.to_string(),
            rule,
            setting: setting.clone(),
        };
        rows.extend(evaluation_rows(
            out,
            &slug,
            args.sharding(),
            evaluation,
            &base,
            |shard| {
                let training = Training {
                    backbone_lr,
                    ..args.training()
                };
                trained_part(
                    pretrained,
                    &method,
                    data,
                    &training,
                    evaluation,
                    out,
                    stop.clone(),
                )(shard)
            },
        )?);
    }
    Ok(rows)
}

/// `x` with `ε = value` rendered short for settings names (`0.5`, `1e-3`).
pub fn short(value: f64) -> String {
    let s = format!("{value}");
    if s.len() > 6 { format!("{value:e}") } else { s }
}
