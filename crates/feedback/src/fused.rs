//! `V` in one pass over `W` on Flex.
//!
//! Through burn's generic ops, `V = s·M∘sign(W)` costs a chain of separate elementwise kernels
//! (sign, multiply, two squared norms, divide, scale), each allocating a weight-sized tensor, and
//! brSF's `M` comes from burn's sequential generator (about 20 ns per value here): on a
//! 1024 × 1024 linear layer that is 7 % (uSF) to 50 % (brSF) on top of backpropagation's backward.
//! Here each element is read once and `V₀` written once while both norms accumulate (the scale is
//! returned apart, for the backward to apply to whichever of `V` and the input gradient is
//! smaller); brSF's magnitudes come from a counter-based stream keyed by one draw of the
//! thread's random scope (or the device generator), so the seed fixes them and the chunks can run
//! in parallel. Uniform magnitudes (the default) hash each position with 32-bit multiplies, which
//! vectorise twice as wide as 64-bit ones and exist on AVX2 (with its sums, the fill of the
//! 64-bit SplitMix64 pair it replaced, two 24-bit values per hash, took 0.46–0.97 ns per value
//! here, this one 0.32–0.43 ns); normal ones keep SplitMix64 (two uniforms per Box–Muller draw).
//! Chunks have a fixed size and their sums are added in order: the result does not depend on the
//! number of threads.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{Distribution, FloatDType, Shape, TensorData};
use core::mem::MaybeUninit;

use rayon::prelude::*;

use crate::backend::{FeedbackForm, FeedbackKernel, ScaleKind};
use crate::layers::common::sign;
use crate::splitmix64;

/// Elements per parallel work item (fixed, so sums are reproducible).
const CHUNK: usize = 1 << 14;

/// The random magnitudes of brSF, element by element.
#[derive(Clone, Copy)]
pub(crate) enum Magnitude {
    Uniform { low: f32, width: f32 },
    Normal { mean: f32, std: f32 },
}

impl Magnitude {
    fn new(distribution: Distribution) -> Option<Self> {
        match distribution {
            Distribution::Default => Some(Self::Uniform {
                low: 0.0,
                width: 1.0,
            }),
            Distribution::Uniform(low, high) => Some(Self::Uniform {
                low: low as f32,
                width: (high - low) as f32,
            }),
            Distribution::Normal(mean, std) => Some(Self::Normal {
                mean: mean as f32,
                std: std as f32,
            }),
            _ => None,
        }
    }

    /// The value at position `index` of the stream `key`.
    #[inline(always)]
    fn at(self, key: u64, index: usize) -> f32 {
        match self {
            Self::Uniform { low, width } => low + width * uniform_unit(key, index),
            Self::Normal { mean, std } => {
                let bits = hash(key, index as u64);
                // Box–Muller on the two halves of the hash; 1 − u avoids ln(0).
                let u1 = 1.0 - unit(bits);
                let u2 = unit(bits << 24);
                mean + std * (-2.0 * u1.ln()).sqrt() * (core::f32::consts::TAU * u2).cos()
            }
        }
    }
}

