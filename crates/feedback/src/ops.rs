//! Tensor-level feedback ops, for users who write their own layers.
//!
//! Each op computes the layer's forward exactly as burn does, and on an autodiff device records a
//! backward whose input gradient uses the given feedback tensor `V` instead of the weight. The
//! weight and bias gradients are exact.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use signsym_feedback::ops::feedback_linear;
//!
//! let device = Device::flex().autodiff();
//! let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device).require_grad();
//! let w = Tensor::<2>::from_floats([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], &device).require_grad();
//! let v = w.clone().detach().sign();
//! let y = feedback_linear(x.clone(), w, None, v).unwrap();
//! let grads = y.sum().backward();
//! // dx = 1·Vᵀ = row sums of sign(W): [1 + 0 + 1, 0 + 1 - 1]
//! let dx = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
//! assert_eq!(dx, vec![2.0, 0.0]);
//! ```

use burn::backend::Dispatch;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DispatchTensor, Tensor};

use crate::FeedbackError;
use crate::backend::{AdamUpdate, FeedbackBackend, FeedbackKernel, MaybeTensor, ScaleKind};

fn maybe<const D: usize>(t: Option<Tensor<D>>) -> MaybeTensor<Dispatch> {
    MaybeTensor::from(t.map(Tensor::into_dispatch))
}

fn wrap<const D: usize>(t: DispatchTensor) -> Tensor<D> {
    Tensor::from_dispatch(t)
}

/// Linear layer with a recipe for `V`; `x` of any rank ≥ 1.
pub(crate) fn linear_with<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    aux: Option<Tensor<2>>,
    kernel: FeedbackKernel,
) -> Tensor<D> {
    if D == 1 {
        // As burn's `linear`: a leading batch axis for the matmul, removed afterwards.
        let out: Tensor<2> = linear_with(x.unsqueeze::<2>(), weight, bias, aux, kernel);
        return out.squeeze_dim(0);
    }
    wrap(<Dispatch as FeedbackBackend>::feedback_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        maybe(bias),
        maybe(aux),
        kernel,
    ))
}

pub(crate) fn conv1d_with(
    x: Tensor<3>,
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    aux: Option<Tensor<3>>,
    options: ConvOptions<1>,
    kernel: FeedbackKernel,
) -> Tensor<3> {
    wrap(<Dispatch as FeedbackBackend>::feedback_conv1d(
        x.into_dispatch(),
        weight.into_dispatch(),
        maybe(bias),
        maybe(aux),
        options,
        kernel,
    ))
}

pub(crate) fn conv2d_with(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    aux: Option<Tensor<4>>,
    options: ConvOptions<2>,
    kernel: FeedbackKernel,
) -> Tensor<4> {
    wrap(<Dispatch as FeedbackBackend>::feedback_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        maybe(bias),
        maybe(aux),
        options,
        kernel,
    ))
}

pub(crate) fn conv_transpose2d_with(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    aux: Option<Tensor<4>>,
    options: ConvTransposeOptions<2>,
    kernel: FeedbackKernel,
) -> Tensor<4> {
    wrap(<Dispatch as FeedbackBackend>::feedback_conv_transpose2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        maybe(bias),
        maybe(aux),
        options,
        kernel,
    ))
}

pub(crate) fn check_feedback_shape(
    layer: &str,
    weight: &[usize],
    feedback: &[usize],
) -> Result<(), FeedbackError> {
    if weight != feedback {
        return Err(FeedbackError::FeedbackShape {
            layer: layer.to_string(),
            expected: weight.to_vec(),
            found: feedback.to_vec(),
        });
    }
    Ok(())
}

