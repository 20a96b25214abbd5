//! mAP@k throughput: 5,000 queries against 150,000 database items with 32-bit codes (the size
//! of a NUS-WIDE evaluation), and a small case for quick comparisons.
//!
//! `cargo bench --bench map_at_k`

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use signsym::metrics::{LabelSets, MapConfig, PackedCodes, map_at_k};

const CLASSES: usize = 21;

/// Random ±1 codes and multi-hot labels (each class present with probability 0.15, at least
/// one label per item).
fn data(items: usize, bits: usize, seed: u64) -> (PackedCodes, LabelSets) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let codes: Vec<bool> = (0..items * bits).map(|_| rng.random_bool(0.5)).collect();
    let mut labels = vec![0.0f32; items * CLASSES];
    for item in labels.chunks_exact_mut(CLASSES) {
        for l in item.iter_mut() {
            *l = f32::from(u8::from(rng.random_bool(0.15)));
        }
        item[rng.random_range(0..CLASSES)] = 1.0;
    }
    (
        PackedCodes::from_bools(&codes, bits).expect("codes"),
        LabelSets::from_multi_hot(&labels, CLASSES).expect("labels"),
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("map_at_k");
    group.sample_size(10);
    for (queries, database, k) in [
        (1_000, 20_000, Some(1_000)),
        (5_000, 150_000, Some(5_000)),
        (5_000, 150_000, None),
    ] {
        let (q, ql) = data(queries, 32, 1);
        let (db, dbl) = data(database, 32, 2);
        let config = MapConfig {
            top_k: k,
            ..MapConfig::all()
        };
        let name = format!(
            "{queries}x{database}_32bit_k{}",
            k.map_or("all".to_string(), |k| k.to_string())
        );
        group.bench_function(name, |b| {
            b.iter(|| map_at_k(&q, &ql, &db, &dbl, config).expect("map"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
