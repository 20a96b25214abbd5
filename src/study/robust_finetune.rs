//! The main job: the whole study at small scale on the bundled data, on the CPU, in minutes.
//!
//! A small CNN is pre-trained with BP on MNIST; a copy is fine-tuned on Fashion-MNIST with a new
//! head under each rule (BP, uSF, frSF, brSF, FA); each fine-tuned network is scored on the full
//! Fashion-MNIST test set, attacked with FGSM and PGD over an ε grid under both
//! [`GradientSource::Feedback`](signsym_attacks::GradientSource::Feedback) (the paper's setting) and
//! [`GradientSource::Exact`](signsym_attacks::GradientSource::Exact) (BP's gradient
//! of the same weights), and with HopSkipJump (decision-based, L∞) on a small subset.
//!
//! Everything lands under one directory: `results.csv` and `results.json` (the same rows),
//! `robust_accuracy.svg`/`.png`, `summary.txt` (the terminal tables), `settings.json`, and per
//! rule `rules/<rule>.json` plus training checkpoints. A rerun with the same settings skips what
//! is finished and resumes a fine-tuning where it stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::config::Config;
use serde::{Deserialize, Serialize};
use signsym_attacks::{EntryReport, Norm, ObfuscationFlag, SourceKind};
use signsym_feedback::FeedbackRule;
use signsym_feedback::random::with_device_seed;
use signsym_losses::CrossEntropyConfig;
use signsym_models::{FineTuneConfig, Network, SmallCnnConfig, Task};

use super::datasets::{
    ClassBatches, Images, InputView, accuracy, load_classification, subset_seed,
};
use super::error::{StudyError, invalid};
use super::evaluation::{
    AttackSpec, AutoAttackSubset, EntrySpec, Evaluation, EvaluationPart, SourceChoice, evaluate,
};
use super::keys::Metric;
use super::output::{
    Machine, ResultRow, read_json, text_table, write_atomic, write_csv, write_json,
};
use super::pipeline::{Method, Training, train_method, train_network};
use super::plot::plot_panels;
use super::shard::{Shard, shard_files};
use super::summary::{robustness_panels, robustness_tables};
use super::{DatasetName, DeviceChoice};