fn check_bias(
    op: &'static str,
    bias: &Option<Tensor<1>>,
    channels: usize,
) -> Result<(), FeedbackError> {
    match bias {
        Some(b) if b.dims()[0] != channels => Err(FeedbackError::InputShape {
            op,
            expected: format!("a bias of length {channels}"),
            found: b.dims().to_vec(),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn check_groups(
    op: &'static str,
    groups: usize,
    channels: [usize; 2],
) -> Result<(), FeedbackError> {
    if groups == 0 || !channels[0].is_multiple_of(groups) || !channels[1].is_multiple_of(groups) {
        return Err(FeedbackError::InvalidConfig(format!(
            "{op}: channels {channels:?} must both be divisible by groups = {groups}"
        )));
    }
    Ok(())
}

pub(crate) fn check_input_channels(
    op: &'static str,
    dims: &[usize],
    rank: usize,
    channels: usize,
) -> Result<(), FeedbackError> {
    if dims.len() != rank || dims[1] != channels {
        return Err(FeedbackError::InputShape {
            op,
            expected: format!("rank {rank} with {channels} channels on axis 1"),
            found: dims.to_vec(),
        });
    }
    Ok(())
}

pub(crate) fn check_linear_input(dims: &[usize], d_input: usize) -> Result<(), FeedbackError> {
    if dims.last() != Some(&d_input) {
        return Err(FeedbackError::InputShape {
            op: "feedback_linear",
            expected: format!("last axis of size {d_input}"),
            found: dims.to_vec(),
        });
    }
    Ok(())
}

/// `x·W + b` (W is `[d_input, d_output]`, as in burn's `Linear`), with `dx = g·Vᵀ`.
///
/// `feedback` must have the weight's shape. It is treated as a constant: no gradient flows into
/// it.
pub fn feedback_linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    feedback: Tensor<2>,
) -> Result<Tensor<D>, FeedbackError> {
    let [d_input, d_output] = weight.dims();
    check_feedback_shape("feedback_linear", &weight.dims(), &feedback.dims())?;
    check_linear_input(&x.dims(), d_input)?;
    check_bias("feedback_linear", &bias, d_output)?;
    Ok(linear_with(
        x,
        weight,
        bias,
        Some(feedback),
        FeedbackKernel::GIVEN,
    ))
}

/// 1-d convolution (W is `[channels_out, channels_in / groups, k]`), with the input gradient
/// computed by burn's `conv1d_x_backward` with `V`.
pub fn feedback_conv1d(
    x: Tensor<3>,
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    feedback: Tensor<3>,
    options: ConvOptions<1>,
) -> Result<Tensor<3>, FeedbackError> {
    let w = weight.dims();
    check_feedback_shape("feedback_conv1d", &w, &feedback.dims())?;
    check_groups(
        "feedback_conv1d",
        options.groups,
        [w[1] * options.groups, w[0]],
    )?;
    check_input_channels("feedback_conv1d", &x.dims(), 3, w[1] * options.groups)?;
    check_bias("feedback_conv1d", &bias, w[0])?;
    Ok(conv1d_with(
        x,
        weight,
        bias,
        Some(feedback),
        options,
        FeedbackKernel::GIVEN,
    ))
}

/// 2-d convolution (W is `[channels_out, channels_in / groups, k₁, k₂]`), with the input
/// gradient computed by burn's `conv2d_x_backward` with `V`.
pub fn feedback_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    feedback: Tensor<4>,
    options: ConvOptions<2>,
) -> Result<Tensor<4>, FeedbackError> {
    let w = weight.dims();
    check_feedback_shape("feedback_conv2d", &w, &feedback.dims())?;
    check_groups(
        "feedback_conv2d",
        options.groups,
        [w[1] * options.groups, w[0]],
    )?;
    check_input_channels("feedback_conv2d", &x.dims(), 4, w[1] * options.groups)?;
    check_bias("feedback_conv2d", &bias, w[0])?;
    Ok(conv2d_with(
        x,
        weight,
        bias,
        Some(feedback),
        options,
        FeedbackKernel::GIVEN,
    ))
}

/// 2-d transposed convolution (W is `[channels_in, channels_out / groups, k₁, k₂]`), with the
/// input gradient computed by burn's `conv_transpose2d_x_backward` with `V`.
pub fn feedback_conv_transpose2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    feedback: Tensor<4>,
    options: ConvTransposeOptions<2>,
) -> Result<Tensor<4>, FeedbackError> {
    let w = weight.dims();
    check_feedback_shape("feedback_conv_transpose2d", &w, &feedback.dims())?;
    check_groups(
        "feedback_conv_transpose2d",
        options.groups,
        [w[0], w[1] * options.groups],
    )?;
    check_input_channels("feedback_conv_transpose2d", &x.dims(), 4, w[0])?;
    check_bias("feedback_conv_transpose2d", &bias, w[1] * options.groups)?;
    Ok(conv_transpose2d_with(
        x,
        weight,
        bias,
        Some(feedback),
        options,
        FeedbackKernel::GIVEN,
    ))
}

/// The feedback tensor `V` that a backward with `kernel` uses for `weight` (and the layer's
/// auxiliary tensor `aux`: frSF's `M`, FA's `B`). On an autodiff device it is an untracked
/// constant. A random form (brSF) draws from the device generator exactly as the backward does,
/// so after the same `Device::seed` both see the same magnitudes.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_feedback::{FeedbackForm, FeedbackKernel, ScaleKind};
/// use signsym_feedback::ops::feedback_matrix;
///
/// let device = Device::flex();
/// let w = Tensor::<2>::from_floats([[3.0, -4.0], [0.0, 0.0]], &device);
/// let usf = FeedbackKernel { form: FeedbackForm::Sign, scale: ScaleKind::MatchNorm };
/// // sign(W) = [[1, -1], [0, 0]], rescaled to ‖W‖ = 5: factor 5/√2.
/// let v = feedback_matrix(w, None, usf).unwrap().into_data().try_to_vec::<f32>().unwrap();
/// let f = 5.0 / 2f32.sqrt();
/// assert!((v[0] - f).abs() < 1e-5 && (v[1] + f).abs() < 1e-5 && v[2] == 0.0);
/// ```
pub fn feedback_matrix<const D: usize>(
    weight: Tensor<D>,
    aux: Option<Tensor<D>>,
    kernel: FeedbackKernel,
) -> Result<Tensor<D>, FeedbackError> {
    let aux = aux.filter(|_| kernel.needs_aux());
    match &aux {
        Some(a) => check_feedback_shape("feedback_matrix", &weight.dims(), &a.dims())?,
        None if kernel.needs_aux() => {
            return Err(FeedbackError::MissingFeedback {
                layer: "feedback_matrix".to_string(),
                rule: format!("{:?}", kernel.form),
            });
        }
        None => {}
    }
    let (v0, factor) = <Dispatch as FeedbackBackend>::feedback_matrix_parts(
        weight.into_dispatch(),
        maybe(aux),
        kernel,
    );
    let v0: Tensor<D> = wrap(v0);
    Ok(match kernel.scale {
        ScaleKind::Unit => v0,
        _ => v0 * wrap::<1>(factor).reshape([1; D]),
    })
}

/// 2-d max pooling of `x` (`[batch, channels, h, w]`) with windows `kernel`, strides `stride`
/// and zero-free padding `padding` (padded positions never win; dilation 1, floor mode): burn's
/// `max_pool2d` to the bit, with a direct kernel forward and backward on Flex, where burn's
/// generic one dominated the small CNN's step. Differentiable on autodiff devices.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::flex().autodiff();
/// let x = Tensor::<4>::from_floats([[[[1.0, 3.0], [2.0, 0.0]]]], &device).require_grad();
/// let y = signsym_feedback::ops::max_pool2d(x.clone(), [2, 2], [2, 2], [0, 0]);
/// assert_eq!(y.clone().into_data().try_to_vec::<f32>().unwrap(), [3.0]);
/// let dx = x.grad(&y.sum().backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
/// assert_eq!(dx, [0.0, 1.0, 0.0, 0.0]);
/// ```
pub fn max_pool2d(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<4> {
    wrap(<Dispatch as FeedbackBackend>::feedback_max_pool2d(
        x.into_dispatch(),
        kernel,
        stride,
        padding,
    ))
}

/// One Adam update of a parameter (burn's `Adam` without AMSGrad, see [`AdamUpdate`]):
/// `(θ, m, v)` after the step, from `θ`, its gradient `grad` and the moments of the steps so far
/// (`None` before the first). On Flex one fused pass that updates the buffers in place when
/// nothing else holds them; elsewhere burn's operations. Both give burn's `Adam` to the bit.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_feedback::AdamUpdate;
/// let device = Device::flex();
/// let theta = Tensor::<1>::from_floats([1.0, -2.0], &device);
/// let grad = Tensor::<1>::from_floats([0.5, -0.5], &device);
/// let step = AdamUpdate { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, weight_decay: None, lr: 0.1, time: 1 };
/// let (theta, _m, _v) = signsym_feedback::ops::adam_update(theta, grad, None, step).unwrap();
/// // The first step moves every coordinate by about lr against its gradient's sign.
/// let t = theta.into_data().try_to_vec::<f32>().unwrap();
/// assert!((t[0] - 0.9).abs() < 1e-5 && (t[1] + 1.9).abs() < 1e-5);
/// ```
pub fn adam_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
    update: AdamUpdate,
) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), FeedbackError> {
    let dims = param.dims();
    let expect = |what: &str, found: [usize; D]| {
        if found == dims {
            Ok(())
        } else {
            Err(FeedbackError::InputShape {
                op: "adam_update",
                found: found.to_vec(),
                expected: format!("{what} of the parameter's shape {dims:?}"),
            })
        }
    };
    expect("a gradient", grad.dims())?;
    if let Some((m, v)) = &moments {
        expect("a first moment", m.dims())?;
        expect("a second moment", v.dims())?;
    }
    if update.time == 0 {
        return Err(FeedbackError::InvalidConfig(
            "adam_update: steps count from 1".to_string(),
        ));
    }
    let (m, v) = moments.unzip();
    let (param, m, v) = <Dispatch as FeedbackBackend>::adam_update(
        param.into_dispatch(),
        grad.into_dispatch(),
        maybe(m),
        maybe(v),
        update,
    );
    Ok((wrap(param), wrap(m), wrap(v)))
}