/// Hash `i` of the stream `key`: 64 random bits.
#[inline(always)]
fn hash(key: u64, i: u64) -> u64 {
    splitmix64(key ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// 24 random bits (`bits >> 40`) as a value in [0, 1): every value is exactly representable.
/// Through i32, which converts to f32 in one instruction (u64 does not).
#[inline(always)]
fn unit(bits: u64) -> f32 {
    ((bits >> 40) as i32) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// lowbias32 (C. Wellons' integer hash search): a bijection of `u32` whose output bits each flip
/// with probability close to ½ when any input bit flips.
#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The constants of the uniform stream `key` for positions whose top 32 bits are `high`: an odd
/// multiplier of the position and a word it is xor-ed with, both from the whole (mixed) key, so
/// two keys differ by more than a reordering of the same values.
#[inline(always)]
fn stream32(key: u64, high: u32) -> (u32, u32) {
    let mixed = splitmix64(key);
    let high = mix32(high.wrapping_mul(0x9e37_79b9));
    ((mixed as u32) | 1, (mixed >> 32) as u32 ^ high)
}

/// The top 24 bits of `bits` as a value in [0, 1): every value is exactly representable.
#[inline(always)]
fn unit32(bits: u32) -> f32 {
    ((bits >> 8) as i32) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The uniform value in [0, 1) at the position whose low 32 bits are `low`, on the stream
/// `(a, k)` of [`stream32`]: the top 24 bits of `mix32(a·low ^ k)`.
#[inline(always)]
fn unit_at((a, k): (u32, u32), low: u32) -> f32 {
    unit32(mix32(low.wrapping_mul(a) ^ k))
}

/// The uniform value in [0, 1) at position `index` of the stream `key`.
#[inline(always)]
fn uniform_unit(key: u64, index: usize) -> f32 {
    unit_at(stream32(key, (index as u64 >> 32) as u32), index as u32)
}

/// `fill` run on each part of `start..start + dst.len()` whose positions share their top 32
/// bits (the uniform stream's constants change there), the sums added.
fn by_high_word(
    dst: &mut [MaybeUninit<f32>],
    w: &[f32],
    start: usize,
    mut fill: impl FnMut(&mut [MaybeUninit<f32>], &[f32], usize) -> (f64, f64),
) -> (f64, f64) {
    let (mut sums, mut at) = ((0.0, 0.0), 0);
    while at < dst.len() {
        let position = start + at;
        let next = ((position as u64 >> 32) + 1) << 32;
        let end = dst
            .len()
            .min((next - start as u64).try_into().unwrap_or(usize::MAX));
        let (ww, vv) = fill(&mut dst[at..end], &w[at..end], position);
        sums = (sums.0 + ww, sums.1 + vv);
        at = end;
    }
    sums
}

/// A key for brSF's stream: from this thread's [`RandomScope`](crate::random::RandomScope) when
/// one is active, else from the device generator (two uniform draws, as the scope draws them).
fn draw_key() -> u64 {
    crate::random::scoped_key().unwrap_or_else(|| {
        let _guard = crate::random::DeviceRngGuard::acquire();
        let draw = Flex::float_random(
            Shape::new([2]),
            Distribution::Default,
            &Default::default(),
            FloatDType::F32,
        );
        let values = draw.into_data();
        let values = values.as_slice::<f32>().expect("f32 draw");
        let bits = (u64::from(values[0].to_bits()) << 32) | u64::from(values[1].to_bits());
        splitmix64(bits)
    })
}

/// `Σ x²` of a slice in `SQUARE_LANES` independent lanes (added in `f64` at the end). Each sum
/// has a loop of its own: with the two sums of a fill in one loop, or interleaved with its
/// stores, LLVM paired `W` and `V₀` lane by lane into two-wide vectors built from scalar
/// shuffles, and the fill ran ten times slower. On x86-64 the lanes are explicit AVX-512 or AVX2
/// registers: left to LLVM, they stayed in registers in some callers and went through the stack
/// at every block in others (brSF's fill: `Σ x²` at 0.17 ns per value instead of 0.03–0.04), which
/// moved with unrelated code. The three versions add in the same order: the same bits.
#[inline(always)]
fn squares(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA.
        SimdLevel::V4 => return unsafe { squares_avx512(x) },
        // SAFETY: the CPU has AVX2 and FMA.
        SimdLevel::V3 => return unsafe { squares_avx2(x) },
        SimdLevel::Baseline => {}
    }
    squares_portable(x)
}

/// [`squares`] in portable code.
#[inline(always)]
fn squares_portable(x: &[f32]) -> f64 {
    let mut lanes = [0.0f32; SQUARE_LANES];
    let full = x.len() / SQUARE_LANES * SQUARE_LANES;
    for block in x[..full].chunks_exact(SQUARE_LANES) {
        for lane in 0..SQUARE_LANES {
            lanes[lane] += block[lane] * block[lane];
        }
    }
    // Halved down to eight lanes before the scalar f64 sum: a fill of one row of a piece
    // (`flex_linear`) is a few hundred values, where 64 scalar additions would show.
    let mut width = SQUARE_LANES;
    while width > 8 {
        width /= 2;
        for lane in 0..width {
            lanes[lane] += lanes[lane + width];
        }
    }
    eight_lanes(&lanes[..8], &x[full..])
}

/// The f64 total of eight lanes and the squares of the values after the last whole block.
#[inline(always)]
fn eight_lanes(lanes: &[f32], tail: &[f32]) -> f64 {
    let tail: f32 = tail.iter().map(|v| v * v).sum();
    lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}

/// [`squares`] with lanes `16j..16j + 16` in AVX-512 register `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn squares_avx512(x: &[f32]) -> f64 {
    use core::arch::x86_64::*;
    let full = x.len() / SQUARE_LANES * SQUARE_LANES;
    let mut a = [_mm512_setzero_ps(); 4];
    for block in x[..full].chunks_exact(SQUARE_LANES) {
        for (j, a) in a.iter_mut().enumerate() {
            // SAFETY: `block` holds 64 values, so 16 from `16j` are in bounds.
            let v = unsafe { _mm512_loadu_ps(block.as_ptr().add(16 * j)) };
            *a = _mm512_add_ps(*a, _mm512_mul_ps(v, v));
        }
    }
    // 64 → 32 → 16 → 8 lanes, as the portable halving.
    let (a0, a1) = (_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    let a0 = _mm512_add_ps(a0, a1);
    let low = _mm512_castps512_ps256(a0);
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a0)));
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(low, high)) };
    eight_lanes(&lanes, &x[full..])
}

