//! The input gradient of a linear layer on Flex, `dx = g·Vᵀ`, with `V` formed piece by piece
//! beside the product that reads it.
//!
//! Forming `V₀` (`sign(W)`, `M∘sign(W)`, …) as a whole tensor before the product writes a
//! weight-sized tensor to memory and has the product read it back: on a 1024 × 1024 layer that
//! pass alone made a sign-symmetry rule ×1.035–1.04 of backpropagation's forward + backward. Here
//! the columns of `dx` (rows of `W`) are cut into parts, one task each, and each part walks the
//! reduction axis in [`DEPTH`]-long steps: it forms that `part × DEPTH` piece of `V₀` into a small
//! buffer (which stays in cache) and adds its product to the part's columns of `dx`.
//! Backpropagation takes the same path with `V₀ = W` (the piece is a copy), so rules and BP share
//! one kernel. On this layer and the 2-vCPU EPYC it is also faster than one `gemm` call over the
//! whole product with the crate's own threading: the pieces are small, contiguous and local.
//!
//! The parts and steps depend on the shapes only, and the norms are summed part by part in
//! order: the result does not depend on the number of threads.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};
use core::mem::MaybeUninit;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::FeedbackKernel;
use crate::flex_conv::product;
use crate::fused::{AHEAD, Disjoint, Formation, scale_factor, scale_in_place};

/// The reduction length of one piece of `V₀` (a piece is at most `PART_MAX × DEPTH` values,
/// 256 KiB).
const DEPTH: usize = 256;

/// The widest part (columns of `dx`).
const PART_MAX: usize = 256;

/// Parts aimed at when the layer is wide enough: enough for 16 threads.
const PARTS: usize = 16;

/// Below this many multiply-adds the parts run one after the other on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

/// `dx`'s columns per part (`columns > 0`): about [`PARTS`] parts, a multiple of 16 (whole
/// vectors), at most [`PART_MAX`].
fn part_width(columns: usize) -> usize {
    columns.div_ceil(PARTS).next_multiple_of(16).min(PART_MAX)
}

