//! The convolution's products block by block, for small maps where padding fills the patches.
//!
//! An im2col patch matrix holds a zero wherever a kernel tap falls in the padding, and the
//! product multiplies those zeros like any other value. On a large map that is a thin border; on
//! the small maps of a network's late layers it is most of the matrix: a 3 × 3 convolution with
//! padding 1 meets the input with 4 of its 9 taps at each position of a 2 × 2 map and with 1 on a
//! 1 × 1 map, so ResNet-18 at 32 × 32 spends about 40 % of its convolution work on zeros.
//!
//! Output positions that meet the same taps form rectangles ([`Block`]: the corners, edges and
//! interior of a map). Each block is one product per tap it meets, the tap's weight columns read
//! in place as a strided matrix, its patch rows holding input values only (no padding to test or
//! zero), its result written to (forward) or added from (backward) its positions.

use core::ops::Range;

use super::{COLUMNS, Geometry, chunked_output, matmul, matmul_add_strided, parallel};

/// Output positions that meet the same kernel taps inside the input: a rectangle of output rows
/// and columns, and the rectangle of taps (kernel rows and columns) that land inside the input
/// at every one of them, and only there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) out: [Range<usize>; 2],
    pub(super) taps: [Range<usize>; 2],
}

impl Block {
    pub(super) fn positions(&self) -> usize {
        self.out[0].len() * self.out[1].len()
    }

    pub(super) fn taps(&self) -> usize {
        self.taps[0].len() * self.taps[1].len()
    }
}

/// Values (patch rows times columns) a chunk's block patches may hold together; larger batches
/// are taken a few samples at a time.
const BLOCK_VALUES: usize = 1 << 22;

/// Samples per product of the forward and the input gradient: a one-position corner block then
/// still has 16 columns, and a batch of 32 makes two chunks to run in parallel. Fixed, so that
/// the sums do not depend on the thread count.
const BLOCK_SAMPLES: usize = 16;

impl Geometry {
    /// The kernel taps on axis `axis` whose input coordinate `o·s + k·d − p` lies inside the
    /// input at output coordinate `o`: a range, since the coordinate grows with `k`.
    fn taps_at(&self, axis: usize, o: usize) -> Range<usize> {
        let size = if axis == 0 { self.height } else { self.width };
        let (d, pad, k) = (
            self.dilation[axis].max(1),
            self.pad[axis],
            self.kernel[axis],
        );
        let at = o * self.stride[axis];
        // k·d ≥ pad − at and k·d < size + pad − at.
        let lo = pad.saturating_sub(at).div_ceil(d).min(k);
        let hi = (size + pad).saturating_sub(at).div_ceil(d).min(k);
        lo..hi.max(lo)
    }

    /// Runs of output coordinates on axis `axis` that meet the same taps (consecutive: both ends
    /// of the tap range only fall as `o` grows), with those taps.
    fn axis_blocks(&self, axis: usize) -> Vec<(Range<usize>, Range<usize>)> {
        let mut runs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
        for o in 0..self.out[axis] {
            let taps = self.taps_at(axis, o);
            match runs.last_mut() {
                Some((out, t)) if *t == taps => out.end = o + 1,
                _ => runs.push((o..o + 1, taps)),
            }
        }
        runs
    }

    /// The blocks of the output map, row runs times column runs (they partition the positions).
    pub(super) fn blocks(&self) -> Vec<Block> {
        let (rows, cols) = (self.axis_blocks(0), self.axis_blocks(1));
        rows.iter()
            .flat_map(|(r, tr)| {
                cols.iter().map(move |(c, tc)| Block {
                    out: [r.clone(), c.clone()],
                    taps: [tr.clone(), tc.clone()],
                })
            })
            .collect()
    }

