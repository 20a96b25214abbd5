//! A 2-d convolution on Flex as matrix products: the forward and the two backward kernels.
//!
//! Flex has no backward kernels of its own: burn's generic defaults take the input gradient as a
//! transposed convolution and the weight gradient as a forward convolution with batch and
//! channel axes swapped, which Flex runs through small, poorly parallel products. Here all three
//! are the products of the im2col formulation, done by the `gemm` crate that Flex's own matmul
//! uses:
//!
//! - the forward `Y_g[n] = W_g · R_g[n]ᵀ`, one sample per task ([`conv2d_forward`]);
//! - `dW_g = Σ_n G_g[n] · R_g[n]`, with `G[n]` the output gradient of sample `n` as
//!   `[channels_out, positions]` (its own layout) and `R[n]` the `[positions, channels_in·k₁·k₂]`
//!   patch rows of its input; the samples are summed in order, each product parallel inside, so
//!   the result does not depend on the thread count;
//! - `dx[n] = row2im(G[n]ᵀ · V_g)`, one sample per task (samples are independent), the rows
//!   scattered back onto the input positions they were read from.
//!
//! Groups, strides, dilation and asymmetric padding are supported; anything else (another
//! dtype, a non-contiguous tensor) returns `None` and the caller falls back to burn's kernels.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ConvOptions;
use burn::tensor::TensorData;
use gemm::Parallelism;
use rayon::prelude::*;

/// The geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel: [usize; 2],
    out: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
    groups: usize,
}

impl Geometry {
    fn new(x: [usize; 4], w: [usize; 4], g: [usize; 4], options: &ConvOptions<2>) -> Option<Self> {
        let groups = options.groups.max(1);
        let geometry = Self {
            batch: x[0],
            channels: x[1],
            height: x[2],
            width: x[3],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            out: [g[2], g[3]],
            stride: options.stride,
            dilation: options.dilation,
            pad: options.padding_begin(),
            groups,
        };
        let consistent = g[0] == x[0]
            && g[1] == w[0]
            && x[1] == w[1] * groups
            && w[0].is_multiple_of(groups)
            && geometry.stride.iter().all(|&s| s > 0);
        consistent.then_some(geometry)
    }

    /// Channels in per group.
    fn cg(&self) -> usize {
        self.channels / self.groups
    }

