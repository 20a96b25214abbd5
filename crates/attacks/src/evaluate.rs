//! Robust accuracy and robust mAP over a list of budgets ε, as foolbox's `epsilons=[…]`.

use burn::tensor::Tensor;
use signsym_feedback::{FrozenWeightsGuard, frozen_weights};
use signsym_metrics::{LabelSets, MapConfig, PackedCodes, RobustMetric, RobustnessCurve, map_at_k};

use crate::bounds::check_batch;
use crate::decision::MinimizationAttack;
use crate::error::{AttackError, check_count, check_epsilon};
use crate::model::AttackModel;
use crate::pgd::BoundedAttack;
use crate::retrieval::{HashDatabase, RetrievalAttack};
use crate::source::GradientSource;

/// Splits `0..n` into chunks of `size`.
pub(crate) fn chunks(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(size)).map(move |k| k * size..((k + 1) * size).min(n))
}

pub(crate) fn check_epsilons(epsilons: &[f64]) -> Result<(), AttackError> {
    if epsilons.is_empty() {
        return Err(crate::error::invalid(
            "epsilons",
            "[]",
            "needs at least one budget",
        ));
    }
    epsilons.iter().try_for_each(|&e| check_epsilon(e))
}

/// Per budget and sample, whether the sample withstands `attack` (is still classified correctly).
///
/// Each ε is attacked separately (a smaller budget is not a by-product of a larger one), in
/// batches of `batch_size`. At ε = 0 every attack returns its input, so the first row is clean
/// accuracy per sample.
pub fn robust_per_sample(
    model: &dyn AttackModel,
    attack: &dyn BoundedAttack,
    images: &Tensor<4>,
    labels: &[usize],
    epsilons: &[f64],
    source: &GradientSource<'_>,
    batch_size: usize,
) -> Result<Vec<Vec<bool>>, AttackError> {
    robust_per_sample_ticking(
        model,
        attack,
        images,
        labels,
        epsilons,
        source,
        batch_size,
        &|| {},
    )
}

/// [`robust_per_sample`], calling `tick` after every attacked batch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn robust_per_sample_ticking(
    model: &dyn AttackModel,
    attack: &dyn BoundedAttack,
    images: &Tensor<4>,
    labels: &[usize],
    epsilons: &[f64],
    source: &GradientSource<'_>,
    batch_size: usize,
    tick: &dyn Fn(),
) -> Result<Vec<Vec<bool>>, AttackError> {
    check_epsilons(epsilons)?;
    check_count("batch size", batch_size)?;
    let n = images.dims()[0];
    check_batch("labels", n, labels.len())?;
    // The weights are fixed for the whole evaluation: each layer's feedback tensor is formed once.
    frozen_weights(|| {
        epsilons
            .iter()
            .map(|&epsilon| {
                let mut robust = Vec::with_capacity(n);
                for range in chunks(n, batch_size) {
                    let batch = images.clone().slice(range.clone());
                    let out = attack.run(model, &batch, &labels[range], epsilon, source)?;
                    robust.extend(out.success.iter().map(|s| !s));
                    tick();
                }
                Ok(robust)
            })
            .collect()
    })
}

/// A robust-accuracy curve from per-sample outcomes (Wilson intervals at `confidence`).
pub(crate) fn curve_from(
    label: String,
    epsilons: &[f64],
    robust: &[Vec<bool>],
    confidence: f64,
) -> Result<RobustnessCurve, AttackError> {
    let mut curve = RobustnessCurve::new(label, RobustMetric::Accuracy, confidence)?;
    for (&epsilon, row) in epsilons.iter().zip(robust) {
        let correct = row.iter().filter(|r| **r).count();
        curve.push_accuracy(epsilon, correct, row.len())?;
    }
    Ok(curve)
}

/// Robust accuracy of `model` against `attack` with gradients from `source`, for each ε.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use signsym_attacks::{Fgsm, FnModel, GradientSource, robust_accuracy};
///
/// let device = Device::flex().autodiff();
/// let model = FnModel::new(2, |x: Tensor<4>| {
///     let s = x.flatten::<2>(1, 3).mean_dim(1);
///     Tensor::cat(vec![s.clone().sub_scalar(0.5), s.neg().add_scalar(0.5)], 1)
/// });
/// let images = Tensor::<4>::full([4, 1, 2, 2], 0.45, &device);
/// let curve = robust_accuracy(&model, &Fgsm::default(), &images, &[1; 4], &[0.0, 0.1], &GradientSource::Exact, 32)?;
/// assert_eq!(curve.points[0].value, 1.0); // clean: mean 0.45 < 0.5, class 1
/// assert_eq!(curve.points[1].value, 0.0); // +0.1 everywhere crosses 0.5
/// # Ok::<(), signsym_attacks::AttackError>(())
/// ```
pub fn robust_accuracy(
    model: &dyn AttackModel,
    attack: &dyn BoundedAttack,
    images: &Tensor<4>,
    labels: &[usize],
    epsilons: &[f64],
    source: &GradientSource<'_>,
    batch_size: usize,
) -> Result<RobustnessCurve, AttackError> {
    let robust = robust_per_sample(model, attack, images, labels, epsilons, source, batch_size)?;
    curve_from(
        format!("{}/{}", attack.name(), source.name()),
        epsilons,
        &robust,
        0.95,
    )
}

