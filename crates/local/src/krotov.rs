//! Krotov and Hopfield's local rule ("Unsupervised learning by competing hidden units", PNAS
//! 2019): hidden units compete for each input through global inhibition by rank, and the
//! winner's synapses move towards the input under a normalising Hebbian update.
//!
//! For a minibatch `X` (`[batch, N]`) and synapses `W` (`[hidden, N]`):
//! - currents `I = X · (sign(W) ∘ |W|^(p−1))ᵀ` (the p-norm metric, `[batch, hidden]`);
//! - per input, `g = +1` for the unit with the largest current, `−Δ` for the `k`-th, 0 else;
//! - `dW = gᵀ·X − (Σ_batch g ∘ I) ∘ W`, normalised by its largest entry, and
//!   `W ← W + ε_e · dW / max(max|dW|, precision)`, with `ε_e = ε₀ (1 − e/epochs)` annealed
//!   linearly over the epochs.
//!
//! The fixed points have unit p-norm (`Σ|W_μi|^p = 1`). Every draw (the initial synapses, the
//! epoch orders) comes from the seed; the update runs as tensor operations on any backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::config::Config;
use burn::module::{Module, Param};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::LocalError;

/// Settings of the rule; the defaults are the authors' MNIST notebook (p = 2, k = 2, Δ = 0.4,
/// ε₀ = 0.02, minibatches of 100, synapses drawn from N(0, 1)) with fewer hidden units and
/// epochs (the paper's MNIST network has 2,000 units, p = 3, k = 7).
#[derive(Config, Debug, PartialEq)]
pub struct KrotovHopfieldConfig {
    /// Hidden units.
    #[config(default = 400)]
    pub hidden: usize,
    /// The exponent p of the metric (p ≥ 2; 2 is Euclidean).
    #[config(default = 2.0)]
    pub p: f64,
    /// Rank of the inhibited unit (k ≥ 2).
    #[config(default = 2)]
    pub k: usize,
    /// Strength of the inhibition Δ.
    #[config(default = 0.4)]
    pub delta: f64,
    /// Initial learning rate ε₀.
    #[config(default = 0.02)]
    pub learning_rate: f64,
    /// Epochs (the learning rate reaches 0 after the last).
    #[config(default = 20)]
    pub epochs: usize,
    /// Inputs per update.
    #[config(default = 100)]
    pub batch_size: usize,
    /// The floor of the update's normaliser.
    #[config(default = 1e-30)]
    pub precision: f64,
    /// Seed of the initial synapses and the epoch orders.
    #[config(default = 0)]
    pub seed: u64,
    /// The share of the epochs after which epoch-end snapshots enter the synapse variance
    /// (0.5: the second half). The first epochs move every synapse from its random start to
    /// the unit sphere; counting them would call every synapse variable.
    #[config(default = 0.5)]
    pub variance_from: f64,
}

impl KrotovHopfieldConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), LocalError> {
        let bad = |name: &'static str, value: String, reason: &'static str| {
            Err(LocalError::InvalidConfig {
                name,
                value,
                reason,
            })
        };
        if self.hidden < 2 {
            return bad("hidden", self.hidden.to_string(), "needs at least 2 units");
        }
        if !(self.p.is_finite() && self.p >= 2.0) {
            return bad("p", self.p.to_string(), "must be finite and at least 2");
        }
        if self.k < 2 || self.k > self.hidden {
            return bad("k", self.k.to_string(), "must lie in 2..=hidden");
        }
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return bad(
                "delta",
                self.delta.to_string(),
                "must be finite and non-negative",
            );
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                self.learning_rate.to_string(),
                "must be positive",
            );
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs/batch_size", "0".into(), "must be at least 1");
        }
        if !(self.precision.is_finite() && self.precision > 0.0) {
            return bad("precision", self.precision.to_string(), "must be positive");
        }
        if !(0.0..1.0).contains(&self.variance_from) {
            return bad(
                "variance_from",
                self.variance_from.to_string(),
                "must lie in [0, 1)",
            );
        }
        Ok(())
    }

    /// Fresh synapses `[hidden, inputs]` from N(0, 1), drawn on the host from the seed.
    pub fn init(&self, inputs: usize, device: &Device) -> Result<KrotovHopfield, LocalError> {
        self.validate()?;
        if inputs == 0 {
            return Err(LocalError::InvalidConfig {
                name: "inputs",
                value: "0".into(),
                reason: "the layer needs at least one input",
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let normal = Normal::new(0.0f32, 1.0).expect("valid");
        let values: Vec<f32> = (0..self.hidden * inputs)
            .map(|_| normal.sample(&mut rng))
            .collect();
        let shape = [self.hidden, inputs];
        let param = |v: Vec<f32>| {
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, shape), device))
                .set_require_grad(false)
        };
        Ok(KrotovHopfield {
            synapses: param(values),
            variance: SynapseVariance {
                mean: param(vec![0.0; self.hidden * inputs]),
                m2: param(vec![0.0; self.hidden * inputs]),
            },
        })
    }
}