/// [`squares`] with lanes `8j..8j + 8` in AVX register `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn squares_avx2(x: &[f32]) -> f64 {
    use core::arch::x86_64::*;
    let full = x.len() / SQUARE_LANES * SQUARE_LANES;
    let mut a = [_mm256_setzero_ps(); 8];
    for block in x[..full].chunks_exact(SQUARE_LANES) {
        for (j, a) in a.iter_mut().enumerate() {
            // SAFETY: `block` holds 64 values, so 8 from `8j` are in bounds.
            let v = unsafe { _mm256_loadu_ps(block.as_ptr().add(8 * j)) };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(v, v));
        }
    }
    // 64 → 32 → 16 → 8 lanes, as the portable halving.
    for j in 0..4 {
        a[j] = _mm256_add_ps(a[j], a[j + 4]);
    }
    for j in 0..2 {
        a[j] = _mm256_add_ps(a[j], a[j + 2]);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[0], a[1])) };
    eight_lanes(&lanes, &x[full..])
}

/// Lanes of [`squares`]: four AVX-512 vectors (eight AVX2 ones), so that the additions of one
/// lane do not wait on each other.
const SQUARE_LANES: usize = 64;

/// `(Σ W², Σ V₀²)` of a filled chunk when `NORMS` (read back while in the first-level cache),
/// else zeros.
#[inline(always)]
fn chunk_norms<const NORMS: bool>(w: &[f32], v: &[MaybeUninit<f32>]) -> (f64, f64) {
    if !NORMS {
        return (0.0, 0.0);
    }
    // SAFETY: the caller filled every value of `v`.
    let v = unsafe { &*(v as *const [MaybeUninit<f32>] as *const [f32]) };
    (squares(w), squares(v))
}

/// Writes `V₀ = v0(index, w, a)` for one chunk (`a` is the auxiliary tensor's chunk, or the
/// weight's again when there is none); returns the chunk's `(Σ W², Σ V₀²)` when `NORMS`.
#[inline(always)]
fn fill<const NORMS: bool>(
    dst: &mut [MaybeUninit<f32>],
    w: &[f32],
    a: &[f32],
    start: usize,
    v0: impl Fn(usize, f32, f32) -> f32,
) -> (f64, f64) {
    let (w, a) = (&w[..dst.len()], &a[..dst.len()]);
    // Zipped, not indexed: indexing `w[i]` and `a[i]` left LLVM a scalar epilogue of up to 64
    // values after every vector loop, which on a piece's row of 576 values (`flex_conv`'s
    // slices) took more time than the 512 vectorised ones.
    for (i, ((d, &w), &a)) in dst.iter_mut().zip(w).zip(a).enumerate() {
        *d = MaybeUninit::new(v0(start + i, w, a));
    }
    chunk_norms::<NORMS>(w, dst)
}