    /// One block per kernel tap that meets the input anywhere: the tap alone, over the rectangle
    /// of output positions where it does. The weight gradient takes one product per tap over
    /// these, the longest sums a tap's columns can have.
    fn tap_blocks(&self) -> Vec<Block> {
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i, j)))
            .filter_map(|(i, j)| {
                let ((r0, r1, _), (c0, c1, _)) = (self.valid(0, i), self.valid(1, j));
                (r1 > r0 && c1 > c0).then(|| Block {
                    out: [r0..r1, c0..c1],
                    taps: [i..i + 1, j..j + 1],
                })
            })
            .collect()
    }

    /// Multiply-adds that meet the input, against those of the im2col products (taps times
    /// positions, padding included).
    fn valid_fraction(&self) -> (usize, usize) {
        let nominal = self.positions() * self.kernel[0] * self.kernel[1];
        let valid = self.blocks().iter().map(|b| b.positions() * b.taps()).sum();
        (valid, nominal)
    }

    /// Whether the forward and the input gradient go block by block: on maps small enough that
    /// samples already share a product ([`Geometry::chunk`]) and where at least half the im2col
    /// work would multiply padding. Measured on ResNet-18's layers at 32 × 32 (docs/performance.md):
    /// its 2 × 2 and 1 × 1 maps (56 and 89 % padding) run faster so; its 4 × 4 maps (31 %) do
    /// not, the blocks' products being too narrow.
    pub(super) fn blocked(&self) -> bool {
        let (valid, nominal) = self.valid_fraction();
        self.positions() < COLUMNS && valid * 2 <= nominal
    }

    /// Whether the weight gradient goes tap by tap: where at least three quarters of the im2col
    /// work would multiply padding (a 3 × 3 kernel on a 1 × 1 map). Each tap's product adds into
    /// strided columns of the gradient, which costs more than the saved work on larger maps.
    pub(super) fn weight_blocked(&self) -> bool {
        let (valid, nominal) = self.valid_fraction();
        self.positions() < COLUMNS && valid * 4 <= nominal
    }

    /// Samples per product of the block path: `want`, or fewer if their patches would not fit
    /// [`BLOCK_VALUES`].
    fn block_chunk(&self, want: usize) -> usize {
        (BLOCK_VALUES / (self.kg() * self.positions()).max(1))
            .clamp(1, want.clamp(1, self.batch.max(1)))
    }

    /// The block's taps `(i, j)`, row after row.
    pub(super) fn block_taps<'b>(&self, b: &'b Block) -> impl Iterator<Item = (usize, usize)> + 'b {
        b.taps[0]
            .clone()
            .flat_map(move |i| b.taps[1].clone().map(move |j| (i, j)))
    }

    /// For tap `(i, j)`, the offset in a channel's plane of the input value it meets at each
    /// position of block `b` (row after row), in `offsets`.
    fn block_offsets(&self, b: &Block, (i, j): (usize, usize), offsets: &mut Vec<usize>) {
        offsets.clear();
        let iw0 = b.out[1].start * self.stride[1] + j * self.dilation[1] - self.pad[1];
        for oh in b.out[0].clone() {
            let ih = oh * self.stride[0] + i * self.dilation[0] - self.pad[0];
            let line = ih * self.width + iw0;
            offsets.extend((0..b.out[1].len()).map(|m| line + m * self.stride[1]));
        }
    }

    /// The patch rows of block `b` for group `group` of samples `n0..n0 + count` of `xs`, tap
    /// after tap ([`block_taps`](Self::block_taps)), each tap's `cg` channel rows together: row
    /// `(t, c)` holds the input value tap `t` of channel `c` meets at each of the block's
    /// positions, sample after sample. All inside the input by construction: no bounds to test,
    /// no zeros to write.
    fn block_patches(
        &self,
        xs: &[f32],
        (n0, count): (usize, usize),
        group: usize,
        b: &Block,
        (col, offsets): (&mut Vec<f32>, &mut Vec<usize>),
    ) {
        let (plane, per_x, cg) = (
            self.height * self.width,
            self.channels * self.height * self.width,
            self.cg(),
        );
        let (pb, n) = (b.positions(), count * b.positions());
        col.resize(b.taps() * cg * n, 0.0);
        for (slab, tap) in col.chunks_mut((cg * n).max(1)).zip(self.block_taps(b)) {
            self.block_offsets(b, tap, offsets);
            for (c, row) in slab.chunks_mut(n.max(1)).enumerate() {
                for (s, values) in row.chunks_mut(pb.max(1)).enumerate() {
                    let channel = &xs[(n0 + s) * per_x + (group * cg + c) * plane..][..plane];
                    for (v, &o) in values.iter_mut().zip(offsets.iter()) {
                        *v = channel[o];
                    }
                }
            }
        }
    }

    /// The output-gradient rows of block `b` for group `group` of samples `n0..n0 + count`: an
    /// `og × count·positions` matrix in `buf`, columns in the order of
    /// [`block_patches`](Self::block_patches).
    pub(super) fn block_grad_rows(
        &self,
        gs: &[f32],
        (n0, count): (usize, usize),
        group: usize,
        b: &Block,
        buf: &mut Vec<f32>,
    ) {
        let (ow, p) = (self.out[1], self.positions());
        buf.clear();
        for o in 0..self.og() {
            for s in 0..count {
                let plane = &gs[((n0 + s) * self.out_channels + group * self.og() + o) * p..][..p];
                for oh in b.out[0].clone() {
                    // Lines of a few values: a loop, not a call to memcpy.
                    buf.extend(plane[oh * ow..][b.out[1].clone()].iter().copied());
                }
            }
        }
    }

    /// Writes an `og × count·positions` product of block `b` (columns as in
    /// [`block_patches`](Self::block_patches)) to its positions in the outputs `y_t` of the
    /// chunk's samples, group `group`.
    fn block_scatter(&self, prod: &[f32], group: usize, b: &Block, y_t: &mut [f32]) {
        let (ow, p, pb) = (self.out[1], self.positions(), b.positions());
        let (og, per_y) = (self.og(), self.out_channels * self.positions());
        let n = prod.len() / og.max(1);
        for (o, row) in prod.chunks(n.max(1)).enumerate() {
            for (s, values) in row.chunks(pb.max(1)).enumerate() {
                let plane = &mut y_t[s * per_y + (group * og + o) * p..][..p];
                for (oh, line) in b.out[0].clone().zip(values.chunks(b.out[1].len())) {
                    let dst = &mut plane[oh * ow..][b.out[1].clone()];
                    dst.iter_mut().zip(line).for_each(|(d, v)| *d = *v);
                }
            }
        }
    }

    /// Adds the patch-row gradients `col` of block `b` (rows and columns as in
    /// [`block_patches`](Self::block_patches), `channels` rows a tap, one sample per entry of
    /// `dx`) onto the input positions they were read from: each entry of `dx` is the whole planes
    /// of those channels in one sample's input gradient. Each value's sums run over the taps in
    /// order, whatever the slicing of the channels and samples.
    pub(super) fn block_col_add(
        &self,
        col: &[f32],
        b: &Block,
        channels: usize,
        dx: &mut [&mut [f32]],
        offsets: &mut Vec<usize>,
    ) {
        let plane = self.height * self.width;
        let pb = b.positions();
        let n = dx.len() * pb;
        for (slab, tap) in col.chunks((channels * n).max(1)).zip(self.block_taps(b)) {
            self.block_offsets(b, tap, offsets);
            for (c, row) in slab.chunks(n.max(1)).take(channels).enumerate() {
                for (values, dx_s) in row.chunks(pb.max(1)).zip(dx.iter_mut()) {
                    let channel = &mut dx_s[c * plane..][..plane];
                    for (v, &o) in values.iter().zip(offsets.iter()) {
                        channel[o] += v;
                    }
                }
            }
        }
    }

    /// Chunks `(n0, count)` of the batch of at most `want` samples ([`block_chunk`](Self::block_chunk)).
    fn block_chunks(&self, want: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let chunk = self.block_chunk(want);
        (0..self.batch)
            .step_by(chunk)
            .map(move |n0| (n0, chunk.min(self.batch - n0)))
    }
}