/// Per synapse, the running mean and sum of squared deviations of its value over the epoch-end
/// snapshots (Welford), for pruning the synapses that never settle.
#[derive(Module, Debug)]
pub struct SynapseVariance {
    /// Running mean.
    pub mean: Param<Tensor<2>>,
    /// Running sum of squared deviations.
    pub m2: Param<Tensor<2>>,
}

/// The synapses of a layer of competing hidden units, with their variance over training.
#[derive(Module, Debug)]
pub struct KrotovHopfield {
    /// `[hidden, inputs]`.
    pub synapses: Param<Tensor<2>>,
    /// Their variance over the epoch-end snapshots.
    pub variance: SynapseVariance,
}

/// Where training stands (written beside the module's file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainState {
    fingerprint: String,
    epoch: usize,
    snapshots: usize,
    model_file: String,
    /// CRC-32 of `model_file` (absent in checkpoints from before checksums).
    #[serde(default)]
    model_crc32: Option<u32>,
}

/// One epoch of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KrotovEpoch {
    /// Epoch index, from 0.
    pub epoch: usize,
    /// The learning rate it used.
    pub learning_rate: f64,
    /// Median over units of `|Σ_i |W_μi|^p − 1|` after the epoch (0 at the fixed points; the
    /// median, because units that never win or lose a competition keep their initial norm).
    pub norm_deviation: f64,
}

impl KrotovHopfield {
    /// `[hidden, inputs]`.
    pub fn dims(&self) -> [usize; 2] {
        self.synapses.lazy_shape().dims::<2>()
    }

    /// One update on `batch` (`[batch, inputs]`) with learning rate `eps`.
    pub fn step(
        &mut self,
        batch: Tensor<2>,
        eps: f64,
        config: &KrotovHopfieldConfig,
    ) -> Result<(), LocalError> {
        let [hidden, inputs] = self.dims();
        let [b, n] = batch.dims();
        if n != inputs {
            return Err(LocalError::Shape {
                what: "batch inputs",
                expected: inputs,
                got: n,
            });
        }
        if b == 0 {
            return Err(LocalError::Shape {
                what: "batch size",
                expected: 1,
                got: 0,
            });
        }
        let w = self.synapses.val();
        let weighted = w.clone().sign() * w.clone().abs().powf_scalar(config.p - 1.0);
        // Currents [batch, hidden].
        let currents = batch.clone().matmul(weighted.transpose());
        let (_, ranks) = currents.clone().topk_with_indices(config.k, 1);
        let column =
            |c: usize| -> Tensor<1, Int> { ranks.clone().slice([0..b, c..c + 1]).reshape([b]) };
        let winner = column(0).one_hot::<2>(hidden).float();
        let inhibited = column(config.k - 1).one_hot::<2>(hidden).float();
        let g = winner - inhibited.mul_scalar(config.delta as f32);
        // Σ_batch g ∘ I per unit, [hidden, 1].
        let xx = (g.clone() * currents).sum_dim(0).transpose();
        let ds = g.transpose().matmul(batch) - w.clone() * xx;
        let nc = ds.clone().abs().max().clamp_min(config.precision as f32);
        let updated = w + ds / nc.unsqueeze::<2>() * eps as f32;
        self.synapses = Param::from_tensor(updated).set_require_grad(false);
        Ok(())
    }

