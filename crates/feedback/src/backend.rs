//! The feedback ops as a burn backend extension.
//!
//! Forward and backward sit side by side here. On a plain backend the ops are the backend's own
//! layer kernels. On `Autodiff<B>` the forward is the same kernel (bit-identical to burn's layer)
//! and the recorded backward computes the weight and bias gradients exactly as backpropagation
//! does, while the input gradient goes through the same kernel with the feedback tensor `V` in
//! place of the weight. `V` is formed inside the backward from the checkpointed weight, so an
//! inference forward pays nothing and no `V` is held between forward and backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::{ConvOptions, ConvTransposeOptions};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, ExtensionType, TensorMetadata, backend_extension};
use burn::tensor::{Distribution, Shape};

/// How the backward pass forms the feedback tensor `V` from the weight `W` and the layer's
/// auxiliary tensor (`M`, `B` or a user-given `V`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FeedbackForm {
    /// `V₀ = W` (backpropagation through the custom op; used by tests and the tensor-level API).
    Weight,
    /// `V₀ = sign(W)`.
    Sign,
    /// `V₀ = aux ∘ sign(W)`, with `aux` the fixed magnitudes `M`.
    MaskedSign,
    /// `V₀ = M ∘ sign(W)`, with `M` drawn from the distribution on the device at each backward.
    RandomMaskedSign(Distribution),
    /// `V₀ = aux`: FA's fixed `B`, or a `V` given by the caller.
    Given,
}

/// The scale applied to `V₀`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleKind {
    /// `V = V₀`.
    Unit,
    /// `V = c·V₀`.
    Constant(f32),
    /// `V = (‖W‖_F / ‖V₀‖_F)·V₀`, computed on the device.
    MatchNorm,
}

/// The complete recipe for `V`, passed to the op as plain data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedbackKernel {
    /// How `V₀` is formed.
    pub form: FeedbackForm,
    /// How `V₀` is scaled.
    pub scale: ScaleKind,
}

impl FeedbackKernel {
    /// `V = W`.
    pub const WEIGHT: Self = Self {
        form: FeedbackForm::Weight,
        scale: ScaleKind::Unit,
    };
    /// `V = aux`.
    pub const GIVEN: Self = Self {
        form: FeedbackForm::Given,
        scale: ScaleKind::Unit,
    };

    /// Whether the kernel reads the auxiliary tensor.
    pub fn needs_aux(&self) -> bool {
        matches!(self.form, FeedbackForm::MaskedSign | FeedbackForm::Given)
    }

    /// Forms `V` on backend `B` with burn's generic ops (the reference the fused kernels are
    /// tested against).
    pub fn form_feedback<B: Backend>(
        &self,
        weight: FloatTensor<B>,
        aux: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        let (base, factor) = self.form_parts::<B>(weight, aux);
        match self.scale {
            ScaleKind::Unit => base,
            _ => scale_by::<B>(base, factor),
        }
    }

    /// `(V₀, s)` with burn's generic ops: `V = s·V₀`, `s` a one-element tensor.
    pub fn form_parts<B: Backend>(
        &self,
        weight: FloatTensor<B>,
        aux: Option<FloatTensor<B>>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let aux = || {
            aux.clone()
                .expect("feedback kernel needs its auxiliary tensor")
        };
        let device = weight.device();
        let base = match self.form {
            FeedbackForm::Weight => weight.clone(),
            FeedbackForm::Sign => B::float_sign(weight.clone()),
            FeedbackForm::MaskedSign => B::float_mul(aux(), B::float_sign(weight.clone())),
            FeedbackForm::RandomMaskedSign(distribution) => {
                // A scope's key seeds the device for this one draw, under the lock that keeps
                // other threads from seeding or drawing in between.
                let _guard = crate::random::DeviceRngGuard::acquire();
                if let Some(key) = crate::random::scoped_key() {
                    B::seed(&device, key);
                }
                let mask =
                    B::float_random(weight.shape(), distribution, &device, weight.dtype().into());
                B::float_mul(mask, B::float_sign(weight.clone()))
            }
            FeedbackForm::Given => aux(),
        };
        let constant = |c: f32| {
            B::float_from_data(
                burn::tensor::TensorData::new(vec![c], [1]).convert_dtype(weight.dtype()),
                &device,
            )
        };
        let factor = match self.scale {
            ScaleKind::Unit => constant(1.0),
            ScaleKind::Constant(c) => constant(c),
            ScaleKind::MatchNorm => {
                let w_norm = frobenius::<B>(weight.clone());
                // A zero V₀ (all-zero weight) stays zero instead of becoming NaN.
                let v_norm = B::float_clamp_min(frobenius::<B>(base.clone()), 1e-30f32.into());
                B::float_reshape(B::float_div(w_norm, v_norm), Shape::from(vec![1]))
            }
        };
        (base, factor)
    }
}

/// burn's `batch_norm_train` as a tuple: the batch-norm ops' default, and Flex's fallback.
fn burn_batch_norm_train<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let r = B::batch_norm_train(x, gamma, beta, epsilon);
    (r.output, r.mean, r.variance)
}

/// burn's `batch_norm_train_backward` as a tuple `(dx, dγ, dβ)`.
fn burn_batch_norm_train_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    variance: FloatTensor<B>,
    epsilon: f64,
    output_grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let r = B::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
    (r.x_grad, r.gamma_grad, r.beta_grad)
}