/// The forward block by block: `Y[:, b] = Σ_taps W_t · patches_{b,t}` for each block `b`, one
/// product per tap read straight from the weights (tap `t`'s `og × cg` columns are a strided
/// matrix of them), summed by `gemm`, plus `bias`; chunks of [`BLOCK_SAMPLES`] samples in
/// parallel ([`chunked_output`]).
pub(super) fn forward_blocks(
    geo: &Geometry,
    xs: &[f32],
    ws: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (og, cg, kg) = (geo.og(), geo.cg(), geo.kg());
    let (kw, taps) = (geo.kernel[1], geo.kernel[0] * geo.kernel[1]);
    let per_y = geo.out_channels * geo.positions();
    let blocks = geo.blocks();
    let chunk = geo.block_chunk(BLOCK_SAMPLES);
    // Blocks meeting no tap (all padding) keep their zeros.
    let work = og * kg * geo.positions() * chunk;
    type Buffers = (Vec<f32>, Vec<f32>, Vec<usize>);
    let compute = |(col, prod, offsets): &mut Buffers, inner, (t, y_t): (usize, &mut [f32])| {
        let (n0, count) = (t * chunk, y_t.len() / per_y.max(1));
        for group in 0..geo.groups {
            for b in blocks.iter().filter(|b| b.taps() > 0) {
                let n = count * b.positions();
                geo.block_patches(xs, (n0, count), group, b, (col, offsets));
                prod.resize(og * n, 0.0);
                for (k, (i, j)) in geo.block_taps(b).enumerate() {
                    // W_t (og × cg): W[o][c][i][j] at o·kg + c·k₁k₂.
                    let w_t = &ws[group * og * kg + i * kw + j..];
                    let rows = &col[k * cg * n..][..cg * n];
                    matmul(og, n, cg, prod, k > 0, w_t, (kg, taps), rows, (n, 1), inner);
                }
                geo.block_scatter(prod, group, b, y_t);
            }
        }
        geo.add_bias(y_t, bias);
    };
    chunked_output(geo.batch * per_y, per_y, chunk, work, compute)
}

