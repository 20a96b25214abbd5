//! Loading torchvision weights (`.pth` state dicts or safetensors) into our models.
//!
//! Our parameter paths follow torchvision's wherever Rust allows it; the few differences are
//! mapped explicitly by each [`Backbone`] ([`Backbone::torchvision_module`]):
//! AlexNet's and VGG's `features`/`classifier` lists keep only the weight layers (so `features.3`
//! is our `features.1`), ResNet's `downsample.0`/`.1` are our `downsample.conv`/`.bn`, and the
//! replaced last layer (`classifier.6`, `fc`) is our `head.linear`. Batch norm's `weight`/`bias`
//! are burn's `gamma`/`beta`; linear weights are transposed (`[out, in]` in PyTorch, `[in, out]`
//! in burn). burn-store's contiguous index renumbering is turned off: the mapping is exact.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use burn::store::{ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore, bridge};
use burn::tensor::TensorData;
use signsym_feedback::FeedbackModule;

use crate::{Backbone, ModelError, Network};

/// Which parameters a load must provide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadScope {
    /// Every backbone parameter must be in the file; the file's last layer (`classifier.6` or
    /// `fc`) is ignored and the model's new head keeps its initialisation. The normal case for
    /// fine-tuning.
    #[default]
    Backbone,
    /// Every parameter, head included, must be in the file with the right shape, and every
    /// tensor in the file must be used.
    Full,
    /// Load what matches; report the rest. Shape mismatches are still errors.
    Matching,
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Our parameter paths that received a tensor.
    pub loaded: Vec<String>,
    /// Head parameters left as initialised ([`LoadScope::Backbone`]).
    pub head_kept: Vec<String>,
    /// File keys that were not used (the old last layer under [`LoadScope::Backbone`], anything
    /// unmatched under [`LoadScope::Matching`]); `num_batches_tracked` buffers are not listed.
    pub ignored: Vec<String>,
    /// Torchvision keys the model needed but the file lacked ([`LoadScope::Matching`] only).
    pub missing: Vec<String>,
}

/// A torchvision weight file: a `.pth`/`.pt` state dict (PyTorch's zip or legacy format) or a
/// `.safetensors` file with torchvision's keys.
///
/// Real weights: torchvision's download URLs, for example
/// `https://download.pytorch.org/models/resnet18-f37072fd.pth`,
/// `…/alexnet-owt-7be5be79.pth`, `…/vgg16-397923af.pth`; download them yourself, this crate never
/// does.
///
/// ```no_run
/// use burn::tensor::Device;
/// use signsym_models::{LoadScope, Network, ResNetConfig, Task, TorchvisionWeights};
///
/// let device = Device::flex();
/// let mut net = Network::new(ResNetConfig::resnet18().init(&device)?, Task::classification(10), &device)?;
/// let report = TorchvisionWeights::new("resnet18-f37072fd.pth").load_into(&mut net, LoadScope::Backbone)?;
/// assert_eq!(report.ignored, ["fc.bias", "fc.weight"]);
/// # Ok::<(), signsym_models::ModelError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TorchvisionWeights {
    path: PathBuf,
    top_level_key: Option<String>,
}

