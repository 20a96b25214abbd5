//! What the four feedback layers share: the recipe for `V`, the fixed tensors, the alignment.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::backend::{FeedbackForm, FeedbackKernel, ScaleKind};
use crate::ops::check_feedback_shape;
use crate::{FeedbackConfig, FeedbackError, FeedbackRule, FeedbackScale, exact_gradients_active};

/// The recipe for `V` that a layer with these settings uses in its next forward, or `None` when
/// it backpropagates exactly (rule BP, or inside [`exact_gradients`](crate::exact_gradients)).
pub(crate) fn active_kernel(
    settings: &FeedbackConfig,
    fans: (usize, usize),
) -> Option<FeedbackKernel> {
    if exact_gradients_active() {
        return None;
    }
    let form = match settings.rule {
        FeedbackRule::Bp => return None,
        FeedbackRule::USf => FeedbackForm::Sign,
        FeedbackRule::FrSf => FeedbackForm::MaskedSign,
        FeedbackRule::BrSf => FeedbackForm::RandomMaskedSign(settings.magnitude.to_burn()),
        FeedbackRule::Fa => FeedbackForm::Given,
    };
    let scale = match settings.scale {
        FeedbackScale::Unit => ScaleKind::Unit,
        FeedbackScale::InitStd => {
            let (fan_in, fan_out) = fans;
            ScaleKind::Constant((2.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32)
        }
        FeedbackScale::MatchNorm => ScaleKind::MatchNorm,
    };
    Some(FeedbackKernel { form, scale })
}

/// Fan-in and fan-out as PyTorch computes them from a weight's shape, for a convolution kernel
/// `[a, b, k...]` (`fan_in = b·∏k`, `fan_out = a·∏k`).
pub(crate) fn conv_fans(dims: &[usize]) -> (usize, usize) {
    let receptive: usize = dims[2..].iter().product();
    (dims[1] * receptive, dims[0] * receptive)
}

/// Draws the fixed tensor a rule keeps (`M` for frSF, `B` for FA), as a non-trainable parameter.
pub(crate) fn draw_fixed<const D: usize>(
    settings: &FeedbackConfig,
    rule: FeedbackRule,
    shape: [usize; D],
    device: &Device,
) -> Result<Option<Param<Tensor<D>>>, FeedbackError> {
    let distribution = match rule {
        FeedbackRule::FrSf => settings.magnitude,
        FeedbackRule::Fa => settings.fixed,
        _ => return Ok(None),
    };
    let n = shape.iter().product();
    let values = distribution.sample(n, settings.seed)?;
    let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), device);
    Ok(Some(Param::from_tensor(tensor).set_require_grad(false)))
}

/// The layer state after switching to `rule`: the fixed tensor is kept when the rule stays the
/// same, drawn from the layer seed when the new rule needs one, and dropped otherwise.
pub(crate) fn switch_rule<const D: usize>(
    settings: &mut FeedbackConfig,
    feedback: &mut Option<Param<Tensor<D>>>,
    rule: FeedbackRule,
    weight: &Param<Tensor<D>>,
) -> Result<(), FeedbackError> {
    settings.validate()?;
    if rule == settings.rule && (feedback.is_some() || !rule.has_fixed_feedback()) {
        return Ok(());
    }
    let shape = weight.lazy_shape().dims::<D>();
    *feedback = draw_fixed(settings, rule, shape, &weight.lazy_device())?;
    settings.rule = rule;
    Ok(())
}

/// Checks that the fixed tensor the rule needs is there and has the weight's shape.
pub(crate) fn validate_feedback<const D: usize>(
    layer: &str,
    settings: &FeedbackConfig,
    weight: &Param<Tensor<D>>,
    feedback: &Option<Param<Tensor<D>>>,
) -> Result<(), FeedbackError> {
    settings.validate()?;
    match feedback {
        Some(f) => check_feedback_shape(
            layer,
            weight.lazy_shape().as_slice(),
            f.lazy_shape().as_slice(),
        ),
        None if settings.rule.has_fixed_feedback() => Err(FeedbackError::MissingFeedback {
            layer: layer.to_string(),
            rule: settings.rule.to_string(),
        }),
        None => Ok(()),
    }
}

/// The auxiliary tensor of the recipe, if it reads one.
///
/// A layer whose rule needs a fixed tensor but holds none (its `settings` were edited by hand,
/// or a record without it was loaded) uses the tensor its seed defines, the one
/// [`set_rule`](crate::set_rule) would have drawn: the fixed tensor is a function of the
/// settings, so the forward never lacks it. Only settings that cannot be drawn from (an invalid
/// distribution written into them) fail, which `try_forward` reports as an error.
pub(crate) fn aux_for<const D: usize>(
    kernel: &FeedbackKernel,
    settings: &FeedbackConfig,
    weight: &Param<Tensor<D>>,
    feedback: &Option<Param<Tensor<D>>>,
) -> Option<Tensor<D>> {
    if !kernel.needs_aux() {
        return None;
    }
    if let Some(f) = feedback {
        return Some(f.val());
    }
    let shape = weight.lazy_shape().dims::<D>();
    match draw_fixed(settings, settings.rule, shape, &weight.lazy_device()) {
        Ok(drawn) => drawn.map(|p| p.val()),
        Err(e) => panic!("{e} (try_forward reports this as an error)"),
    }
}

/// Cosine between the flattened weight and the flattened feedback tensor `V` of the current rule.
///
/// For brSF, whose `M` changes at every backward, one draw from the layer seed stands in for it.
/// The scale `s > 0` does not change the cosine.
pub(crate) fn alignment<const D: usize>(
    layer: &str,
    settings: &FeedbackConfig,
    weight: &Param<Tensor<D>>,
    feedback: &Option<Param<Tensor<D>>>,
) -> Result<f64, FeedbackError> {
    let w = host(weight.val());
    let v: Vec<f32> = match settings.rule {
        FeedbackRule::Bp => w.clone(),
        FeedbackRule::USf => w.iter().map(|x| sign(*x)).collect(),
        FeedbackRule::FrSf | FeedbackRule::Fa => {
            let f = feedback
                .as_ref()
                .ok_or_else(|| FeedbackError::MissingFeedback {
                    layer: layer.to_string(),
                    rule: settings.rule.to_string(),
                })?;
            let f = host(f.val());
            if settings.rule == FeedbackRule::Fa {
                f
            } else {
                f.iter().zip(&w).map(|(m, x)| m * sign(*x)).collect()
            }
        }
        FeedbackRule::BrSf => {
            let m = settings.magnitude.sample(w.len(), settings.seed)?;
            m.iter().zip(&w).map(|(m, x)| m * sign(*x)).collect()
        }
    };
    Ok(cosine(&w, &v))
}

/// As burn's `sign`: 0 for 0 and NaN (the host alignment and the fused Flex pass share it).
#[inline(always)]
pub(crate) fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The values of a float tensor, on the host.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// Cosine similarity of two flat vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// `(begin, end)` padding that keeps `ceil(size / stride)` outputs, as burn's `Same` padding.
pub(crate) fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}
