//! The fine-tuning loop (and BP pre-training, the same loop): Adam with one learning rate for the
//! backbone and another for the new head, evaluation and an atomic checkpoint every epoch, exact
//! resumption, and a cooperative stop flag for Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::config::Config;
use burn::module::{Module, ModuleDisplay, ParamGroup};
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use signsym_data::ImageDataset;
use signsym_feedback::{FeedbackRule, set_rule};
use signsym_losses::TaskLoss;

use crate::checkpoint::{self, EpochStats, LoopState, TermStats};
use crate::error::invalid;
use crate::term::{Step, Term};
use crate::{Backbone, FusedAdamConfig, ModelError, Network};

/// Settings of [`fine_tune`]; the defaults are the paper's (Adam β = (0.9, 0.999), weight decay
/// 5e-4, learning rate 1e-5 for the backbone and 1e-4 for the head, batch 32, 10 epochs).
#[derive(Config, Debug)]
pub struct FineTuneConfig {
    /// Learning rate of the backbone's parameters.
    #[config(default = 1e-5)]
    pub backbone_lr: f64,
    /// Learning rate of the head's parameters and of the loss's own (HyP² proxies).
    #[config(default = 1e-4)]
    pub head_lr: f64,
    /// Adam's L2 weight decay (added to the gradient, as PyTorch's `Adam(weight_decay=…)`).
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Adam's β₁.
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Adam's β₂.
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Adam's ε.
    #[config(default = 1e-8)]
    pub epsilon: f64,
    /// Weight of the task loss on the clean batch; 0 leaves it out (Madry's adversarial training,
    /// where an adversarial term takes its place).
    #[config(default = 1.0)]
    pub task_weight: f64,
    /// Batch size (the last, smaller batch of an epoch is kept).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Number of epochs.
    #[config(default = 10)]
    pub epochs: usize,
    /// Seed of the shuffling, the dropout and brSF draws, and the fixed feedback tensors.
    #[config(default = 0)]
    pub seed: u64,
    /// The rule for every layer; `None` keeps the rules already set on the network (per layer).
    #[config(default = "Some(FeedbackRule::Bp)")]
    pub rule: Option<FeedbackRule>,
    /// Batches of training data used to re-estimate the batch-norm running statistics (with
    /// fixed weights, as an equal-weight average) before each evaluation; 0 keeps the running
    /// averages of training. Early in training, with weights moving fast, the momentum-0.1
    /// averages lag behind and inference-mode accuracy falls far below training-mode accuracy.
    #[config(default = 0)]
    pub recalibrate_batches: usize,
    /// Directory for checkpoints; with one, an existing checkpoint there is resumed.
    pub checkpoint_dir: Option<PathBuf>,
    /// Show a progress bar (on a terminal).
    #[config(default = true)]
    pub progress: bool,
}

impl FineTuneConfig {
    /// BP pre-training from scratch: one learning rate for all parameters.
    pub fn pretraining(lr: f64) -> Self {
        Self::new()
            .with_backbone_lr(lr)
            .with_head_lr(lr)
            .with_rule(Some(FeedbackRule::Bp))
    }

    fn validate(&self) -> Result<(), ModelError> {
        for (name, value) in [("backbone_lr", self.backbone_lr), ("head_lr", self.head_lr)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(name, value, "must be finite and non-negative"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(
                "weight_decay",
                self.weight_decay,
                "must be finite and non-negative",
            ));
        }
        for (name, value) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(invalid(name, value, "must lie in [0, 1)"));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(invalid("epsilon", self.epsilon, "must be positive"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "must be at least 1"));
        }
        if !(self.task_weight.is_finite() && self.task_weight >= 0.0) {
            return Err(invalid(
                "task_weight",
                self.task_weight,
                "must be finite and non-negative",
            ));
        }
        Ok(())
    }

    /// What a resumed run must share with the run that wrote the checkpoint.
    fn fingerprint(&self, examples: usize) -> String {
        format!(
            "rule={:?} seed={} batch={} backbone_lr={} head_lr={} wd={} betas=({}, {}) eps={} task_weight={} examples={examples}",
            self.rule,
            self.seed,
            self.batch_size,
            self.backbone_lr,
            self.head_lr,
            self.weight_decay,
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.task_weight
        )
    }
}