/// `x·scale + shift` per channel of axis 1 with burn's broadcasting ops.
fn burn_channel_affine<B: Backend>(
    x: FloatTensor<B>,
    scale: FloatTensor<B>,
    shift: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let mut dims = vec![1; x.shape().num_dims()];
    dims[1] = x.shape()[1];
    let per_channel = |t| B::float_reshape(t, Shape::from(dims.clone()));
    let y = B::float_mul(x, per_channel(scale));
    match shift {
        Some(b) => B::float_add(y, per_channel(b)),
        None => y,
    }
}

/// `t · s` for a one-element `s`.
fn scale_by<B: Backend>(t: FloatTensor<B>, factor: FloatTensor<B>) -> FloatTensor<B> {
    let rank = t.shape().num_dims();
    B::float_mul(t, B::float_reshape(factor, Shape::from(vec![1; rank])))
}

fn frobenius<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_sqrt(B::float_sum(B::float_mul(t.clone(), t)))
}

/// One Adam update of one parameter, as plain data: burn's `Adam` (without AMSGrad) with its
/// optional weight decay, at step `time` (1 for the first update) and learning rate `lr`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamUpdate {
    /// First-moment decay `β₁`.
    pub beta_1: f32,
    /// Second-moment decay `β₂`.
    pub beta_2: f32,
    /// `ε` of the denominator (burn's: scaled by `√(1 − β₂ᵗ)`).
    pub epsilon: f32,
    /// L2 penalty added to the gradient (`g + λ·θ`), if any.
    pub weight_decay: Option<f32>,
    /// Learning rate.
    pub lr: f64,
    /// The step number this update makes, from 1.
    pub time: usize,
}

impl AdamUpdate {
    /// `(√(1 − β₂ᵗ) / (1 − β₁ᵗ), ε·√(1 − β₂ᵗ))`: the bias corrections folded as burn folds them.
    pub fn factors(&self) -> (f32, f32) {
        let time = self.time as i32;
        let correction_2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let combined = correction_2 / (1.0 - self.beta_1.powi(time));
        (combined, self.epsilon * correction_2)
    }

    /// The update with burn's generic ops, in burn's order (one tensor per operation): the
    /// reference the fused kernel is tested against, and the path of every other backend.
    pub fn apply<B: Backend>(
        &self,
        param: FloatTensor<B>,
        grad: FloatTensor<B>,
        moment_1: Option<FloatTensor<B>>,
        moment_2: Option<FloatTensor<B>>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let grad = match self.weight_decay {
            Some(penalty) => B::float_add(B::float_mul_scalar(param.clone(), penalty.into()), grad),
            None => grad,
        };
        let (f1, f2) = ((1.0 - self.beta_1).into(), (1.0 - self.beta_2).into());
        let square = B::float_mul(grad.clone(), grad.clone());
        let (m, v) = match (moment_1, moment_2) {
            (Some(m), Some(v)) => (
                B::float_add(
                    B::float_mul_scalar(m, self.beta_1.into()),
                    B::float_mul_scalar(grad, f1),
                ),
                B::float_add(
                    B::float_mul_scalar(v, self.beta_2.into()),
                    B::float_mul_scalar(square, f2),
                ),
            ),
            _ => (
                B::float_mul_scalar(grad, f1),
                B::float_mul_scalar(square, f2),
            ),
        };
        let (combined, epsilon) = self.factors();
        let step = B::float_div(
            B::float_mul_scalar(m.clone(), combined.into()),
            B::float_add_scalar(B::float_sqrt(v.clone()), epsilon.into()),
        );
        let param = B::float_sub(param, B::float_mul_scalar(step, self.lr.into()));
        (param, m, v)
    }
}

/// The input gradient of `op` through `V = s·V₀` from its parts: `s·(g ⋆ V₀) = g ⋆ (s·V₀)`, so
/// `s` scales whichever of `V₀` and the input gradient is smaller (nothing when `scale` is unit).
fn scaled_x_backward<B: FeedbackBackend>(
    op: &LayerOp,
    x: Option<FloatTensor<B>>,
    (v0, factor): (FloatTensor<B>, FloatTensor<B>),
    scale: ScaleKind,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    if scale == ScaleKind::Unit {
        op.x_backward::<B>(x, v0, grad)
    } else if v0.shape().num_elements() <= op.input_len::<B>(x.as_ref(), &v0, &grad) {
        op.x_backward::<B>(x, scale_by::<B>(v0, factor), grad)
    } else {
        scale_by::<B>(op.x_backward::<B>(x, v0, grad), factor)
    }
}

/// Which layer kernel an op runs, with its options.
#[derive(Clone, Debug)]
enum LayerOp {
    Linear,
    Conv2d(ConvOptions<2>),
    ConvTranspose2d(ConvTransposeOptions<2>),
}

impl LayerOp {
    fn forward<B: FeedbackBackend>(
        &self,
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        match self {
            Self::Linear => B::linear(x, weight, bias),
            // The backend's feedback op without autodiff: its own kernel (Flex: an im2col one).
            Self::Conv2d(o) => B::feedback_conv2d(
                x,
                weight,
                bias.into(),
                MaybeTensor::Absent,
                o.clone(),
                FeedbackKernel::WEIGHT,
            ),
            Self::ConvTranspose2d(o) => B::feedback_conv_transpose2d(
                x,
                weight,
                bias.into(),
                MaybeTensor::Absent,
                o.clone(),
                FeedbackKernel::WEIGHT,
            ),
        }
    }