impl TorchvisionWeights {
    /// A weight file; its format follows its extension (`.safetensors`, anything else PyTorch).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            top_level_key: None,
        }
    }

    /// For `.pth` checkpoints that nest the state dict under a key (`"state_dict"`, …).
    pub fn with_top_level_key(mut self, key: impl Into<String>) -> Self {
        self.top_level_key = Some(key.into());
        self
    }

    fn error(&self, message: impl std::fmt::Display) -> ModelError {
        ModelError::WeightFile {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    fn is_safetensors(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "safetensors")
    }

    /// Every tensor in the file, by key, as f32.
    pub fn read(&self) -> Result<BTreeMap<String, TensorData>, ModelError> {
        if !self.path.is_file() {
            return Err(self.error("no such file"));
        }
        let tensors = if self.is_safetensors() {
            let mut store = SafetensorsStore::from_file(&self.path);
            store.get_all_tensors().map_err(|e| self.error(e))?.clone()
        } else {
            let mut store = PytorchStore::from_file(&self.path).map_indices_contiguous(false);
            if let Some(key) = &self.top_level_key {
                store = store.with_top_level_key(key.clone());
            }
            store.get_all_tensors().map_err(|e| self.error(e))?.clone()
        };
        tensors
            .into_iter()
            .map(|(key, tensor)| {
                let data = bridge::into_data(tensor)
                    .map_err(|e| self.error(format!("tensor {key}: {e}")))?;
                let data = data.convert::<f32>();
                Ok((key, data))
            })
            .collect()
    }

    /// The file's keys and shapes.
    pub fn keys(&self) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
        Ok(self
            .read()?
            .into_iter()
            .map(|(k, d)| (k, d.shape().to_vec()))
            .collect())
    }

    /// Loads the file into `network` under `scope`. On error the network is unchanged.
    pub fn load_into<M: Backbone>(
        &self,
        network: &mut Network<M>,
        scope: LoadScope,
    ) -> Result<LoadReport, ModelError> {
        let mut file = self.read()?;
        file.retain(|key, _| !key.ends_with("num_batches_tracked"));
        let params = torchvision_layout(network);
        let head_prefix = format!("{}.", network.backbone.torchvision_head());

        let mut report = LoadReport::default();
        let (mut missing, mut mismatches, mut used) = (Vec::new(), Vec::new(), HashSet::new());
        let mut tensors = Vec::new();
        for param in &params {
            let in_head = param.ours.starts_with("head.");
            if in_head && scope == LoadScope::Backbone {
                report.head_kept.push(param.ours.clone());
                continue;
            }
            let Some(data) = file.get(&param.torchvision) else {
                missing.push(param.torchvision.clone());
                continue;
            };
            used.insert(param.torchvision.clone());
            if data.shape().as_slice() != param.shape.as_slice() {
                mismatches.push((
                    param.torchvision.clone(),
                    data.shape().to_vec(),
                    param.shape.clone(),
                ));
                continue;
            }
            let values = data
                .try_to_vec::<f32>()
                .map_err(|e| self.error(format!("{e:?}")))?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFiniteWeight {
                    path: self.path.clone(),
                    key: param.torchvision.clone(),
                });
            }
            let data = if param.transposed {
                transpose(&values, &param.shape)
            } else {
                TensorData::new(values, param.shape.clone())
            };
            tensors.push(bridge::from_data(data, param.ours.clone(), None));
            report.loaded.push(param.ours.clone());
        }
        if !mismatches.is_empty() {
            return Err(ModelError::ShapeMismatch {
                path: self.path.clone(),
                mismatches,
            });
        }
        let unused: Vec<String> = file
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        let (old_head, unexpected): (Vec<String>, Vec<String>) = unused
            .into_iter()
            .partition(|k| scope == LoadScope::Backbone && k.starts_with(&head_prefix));
        match scope {
            LoadScope::Matching => {
                report.missing = missing;
                report.ignored = unexpected;
            }
            _ if !missing.is_empty() || !unexpected.is_empty() => {
                return Err(ModelError::KeyMismatch {
                    path: self.path.clone(),
                    missing,
                    unexpected,
                });
            }
            _ => report.ignored = old_head,
        }
        let result = network.apply(tensors, None, None, false);
        if !result.errors.is_empty() {
            return Err(self.error(
                result
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        Ok(report)
    }
}

/// One of our parameters, in torchvision's naming and layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchvisionParam {
    /// Our path (`backbone.layer1.0.downsample.conv.weight`).
    pub ours: String,
    /// torchvision's key (`layer1.0.downsample.0.weight`).
    pub torchvision: String,
    /// The shape in torchvision's layout (linear weights `[out, in]`).
    pub shape: Vec<usize>,
    /// Whether our tensor is the transpose of torchvision's (linear weights).
    pub transposed: bool,
}

/// Every parameter and buffer of `network` (the fixed feedback tensors excepted), in module
/// order, with its torchvision key and shape. For a full-size backbone with a 1000-class head
/// this is torchvision's `state_dict()` minus the `num_batches_tracked` buffers.
pub fn torchvision_layout<M: Backbone>(network: &Network<M>) -> Vec<TorchvisionParam> {
    let mut linear = BTreeSet::new();
    network.visit_feedback("", &mut |path, layer| {
        if layer.kind() == "linear" {
            linear.insert(format!("{path}.weight"));
        }
    });
    let head = network.backbone.torchvision_head();
    network
        .collect(None, None, false)
        .into_iter()
        .filter(|t| !t.name.ends_with(".feedback"))
        .filter_map(|t| {
            let (module, param) = t.name.rsplit_once('.')?;
            let param = match param {
                "gamma" => "weight",
                "beta" => "bias",
                other => other,
            };
            let module = if module == "head.linear" {
                head.to_string()
            } else {
                network
                    .backbone
                    .torchvision_module(module.strip_prefix("backbone.")?)?
            };
            let transposed = linear.contains(&t.name);
            let mut shape = t.shape.to_vec();
            if transposed {
                shape.reverse();
            }
            Some(TorchvisionParam {
                torchvision: format!("{module}.{param}"),
                ours: t.name.clone(),
                shape,
                transposed,
            })
        })
        .collect()
}

/// `[rows, cols]` row-major (torchvision's `[out, in]`) → `[cols, rows]` (burn's `[in, out]`).
fn transpose(values: &[f32], torch_shape: &[usize]) -> TensorData {
    let (rows, cols) = (torch_shape[0], torch_shape[1]);
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    TensorData::new(out, [cols, rows])
}