/// A training-mode batch norm's output and the batch statistics it normalised with.
#[derive(Debug, Clone)]
pub struct BatchNormTrained<const D: usize> {
    /// `(x − mean)/√(variance + ε)·γ + β`.
    pub output: Tensor<D>,
    /// Each channel's mean over the batch and positions (untracked).
    pub mean: Tensor<1>,
    /// Each channel's biased variance (untracked): what burn feeds its running variance.
    pub variance: Tensor<1>,
}

/// Checks a `[channels]` parameter of a per-channel op against `x`'s axis 1.
fn check_channels<const D: usize>(
    op: &'static str,
    x: &Tensor<D>,
    params: &[(&str, &Tensor<1>)],
) -> Result<(), FeedbackError> {
    let dims = x.dims();
    if D < 2 || dims[0] * dims[2..].iter().product::<usize>() == 0 {
        return Err(FeedbackError::InputShape {
            op,
            expected: "a non-empty tensor [batch, channels, ...] of rank ≥ 2".to_string(),
            found: dims.to_vec(),
        });
    }
    for (name, p) in params {
        if p.dims() != [dims[1]] {
            return Err(FeedbackError::InputShape {
                op,
                expected: format!(
                    "{name} of shape [{}], one per channel of the input",
                    dims[1]
                ),
                found: p.dims().to_vec(),
            });
        }
    }
    Ok(())
}