    /// Channels out per group.
    fn og(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Patch length per group: `channels_in/groups · k₁ · k₂`.
    fn kg(&self) -> usize {
        self.cg() * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per sample.
    fn positions(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// The range of output coordinates `o` whose input coordinate `o·s + k·d − p` on axis `a`
    /// lies inside the input, with that input coordinate for the first of them.
    #[inline(always)]
    fn valid(&self, axis: usize, k: usize) -> (usize, usize, isize) {
        let (s, out) = (self.stride[axis], self.out[axis]);
        let size = if axis == 0 { self.height } else { self.width } as isize;
        let offset = (k * self.dilation[axis]) as isize - self.pad[axis] as isize;
        // First o with o·s + offset ≥ 0, first o with o·s + offset ≥ size.
        let first = |bound: isize| -> usize {
            let need = bound - offset;
            if need <= 0 {
                0
            } else {
                ((need as usize).div_ceil(s)).min(out)
            }
        };
        let (lo, hi) = (first(0), first(size));
        (lo, hi.max(lo), lo as isize * s as isize + offset)
    }

    /// Patch columns `[kg, positions]` of group `group` of one sample `x` (`[channels, h, w]`):
    /// row `(c, i, j)` holds, for every output position, the input value kernel entry `(i, j)`
    /// of channel `c` meets there (0 in the padding).
    fn im2col(&self, x: &[f32], group: usize, col: &mut [f32]) {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let (cg, plane, p) = (self.cg(), self.height * self.width, self.positions());
        let (ow_n, s1) = (self.out[1], self.stride[1]);
        let c0 = group * cg;
        let fill = |(r, dst): (usize, &mut [f32])| {
            let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
            let channel = &x[(c0 + c) * plane..(c0 + c + 1) * plane];
            let (oh_lo, oh_hi, ih0) = self.valid(0, i);
            let (ow_lo, ow_hi, iw0) = self.valid(1, j);
            dst[..oh_lo * ow_n].fill(0.0);
            dst[oh_hi * ow_n..].fill(0.0);
            let (len, start) = (ow_hi - ow_lo, iw0 as usize);
            for (k, oh) in (oh_lo..oh_hi).enumerate() {
                let ih = (ih0 + (k * self.stride[0]) as isize) as usize;
                let line = &mut dst[oh * ow_n..(oh + 1) * ow_n];
                // Lines are a few dozen values: plain loops, not calls to memset and memcpy.
                for v in &mut line[..ow_lo] {
                    *v = 0.0;
                }
                for v in &mut line[ow_hi..] {
                    *v = 0.0;
                }
                let src = &channel[ih * self.width..(ih + 1) * self.width];
                if s1 == 1 {
                    for (v, s) in line[ow_lo..ow_hi].iter_mut().zip(&src[start..start + len]) {
                        *v = *s;
                    }
                } else {
                    for (m, v) in line[ow_lo..ow_hi].iter_mut().enumerate() {
                        *v = src[start + m * s1];
                    }
                }
            }
        };
        // Threads only pay off on large patches: a small layer's copy is shorter than waking one.
        if col.len() >= PARALLEL_MIN {
            col.par_chunks_mut(p).enumerate().for_each(fill);
        } else {
            col.chunks_mut(p).enumerate().for_each(fill);
        }
    }

    /// Adds patch columns `[kg, positions]` of group `group` back onto one sample's input
    /// gradient `dx` (`[channels, h, w]`), each value onto the input position it was read from.
    fn col2im_add(&self, col: &[f32], group: usize, dx: &mut [f32]) {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let (cg, plane, p) = (self.cg(), self.height * self.width, self.positions());
        let (ow_n, s1) = (self.out[1], self.stride[1]);
        let c0 = group * cg;
        for (r, src) in col.chunks(p).enumerate() {
            let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
            let channel = &mut dx[(c0 + c) * plane..(c0 + c + 1) * plane];
            let (oh_lo, oh_hi, ih0) = self.valid(0, i);
            let (ow_lo, ow_hi, iw0) = self.valid(1, j);
            for (k, oh) in (oh_lo..oh_hi).enumerate() {
                let ih = (ih0 + (k * self.stride[0]) as isize) as usize;
                let line = &src[oh * ow_n + ow_lo..oh * ow_n + ow_hi];
                let dst = &mut channel[ih * self.width..(ih + 1) * self.width];
                let start = iw0 as usize;
                if s1 == 1 {
                    for (d, v) in dst[start..start + line.len()].iter_mut().zip(line) {
                        *d += v;
                    }
                } else {
                    for (m, v) in line.iter().enumerate() {
                        dst[start + m * s1] += v;
                    }
                }
            }
        }
    }
}

fn dims4(t: &FlexTensor) -> Option<[usize; 4]> {
    let shape = t.shape();
    (shape.num_dims() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
}

/// `dst (m×n, row-major, += if accumulate) = lhs · rhs` with explicit strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    debug_assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every index the product touches lies inside the slices (checked above in debug
    // builds, guaranteed by the callers' shapes), and `dst` does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Work (elements copied, or multiply-adds) below which a step stays on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Every thread for a product of `work` multiply-adds, if it is worth waking them.
fn parallel(work: usize) -> Parallelism {
    match rayon::current_num_threads() {
        n if n > 1 && work >= 16 * PARALLEL_MIN => Parallelism::Rayon(n),
        _ => Parallelism::None,
    }
}

/// Output size along axis `a` of a convolution, `None` when the window does not fit.
fn output_size(input: usize, kernel: usize, options: &ConvOptions<2>, a: usize) -> Option<usize> {
    let (begin, end) = options.padding[a];
    let span = options.dilation[a].checked_mul(kernel.checked_sub(1)?)? + 1;
    let size = input + begin + end;
    (size >= span && options.stride[a] > 0).then(|| (size - span) / options.stride[a] + 1)
}

/// The output `[batch, out, oh, ow]` of a convolution of `x` with `w`, plus `bias` per output
/// channel: `Y_g[n] = W_g · col_g(x[n])`, the weight rows against the patch columns of each
/// sample (a 1×1 kernel of stride 1 without padding reads the sample itself).
///
/// Flex's own kernel transposes the whole batch to channels-last on one thread, gathers each
/// patch element by element and scatters each tile's product back: in the small CNN's training
/// step that costs more than the products. Here the patch rows are copied as slices and each
/// product lands in the output's own layout; samples run in parallel, each product on one
/// thread (with fewer samples than threads, one after the other, each product parallel), so the
/// result does not depend on the thread count. (One product over a whole batch of samples packs
/// the weights once but streams a patch matrix far larger than the caches: measured slower, 39 s
/// against 28 s for the BP main job.)
pub(crate) fn conv2d_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    let (xd, wd) = (dims4(x)?, dims4(w)?);
    let out = [
        output_size(xd[2], wd[2], options, 0)?,
        output_size(xd[3], wd[3], options, 1)?,
    ];
    let geo = Geometry::new(xd, wd, [xd[0], wd[0], out[0], out[1]], options)?;
    let xs = x.as_slice::<f32>()?;
    let ws = w.as_slice::<f32>()?;
    let bs = match bias {
        Some(b) => Some(
            b.as_slice::<f32>()
                .filter(|b| b.len() == geo.out_channels)?,
        ),
        None => None,
    };
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let per_x = geo.channels * geo.height * geo.width;
    let per_y = geo.out_channels * p;
    // The sample is its own patch matrix: every patch row is an input channel's plane.
    let direct = geo.kernel == [1, 1]
        && geo.stride == [1, 1]
        && options.padding == [(0, 0), (0, 0)]
        && out == [geo.height, geo.width];
    let mut y = vec![0.0f32; geo.batch * per_y];
    let per_sample = geo.batch >= rayon::current_num_threads();
    let inner = if per_sample {
        Parallelism::None
    } else {
        parallel(og * kg * p)
    };
    // One patch buffer per task, reused across its samples: the product overwrites it whole.
    let compute = |col: &mut Vec<f32>, (n, y_n): (usize, &mut [f32])| {
        let x_n = &xs[n * per_x..(n + 1) * per_x];
        for group in 0..geo.groups {
            let patches: &[f32] = if direct {
                &x_n[group * kg * p..(group + 1) * kg * p]
            } else {
                col.resize(kg * p, 0.0);
                geo.im2col(x_n, group, col);
                col
            };
            // Y_g (og × p) = W_g (og × kg) · patches (kg × p).
            let w_g = &ws[group * og * kg..(group + 1) * og * kg];
            let y_g = &mut y_n[group * og * p..(group + 1) * og * p];
            matmul(og, p, kg, y_g, false, w_g, (kg, 1), patches, (p, 1), inner);
        }
        if let Some(b) = bs {
            for (row, &b) in y_n.chunks_mut(p.max(1)).zip(b) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
    };
    if per_sample {
        y.par_chunks_mut(per_y.max(1))
            .enumerate()
            .for_each_init(Vec::new, compute);
    } else {
        let mut col = Vec::new();
        y.chunks_mut(per_y.max(1))
            .enumerate()
            .for_each(|item| compute(&mut col, item));
    }
    Some(FlexTensor::from_data(TensorData::new(
        y,
        [geo.batch, geo.out_channels, out[0], out[1]],
    )))
}

/// The weight gradient `[out, in/groups, k₁, k₂]` of a convolution of `x` whose output gradient
/// is `grad`.
pub(crate) fn conv2d_weight_backward(
    x: &FlexTensor,
    weight_dims: [usize; 4],
    grad: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    let geo = Geometry::new(dims4(x)?, weight_dims, dims4(grad)?, options)?;
    let xs = x.as_slice::<f32>()?;
    let gs = grad.as_slice::<f32>()?;
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let per_x = geo.channels * geo.height * geo.width;
    let per_g = geo.out_channels * p;
    let mut dw = vec![0.0f32; geo.out_channels * kg];
    let mut col = vec![0.0f32; kg * p];
    for group in 0..geo.groups {
        let dw_g = &mut dw[group * og * kg..(group + 1) * og * kg];
        for n in 0..geo.batch {
            geo.im2col(&xs[n * per_x..(n + 1) * per_x], group, &mut col);
            // dW_g (og × kg) += G[n] (og × p, its own layout) · colᵀ (p × kg).
            let g = &gs[n * per_g + group * og * p..];
            matmul(
                og,
                kg,
                p,
                dw_g,
                n > 0,
                g,
                (p, 1),
                &col,
                (1, p),
                parallel(og * kg * p),
            );
        }
    }
    Some(FlexTensor::from_data(TensorData::new(dw, weight_dims)))
}

/// The input gradient `[batch, in, h, w]` of a convolution with kernel `v` (`W` for
/// backpropagation, a feedback tensor otherwise) whose output gradient is `grad`.
pub(crate) fn conv2d_x_backward(
    x_dims: [usize; 4],
    v: &FlexTensor,
    grad: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    let geo = Geometry::new(x_dims, dims4(v)?, dims4(grad)?, options)?;
    let vs = v.as_slice::<f32>()?;
    let gs = grad.as_slice::<f32>()?;
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let per_x = geo.channels * geo.height * geo.width;
    let per_g = geo.out_channels * p;
    let mut dx = vec![0.0f32; geo.batch * per_x];
    // Enough samples for every thread: one sample per task, each product single-threaded.
    // Fewer: one sample after the other, each product parallel.
    let per_sample = geo.batch >= rayon::current_num_threads();
    let inner = if per_sample {
        Parallelism::None
    } else {
        parallel(og * kg * p)
    };
    // One patch buffer per task, reused across its samples: the product overwrites it whole.
    let compute = |col: &mut Vec<f32>, (n, dx_n): (usize, &mut [f32])| {
        col.resize(kg * p, 0.0);
        for group in 0..geo.groups {
            // col (kg × p) = V_gᵀ (kg × og) · G[n] (og × p, its own layout).
            let g = &gs[n * per_g + group * og * p..];
            let v_g = &vs[group * og * kg..(group + 1) * og * kg];
            matmul(kg, p, og, col, false, v_g, (1, kg), g, (p, 1), inner);
            geo.col2im_add(col, group, dx_n);
        }
    };
    if per_sample {
        dx.par_chunks_mut(per_x)
            .enumerate()
            .for_each_init(Vec::new, compute);
    } else {
        let mut col = Vec::new();
        dx.chunks_mut(per_x)
            .enumerate()
            .for_each(|item| compute(&mut col, item));
    }
    Some(FlexTensor::from_data(TensorData::new(dx, x_dims)))
}