/// Training batches: images and the loss's targets.
pub trait BatchSource {
    /// What the loss compares the output with.
    type Target;

    /// Number of examples.
    fn len(&self) -> usize;

    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every example once before training: finite pixels and targets a model with
    /// `outputs` outputs can be trained on. The loop then skips those checks per batch, which
    /// would read each batch back from the device. Defaults to no check.
    fn validate(&self, outputs: usize) -> Result<(), ModelError> {
        let _ = outputs;
        Ok(())
    }

    /// The examples at `indices`, as `[n, channels, height, width]` images and their targets.
    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Self::Target), ModelError>;
}

impl BatchSource for ImageDataset {
    type Target = Tensor<1, Int>;

    fn len(&self) -> usize {
        ImageDataset::len(self)
    }

    fn validate(&self, outputs: usize) -> Result<(), ModelError> {
        validate_classes(&self.images, &self.labels, outputs)
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<1, Int>), ModelError> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(ModelError::Data(format!(
                "index {i} beyond {} examples",
                self.len()
            )));
        }
        let batch = self.select(indices);
        let images = Tensor::<4>::from_data(
            TensorData::new(
                batch.images,
                [indices.len(), self.height, self.width, self.channels],
            ),
            device,
        )
        .permute([0, 3, 1, 2]);
        let labels: Vec<i64> = batch.labels.iter().map(|&c| c as i64).collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device);
        Ok((images, targets))
    }
}

/// Checks pixels for finiteness and class labels against `outputs` (the check of
/// [`BatchSource::validate`] for in-memory classification data).
pub fn validate_classes(
    pixels: &[f32],
    labels: &[usize],
    outputs: usize,
) -> Result<(), ModelError> {
    if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::Data(format!("pixel {i} is not finite")));
    }
    if let Some((i, &c)) = labels.iter().enumerate().find(|(_, c)| **c >= outputs) {
        return Err(ModelError::Data(format!(
            "label {c} of example {i} is not one of the model's {outputs} classes"
        )));
    }
    Ok(())
}

/// Training losses are read back from the device in blocks of this many steps (one stall per
/// block instead of one per step on a GPU).
const LOSS_READ_EVERY: usize = 16;

/// Scores a network after each epoch (higher is better).
pub trait Evaluator<M: Backbone> {
    /// The metric's name, for progress output.
    fn metric(&self) -> &'static str;

    /// Scores `network` (the training copy; evaluate it in inference mode).
    fn evaluate(&mut self, network: &Network<M>) -> Result<f64, ModelError>;
}

/// Top-1 accuracy on a labelled image set, in inference mode (batch-norm running statistics,
/// no dropout), without autodiff.
#[derive(Clone, Debug)]
pub struct AccuracyEvaluator<'a> {
    data: &'a ImageDataset,
    batch_size: usize,
}

impl<'a> AccuracyEvaluator<'a> {
    /// Evaluates on `data` in batches of `batch_size`.
    pub fn new(data: &'a ImageDataset, batch_size: usize) -> Self {
        Self {
            data,
            batch_size: batch_size.max(1),
        }
    }
}

impl<M: Backbone> Evaluator<M> for AccuracyEvaluator<'_> {
    fn metric(&self) -> &'static str {
        "accuracy"
    }

    fn evaluate(&mut self, network: &Network<M>) -> Result<f64, ModelError> {
        accuracy(network, self.data, self.batch_size)
    }
}

