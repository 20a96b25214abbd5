//! A 2-d convolution on Flex as matrix products: the forward and the two backward kernels.
//!
//! Flex has no backward kernels of its own: burn's generic defaults take the input gradient as a
//! transposed convolution and the weight gradient as a forward convolution with batch and
//! channel axes swapped, which Flex runs through small, poorly parallel products. Here all three
//! are the products of the im2col formulation, done by the `gemm` crate that Flex's own matmul
//! uses:
//!
//! - the forward `Y_g = W_g · R_g`, one chunk of samples per task ([`conv2d_forward`]);
//! - `dW_g = Σ G_g · R_gᵀ`, with `G` the output gradient as `[channels_out, positions]` (a
//!   sample's own layout) and `R` the `[channels_in·k₁·k₂, positions]` patch columns of its
//!   input; the chunks are summed in order within consecutive parts of the batch formed in
//!   parallel, the parts' sums then added in order (one part, its products parallel inside, for
//!   the widest layers), so the result does not depend on the thread count;
//! - `dx = col2im(V_gᵀ · G_g)`, one chunk of samples per task (samples are independent), the
//!   columns scattered back onto the input positions they were read from.
//!
//! A chunk is one sample where a sample has enough output positions to make a matrix product,
//! and several side by side where it has few ([`Geometry::chunk`]). On small maps where much of
//! the patch matrix would be padding, the products go block by block over the taps that meet the
//! input ([`blocks`]). Patch lines narrower than a vector move as masked vectors ([`lines`]).
//!
//! Groups, strides, dilation and asymmetric padding are supported; anything else (another
//! dtype, a non-contiguous tensor) returns `None` and the caller falls back to burn's kernels.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ConvOptions;
use burn::tensor::TensorData;
use core::mem::MaybeUninit;
use gemm::Parallelism;
use rayon::prelude::*;

mod blocks;
mod formed;
mod lines;
pub(crate) mod transposed;