/// Settings of the main job. The defaults finish in under ten minutes on two CPU cores.
///
/// Fine-tuning uses the paper's optimiser (Adam (0.9, 0.999), weight decay 5e-4, batch 32, a
/// lower learning rate for the backbone than for the new head) with a faster schedule: one
/// epoch on 12,000 images at 1e-3 / 1e-2 instead of 10–20 epochs at 1e-5 / 1e-4, because the
/// network is small and trained from a 1-epoch BP start.
#[derive(Config, Debug, PartialEq)]
pub struct RobustFinetuneConfig {
    /// The rules, fine-tuned in this order.
    #[config(
        default = "vec![FeedbackRule::Bp, FeedbackRule::USf, FeedbackRule::FrSf, FeedbackRule::BrSf, FeedbackRule::Fa]"
    )]
    pub rules: Vec<FeedbackRule>,
    /// MNIST training images for BP pre-training (of 60,000).
    #[config(default = 12_000)]
    pub pretrain_examples: usize,
    /// Pre-training epochs.
    #[config(default = 1)]
    pub pretrain_epochs: usize,
    /// Pre-training learning rate (all parameters).
    #[config(default = 2e-3)]
    pub pretrain_lr: f64,
    /// Fashion-MNIST training images for fine-tuning (of 60,000).
    #[config(default = 12_000)]
    pub train_examples: usize,
    /// Fine-tuning epochs.
    #[config(default = 1)]
    pub epochs: usize,
    /// Fine-tuning learning rate of the backbone.
    #[config(default = 1e-3)]
    pub backbone_lr: f64,
    /// Fine-tuning learning rate of the new head.
    #[config(default = 1e-2)]
    pub head_lr: f64,
    /// Batch size of training.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Fashion-MNIST test images for clean accuracy (of 10,000; the default is all).
    #[config(default = 10_000)]
    pub test_examples: usize,
    /// Test images attacked with FGSM and PGD (the first ones of the test set).
    #[config(default = 250)]
    pub attack_examples: usize,
    /// L∞ budgets (pixels in `[0, 1]`), increasing; 0 first gives clean accuracy on the subset.
    #[config(default = "vec![0.0, 0.02, 0.05, 0.1, 0.2, 0.3]")]
    pub epsilons: Vec<f64>,
    /// PGD steps (of size ε/3, as in the paper).
    #[config(default = 5)]
    pub pgd_steps: usize,
    /// Images per attack batch (FGSM, PGD, HopSkipJump, AutoAttack, the gradient cosine); also
    /// the unit `--shard` splits the attacked images in.
    #[config(default = 64)]
    pub attack_batch: usize,
    /// Test images attacked with HopSkipJump (0 skips it).
    #[config(default = 20)]
    pub hsj_examples: usize,
    /// HopSkipJump's query budget per image.
    #[config(default = 1000)]
    pub hsj_queries: usize,
    /// Test images attacked with AutoAttack, exact gradient (the first ones; 0 skips it).
    #[config(default = 50)]
    pub autoattack_examples: usize,
    /// AutoAttack's APGD iterations (the reference suite: 100).
    #[config(default = 20)]
    pub autoattack_steps: usize,
    /// AutoAttack's APGD-T runner-up classes (the reference suite: 9).
    #[config(default = 3)]
    pub autoattack_targets: usize,
    /// AutoAttack's Square queries per image (the reference suite: 5,000).
    #[config(default = 500)]
    pub autoattack_queries: usize,
    /// Channels of the small CNN's two convolutions.
    #[config(default = "[32, 64]")]
    pub channels: [usize; 2],
    /// Width of its hidden layer.
    #[config(default = 128)]
    pub hidden: usize,
    /// Seed of initialisation, shuffling, feedback draws and attacks.
    #[config(default = 0)]
    pub seed: u64,
    /// Directory with the bundled IDX files.
    #[config(default = "PathBuf::from(\"data\")")]
    pub data_dir: PathBuf,
    /// Output directory.
    #[config(default = "PathBuf::from(\"out/robust_finetune\")")]
    pub out: PathBuf,
    /// The backend.
    #[config(default = "DeviceChoice::Cpu")]
    pub device: DeviceChoice,
    /// Progress bars on a terminal.
    #[config(default = true)]
    pub progress: bool,
}

impl RobustFinetuneConfig {
    fn validate(&self) -> Result<(), StudyError> {
        if self.rules.is_empty() {
            return Err(invalid("rules", "[]", "name at least one rule"));
        }
        for (name, value) in [
            ("pretrain-examples", self.pretrain_examples),
            ("train-examples", self.train_examples),
            ("test-examples", self.test_examples),
            ("attack-examples", self.attack_examples),
            ("batch-size", self.batch_size),
            ("pgd-steps", self.pgd_steps),
            ("attack-batch", self.attack_batch),
        ] {
            if value == 0 {
                return Err(invalid(name, 0, "must be at least 1"));
            }
        }
        if self.epsilons.is_empty()
            || self.epsilons.windows(2).any(|w| w[1] <= w[0])
            || self.epsilons.iter().any(|e| !(0.0..=1.0).contains(e))
        {
            return Err(invalid(
                "epsilons",
                format!("{:?}", self.epsilons),
                "must increase strictly and lie in [0, 1]",
            ));
        }
        Ok(())
    }

