//! mAP@k against a brute-force reference and hand-computed cases.

use proptest::prelude::*;
use signsym_metrics::{
    ApNormalizer, LabelSets, MapConfig, PackedCodes, map_at_k, precision_recall_by_radius, rank,
};

/// Straightforward reference: full stable sort by (distance, index), then AP@k in f64.
fn reference_map(
    query: &[Vec<bool>],
    query_labels: &[Vec<bool>],
    db: &[Vec<bool>],
    db_labels: &[Vec<bool>],
    k: Option<usize>,
    normalizer: ApNormalizer,
) -> f64 {
    let relevant = |a: &[bool], b: &[bool]| a.iter().zip(b).any(|(x, y)| *x && *y);
    let mut total = 0.0;
    for (q, ql) in query.iter().zip(query_labels) {
        let mut order: Vec<(usize, usize)> = db
            .iter()
            .enumerate()
            .map(|(j, code)| (code.iter().zip(q).filter(|(a, b)| a != b).count(), j))
            .collect();
        order.sort();
        let k = k.unwrap_or(db.len()).min(db.len());
        let (mut hits, mut sum) = (0usize, 0.0);
        for (rank, &(_, j)) in order.iter().take(k).enumerate() {
            if relevant(ql, &db_labels[j]) {
                hits += 1;
                sum += hits as f64 / (rank + 1) as f64;
            }
        }
        let all_relevant = db_labels.iter().filter(|l| relevant(ql, l)).count();
        let n = match normalizer {
            ApNormalizer::RetrievedRelevant => hits,
            ApNormalizer::MinKRelevant => all_relevant.min(k),
        };
        if n > 0 {
            total += sum / n as f64;
        }
    }
    total / query.len() as f64
}

fn pack(rows: &[Vec<bool>], bits: usize) -> PackedCodes {
    PackedCodes::from_bools(&rows.concat(), bits).unwrap()
}

fn labels(rows: &[Vec<bool>], classes: usize) -> LabelSets {
    let flat: Vec<f32> = rows
        .concat()
        .iter()
        .map(|&b| f32::from(u8::from(b)))
        .collect();
    LabelSets::from_multi_hot(&flat, classes).unwrap()
}

fn rows(n: usize, width: usize) -> impl Strategy<Value = Vec<Vec<bool>>> {
    prop::collection::vec(prop::collection::vec(any::<bool>(), width), n)
}

type Case = (
    usize,
    usize,
    Vec<Vec<bool>>,
    Vec<Vec<bool>>,
    Vec<Vec<bool>>,
    Vec<Vec<bool>>,
    Option<usize>,
);