/// Top-1 accuracy of `network` on `data`, in inference mode, without autodiff
/// (signsym-metrics' [`TopKAccuracy`](signsym_metrics::TopKAccuracy)).
pub fn accuracy<M: Backbone>(
    network: &Network<M>,
    data: &ImageDataset,
    batch_size: usize,
) -> Result<f64, ModelError> {
    if data.is_empty() {
        return Err(ModelError::Data("empty evaluation set".into()));
    }
    let model = network.valid();
    let device = model.device()?;
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut top1 =
        signsym_metrics::TopKAccuracy::new(&[1]).map_err(|e| ModelError::Data(e.to_string()))?;
    for chunk in indices.chunks(batch_size.max(1)) {
        let (images, targets) = data.batch(chunk, &device)?;
        top1.update(model.try_forward(images)?, targets)
            .map_err(|e| ModelError::Data(e.to_string()))?;
    }
    Ok(top1.accuracy(1).unwrap_or(0.0))
}

/// A loss a training loop can hold as a module (its parameters, if any, are trained).
pub trait Objective: Module + ModuleDisplay + TaskLoss {}

impl<T: Module + ModuleDisplay + TaskLoss> Objective for T {}

/// A network and the loss it is trained with; the loss may have parameters of its own (HyP²'s
/// proxies), which train at the head's learning rate.
#[derive(Module, Debug)]
pub struct Trainee<M: Backbone, L: Objective> {
    /// The network.
    pub network: Network<M>,
    /// The loss.
    pub objective: L,
}

/// What [`fine_tune`] returns.
#[derive(Debug)]
pub struct FineTuned<M: Backbone, L: Objective> {
    /// The trained network (on the training device, in training mode).
    pub network: Network<M>,
    /// The loss, with its trained parameters.
    pub objective: L,
    /// One entry per epoch, resumed epochs included.
    pub history: Vec<EpochStats>,
}

/// Trains every parameter of `network` (nothing frozen) under `config` on `train`, scoring it
/// with `evaluator` after each epoch.
///
/// With `config.checkpoint_dir` set, a checkpoint is written atomically after every epoch (and
/// when `stop` is raised), and a checkpoint already there is resumed: the run continues with
/// the same numbers as an uninterrupted one (same batches, same draws). `stop`, if given, is
/// polled after each step; raising it (for example from a Ctrl-C handler) checkpoints and returns
/// [`ModelError::Interrupted`].
///
/// Deterministic for a given seed on the CPU backend. The network must live on an autodiff
/// device.
pub fn fine_tune<M, L, D>(
    network: Network<M>,
    objective: L,
    train: &D,
    evaluator: Option<&mut dyn Evaluator<M>>,
    config: &FineTuneConfig,
    stop: Option<Arc<AtomicBool>>,
) -> Result<FineTuned<M, L>, ModelError>
where
    M: Backbone,
    L: Objective,
    L::Target: Clone,
    D: BatchSource<Target = L::Target>,
{
    fine_tune_with(network, objective, &mut [], train, evaluator, config, stop)
}

