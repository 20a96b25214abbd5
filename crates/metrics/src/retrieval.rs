//! Hamming ranking of binary codes: mAP@k, precision@k and precision–recall by Hamming radius.
//!
//! Codes are packed 64 bits to a word and compared with XOR + popcount; labels are packed the
//! same way, so relevance (sharing at least one label) is an AND. Ranking a query is a counting
//! sort on the distance (at most `bits + 1` values), which yields the order (distance, database
//! index) directly and in linear time; queries run in parallel.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, check_finite, check_len, invalid};

/// Binary codes, one per item, packed into 64-bit words (bit set = +1, clear = −1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedCodes {
    bits: usize,
    words: usize,
    data: Vec<u64>,
}

/// The one sign→code rule of signsym: a real value `≥ 0` is the bit +1, a negative one −1 (the
/// hashing head's `Network::codes`, the retrieval attacks and [`PackedCodes::from_real`] all use
/// it, so a code bit of exactly 0 is the same everywhere).
///
/// ```
/// use signsym_metrics::code_bit;
/// assert!(code_bit(0.0) && code_bit(0.3) && !code_bit(-1e-9));
/// ```
#[inline]
pub fn code_bit(value: f32) -> bool {
    value >= 0.0
}

impl PackedCodes {
    /// Packs real-valued codes (row-major, `bits` values per item) by sign ([`code_bit`]: `≥ 0`
    /// is +1, negative −1; the ±1 output of a hashing head packs exactly).
    ///
    /// ```
    /// use signsym_metrics::PackedCodes;
    /// let codes = PackedCodes::from_real(&[1.0, -1.0, 1.0, 0.3, 0.2, -0.7], 3)?;
    /// assert_eq!(PackedCodes::from_real(&[0.0], 1)?, PackedCodes::from_real(&[1.0], 1)?);
    /// assert_eq!(codes.len(), 2);
    /// assert_eq!(codes.hamming(0, &codes, 1), 2);
    /// # Ok::<(), signsym_metrics::MetricsError>(())
    /// ```
    pub fn from_real(values: &[f32], bits: usize) -> Result<Self, MetricsError> {
        check_finite("codes", values)?;
        Self::from_fn(values.len(), bits, |i| code_bit(values[i]))
    }

    /// Packs the rows of a `[items, bits]` tensor by sign (see [`from_real`](Self::from_real)),
    /// for example a hashing head's output.
    pub fn from_tensor(codes: burn::tensor::Tensor<2>) -> Result<Self, MetricsError> {
        let [_, bits] = codes.dims();
        Self::from_real(&codes.try_to_vec_as::<f32>()?, bits)
    }

    /// Packs boolean codes (row-major, `bits` per item; `true` = +1).
    pub fn from_bools(values: &[bool], bits: usize) -> Result<Self, MetricsError> {
        Self::from_fn(values.len(), bits, |i| values[i])
    }