    /// What each fine-tuned network is measured by: FGSM and PGD (the paper's steps of ε/3)
    /// under the feedback and the exact gradient on every attacked image, HopSkipJump (L∞) and
    /// the reduced AutoAttack (exact gradient) on the first ones, and the feedback/exact
    /// gradient cosine, in batches of `attack_batch`.
    pub fn evaluation(&self) -> Evaluation {
        let pgd = AttackSpec::Pgd {
            steps: self.pgd_steps,
            random_start: false,
        };
        let mut entries = Vec::new();
        for attack in [AttackSpec::Fgsm, pgd] {
            for source in [SourceChoice::Feedback, SourceChoice::Exact] {
                entries.push(EntrySpec::new(attack.clone(), source));
            }
        }
        if self.hsj_examples > 0 {
            let hsj = AttackSpec::HopSkipJump {
                norm: Norm::Linf,
                queries: self.hsj_queries,
            };
            entries.push(EntrySpec::new(hsj, SourceChoice::Exact).on_first(self.hsj_examples));
        }
        let autoattack = AutoAttackSubset {
            examples: self.autoattack_examples,
            steps: self.autoattack_steps,
            targets: self.autoattack_targets,
            queries: self.autoattack_queries,
        };
        entries.extend(autoattack.entry());
        Evaluation {
            epsilons: self.epsilons.clone(),
            entries,
            gradient_cosine: true,
            seed: self.seed,
            attack_batch: self.attack_batch,
            clean_batch: 500,
            ..Evaluation::default()
        }
    }

    /// The settings that decide the numbers (not where they go, nor the progress display).
    fn fingerprint(&self) -> Self {
        self.clone().with_out(PathBuf::new()).with_progress(true)
    }
}

/// What one rule's fine-tuning and attacks gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule.
    pub rule: FeedbackRule,
    /// Mean training loss of the last epoch.
    pub train_loss: f64,
    /// Fine-tuning wall time, seconds.
    pub train_seconds: f64,
    /// Top-1 accuracy on the Fashion-MNIST test images.
    pub clean_accuracy: f64,
    /// Test images behind `clean_accuracy`.
    pub test_examples: usize,
    /// FGSM and PGD under each gradient source, then HopSkipJump.
    pub entries: Vec<EntryReport>,
    /// Budgets where the feedback gradient's robust accuracy exceeds the exact one's by > 0.05.
    pub obfuscation: Vec<ObfuscationFlag>,
    /// Mean cosine between the feedback and the exact input gradient on the attacked images.
    pub gradient_cosine: f64,
    /// Wall time of the attacks, seconds.
    pub attack_seconds: f64,
}

/// One rule's fine-tuning and its attacks on one shard of the attacked images
/// (`rules/<rule>.shard-I-of-N.json`): per-sample outcomes, so that [`merge`] recounts the
/// shards into the [`RuleResult`] of the unsharded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleShard {
    /// The rule.
    pub rule: FeedbackRule,
    /// Which part of the attacked images.
    pub shard: Shard,
    /// Mean training loss of the last epoch.
    pub train_loss: f64,
    /// Fine-tuning wall time, seconds.
    pub train_seconds: f64,
    /// Clean accuracy on every Fashion-MNIST test image (each shard scores all of them), and
    /// the attacks and gradient cosines on this shard's images, per sample.
    pub evaluation: EvaluationPart,
    /// Wall time of the attacks, seconds.
    pub attack_seconds: f64,
    /// The machine that ran this shard.
    pub machine: Machine,
}