/// [`fine_tune`] with more terms in the objective: each step minimises
/// `task_weight · task loss + Σ terms` (see [`Term`]), and each epoch logs every term's mean and
/// time ([`EpochStats::terms`]). The terms' states go into the checkpoints, so a resumed run
/// repeats the uninterrupted one bit for bit.
pub fn fine_tune_with<M, L, D>(
    network: Network<M>,
    objective: L,
    terms: &mut [Box<dyn Term<M, L::Target> + '_>],
    train: &D,
    evaluator: Option<&mut dyn Evaluator<M>>,
    config: &FineTuneConfig,
    stop: Option<Arc<AtomicBool>>,
) -> Result<FineTuned<M, L>, ModelError>
where
    M: Backbone,
    L: Objective,
    L::Target: Clone,
    D: BatchSource<Target = L::Target>,
{
    config.validate()?;
    if train.is_empty() {
        return Err(ModelError::Data("empty training set".into()));
    }
    if config.task_weight == 0.0 && terms.is_empty() {
        return Err(invalid(
            "task_weight",
            0,
            "leaves the objective empty: add a term or weight the task loss",
        ));
    }
    let device = network.device()?;
    if !device.is_autodiff() {
        return Err(ModelError::Data(
            "training needs the network on an autodiff device (`device.autodiff()`)".into(),
        ));
    }
    let mut network = network;
    if let Some(rule) = config.rule {
        set_rule(&mut network, rule, config.seed)?;
    }
    let mut trainee = Trainee { network, objective };
    let mut optimizer: ModuleOptimizer = FusedAdamConfig::new()
        .with_beta_1(config.beta_1 as f32)
        .with_beta_2(config.beta_2 as f32)
        .with_epsilon(config.epsilon as f32)
        .with_weight_decay(Some(config.weight_decay as f32))
        .init();

    let names: Vec<String> = std::iter::once("task".to_string())
        .chain(terms.iter().map(|t| t.name().to_string()))
        .collect();
    let mut fingerprint = config.fingerprint(train.len());
    for term in terms.iter() {
        fingerprint.push_str(&format!(" + {}", term.fingerprint()));
    }
    let mut state = LoopState {
        fingerprint: fingerprint.clone(),
        epoch: 0,
        step: 0,
        loss_sum: 0.0,
        loss_count: 0,
        seconds: 0.0,
        term_sums: vec![0.0; names.len()],
        term_seconds: vec![0.0; names.len()],
        term_states: Vec::new(),
        history: Vec::new(),
        model_file: String::new(),
        optimizer_file: String::new(),
        model_crc32: None,
        optimizer_crc32: None,
    };
    if let Some(dir) = &config.checkpoint_dir
        && let Some(saved) = checkpoint::read_state(dir)?
    {
        if saved.fingerprint != fingerprint {
            return Err(ModelError::Checkpoint {
                path: dir.clone(),
                message: format!(
                    "written by a run with other settings ({}), now ({fingerprint})",
                    saved.fingerprint
                ),
            });
        }
        optimizer = checkpoint::load(dir, &saved, &mut trainee, optimizer)?;
        for (term, value) in terms.iter_mut().zip(saved.term_states.iter()) {
            term.load_state(value.clone())?;
        }
        state = saved;
        state.term_sums.resize(names.len(), 0.0);
        state.term_seconds.resize(names.len(), 0.0);
    }
    let save = |trainee: &Trainee<M, L>,
                optimizer: &ModuleOptimizer,
                state: &mut LoopState,
                terms: &[Box<dyn Term<M, L::Target> + '_>]|
     -> Result<(), ModelError> {
        let Some(dir) = &config.checkpoint_dir else {
            return Ok(());
        };
        state.term_states = terms.iter().map(|t| t.state()).collect::<Result<_, _>>()?;
        checkpoint::save(dir, trainee, optimizer, state.clone())
    };

    train.validate(trainee.network.task().outputs())?;
    let learning_rates = learning_rates(&trainee, config);
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let mut evaluator = evaluator;
    while state.epoch < config.epochs {
        let epoch = state.epoch;
        let order = epoch_order(train.len(), config.seed, epoch);
        let bar = progress_bar(config, epoch, steps_per_epoch, state.step);
        let started = Instant::now();
        let mut pending: Vec<(usize, Vec<Tensor<1>>)> = Vec::new();
        for (step, chunk) in order.chunks(config.batch_size).enumerate().skip(state.step) {
            // Dropout masks and brSF draws come from this thread's scope, seeded per step: a
            // resumed run draws what the uninterrupted run drew, whatever other threads draw.
            let _draws =
                signsym_feedback::random::RandomScope::enter(step_seed(config.seed, epoch, step));
            let (images, targets) = train.batch(chunk, &device)?;
            // Values were validated once; the shape is known without reading the batch back.
            trainee.network.backbone.check_input(images.dims())?;
            let mut context = Step::new(
                &trainee.network,
                &images,
                &targets,
                (epoch, step, config.seed),
            );
            let mut values = Vec::with_capacity(names.len() + 1);
            let mut total: Option<Tensor<1>> = None;
            let mut add = |value: Tensor<1>, values: &mut Vec<Tensor<1>>| {
                values.push(value.clone().detach());
                total = Some(match total.take() {
                    Some(t) => t + value,
                    None => value,
                });
            };
            values.push(Tensor::zeros([1], &device));
            let timer = Instant::now();
            if config.task_weight > 0.0 {
                let output = context.clean_output();
                let task = trainee.objective.loss_validated(output, targets.clone())?;
                add(task.mul_scalar(config.task_weight), &mut values);
            } else {
                values.push(Tensor::zeros([1], &device));
            }
            state.term_seconds[0] += timer.elapsed().as_secs_f64();
            for (k, term) in terms.iter_mut().enumerate() {
                let timer = Instant::now();
                let value = term.value(&mut context)?;
                add(value, &mut values);
                state.term_seconds[k + 1] += timer.elapsed().as_secs_f64();
            }
            drop(context);
            let loss = total.expect("the objective has a term (checked above)");
            values[0] = loss.clone().detach();
            pending.push((step, values));
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            trainee = optimizer.step(learning_rates.clone(), trainee, grads);
            state.step = step + 1;
            let stopping = stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
                && state.step < steps_per_epoch;
            if pending.len() == LOSS_READ_EVERY || state.step == steps_per_epoch || stopping {
                read_losses(&mut pending, &mut state, epoch)?;
                bar.set_message(format!(
                    "loss {:.4}",
                    state.loss_sum / state.loss_count.max(1) as f64
                ));
            }
            bar.inc(1);
            if stopping {
                state.seconds += started.elapsed().as_secs_f64();
                bar.abandon_with_message("interrupted");
                save(&trainee, &optimizer, &mut state, terms)?;
                return Err(ModelError::Interrupted {
                    completed_epochs: state.history.len(),
                });
            }
        }
        let seconds = state.seconds + started.elapsed().as_secs_f64();
        if config.recalibrate_batches > 0 {
            let batches = order
                .chunks(config.batch_size)
                .take(config.recalibrate_batches);
            recalibrate_batch_norm(&mut trainee.network, train, batches, &device)?;
        }
        let metric = match evaluator.as_deref_mut() {
            Some(e) => Some(e.evaluate(&trainee.network)?),
            None => None,
        };
        let count = state.loss_count.max(1) as f64;
        let stats = EpochStats {
            epoch,
            train_loss: state.loss_sum / count,
            metric,
            seconds,
            terms: names
                .iter()
                .zip(&state.term_sums)
                .zip(&state.term_seconds)
                .filter(|((name, _), _)| name.as_str() != "task" || config.task_weight > 0.0)
                .map(|((name, sum), secs)| TermStats {
                    name: name.clone(),
                    mean: sum / count,
                    seconds: *secs,
                })
                .collect(),
        };
        bar.finish_with_message(match (metric, evaluator.as_deref()) {
            (Some(m), Some(e)) => format!("loss {:.4}  {} {m:.4}", stats.train_loss, e.metric()),
            _ => format!("loss {:.4}", stats.train_loss),
        });
        state.history.push(stats);
        state.epoch += 1;
        state.step = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        state.seconds = 0.0;
        state.term_sums.iter_mut().for_each(|v| *v = 0.0);
        state.term_seconds.iter_mut().for_each(|v| *v = 0.0);
        save(&trainee, &optimizer, &mut state, terms)?;
        if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) && state.epoch < config.epochs {
            return Err(ModelError::Interrupted {
                completed_epochs: state.history.len(),
            });
        }
    }
    Ok(FineTuned {
        network: trainee.network,
        objective: trainee.objective,
        history: state.history,
    })
}

/// Reads the pending step losses back (one transfer), in step order, into the epoch's sums; a
/// non-finite loss ends training with the step it came from.
fn read_losses(
    pending: &mut Vec<(usize, Vec<Tensor<1>>)>,
    state: &mut LoopState,
    epoch: usize,
) -> Result<(), ModelError> {
    if pending.is_empty() {
        return Ok(());
    }
    let width = pending[0].1.len();
    let steps: Vec<usize> = pending.iter().map(|(s, _)| *s).collect();
    let values = Tensor::cat(pending.drain(..).flat_map(|(_, v)| v).collect(), 0)
        .try_to_vec_as::<f32>()
        .map_err(|e| ModelError::Data(format!("loss values: {e:?}")))?;
    for (step, row) in steps.into_iter().zip(values.chunks(width)) {
        // Row: total loss, then the task loss and each term.
        let value = row[0];
        if !value.is_finite() {
            return Err(ModelError::Diverged {
                epoch,
                step,
                loss: value,
            });
        }
        state.loss_sum += f64::from(value);
        state.loss_count += 1;
        for (sum, v) in state.term_sums.iter_mut().zip(&row[1..]) {
            *sum += f64::from(*v);
        }
    }
    Ok(())
}

/// Re-estimates the batch-norm running statistics of `network` from `batches` of `data` with
/// the weights fixed: each batch norm's momentum is set to 1/(k+1) for the k-th batch, so the
/// result is the plain average of the batch statistics (as PyTorch's `swa_utils.update_bn`);
/// the network's own momenta are left as they are. Needs the network on an autodiff device in
/// training mode (batch norm only tracks statistics there).
pub fn recalibrate_batch_norm<'a, M: Backbone, D: BatchSource>(
    network: &mut Network<M>,
    data: &D,
    batches: impl IntoIterator<Item = &'a [usize]>,
    device: &Device,
) -> Result<(), ModelError> {
    let mut count = 0;
    network.backbone.visit_batch_norms_mut(&mut |_| count += 1);
    if count == 0 {
        return Ok(());
    }
    // Forward passes through a copy whose parameters record no graph: on autodiff, a forward
    // without a backward leaves every batch's activations on the graph (1.4 GB for 20 batches
    // of ResNet-18 at 32 × 32). A module and its clones share the batch norms' running
    // statistics, so what the copy tracks is the network's; the copy's momenta are its own.
    let mut frozen = network.clone().no_grad();
    for (k, indices) in batches.into_iter().enumerate() {
        let momentum = 1.0 / (k as f64 + 1.0);
        frozen
            .backbone
            .visit_batch_norms_mut(&mut |bn| bn.momentum = momentum);
        let (images, _) = data.batch(indices, device)?;
        // The forward pass alone updates the statistics.
        frozen.try_forward(images)?;
    }
    Ok(())
}