/// `dx = s·g·V₀ᵀ` for `W` `[d_in, d_out]` and `g` `[..., d_out]` (contiguous f32), `V₀` and `s`
/// as `kernel` forms them (brSF draws its key here, once): `[..., d_in]`. `None` where the
/// generic path must do it (other dtypes, strided views, empty axes, a distribution without a
/// counter-based sampler).
pub(crate) fn x_backward(
    kernel: &FeedbackKernel,
    weight: &FlexTensor,
    aux: Option<&FlexTensor>,
    grad: &FlexTensor,
) -> Option<FlexTensor> {
    let w = weight.as_slice::<f32>()?;
    let g = grad.as_slice::<f32>()?;
    let w_shape = weight.shape();
    let g_shape = grad.shape();
    if w_shape.num_dims() != 2 || g_shape.num_dims() < 2 {
        return None;
    }
    let (inputs, outputs) = (w_shape[0], w_shape[1]);
    if inputs == 0 || outputs == 0 || g_shape[g_shape.num_dims() - 1] != outputs {
        return None;
    }
    let rows = g.len() / outputs;
    if rows == 0 {
        return None;
    }
    // Last: brSF draws its key here, and a `None` after it would have the fallback draw again.
    let (aux, formation, norms) = Formation::for_kernel(kernel, w, aux)?;

    let width = part_width(inputs);
    let mut out: Vec<f32> = Vec::with_capacity(rows * inputs);
    // The parts write disjoint columns of `dx`.
    let dst = Disjoint::new(&mut out);
    let part = |p: usize| -> (f64, f64) {
        let first = p * width;
        let columns = width.min(inputs - first);
        let mut buffer: Vec<f32> = Vec::with_capacity(columns * DEPTH);
        let mut sums = (0.0, 0.0);
        // Asks for the cache lines of rows `rows` of W (and M or B), columns `from..from + depth`.
        let rows_ahead = |from: usize, depth: usize, rows: core::ops::Range<usize>| {
            for r in rows {
                let at = r * outputs + from;
                formation.prefetch(w, aux, at..at + depth);
            }
        };
        for (step, from) in (0..outputs).step_by(DEPTH).enumerate() {
            let depth = DEPTH.min(outputs - from);
            let piece = &mut buffer.spare_capacity_mut()[..columns * depth];
            for (c, row) in piece.chunks_exact_mut(depth).enumerate() {
                if c + AHEAD < columns {
                    rows_ahead(from, depth, first + c + AHEAD..first + c + AHEAD + 1);
                }
                let at = (first + c) * outputs + from;
                let range = at..at + depth;
                let (ww, vv) = formation.fill(norms, row, &w[range.clone()], Some(&aux[range]), at);
                sums = (sums.0 + ww, sums.1 + vv);
            }
            // The next piece's first rows start on their way while this piece's product runs.
            let next = from + DEPTH;
            if next < outputs {
                rows_ahead(
                    next,
                    DEPTH.min(outputs - next),
                    first..first + AHEAD.min(columns),
                );
            }
            // SAFETY: the loop above wrote all `columns · depth` values.
            let piece = unsafe { &*(piece as *const [MaybeUninit<f32>] as *const [f32]) };
            // dx[:, first..first + columns] (+)= g[:, from..from + depth] · pieceᵀ, the piece
            // read as a `depth × columns` matrix with unit row stride.
            // SAFETY: `dst` holds `rows · inputs` values; this part's product writes only the
            // columns `first..first + columns` of them (row stride `inputs`), which no other
            // part touches, and the first step writes every one before a later step reads it.
            unsafe {
                product(
                    rows,
                    columns,
                    depth,
                    (dst.at(first), (inputs, 1)),
                    step > 0,
                    (&g[from..], (outputs, 1)),
                    (piece, (1, depth)),
                    Parallelism::None,
                )
            };
        }
        sums
    };
    let parts = inputs.div_ceil(width);
    let sums: Vec<(f64, f64)> = if rows * inputs * outputs < SERIAL_WORK {
        (0..parts).map(part).collect()
    } else {
        (0..parts).into_par_iter().map(part).collect()
    };
    // SAFETY: the parts wrote all `rows · inputs` values (every column, every row).
    unsafe { out.set_len(rows * inputs) };

    scale_in_place(&mut out, scale_factor(kernel.scale, &sums));
    let mut dims = g_shape.to_vec();
    *dims.last_mut().expect("rank ≥ 2") = inputs;
    Some(FlexTensor::from_data(TensorData::new(
        out,
        Shape::from(dims),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{FeedbackForm, ScaleKind};
    use crate::kernel_tests::{
        KEY, assert_close, factor, host, independent_v0, kernels, magnitudes, values,
    };
    use crate::random::RandomScope;

    fn tensor(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, Shape::from(dims.to_vec())))
    }

    /// `s·g·V₀ᵀ` by host loops in f64, `V₀` and `s` as given.
    fn reference(factor: f64, v0: &[f32], g: &[f32], inputs: usize) -> Vec<f32> {
        let outputs = v0.len() / inputs;
        let rows = g.len() / outputs;
        let mut dx = vec![0.0f32; rows * inputs];
        for r in 0..rows {
            for k in 0..inputs {
                let dot: f64 = (0..outputs)
                    .map(|n| f64::from(g[r * outputs + n]) * f64::from(v0[k * outputs + n]))
                    .sum();
                dx[r * inputs + k] = (factor * dot) as f32;
            }
        }
        dx
    }

    /// Every form and scale, on shapes with one and several parts and steps, part and step
    /// tails, rank 3, and the serial and parallel paths, against host loops over a `V₀` formed
    /// independently: burn's generic ops, or for brSF the whole-tensor fill under the same key
    /// (itself tested against the per-element stream in `fused`).
    #[test]
    fn input_gradient_matches_host_loops_for_every_form() {
        // (grad dims, inputs): outputs is the grad's last axis.
        let shapes: [(&[usize], usize); 5] = [
            (&[3, 7], 5),
            (&[2, 3, 9], 4),
            (&[33, 300], 70),
            (&[48, 515], 290),
            (&[1, 257], 33),
        ];
        for (g_dims, inputs) in shapes {
            let outputs = *g_dims.last().unwrap();
            let w = values(inputs * outputs, 1);
            let aux = magnitudes(inputs * outputs, 2);
            let g = values(g_dims.iter().product(), 3);
            let (wt, at, gt) = (
                tensor(w.clone(), &[inputs, outputs]),
                tensor(aux, &[inputs, outputs]),
                tensor(g.clone(), g_dims),
            );
            for kernel in kernels() {
                let what = format!("{kernel:?} on {g_dims:?} × {inputs}");
                let got = RandomScope::run(KEY, || {
                    x_backward(&kernel, &wt, Some(&at), &gt).expect("fused path")
                });
                let v0 = independent_v0(&kernel, &wt, &at);
                let want = reference(factor(&kernel, &w, &v0), &v0, &g, inputs);
                let mut dims = g_dims.to_vec();
                *dims.last_mut().unwrap() = inputs;
                assert_eq!(got.shape().to_vec(), dims, "{what}: shape");
                assert_close(&what, &host(&got), &want);
            }
        }
    }

    /// The parts and steps depend on the shapes only: one thread and two give the same bits.
    #[test]
    fn one_thread_and_two_give_the_same_bits() {
        let (rows, inputs, outputs) = (40, 200, 600);
        let kernel = FeedbackKernel {
            form: FeedbackForm::MaskedSign,
            scale: ScaleKind::MatchNorm,
        };
        let w = tensor(values(inputs * outputs, 4), &[inputs, outputs]);
        let m = tensor(values(inputs * outputs, 5), &[inputs, outputs]);
        let g = tensor(values(rows * outputs, 6), &[rows, outputs]);
        assert!(rows * inputs * outputs >= SERIAL_WORK, "the parallel path");
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| host(&x_backward(&kernel, &w, Some(&m), &g).unwrap()))
        };
        let (one, two) = (run(1), run(2));
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    /// What the kernel leaves to the generic path: a missing or mis-sized auxiliary tensor, a
    /// gradient whose last axis is not the weight's output axis, an empty axis.
    #[test]
    fn declines_what_it_cannot_do() {
        let kernel = FeedbackKernel {
            form: FeedbackForm::MaskedSign,
            scale: ScaleKind::MatchNorm,
        };
        let w = tensor(values(12, 1), &[3, 4]);
        let g = tensor(values(8, 2), &[2, 4]);
        assert!(x_backward(&kernel, &w, None, &g).is_none());
        let short = tensor(values(6, 3), &[2, 3]);
        assert!(x_backward(&kernel, &w, Some(&short), &g).is_none());
        let wrong = tensor(values(6, 2), &[2, 3]);
        assert!(x_backward(&FeedbackKernel::WEIGHT, &w, None, &wrong).is_none());
        let empty = tensor(vec![], &[0, 4]);
        assert!(x_backward(&FeedbackKernel::WEIGHT, &w, None, &empty).is_none());
        assert!(x_backward(&FeedbackKernel::WEIGHT, &w, None, &g).is_some());
    }
}