    fn from_fn(
        total: usize,
        bits: usize,
        bit: impl Fn(usize) -> bool,
    ) -> Result<Self, MetricsError> {
        if bits == 0 {
            return Err(invalid("bits", bits, "must be at least 1"));
        }
        if !total.is_multiple_of(bits) {
            return Err(invalid(
                "codes length",
                total,
                "must be a multiple of the number of bits",
            ));
        }
        let len = total / bits;
        let words = bits.div_ceil(64);
        let mut data = vec![0u64; len * words];
        for item in 0..len {
            for b in 0..bits {
                if bit(item * bits + b) {
                    data[item * words + b / 64] |= 1u64 << (b % 64);
                }
            }
        }
        Ok(Self { bits, words, data })
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.data.len() / self.words
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The packed words of code `i`.
    pub fn code(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }

    /// Code `i` as ±1 values.
    pub fn signs(&self, i: usize) -> Vec<f32> {
        let code = self.code(i);
        (0..self.bits)
            .map(|b| {
                if code[b / 64] >> (b % 64) & 1 == 1 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect()
    }

    /// Hamming distance between code `i` of `self` and code `j` of `other`.
    pub fn hamming(&self, i: usize, other: &PackedCodes, j: usize) -> u32 {
        hamming_distance(self.code(i), other.code(j))
    }
}

/// Hamming distance between two packed codes of the same width.
pub fn hamming_distance(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Label sets, one per item, packed into 64-bit words (multi-label; single-label is one bit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSets {
    classes: usize,
    words: usize,
    data: Vec<u64>,
}

impl LabelSets {
    /// From a multi-hot matrix (row-major, `classes` values per item; a value `> 0.5` is a label).
    pub fn from_multi_hot(values: &[f32], classes: usize) -> Result<Self, MetricsError> {
        check_finite("labels", values)?;
        if classes == 0 {
            return Err(invalid("classes", classes, "must be at least 1"));
        }
        if !values.len().is_multiple_of(classes) {
            return Err(invalid(
                "labels length",
                values.len(),
                "must be a multiple of the number of classes",
            ));
        }
        let len = values.len() / classes;
        let words = classes.div_ceil(64);
        let mut data = vec![0u64; len * words];
        for (i, v) in values.iter().enumerate() {
            if *v > 0.5 {
                let (item, class) = (i / classes, i % classes);
                data[item * words + class / 64] |= 1u64 << (class % 64);
            }
        }
        Ok(Self {
            classes,
            words,
            data,
        })
    }

    /// From a multi-hot `[items, classes]` tensor.
    pub fn from_tensor(labels: burn::tensor::Tensor<2>) -> Result<Self, MetricsError> {
        let [_, classes] = labels.dims();
        Self::from_multi_hot(&labels.try_to_vec_as::<f32>()?, classes)
    }

    /// From one class index per item (single-label data).
    pub fn from_classes(labels: &[usize], classes: usize) -> Result<Self, MetricsError> {
        if classes == 0 {
            return Err(invalid("classes", classes, "must be at least 1"));
        }
        let words = classes.div_ceil(64);
        let mut data = vec![0u64; labels.len() * words];
        for (index, &class) in labels.iter().enumerate() {
            if class >= classes {
                return Err(MetricsError::ClassOutOfRange {
                    what: "labels",
                    index,
                    class,
                    classes,
                });
            }
            data[index * words + class / 64] |= 1u64 << (class % 64);
        }
        Ok(Self {
            classes,
            words,
            data,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.data.len() / self.words
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The label sets of items `range` (a batch of queries, for example).
    ///
    /// ```
    /// use signsym_metrics::LabelSets;
    /// let labels = LabelSets::from_classes(&[0, 1, 2, 1], 3)?;
    /// let middle = labels.slice(1..3)?;
    /// assert_eq!(middle.len(), 2);
    /// assert!(middle.shares_label(0, &labels, 3));
    /// assert!(labels.slice(3..5).is_err());
    /// # Ok::<(), signsym_metrics::MetricsError>(())
    /// ```
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<Self, MetricsError> {
        if range.start > range.end || range.end > self.len() {
            return Err(invalid(
                "label range",
                format!("{range:?}"),
                "must lie within the items",
            ));
        }
        Ok(Self {
            classes: self.classes,
            words: self.words,
            data: self.data[range.start * self.words..range.end * self.words].to_vec(),
        })
    }

    fn set(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }

    /// Whether item `i` of `self` and item `j` of `other` share at least one label.
    pub fn shares_label(&self, i: usize, other: &LabelSets, j: usize) -> bool {
        self.set(i)
            .iter()
            .zip(other.set(j))
            .any(|(a, b)| a & b != 0)
    }
}

/// What AP@k divides by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApNormalizer {
    /// The number of relevant items within the top k (DeepHash-pytorch's `CalcTopMap`): AP@k
    /// is the mean precision at the relevant positions of the top k.
    #[default]
    RetrievedRelevant,
    /// `min(k, total relevant in the database)`: a query that finds few of the relevant
    /// items within the top k is penalised for the ones it misses.
    MinKRelevant,
}

/// Settings of [`map_at_k`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapConfig {
    /// Depth of the ranking; `None` ranks the whole database (mAP@all).
    pub top_k: Option<usize>,
    /// What AP@k divides by.
    pub normalizer: ApNormalizer,
}

impl MapConfig {
    /// mAP over the top `k` items, DeepHash convention.
    pub fn top_k(k: usize) -> Self {
        Self {
            top_k: Some(k),
            normalizer: ApNormalizer::RetrievedRelevant,
        }
    }

    /// mAP over the whole ranking, DeepHash convention.
    pub fn all() -> Self {
        Self {
            top_k: None,
            normalizer: ApNormalizer::RetrievedRelevant,
        }
    }

    /// The same depth with another normaliser.
    pub fn with_normalizer(mut self, normalizer: ApNormalizer) -> Self {
        self.normalizer = normalizer;
        self
    }
}

/// mAP@k and precision@k of a query set against a database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The depth used: `min(top_k, database size)`.
    pub k: usize,
    /// Mean of `per_query_ap` (queries with no relevant item in the top k count as 0).
    pub map: f64,
    /// AP@k of each query.
    pub per_query_ap: Vec<f64>,
    /// Mean fraction of relevant items among the top k.
    pub precision_at_k: f64,
}

/// The checks every ranking needs: matching code widths and a database that `u32` indexes.
fn check_codes(
    query_codes: &PackedCodes,
    database_codes: &PackedCodes,
) -> Result<(), MetricsError> {
    check_len(
        "database code bits",
        query_codes.bits(),
        database_codes.bits(),
    )?;
    if database_codes.len() > u32::MAX as usize {
        return Err(invalid(
            "database size",
            database_codes.len(),
            "must fit in u32",
        ));
    }
    Ok(())
}

/// Checks a query set against a database and returns the effective depth k.
fn validate(
    query_codes: &PackedCodes,
    query_labels: &LabelSets,
    database_codes: &PackedCodes,
    database_labels: &LabelSets,
    top_k: Option<usize>,
) -> Result<usize, MetricsError> {
    if query_codes.is_empty() {
        return Err(MetricsError::Empty("query set"));
    }
    if database_codes.is_empty() {
        return Err(MetricsError::Empty("database"));
    }
    check_codes(query_codes, database_codes)?;
    check_len("query labels", query_codes.len(), query_labels.len())?;
    check_len(
        "database labels",
        database_codes.len(),
        database_labels.len(),
    )?;
    check_len(
        "database classes",
        query_labels.classes(),
        database_labels.classes(),
    )?;
    match top_k {
        Some(0) => Err(invalid("top_k", 0, "must be at least 1")),
        Some(k) => Ok(k.min(database_codes.len())),
        None => Ok(database_codes.len()),
    }
}

/// Reusable per-thread buffers for ranking one query.
struct Ranker {
    distances: Vec<u32>,
    cursor: Vec<usize>,
    order: Vec<u32>,
}

impl Ranker {
    fn new(bits: usize) -> Self {
        Self {
            distances: Vec::new(),
            cursor: vec![0; bits + 2],
            order: Vec::new(),
        }
    }

    /// Fills `distances` and the histogram `cursor[d + 1]`, with the CPU's popcount
    /// instruction where it has one (the default x86-64 target does not assume it).
    fn distances(&mut self, query: &[u64], database: &PackedCodes) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports `popcnt`, checked just above.
            unsafe { self.distances_popcnt(query, database) };
            return;
        }
        self.fill_distances(query, database);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn distances_popcnt(&mut self, query: &[u64], database: &PackedCodes) {
        self.fill_distances(query, database);
    }

    #[inline(always)]
    fn fill_distances(&mut self, query: &[u64], database: &PackedCodes) {
        self.cursor.fill(0);
        self.distances.clear();
        self.distances.resize(database.len(), 0);
        if database.words == 1 {
            let q = query[0];
            for (slot, &code) in self.distances.iter_mut().zip(&database.data) {
                let d = (q ^ code).count_ones();
                *slot = d;
                self.cursor[d as usize + 1] += 1;
            }
        } else {
            let codes = database.data.chunks_exact(database.words);
            for (slot, code) in self.distances.iter_mut().zip(codes) {
                let d = hamming_distance(query, code);
                *slot = d;
                self.cursor[d as usize + 1] += 1;
            }
        }
    }

    /// The first `k` database indices in (distance, index) order: a counting sort that keeps
    /// only positions below `k`.
    fn top_k(&mut self, query: &[u64], database: &PackedCodes, k: usize) -> &[u32] {
        self.distances(query, database);
        for d in 1..self.cursor.len() {
            self.cursor[d] += self.cursor[d - 1];
        }
        self.order.clear();
        self.order.resize(k, 0);
        for (j, &d) in self.distances.iter().enumerate() {
            let slot = &mut self.cursor[d as usize];
            if *slot < k {
                self.order[*slot] = j as u32;
                *slot += 1;
            }
        }
        &self.order
    }
}

/// The top `k` database indices for query `q`, ordered by (Hamming distance, database index).
pub fn rank(
    query_codes: &PackedCodes,
    q: usize,
    database_codes: &PackedCodes,
    k: usize,
) -> Result<Vec<usize>, MetricsError> {
    check_codes(query_codes, database_codes)?;
    if q >= query_codes.len() {
        return Err(invalid(
            "query index",
            q,
            "must be below the number of queries",
        ));
    }
    let k = k.min(database_codes.len());
    let mut ranker = Ranker::new(query_codes.bits());
    Ok(ranker
        .top_k(query_codes.code(q), database_codes, k)
        .iter()
        .map(|&j| j as usize)
        .collect())
}

/// Mean average precision over the top k of a Hamming ranking, and precision@k.
///
/// Relevance is sharing at least one label. Ties in distance are broken by database index, so
/// the result does not depend on sort stability or thread count.
///
/// ```
/// use signsym_metrics::{LabelSets, MapConfig, PackedCodes, map_at_k};
/// let db = PackedCodes::from_real(&[1., 1., -1., -1., 1., -1., 1., 1.], 2)?;
/// let db_labels = LabelSets::from_classes(&[0, 1, 0, 1], 2)?;
/// let query = PackedCodes::from_real(&[1., 1.], 2)?;
/// let query_labels = LabelSets::from_classes(&[0], 2)?;
/// // Ranking: item 0 (d=0), item 3 (d=0), item 2 (d=1), item 1 (d=2) -> [+, -, +, -].
/// let report = map_at_k(&query, &query_labels, &db, &db_labels, MapConfig::top_k(3))?;
/// assert!((report.map - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
/// # Ok::<(), signsym_metrics::MetricsError>(())
/// ```
pub fn map_at_k(
    query_codes: &PackedCodes,
    query_labels: &LabelSets,
    database_codes: &PackedCodes,
    database_labels: &LabelSets,
    config: MapConfig,
) -> Result<RetrievalReport, MetricsError> {
    let k = validate(
        query_codes,
        query_labels,
        database_codes,
        database_labels,
        config.top_k,
    )?;
    let per_query: Vec<(f64, f64)> = (0..query_codes.len())
        .into_par_iter()
        .map_init(
            || Ranker::new(query_codes.bits()),
            |ranker, q| {
                let order = ranker.top_k(query_codes.code(q), database_codes, k);
                let mut hits = 0usize;
                let mut sum = 0.0f64;
                for (rank, &j) in order.iter().enumerate() {
                    if query_labels.shares_label(q, database_labels, j as usize) {
                        hits += 1;
                        sum += hits as f64 / (rank + 1) as f64;
                    }
                }
                let normalizer = match config.normalizer {
                    ApNormalizer::RetrievedRelevant => hits,
                    ApNormalizer::MinKRelevant => {
                        let total = (0..database_labels.len())
                            .filter(|&j| query_labels.shares_label(q, database_labels, j))
                            .count();
                        total.min(k)
                    }
                };
                let ap = if normalizer == 0 {
                    0.0
                } else {
                    sum / normalizer as f64
                };
                (ap, hits as f64 / k as f64)
            },
        )
        .collect();
    let n = per_query.len() as f64;
    Ok(RetrievalReport {
        k,
        map: per_query.iter().map(|p| p.0).sum::<f64>() / n,
        precision_at_k: per_query.iter().map(|p| p.1).sum::<f64>() / n,
        per_query_ap: per_query.into_iter().map(|p| p.0).collect(),
    })
}

/// Precision and recall of Hamming-ball retrieval at each radius `0..=bits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecallCurve {
    /// Hamming radius of each point.
    pub radius: Vec<u32>,
    /// Mean precision over the queries that retrieve at least one item within the radius.
    pub precision: Vec<f64>,
    /// Mean recall over the queries that have at least one relevant item.
    pub recall: Vec<f64>,
}

/// The precision–recall curve of retrieving every database item within Hamming radius r.
pub fn precision_recall_by_radius(
    query_codes: &PackedCodes,
    query_labels: &LabelSets,
    database_codes: &PackedCodes,
    database_labels: &LabelSets,
) -> Result<PrecisionRecallCurve, MetricsError> {
    validate(
        query_codes,
        query_labels,
        database_codes,
        database_labels,
        None,
    )?;
    let bins = query_codes.bits() + 1;
    // Per radius: (sum of precision, queries with a retrieval, sum of recall, queries with a
    // relevant item).
    let zero = || {
        (
            vec![0.0f64; bins],
            vec![0usize; bins],
            vec![0.0f64; bins],
            0usize,
        )
    };
    let (precision_sum, precision_n, recall_sum, recall_n) = (0..query_codes.len())
        .into_par_iter()
        .fold(
            || (zero(), Ranker::new(query_codes.bits())),
            |(mut acc, mut ranker), q| {
                // `cursor[d + 1]` is the number of items at distance d.
                ranker.distances(query_codes.code(q), database_codes);
                let mut relevant = vec![0usize; bins];
                for (j, &d) in ranker.distances.iter().enumerate() {
                    if query_labels.shares_label(q, database_labels, j) {
                        relevant[d as usize] += 1;
                    }
                }
                let total_relevant: usize = relevant.iter().sum();
                let (mut retrieved, mut found) = (0usize, 0usize);
                for (r, &relevant_at_r) in relevant.iter().enumerate() {
                    retrieved += ranker.cursor[r + 1];
                    found += relevant_at_r;
                    if retrieved > 0 {
                        acc.0[r] += found as f64 / retrieved as f64;
                        acc.1[r] += 1;
                    }
                    if total_relevant > 0 {
                        acc.2[r] += found as f64 / total_relevant as f64;
                    }
                }
                if total_relevant > 0 {
                    acc.3 += 1;
                }
                (acc, ranker)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(zero, |mut a, b| {
            for r in 0..bins {
                a.0[r] += b.0[r];
                a.1[r] += b.1[r];
                a.2[r] += b.2[r];
            }
            a.3 += b.3;
            a
        });
    Ok(PrecisionRecallCurve {
        radius: (0..bins as u32).collect(),
        precision: precision_sum
            .iter()
            .zip(&precision_n)
            .map(|(s, &n)| if n == 0 { 0.0 } else { s / n as f64 })
            .collect(),
        recall: recall_sum
            .iter()
            .map(|s| {
                if recall_n == 0 {
                    0.0
                } else {
                    s / recall_n as f64
                }
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_word_codes_count_every_word() {
        let a: Vec<bool> = (0..130).map(|i| i % 3 == 0).collect();
        let b: Vec<bool> = (0..130).map(|i| i % 5 == 0).collect();
        let expected = a.iter().zip(&b).filter(|(x, y)| x != y).count() as u32;
        let codes = PackedCodes::from_bools(&[a, b].concat(), 130).unwrap();
        assert_eq!(codes.hamming(0, &codes, 1), expected);
        assert_eq!(codes.signs(0)[3], 1.0);
        assert_eq!(codes.signs(0)[4], -1.0);
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        assert!(PackedCodes::from_real(&[1.0; 5], 2).is_err());
        assert!(matches!(
            PackedCodes::from_real(&[1.0, f32::NAN], 2),
            Err(MetricsError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            LabelSets::from_classes(&[0, 3], 3),
            Err(MetricsError::ClassOutOfRange {
                index: 1,
                class: 3,
                ..
            })
        ));
        let codes = PackedCodes::from_real(&[1.0, 1.0], 2).unwrap();
        let other = PackedCodes::from_real(&[1.0, 1.0, 1.0], 3).unwrap();
        let labels = LabelSets::from_classes(&[0], 2).unwrap();
        assert!(matches!(
            map_at_k(&codes, &labels, &other, &labels, MapConfig::all()),
            Err(MetricsError::ShapeMismatch { .. })
        ));
        assert!(map_at_k(&codes, &labels, &codes, &labels, MapConfig::top_k(0)).is_err());
    }
}