    /// The input gradient, with `v` where backpropagation has the weight.
    fn x_backward<B: FeedbackBackend>(
        &self,
        x: Option<FloatTensor<B>>,
        v: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let x = || x.clone().expect("convolution input checkpointed");
        match self {
            Self::Linear => B::linear_x_backward(v, grad),
            Self::Conv2d(o) => B::feedback_conv2d_x_backward(x(), v, grad, o.clone()),
            Self::ConvTranspose2d(o) => B::feedback_conv_transpose2d_x_backward(v, grad, o.clone()),
        }
    }

    /// The number of elements of the input gradient.
    fn input_len<B: Backend>(
        &self,
        x: Option<&FloatTensor<B>>,
        weight: &FloatTensor<B>,
        grad: &FloatTensor<B>,
    ) -> usize {
        match (self, x) {
            (_, Some(x)) => x.shape().num_elements(),
            // Linear without a checkpointed input: [..., d_out] → [..., d_in].
            _ => {
                let d_out = weight.shape()[1].max(1);
                grad.shape().num_elements() / d_out * weight.shape()[0]
            }
        }
    }

    /// The weight gradient; linear needs no weight for it, the convolutions do (for its shape).
    fn weight_backward<B: FeedbackBackend>(
        &self,
        x: FloatTensor<B>,
        weight: Option<FloatTensor<B>>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let weight = || weight.clone().expect("convolution weight checkpointed");
        match self {
            Self::Linear => B::linear_weight_backward(x, grad),
            Self::Conv2d(o) => B::feedback_conv2d_weight_backward(x, weight(), grad, o.clone()),
            Self::ConvTranspose2d(o) => {
                B::feedback_conv_transpose2d_weight_backward(x, weight(), grad, o.clone())
            }
        }
    }

    fn bias_backward<B: FeedbackBackend>(
        &self,
        x: FloatTensor<B>,
        bias: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        match self {
            Self::Linear => B::linear_bias_backward(grad),
            Self::Conv2d(_) => B::feedback_conv2d_bias_backward(x, bias, grad),
            Self::ConvTranspose2d(_) => B::feedback_conv_transpose2d_bias_backward(x, bias, grad),
        }
    }
}

/// A 1-d convolution's options as those of the 2-d convolution it is over `[.., 1, length]`.
fn conv1d_as_2d(options: &ConvOptions<1>) -> ConvOptions<2> {
    ConvOptions::new_with_padding(
        [1, options.stride[0]],
        [(0, 0), options.padding[0]],
        [1, options.dilation[0]],
        options.groups,
    )
}

/// `[a, b, l]` as `[a, b, 1, l]` (a reshape: no copy of contiguous data).
fn with_unit_height<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let s = t.shape();
    B::float_reshape(t, Shape::from(vec![s[0], s[1], 1, s[2]]))
}

/// `[a, b, 1, l]` as `[a, b, l]`.
fn without_height<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let s = t.shape();
    B::float_reshape(t, Shape::from(vec![s[0], s[1], s[3]]))
}

/// An optional tensor argument of a [`FeedbackBackend`] op (extension ops take no `Option` of a
/// tensor directly).
#[derive(ExtensionType, Debug)]
pub enum MaybeTensor<B: Backend> {
    /// A tensor.
    Present(FloatTensor<B>),
    /// No tensor.
    Absent,
}

impl<B: Backend> MaybeTensor<B> {
    /// The tensor, if any.
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Self::Present(t) => Some(t),
            Self::Absent => None,
        }
    }
}

impl<B: Backend> From<Option<FloatTensor<B>>> for MaybeTensor<B> {
    fn from(t: Option<FloatTensor<B>>) -> Self {
        match t {
            Some(t) => Self::Present(t),
            None => Self::Absent,
        }
    }
}

/// Layer ops whose backward sends the input gradient through a feedback tensor.
///
/// Call them through [`Dispatch`](burn::backend::Dispatch), or use the tensor-level functions of
/// [`ops`](crate::ops) and the layers of [`layers`](crate::layers), which do that for you.
/// `aux` is the layer's auxiliary tensor (frSF's `M`, FA's `B`, or a given `V`); `kernel` says how
/// `V` is formed from it and the weight. On a backend without autodiff these are the backend's own
/// layer kernels and `aux`/`kernel` are ignored.
#[backend_extension(
    Autodiff,
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda"))
)]
pub trait FeedbackBackend: Backend {
    /// `V = s·V₀` as its two parts `(V₀, s)`, `s` a one-element tensor: the backward applies `s`
    /// to whichever of `V` and the input gradient is smaller. For a random form (brSF) this draws
    /// from the device generator, exactly as the backward does. On autodiff both are untracked
    /// constants.
    fn feedback_matrix_parts(
        weight: FloatTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        kernel.form_parts::<Self>(weight, aux.into_option())
    }

