//! Batch normalization on Flex: the training forward and backward in two passes each, and a
//! per-channel affine map for inference and its input gradient.
//!
//! burn-flex has no batch-norm kernels: burn's defaults build the statistics out of generic ops
//! (a channel-major copy of the activations, a mean, a centred copy, its square, a second copy,
//! a second mean, then four broadcast ops for the output) and the backward out of about fifteen
//! more, each a pass over the activations into a fresh buffer. Here the statistics of a channel
//! are read from its own `[n, c, ·]` rows, which stay in cache for the second pass over them, and
//! the output is written in one pass. Sums run in 16 `f32` lanes combined in `f64`.
//!
//! The results agree with burn's to rounding, not to the bit (the sums run in another order).
//! Contiguous `f32` tensors of rank ≥ 2 only; anything else returns `None` and the caller falls
//! back to burn's kernels.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use rayon::prelude::*;

const LANES: usize = 16;
/// Values per task of the statistics pass, so that small layers do not pay a task per channel.
const MIN_TASK: usize = 16 * 1024;

/// `[samples, channels, positions per channel and sample]` of a contiguous f32 tensor.
struct Layout<'a> {
    values: &'a [f32],
    samples: usize,
    channels: usize,
    inner: usize,
}

impl<'a> Layout<'a> {
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let shape = t.shape();
        if shape.num_dims() < 2 {
            return None;
        }
        let values = t.as_slice::<f32>()?;
        let (samples, channels) = (shape[0], shape[1]);
        let inner = (2..shape.num_dims()).map(|i| shape[i]).product::<usize>();
        (values.len() == samples * channels * inner).then_some(Self {
            values,
            samples,
            channels,
            inner,
        })
    }

    /// Values per channel over the batch.
    fn count(&self) -> usize {
        self.samples * self.inner
    }

    /// Row `(n, c)`: the `inner` values of channel `c` in sample `n`.
    fn row(&self, n: usize, c: usize) -> &'a [f32] {
        let start = (n * self.channels + c) * self.inner;
        &self.values[start..start + self.inner]
    }

    fn same_as(&self, other: &Layout) -> bool {
        (self.samples, self.channels, self.inner) == (other.samples, other.channels, other.inner)
    }
}

/// A per-channel vector of length `channels`.
fn channel_vector(t: &FlexTensor, channels: usize) -> Option<&[f32]> {
    let v = t.as_slice::<f32>()?;
    (v.len() == channels).then_some(v)
}

/// `Σ f(i)` over `0..len` in 16 independent `f32` lanes (so the loop vectorises), combined in `f64`.
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut lanes = [0.0f32; LANES];
    let whole = len - len % LANES;
    for base in (0..whole).step_by(LANES) {
        for (j, lane) in lanes.iter_mut().enumerate() {
            *lane += f(base + j);
        }
    }
    let mut total: f64 = lanes.iter().map(|&v| v as f64).sum();
    for i in whole..len {
        total += f(i) as f64;
    }
    total
}

/// Per channel, `stat(rows of that channel)` summed over the samples, in parallel over channels.
fn per_channel(layout: &Layout, stat: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    let min = (MIN_TASK / layout.count().max(1)).max(1);
    (0..layout.channels)
        .into_par_iter()
        .with_min_len(min)
        .map(|c| (0..layout.samples).map(|n| stat(n, c)).sum())
        .collect()
}

/// A new tensor of `layout`'s shape, each sample's `[channels, inner]` block written by
/// `write(n, block)`, which must write every element.
fn write_samples(
    shape: burn::tensor::Shape,
    layout: &Layout,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> FlexTensor {
    let block = layout.channels * layout.inner;
    let len = layout.samples * block;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if block > 0 {
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(n, dst)| write(n, dst));
    }
    // SAFETY: every sample's block, hence all `len` elements, was written by `write`.
    unsafe { out.set_len(len) };
    FlexTensor::from_data(TensorData::new(out, shape))
}

fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::from_data(TensorData::new(values, [len]))
}