/// Runs `f` compiled for AVX-512 or AVX2 + FMA where the CPU has them (`f` is inlined into the
/// clone, so the clone must be what the caller's loop ends up in): the crate itself is built for baseline x86-64 (SSE2), where neither the sign selects
/// nor brSF's 64-bit hash vectorise well.
#[inline(always)]
pub(crate) fn with_best_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
        fn v4<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match simd_level() {
            // SAFETY: the CPU has every feature `v4` is compiled for.
            SimdLevel::V4 => return unsafe { v4(f) },
            // SAFETY: the CPU has every feature `v3` is compiled for.
            SimdLevel::V3 => return unsafe { v3(f) },
            SimdLevel::Baseline => {}
        }
    }
    f()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SimdLevel {
    Baseline,
    V3,
    V4,
}

/// The environment variable that caps the instruction set of signsym's own CPU loops: `avx2`
/// or `baseline` (anything else: no cap). With a build without `x86-v4` (whose `gemm` then runs
/// its AVX2 kernels) it stands in for a CPU without AVX-512 when measuring
/// (docs/performance.md). It never raises the level above what the CPU has.
pub(crate) const MAX_SIMD_VAR: &str = "SIGNSYM_MAX_SIMD";

/// The widest instruction set this CPU has for signsym's loops, capped by [`MAX_SIMD_VAR`];
/// decided once per process.
pub(crate) fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var(MAX_SIMD_VAR).ok();
        detected_simd_level().min(simd_cap(cap.as_deref()))
    })
}

/// The cap a value of [`MAX_SIMD_VAR`] sets.
fn simd_cap(value: Option<&str>) -> SimdLevel {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("avx2") => SimdLevel::V3,
        Some("baseline") => SimdLevel::Baseline,
        _ => SimdLevel::V4,
    }
}

fn detected_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
            return SimdLevel::V4;
        }
        if has!("avx2") && has!("fma") {
            return SimdLevel::V3;
        }
    }
    SimdLevel::Baseline
}

/// [`fill`] compiled for AVX-512 or AVX2 + FMA where the CPU has them (a closure through
/// [`with_best_simd`] does not get brSF's hash vectorised; a generic function does).
#[inline(always)]
fn fill_best<const NORMS: bool, F: Fn(usize, f32, f32) -> f32>(
    dst: &mut [MaybeUninit<f32>],
    w: &[f32],
    a: &[f32],
    start: usize,
    v0: F,
) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
        fn v4<const N: bool, F: Fn(usize, f32, f32) -> f32>(
            dst: &mut [MaybeUninit<f32>],
            w: &[f32],
            a: &[f32],
            start: usize,
            v0: F,
        ) -> (f64, f64) {
            fill::<N>(dst, w, a, start, v0)
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<const N: bool, F: Fn(usize, f32, f32) -> f32>(
            dst: &mut [MaybeUninit<f32>],
            w: &[f32],
            a: &[f32],
            start: usize,
            v0: F,
        ) -> (f64, f64) {
            fill::<N>(dst, w, a, start, v0)
        }
        match simd_level() {
            // SAFETY: the CPU has every feature `v4` is compiled for.
            SimdLevel::V4 => return unsafe { v4::<NORMS, F>(dst, w, a, start, v0) },
            // SAFETY: the CPU has every feature `v3` is compiled for.
            SimdLevel::V3 => return unsafe { v3::<NORMS, F>(dst, w, a, start, v0) },
            SimdLevel::Baseline => {}
        }
    }
    fill::<NORMS>(dst, w, a, start, v0)
}

/// How each element of `V₀` is formed from `W` (and the auxiliary tensor), resolved once per
/// backward: brSF's stream key is drawn here, so every part of one `V₀` uses the same one.
#[derive(Clone, Copy)]
pub(crate) enum Formation {
    /// `V₀ = W`.
    Weight,
    /// `V₀ = aux`.
    Given,
    /// `V₀ = sign(W)`.
    Sign,
    /// `V₀ = M∘sign(W)`, `M` the auxiliary tensor.
    MaskedSign,
    /// `V₀ = (low + width·u)·sign(W)`, `u` uniform from the stream `key`, a 32-bit hash each.
    Uniform { key: u64, low: f32, width: f32 },
    /// `V₀ = m·sign(W)`, `m` from the stream `key`, one value per hash.
    Random { key: u64, magnitude: Magnitude },
}