    /// The input gradient of [`feedback_linear`](Self::feedback_linear) through `V = s·V₀`
    /// (`V₀`, `s` formed from `weight` and `aux` by `kernel`): `g·Vᵀ`, `[..., d_input]` from the
    /// output gradient `[..., d_output]`. By default [`feedback_matrix_parts`] and burn's
    /// `linear_x_backward`; Flex forms `V₀` piece by piece beside the product instead of as a
    /// whole tensor first.
    ///
    /// [`feedback_matrix_parts`]: Self::feedback_matrix_parts
    fn feedback_linear_x_backward(
        weight: FloatTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (v0, factor) = Self::feedback_matrix_parts(weight, aux, kernel);
        scaled_x_backward::<Self>(
            &LayerOp::Linear,
            None,
            (v0, factor),
            kernel.scale,
            output_grad,
        )
    }

    /// The input gradient of [`feedback_conv2d`](Self::feedback_conv2d) through `V = s·V₀`
    /// (`V₀`, `s` formed from `weight` and `aux` by `kernel`), `[batch, in, h, w]` like `x`. By
    /// default [`feedback_matrix_parts`] and
    /// [`feedback_conv2d_x_backward`](Self::feedback_conv2d_x_backward), `s` applied to the
    /// smaller of `V₀` and the result; Flex forms `V₀` slice by slice beside its products where
    /// the weights outweigh the input gradient.
    ///
    /// [`feedback_matrix_parts`]: Self::feedback_matrix_parts
    fn feedback_conv2d_formed_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let parts = Self::feedback_matrix_parts(weight, aux, kernel);
        let op = LayerOp::Conv2d(options);
        scaled_x_backward::<Self>(&op, Some(x), parts, kernel.scale, output_grad)
    }

    /// One Adam update of a parameter: `(θ, m, v)` after the step, from `θ`, its gradient and
    /// the moments (`None` before the first step). Not a layer op: the optimizer's update sits
    /// here because on Flex it is one fused pass instead of a dozen elementwise tensors
    /// ([`AdamUpdate::apply`] elsewhere, bit-identical).
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        #[extension_type] moment_1: MaybeTensor<Self>,
        #[extension_type] moment_2: MaybeTensor<Self>,
        update: AdamUpdate,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        update.apply::<Self>(param, grad, moment_1.into_option(), moment_2.into_option())
    }

    /// Batch normalization with the batch's own statistics over axis 1: `(y, mean, biased
    /// variance)`, as burn's `batch_norm_train`; on autodiff differentiated through
    /// [`feedback_batch_norm_train_backward`](Self::feedback_batch_norm_train_backward). Not a
    /// feedback op: it sits here because Flex has no batch-norm kernels of its own (see
    /// `flex_norm`); every other backend runs burn's.
    fn feedback_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burn_batch_norm_train::<Self>(x, gamma, beta, epsilon)
    }

    /// The gradients `(dx, dγ, dβ)` of
    /// [`feedback_batch_norm_train`](Self::feedback_batch_norm_train) from its output gradient
    /// and the statistics it returned.
    fn feedback_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burn_batch_norm_train_backward::<Self>(x, gamma, mean, variance, epsilon, output_grad)
    }

    /// `x·scale + shift` per channel of axis 1 (`scale`, `shift`: `[channels]`; no shift when
    /// `None`): an inference-mode batch norm with its statistics folded in, and its input
    /// gradient. On autodiff only `x` is differentiated; `scale` and `shift` are constants.
    fn feedback_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        #[extension_type] shift: MaybeTensor<Self>,
    ) -> FloatTensor<Self> {
        burn_channel_affine::<Self>(x, scale, shift.into_option())
    }

    /// `x·W + b` over the last axis of `x` (rank ≥ 2); `W` is `[d_input, d_output]`.
    fn feedback_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        let _ = (aux, kernel);
        Self::linear(x, weight, bias.into_option())
    }

    /// 1-d convolution; `W` is `[channels_out, channels_in / groups, k]`. On every backend the
    /// 2-d op on a unit height (`[n, c, l]` read as `[n, c, 1, l]`, reshapes on either side):
    /// on Flex the extension's kernels, on autodiff one recorded 2-d step, whose backward forms
    /// `V` as for any 2-d convolution.
    fn feedback_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        options: ConvOptions<1>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        without_height::<Self>(Self::feedback_conv2d(
            with_unit_height::<Self>(x),
            with_unit_height::<Self>(weight),
            bias,
            aux.into_option().map(with_unit_height::<Self>).into(),
            conv1d_as_2d(&options),
            kernel,
        ))
    }

    /// 2-d convolution; `W` is `[channels_out, channels_in / groups, k₁, k₂]`.
    fn feedback_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        options: ConvOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        let _ = (aux, kernel);
        Self::conv2d(x, weight, bias.into_option(), options)
    }

    /// The input gradient of a 2-d convolution with kernel `weight` (`W`, or a feedback tensor
    /// `V`) and output gradient `output_grad`: burn's kernel, except on Flex, which has none of
    /// its own and gets an im2col one here.
    fn feedback_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// The weight gradient of a 2-d convolution of `x` with output gradient `output_grad`
    /// (`weight` gives the shape): burn's kernel, except on Flex (see
    /// [`feedback_conv2d_x_backward`](Self::feedback_conv2d_x_backward)).
    fn feedback_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    /// The bias gradient of a 2-d convolution (the output gradient summed over all axes but
    /// the channels): burn's, except on Flex, where burn's default copies the gradient with the
    /// batch and channel axes swapped first.
    fn feedback_conv2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_bias_backward(x, bias, output_grad)
    }

    /// 2-d transposed convolution; `W` is `[channels_in, channels_out / groups, k₁, k₂]`.
    fn feedback_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeTensor<Self>,
        #[extension_type] aux: MaybeTensor<Self>,
        options: ConvTransposeOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        let _ = (aux, kernel);
        Self::conv_transpose2d(x, weight, bias.into_option(), options)
    }

    /// The input gradient of a 2-d transposed convolution with kernel `weight` (`W` or a
    /// feedback tensor `V`): burn's kernel, except on Flex, where it is the extension's forward
    /// convolution of the output gradient.
    fn feedback_conv_transpose2d_x_backward(
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_x_backward(weight, output_grad, options)
    }

    /// The weight gradient of a 2-d transposed convolution of `x` (`weight` gives the shape):
    /// burn's kernel, except on Flex, where it is the extension's convolution weight gradient
    /// with the input and the output gradient swapped.
    fn feedback_conv_transpose2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_weight_backward(x, weight, output_grad, options)
    }

    /// The bias gradient of a 2-d transposed convolution: burn's, except on Flex (as
    /// [`feedback_conv2d_bias_backward`](Self::feedback_conv2d_bias_backward)).
    fn feedback_conv_transpose2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d_bias_backward(x, bias, output_grad)
    }

    /// 2-d max pooling (dilation 1, floor mode), the op the models' pooling layers call: on
    /// autodiff recorded with [`feedback_max_pool2d_backward`](Self::feedback_max_pool2d_backward)
    /// as its backward. burn's kernels, except on Flex (see `flex_pool`).
    fn feedback_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::max_pool2d(x, kernel, stride, padding, [1, 1], false)
    }

    /// [`feedback_max_pool2d`](Self::feedback_max_pool2d) with, per output, the position of its
    /// maximum within its input plane, as floats.
    fn feedback_max_pool2d_with_indices(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let pooled = Self::max_pool2d_with_indices(
            x,
            kernel,
            stride,
            padding,
            [1, 1],
            false,
            burn::tensor::IntDType::I64,
        );
        (
            pooled.output,
            Self::int_into_float(pooled.indices, burn::tensor::FloatDType::F32),
        )
    }

    /// The input gradient of a max pooling from its output gradient and the indices of
    /// [`feedback_max_pool2d_with_indices`](Self::feedback_max_pool2d_with_indices).
    fn feedback_max_pool2d_backward(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        output_grad: FloatTensor<Self>,
        indices: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let indices = Self::float_into_int(indices, burn::tensor::IntDType::I64);
        Self::max_pool2d_with_indices_backward(
            x,
            kernel,
            stride,
            padding,
            [1, 1],
            false,
            output_grad,
            indices,
        )
        .x_grad
    }
}