    /// Adds the current synapses as one more snapshot of the variance.
    fn record_snapshot(&mut self, count: usize) {
        let x = self.synapses.val();
        let mean = self.variance.mean.val();
        let delta = x.clone() - mean.clone();
        let mean = mean + delta.clone().div_scalar(count as f32);
        let m2 = self.variance.m2.val() + delta * (x - mean.clone());
        self.variance.mean = Param::from_tensor(mean).set_require_grad(false);
        self.variance.m2 = Param::from_tensor(m2).set_require_grad(false);
    }

    /// The variance of each synapse over `snapshots` snapshots (`m2 / (snapshots − 1)`).
    pub fn synapse_variance(&self, snapshots: usize) -> Tensor<2> {
        self.variance
            .m2
            .val()
            .div_scalar(snapshots.saturating_sub(1).max(1) as f32)
    }

    /// Sets to 0 every synapse whose variance over `snapshots` exceeds `threshold` (2405.00679
    /// uses 0.0015); returns how many were pruned.
    pub fn prune(&mut self, threshold: f64, snapshots: usize) -> Result<usize, LocalError> {
        let keep = self
            .synapse_variance(snapshots)
            .lower_equal_elem(threshold as f32)
            .float();
        let pruned = keep
            .clone()
            .neg()
            .add_scalar(1.0)
            .sum()
            .into_scalar::<f32>() as usize;
        let w = self.synapses.val() * keep;
        self.synapses = Param::from_tensor(w).set_require_grad(false);
        Ok(pruned)
    }

    /// Median over units of `|Σ_i |W_μi|^p − 1|`.
    pub fn norm_deviation(&self, p: f64) -> Result<f64, LocalError> {
        let mut deviations = self.unit_norms(p)?;
        for d in &mut deviations {
            *d = (*d - 1.0).abs();
        }
        deviations.sort_by(f64::total_cmp);
        Ok(deviations[deviations.len() / 2])
    }

    /// `Σ_i |W_μi|^p` per unit.
    pub fn unit_norms(&self, p: f64) -> Result<Vec<f64>, LocalError> {
        let norms = self.synapses.val().abs().powf_scalar(p).sum_dim(1);
        let values = norms
            .try_to_vec_as::<f32>()
            .map_err(|e| LocalError::Data(format!("reading the synapses: {e:?}")))?;
        Ok(values.into_iter().map(f64::from).collect())
    }
}

/// What [`train`] returns.
#[derive(Debug)]
pub struct Trained {
    /// The layer.
    pub layer: KrotovHopfield,
    /// One entry per epoch.
    pub history: Vec<KrotovEpoch>,
    /// Epoch-end snapshots behind the variance.
    pub snapshots: usize,
}

/// The shuffled order of an epoch, from the seed and the epoch alone.
fn order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    order
}

fn fingerprint(config: &KrotovHopfieldConfig, n: usize, inputs: usize) -> String {
    format!("{config:?} examples={n} inputs={inputs}")
}

