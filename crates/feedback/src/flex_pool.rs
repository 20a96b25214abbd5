//! 2-d max pooling on Flex, forward with indices and backward.
//!
//! burn-flex runs 2-d pooling through its generic 3-d kernel (a window range computed per
//! output, scalar bounds-checked compares, and a backward that zero-fills and scatters through
//! an `i64` index per output): in the small CNN's training step its two 2×2 pools cost about as
//! much as a convolution. Here each output plane is one task with its window rows read as
//! slices. Results and indices are burn's to the bit: the window is scanned row by row, the
//! first maximum wins and a NaN always wins (so it propagates, as in PyTorch), and an index is
//! the position within the input plane, burn's layout. Indices travel as `f32` (exact below 2²⁴
//! positions per plane, far above any image here): extension ops pass float tensors.
//!
//! Dilation 1 and floor mode only; anything else (another dtype, a non-contiguous tensor)
//! returns `None` and the caller falls back to burn's kernels.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Window geometry of one pooling.
#[derive(Clone, Copy, Debug)]
struct Pool {
    planes: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    out: [usize; 2],
}

impl Pool {
    fn new(
        dims: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Option<Self> {
        let [b, c, h, w] = dims;
        let valid = kernel.iter().all(|&k| k > 0)
            && stride.iter().all(|&s| s > 0)
            // burn's own rule: padding at most half the window, so no window is all padding.
            && pad[0] <= kernel[0] / 2
            && pad[1] <= kernel[1] / 2
            && h + 2 * pad[0] >= kernel[0]
            && w + 2 * pad[1] >= kernel[1];
        if !valid {
            return None;
        }
        let out = [
            (h + 2 * pad[0] - kernel[0]) / stride[0] + 1,
            (w + 2 * pad[1] - kernel[1]) / stride[1] + 1,
        ];
        Some(Self {
            planes: b * c,
            height: h,
            width: w,
            kernel,
            stride,
            pad,
            out,
        })
    }

    /// Input rows (or columns) `[start, end)` under output row (column) `o` of axis `a`.
    fn window(&self, a: usize, o: usize) -> (usize, usize) {
        let size = [self.height, self.width][a];
        let begin = o * self.stride[a];
        let start = begin.saturating_sub(self.pad[a]);
        let end = (begin + self.kernel[a])
            .saturating_sub(self.pad[a])
            .min(size);
        (start, end)
    }
}

fn dims4(t: &FlexTensor) -> Option<[usize; 4]> {
    let s = t.shape();
    (s.num_dims() == 4).then(|| [s[0], s[1], s[2], s[3]])
}

/// Max pooling of `x` (`[batch, channels, h, w]`, f32): the pooled values.
pub(crate) fn max_pool2d(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Option<FlexTensor> {
    pool(x, kernel, stride, pad, false).map(|(values, _)| values)
}

/// [`max_pool2d`] and, per output, the position of its maximum within its input plane (as
/// `f32`, burn's layout): the forward of a differentiated pooling.
pub(crate) fn max_pool2d_with_indices(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Option<(FlexTensor, FlexTensor)> {
    let (values, indices) = pool(x, kernel, stride, pad, true)?;
    Some((values, indices?))
}

/// Windows per vector of the 2×2 loop.
const LANES: usize = 8;

/// The values, and the indices when `with_indices`.
fn pool(
    x: &FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    with_indices: bool,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
    let dims = dims4(x)?;
    let pool = Pool::new(dims, kernel, stride, pad)?;
    let xs = x.as_slice::<f32>()?;
    let (plane_in, plane_out) = (pool.height * pool.width, pool.out[0] * pool.out[1]);
    let chunk = plane_out.max(1);
    // The windows of every output column, once per call rather than once per output.
    let columns: Vec<(usize, usize)> = (0..pool.out[1]).map(|ow| pool.window(1, ow)).collect();
    // 2×2 windows of stride 2 without padding (the small CNN's and VGG's pools) get a loop of
    // their own: four loads and compares per output, in the generic loop's order.
    let pairs = kernel == [2, 2] && stride == [2, 2] && pad == [0, 0];
    // Each 2×2 window's top-left position in its plane, in output order.
    let corners: Vec<usize> = if pairs {
        (0..pool.out[0])
            .flat_map(|oh| (0..pool.out[1]).map(move |ow| 2 * oh * pool.width + 2 * ow))
            .collect()
    } else {
        Vec::new()
    };
    let pool_plane = |p: usize, vals: &mut [f32], mut idxs: Option<&mut [f32]>| {
        let plane = &xs[p * plane_in..(p + 1) * plane_in];
        if pairs {
            // Eight windows at a time, their values gathered into arrays first: the selects
            // then run on vectors (scalar, LLVM turned them into mispredicted branches).
            let width = pool.width;
            let deltas = [0.0, 1.0, width as f32, (width + 1) as f32];
            for (k0, offsets) in (0..plane_out).step_by(LANES).zip(corners.chunks(LANES)) {
                let mut window = [[0.0f32; LANES]; 4];
                let mut corner = [0.0f32; LANES];
                for (k, &o) in offsets.iter().enumerate() {
                    let two = &plane[o..o + 2];
                    let below = &plane[o + width..o + width + 2];
                    window[0][k] = two[0];
                    window[1][k] = two[1];
                    window[2][k] = below[0];
                    window[3][k] = below[1];
                    corner[k] = o as f32;
                }
                let mut best = window[0];
                let mut at = corner;
                for (values, &delta) in window.iter().zip(&deltas).skip(1) {
                    for k in 0..LANES {
                        let v = values[k];
                        let take = (v > best[k]) | v.is_nan();
                        best[k] = if take { v } else { best[k] };
                        at[k] = if take { corner[k] + delta } else { at[k] };
                    }
                }
                let n = offsets.len();
                vals[k0..k0 + n].copy_from_slice(&best[..n]);
                if let Some(idxs) = idxs.as_deref_mut() {
                    idxs[k0..k0 + n].copy_from_slice(&at[..n]);
                }
            }
            return;
        }
        let mut k = 0;
        for oh in 0..pool.out[0] {
            let (h0, h1) = pool.window(0, oh);
            for &(w0, w1) in &columns {
                let mut best = f32::NEG_INFINITY;
                let mut at = usize::MAX;
                for ih in h0..h1 {
                    let row = &plane[ih * pool.width + w0..ih * pool.width + w1];
                    for (j, &v) in row.iter().enumerate() {
                        if at == usize::MAX || v > best || v.is_nan() {
                            best = v;
                            at = ih * pool.width + w0 + j;
                        }
                    }
                }
                vals[k] = best;
                if let Some(idxs) = idxs.as_deref_mut() {
                    idxs[k] = at as f32;
                }
                k += 1;
            }
        }
    };
    let mut values = vec![0.0f32; pool.planes * plane_out];
    let indices = if with_indices {
        let mut indices = vec![0.0f32; pool.planes * plane_out];
        values
            .par_chunks_mut(chunk)
            .zip(indices.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(p, (vals, idxs))| pool_plane(p, vals, Some(idxs)));
        Some(indices)
    } else {
        values
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(p, vals)| pool_plane(p, vals, None));
        None
    };
    let out_dims = [dims[0], dims[1], pool.out[0], pool.out[1]];
    Some((
        FlexTensor::from_data(TensorData::new(values, out_dims)),
        indices.map(|i| FlexTensor::from_data(TensorData::new(i, out_dims))),
    ))
}

/// The input gradient of a max pooling: each output's gradient added at its maximum's position.
pub(crate) fn max_pool2d_backward(
    x_dims: [usize; 4],
    output_grad: &FlexTensor,
    indices: &FlexTensor,
) -> Option<FlexTensor> {
    let g_dims = dims4(output_grad)?;
    if dims4(indices)? != g_dims || g_dims[..2] != x_dims[..2] {
        return None;
    }
    let gs = output_grad.as_slice::<f32>()?;
    let is = indices.as_slice::<f32>()?;
    let plane_in = x_dims[2] * x_dims[3];
    let plane_out = g_dims[2] * g_dims[3];
    let mut dx = vec![0.0f32; x_dims.iter().product()];
    dx.par_chunks_mut(plane_in.max(1))
        .enumerate()
        .for_each(|(p, plane)| {
            let g = &gs[p * plane_out..(p + 1) * plane_out];
            let idx = &is[p * plane_out..(p + 1) * plane_out];
            for (&v, &i) in g.iter().zip(idx) {
                // Indices come from a forward over this plane; one from elsewhere is skipped
                // rather than trusted (burn's kernel skips negative ones the same way).
                if i >= 0.0
                    && let Some(d) = plane.get_mut(i as usize)
                {
                    *d += v;
                }
            }
        });
    Some(FlexTensor::from_data(TensorData::new(dx, x_dims)))
}
