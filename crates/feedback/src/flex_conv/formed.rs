//! The input gradient of a convolution through `V = s·V₀`, with `V₀` formed slice by slice beside
//! the products that read it.
//!
//! Forming `V₀` (`sign(W)`, `M∘sign(W)`, …) as a whole tensor first writes a weight-sized tensor
//! to memory that the products then read back: 11 million values per ResNet-18 backward at
//! 32 × 32, most of them in the layers on 2 × 2 and 1 × 1 maps, where the weights outweigh every
//! activation and reading them is most of the work (uSF ×1.05, frSF ×1.05 of backpropagation's
//! training step). Here the input channels are cut into slices of [`SLICE`] channels, one task
//! each. A task forms its slice of `V₀`, the `[out, slice, k₁, k₂]` block (a contiguous run of `W`
//! per output channel), into a buffer of its own, multiplies it against the output gradient of
//! the whole batch (gathered once, before the tasks, and shared), and adds the columns back onto
//! its own channels of `dx`, which no other task writes. Where `V₀` is a tensor already held
//! (backpropagation's `W`, FA's `B`, a `V₀` stored by `frozen_weights`) the slice is read in place.
//! Backpropagation takes the same path, and gains by it: each weight is read once, where the
//! whole-tensor path read all of them once per chunk of samples.
//!
//! Only layers with few columns (samples times output positions, [`COLUMNS_MAX`]) and a weight at
//! least as large as their input gradient take this path ([`pays`]): every task reads the whole
//! output gradient, and with longer products the whole-tensor path's larger ones are faster and
//! hide `V₀`.
//!
//! The slices depend on the shapes only, each value of `dx` is summed in the same order whatever
//! the slicing (over the output channels inside a product, over the taps in order outside), and
//! the norms are summed slice by slice in order: the result does not depend on the thread count.

use core::mem::MaybeUninit;

use burn::backend::ops::ConvOptions;
use burn::backend::{TensorMetadata, flex::FlexTensor};
use burn::tensor::TensorData;
use gemm::Parallelism;
use rayon::prelude::*;

use super::{Geometry, dims4, matmul};
use crate::backend::FeedbackKernel;
use crate::fused::{AHEAD, Disjoint, Formation, scale_factor, scale_in_place};

/// Input channels per task: a multiple of 64, so that a formed row of a 3 × 3 kernel (576 values)
/// is whole blocks of the sums' 64-value loops. Slices of 32 channels (rows of 288 values, 32 of
/// them left to the sums' scalar tail) measured slower: uSF's input gradient of ResNet-18's 512 ×
/// 512 layer on 1 × 1 maps, 0.84–0.90 against 0.68–0.73 ms.
const SLICE: usize = 64;

/// Output channels per product: the rows of `V₀` a task forms at a time (128 × 576 values, 288
/// KiB, for a 3 × 3 kernel), so that its buffer stays in the second-level cache of smaller cores
/// too. On this project's 2-vCPU EPYC (1 MiB per core) all of a slice at once (1.1 MiB for 512
/// output channels) measured the same.
const DEPTH: usize = 128;

/// Below this many multiply-adds the tasks run one after the other on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

/// The most columns (samples times output positions) a layer's products may have to go slice by
/// slice: reading the weights then costs about as much as multiplying them, and writing `V₀` whole
/// shows. With more, the products are long enough to hide `V₀`, and the sliced products (a few
/// hundred rows, the gradient packed once per slice) measured 1–6 % slower than the whole-tensor
/// ones (ResNet-18's 4 × 4 maps at batch 32, 512 columns; its CIFAR stem's 8 × 8 maps).
const COLUMNS_MAX: usize = 256;

/// Whether the input gradient of `geo` goes slice by slice: at least two slices per group, few
/// columns ([`COLUMNS_MAX`]), and a weight at least as large as the input gradient (see the
/// module documentation).
fn pays(geo: &Geometry) -> bool {
    let dx = geo.batch * geo.channels * geo.height * geo.width;
    geo.cg() >= 2 * SLICE
        && geo.batch * geo.positions() <= COLUMNS_MAX
        && geo.out_channels * geo.kg() >= dx
}