/// Random codes (3 bits: many ties; 70 bits: two words) and multi-hot labels.
fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![3usize, 8, 64, 70]),
        1usize..5,
        1usize..6,
        1usize..40,
        prop::option::of(1usize..50),
    )
        .prop_flat_map(|(bits, classes, nq, ndb, k)| {
            (
                Just(bits),
                Just(classes),
                rows(nq, bits),
                rows(nq, classes),
                rows(ndb, bits),
                rows(ndb, classes),
                Just(k),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn map_equals_the_brute_force_reference((bits, classes, q, ql, db, dbl, k) in case()) {
        for normalizer in [ApNormalizer::RetrievedRelevant, ApNormalizer::MinKRelevant] {
            let config = MapConfig { top_k: k, normalizer };
            let got = map_at_k(
                &pack(&q, bits),
                &labels(&ql, classes),
                &pack(&db, bits),
                &labels(&dbl, classes),
                config,
            )
            .unwrap();
            let expected = reference_map(&q, &ql, &db, &dbl, k, normalizer);
            prop_assert!((got.map - expected).abs() < 1e-12, "{} vs {}", got.map, expected);
        }
    }
}

/// One query with code 0…0 and label 0 against a database whose rank order is fixed by distance.
fn ranked(relevance: &[bool]) -> (PackedCodes, LabelSets, PackedCodes, LabelSets) {
    let bits = 8;
    let query = PackedCodes::from_bools(&[false; 8], bits).unwrap();
    let query_labels = LabelSets::from_classes(&[0], 2).unwrap();
    // Item r has r bits set, so it sits at rank r.
    let db: Vec<bool> = (0..relevance.len())
        .flat_map(|r| (0..bits).map(move |b| b < r))
        .collect();
    let db_labels: Vec<usize> = relevance.iter().map(|&rel| usize::from(!rel)).collect();
    (
        query,
        query_labels,
        PackedCodes::from_bools(&db, bits).unwrap(),
        LabelSets::from_classes(&db_labels, 2).unwrap(),
    )
}

fn ap(relevance: &[bool], config: MapConfig) -> f64 {
    let (q, ql, db, dbl) = ranked(relevance);
    map_at_k(&q, &ql, &db, &dbl, config).unwrap().map
}

#[test]
fn deephash_convention_ranks_plus_minus_minus_above_plus_minus_plus() {
    let k3 = MapConfig::top_k(3);
    let a = ap(&[true, false, false], k3);
    let b = ap(&[true, false, true], k3);
    assert_eq!(a, 1.0);
    assert!((b - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
    assert!(a > b);
    // With min(k, R) the missing relevant items count: R = 1 vs 2.
    let k3_min = k3.with_normalizer(ApNormalizer::MinKRelevant);
    assert_eq!(ap(&[true, false, false], k3_min), 1.0);
    assert!((ap(&[true, false, true], k3_min) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
    // A relevant item beyond k: DeepHash ignores it, min(k, R) charges it.
    assert_eq!(ap(&[true, false, false, true], k3), 1.0);
    assert_eq!(ap(&[true, false, false, true], k3_min), 0.5);
    // No relevant item in the top k: AP 0, and the query still counts.
    assert_eq!(ap(&[false, false, true], MapConfig::top_k(2)), 0.0);
}

#[test]
fn precision_at_k_and_k_all() {
    let (q, ql, db, dbl) = ranked(&[true, false, true, true, false]);
    let r = map_at_k(&q, &ql, &db, &dbl, MapConfig::top_k(4)).unwrap();
    assert_eq!(r.k, 4);
    assert_eq!(r.precision_at_k, 0.75);
    let all = map_at_k(&q, &ql, &db, &dbl, MapConfig::all()).unwrap();
    assert_eq!(all.k, 5);
    assert!((all.map - (1.0 + 2.0 / 3.0 + 3.0 / 4.0) / 3.0).abs() < 1e-15);
    // k larger than the database is the whole database.
    assert_eq!(
        map_at_k(&q, &ql, &db, &dbl, MapConfig::top_k(100)).unwrap(),
        all
    );
}

#[test]
fn ties_break_by_database_index() {
    // Five identical codes: the order must be 0..5 whatever the labels.
    let db = PackedCodes::from_bools(&[true; 5 * 4], 4).unwrap();
    let query = PackedCodes::from_bools(&[true; 4], 4).unwrap();
    assert_eq!(rank(&query, 0, &db, 5).unwrap(), vec![0, 1, 2, 3, 4]);
    let db_labels = LabelSets::from_classes(&[1, 0, 1, 0, 0], 2).unwrap();
    let ql = LabelSets::from_classes(&[0], 2).unwrap();
    let r = map_at_k(&query, &ql, &db, &db_labels, MapConfig::top_k(2)).unwrap();
    // Top 2 = items 0 (−) and 1 (+): AP = 1/2.
    assert_eq!(r.map, 0.5);
}

#[test]
fn precision_recall_by_radius_hand_case() {
    // Database at distances 0, 1, 1, 2 with relevance +, +, −, +.
    let db = PackedCodes::from_bools(
        &[
            false, false, //
            true, false, //
            false, true, //
            true, true,
        ],
        2,
    )
    .unwrap();
    let db_labels = LabelSets::from_classes(&[0, 0, 1, 0], 2).unwrap();
    let q = PackedCodes::from_bools(&[false, false], 2).unwrap();
    let ql = LabelSets::from_classes(&[0], 2).unwrap();
    let pr = precision_recall_by_radius(&q, &ql, &db, &db_labels).unwrap();
    assert_eq!(pr.radius, vec![0, 1, 2]);
    assert_eq!(pr.precision, vec![1.0, 2.0 / 3.0, 0.75]);
    assert_eq!(pr.recall, vec![1.0 / 3.0, 2.0 / 3.0, 1.0]);
}

#[test]
fn tensors_pack_like_host_values() {
    use burn::tensor::{Device, Tensor, TensorData};
    let device = Device::flex();
    let values = vec![0.3f32, -0.2, 0.0, 1.0, -1.0, 0.7];
    let codes = Tensor::<2>::from_data(TensorData::new(values.clone(), [2, 3]), &device);
    let packed = PackedCodes::from_tensor(codes).unwrap();
    assert_eq!(packed, PackedCodes::from_real(&values, 3).unwrap());
    // signsym's one sign→code rule: 0 is +1.
    assert_eq!(packed.signs(0), vec![1.0, -1.0, 1.0]);
    let labels = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]),
        &device,
    );
    let sets = LabelSets::from_tensor(labels).unwrap();
    assert!(!sets.shares_label(0, &sets, 1));
    assert!(sets.shares_label(1, &sets, 1));
}