impl Formation {
    /// The formation of `form`, drawing brSF's key (from the thread's random scope or the
    /// device generator); `None` for a distribution without a counter-based sampler.
    pub(crate) fn new(form: FeedbackForm) -> Option<Self> {
        Some(match form {
            FeedbackForm::Weight => Self::Weight,
            FeedbackForm::Given => Self::Given,
            FeedbackForm::Sign => Self::Sign,
            FeedbackForm::MaskedSign => Self::MaskedSign,
            FeedbackForm::RandomMaskedSign(d) => match Magnitude::new(d)? {
                Magnitude::Uniform { low, width } => Self::Uniform {
                    key: draw_key(),
                    low,
                    width,
                },
                magnitude => Self::Random {
                    key: draw_key(),
                    magnitude,
                },
            },
        })
    }

    /// What a kernel that forms `V₀` beside its products needs for `kernel` on the weight's
    /// values `w`: the auxiliary tensor's values (`w` again where the kernel reads none), the
    /// formation, and whether the norms are summed. `None` for a missing or mis-sized auxiliary
    /// tensor, or a distribution without a counter-based sampler. brSF draws its key here, so a
    /// caller checks everything else first: a `None` after it would have the fallback draw again.
    pub(crate) fn for_kernel<'a>(
        kernel: &FeedbackKernel,
        w: &'a [f32],
        aux: Option<&'a FlexTensor>,
    ) -> Option<(&'a [f32], Self, bool)> {
        let aux = match kernel.needs_aux() {
            true => Some(aux?.as_slice::<f32>()?).filter(|a| a.len() == w.len()),
            false => Some(w),
        }?;
        let formation = Self::new(kernel.form)?;
        Some((aux, formation, kernel.scale == ScaleKind::MatchNorm))
    }

    /// Asks for the cache lines of `W`'s values in `range`, and of the auxiliary tensor's where
    /// the formation reads it (`aux` as [`for_kernel`](Self::for_kernel) returns it), a few rows
    /// ([`AHEAD`]) before [`fill`](Self::fill) or a read in place needs them.
    #[inline(always)]
    pub(crate) fn prefetch(self, w: &[f32], aux: &[f32], range: core::ops::Range<usize>) {
        prefetch(&w[range.clone()]);
        if self.needs_aux() {
            prefetch(&aux[range]);
        }
    }

    /// Whether [`fill`](Self::fill) reads the auxiliary tensor.
    pub(crate) fn needs_aux(self) -> bool {
        matches!(self, Self::Given | Self::MaskedSign)
    }

    /// `V₀` as a tensor already held, where it is one: `W` itself, or the auxiliary tensor
    /// (`aux`, the same length as `w`).
    pub(crate) fn in_place<'a>(self, w: &'a [f32], aux: &'a [f32]) -> Option<&'a [f32]> {
        match self {
            Self::Weight => Some(w),
            Self::Given => Some(aux),
            _ => None,
        }
    }

    /// Writes `V₀` at the flat positions `start..start + dst.len()` of `W` (`w` and `aux` hold
    /// those positions of `W` and the auxiliary tensor; `aux` is required where
    /// [`needs_aux`](Self::needs_aux)); returns `(Σ W², Σ V₀²)` over them when `norms`, else
    /// zeros. The values depend on the flat positions only, not on how a tensor is cut.
    pub(crate) fn fill(
        self,
        norms: bool,
        dst: &mut [MaybeUninit<f32>],
        w: &[f32],
        aux: Option<&[f32]>,
        start: usize,
    ) -> (f64, f64) {
        let a = match (self.needs_aux(), aux) {
            (true, Some(a)) => a,
            (true, None) => panic!("the feedback formation needs its auxiliary tensor"),
            (false, _) => w,
        };
        macro_rules! fill_with {
            ($f:expr) => {
                if norms {
                    fill_best::<true, _>(dst, w, a, start, $f)
                } else {
                    fill_best::<false, _>(dst, w, a, start, $f)
                }
            };
        }
        match self {
            Self::Weight => fill_with!(|_, w, _| w),
            Self::Given => fill_with!(|_, _, a| a),
            Self::Sign => fill_with!(|_, w, _| sign(w)),
            Self::MaskedSign => fill_with!(|_, w, a| a * sign(w)),
            Self::Uniform { key, low, width } => by_high_word(dst, w, start, |dst, w, start| {
                let stream = stream32(key, (start as u64 >> 32) as u32);
                // Indices from 0, the position's low word added in 32 bits: `start + i` in 64-bit
                // lanes, truncated, made the pass a fifth slower.
                let first = start as u32;
                let v0 = |i: usize, w: f32, _| {
                    (low + width * unit_at(stream, first.wrapping_add(i as u32))) * sign(w)
                };
                if norms {
                    fill_best::<true, _>(dst, w, w, 0, v0)
                } else {
                    fill_best::<false, _>(dst, w, w, 0, v0)
                }
            }),
            Self::Random { key, magnitude } => fill_with!(|i, w, _| magnitude.at(key, i) * sign(w)),
        }
    }
}