#[cfg(feature = "flex")]
impl FeedbackBackend for burn::backend::Flex {
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: MaybeTensor<Self>,
        moment_2: MaybeTensor<Self>,
        update: AdamUpdate,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (m, v) = (moment_1.into_option(), moment_2.into_option());
        if crate::flex_adam::fusable(&param, &grad, m.as_ref(), v.as_ref()) {
            crate::flex_adam::adam_update(param, &grad, m, v, &update)
        } else {
            update.apply::<Self>(param, grad, m, v)
        }
    }

    fn feedback_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match crate::flex_norm::batch_norm_train(&x, &gamma, &beta, epsilon) {
            Some(result) => result,
            None => burn_batch_norm_train::<Self>(x, gamma, beta, epsilon),
        }
    }

    fn feedback_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match crate::flex_norm::batch_norm_train_backward(
            &x,
            &gamma,
            &mean,
            &variance,
            epsilon,
            &output_grad,
        ) {
            Some(result) => result,
            None => burn_batch_norm_train_backward::<Self>(
                x,
                gamma,
                mean,
                variance,
                epsilon,
                output_grad,
            ),
        }
    }

    fn feedback_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: MaybeTensor<Self>,
    ) -> FloatTensor<Self> {
        let shift = shift.into_option();
        match crate::flex_norm::channel_affine(&x, &scale, shift.as_ref()) {
            Some(y) => y,
            None => burn_channel_affine::<Self>(x, scale, shift),
        }
    }

    fn feedback_matrix_parts(
        weight: FloatTensor<Self>,
        aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Inside `frozen_weights` (attacks), formed once per layer and reused.
        crate::frozen::flex::reuse(kernel, weight, aux.into_option(), |weight, aux| {
            match crate::fused::feedback_matrix_parts(&kernel, &weight, aux.as_ref()) {
                Some(parts) => parts,
                None => kernel.form_parts::<Self>(weight, aux),
            }
        })
    }

    fn feedback_linear_x_backward(
        weight: FloatTensor<Self>,
        aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // Not through `frozen_weights`' store: forming V₀ here costs about what copying a
        // stored one would (a read of W), and the gradients stay bit-identical in and out of it.
        let aux = aux.into_option();
        let fused = crate::flex_linear::x_backward(&kernel, &weight, aux.as_ref(), &output_grad);
        fused.unwrap_or_else(|| {
            let parts = Self::feedback_matrix_parts(weight, aux.into(), kernel);
            scaled_x_backward::<Self>(&LayerOp::Linear, None, parts, kernel.scale, output_grad)
        })
    }

    fn feedback_conv2d_formed_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        use crate::frozen::flex::{Lookup, insert, lookup};
        let aux = aux.into_option();
        let s = x.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        let formed = |kernel: &FeedbackKernel, weight: &Self::FloatTensorPrimitive, aux, keep| {
            let (weight, grad) = ((weight, aux), &output_grad);
            crate::flex_conv::formed_x_backward(dims, kernel, weight, grad, &options, keep)
        };
        let one = |c: f32| {
            Self::FloatTensorPrimitive::from_data(burn::tensor::TensorData::new(vec![c], [1]))
        };
        // Inside `frozen_weights` (attacks): formed once, kept whole, and copied slice by slice
        // at the later backwards (the same values as forming them, at the cost of BP's copy).
        let parts = match lookup(kernel, &weight, aux.as_ref()) {
            Lookup::Found(parts) => {
                let (v0, factor) = *parts;
                let copy = factor.as_slice::<f32>().map(|f| FeedbackKernel {
                    form: FeedbackForm::Weight,
                    scale: ScaleKind::Constant(f[0]),
                });
                if let Some((dx, _)) = copy.and_then(|copy| formed(&copy, &v0, None, false)) {
                    return dx;
                }
                (v0, factor)
            }
            Lookup::Keep => {
                if let Some((dx, Some((v0, factor)))) = formed(&kernel, &weight, aux.as_ref(), true)
                {
                    insert(kernel, weight, aux, (v0, one(factor)));
                    return dx;
                }
                Self::feedback_matrix_parts(weight, aux.into(), kernel)
            }
            Lookup::Skip => {
                if let Some((dx, _)) = formed(&kernel, &weight, aux.as_ref(), false) {
                    return dx;
                }
                Self::feedback_matrix_parts(weight, aux.into(), kernel)
            }
        };
        let op = LayerOp::Conv2d(options);
        scaled_x_backward::<Self>(&op, Some(x), parts, kernel.scale, output_grad)
    }

    fn feedback_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeTensor<Self>,
        aux: MaybeTensor<Self>,
        options: ConvOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        let _ = (aux, kernel);
        let bias = bias.into_option();
        match crate::flex_conv::conv2d_forward(&x, &weight, bias.as_ref(), &options) {
            Some(y) => y,
            None => <Self as burn::backend::ops::ModuleOps<Self>>::conv2d(x, weight, bias, options),
        }
    }

    fn feedback_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let s = x.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match crate::flex_conv::conv2d_x_backward(dims, &weight, &output_grad, &options) {
            Some(dx) => dx,
            None => <Self as burn::backend::ops::ModuleOps<Self>>::conv2d_x_backward(
                x,
                weight,
                output_grad,
                options,
            ),
        }
    }

    fn feedback_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let s = weight.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match crate::flex_conv::conv2d_weight_backward(&x, dims, &output_grad, &options) {
            Some(dw) => dw,
            None => <Self as burn::backend::ops::ModuleOps<Self>>::conv2d_weight_backward(
                x,
                weight,
                output_grad,
                options,
            ),
        }
    }

    fn feedback_conv2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match crate::flex_norm::channel_sums(&output_grad) {
            Some(db) if db.shape() == bias.shape() => db,
            _ => <Self as burn::backend::ops::ModuleOps<Self>>::conv2d_bias_backward(
                x,
                bias,
                output_grad,
            ),
        }
    }

    fn feedback_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeTensor<Self>,
        aux: MaybeTensor<Self>,
        options: ConvTransposeOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        let _ = (aux, kernel);
        let bias = bias.into_option();
        crate::flex_conv::transposed::forward(&x, &weight, bias.as_ref(), &options).unwrap_or_else(
            || {
                <Self as burn::backend::ops::ModuleOps<Self>>::conv_transpose2d(
                    x, weight, bias, options,
                )
            },
        )
    }

    fn feedback_conv_transpose2d_x_backward(
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        crate::flex_conv::transposed::x_backward(&weight, &output_grad, &options).unwrap_or_else(
            || {
                <Self as burn::backend::ops::ModuleOps<Self>>::conv_transpose2d_x_backward(
                    weight,
                    output_grad,
                    options,
                )
            },
        )
    }

    fn feedback_conv_transpose2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvTransposeOptions<2>,
    ) -> FloatTensor<Self> {
        let s = weight.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        crate::flex_conv::transposed::weight_backward(&x, dims, &output_grad, &options)
            .unwrap_or_else(|| {
                <Self as burn::backend::ops::ModuleOps<Self>>::conv_transpose2d_weight_backward(
                    x,
                    weight,
                    output_grad,
                    options,
                )
            })
    }

    fn feedback_conv_transpose2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        crate::flex_norm::channel_sums(&output_grad)
            .filter(|db| db.shape() == bias.shape())
            .unwrap_or_else(|| {
                <Self as burn::backend::ops::ModuleOps<Self>>::conv_transpose2d_bias_backward(
                    x,
                    bias,
                    output_grad,
                )
            })
    }

    fn feedback_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match crate::flex_pool::max_pool2d(&x, kernel, stride, padding) {
            Some(values) => values,
            None => <Self as burn::backend::ops::ModuleOps<Self>>::max_pool2d(
                x,
                kernel,
                stride,
                padding,
                [1, 1],
                false,
            ),
        }
    }

    fn feedback_max_pool2d_with_indices(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match crate::flex_pool::max_pool2d_with_indices(&x, kernel, stride, padding) {
            Some(pooled) => pooled,
            None => {
                let pooled = <Self as burn::backend::ops::ModuleOps<Self>>::max_pool2d_with_indices(
                    x,
                    kernel,
                    stride,
                    padding,
                    [1, 1],
                    false,
                    burn::tensor::IntDType::I64,
                );
                (
                    pooled.output,
                    <Self as burn::backend::ops::IntTensorOps<Self>>::int_into_float(
                        pooled.indices,
                        burn::tensor::FloatDType::F32,
                    ),
                )
            }
        }
    }

    fn feedback_max_pool2d_backward(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        output_grad: FloatTensor<Self>,
        indices: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let s = x.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match crate::flex_pool::max_pool2d_backward(dims, &output_grad, &indices) {
            Some(dx) => dx,
            None => {
                let indices = <Self as burn::backend::ops::FloatTensorOps<Self>>::float_into_int(
                    indices,
                    burn::tensor::IntDType::I64,
                );
                <Self as burn::backend::ops::ModuleOps<Self>>::max_pool2d_with_indices_backward(
                    x,
                    kernel,
                    stride,
                    padding,
                    [1, 1],
                    false,
                    output_grad,
                    indices,
                )
                .x_grad
            }
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl FeedbackBackend for burn::backend::Cube {}

/// State kept from forward to backward: checkpoint ids of x, W and b, the auxiliary tensor, and
/// the recipe.
type State<B> = (
    Option<NodeId>,
    Option<NodeId>,
    Option<NodeId>,
    Option<FloatTensor<B>>,
    FeedbackKernel,
    LayerOp,
);

/// One backward step for every layer op, with 2 (no bias) or 3 parents.
#[derive(Debug)]
struct FeedbackBackward<const N: usize>;

impl<B: FeedbackBackend, const N: usize> Backward<B, N> for FeedbackBackward<N> {
    type State = State<B>;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let mut parents = ops.parents.into_iter();
        let node_x = parents.next().flatten();
        let node_weight = parents.next().flatten();
        let node_bias = parents.next().flatten();
        let grad = grads.consume::<B>(&ops.node);

        let (x_id, weight_id, bias_id, aux, kernel, op) = ops.state;
        let x = x_id.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let weight = weight_id.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let bias = bias_id.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));

        if let Some(node) = node_x {
            let weight = weight
                .clone()
                .expect("weight checkpointed for the input gradient");
            let dx = match op {
                LayerOp::Linear => {
                    B::feedback_linear_x_backward(weight, aux.into(), kernel, grad.clone())
                }
                LayerOp::Conv2d(ref options) => B::feedback_conv2d_formed_x_backward(
                    x.clone().expect("convolution input checkpointed"),
                    weight,
                    aux.into(),
                    kernel,
                    grad.clone(),
                    options.clone(),
                ),
                _ => {
                    let parts = B::feedback_matrix_parts(weight, aux.into(), kernel);
                    scaled_x_backward::<B>(&op, x.clone(), parts, kernel.scale, grad.clone())
                }
            };
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let x = x
                .clone()
                .expect("input checkpointed for the weight gradient");
            grads.register::<B>(node.id, op.weight_backward::<B>(x, weight, grad.clone()));
        }
        if let Some(node) = node_bias {
            let x = x.expect("input checkpointed for the bias gradient");
            let bias = bias.expect("bias checkpointed");
            grads.register::<B>(node.id, op.bias_backward::<B>(x, bias, grad));
        }
    }
}