/// The output-gradient rows every task multiplies against, per group.
enum Rows {
    /// One sample per product, read in the gradient's own layout (`og × positions`).
    Samples,
    /// The whole batch side by side, `og × batch·positions`.
    Batch(Vec<Vec<f32>>),
    /// Per block with taps ([`Geometry::blocks`]), the whole batch's positions in it,
    /// `og × batch·block positions`.
    Blocks(Vec<Vec<Vec<f32>>>),
}

/// `dx = s·(g ⋆ V₀)` for a convolution with weight `weight`, `V₀` and `s` as `kernel` forms them
/// (brSF draws its key here, once), `[batch, in, h, w]`. When `keep`, also `V₀` as a whole tensor
/// and `s` (the scope of `frozen_weights` stores them, so that its later backwards copy the same
/// values instead of forming them again). `None` where the whole-tensor path must do it: shapes
/// that do not pay ([`pays`]), other dtypes, strided views, a missing auxiliary tensor, a
/// distribution without a counter-based sampler.
pub(crate) fn x_backward(
    x_dims: [usize; 4],
    kernel: &FeedbackKernel,
    (weight, aux): (&FlexTensor, Option<&FlexTensor>),
    grad: &FlexTensor,
    options: &ConvOptions<2>,
    keep: bool,
) -> Option<(FlexTensor, Option<(FlexTensor, f32)>)> {
    let geo = Geometry::new(x_dims, dims4(weight)?, dims4(grad)?, options)?;
    if geo.batch == 0 || !pays(&geo) {
        return None;
    }
    let w = weight.as_slice::<f32>()?;
    let gs = grad.as_slice::<f32>()?;
    // Last: brSF draws its key here, and a `None` after it would have the fallback draw again.
    let (aux, formation, norms) = Formation::for_kernel(kernel, w, aux)?;

    let mut v0: Vec<f32> = Vec::with_capacity(if keep { w.len() } else { 0 });
    // The tasks write disjoint rows of `V₀` (their own channels of every output channel).
    let kept = keep.then(|| Disjoint::new(&mut v0));
    let (mut dx, sums) = slices(&geo, formation, norms, (w, aux), gs, kept);
    let factor = scale_factor(kernel.scale, &sums);
    scale_in_place(&mut dx, factor);
    let kept = keep.then(|| {
        // SAFETY: the tasks wrote every value of `V₀` (every output channel of every slice).
        unsafe { v0.set_len(w.len()) };
        (
            FlexTensor::from_data(TensorData::new(v0, weight.shape())),
            factor,
        )
    });
    Some((FlexTensor::from_data(TensorData::new(dx, x_dims)), kept))
}