/// How many rows of `W` (and `M` or `B`) ahead of the fill the kernels that form `V₀` beside
/// their products (`flex_linear`, `flex_conv::formed`) ask for their cache lines
/// ([`Formation::prefetch`]). Measured on the linear layer: asking for a whole piece's rows at
/// once (64 rows, up to 128 KiB) while its predecessor's product ran left the fill as slow as
/// without prefetching (1.2–1.6 ms of CPU per backward of the 1024² layer for FA, against
/// 0.46–0.57 ms with this, and BP's copy 0.6–0.7 → 0.3–0.5 ms): most of those requests were not
/// served in time. 2 to 8 rows ahead did equally well, 16 worse; on the convolution's slices 8
/// did as well as 4.
pub(crate) const AHEAD: usize = 4;

/// Asks for the cache lines of `values` in the second-level cache, without waiting for them.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch reads nothing and faults on no address; this one is in bounds.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// The spare capacity of an output that parallel tasks fill in disjoint parts (their own columns
/// of a linear layer's `dx`, their own channels of a convolution's, their own rows of a kept
/// `V₀`), shared between them.
#[derive(Clone, Copy)]
pub(crate) struct Disjoint(*mut MaybeUninit<f32>);

// SAFETY: the tasks sharing a `Disjoint` write disjoint sets of its elements (each caller says
// which), and the vector it points into outlives them.
unsafe impl Send for Disjoint {}
// SAFETY: as above.
unsafe impl Sync for Disjoint {}

impl Disjoint {
    /// The spare capacity of `out`.
    pub(crate) fn new(out: &mut Vec<f32>) -> Self {
        Self(out.spare_capacity_mut().as_mut_ptr())
    }

    /// The address of element `offset` (a method, so closures capture the whole `Disjoint`).
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset).cast()
    }

    /// `len` elements from `offset`, not yet initialised.
    ///
    /// # Safety
    /// `offset + len` lies inside the capacity, and no other live reference covers them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, offset: usize, len: usize) -> &mut [MaybeUninit<f32>] {
        // SAFETY: in bounds and not aliased, by the caller's promise.
        unsafe { core::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }

    /// `len` elements from `offset`, zeroed.
    ///
    /// # Safety
    /// As [`part`](Self::part).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn zeroed(&self, offset: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's promise.
        let part = unsafe { self.part(offset, len) };
        part.fill(MaybeUninit::new(0.0));
        // SAFETY: every value was just initialised.
        unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }
}

/// `(Σ W², Σ V₀²)` of one row of each, on the CPU's best vectors (the sums [`Formation::fill`]
/// returns, for a `V₀` read in place).
pub(crate) fn row_norms(w: &[f32], v: &[f32]) -> (f64, f64) {
    with_best_simd(
        #[inline(always)]
        || (squares(w), squares(v)),
    )
}

/// `(Σ W², Σ V₀²)` without writing anything, for `V₀` an existing tensor.
fn norms(w: &[f32], v: &[f32]) -> (f64, f64) {
    let sums: Vec<(f64, f64)> = w
        .par_chunks(CHUNK)
        .zip(v.par_chunks(CHUNK))
        .map(|(w, v)| {
            with_best_simd(
                #[inline(always)]
                || (squares(w), squares(v)),
            )
        })
        .collect();
    total(&sums)
}