/// Records the op on the autodiff graph: forward with `W`, backward with `V` for the input.
fn record<B: FeedbackBackend, C: CheckpointStrategy>(
    op: LayerOp,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    aux: Option<FloatTensor<Autodiff<B, C>>>,
    kernel: FeedbackKernel,
) -> FloatTensor<Autodiff<B, C>> {
    // The auxiliary tensor is a constant of the backward: never a parent, never differentiated.
    // Checked here, at the call that gave it, rather than inside the backward.
    assert!(
        aux.is_some() || !kernel.needs_aux(),
        "{op:?}: the feedback kernel {kernel:?} needs its auxiliary tensor (M or B), none was given"
    );
    let aux = aux
        .filter(|_| kernel.needs_aux())
        .map(|aux| aux.into_primitive());
    let x_tracked = x.is_tracked();
    let weight_tracked = weight.is_tracked();
    // Linear needs x only for dW and W only for dx; the convolutions need x for every gradient
    // (it gives the input shape) and W for dW, as burn's own convolutions do.
    let is_linear = matches!(op, LayerOp::Linear);
    let keep_x = !is_linear || weight_tracked || bias.is_some();
    let keep_weight = !is_linear || x_tracked;

    macro_rules! run {
        ($n:literal, $nodes:expr) => {
            match FeedbackBackward::<$n>
                .prepare::<C>($nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_id = keep_x.then(|| prep.checkpoint(&x));
                    let weight_id = keep_weight.then(|| prep.checkpoint(&weight));
                    let bias_id = bias.as_ref().map(|b| prep.checkpoint(b));
                    let output = op.forward::<B>(
                        x.into_primitive(),
                        weight.into_primitive(),
                        bias.map(|b| b.into_primitive()),
                    );
                    prep.finish((x_id, weight_id, bias_id, aux, kernel, op), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(op.forward::<B>(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.map(|b| b.into_primitive()),
                )),
            }
        };
    }

    match bias.as_ref().map(|b| b.node()) {
        Some(bias_node) => run!(3, [x.node(), weight.node(), bias_node]),
        None => run!(2, [x.node(), weight.node()]),
    }
}

/// The backward of [`FeedbackBackend::feedback_max_pool2d`] on autodiff: the input (for its
/// shape), the indices of the forward, the geometry.
#[derive(Debug)]
struct MaxPoolBackward;

type PoolState<B> = (NodeId, FloatTensor<B>, [[usize; 2]; 3]);

impl<B: FeedbackBackend> Backward<B, 1> for MaxPoolBackward {
    type State = PoolState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, indices, [kernel, stride, padding]) = ops.state;
        if let Some(node) = node {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
            let dx = B::feedback_max_pool2d_backward(x, kernel, stride, padding, grad, indices);
            grads.register::<B>(node.id, dx);
        }
    }
}

