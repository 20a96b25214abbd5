//! Patch lines narrower than a vector, copied and added with masked vector moves.
//!
//! A narrow output (fewer than [`LINE_MIN`](super::LINE_MIN) positions a line: the small CNN's
//! 14 × 14 layer, ResNet-18's 8 × 8 and 4 × 4 maps at 32 × 32) reads every patch line from
//! zero-bordered planes ([`Geometry::pad_into`](super::Geometry::pad_into)). Copied as slices, a
//! line of 14 values became an 8-wide move and six scalar ones, and each patch row divided its
//! index into channel and tap on the way: `perf` put these copies at a fifth of the small CNN's
//! training step. On AVX-512 each line is now one masked load and one masked store (the scatter
//! of the input gradient: two masked loads, an add and a masked store); on AVX2 two vectors that
//! overlap where the width is not a multiple of 8; and the rows' starts are counted, not
//! divided.

#[cfg(target_arch = "x86_64")]
use crate::fused::{SimdLevel, simd_level};

/// Where the lines of each patch row start in the source, and their shape: row `r`'s line `l`
/// is `width` values from `starts[r] + l·pitch`.
pub(super) struct Lines<'a> {
    pub(super) starts: &'a [usize],
    pub(super) count: usize,
    pub(super) pitch: usize,
    pub(super) width: usize,
}

impl Lines<'_> {
    /// Panics unless every line lies inside `planes` and every row's `count·width` values from
    /// `offset` inside `col` (rows `ld` apart): what makes the unchecked moves below sound.
    fn check(&self, col: usize, ld: usize, offset: usize, planes: usize) {
        assert!(self.width >= 1 && self.width <= 16);
        let Some(last) = self.starts.iter().max() else {
            return;
        };
        if self.count == 0 {
            return;
        }
        assert!(last + (self.count - 1) * self.pitch + self.width <= planes);
        assert!((self.starts.len() - 1) * ld + offset + self.count * self.width <= col);
    }
}

/// Row `r` of `col` (`ld` apart) at `offset..`: its lines one after another, each copied from
/// `planes` where `lines` says.
pub(super) fn gather(col: &mut [f32], ld: usize, offset: usize, planes: &[f32], lines: &Lines) {
    lines.check(col.len(), ld, offset, planes.len());
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU has AVX-512F; `check` keeps every move inside the two slices.
        SimdLevel::V4 => unsafe { gather_v4(col.as_mut_ptr(), ld, offset, planes.as_ptr(), lines) },
        // SAFETY: the CPU has AVX2; `check` keeps every move inside the two slices.
        SimdLevel::V3 => unsafe { gather_v3(col.as_mut_ptr(), ld, offset, planes.as_ptr(), lines) },
        SimdLevel::Baseline => gather_portable(col, ld, offset, planes, lines),
    }
    #[cfg(not(target_arch = "x86_64"))]
    gather_portable(col, ld, offset, planes, lines);
}

/// [`gather`] without masked moves (AVX2 or baseline x86-64, other architectures).
fn gather_portable(col: &mut [f32], ld: usize, offset: usize, planes: &[f32], lines: &Lines) {
    crate::fused::with_best_simd(
        #[inline(always)]
        || {
            for (r, &start) in lines.starts.iter().enumerate() {
                let row = &mut col[r * ld + offset..][..lines.count * lines.width];
                for (l, line) in row.chunks_exact_mut(lines.width).enumerate() {
                    let src = &planes[start + l * lines.pitch..][..lines.width];
                    line.copy_from_slice(src);
                }
            }
        },
    );
}

/// The inverse of [`gather`]: each line of each row of `col` added onto `planes` where `lines`
/// says, rows and lines in order (the same sums in the same order on every path).
pub(super) fn scatter_add(
    col: &[f32],
    ld: usize,
    offset: usize,
    planes: &mut [f32],
    lines: &Lines,
) {
    lines.check(col.len(), ld, offset, planes.len());
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU has AVX-512F; `check` keeps every move inside the two slices.
        SimdLevel::V4 => unsafe {
            scatter_add_v4(col.as_ptr(), ld, offset, planes.as_mut_ptr(), lines)
        },
        // SAFETY: the CPU has AVX2; `check` keeps every move inside the two slices.
        SimdLevel::V3 => unsafe {
            scatter_add_v3(col.as_ptr(), ld, offset, planes.as_mut_ptr(), lines)
        },
        SimdLevel::Baseline => scatter_add_portable(col, ld, offset, planes, lines),
    }
    #[cfg(not(target_arch = "x86_64"))]
    scatter_add_portable(col, ld, offset, planes, lines);
}

