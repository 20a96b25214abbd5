//! Atomic, resumable training checkpoints: the model (parameters with their ids, batch-norm
//! statistics, fixed feedback tensors), the optimizer state, and where the loop stood.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};

use crate::ModelError;

const STATE_FILE: &str = "state.json";

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch index, from 0.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// The evaluator's metric after the epoch (for example test accuracy), if one was given.
    pub metric: Option<f64>,
    /// Wall-clock seconds of training (evaluation excluded) in this epoch, summed over resumed
    /// parts.
    pub seconds: f64,
    /// Each term of the objective: its mean over the epoch's batches and the seconds spent
    /// computing it (the task loss first, as `task`).
    #[serde(default)]
    pub terms: Vec<TermStats>,
}

/// One term of the objective over an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TermStats {
    /// The term's name.
    pub name: String,
    /// Its mean value (weight included) over the epoch's batches.
    pub mean: f64,
    /// Seconds spent computing it (forward only; the shared backward is not split).
    pub seconds: f64,
}

/// Where the loop stood when the checkpoint was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoopState {
    /// Identifies the settings the run was started with; a resume with other settings is refused.
    pub fingerprint: String,
    /// The epoch in progress (or the next one, when `step == 0`).
    pub epoch: usize,
    /// The next step within `epoch`.
    pub step: usize,
    /// Sum and count of the batch losses seen so far in `epoch`.
    pub loss_sum: f64,
    /// Batches behind `loss_sum`.
    pub loss_count: usize,
    /// Training seconds spent so far in `epoch`.
    pub seconds: f64,
    /// Per term (task loss first): sum of its batch values so far in `epoch`.
    #[serde(default)]
    pub term_sums: Vec<f64>,
    /// Per term: seconds spent computing it so far in `epoch`.
    #[serde(default)]
    pub term_seconds: Vec<f64>,
    /// Each extra term's state after the last step ([`Term::state`](crate::Term::state)).
    #[serde(default)]
    pub term_states: Vec<serde_json::Value>,
    /// Finished epochs.
    pub history: Vec<EpochStats>,
    /// Model and optimizer files of this checkpoint, relative to the directory.
    pub model_file: String,
    /// See `model_file`.
    pub optimizer_file: String,
    /// CRC-32 of the model and optimizer files: a byte changed on disk is found at resume, not
    /// trained on (checkpoints written before these existed have none and are not checked).
    #[serde(default)]
    pub model_crc32: Option<u32>,
    /// See `model_crc32`.
    #[serde(default)]
    pub optimizer_crc32: Option<u32>,
}

fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes through `write` into a temporary file beside `path`, syncs it, then renames it over
/// `path`: a reader sees the old file or the new one, never half of one. signsym's one atomic
/// writer (checkpoints, results, the local-learning rule's state all go through it).
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), ModelError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    let tmp = std::path::PathBuf::from(name);
    write(&tmp).map_err(|e| checkpoint_error(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| checkpoint_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| checkpoint_error(path, e))
}

/// Saves a checkpoint into `dir`; the previous checkpoint's files are removed once the new
/// `state.json` is in place.
pub(crate) fn save<T: Module>(
    dir: &Path,
    module: &T,
    optimizer: &ModuleOptimizer,
    mut state: LoopState,
) -> Result<(), ModelError> {
    fs::create_dir_all(dir).map_err(|e| checkpoint_error(dir, e))?;
    let previous = read_state(dir).ok().flatten();
    let tag = format!("e{}-s{}", state.epoch, state.step);
    state.model_file = format!("model-{tag}.bpk");
    state.optimizer_file = format!("optimizer-{tag}.bpk");

    let mut model_crc = None;
    atomic_write(&dir.join(&state.model_file), |tmp| {
        let mut store = BurnpackStore::from_file(tmp)
            .auto_extension(false)
            .overwrite(true);
        module.save_into(&mut store).map_err(|e| e.to_string())?;
        model_crc = Some(file_crc32(tmp).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    let mut optimizer_crc = None;
    atomic_write(&dir.join(&state.optimizer_file), |tmp| {
        optimizer.to_record().save(tmp).map_err(|e| e.to_string())?;
        optimizer_crc = Some(file_crc32(tmp).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    state.model_crc32 = model_crc;
    state.optimizer_crc32 = optimizer_crc;
    let json = serde_json::to_vec_pretty(&state).map_err(|e| checkpoint_error(dir, e))?;
    atomic_write(&dir.join(STATE_FILE), |tmp| {
        let mut file = fs::File::create(tmp).map_err(|e| e.to_string())?;
        file.write_all(&json).map_err(|e| e.to_string())
    })?;
    if let Some(old) = previous {
        for file in [old.model_file, old.optimizer_file] {
            if file != state.model_file && file != state.optimizer_file {
                // A stale file left behind costs only disk space.
                let _ = fs::remove_file(dir.join(file));
            }
        }
    }
    Ok(())
}

/// The loop state of the checkpoint in `dir`, or `None` if there is none.
pub(crate) fn read_state(dir: &Path) -> Result<Option<LoopState>, ModelError> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fs::read(&path).map_err(|e| checkpoint_error(&path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| checkpoint_error(&path, e))
}

/// Loads the checkpoint's model and optimizer into `module` and `optimizer`.
pub(crate) fn load<T: Module>(
    dir: &Path,
    state: &LoopState,
    module: &mut T,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer, ModelError> {
    let model_path: PathBuf = dir.join(&state.model_file);
    verify_crc32(&model_path, state.model_crc32)?;
    verify_crc32(&dir.join(&state.optimizer_file), state.optimizer_crc32)?;
    let mut store = BurnpackStore::from_file(&model_path).auto_extension(false);
    let result = module
        .load_from(&mut store)
        .map_err(|e| checkpoint_error(&model_path, e))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(checkpoint_error(&model_path, result));
    }
    let optim_path = dir.join(&state.optimizer_file);
    let record =
        OptimizerRecord::load(&optim_path).map_err(|e| checkpoint_error(&optim_path, e))?;
    Ok(optimizer.load_record(record))
}

/// CRC-32 of a file, read in blocks (model files reach hundreds of MB). Recorded beside every
/// checkpoint file signsym writes and checked by [`verify_crc32`] before it is read back.
pub fn file_crc32(path: &Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&block[..n]);
    }
}

/// The file's [`file_crc32`] against the one recorded when it was written (`None`: a checkpoint
/// from before checksums, not checked): a mismatch is [`ModelError::Checkpoint`] naming the file.
pub fn verify_crc32(path: &Path, expected: Option<u32>) -> Result<(), ModelError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let found = file_crc32(path).map_err(|e| checkpoint_error(path, e))?;
    if found != expected {
        return Err(checkpoint_error(
            path,
            format!(
                "CRC-32 {found:08x}, the checkpoint recorded {expected:08x}: the file changed \
                 since it was written (corrupt or replaced); remove the checkpoint directory to \
                 start over"
            ),
        ));
    }
    Ok(())
}