/// Runs a perturbation-minimising attack in batches and returns, per ε, which samples withstand
/// it (their smallest adversarial found is farther than ε), with the smallest distances.
pub fn min_norm_per_sample(
    model: &dyn AttackModel,
    attack: &dyn MinimizationAttack,
    images: &Tensor<4>,
    labels: &[usize],
    epsilons: &[f64],
    batch_size: usize,
) -> Result<(Vec<Vec<bool>>, Vec<f64>), AttackError> {
    min_norm_per_sample_ticking(model, attack, images, labels, epsilons, batch_size, &|| {})
}

/// [`min_norm_per_sample`], calling `tick` after every attacked batch.
pub(crate) fn min_norm_per_sample_ticking(
    model: &dyn AttackModel,
    attack: &dyn MinimizationAttack,
    images: &Tensor<4>,
    labels: &[usize],
    epsilons: &[f64],
    batch_size: usize,
    tick: &dyn Fn(),
) -> Result<(Vec<Vec<bool>>, Vec<f64>), AttackError> {
    check_epsilons(epsilons)?;
    check_count("batch size", batch_size)?;
    let n = images.dims()[0];
    check_batch("labels", n, labels.len())?;
    let mut distances = Vec::with_capacity(n);
    for range in chunks(n, batch_size) {
        let batch = images.clone().slice(range.clone());
        distances.extend(attack.run(model, &batch, &labels[range])?.distances);
        tick();
    }
    let robust = epsilons
        .iter()
        .map(|&e| distances.iter().map(|&d| d > e).collect())
        .collect();
    Ok((robust, distances))
}

/// Robust mAP@k of a hashing model: each query set is attacked at each ε and its adversarial
/// codes ranked against `database` (percentile-bootstrap intervals, `resamples` draws).
#[allow(clippy::too_many_arguments)]
pub fn robust_map(
    model: &dyn AttackModel,
    attack: &dyn RetrievalAttack,
    queries: &Tensor<4>,
    query_labels: &LabelSets,
    database: &HashDatabase,
    epsilons: &[f64],
    source: &GradientSource<'_>,
    map: MapConfig,
    batch_size: usize,
) -> Result<RobustnessCurve, AttackError> {
    let per_query = robust_ap_per_query(
        model,
        attack,
        queries,
        query_labels,
        database,
        epsilons,
        source,
        map,
        batch_size,
    )?;
    map_curve(
        format!("{}/{}", attack.name(), source.name()),
        map,
        epsilons,
        &per_query,
    )
}

/// Per budget and query, the AP@k of the query's adversarial code (`[ε][query]`): what
/// [`robust_map`] averages. A query's AP depends on its own code alone, so the APs of
/// consecutive query sets attacked apart (in the same batches) concatenate into those of the
/// whole set, and [`map_curve`] of the concatenation is the whole set's curve.
#[allow(clippy::too_many_arguments)]
pub fn robust_ap_per_query(
    model: &dyn AttackModel,
    attack: &dyn RetrievalAttack,
    queries: &Tensor<4>,
    query_labels: &LabelSets,
    database: &HashDatabase,
    epsilons: &[f64],
    source: &GradientSource<'_>,
    map: MapConfig,
    batch_size: usize,
) -> Result<Vec<Vec<f64>>, AttackError> {
    check_epsilons(epsilons)?;
    check_count("batch size", batch_size)?;
    let n = queries.dims()[0];
    check_batch("query labels", n, query_labels.len())?;
    let bits = database.bits();
    let mut per_query = Vec::with_capacity(epsilons.len());
    // The weights are fixed for the whole evaluation: each layer's feedback tensor is formed once.
    let _frozen = FrozenWeightsGuard::enter();
    for &epsilon in epsilons {
        let mut codes = Vec::with_capacity(n * bits);
        for range in chunks(n, batch_size) {
            let batch = queries.clone().slice(range.clone());
            let labels = query_labels.slice(range.clone())?;
            let out = attack.run(model, &batch, &labels, database, epsilon, source)?;
            codes.extend(out.adversarial_codes);
        }
        let packed = PackedCodes::from_real(&codes, bits)?;
        let report = map_at_k(
            &packed,
            query_labels,
            database.packed(),
            database.labels(),
            map,
        )?;
        per_query.push(report.per_query_ap);
    }
    Ok(per_query)
}

/// The robust mAP@k curve of per-query APs (`[ε][query]`), with percentile-bootstrap intervals
/// over queries (1,000 resamples, seed 0).
pub fn map_curve(
    label: String,
    map: MapConfig,
    epsilons: &[f64],
    per_query: &[Vec<f64>],
) -> Result<RobustnessCurve, AttackError> {
    check_batch("per-ε AP lists", epsilons.len(), per_query.len())?;
    let mut curve = RobustnessCurve::new(label, RobustMetric::MapAtK(map.top_k), 0.95)?;
    for (&epsilon, aps) in epsilons.iter().zip(per_query) {
        curve.push_map(epsilon, aps, 1000, 0)?;
    }
    Ok(curve)
}
