//! Matmul throughput of the CPU backend (Flex) at 1024² and 2048², f32, against this machine's
//! measured FMA peak.
//!
//! The peak is measured, not looked up: a loop of independent fused multiply-adds on vector
//! registers (AVX-512 where the CPU has it, else AVX2), on one thread and on every thread. By
//! default Flex's matmul (the `gemm` crate) uses AVX2 kernels; burn's `x86-v4` feature (our
//! `x86-v4`) enables its AVX-512 kernels, so both peaks are printed.
//!
//! `cargo bench --bench matmul`

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn matmul(c: &mut Criterion) {
    let device = Device::flex();
    device.seed(0);
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(20);
    for n in [1024usize, 2048] {
        let a = Tensor::<2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<2>::random([n, n], Distribution::Default, &device);
        // Throughput in FLOPs: criterion's "elem/s" reads as FLOP/s.
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| {
                a.clone()
                    .matmul(b.clone())
                    .slice([0..1, 0..1])
                    .into_scalar::<f32>()
            })
        });
    }
    group.finish();
}

/// FLOP/s of `iters` rounds of 12 independent 8-lane FMAs (AVX2), on the calling thread.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let start = Instant::now();
    let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, m, a);
        }
    }
    let mut sum = [0.0f32; 8];
    // SAFETY: `sum` holds 8 f32.
    unsafe {
        _mm256_storeu_ps(
            sum.as_mut_ptr(),
            acc.iter()
                .fold(_mm256_setzero_ps(), |s, r| _mm256_add_ps(s, *r)),
        )
    };
    std::hint::black_box(sum);
    (iters * 12 * 8 * 2) as f64 / start.elapsed().as_secs_f64()
}

/// FLOP/s of `iters` rounds of 12 independent 16-lane FMAs (AVX-512), on the calling thread.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let start = Instant::now();
    let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, m, a);
        }
    }
    let total = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, r| _mm512_add_ps(s, *r));
    std::hint::black_box(_mm512_reduce_add_ps(total));
    (iters * 12 * 16 * 2) as f64 / start.elapsed().as_secs_f64()
}

/// Best of five runs of `probe` on one thread and on all threads at once (GFLOP/s).
fn peak(probe: fn(usize) -> f64) -> (f64, f64) {
    let iters = 50_000_000;
    let best = |threads: usize| {
        (0..5)
            .map(|_| {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| s.spawn(move || probe(iters)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("probe"))
                        .sum::<f64>()
                })
            })
            .fold(0.0, f64::max)
            / 1e9
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    (best(1), best(threads))
}

fn machine_peak(_: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("\nmeasured FMA peak, f32 ({threads} threads available):");
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            let (one, all) = peak(|n| unsafe { fma_avx2(n) });
            println!(
                "  AVX2 (Flex's default matmul kernels): {one:.1} GFLOP/s on one thread, {all:.1} on all"
            );
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            let (one, all) = peak(|n| unsafe { fma_avx512(n) });
            println!(
                "  AVX-512 (burn's x86-v4 kernels): {one:.1} GFLOP/s on one thread, {all:.1} on all"
            );
        }
    }
}

criterion_group!(benches, matmul, machine_peak);
criterion_main!(benches);