impl RuleShard {
    /// The shards of one rule, in order `1/N … N/N`, as the rule's result: training numbers
    /// from the first, attack entries and the gradient cosine recounted over all images,
    /// obfuscation flags from the recounted curves.
    pub fn combine(parts: &[RuleShard], evaluation: &Evaluation) -> Result<RuleResult, StudyError> {
        let Some(first) = parts.first() else {
            return Err(invalid("shards", 0, "no shard to merge"));
        };
        for (k, part) in parts.iter().enumerate() {
            if part.rule != first.rule || part.shard != Shard::new(k + 1, parts.len())? {
                return Err(invalid(
                    "shards",
                    format!("{} {}", part.rule, part.shard),
                    "must be one rule's shards 1/N … N/N, in order",
                ));
            }
            let clean = part.evaluation.clean_accuracy;
            if clean != first.evaluation.clean_accuracy
                || part.machine.vector_features != first.machine.vector_features
            {
                eprintln!(
                    "note: {} shard {} ran on {} (clean accuracy {clean}), shard 1 on {} ({}): \
                     machines with other vector units can differ in the last digits",
                    part.rule,
                    part.shard,
                    part.machine,
                    first.machine,
                    first.evaluation.clean_accuracy
                );
            }
        }
        let evaluated: Vec<EvaluationPart> = parts.iter().map(|p| p.evaluation.clone()).collect();
        let merged = EvaluationPart::merge(&evaluated)?;
        // The curves keep the counts; the per-sample outcomes stay in the shard files.
        let mut entries = merged.reports();
        for entry in &mut entries {
            entry.per_sample.clear();
        }
        Ok(RuleResult {
            rule: first.rule,
            train_loss: first.train_loss,
            train_seconds: first.train_seconds,
            clean_accuracy: merged.clean_accuracy,
            test_examples: merged.test_examples,
            entries,
            obfuscation: merged.obfuscation(evaluation),
            gradient_cosine: merged.gradient_cosine(),
            attack_seconds: parts.iter().map(|p| p.attack_seconds).sum(),
        })
    }
}

/// The main job's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustFinetuneReport {
    /// The settings.
    pub settings: RobustFinetuneConfig,
    /// Accuracy of the BP pre-trained network on 2,000 MNIST test images.
    pub pretrain_accuracy: f64,
    /// One entry per rule.
    pub rules: Vec<RuleResult>,
    /// Every number, as in `results.csv`.
    pub rows: Vec<ResultRow>,
    /// The machine the numbers were measured on (vector features, threads).
    #[serde(default = "Machine::current")]
    pub machine: Machine,
}

#[derive(Serialize, Deserialize)]
struct Pretrained {
    accuracy: f64,
}

/// Where the CSV, JSON, plots and table of a finished run are.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// `results.csv`.
    pub csv: PathBuf,
    /// `results.json`.
    pub json: PathBuf,
    /// `robust_accuracy.svg` and `.png`.
    pub plots: [PathBuf; 2],
    /// `summary.txt` (the terminal tables).
    pub summary: PathBuf,
}

/// The rows of one rule's results.
pub fn rule_rows(result: &RuleResult, backbone: &str, dataset: &str) -> Vec<ResultRow> {
    let rule = result.rule.to_string();
    let mut rows = vec![ResultRow::clean(
        backbone,
        dataset,
        &rule,
        Metric::Accuracy,
        result.clean_accuracy,
        result.test_examples,
    )];
    for entry in &result.entries {
        rows.extend(ResultRow::from_curve(
            &entry.curve,
            backbone,
            dataset,
            &rule,
            &entry.name,
            entry.source,
        ));
    }
    rows
}