/// [`scatter_add`] without masked moves (AVX2 or baseline x86-64, other architectures).
fn scatter_add_portable(col: &[f32], ld: usize, offset: usize, planes: &mut [f32], lines: &Lines) {
    crate::fused::with_best_simd(
        #[inline(always)]
        || {
            for (r, &start) in lines.starts.iter().enumerate() {
                let row = &col[r * ld + offset..][..lines.count * lines.width];
                for (l, line) in row.chunks_exact(lines.width).enumerate() {
                    let dst = &mut planes[start + l * lines.pitch..][..lines.width];
                    dst.iter_mut().zip(line).for_each(|(d, v)| *d += v);
                }
            }
        },
    );
}

#[cfg(target_arch = "x86_64")]
fn mask(width: usize) -> u16 {
    (((1u32) << width) - 1) as u16
}

/// # Safety
/// The CPU has AVX-512F, and `lines.check` passed for `col` and `planes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_v4(col: *mut f32, ld: usize, offset: usize, planes: *const f32, lines: &Lines) {
    use core::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_maskz_loadu_ps};
    let k = mask(lines.width);
    for (r, &start) in lines.starts.iter().enumerate() {
        // SAFETY (all moves): in bounds by `check`; masked-off lanes are neither read nor written.
        let dst = unsafe { col.add(r * ld + offset) };
        for l in 0..lines.count {
            unsafe {
                let v = _mm512_maskz_loadu_ps(k, planes.add(start + l * lines.pitch));
                _mm512_mask_storeu_ps(dst.add(l * lines.width), k, v);
            }
        }
    }
}

/// # Safety
/// The CPU has AVX-512F, and `lines.check` passed for `col` and `planes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_add_v4(
    col: *const f32,
    ld: usize,
    offset: usize,
    planes: *mut f32,
    lines: &Lines,
) {
    use core::arch::x86_64::{_mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps};
    let k = mask(lines.width);
    for (r, &start) in lines.starts.iter().enumerate() {
        // SAFETY (all moves): in bounds by `check`; masked-off lanes are neither read nor written.
        let src = unsafe { col.add(r * ld + offset) };
        for l in 0..lines.count {
            unsafe {
                let dst = planes.add(start + l * lines.pitch);
                let v = _mm512_maskz_loadu_ps(k, src.add(l * lines.width));
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dst), v);
                _mm512_mask_storeu_ps(dst, k, sum);
            }
        }
    }
}

/// A line of `width ≤ 16` values from `src` to `dst` (added onto it if `add`) in two vectors
/// that overlap where the width is not a whole number of vectors: without masked moves (AVX2),
/// the overlapping lanes are written twice with the same value, and nothing outside the line is
/// read or written.
///
/// # Safety
/// The CPU has AVX2; `width` values are readable at `src` and readable and writable at `dst`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn line_v3(dst: *mut f32, src: *const f32, width: usize, add: bool) {
    use core::arch::x86_64::{
        _mm_add_ps, _mm_loadu_ps, _mm_storeu_ps, _mm256_add_ps, _mm256_loadu_ps, _mm256_storeu_ps,
    };
    // SAFETY (all moves): inside the `width` values, by the contract above.
    unsafe {
        if width >= 8 {
            let (mut head, mut tail) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(width - 8)));
            if add {
                head = _mm256_add_ps(_mm256_loadu_ps(dst), head);
                tail = _mm256_add_ps(_mm256_loadu_ps(dst.add(width - 8)), tail);
            }
            // Both formed before either is stored: an overlapping lane gets one value twice.
            _mm256_storeu_ps(dst, head);
            _mm256_storeu_ps(dst.add(width - 8), tail);
        } else if width >= 4 {
            let (mut head, mut tail) = (_mm_loadu_ps(src), _mm_loadu_ps(src.add(width - 4)));
            if add {
                head = _mm_add_ps(_mm_loadu_ps(dst), head);
                tail = _mm_add_ps(_mm_loadu_ps(dst.add(width - 4)), tail);
            }
            _mm_storeu_ps(dst, head);
            _mm_storeu_ps(dst.add(width - 4), tail);
        } else {
            for m in 0..width {
                *dst.add(m) = if add {
                    *dst.add(m) + *src.add(m)
                } else {
                    *src.add(m)
                };
            }
        }
    }
}