/// The weight gradient tap by tap: `dW_t += G_{R_t} · patches_tᵀ` over the rectangle `R_t` of
/// output positions where tap `t` meets the input ([`Geometry::tap_blocks`]), added straight into
/// the tap's strided columns of the (zeroed) gradient; the whole batch per product where it
/// fits, chunks summed in order.
pub(super) fn weight_backward_blocks(geo: &Geometry, xs: &[f32], gs: &[f32]) -> Vec<f32> {
    let (og, cg, kg) = (geo.og(), geo.cg(), geo.kg());
    let (kw, taps) = (geo.kernel[1], geo.kernel[0] * geo.kernel[1]);
    // Taps that meet no input anywhere keep their zeros.
    let mut dw = vec![0.0f32; geo.out_channels * kg];
    let (mut col, mut rows, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for group in 0..geo.groups {
        for b in geo.tap_blocks() {
            let (i, j) = (b.taps[0].start, b.taps[1].start);
            for (n0, count) in geo.block_chunks(geo.batch) {
                let n = count * b.positions();
                geo.block_patches(xs, (n0, count), group, &b, (&mut col, &mut offsets));
                geo.block_grad_rows(gs, (n0, count), group, &b, &mut rows);
                // dW_t (og × cg, at o·kg + c·k₁k₂) += G (og × n) · patchesᵀ (n × cg).
                matmul_add_strided(
                    og,
                    cg,
                    n,
                    (&mut dw[group * og * kg + i * kw + j..], (kg, taps)),
                    (&rows, (n, 1)),
                    (&col, (1, n)),
                    parallel(og * cg * n),
                );
            }
        }
    }
    dw
}

/// The input gradient, block by block: `patches_{b,t}' = V_tᵀ · G_b` for each block `b` and tap
/// `t` (V's tap columns read strided, as in [`forward_blocks`]), added back onto the input
/// positions each block read; chunks of [`BLOCK_SAMPLES`] samples in parallel.
pub(super) fn x_backward_blocks(geo: &Geometry, vs: &[f32], gs: &[f32]) -> Vec<f32> {
    let (og, cg, kg) = (geo.og(), geo.cg(), geo.kg());
    let (kw, taps) = (geo.kernel[1], geo.kernel[0] * geo.kernel[1]);
    let per_x = geo.channels * geo.height * geo.width;
    let blocks = geo.blocks();
    let chunk = geo.block_chunk(BLOCK_SAMPLES);
    let work = og * kg * geo.positions() * chunk;
    type Buffers = (Vec<f32>, Vec<f32>, Vec<usize>);
    let compute = |(rows, col, offsets): &mut Buffers, inner, (t, dx_t): (usize, &mut [f32])| {
        let (n0, count) = (t * chunk, dx_t.len() / per_x.max(1));
        let planes = cg * geo.height * geo.width;
        for group in 0..geo.groups {
            // This group's channels of each sample of the chunk.
            let mut dx: Vec<&mut [f32]> = dx_t
                .chunks_mut(per_x.max(1))
                .map(|dx_n| &mut dx_n[group * planes..][..planes])
                .collect();
            for b in blocks.iter().filter(|b| b.taps() > 0) {
                let n = count * b.positions();
                geo.block_grad_rows(gs, (n0, count), group, b, rows);
                col.resize(b.taps() * cg * n, 0.0);
                for (k, (i, j)) in geo.block_taps(b).enumerate() {
                    // col_t (cg × n) = V_tᵀ (cg × og; V[o][c][i][j] at o·kg + c·k₁k₂) · G_b.
                    let v_t = &vs[group * og * kg + i * kw + j..];
                    let dst = &mut col[k * cg * n..][..cg * n];
                    matmul(cg, n, og, dst, false, v_t, (taps, kg), rows, (n, 1), inner);
                }
                geo.block_col_add(col, b, cg, &mut dx, offsets);
            }
        }
    };
    chunked_output(geo.batch * per_x, per_x, chunk, work, compute)
}

#[cfg(test)]
mod tests {
    use super::super::{forward_im2col, output_size, weight_backward_im2col, x_backward_im2col};
    use super::*;
    use burn::backend::ops::ConvOptions;
    use proptest::prelude::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn geometry(
        (batch, cg, og, groups): (usize, usize, usize, usize),
        (h, w): (usize, usize),
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: [(usize, usize); 2],
    ) -> Option<Geometry> {
        let options = ConvOptions::new_with_padding(stride, padding, dilation, groups);
        let oh = output_size(h, kernel[0], &options, 0)?;
        let ow = output_size(w, kernel[1], &options, 1)?;
        let (cin, cout) = (cg * groups, og * groups);
        Geometry::new(
            [batch, cin, h, w],
            [cout, cg, kernel[0], kernel[1]],
            [batch, cout, oh, ow],
            &options,
        )
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())) * 8.0,
                "{what}[{i}]: {x} against {y}"
            );
        }
    }

    /// The blocks partition the output map, and each block's taps are exactly those a
    /// position-by-position bounds test finds inside the input, at every one of its positions.
    #[test]
    fn blocks_hold_exactly_the_taps_inside_the_input() {
        let cases = [
            ([4, 4], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
            ([1, 1], [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
            ([2, 2], [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)]),
            ([9, 8], [3, 2], [2, 1], [1, 2], [(1, 2), (0, 1)]),
            ([5, 5], [7, 7], [2, 2], [1, 1], [(3, 3), (3, 3)]),
            ([3, 6], [2, 3], [1, 3], [2, 1], [(4, 0), (0, 5)]),
        ];
        for (hw, k, s, d, pad) in cases {
            let geo = geometry((1, 1, 1, 1), (hw[0], hw[1]), k, s, d, pad).unwrap();
            let mut seen = vec![0usize; geo.positions()];
            for b in geo.blocks() {
                for oh in b.out[0].clone() {
                    for ow in b.out[1].clone() {
                        seen[oh * geo.out[1] + ow] += 1;
                        for i in 0..k[0] {
                            for j in 0..k[1] {
                                let ih = (oh * s[0] + i * d[0]) as isize - pad[0].0 as isize;
                                let iw = (ow * s[1] + j * d[1]) as isize - pad[1].0 as isize;
                                let inside = (0..hw[0] as isize).contains(&ih)
                                    && (0..hw[1] as isize).contains(&iw);
                                let listed = b.taps[0].contains(&i) && b.taps[1].contains(&j);
                                assert_eq!(
                                    inside, listed,
                                    "{hw:?} {k:?}: ({oh}, {ow}) tap ({i}, {j})"
                                );
                            }
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{hw:?} {k:?}: {seen:?}");
        }
    }

    /// Which layers go block by block: ResNet-18's 2 × 2 and 1 × 1 padded maps do (the weight
    /// gradient only on 1 × 1), its 4 × 4 maps, the small CNN's large ones and unpadded 1 × 1
    /// convolutions do not.
    #[test]
    fn blocked_only_where_padding_fills_the_patches() {
        let conv = |hw: usize, k: usize, s: usize, p: usize| {
            geometry(
                (32, 64, 64, 1),
                (hw, hw),
                [k, k],
                [s, s],
                [1, 1],
                [(p, p), (p, p)],
            )
            .unwrap()
            .blocked()
        };
        assert!(!conv(4, 3, 1, 1));
        assert!(!conv(4, 3, 2, 1));
        assert!(conv(2, 3, 1, 1));
        assert!(conv(2, 3, 2, 1));
        assert!(conv(1, 3, 1, 1));
        assert!(!conv(28, 5, 1, 2));
        assert!(!conv(14, 5, 1, 2));
        assert!(!conv(4, 1, 2, 0));
        assert!(!conv(2, 1, 1, 0));
        let weight = |hw: usize, s: usize| {
            geometry(
                (32, 64, 64, 1),
                (hw, hw),
                [3, 3],
                [s, s],
                [1, 1],
                [(1, 1), (1, 1)],
            )
            .unwrap()
            .weight_blocked()
        };
        assert!(weight(1, 1));
        assert!(!weight(2, 1));
        assert!(!weight(2, 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Forward, input gradient and weight gradient block by block equal the im2col ones (to
        /// rounding: the sums skip the padding's zeros) on random geometries.
        #[test]
        fn blocks_equal_im2col(
            (batch, cg, og, groups) in (1usize..5, 1usize..4, 1usize..4, 1usize..3),
            (h, w) in (1usize..8, 1usize..8),
            kernel in [1usize..5, 1usize..5],
            stride in [1usize..3, 1usize..3],
            dilation in [1usize..3, 1usize..3],
            pads in [0usize..4, 0usize..4, 0usize..4, 0usize..4],
            seed in 0u64..1000,
        ) {
            let padding = [(pads[0], pads[1]), (pads[2], pads[3])];
            let geo = geometry((batch, cg, og, groups), (h, w), kernel, stride, dilation, padding);
            prop_assume!(geo.is_some());
            let geo = geo.unwrap();
            let x = values(batch * cg * groups * h * w, seed);
            let wt = values(og * groups * geo.kg(), seed + 1);
            let g = values(batch * og * groups * geo.positions(), seed + 2);
            let b = values(og * groups, seed + 3);
            assert_close(
                "forward",
                &forward_blocks(&geo, &x, &wt, Some(&b)),
                &forward_im2col(&geo, &x, &wt, Some(&b)),
            );
            assert_close("dx", &x_backward_blocks(&geo, &wt, &g), &x_backward_im2col(&geo, &wt, &g));
            assert_close(
                "dW",
                &weight_backward_blocks(&geo, &x, &g),
                &weight_backward_im2col(&geo, &x, &g),
            );
        }
    }
}