/// Runs (or resumes) the main job. `stop`, when raised (Ctrl-C), stops at the next training
/// step or after the current attack suite, with everything finished saved.
pub fn run(
    config: &RobustFinetuneConfig,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(RobustFinetuneReport, Outputs), StudyError> {
    let (pretrain_accuracy, results) = train_and_attack(
        config,
        Shard::WHOLE,
        stop,
        |rule| config.out.join(format!("rules/{rule}.json")),
        // The whole run keeps the rule's result; its per-sample outcomes are not kept.
        |part| RuleShard::combine(std::slice::from_ref(&part), &config.evaluation()),
    )?;
    finish(config, pretrain_accuracy, results)
}

/// Runs (or resumes) one shard of the main job in `config.out`: trains every rule (or loads the
/// checkpoints found there, so copy a trained `--out` to each machine to train once), scores
/// the full test set, and attacks this shard's part of the attacked images, writing
/// `rules/<rule>.shard-I-of-N.json`. When every shard's files are in one `rules/`, [`merge`]
/// writes the tables the unsharded run writes, with the same numbers.
pub fn run_shard(
    config: &RobustFinetuneConfig,
    shard: Shard,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Vec<RuleShard>, StudyError> {
    let (_, parts) = train_and_attack(
        config,
        shard,
        stop,
        |rule| {
            config
                .out
                .join(format!("rules/{rule}.{}.json", shard.tag()))
        },
        Ok,
    )?;
    Ok(parts)
}

/// Joins the shards in `out/rules/` (every rule of `out/settings.json`, shards `1/N … N/N`)
/// into the main job's outputs in `out`: `results.csv`/`.json`, plots and summary with the
/// counts, robust accuracies and intervals of the unsharded run.
pub fn merge(out: &std::path::Path) -> Result<(RobustFinetuneReport, Outputs), StudyError> {
    let settings = out.join("settings.json");
    let config = read_json::<RobustFinetuneConfig>(&settings)?
        .ok_or_else(|| {
            invalid(
                "out",
                out.display(),
                "holds no settings.json: run the shards there first",
            )
        })?
        .with_out(out.to_path_buf());
    let pretrain_accuracy = read_json::<Pretrained>(&out.join("pretrain.json"))?
        .ok_or_else(|| {
            invalid(
                "out",
                out.display(),
                "holds no pretrain.json: run the shards there first",
            )
        })?
        .accuracy;
    let dir = out.join("rules");
    let mut results = Vec::new();
    for &rule in &config.rules {
        let mut parts = Vec::new();
        for path in shard_files(&dir, &rule.to_string())? {
            let part = read_json::<RuleShard>(&path)?
                .ok_or_else(|| invalid("shard file", path.display(), "vanished while merging"))?;
            parts.push(part);
        }
        let result = RuleShard::combine(&parts, &config.evaluation())?;
        write_json(&dir.join(format!("{rule}.json")), &result)?;
        results.push(result);
    }
    finish(&config, pretrain_accuracy, results)
}

/// Pre-training, then per rule: fine-tuning, clean accuracy and the attacks on `shard`, kept as
/// `keep(part)` at `rule_path(rule)`; a rule whose file is there is loaded instead.
fn train_and_attack<T: Serialize + serde::de::DeserializeOwned>(
    config: &RobustFinetuneConfig,
    shard: Shard,
    stop: Option<Arc<AtomicBool>>,
    rule_path: impl Fn(FeedbackRule) -> PathBuf,
    keep: impl Fn(RuleShard) -> Result<T, StudyError>,
) -> Result<(f64, Vec<T>), StudyError> {
    config.validate()?;
    let out = &config.out;
    let settings_path = out.join("settings.json");
    if let Some(previous) = read_json::<RobustFinetuneConfig>(&settings_path)?
        && previous.fingerprint() != config.fingerprint()
    {
        return Err(invalid(
            "out",
            out.display(),
            "holds a run with other settings (see its settings.json): choose another --out or \
             delete it",
        ));
    }
    write_json(&settings_path, config)?;
    let stopped = || stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));

    let device = config.device.device()?;
    let mnist = load_classification(DatasetName::Mnist, &config.data_dir, 28, config.seed)?;
    let fashion =
        load_classification(DatasetName::FashionMnist, &config.data_dir, 28, config.seed)?;
    // Seeded class-stratified subsets, one stream per purpose.
    let draw = |images: &Images, n: usize, purpose: &str| {
        images.stratified(n, subset_seed(config.seed, purpose))
    };
    let mnist_train = draw(&mnist.train, config.pretrain_examples, "pretrain")?;
    let mnist_test = draw(&mnist.test, 2000, "pretrain-test")?;
    let train = draw(&fashion.train, config.train_examples, "train")?;
    let test = draw(&fashion.test, config.test_examples, "test")?;
    let view = InputView {
        channels: 1,
        side: 28,
        normalize: None,
    };

    // BP pre-training on MNIST (checkpointed; a finished one is loaded, not redone).
    println!(
        "BP pre-training on {} MNIST images, then fine-tuning on {} Fashion-MNIST images under {}",
        mnist_train.len(),
        train.len(),
        config
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let network = with_device_seed(&device, config.seed, || {
        let backbone = SmallCnnConfig::new()
            .with_channels(config.channels)
            .with_hidden(config.hidden)
            .init(&device)?;
        Ok::<_, StudyError>(Network::new(backbone, Task::classification(10), &device)?)
    })?;
    let ce = CrossEntropyConfig::new().init(&device)?;
    let pre_config = FineTuneConfig::pretraining(config.pretrain_lr)
        .with_epochs(config.pretrain_epochs)
        .with_batch_size(config.batch_size)
        .with_seed(config.seed)
        .with_progress(config.progress)
        .with_checkpoint_dir(Some(out.join("checkpoints/pretrain")));
    let (pretrained, _, _) = train_network(
        &network,
        None,
        ce,
        &mut [],
        &ClassBatches {
            images: &mnist_train,
            view: &view,
        },
        &pre_config,
        stop.clone(),
    )
    .map_err(|e| e.resumed_from(out))?;
    let pretrain_path = out.join("pretrain.json");
    let pretrain_accuracy = match read_json::<Pretrained>(&pretrain_path)? {
        Some(p) => p.accuracy,
        None => {
            let a = accuracy(&pretrained, &mnist_test, &view, 500)?;
            write_json(&pretrain_path, &Pretrained { accuracy: a })?;
            a
        }
    };
    println!("pre-trained: MNIST test accuracy {pretrain_accuracy:.4}");

    let attack_set = draw(&test, config.attack_examples, "attack")?;
    let evaluation = config.evaluation();

    let mut results = Vec::new();
    for &rule in &config.rules {
        let path = rule_path(rule);
        if let Some(done) = read_json::<T>(&path)? {
            println!("{rule}: finished earlier ({}), skipped", path.display());
            results.push(done);
            continue;
        }
        if stopped() {
            return Err(StudyError::Interrupted { out: out.clone() });
        }
        println!("\n{rule}: fine-tuning");
        // Every rule starts from the same pre-trained backbone and the same new head: the
        // pipeline's training of a standard method (cross-entropy, the rule everywhere).
        let training = Training {
            backbone_lr: config.backbone_lr,
            head_lr: config.head_lr,
            epochs: config.epochs,
            batch_size: config.batch_size,
            weight_decay: FineTuneConfig::new().weight_decay,
            seed: config.seed,
            progress: config.progress,
        };
        let (network, history) = train_method(
            &pretrained,
            true,
            &Method::standard("standard", rule),
            &train,
            &view,
            &training,
            out.join(format!("checkpoints/{rule}")),
            stop.clone(),
        )
        .map_err(|e| e.resumed_from(out))?;
        let last = history.last();
        println!(
            "{rule}: fine-tuned; scoring {} test images and attacking{}",
            test.len(),
            if shard == Shard::WHOLE {
                String::new()
            } else {
                format!(" shard {shard}")
            }
        );
        let started = Instant::now();
        let evaluated = evaluate(
            &network,
            None,
            &test,
            &attack_set,
            &view,
            &evaluation,
            shard,
            config.progress,
        )?;
        println!(
            "{rule}: clean accuracy {:.4} on {} test images",
            evaluated.clean_accuracy, evaluated.test_examples
        );
        let result = RuleShard {
            rule,
            shard,
            train_loss: last.map_or(f64::NAN, |e| e.train_loss),
            train_seconds: history.iter().map(|e| e.seconds).sum(),
            evaluation: evaluated,
            attack_seconds: started.elapsed().as_secs_f64(),
            machine: Machine::current(),
        };
        let kept = keep(result)?;
        write_json(&path, &kept)?;
        results.push(kept);
    }
    Ok((pretrain_accuracy, results))
}

fn finish(
    config: &RobustFinetuneConfig,
    pretrain_accuracy: f64,
    results: Vec<RuleResult>,
) -> Result<(RobustFinetuneReport, Outputs), StudyError> {
    let out = &config.out;
    let rows: Vec<ResultRow> = results
        .iter()
        .flat_map(|r| rule_rows(r, "small_cnn", "fashion-mnist"))
        .collect();
    let report = RobustFinetuneReport {
        settings: config.clone(),
        pretrain_accuracy,
        rules: results,
        rows,
        machine: Machine::current(),
    };
    let csv = out.join("results.csv");
    let json = out.join("results.json");
    write_csv(&csv, &report.rows)?;
    write_json(&json, &report)?;
    let plots = plot_panels(
        &robustness_panels(&report.rows),
        3,
        &out.join("robust_accuracy"),
    )?;
    let summary_text = summary(&report);
    let summary = out.join("summary.txt");
    write_atomic(&summary, summary_text.as_bytes())?;
    println!("\n{summary_text}");
    Ok((
        report,
        Outputs {
            csv,
            json,
            plots,
            summary,
        },
    ))
}

/// The terminal tables: one line per rule, then the full curves.
pub fn summary(report: &RobustFinetuneReport) -> String {
    let eps = &report.settings.epsilons;
    // The summary column: the middle of the grid's non-zero budgets.
    let nonzero: Vec<f64> = eps.iter().copied().filter(|&e| e > 0.0).collect();
    let shown = nonzero
        .get(nonzero.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    let at = |r: &RuleResult, prefix: &str, kind: SourceKind| {
        r.entries
            .iter()
            .find(|e| e.attack.starts_with(prefix) && e.source == kind)
            .and_then(|e| e.curve.points.iter().find(|p| p.epsilon == shown))
            .map_or("-".to_string(), |p| format!("{:.3}", p.value))
    };
    let header: Vec<String> = [
        "rule".to_string(),
        "clean acc".into(),
        format!("FGSM fb ε={shown}"),
        "FGSM exact".to_string(),
        "PGD fb".to_string(),
        "PGD exact".to_string(),
        "HSJ".to_string(),
        "AutoAttack exact".to_string(),
        "grad cos".into(),
        "train s".into(),
        "attack s".into(),
    ]
    .to_vec();
    let body: Vec<Vec<String>> = report
        .rules
        .iter()
        .map(|r| {
            vec![
                r.rule.to_string(),
                format!("{:.4}", r.clean_accuracy),
                at(r, "fgsm", SourceKind::Feedback),
                at(r, "fgsm", SourceKind::Exact),
                at(r, "pgd", SourceKind::Feedback),
                at(r, "pgd", SourceKind::Exact),
                at(r, "hopskipjump", SourceKind::Decision),
                at(r, "autoattack", SourceKind::Exact),
                format!("{:.3}", r.gradient_cosine),
                format!("{:.0}", r.train_seconds),
                format!("{:.0}", r.attack_seconds),
            ]
        })
        .collect();
    let mut text = format!(
        "Fashion-MNIST after MNIST pre-training (BP, MNIST accuracy {:.4}); clean accuracy on {} \
         test images, robust accuracy on {} (HopSkipJump: {}; AutoAttack, reduced to APGD {} \
         steps, {} APGD-T targets, Square {} queries: {})\n\n",
        report.pretrain_accuracy,
        report.rules.first().map_or(0, |r| r.test_examples),
        report.settings.attack_examples,
        report.settings.hsj_examples,
        report.settings.autoattack_steps,
        report.settings.autoattack_targets,
        report.settings.autoattack_queries,
        report.settings.autoattack_examples
    );
    text.push_str(&text_table(&header, &body));
    text.push('\n');
    text.push_str(&robustness_tables(&report.rows));
    for flag in report.rules.iter().flat_map(|r| {
        r.obfuscation
            .iter()
            .map(move |f| format!("{}: {f}", r.rule))
    }) {
        text.push_str(&flag);
        text.push('\n');
    }
    text
}