use blocks::{forward_blocks, weight_backward_blocks, x_backward_blocks};
pub(crate) use formed::x_backward as formed_x_backward;

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

    /// Samples per product: enough that a product has [`COLUMNS`] columns (output positions of
    /// all its samples), so that late layers of a network at a small input size (ResNet-18 at
    /// 32×32 has 4 × 4 down to 1 × 1 positions) multiply their weights against a matrix, not a
    /// vector per sample, and read each weight once per chunk instead of once per sample. Layers
    /// with at least `COLUMNS` positions keep one sample per product: their patch matrix already
    /// fills the caches (the small CNN's 28 × 28 and 14 × 14).
    fn chunk(&self) -> usize {
        COLUMNS
            .div_ceil(self.positions().max(1))
            .clamp(1, self.batch.max(1))
    }

    /// Parts of the batch's `chunks` whose weight gradients [`weight_backward_im2col`] forms
    /// apart and sums: up to [`WEIGHT_PARTS`], as long as each part's partial gradient fits
    /// [`PARTIAL_BUDGET`] together (ResNet-18's widest layers keep one part and parallel
    /// products: their partial sums would cost more than their products gain).
    fn weight_parts(&self, chunks: usize) -> usize {
        let size = (self.out_channels * self.kg()).max(1);
        chunks.min(WEIGHT_PARTS).min(PARTIAL_BUDGET / size).max(1)
    }

    /// The planes of [`pad_into`](Self::pad_into): the input with its padding (and room for
    /// every tap's reach) as zeros around it, `(rows, columns)`.
    fn padded_dims(&self) -> (usize, usize) {
        let reach = |a: usize| {
            (self.out[a].max(1) - 1) * self.stride[a] + (self.kernel[a] - 1) * self.dilation[a] + 1
        };
        (
            (self.pad[0] + self.height).max(reach(0)),
            (self.pad[1] + self.width).max(reach(1)),
        )
    }

    /// Channels `group·cg..` of one sample `x` (`[channels, h, w]`) copied into zero-bordered
    /// planes in `buf` ([`padded_dims`](Self::padded_dims)), where every tap of every output
    /// position reads inside: narrow outputs (fewer than [`LINE_MIN`] positions a line; ResNet-18
    /// at 32 × 32 has 8 down to 1, the small CNN 14) then copy their patch lines without a bound
    /// to test, where clipping each line to the input cost more than the values.
    fn pad_into(&self, x: &[f32], group: usize, buf: &mut Vec<f32>) {
        let ((hp, wp), plane) = (self.padded_dims(), self.height * self.width);
        let c0 = group * self.cg();
        buf.clear();
        buf.resize(self.cg() * hp * wp, 0.0);
        for (c, padded) in buf.chunks_mut((hp * wp).max(1)).enumerate() {
            let channel = &x[(c0 + c) * plane..][..plane];
            for (r, line) in channel.chunks(self.width.max(1)).enumerate() {
                padded[(self.pad[0] + r) * wp + self.pad[1]..][..self.width].copy_from_slice(line);
            }
        }
    }

    /// Adds the zero-bordered planes `buf` of [`pad_into`](Self::pad_into)'s layout, inside the
    /// border, onto `dx`: whole channel planes of one sample's input gradient, one per plane of
    /// `buf`.
    fn unpad_add(&self, buf: &[f32], dx: &mut [f32]) {
        let ((hp, wp), plane) = (self.padded_dims(), self.height * self.width);
        for (padded, channel) in buf
            .chunks((hp * wp).max(1))
            .zip(dx.chunks_mut(plane.max(1)))
        {
            for (r, line) in channel.chunks_mut(self.width.max(1)).enumerate() {
                let src = &padded[(self.pad[0] + r) * wp + self.pad[1]..][..self.width];
                line.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
    }

    /// The patch lines of a narrow output in zero-bordered planes of `padded_dims` `(hp, wp)`,
    /// rows starting at `starts` ([`line_starts`](Self::line_starts)): one line per output row,
    /// `stride₀` plane rows apart.
    fn narrow_lines<'a>(&self, starts: &'a [usize], (_, wp): (usize, usize)) -> lines::Lines<'a> {
        lines::Lines {
            starts,
            count: self.out[0],
            pitch: self.stride[0] * wp,
            width: self.out[1],
        }
    }

    /// Where line 0 of each patch row `r = (c, i, j)` of `channels` channels starts in the
    /// zero-bordered planes of [`pad_into`](Self::pad_into) (`padded_dims` `(hp, wp)`); line
    /// `oh` starts `oh·stride₀·wp` further.
    fn line_starts(&self, (hp, wp): (usize, usize), channels: usize) -> Vec<usize> {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let mut starts = Vec::with_capacity(channels * kh * kw);
        for c in 0..channels {
            for i in 0..kh {
                for j in 0..kw {
                    starts.push(c * hp * wp + i * self.dilation[0] * wp + j * self.dilation[1]);
                }
            }
        }
        starts
    }

    /// Adds `bias` (one value per output channel) to the outputs `y` of whole samples, inside
    /// the task that wrote them.
    fn add_bias(&self, y: &mut [f32], bias: Option<&[f32]>) {
        if let Some(bias) = bias {
            add_channel_bias(y, bias, self.positions());
        }
    }

    /// Patch columns of group `group` of one sample `x` (`[channels, h, w]`) into the `kg` rows
    /// of `col`, each `ld` long, at columns `offset..offset + positions`: row `(c, i, j)` holds,
    /// for every output position, the input value kernel entry `(i, j)` of channel `c` meets
    /// there (0 in the padding). Narrow outputs go through the zero-bordered planes of
    /// [`pad_into`](Self::pad_into), in `padded`.
    #[allow(clippy::too_many_arguments)]
    fn im2col(
        &self,
        x: &[f32],
        group: usize,
        col: &mut [f32],
        ld: usize,
        offset: usize,
        padded: &mut Vec<f32>,
    ) {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let (cg, plane, p) = (self.cg(), self.height * self.width, self.positions());
        let (ow_n, s1) = (self.out[1], self.stride[1]);
        let c0 = group * cg;
        let rows = &mut col[..self.kg() * ld];
        if ow_n < LINE_MIN {
            self.pad_into(x, group, padded);
            let dims = self.padded_dims();
            let starts = self.line_starts(dims, cg);
            let lines = self.narrow_lines(&starts, dims);
            if s1 == 1 {
                lines::gather(rows, ld, offset, padded, &lines);
                return;
            }
            let pitch = lines.pitch;
            for (row, &start) in rows.chunks_mut(ld).zip(&starts) {
                let dst = &mut row[offset..offset + p];
                for (oh, line) in dst.chunks_mut(ow_n.max(1)).enumerate() {
                    let base = start + oh * pitch;
                    for (m, d) in line.iter_mut().enumerate() {
                        *d = padded[base + m * s1];
                    }
                }
            }
            return;
        }
        let fill = |(r, row): (usize, &mut [f32])| {
            let dst = &mut row[offset..offset + p];
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
        if self.kg() * p >= PARALLEL_MIN {
            rows.par_chunks_mut(ld).enumerate().for_each(fill);
        } else {
            rows.chunks_mut(ld).enumerate().for_each(fill);
        }
    }

    /// Adds the patch columns `offset..offset + positions` of the rows of `col` (each `ld` long;
    /// `channels·k₁·k₂` of them, rows `(c, i, j)`) back onto `dx`, whole channel planes of one
    /// sample's input gradient (`channels` of them, the channels the rows belong to), each value
    /// onto the input position it was read from. Narrow outputs add into zero-bordered planes in
    /// `padded` first ([`pad_into`](Self::pad_into)'s layout), then their inside onto `dx`: the
    /// same sums in the same order.
    fn col2im_add(
        &self,
        col: &[f32],
        dx: &mut [f32],
        ld: usize,
        offset: usize,
        padded: &mut Vec<f32>,
    ) {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let (plane, p) = (self.height * self.width, self.positions());
        let channels = dx.len() / plane.max(1);
        let rows = channels * kh * kw;
        let (ow_n, s1) = (self.out[1], self.stride[1]);
        if ow_n < LINE_MIN {
            let dims = self.padded_dims();
            padded.clear();
            padded.resize(channels * dims.0 * dims.1, 0.0);
            let starts = self.line_starts(dims, channels);
            let lines = self.narrow_lines(&starts, dims);
            if s1 == 1 {
                lines::scatter_add(&col[..rows * ld], ld, offset, padded, &lines);
            } else {
                let pitch = lines.pitch;
                for (row, &start) in col[..rows * ld].chunks(ld).zip(&starts) {
                    for (oh, line) in row[offset..offset + p].chunks(ow_n.max(1)).enumerate() {
                        let base = start + oh * pitch;
                        for (m, v) in line.iter().enumerate() {
                            padded[base + m * s1] += v;
                        }
                    }
                }
            }
            self.unpad_add(padded, dx);
            return;
        }
        for (r, row) in col[..rows * ld].chunks(ld).enumerate() {
            let src = &row[offset..offset + p];
            let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
            let channel = &mut dx[c * plane..(c + 1) * plane];
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

    /// The patch columns of group `group` of samples `n0..n0 + count` of `xs` side by side:
    /// `col` becomes `[kg, count·positions]`, sample `i`'s columns at `i·positions..`.
    fn patches(
        &self,
        xs: &[f32],
        n0: usize,
        count: usize,
        group: usize,
        (col, padded): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let (p, per_x) = (self.positions(), self.channels * self.height * self.width);
        let cols = count * p;
        col.resize(self.kg() * cols, 0.0);
        for (i, x_n) in xs[n0 * per_x..(n0 + count) * per_x]
            .chunks(per_x.max(1))
            .enumerate()
        {
            self.im2col(x_n, group, col, cols, i * p, padded);
        }
    }

    /// The output-gradient rows `[og, count·positions]` of group `group` of samples
    /// `n0..n0 + count` (row stride `count·positions`): one sample's in its own layout, several
    /// gathered side by side into `buf`, sample `i`'s positions at columns `i·positions..`.
    fn grad_rows<'a>(
        &self,
        grad: &'a [f32],
        n0: usize,
        count: usize,
        group: usize,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let (og, p) = (self.og(), self.positions());
        let (cols, per_g) = (count * p, self.out_channels * p);
        if count == 1 {
            return &grad[n0 * per_g + group * og * p..];
        }
        buf.resize(og * cols, 0.0);
        for i in 0..count {
            let src = &grad[(n0 + i) * per_g + group * og * p..][..og * p];
            for (o, line) in src.chunks(p.max(1)).enumerate() {
                buf[o * cols + i * p..][..p].copy_from_slice(line);
            }
        }
        buf
    }
}

/// Adds `bias[c]` to every value of channel `c` of whole samples `y` (`[samples, bias.len(),
/// plane]`).
fn add_channel_bias(y: &mut [f32], bias: &[f32], plane: usize) {
    let plane = plane.max(1);
    for y_n in y.chunks_mut((bias.len() * plane).max(1)) {
        for (row, &b) in y_n.chunks_mut(plane).zip(bias) {
            row.iter_mut().for_each(|v| *v += b);
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
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n);
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let (lhs, rhs) = ((lhs, lhs_strides), (rhs, rhs_strides));
    // SAFETY: `dst` holds `m·n` initialised values and does not overlap the operands.
    unsafe {
        product(
            m,
            n,
            k,
            (dst.as_mut_ptr(), (n, 1)),
            accumulate,
            lhs,
            rhs,
            parallelism,
        )
    };
}

/// `dst += lhs · rhs`, the `m × n` result laid out in `dst` with strides `dst_strides` (rows,
/// columns): a strided block of a larger matrix, such as one kernel tap's columns of a weight
/// gradient.
fn matmul_add_strided(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_strides): (&mut [f32], (usize, usize)),
    lhs: (&[f32], (usize, usize)),
    rhs: (&[f32], (usize, usize)),
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // Every index the product writes lies inside `dst`.
    assert!(dst.len() > (m - 1) * dst_strides.0 + (n - 1) * dst_strides.1);
    // SAFETY: `dst`'s extent is checked above, it holds initialised values and, as a mutable
    // borrow, does not overlap the operands.
    unsafe {
        product(
            m,
            n,
            k,
            (dst.as_mut_ptr(), dst_strides),
            true,
            lhs,
            rhs,
            parallelism,
        )
    };
}

/// `dst (m×n, row-major) = lhs · rhs` into memory not yet initialised: every value of
/// `dst[..m·n]` is written, none read.
fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<f32>],
    lhs: (&[f32], (usize, usize)),
    rhs: (&[f32], (usize, usize)),
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n);
    if k == 0 {
        dst[..m * n].fill(MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: `dst` has room for `m·n` values and does not overlap the operands; a product that
    // does not accumulate only writes them (`gemm` reads its destination only when told to).
    unsafe {
        product(
            m,
            n,
            k,
            (dst.as_mut_ptr().cast(), (n, 1)),
            false,
            lhs,
            rhs,
            parallelism,
        )
    };
}

/// `gemm`'s product into `dst` (`m × n` with strides `(rows, columns)`, read only if
/// `accumulate`), `k > 0`.
///
/// # Safety
/// `dst` must be valid for writes of the `m·n` values its strides address (and hold them
/// initialised if `accumulate`), and must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    (dst, (dst_rs, dst_cs)): (*mut f32, (usize, usize)),
    accumulate: bool,
    (lhs, (lhs_rs, lhs_cs)): (&[f32], (usize, usize)),
    (rhs, (rhs_rs, rhs_cs)): (&[f32], (usize, usize)),
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Every index the product reads lies inside the operands.
    assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the operands' extents are checked above; `dst`'s is the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
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

/// Output positions a line must have for patch rows to be copied line by line from the input,
/// clipped to it; narrower ones are copied from zero-bordered planes ([`Geometry::pad_into`]).
const LINE_MIN: usize = 16;

/// Most output channels per group for which the weight gradient packs the gradient rows instead
/// of the patch rows (see [`conv2d_weight_backward`]).
const TRANSPOSED_DW_MAX: usize = 64;

/// Columns a product should have at least: see [`Geometry::chunk`].
const COLUMNS: usize = 128;

/// Most parts the weight gradient's batch is split into: see [`Geometry::weight_parts`].
const WEIGHT_PARTS: usize = 8;

/// Most values of all parts' partial weight gradients together (8 MiB of `f32`).
const PARTIAL_BUDGET: usize = 1 << 21;

/// Work (elements copied, or multiply-adds) below which a step stays on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Every thread for a product of `work` multiply-adds, if it is worth waking them.
fn parallel(work: usize) -> Parallelism {
    match rayon::current_num_threads() {
        n if n > 1 && work >= 16 * PARALLEL_MIN => Parallelism::Rayon(n),
        _ => Parallelism::None,
    }
}

/// A zeroed output of `len` values, `compute(buffers, inner, (t, part))` run over its `t`-th
/// chunk of `chunk` samples (`per_sample` values each), with buffers reused across a task's
/// chunks. With a chunk for every thread the chunks run in parallel and each product on one
/// thread (`inner` is `Parallelism::None`); with fewer, one after the other and each product
/// parallel over its `work` multiply-adds. Either way the result does not depend on the thread
/// count. Each part is zeroed by the task that fills it: the first touch of a fresh output
/// (page faults and the kernel's clearing of its pages) is then shared between the threads,
/// where a `vec![0.0; len]` before them had put it on one.
fn chunked_output<B, F>(
    len: usize,
    per_sample: usize,
    chunk: usize,
    work: usize,
    compute: F,
) -> Vec<f32>
where
    B: Default + Send,
    F: Fn(&mut B, Parallelism, (usize, &mut [f32])) + Sync,
{
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let task = (per_sample * chunk).max(1);
    let zeroed = |part: &mut [MaybeUninit<f32>]| -> &mut [f32] {
        part.fill(MaybeUninit::new(0.0));
        // SAFETY: every value of `part` was just initialised.
        unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if len.div_ceil(task) >= rayon::current_num_threads() {
        spare
            .par_chunks_mut(task)
            .enumerate()
            .for_each_init(Default::default, |buffers, (t, part)| {
                compute(buffers, Parallelism::None, (t, zeroed(part)))
            });
    } else {
        let (inner, mut buffers) = (parallel(work), Default::default());
        spare
            .chunks_mut(task)
            .enumerate()
            .for_each(|(t, part)| compute(&mut buffers, inner, (t, zeroed(part))));
    }
    // SAFETY: the chunks cover `..len`, and each was zeroed before `compute` saw it.
    unsafe { out.set_len(len) };
    out
}

/// Output size along axis `a` of a convolution, `None` when the window does not fit.
fn output_size(input: usize, kernel: usize, options: &ConvOptions<2>, a: usize) -> Option<usize> {
    let (begin, end) = options.padding[a];
    let span = options.dilation[a].checked_mul(kernel.checked_sub(1)?)? + 1;
    let size = input + begin + end;
    (size >= span && options.stride[a] > 0).then(|| (size - span) / options.stride[a] + 1)
}

/// The output `[batch, out, oh, ow]` of a convolution of `x` with `w`, plus `bias` per output
/// channel: `Y_g = W_g · col_g(x)`, the weight rows against the patch columns of a chunk of
/// samples ([`Geometry::chunk`]; one sample where a sample has enough positions; a 1×1 kernel of
/// stride 1 without padding then reads the sample itself).
///
/// Flex's own kernel transposes the whole batch to channels-last on one thread, gathers each
/// patch element by element and scatters each tile's product back: in the small CNN's training
/// step that costs more than the products. Here the patch rows are copied as slices and each
/// product lands in the output's own layout (through a buffer for a chunk of several samples);
/// chunks run in parallel, each product on one thread (with fewer chunks than threads, one after
/// the other, each product parallel), so the result does not depend on the thread count. (One
/// product over a whole batch of 28 × 28 samples packs the weights once but streams a patch
/// matrix far larger than the caches: measured slower, 39 s against 28 s for the BP main job.)
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
    let y = if geo.blocked() {
        forward_blocks(&geo, xs, ws, bs)
    } else {
        forward_im2col(&geo, xs, ws, bs)
    };
    Some(FlexTensor::from_data(TensorData::new(
        y,
        [geo.batch, geo.out_channels, out[0], out[1]],
    )))
}

/// [`conv2d_forward`]'s products over the im2col patch matrix, plus `bias` per output channel.
fn forward_im2col(geo: &Geometry, xs: &[f32], ws: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let per_x = geo.channels * geo.height * geo.width;
    let per_y = geo.out_channels * p;
    // The sample is its own patch matrix: every patch row is an input channel's plane.
    let direct = geo.kernel == [1, 1]
        && geo.stride == [1, 1]
        && geo.pad == [0, 0]
        && geo.out == [geo.height, geo.width];
    let chunk = geo.chunk();
    // A patch buffer, a product buffer and a padded-input buffer per task, reused across its
    // chunks.
    type Buffers = (Vec<f32>, Vec<f32>, Vec<f32>);
    let compute = |(col, prod, padded): &mut Buffers, inner, (t, y_t): (usize, &mut [f32])| {
        let (n0, count) = (t * chunk, y_t.len() / per_y.max(1));
        let cols = count * p;
        for group in 0..geo.groups {
            let w_g = &ws[group * og * kg..(group + 1) * og * kg];
            let patches: &[f32] = if direct && count == 1 {
                &xs[n0 * per_x + group * kg * p..][..kg * p]
            } else {
                geo.patches(xs, n0, count, group, (col, padded));
                col
            };
            if count == 1 {
                // Y_g (og × p) = W_g (og × kg) · patches (kg × p), in the output's layout.
                let y_g = &mut y_t[group * og * p..(group + 1) * og * p];
                matmul(og, p, kg, y_g, false, w_g, (kg, 1), patches, (p, 1), inner);
                continue;
            }
            prod.resize(og * cols, 0.0);
            matmul(
                og,
                cols,
                kg,
                prod,
                false,
                w_g,
                (kg, 1),
                patches,
                (cols, 1),
                inner,
            );
            for (i, y_n) in y_t.chunks_mut(per_y).enumerate() {
                let y_g = &mut y_n[group * og * p..(group + 1) * og * p];
                for (o, line) in y_g.chunks_mut(p).enumerate() {
                    line.copy_from_slice(&prod[o * cols + i * p..][..p]);
                }
            }
        }
        geo.add_bias(y_t, bias);
    };
    chunked_output(
        geo.batch * per_y,
        per_y,
        chunk,
        og * kg * p * chunk,
        compute,
    )
}

/// The weight gradient `[out, in/groups, k₁, k₂]` of a convolution of `x` whose output gradient
/// is `grad`: `dW_g = Σ_chunks G_g · col_g(x)ᵀ`, the chunks summed in order.
pub(crate) fn conv2d_weight_backward(
    x: &FlexTensor,
    weight_dims: [usize; 4],
    grad: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<FlexTensor> {
    let geo = Geometry::new(dims4(x)?, weight_dims, dims4(grad)?, options)?;
    let xs = x.as_slice::<f32>()?;
    let gs = grad.as_slice::<f32>()?;
    let dw = if geo.batch == 0 {
        vec![0.0; weight_dims.iter().product()]
    } else if geo.weight_blocked() {
        weight_backward_blocks(&geo, xs, gs)
    } else {
        weight_backward_im2col(&geo, xs, gs)
    };
    Some(FlexTensor::from_data(TensorData::new(dw, weight_dims)))
}

/// [`conv2d_weight_backward`]'s products over the im2col patch matrix, for a non-empty batch.
///
/// The batch's chunks are split into [`Geometry::weight_parts`] consecutive parts whose weight
/// gradients are formed in parallel, each on one thread, and then summed in order: a product
/// per sample of the small CNN's 14 × 14 layer is too small to share between threads, and with
/// one part its patch copy ran on one thread while the other waited (half the small CNN's step
/// ran on one core). The parts depend on the shapes only, so the result does not depend on the
/// thread count.
fn weight_backward_im2col(geo: &Geometry, xs: &[f32], gs: &[f32]) -> Vec<f32> {
    let chunks = geo.batch.div_ceil(geo.chunk());
    let parts = geo.weight_parts(chunks);
    if parts <= 1 {
        return weight_backward_chunks(geo, xs, gs, 0..chunks, true, &mut Default::default());
    }
    let per = chunks.div_ceil(parts);
    let mut partials: Vec<Vec<f32>> = (0..chunks.div_ceil(per))
        .into_par_iter()
        .map_init(Default::default, |buffers, q| {
            let range = q * per..((q + 1) * per).min(chunks);
            weight_backward_chunks(geo, xs, gs, range, false, buffers)
        })
        .collect();
    let mut dw = partials.remove(0);
    crate::fused::with_best_simd(
        #[inline(always)]
        || {
            for partial in &partials {
                dw.iter_mut().zip(partial).for_each(|(d, p)| *d += p);
            }
        },
    );
    dw
}

/// A patch buffer, a gradient-rows buffer and a padded-input buffer, reused across chunks.
type WeightBuffers = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The weight gradient of the samples in chunks `range` (of [`Geometry::chunk`] samples), the
/// chunks summed in order; each product parallel if `inner` and large enough.
fn weight_backward_chunks(
    geo: &Geometry,
    xs: &[f32],
    gs: &[f32],
    range: core::ops::Range<usize>,
    inner: bool,
    (col, rows, padded): &mut WeightBuffers,
) -> Vec<f32> {
    // Every group's first chunk writes its block whole (no zeroing pass below).
    assert!(!range.is_empty(), "a part of the batch without chunks");
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let chunk = geo.chunk();
    // `gemm` copies the operand it cannot stream into a packed layout, every product: the patch
    // matrix (kg rows) when it is the left factor, the gradient rows (og rows) when they are. With
    // few output channels the product is arranged to pack the gradient rows (64 rows instead of
    // 576 with 64 channels in and out, 3 × 3), and the weight gradient lands transposed, turned
    // once per group. Measured on AVX-512 (docs/performance.md), that pays only up to
    // [`TRANSPOSED_DW_MAX`] channels: ResNet-18's 128–512-channel layers run slower arranged so.
    let transposed = og <= kg && og <= TRANSPOSED_DW_MAX;
    // Neither buffer is zeroed first (a weight-sized memset per backward, 2 % of a ResNet-18
    // step): each group's first product writes its block whole, the later ones add to it.
    let mut dw: Vec<f32> = Vec::with_capacity(geo.out_channels * kg);
    let mut dw_t: Vec<f32> = Vec::with_capacity(if transposed { og * kg } else { 0 });
    for group in 0..geo.groups {
        for (t, c) in range.clone().enumerate() {
            let n0 = c * chunk;
            let count = chunk.min(geo.batch - n0);
            let cols = count * p;
            geo.patches(xs, n0, count, group, (&mut *col, &mut *padded));
            let g = geo.grad_rows(gs, n0, count, group, rows);
            let threads = if inner {
                parallel(og * kg * cols)
            } else {
                Parallelism::None
            };
            let dst = if transposed {
                &mut dw_t.spare_capacity_mut()[..og * kg]
            } else {
                &mut dw.spare_capacity_mut()[..og * kg]
            };
            // dW_gᵀ (kg × og) = col (kg × cols) · G_gᵀ (cols × og), or
            // dW_g (og × kg) = G_g (og × cols) · colᵀ (cols × kg); added to the earlier chunks'.
            let (m, n, lhs, rhs) = if transposed {
                (kg, og, (&col[..], (cols, 1)), (g, (1, cols)))
            } else {
                (og, kg, (g, (cols, 1)), (&col[..], (1, cols)))
            };
            if t == 0 {
                matmul_into(m, n, cols, dst, lhs, rhs, threads);
            } else {
                // SAFETY: the chunk `t = 0` initialised all `og·kg` values of `dst`.
                let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
                matmul(m, n, cols, dst, true, lhs.0, lhs.1, rhs.0, rhs.1, threads);
            }
        }
        if transposed {
            // SAFETY: the first chunk of this group initialised all `og·kg` values.
            let block = unsafe {
                &*(&dw_t.spare_capacity_mut()[..og * kg] as *const [MaybeUninit<f32>]
                    as *const [f32])
            };
            for o in 0..og {
                dw.extend((0..kg).map(|r| block[r * og + o]));
            }
        } else {
            // SAFETY: the group's first chunk initialised its `og·kg` values after `len`.
            unsafe { dw.set_len(dw.len() + og * kg) };
        }
    }
    dw
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
    let dx = if geo.blocked() {
        x_backward_blocks(&geo, vs, gs)
    } else {
        x_backward_im2col(&geo, vs, gs)
    };
    Some(FlexTensor::from_data(TensorData::new(dx, x_dims)))
}

/// [`conv2d_x_backward`]'s products over the im2col patch matrix.
fn x_backward_im2col(geo: &Geometry, vs: &[f32], gs: &[f32]) -> Vec<f32> {
    let (og, kg, p) = (geo.og(), geo.kg(), geo.positions());
    let per_x = geo.channels * geo.height * geo.width;
    let chunk = geo.chunk();
    // A patch buffer, a gradient buffer and a padded-gradient buffer per task, reused: the
    // product overwrites the first.
    type Buffers = (Vec<f32>, Vec<f32>, Vec<f32>);
    let compute = |(col, rows, padded): &mut Buffers, inner, (t, dx_t): (usize, &mut [f32])| {
        let (n0, count) = (t * chunk, dx_t.len() / per_x.max(1));
        let cols = count * p;
        col.resize(kg * cols, 0.0);
        for group in 0..geo.groups {
            let g = geo.grad_rows(gs, n0, count, group, rows);
            // col (kg × cols) = V_gᵀ (kg × og) · G_g (og × cols).
            let v_g = &vs[group * og * kg..(group + 1) * og * kg];
            matmul(kg, cols, og, col, false, v_g, (1, kg), g, (cols, 1), inner);
            let planes = geo.cg() * geo.height * geo.width;
            for (i, dx_n) in dx_t.chunks_mut(per_x.max(1)).enumerate() {
                let dx_g = &mut dx_n[group * planes..(group + 1) * planes];
                geo.col2im_add(col, dx_g, cols, i * p, padded);
            }
        }
    };
    chunked_output(
        geo.batch * per_x,
        per_x,
        chunk,
        og * kg * p * chunk,
        compute,
    )
}