/// Training-mode batch norm: `(y, mean, biased variance)`, as burn's `batch_norm_train`.
pub(crate) fn batch_norm_train(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
    let xl = Layout::of(x)?;
    let gamma = channel_vector(gamma, xl.channels)?;
    let beta = channel_vector(beta, xl.channels)?;
    let count = xl.count() as f64;
    if count == 0.0 {
        return None;
    }
    let mean: Vec<f32> = per_channel(&xl, |n, c| {
        let row = xl.row(n, c);
        lane_sum(row.len(), |i| row[i])
    })
    .into_iter()
    .map(|s| (s / count) as f32)
    .collect();
    // Two passes, as burn's (mean of the centred squares): no cancellation for large means.
    let variance: Vec<f32> = per_channel(&xl, |n, c| {
        let (row, m) = (xl.row(n, c), mean[c]);
        lane_sum(row.len(), |i| (row[i] - m) * (row[i] - m))
    })
    .into_iter()
    .map(|s| (s / count) as f32)
    .collect();
    let scale: Vec<f32> = (0..xl.channels)
        .map(|c| gamma[c] / (variance[c] as f64 + epsilon).sqrt() as f32)
        .collect();
    let y = write_samples(x.shape(), &xl, |n, dst| {
        for (c, out) in dst.chunks_mut(xl.inner).enumerate() {
            let (m, s, b) = (mean[c], scale[c], beta[c]);
            for (o, &v) in out.iter_mut().zip(xl.row(n, c)) {
                o.write((v - m) * s + b);
            }
        }
    });
    Some((y, vector(mean), vector(variance)))
}

/// The gradients of [`batch_norm_train`] with respect to `x`, `gamma` and `beta`.
pub(crate) fn batch_norm_train_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    mean: &FlexTensor,
    variance: &FlexTensor,
    epsilon: f64,
    output_grad: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
    let xl = Layout::of(x)?;
    let gl = Layout::of(output_grad)?;
    if !xl.same_as(&gl) || xl.count() == 0 {
        return None;
    }
    let channels = xl.channels;
    let gamma = channel_vector(gamma, channels)?;
    let mean = channel_vector(mean, channels)?;
    let variance = channel_vector(variance, channels)?;
    let inv_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let sum_grad = sums(&gl);
    // Σ dy·(x − mean); times 1/σ it is γ's gradient.
    let sum_grad_centred = per_channel(&xl, |n, c| {
        let (g, row, m) = (gl.row(n, c), xl.row(n, c), mean[c]);
        lane_sum(g.len(), |i| g[i] * (row[i] - m))
    });
    let count = xl.count() as f64;
    // dx = γ/σ · (dy − mean(dy) − (x − mean)·Σ dy·(x − mean)/(σ²·count)).
    let mut coefficients = Vec::with_capacity(channels);
    for c in 0..channels {
        let s = inv_std[c] as f64;
        coefficients.push((
            (gamma[c] as f64 * s) as f32,
            (sum_grad[c] / count) as f32,
            (sum_grad_centred[c] * s * s / count) as f32,
        ));
    }
    let dx = write_samples(x.shape(), &xl, |n, dst| {
        for (c, out) in dst.chunks_mut(xl.inner).enumerate() {
            let (k, mg, p) = coefficients[c];
            let m = mean[c];
            for ((o, &g), &v) in out.iter_mut().zip(gl.row(n, c)).zip(xl.row(n, c)) {
                o.write(k * (g - mg - (v - m) * p));
            }
        }
    });
    let gamma_grad: Vec<f32> = (0..channels)
        .map(|c| (sum_grad_centred[c] * inv_std[c] as f64) as f32)
        .collect();
    let beta_grad: Vec<f32> = sum_grad.iter().map(|&s| s as f32).collect();
    Some((dx, vector(gamma_grad), vector(beta_grad)))
}

/// Per channel, the sum of its values over the samples and the inner positions.
fn sums(layout: &Layout) -> Vec<f64> {
    per_channel(layout, |n, c| {
        let row = layout.row(n, c);
        lane_sum(row.len(), |i| row[i])
    })
}

/// `[channels]`: the values of `t` (`[samples, channels, …]`) summed over every axis but the
/// channels (a convolution's bias gradient). burn's default swaps the batch and channel axes
/// first, a copy of the whole gradient; here each channel's rows are summed where they lie.
pub(crate) fn channel_sums(t: &FlexTensor) -> Option<FlexTensor> {
    let layout = Layout::of(t)?;
    let sums: Vec<f32> = sums(&layout).into_iter().map(|v| v as f32).collect();
    let channels = sums.len();
    Some(FlexTensor::from_data(TensorData::new(sums, [channels])))
}

/// `y = x·scale[c] + shift[c]` along axis 1 (`shift` 0 when absent).
pub(crate) fn channel_affine(
    x: &FlexTensor,
    scale: &FlexTensor,
    shift: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    let xl = Layout::of(x)?;
    let scale = channel_vector(scale, xl.channels)?;
    let shift = match shift {
        Some(t) => Some(channel_vector(t, xl.channels)?),
        None => None,
    };
    Some(write_samples(x.shape(), &xl, |n, dst| {
        for (c, out) in dst.chunks_mut(xl.inner).enumerate() {
            let (s, b) = (scale[c], shift.map_or(0.0, |b| b[c]));
            for (o, &v) in out.iter_mut().zip(xl.row(n, c)) {
                o.write(v * s + b);
            }
        }
    }))
}