pub(crate) fn total(sums: &[(f64, f64)]) -> (f64, f64) {
    sums.iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y))
}

/// `s` for `scale` from the `(Σ W², Σ V₀²)` of a fill's parts, added in order.
pub(crate) fn scale_factor(scale: ScaleKind, sums: &[(f64, f64)]) -> f32 {
    let (ww, vv) = total(sums);
    match scale {
        ScaleKind::Unit => 1.0,
        ScaleKind::Constant(c) => c,
        // A zero V₀ stays zero (as the generic path, which clamps the norm at 1e-30).
        ScaleKind::MatchNorm => (ww.sqrt() / vv.sqrt().max(1e-30)) as f32,
    }
}

/// `values *= factor` in parallel blocks (nothing when `factor` is 1): `s` applied to an input
/// gradient formed with `V₀`.
pub(crate) fn scale_in_place(values: &mut [f32], factor: f32) {
    if factor != 1.0 {
        values
            .par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(|x| *x *= factor));
    }
}

/// `(V₀, s)` for `kernel` on contiguous f32 tensors (see
/// [`FeedbackBackend::feedback_matrix_parts`](crate::FeedbackBackend::feedback_matrix_parts)), or
/// `None` where the generic path must do it (other dtypes, strided views, distributions without
/// a counter-based sampler).
pub(crate) fn feedback_matrix_parts(
    kernel: &FeedbackKernel,
    weight: &FlexTensor,
    aux: Option<&FlexTensor>,
) -> Option<(FlexTensor, FlexTensor)> {
    let w = weight.as_slice::<f32>()?;
    let aux_tensor = match kernel.form {
        FeedbackForm::MaskedSign | FeedbackForm::Given => {
            let a = aux?;
            (a.as_slice::<f32>()?.len() == w.len()).then_some(a)?;
            Some(a)
        }
        _ => None,
    };
    let aux = aux_tensor.map(|a| a.as_slice::<f32>().expect("checked above"));
    let norms = kernel.scale == ScaleKind::MatchNorm;
    let (v0, sums) = match kernel.form {
        // V₀ is a tensor we already hold: only its norm is needed, and only for MatchNorm.
        FeedbackForm::Weight | FeedbackForm::Given => {
            let (v0, values) = match aux_tensor {
                Some(a) => (a.clone(), aux.expect("checked above")),
                None => (weight.clone(), w),
            };
            let sums = if norms {
                self::norms(w, values)
            } else {
                (0.0, 0.0)
            };
            (v0, sums)
        }
        FeedbackForm::Sign | FeedbackForm::MaskedSign | FeedbackForm::RandomMaskedSign(_) => {
            let formation = Formation::new(kernel.form)?;
            // Every element is written below: no zeroing pass.
            let mut out: Vec<f32> = Vec::with_capacity(w.len());
            let sums: Vec<(f64, f64)> = out.spare_capacity_mut()[..w.len()]
                .par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(c, dst)| {
                    let start = c * CHUNK;
                    let range = start..start + dst.len();
                    let a = aux.map(|a| &a[range.clone()]);
                    formation.fill(norms, dst, &w[range], a, start)
                })
                .collect();
            // SAFETY: `fill` initialised all `w.len()` elements of the spare capacity.
            unsafe { out.set_len(w.len()) };
            let v0 = FlexTensor::from_data(TensorData::new(out, weight.shape()));
            (v0, total(&sums))
        }
    };
    let factor = scale_factor(kernel.scale, &[sums]);
    let factor = FlexTensor::from_data(TensorData::new(vec![factor], [1]));
    Some((v0, factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fill (on the CPU's best vectors) against `Magnitude::at` element by element,
    /// over starts and lengths with and without a tail, across a multiple of 2³² positions, and
    /// with the norms it returns.
    #[test]
    fn uniform_fill_matches_the_per_element_stream() {
        let (key, low, width) = (0x1234_5678_9abc_def0, 0.5, 1.5);
        let magnitude = Magnitude::Uniform { low, width };
        let wrap = 1usize << 32;
        for (start, len) in [
            (0, 16),
            (0, 37),
            (CHUNK, 5),
            (48, 100),
            (2 * CHUNK, 16 * 9 + 15),
            (5, 3),
            (7, 60),
            (CHUNK + 13, 16 * 4 + 9),
            // Across position 2³², where the stream's constants change.
            (wrap - 21, 16 * 3),
            (wrap, 40),
        ] {
            let w: Vec<f32> = (0..len).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut dst = vec![MaybeUninit::new(f32::NAN); len];
            let uniform = Formation::Uniform { key, low, width };
            let (ww, vv) = uniform.fill(true, &mut dst, &w, None, start);
            let got: Vec<f32> = dst.iter().map(|v| unsafe { v.assume_init() }).collect();
            let want: Vec<f32> = (0..len)
                .map(|i| magnitude.at(key, start + i) * sign(w[i]))
                .collect();
            assert_eq!(got, want, "start {start}, len {len}");
            let ww_want: f64 = w.iter().map(|&x| f64::from(x * x)).sum();
            let vv_want: f64 = want.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert!(
                (ww - ww_want).abs() < 1e-6 * ww_want,
                "Σ W² {ww} vs {ww_want}"
            );
            assert!(
                (vv - vv_want).abs() < 1e-5 * vv_want,
                "Σ V² {vv} vs {vv_want}"
            );
        }
    }

    /// `SIGNSYM_MAX_SIMD` only lowers the level: `avx2` and `baseline` (any case) cap it,
    /// anything else leaves the CPU's own, and the level in force is never above the CPU's.
    #[test]
    fn the_simd_cap_only_lowers_the_level() {
        assert_eq!(simd_cap(Some("avx2")), SimdLevel::V3);
        assert_eq!(simd_cap(Some(" AVX2 ")), SimdLevel::V3);
        assert_eq!(simd_cap(Some("baseline")), SimdLevel::Baseline);
        assert_eq!(simd_cap(Some("avx512")), SimdLevel::V4);
        assert_eq!(simd_cap(None), SimdLevel::V4);
        assert!(simd_level() <= detected_simd_level());
    }

    /// The AVX-512 and AVX2 sums of squares give the portable loop's bits, on lengths with and
    /// without whole blocks and tails.
    #[test]
    fn squares_agree_bit_for_bit() {
        for len in [0, 5, 63, 64, 65, 200, 4096 + 37] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3)
                .collect();
            let want = squares_portable(&x);
            let close: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!(
                (want - close).abs() <= 1e-5 * close.max(1e-30),
                "{want} vs {close}"
            );
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    assert_eq!(
                        unsafe { squares_avx2(&x) }.to_bits(),
                        want.to_bits(),
                        "{len}"
                    );
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    assert_eq!(
                        unsafe { squares_avx512(&x) }.to_bits(),
                        want.to_bits(),
                        "{len}"
                    );
                }
            }
        }
    }

    /// Pearson correlation of two equally long samples.
    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - ma) * (y - mb))
            .sum::<f64>()
            / n;
        let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        cov / (var(a, ma) * var(b, mb)).sqrt()
    }

    /// The uniform stream: mean ½ and variance 1/12; neighbours, positions a block apart, the
    /// same positions under two keys, and positions 2³² apart uncorrelated; no value of one
    /// key's stream repeated by a key that differs in one bit.
    #[test]
    fn the_uniform_stream_looks_independent() {
        let n = 1 << 16;
        let at = |key: u64, i: usize| f64::from(uniform_unit(key, i));
        let base: Vec<f64> = (0..n + 16).map(|i| at(42, i)).collect();
        let mean = base.iter().sum::<f64>() / base.len() as f64;
        let var = base.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / base.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
        let head = &base[..n];
        for (what, other) in [
            ("next position", base[1..=n].to_vec()),
            ("a block later", base[16..n + 16].to_vec()),
            ("key 43", (0..n).map(|i| at(43, i)).collect()),
            (
                "key 42 + 2³²",
                (0..n).map(|i| at(42 + (1 << 32), i)).collect(),
            ),
            ("2³² later", (0..n).map(|i| at(42, i + (1 << 32))).collect()),
        ] {
            let r = correlation(head, &other);
            assert!(r.abs() < 0.02, "{what}: correlation {r}");
            let same = head.iter().zip(&other).filter(|(x, y)| x == y).count();
            assert!(same < 10, "{what}: {same} equal values");
        }
    }
}