/// BP pre-training: [`fine_tune`] with every layer on BP (whatever `config.rule` says).
pub fn pretrain<M, L, D>(
    network: Network<M>,
    objective: L,
    train: &D,
    evaluator: Option<&mut dyn Evaluator<M>>,
    config: &FineTuneConfig,
    stop: Option<Arc<AtomicBool>>,
) -> Result<FineTuned<M, L>, ModelError>
where
    M: Backbone,
    L: Objective,
    L::Target: Clone,
    D: BatchSource<Target = L::Target>,
{
    let config = config.clone().with_rule(Some(FeedbackRule::Bp));
    fine_tune(network, objective, train, evaluator, &config, stop)
}

/// The head's and the loss's parameters at `head_lr`, everything else at `backbone_lr`.
fn learning_rates<M: Backbone, L: Objective>(
    trainee: &Trainee<M, L>,
    config: &FineTuneConfig,
) -> ModuleLearningRate {
    let head_ids =
        ParamGroup::ids_from_module((trainee.network.head.clone(), trainee.objective.clone()));
    ModuleLrScheduler::new(config.backbone_lr)
        .with_group(head_ids, config.head_lr)
        .step()
}

/// The shuffled example order of an epoch, drawn from the seed and the epoch alone.
pub(crate) fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ ((epoch as u64) << 32) ^ step as u64
}

fn progress_bar(config: &FineTuneConfig, epoch: usize, steps: usize, done: usize) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64).with_position(done as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
    bar
}
