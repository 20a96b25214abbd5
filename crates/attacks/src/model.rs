//! What an attack needs from a model: real-valued scores of a batch of images.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use signsym_models::{Backbone, Network, Task};

use crate::error::AttackError;

/// A model under attack: `[batch, channels, height, width]` images in, `[batch, outputs]` scores
/// out.
///
/// For classification the scores are logits; for hashing they are the real-valued code before
/// any squashing (its signs are the binary code), so that retrieval attacks can apply their own
/// smooth surrogate `tanh(α·z)`. Normalisation belongs inside the model: attacks work on the
/// images as stored, in their box.
///
/// Attack models in inference mode (`signsym_models::eval_mode`) on an autodiff device: the
/// forward is then deterministic, and gradients flow through the model's own backward rules.
pub trait AttackModel {
    /// Scores of a batch.
    fn scores(&self, images: Tensor<4>) -> Tensor<2>;

    /// Number of score columns (classes or code bits).
    fn outputs(&self) -> usize;

    /// Scores without building an autodiff graph where the model can avoid it (decision-based
    /// attacks only need predictions). Defaults to [`scores`](Self::scores), detached.
    fn predict_scores(&self, images: Tensor<4>) -> Tensor<2> {
        self.scores(images).detach()
    }
}

impl<M: Backbone> AttackModel for Network<M> {
    fn scores(&self, images: Tensor<4>) -> Tensor<2> {
        // A shallow copy whose parameters track no gradient: the backward then computes the
        // input gradient only, never the weight gradients an attack does not need (the copy
        // shares every tensor, so it costs no memory).
        let untracked = self.clone().no_grad();
        let features = untracked.backbone.features(images);
        match untracked.head.task {
            Task::Classification { .. } => untracked.head.forward(features),
            // The pre-tanh code: `tanh` is monotone, so its signs are the network's code.
            Task::Hashing { .. } => untracked.head.linear.forward(features),
        }
    }

    fn outputs(&self) -> usize {
        self.head.task.outputs()
    }
}

impl<T: AttackModel + ?Sized> AttackModel for &T {
    fn scores(&self, images: Tensor<4>) -> Tensor<2> {
        (**self).scores(images)
    }

    fn outputs(&self) -> usize {
        (**self).outputs()
    }

    fn predict_scores(&self, images: Tensor<4>) -> Tensor<2> {
        (**self).predict_scores(images)
    }
}

/// Wraps a closure as an [`AttackModel`] (a hand-built model, a model with a preprocessing
/// step, or a test fixture).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_attacks::{AttackModel, FnModel};
///
/// let device = Device::flex().autodiff();
/// let model = FnModel::new(2, |x: Tensor<4>| {
///     let flat = x.flatten::<2>(1, 3);
///     Tensor::cat(vec![flat.clone().sum_dim(1), flat.sum_dim(1).neg()], 1)
/// });
/// let scores = model.scores(Tensor::ones([3, 1, 2, 2], &device));
/// assert_eq!(scores.dims(), [3, 2]);
/// ```
pub struct FnModel<F> {
    outputs: usize,
    f: F,
}

impl<F: Fn(Tensor<4>) -> Tensor<2>> FnModel<F> {
    /// A model with `outputs` score columns computed by `f`.
    pub fn new(outputs: usize, f: F) -> Self {
        Self { outputs, f }
    }
}

impl<F: Fn(Tensor<4>) -> Tensor<2>> AttackModel for FnModel<F> {
    fn scores(&self, images: Tensor<4>) -> Tensor<2> {
        (self.f)(images)
    }

    fn outputs(&self) -> usize {
        self.outputs
    }
}

/// A model ready to be attacked: inference mode (batch-norm running statistics, no dropout) on
/// its autodiff device, with parameters that no longer track gradients.
///
/// Input gradients are unchanged; the backward just skips every weight gradient, which is about
/// half of its work. (`Network`'s [`AttackModel`] implementation already attacks an untracked
/// shallow copy; this matters for other models, such as [`FnModel`] closures over modules.) Use
/// [`Network::duplicate`] first to keep a trainable copy.
///
/// ```
/// use burn::module::Module;
/// use burn::tensor::Device;
/// use signsym_attacks::attack_mode;
/// use signsym_models::{Network, SmallCnnConfig, Task};
///
/// let device = Device::flex().autodiff();
/// let net = Network::new(SmallCnnConfig::new().init(&device)?, Task::classification(10), &device)?;
/// let target = attack_mode(net.duplicate());
/// assert!(target.devices()[0].is_autodiff());
/// # Ok::<(), signsym_models::ModelError>(())
/// ```
pub fn attack_mode<M: burn::module::Module>(model: M) -> M {
    signsym_models::eval_mode(model).no_grad()
}

/// Predicted classes (arg-max of the scores) of a batch.
pub fn predict(model: &dyn AttackModel, images: Tensor<4>) -> Result<Vec<usize>, AttackError> {
    let batch = images.dims()[0];
    let predicted = model.predict_scores(images).argmax(1).reshape([batch]);
    Ok(predicted
        .try_to_vec_as::<i64>()?
        .into_iter()
        .map(|c| c as usize)
        .collect())
}

/// Checks labels against the batch size and the number of classes.
pub(crate) fn check_labels(
    labels: &[usize],
    batch: usize,
    classes: usize,
) -> Result<(), AttackError> {
    crate::bounds::check_batch("labels", batch, labels.len())?;
    match labels.iter().position(|&l| l >= classes) {
        Some(index) => Err(AttackError::LabelOutOfRange {
            index,
            label: labels[index] as i64,
            classes,
        }),
        None => Ok(()),
    }
}

/// Host copy of a float tensor.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, AttackError> {
    Ok(t.try_to_vec_as::<f32>()?)
}

/// A float tensor of `shape` from host values.
pub(crate) fn tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// An integer tensor from host values.
pub(crate) fn int_tensor(values: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            values.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            [values.len()],
        ),
        device,
    )
}

/// A `[batch, 1, 1, 1]` tensor of per-sample values, for broadcasting over images.
pub(crate) fn per_sample(values: &[f32], device: &Device) -> Tensor<4> {
    tensor(values.to_vec(), [values.len(), 1, 1, 1], device)
}

/// Per sample, `a` where `mask` is set and `b` elsewhere (exact: the other side is multiplied
/// by zero, and both sides are finite).
pub(crate) fn blend(mask: &[bool], a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    if mask.iter().all(|&m| !m) {
        return b;
    }
    if mask.iter().all(|&m| m) {
        return a;
    }
    let m: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    let m = per_sample(&m, &a.device());
    a * m.clone() + b * m.neg().add_scalar(1.0)
}

/// The arg-max of each row of `[batch, classes]` host scores (the first maximum on ties, as
/// `argmax`).
pub(crate) fn argmax_rows(scores: &[f32], classes: usize) -> Vec<usize> {
    scores
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0
        })
        .collect()
}