/// The backward of [`FeedbackBackend::feedback_batch_norm_train`] on autodiff: the input and γ
/// (checkpointed), the batch statistics as the forward computed them, ε.
#[derive(Debug)]
struct BatchNormBackward;

type NormState<B> = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

impl<B: FeedbackBackend> Backward<B, 3> for BatchNormBackward {
    type State = NormState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, mean, variance, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_id);
        let (dx, dgamma, dbeta) =
            B::feedback_batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
        for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// The backward of [`FeedbackBackend::feedback_channel_affine`] on autodiff: `dx = dy·scale`.
#[derive(Debug)]
struct ChannelAffineBackward;

impl<B: FeedbackBackend> Backward<B, 1> for ChannelAffineBackward {
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let dx = B::feedback_channel_affine(grad, ops.state, None.into());
            grads.register::<B>(node.id, dx);
        }
    }
}

impl<B: FeedbackBackend, C: CheckpointStrategy> FeedbackBackend for Autodiff<B, C> {
    fn feedback_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let constant = <Self as AutodiffBackend>::from_inner;
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let (y, mean, variance) = B::feedback_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (x_id, gamma_id, mean.clone(), variance.clone(), epsilon);
                (prep.finish(state, y), constant(mean), constant(variance))
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, variance) = B::feedback_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (prep.finish(y), constant(mean), constant(variance))
            }
        }
    }

    fn feedback_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // A gradient is not differentiated again: computed on the inner backend, untracked.
        let (dx, dgamma, dbeta) = B::feedback_batch_norm_train_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            epsilon,
            output_grad.into_primitive(),
        );
        let constant = <Self as AutodiffBackend>::from_inner;
        (constant(dx), constant(dgamma), constant(dbeta))
    }

    fn feedback_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: MaybeTensor<Self>,
    ) -> FloatTensor<Self> {
        let scale = scale.into_primitive();
        let shift = MaybeTensor::from(shift.into_option().map(|b| b.into_primitive()));
        match ChannelAffineBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::feedback_channel_affine(x.into_primitive(), scale.clone(), shift);
                prep.finish(scale, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::feedback_channel_affine(x.into_primitive(), scale, shift))
            }
        }
    }

    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: MaybeTensor<Self>,
        moment_2: MaybeTensor<Self>,
        update: AdamUpdate,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // An optimizer's update is never differentiated: run it on the inner backend.
        let inner =
            |t: MaybeTensor<Self>| MaybeTensor::from(t.into_option().map(|t| t.into_primitive()));
        let (param, m, v) = B::adam_update(
            param.into_primitive(),
            grad.into_primitive(),
            inner(moment_1),
            inner(moment_2),
            update,
        );
        (
            <Self as AutodiffBackend>::from_inner(param),
            <Self as AutodiffBackend>::from_inner(m),
            <Self as AutodiffBackend>::from_inner(v),
        )
    }

    fn feedback_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let (output, indices) = B::feedback_max_pool2d_with_indices(
                    x.into_primitive(),
                    kernel,
                    stride,
                    padding,
                );
                prep.finish((x_id, indices, [kernel, stride, padding]), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::feedback_max_pool2d(
                x.into_primitive(),
                kernel,
                stride,
                padding,
            )),
        }
    }

    fn feedback_matrix_parts(
        weight: FloatTensor<Self>,
        aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // V is a constant of the backward: formed on the inner backend, never tracked.
        let aux = aux.into_option().map(|a| a.into_primitive());
        let (v0, factor) = B::feedback_matrix_parts(weight.into_primitive(), aux.into(), kernel);
        (
            <Self as AutodiffBackend>::from_inner(v0),
            <Self as AutodiffBackend>::from_inner(factor),
        )
    }

    fn feedback_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeTensor<Self>,
        aux: MaybeTensor<Self>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        record::<B, C>(
            LayerOp::Linear,
            x,
            weight,
            bias.into_option(),
            aux.into_option(),
            kernel,
        )
    }

    fn feedback_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeTensor<Self>,
        aux: MaybeTensor<Self>,
        options: ConvOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        record::<B, C>(
            LayerOp::Conv2d(options),
            x,
            weight,
            bias.into_option(),
            aux.into_option(),
            kernel,
        )
    }

    fn feedback_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeTensor<Self>,
        aux: MaybeTensor<Self>,
        options: ConvTransposeOptions<2>,
        kernel: FeedbackKernel,
    ) -> FloatTensor<Self> {
        record::<B, C>(
            LayerOp::ConvTranspose2d(options),
            x,
            weight,
            bias.into_option(),
            aux.into_option(),
            kernel,
        )
    }
}