/// Batch normalization with the batch's own statistics, as burn's
/// `burn::tensor::module::batch_norm_train` (axis 1 is the channel; biased variance). On Flex
/// the statistics, the output and the backward take two passes each over the activations
/// instead of burn's generic ops; elsewhere this is burn's op. Agrees with burn's to rounding.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::flex();
/// let x = Tensor::<2>::from_floats([[1.0, 10.0], [3.0, 10.0]], &device);
/// let (gamma, beta) = (Tensor::ones([2], &device), Tensor::zeros([2], &device));
/// let bn = signsym_feedback::ops::batch_norm_train(x, gamma, beta, 1e-5).unwrap();
/// assert_eq!(bn.mean.into_data().try_to_vec::<f32>().unwrap(), [2.0, 10.0]);
/// assert_eq!(bn.variance.into_data().try_to_vec::<f32>().unwrap(), [1.0, 0.0]);
/// let y = bn.output.into_data().try_to_vec::<f32>().unwrap();
/// assert!((y[0] + 1.0).abs() < 1e-4 && (y[2] - 1.0).abs() < 1e-4 && y[1] == 0.0);
/// ```
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Result<BatchNormTrained<D>, FeedbackError> {
    check_channels("batch_norm_train", &x, &[("γ", &gamma), ("β", &beta)])?;
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(FeedbackError::InvalidConfig(format!(
            "batch_norm_train: ε must be finite and positive, got {epsilon}"
        )));
    }
    let (output, mean, variance) = <Dispatch as FeedbackBackend>::feedback_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    Ok(BatchNormTrained {
        output: wrap(output),
        mean: wrap(mean),
        variance: wrap(variance),
    })
}

/// `x·scale[c] + shift[c]` for each channel `c` of axis 1: an inference-mode batch norm with
/// `scale = γ/√(σ² + ε)` and `shift = β − μ·scale`. Only `x` is differentiated (`scale` and
/// `shift` are constants of the backward); one pass forward and one backward on Flex.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// let device = Device::flex().autodiff();
/// let x = Tensor::<3>::from_floats([[[1.0, 2.0], [3.0, 4.0]]], &device).require_grad();
/// let scale = Tensor::<1>::from_floats([2.0, -1.0], &device);
/// let shift = Tensor::<1>::from_floats([0.5, 0.0], &device);
/// let y = signsym_feedback::ops::channel_affine(x.clone(), scale, Some(shift)).unwrap();
/// assert_eq!(y.clone().into_data().try_to_vec::<f32>().unwrap(), [2.5, 4.5, -3.0, -4.0]);
/// let dx = x.grad(&y.sum().backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
/// assert_eq!(dx, [2.0, 2.0, -1.0, -1.0]);
/// ```
pub fn channel_affine<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<1>,
    shift: Option<Tensor<1>>,
) -> Result<Tensor<D>, FeedbackError> {
    match &shift {
        Some(b) => check_channels("channel_affine", &x, &[("scale", &scale), ("shift", b)])?,
        None => check_channels("channel_affine", &x, &[("scale", &scale)])?,
    }
    Ok(wrap(
        <Dispatch as FeedbackBackend>::feedback_channel_affine(
            x.into_dispatch(),
            scale.into_dispatch(),
            maybe(shift),
        ),
    ))
}