/// # Safety
/// The CPU has AVX2, and `lines.check` passed for `col` and `planes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_v3(col: *mut f32, ld: usize, offset: usize, planes: *const f32, lines: &Lines) {
    for (r, &start) in lines.starts.iter().enumerate() {
        for l in 0..lines.count {
            // SAFETY: both lines in bounds by `check`.
            unsafe {
                let dst = col.add(r * ld + offset + l * lines.width);
                line_v3(dst, planes.add(start + l * lines.pitch), lines.width, false);
            }
        }
    }
}

/// # Safety
/// The CPU has AVX2, and `lines.check` passed for `col` and `planes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scatter_add_v3(
    col: *const f32,
    ld: usize,
    offset: usize,
    planes: *mut f32,
    lines: &Lines,
) {
    for (r, &start) in lines.starts.iter().enumerate() {
        for l in 0..lines.count {
            // SAFETY: both lines in bounds by `check`.
            unsafe {
                let src = col.add(r * ld + offset + l * lines.width);
                line_v3(planes.add(start + l * lines.pitch), src, lines.width, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that are distinct and exact in `f32`, so that sums compare bit for bit.
    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + salt * 13) % 97) as f32 - 40.0)
            .collect()
    }

    /// Every width up to 16, lines overlapping in the source (pitch below the width) and not,
    /// rows padded in `col`: the dispatched path (masked moves on AVX-512) and the portable one
    /// against an index-by-index loop.
    #[test]
    fn masked_and_portable_lines_match_an_index_loop() {
        for width in 1..=16 {
            for (count, pitch) in [(1, 3), (3, width + 2), (5, width / 2 + 1)] {
                let starts = [0, 5, 2, 17, 9];
                let lines = Lines {
                    starts: &starts,
                    count,
                    pitch,
                    width,
                };
                let (ld, offset) = (count * width + 3, 2);
                let planes_len = 17 + (count - 1) * pitch + width + 4;
                let planes = values(planes_len, width);
                let col_len = (starts.len() - 1) * ld + offset + count * width + 1;
                let mut expected = vec![-1.0; col_len];
                for (r, &start) in starts.iter().enumerate() {
                    for l in 0..count {
                        for m in 0..width {
                            expected[r * ld + offset + l * width + m] =
                                planes[start + l * pitch + m];
                        }
                    }
                }
                let (mut a, mut b) = (vec![-1.0; col_len], vec![-1.0; col_len]);
                gather(&mut a, ld, offset, &planes, &lines);
                gather_portable(&mut b, ld, offset, &planes, &lines);
                assert_eq!(a, expected, "gather, width {width}, count {count}");
                assert_eq!(b, expected, "portable gather, width {width}, count {count}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut c = vec![-1.0; col_len];
                    // SAFETY: AVX2 is present; `check` passes (the dispatched call above).
                    unsafe { gather_v3(c.as_mut_ptr(), ld, offset, planes.as_ptr(), &lines) };
                    assert_eq!(c, expected, "AVX2 gather, width {width}, count {count}");
                }

                let col = values(col_len, width + 1);
                let mut expected = values(planes_len, 3);
                for (r, &start) in starts.iter().enumerate() {
                    for l in 0..count {
                        for m in 0..width {
                            expected[start + l * pitch + m] += col[r * ld + offset + l * width + m];
                        }
                    }
                }
                let (mut a, mut b) = (values(planes_len, 3), values(planes_len, 3));
                scatter_add(&col, ld, offset, &mut a, &lines);
                scatter_add_portable(&col, ld, offset, &mut b, &lines);
                assert_eq!(a, expected, "scatter, width {width}, count {count}");
                assert_eq!(
                    b, expected,
                    "portable scatter, width {width}, count {count}"
                );
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut c = values(planes_len, 3);
                    // SAFETY: AVX2 is present; `check` passes (the dispatched call above).
                    unsafe { scatter_add_v3(col.as_ptr(), ld, offset, c.as_mut_ptr(), &lines) };
                    assert_eq!(c, expected, "AVX2 scatter, width {width}, count {count}");
                }
            }
        }
    }

    #[test]
    #[should_panic]
    fn a_line_past_the_planes_is_refused() {
        let lines = Lines {
            starts: &[0, 4],
            count: 2,
            pitch: 4,
            width: 4,
        };
        let mut col = vec![0.0; 16];
        gather(&mut col, 8, 0, &[0.0; 11], &lines);
    }
}