/// Trains a layer on `data` (`n × inputs` values, row-major, each input a row) under `config`.
///
/// With `checkpoint_dir`, the layer and where training stands are written atomically after each
/// epoch (and when `stop` is raised), and a run finds and resumes them: the same numbers as an
/// uninterrupted run. Progress shows on a terminal when `progress`.
pub fn train(
    data: &[f32],
    inputs: usize,
    config: &KrotovHopfieldConfig,
    device: &Device,
    checkpoint_dir: Option<&Path>,
    progress: bool,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Trained, LocalError> {
    config.validate()?;
    if inputs == 0 || data.is_empty() || !data.len().is_multiple_of(inputs) {
        return Err(LocalError::Shape {
            what: "data (a whole number of inputs)",
            expected: inputs,
            got: data.len(),
        });
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(LocalError::Data(format!("value {i} is not finite")));
    }
    let n = data.len() / inputs;
    let print = fingerprint(config, n, inputs);
    let mut layer = config.init(inputs, device)?;
    let mut state = TrainState {
        fingerprint: print.clone(),
        epoch: 0,
        snapshots: 0,
        model_file: String::new(),
        model_crc32: None,
    };
    let mut history = Vec::new();
    if let Some(dir) = checkpoint_dir
        && let Some((saved, saved_history)) = read_state(dir)?
    {
        if saved.fingerprint != print {
            return Err(LocalError::Checkpoint {
                path: dir.join("state.json"),
                message: format!(
                    "written by other settings ({}), now ({print})",
                    saved.fingerprint
                ),
            });
        }
        let path = dir.join(&saved.model_file);
        signsym_models::verify_crc32(&path, saved.model_crc32).map_err(|e| match e {
            signsym_models::ModelError::Checkpoint { path, message } => {
                LocalError::Checkpoint { path, message }
            }
            other => other.into(),
        })?;
        let mut store = BurnpackStore::from_file(&path).auto_extension(false);
        let result = layer
            .load_from(&mut store)
            .map_err(|e| LocalError::Checkpoint {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if !result.errors.is_empty() || !result.missing.is_empty() {
            return Err(LocalError::Checkpoint {
                path,
                message: result.to_string(),
            });
        }
        state = saved;
        history = saved_history;
    }
    let steps = n.div_ceil(config.batch_size);
    while state.epoch < config.epochs {
        let epoch = state.epoch;
        let eps = config.learning_rate * (1.0 - epoch as f64 / config.epochs as f64);
        let bar = if progress {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "Krotov–Hopfield epoch {prefix} {bar:30} {pos}/{len} {elapsed_precise}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
            bar
        } else {
            ProgressBar::hidden()
        };
        for chunk in order(n, config.seed, epoch).chunks(config.batch_size) {
            let mut rows = Vec::with_capacity(chunk.len() * inputs);
            for &i in chunk {
                rows.extend_from_slice(&data[i * inputs..(i + 1) * inputs]);
            }
            let batch =
                Tensor::<2>::from_data(TensorData::new(rows, [chunk.len(), inputs]), device);
            layer.step(batch, eps, config)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        state.epoch += 1;
        if state.epoch as f64 > config.variance_from * config.epochs as f64 {
            state.snapshots += 1;
            layer.record_snapshot(state.snapshots);
        }
        history.push(KrotovEpoch {
            epoch,
            learning_rate: eps,
            norm_deviation: layer.norm_deviation(config.p)?,
        });
        if let Some(dir) = checkpoint_dir {
            save(dir, &layer, &mut state, &history)?;
        }
        if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) && state.epoch < config.epochs {
            return Err(LocalError::Interrupted {
                completed_epochs: state.epoch,
            });
        }
    }
    Ok(Trained {
        layer,
        history,
        snapshots: state.snapshots,
    })
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    state: TrainState,
    history: Vec<KrotovEpoch>,
}

fn read_state(dir: &Path) -> Result<Option<(TrainState, Vec<KrotovEpoch>)>, LocalError> {
    let path = dir.join("state.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: StateFile =
                serde_json::from_slice(&bytes).map_err(|e| LocalError::Checkpoint {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            Ok(Some((file.state, file.history)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LocalError::Checkpoint {
            path,
            message: e.to_string(),
        }),
    }
}

fn save(
    dir: &Path,
    layer: &KrotovHopfield,
    state: &mut TrainState,
    history: &[KrotovEpoch],
) -> Result<(), LocalError> {
    std::fs::create_dir_all(dir).map_err(|e| LocalError::Checkpoint {
        path: dir.into(),
        message: e.to_string(),
    })?;
    // The file the last save wrote (empty before the first), removed once the new one is in.
    let previous = std::mem::take(&mut state.model_file);
    state.model_file = format!("layer-e{}.bpk", state.epoch);
    let model: PathBuf = dir.join(&state.model_file);
    let mut crc = None;
    signsym_models::atomic_write(&model, |tmp| {
        let mut store = BurnpackStore::from_file(tmp)
            .auto_extension(false)
            .overwrite(true);
        layer.save_into(&mut store).map_err(|e| e.to_string())?;
        crc = Some(signsym_models::file_crc32(tmp).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    state.model_crc32 = crc;
    let json = serde_json::to_vec_pretty(&StateFile {
        state: state.clone(),
        history: history.to_vec(),
    })
    .map_err(|e| LocalError::Data(e.to_string()))?;
    signsym_models::atomic_write(&dir.join("state.json"), |tmp| {
        std::fs::write(tmp, &json).map_err(|e| e.to_string())
    })?;
    if !previous.is_empty() && previous != state.model_file {
        // A stale file left behind costs only disk space.
        let _ = std::fs::remove_file(dir.join(previous));
    }
    Ok(())
}