/// The unscaled input gradient and each task's `(Σ W², Σ V₀²)` (zeros unless `norms`), tasks in
/// order; `V₀` written through `kept` too when given (room for the whole weight).
fn slices(
    geo: &Geometry,
    formation: Formation,
    norms: bool,
    (w, aux): (&[f32], &[f32]),
    gs: &[f32],
    kept: Option<Disjoint>,
) -> (Vec<f32>, Vec<(f64, f64)>) {
    let (og, cg, kg) = (geo.og(), geo.cg(), geo.kg());
    let (kw, taps) = (geo.kernel[1], geo.kernel[0] * geo.kernel[1]);
    let (plane, p) = (geo.height * geo.width, geo.positions());
    let per_x = geo.channels * plane;
    let blocks: Vec<_> = geo.blocks().into_iter().filter(|b| b.taps() > 0).collect();
    let rows = if geo.blocked() {
        Rows::Blocks(
            (0..geo.groups)
                .map(|g| {
                    let rows = |b| {
                        let mut buf = Vec::new();
                        geo.block_grad_rows(gs, (0, geo.batch), g, b, &mut buf);
                        buf
                    };
                    blocks.iter().map(rows).collect()
                })
                .collect(),
        )
    } else if geo.chunk() > 1 {
        Rows::Batch(
            (0..geo.groups)
                .map(|g| {
                    let mut buf = Vec::new();
                    geo.grad_rows(gs, 0, geo.batch, g, &mut buf);
                    buf
                })
                .collect(),
        )
    } else {
        Rows::Samples
    };

    let mut dx: Vec<f32> = Vec::with_capacity(geo.batch * per_x);
    // The tasks write disjoint channels of `dx`.
    let out = Disjoint::new(&mut dx);
    let per_group = cg.div_ceil(SLICE);
    // A piece of V₀, a buffer of patch-row gradients, a padded-planes buffer, block offsets.
    type Buffers = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>);
    let task = |(piece, col, padded, offsets): &mut Buffers, t: usize| -> (f64, f64) {
        let (g, c0) = (t / per_group, t % per_group * SLICE);
        let width = SLICE.min(cg - c0);
        let len = width * taps;
        let start = |o: usize| (g * og + o) * kg + c0 * taps;
        // Output channel `o`'s row of `W` (and `M` or `B`) is on its way by the time it is read.
        let ask_ahead = |o: usize| {
            if o + AHEAD < og {
                let ahead = start(o + AHEAD);
                formation.prefetch(w, aux, ahead..ahead + len);
            }
        };
        let keep_row = |at: usize, row: &[MaybeUninit<f32>]| {
            if let Some(kept) = kept {
                // SAFETY: a row of this slice is `len` values of V₀ from `at`, inside the
                // weight-sized allocation, which no other task writes.
                let dst = unsafe { kept.part(at, len) };
                dst.copy_from_slice(row);
            }
        };
        let mut sums = (0.0, 0.0);
        // The patch-row gradients of the whole batch (at most `COLUMNS_MAX` columns): per block,
        // its taps' `width × batch·positions` matrices one after another; otherwise `len` rows of
        // `batch·positions`, sample after sample.
        let n_all = geo.batch * p;
        let col_len = match &rows {
            Rows::Blocks(_) => blocks
                .iter()
                .map(|b| b.taps() * width * geo.batch * b.positions())
                .sum(),
            _ => len * n_all,
        };
        col.resize(col_len, 0.0);
        // The output channels `DEPTH` at a time: `V₀`'s rows for them (formed into `piece`,
        // which then stays in the second-level cache, or read in place), their products added
        // onto the earlier ones'.
        for (step, o0) in (0..og).step_by(DEPTH).enumerate() {
            let depth = DEPTH.min(og - o0);
            let rows_o = o0..o0 + depth;
            // `V₀` is `W` or the auxiliary tensor itself: read in place, its norm summed row by
            // row if wanted; tap `t` of channel `c` of output row `o` at `o·kg + c·taps + t`.
            // Otherwise formed into `piece`, at `(o − o0)·len + c·taps + t`.
            let (v, strides): (&[f32], (usize, usize)) =
                if let Some(whole) = formation.in_place(w, aux) {
                    for o in rows_o.clone().filter(|_| norms || kept.is_some()) {
                        ask_ahead(o);
                        let at = start(o);
                        let (w_row, v_row) = (&w[at..at + len], &whole[at..at + len]);
                        if norms {
                            let (a, b) = crate::fused::row_norms(w_row, v_row);
                            sums = (sums.0 + a, sums.1 + b);
                        }
                        // SAFETY: initialised values read as possibly uninitialised ones.
                        keep_row(at, unsafe {
                            &*(v_row as *const [f32] as *const [MaybeUninit<f32>])
                        });
                    }
                    (&whole[start(o0)..], (taps, kg))
                } else {
                    piece.clear();
                    piece.reserve(depth * len);
                    for (row, o) in piece.spare_capacity_mut()[..depth * len]
                        .chunks_exact_mut(len)
                        .zip(rows_o.clone())
                    {
                        ask_ahead(o);
                        let at = start(o);
                        let range = at..at + len;
                        let (w_row, a_row) = (&w[range.clone()], Some(&aux[range]));
                        let (a, b) = formation.fill(norms, row, w_row, a_row, at);
                        sums = (sums.0 + a, sums.1 + b);
                        keep_row(at, row);
                    }
                    // SAFETY: the loop above wrote all `depth·len` values.
                    unsafe { piece.set_len(depth * len) };
                    (&piece[..], (taps, len))
                };
            let (add, none) = (step > 0, Parallelism::None);
            match &rows {
                Rows::Blocks(per_group_rows) => {
                    let mut at = 0;
                    for (b, g_b) in blocks.iter().zip(&per_group_rows[g]) {
                        let n = geo.batch * b.positions();
                        for (i, j) in geo.block_taps(b) {
                            // col_t (width × n) += V₀_tᵀ (width × depth; V₀[o][c][i][j] at
                            // o·ld + c·k₁k₂) · G_b (depth × n).
                            let dst = &mut col[at..][..width * n];
                            let (lhs, rhs) =
                                ((&v[i * kw + j..], strides), (&g_b[o0 * n..], (n, 1)));
                            matmul(width, n, depth, dst, add, lhs.0, lhs.1, rhs.0, rhs.1, none);
                            at += width * n;
                        }
                    }
                }
                Rows::Batch(per_group_rows) => {
                    // col (len × n) += V₀ᵀ (len × depth) · G (depth × n).
                    let rhs = &per_group_rows[g][o0 * n_all..];
                    let lhs = (v, (1, strides.1));
                    matmul(
                        len,
                        n_all,
                        depth,
                        col,
                        add,
                        lhs.0,
                        lhs.1,
                        rhs,
                        (n_all, 1),
                        none,
                    );
                }
                Rows::Samples => {
                    let per_g = geo.out_channels * p;
                    for (n, col_n) in col.chunks_exact_mut(len * p).enumerate() {
                        let rhs = &gs[n * per_g + (g * og + o0) * p..];
                        let lhs = (v, (1, strides.1));
                        matmul(len, p, depth, col_n, add, lhs.0, lhs.1, rhs, (p, 1), none);
                    }
                }
            }
        }
        // The task's channels of sample n: no other task's.
        let first = g * cg + c0;
        // SAFETY: channels `first..first + width` of sample `n` lie inside `dx`'s allocation and
        // belong to this task alone; each slice is taken once per use and dropped after it.
        let dx_of = |n: usize| unsafe { out.zeroed(n * per_x + first * plane, width * plane) };
        let mut dxs: Vec<&mut [f32]> = (0..geo.batch).map(dx_of).collect();
        match &rows {
            Rows::Blocks(_) => {
                let mut at = 0;
                for b in &blocks {
                    let size = b.taps() * width * geo.batch * b.positions();
                    geo.block_col_add(&col[at..][..size], b, width, &mut dxs, offsets);
                    at += size;
                }
            }
            Rows::Batch(_) => {
                for (i, dx_n) in dxs.iter_mut().enumerate() {
                    geo.col2im_add(col, dx_n, n_all, i * p, padded);
                }
            }
            Rows::Samples => {
                for (dx_n, col_n) in dxs.iter_mut().zip(col.chunks_exact(len * p)) {
                    geo.col2im_add(col_n, dx_n, p, 0, padded);
                }
            }
        }
        sums
    };
    let tasks = geo.groups * per_group;
    let work = geo.out_channels * kg * p * geo.batch;
    let sums: Vec<(f64, f64)> = if work < SERIAL_WORK {
        let mut buffers = Buffers::default();
        (0..tasks).map(|t| task(&mut buffers, t)).collect()
    } else {
        (0..tasks)
            .into_par_iter()
            .map_init(Buffers::default, task)
            .collect()
    };
    // SAFETY: the tasks zeroed, then added onto, every channel of every sample.
    unsafe { dx.set_len(geo.batch * per_x) };
    (dx, sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{FeedbackForm, ScaleKind};
    use crate::kernel_tests::{
        KEY, assert_close, factor, host, independent_v0, kernels, magnitudes, values,
    };
    use crate::random::RandomScope;

    fn tensor(values: Vec<f32>, dims: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, dims))
    }

    /// One convolution: input dims, weight dims, stride, dilation, padding (begin, end) per axis,
    /// groups.
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [usize; 2],
        [(usize, usize); 2],
        usize,
    );

    /// Every path of the kernel: blocks (several, a stride, a 1 × 1 map, a tail slice of two
    /// channels, two groups), the whole batch side by side, one sample per product, dilation
    /// with asymmetric padding, a strided 1 × 1 kernel, and more output channels than one step
    /// of [`DEPTH`] (blocks, and the batch side by side).
    #[rustfmt::skip]
    const CASES: [Case; 10] = [
        ([2, 128, 2, 2], [16, 128, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 1),
        ([3, 130, 1, 1], [8, 130, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 1),
        ([2, 128, 4, 4], [8, 128, 3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)], 1),
        ([4, 128, 4, 4], [16, 128, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 1),
        ([1, 128, 12, 12], [16, 128, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 1),
        ([2, 256, 2, 2], [16, 128, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 2),
        ([2, 128, 3, 4], [8, 128, 3, 2], [2, 1], [1, 2], [(1, 2), (0, 1)], 1),
        ([2, 128, 2, 2], [64, 128, 1, 1], [2, 2], [1, 1], [(0, 0), (0, 0)], 1),
        ([2, 128, 1, 1], [136, 128, 3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], 1),
        ([2, 128, 2, 2], [136, 128, 1, 1], [1, 1], [1, 1], [(0, 0), (0, 0)], 1),
    ];

    fn options((_, _, stride, dilation, padding, groups): &Case) -> ConvOptions<2> {
        ConvOptions::new_with_padding(*stride, *padding, *dilation, *groups)
    }

    fn output_dims(case: &Case) -> [usize; 4] {
        let (x, w) = (case.0, case.1);
        let options = options(case);
        let out = |a: usize| super::super::output_size(x[2 + a], w[2 + a], &options, a).unwrap();
        [x[0], w[0], out(0), out(1)]
    }

    /// `dx = s·(g ⋆ V₀)` by host loops in f64, position by position.
    fn reference(case: &Case, v0: &[f32], factor: f64, g: &[f32]) -> Vec<f32> {
        let (x, w, stride, dilation, padding, groups) = *case;
        let out = output_dims(case);
        let (cg, og) = (w[1], w[0] / groups);
        let mut dx = vec![0.0f64; x.iter().product()];
        for n in 0..x[0] {
            for o in 0..w[0] {
                let group = o / og;
                for oh in 0..out[2] {
                    for ow in 0..out[3] {
                        let grad = f64::from(g[((n * w[0] + o) * out[2] + oh) * out[3] + ow]);
                        for c in 0..cg {
                            for i in 0..w[2] {
                                for j in 0..w[3] {
                                    let ih = (oh * stride[0] + i * dilation[0]) as isize
                                        - padding[0].0 as isize;
                                    let iw = (ow * stride[1] + j * dilation[1]) as isize
                                        - padding[1].0 as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= x[2] as isize
                                        || iw >= x[3] as isize
                                    {
                                        continue;
                                    }
                                    let (ih, iw) = (ih as usize, iw as usize);
                                    let v = f64::from(v0[((o * cg + c) * w[2] + i) * w[3] + j]);
                                    let channel = group * cg + c;
                                    dx[((n * x[1] + channel) * x[2] + ih) * x[3] + iw] += grad * v;
                                }
                            }
                        }
                    }
                }
            }
        }
        dx.iter().map(|&v| (factor * v) as f32).collect()
    }

    /// Every form and scale on every path against host loops over a `V₀` formed independently.
    #[test]
    fn sliced_input_gradient_matches_host_loops() {
        for (k, case) in CASES.iter().enumerate() {
            let (x_dims, w_dims) = (case.0, case.1);
            let n_w: usize = w_dims.iter().product();
            let w = tensor(values(n_w, 10 * k as u64 + 1), w_dims);
            let aux = tensor(magnitudes(n_w, 10 * k as u64 + 2), w_dims);
            let out = output_dims(case);
            let g_host = values(out.iter().product(), 10 * k as u64 + 3);
            let g = tensor(g_host.clone(), out);
            for kernel in kernels() {
                let what = format!("{kernel:?} on {case:?}");
                let got = RandomScope::run(KEY, || {
                    x_backward(x_dims, &kernel, (&w, Some(&aux)), &g, &options(case), false)
                });
                let (got, kept) = got.unwrap_or_else(|| panic!("{what}: the sliced path"));
                assert!(kept.is_none());
                let v0 = independent_v0(&kernel, &w, &aux);
                let want = reference(case, &v0, factor(&kernel, &host(&w), &v0), &g_host);
                assert_eq!(got.shape().to_vec(), x_dims.to_vec(), "{what}: shape");
                assert_close(&what, &host(&got), &want);
            }
        }
    }

    /// Layers whose input gradient outweighs their weight, or with fewer than two slices of
    /// channels, are left to the whole-tensor path.
    #[test]
    fn declines_what_does_not_pay() {
        let g = |dims: [usize; 4]| tensor(values(dims.iter().product(), 3), dims);
        let w = |dims: [usize; 4]| tensor(values(dims.iter().product(), 4), dims);
        let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let run = |x: [usize; 4], wd: [usize; 4], gd: [usize; 4]| {
            x_backward(
                x,
                &FeedbackKernel::WEIGHT,
                (&w(wd), None),
                &g(gd),
                &same,
                false,
            )
        };
        // Large maps: the gradient outweighs the weight.
        assert!(run([8, 128, 16, 16], [128, 128, 3, 3], [8, 128, 16, 16]).is_none());
        // One slice of channels.
        assert!(run([2, 64, 1, 1], [64, 64, 3, 3], [2, 64, 1, 1]).is_none());
        assert!(run([2, 128, 1, 1], [64, 128, 3, 3], [2, 64, 1, 1]).is_some());
        // A missing auxiliary tensor.
        let fa = FeedbackKernel {
            form: FeedbackForm::Given,
            scale: ScaleKind::MatchNorm,
        };
        let (x, wd, gd) = ([2, 128, 1, 1], [64, 128, 3, 3], [2, 64, 1, 1]);
        assert!(x_backward(x, &fa, (&w(wd), None), &g(gd), &same, false).is_none());
    }

    /// The slices depend on the shapes only: one thread and two give the same bits.
    #[test]
    fn one_thread_and_two_give_the_same_bits() {
        let kernel = FeedbackKernel {
            form: FeedbackForm::MaskedSign,
            scale: ScaleKind::MatchNorm,
        };
        for case in [&CASES[0], &CASES[3]] {
            let (x_dims, w_dims) = (case.0, case.1);
            let n_w: usize = w_dims.iter().product();
            let w = tensor(values(n_w, 4), w_dims);
            let m = tensor(values(n_w, 5), w_dims);
            let out = output_dims(case);
            let g = tensor(values(out.iter().product(), 6), out);
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (dx, _) =
                        x_backward(x_dims, &kernel, (&w, Some(&m)), &g, &options(case), false)
                            .unwrap();
                    host(&dx)
                })
            };
            let (one, two) = (run(1), run(2));
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{case:?}"
            );
        }
    }

    /// What `frozen_weights` stores: the whole `V₀` the slices formed (the independent one, value
    /// for value) and its factor; copying it back slice by slice with that factor gives the first
    /// backward's bits.
    #[test]
    fn kept_feedback_reproduces_the_gradient_bit_for_bit() {
        let case = &CASES[1];
        let (x_dims, w_dims) = (case.0, case.1);
        let n_w: usize = w_dims.iter().product();
        let w = tensor(values(n_w, 7), w_dims);
        let aux = tensor(magnitudes(n_w, 8), w_dims);
        let out = output_dims(case);
        let g = tensor(values(out.iter().product(), 9), out);
        for kernel in kernels() {
            let what = format!("{kernel:?}");
            let (dx, kept) = RandomScope::run(KEY, || {
                x_backward(x_dims, &kernel, (&w, Some(&aux)), &g, &options(case), true)
            })
            .unwrap();
            let (v0, kept_factor) = kept.expect("kept");
            let want_v0 = independent_v0(&kernel, &w, &aux);
            let want_factor = factor(&kernel, &host(&w), &want_v0);
            assert_eq!(host(&v0), want_v0, "{what}: V₀");
            let relative = (f64::from(kept_factor) - want_factor).abs() / want_factor;
            assert!(
                relative < 1e-5,
                "{what}: factor {kept_factor} against {want_factor}"
            );
            let copy = FeedbackKernel {
                form: FeedbackForm::Weight,
                scale: ScaleKind::Constant(kept_factor),
            };
            let (again, _) =
                x_backward(x_dims, &copy, (&v0, None), &g, &options(case), false).unwrap();
            let (a, b) = (host(&dx), host(&again));
            assert!(
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}"
            );
        }
    }
}
