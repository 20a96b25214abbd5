//! Attacks against closed forms, their invariants, and their strength on a small CNN trained on
//! the bundled digits.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use signsym_attacks::*;
use signsym_data::{ImageDataset, read_digits_csv, train_test_split};
use signsym_feedback::layers::FeedbackLinearConfig;
use signsym_feedback::{FeedbackConfig, FeedbackRule, set_rule};
use signsym_losses::{CrossEntropyConfig, HyP2Config};
use signsym_metrics::{LabelSets, MapConfig, PackedCodes, map_at_k};
use signsym_models::{
    Backbone, BatchSource, FineTuneConfig, ModelError, Network, SmallCnn, SmallCnnConfig, Task,
    fine_tune, pretrain,
};

/// Tests that draw from the device's random generator (seeded globally on Flex) take turns, so
/// that the same seed gives the same model whatever runs beside them.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().unwrap()
}

fn digits() -> (ImageDataset, ImageDataset) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/sklearn_digits.csv.gz"
    );
    let split = train_test_split(&read_digits_csv(path).unwrap(), 0.25, 7).unwrap();
    (split.train, split.test)
}

fn images(data: &ImageDataset, n: usize, device: &Device) -> (Tensor<4>, Vec<usize>) {
    let indices: Vec<usize> = (0..n.min(data.len())).collect();
    let (x, _) = data.batch(&indices, device).unwrap();
    (x, indices.iter().map(|&i| data.labels[i]).collect())
}

fn small_cnn(task: Task, device: &Device) -> Network<SmallCnn> {
    let backbone = SmallCnnConfig::new()
        .with_channels([8, 16])
        .with_hidden(32)
        .with_side(8)
        .init(device)
        .unwrap();
    Network::new(backbone, task, device).unwrap()
}

fn bp_digits_model(train: &ImageDataset, device: &Device) -> Network<SmallCnn> {
    device.seed(3);
    let config = FineTuneConfig::pretraining(3e-3)
        .with_weight_decay(0.0)
        .with_epochs(6)
        .with_seed(3)
        .with_progress(false);
    let ce = CrossEntropyConfig::new().init(device).unwrap();
    pretrain(
        small_cnn(Task::classification(10), device),
        ce,
        train,
        None,
        &config,
        None,
    )
    .unwrap()
    .network
}

fn accuracy(model: &dyn AttackModel, x: &Tensor<4>, labels: &[usize]) -> f64 {
    let p = predict(model, x.clone()).unwrap();
    p.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
}

/// Softmax regression through a feedback linear layer: the input gradient of the summed
/// cross-entropy is `(softmax(xW + b) − onehot(y))·Vᵀ`, with `V = W` (exact) or `V = sign(W)`
/// (uSF feedback). FGSM must step by ε along its sign, then clip.
#[test]
fn fgsm_on_softmax_regression_equals_the_closed_form_for_both_sources() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    device.seed(11);
    let (batch, side, classes) = (6, 3, 4);
    let d = side * side;
    let layer = FeedbackLinearConfig::new(d, classes)
        .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::USf))
        .init(&device);
    let model = FnModel::new(classes, |x: Tensor<4>| layer.forward(x.flatten::<2>(1, 3)));
    let x = Tensor::<4>::random(
        [batch, 1, side, side],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let labels = [0, 1, 2, 3, 1, 0];
    let w = host(layer.weight.val());
    let b = host(layer.bias.as_ref().unwrap().val());
    let xs = host(x.clone());
    let probs = host(softmax(
        layer.forward(x.clone().flatten::<2>(1, 3)).detach(),
        1,
    ));
    let eps = 0.07f32;
    for (source, feedback) in [
        (GradientSource::Exact, false),
        (GradientSource::Feedback, true),
    ] {
        let out = Fgsm::default()
            .run(&model, &x, &labels, eps as f64, &source)
            .unwrap();
        let adv = host(out.adversarial.clone());
        let mut skipped = 0;
        for i in 0..batch {
            for k in 0..d {
                let g: f32 = (0..classes)
                    .map(|c| {
                        let err = probs[i * classes + c] - if labels[i] == c { 1.0 } else { 0.0 };
                        let v = w[k * classes + c];
                        err * if feedback { v.signum() } else { v }
                    })
                    .sum();
                if g.abs() < 1e-5 {
                    // With sign(W), a row of equal signs sums the errors, which sum to zero:
                    // the gradient's sign is rounding noise there.
                    skipped += 1;
                    continue;
                }
                let expected = (xs[i * d + k] + eps * g.signum()).clamp(0.0, 1.0);
                assert!(
                    (adv[i * d + k] - expected).abs() < 1e-6,
                    "{source:?} sample {i} pixel {k}: {} vs {expected} (g = {g})",
                    adv[i * d + k]
                );
            }
        }
        assert!(
            skipped <= batch * d / 4,
            "{skipped} pixels had no gradient sign"
        );
        // Success is judged on the model's own prediction of the returned batch.
        let scores = host(model.scores(out.adversarial.clone()));
        for i in 0..batch {
            let row = &scores[i * classes..(i + 1) * classes];
            let argmax = (0..classes)
                .max_by(|&a, &c| row[a].total_cmp(&row[c]))
                .unwrap();
            assert_eq!(out.success[i], argmax != labels[i]);
        }
    }
    assert_eq!(b.len(), classes);
}

#[test]
fn pgd_iterates_stay_in_the_ball_and_the_box() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    device.seed(5);
    let layer = FeedbackLinearConfig::new(16, 3).init(&device);
    let model = FnModel::new(3, |x: Tensor<4>| {
        layer
            .forward(x.flatten::<2>(1, 3).mul_scalar(4.0))
            .tanh()
            .mul_scalar(3.0)
    });
    let x = Tensor::<4>::random([5, 1, 4, 4], Distribution::Uniform(0.0, 1.0), &device);
    let x0 = host(x.clone());
    let labels = [0, 1, 2, 0, 1];
    for norm in [Norm::Linf, Norm::L2] {
        for eps in [0.03, 0.3, 2.0] {
            for steps in 1..=4 {
                let pgd = PgdConfig::new()
                    .with_norm(norm)
                    .with_steps(steps)
                    .with_step_size(StepSize::Relative(0.6))
                    .with_random_start(true)
                    .with_seed(9)
                    .init()
                    .unwrap();
                let out = pgd
                    .run(&model, &x, &labels, eps, &GradientSource::Feedback)
                    .unwrap();
                let adv = host(out.adversarial);
                assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)), "box violated");
                for (dist, _) in norm.distances(&adv, &x0, 16).iter().zip(0..) {
                    assert!(
                        *dist <= eps * (1.0 + 1e-5) + 1e-6,
                        "{norm:?} ε={eps} t={steps}: {dist}"
                    );
                }
            }
        }
    }
}

#[test]
fn invalid_settings_and_inputs_give_typed_errors() {
    let device = Device::flex().autodiff();
    let model = FnModel::new(2, |x: Tensor<4>| x.flatten::<2>(1, 3).slice([0..5, 0..2]));
    let x = Tensor::<4>::full([2, 1, 1, 2], 0.5, &device);
    let fgsm = Fgsm::default();
    let bad_eps = fgsm.run(&model, &x, &[0, 1], -0.1, &GradientSource::Exact);
    assert!(matches!(
        bad_eps,
        Err(AttackError::InvalidParameter {
            name: "epsilon",
            ..
        })
    ));
    let nan_eps = fgsm.run(&model, &x, &[0, 1], f64::NAN, &GradientSource::Exact);
    assert!(matches!(nan_eps, Err(AttackError::InvalidParameter { .. })));
    assert!(matches!(
        PgdConfig::new().with_steps(0).init(),
        Err(AttackError::InvalidParameter { name: "steps", .. })
    ));
    assert!(matches!(
        PgdConfig::new()
            .with_step_size(StepSize::Absolute(0.0))
            .init(),
        Err(AttackError::InvalidParameter {
            name: "step size",
            ..
        })
    ));
    assert!(matches!(
        fgsm.run(&model, &x, &[0], 0.1, &GradientSource::Exact),
        Err(AttackError::ShapeMismatch {
            what: "labels",
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        fgsm.run(&model, &x, &[0, 2], 0.1, &GradientSource::Exact),
        Err(AttackError::LabelOutOfRange {
            index: 1,
            label: 2,
            classes: 2
        })
    ));
    let nan = Tensor::<4>::from_data(
        TensorData::new(vec![0.5, f32::NAN, 0.1, 0.2], [2, 1, 1, 2]),
        &device,
    );
    assert!(matches!(
        fgsm.run(&model, &nan, &[0, 1], 0.1, &GradientSource::Exact),
        Err(AttackError::NonFinite { what: "images" })
    ));
    let outside = Tensor::<4>::full([2, 1, 1, 2], 1.5, &device);
    assert!(matches!(
        fgsm.run(&model, &outside, &[0, 1], 0.1, &GradientSource::Exact),
        Err(AttackError::OutOfBox { max, .. }) if max == 1.5
    ));
    assert!(matches!(
        fgsm.run(&model, &x, &[0, 1], 0.1, &GradientSource::Eot(0)),
        Err(AttackError::InvalidParameter {
            name: "EOT draws",
            ..
        })
    ));
    // A model without autodiff has no input gradient to follow.
    let plain = Tensor::<4>::full([2, 1, 1, 2], 0.5, &Device::flex());
    let constant = FnModel::new(2, |x: Tensor<4>| {
        Tensor::zeros([x.dims()[0], 2], &Device::flex())
    });
    assert!(matches!(
        fgsm.run(&constant, &plain, &[0, 1], 0.1, &GradientSource::Exact),
        Err(AttackError::NotAutodiff)
    ));
    assert!(InputBox::new(1.0, 0.0).is_err());
    assert!(
        HopSkipJumpConfig::new()
            .with_query_budget(0)
            .init()
            .is_err()
    );
    assert!(
        BoundaryAttackConfig::new()
            .with_step_adaptation(1.0)
            .init()
            .is_err()
    );
    assert!(HagConfig::new().with_steps(0).init().is_err());
    assert!(SdhaConfig::new().with_sigma(-1.0).init().is_err());
    assert!(RobustnessSuite::new(Norm::Linf, vec![0.1, 0.05]).is_err());
}

/// The classification study on a BP-trained small CNN, then on a uSF fine-tuned copy.
#[test]
fn digits_cnn_pgd_fgsm_sources_and_decision_attacks() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    let (train, test) = digits();
    let bp = attack_mode(bp_digits_model(&train, &device));
    let (x, labels) = images(&test, 200, &device);
    let clean = accuracy(&bp, &x, &labels);
    assert!(clean > 0.85, "clean accuracy {clean}");

    // ε = 0 reproduces clean accuracy exactly, with and without a random start.
    let pgd = PgdConfig::paper().init().unwrap();
    let foolbox = PgdConfig::foolbox_linf().with_steps(10).init().unwrap();
    let eps = [0.0, 0.05, 0.1, 0.2];
    let fgsm_curve = robust_accuracy(
        &bp,
        &Fgsm::default(),
        &x,
        &labels,
        &eps,
        &GradientSource::Exact,
        100,
    )
    .unwrap();
    let pgd_curve =
        robust_accuracy(&bp, &pgd, &x, &labels, &eps, &GradientSource::Exact, 100).unwrap();
    let rand_curve = robust_accuracy(
        &bp,
        &foolbox,
        &x,
        &labels,
        &eps,
        &GradientSource::Exact,
        100,
    )
    .unwrap();
    for curve in [&fgsm_curve, &pgd_curve, &rand_curve] {
        assert_eq!(curve.points[0].value, clean, "{}", curve.label);
    }
    let values =
        |c: &signsym_metrics::RobustnessCurve| c.points.iter().map(|p| p.value).collect::<Vec<_>>();
    println!(
        "BP clean {clean:.3}; FGSM {:?}; PGD-5 {:?}; PGD-10 rs {:?}",
        values(&fgsm_curve),
        values(&pgd_curve),
        values(&rand_curve)
    );
    // PGD breaks the model at a moderate budget and is at least as strong as FGSM.
    assert!(
        pgd_curve.points[3].value < 0.1,
        "PGD at ε = 0.2: {}",
        pgd_curve.points[3].value
    );
    // Per ε within 3 of 200 samples (PGD is not stronger on every sample), and stronger overall.
    let total =
        |c: &signsym_metrics::RobustnessCurve| c.points.iter().map(|p| p.value).sum::<f64>();
    assert!(total(&pgd_curve) < total(&fgsm_curve));
    for (p, f) in pgd_curve.points.iter().zip(&fgsm_curve.points) {
        assert!(
            p.value <= f.value + 0.015,
            "ε = {}: PGD {} vs FGSM {}",
            p.epsilon,
            p.value,
            f.value
        );
    }
    // For BP the feedback backward is the exact one.
    let bp_cos = gradient_alignment(&bp, &x, &labels).unwrap();
    assert!(
        bp_cos.per_sample.iter().all(|&c| c > 0.9999),
        "BP cosine {}",
        bp_cos.mean()
    );

    // Fine-tune a copy with uSF, as the paper does.
    let usf = bp_digits_model(&train, &device);
    let config = FineTuneConfig::new()
        .with_rule(Some(FeedbackRule::USf))
        .with_backbone_lr(1e-3)
        .with_head_lr(1e-3)
        .with_weight_decay(0.0)
        .with_epochs(2)
        .with_seed(4)
        .with_progress(false);
    let ce = CrossEntropyConfig::new().init(&device).unwrap();
    let usf = attack_mode(
        fine_tune(usf, ce, &train, None, &config, None)
            .unwrap()
            .network,
    );
    let usf_clean = accuracy(&usf, &x, &labels);
    let feedback = robust_per_sample(
        &usf,
        &pgd,
        &x,
        &labels,
        &[0.05],
        &GradientSource::Feedback,
        100,
    )
    .unwrap();
    let exact = robust_per_sample(
        &usf,
        &pgd,
        &x,
        &labels,
        &[0.05],
        &GradientSource::Exact,
        100,
    )
    .unwrap();
    let broken = |r: &Vec<Vec<bool>>| r[0].iter().filter(|s| !**s).count();
    println!(
        "uSF clean {usf_clean:.3}; PGD-5 ε=0.05 broken: feedback {} exact {} of 200",
        broken(&feedback),
        broken(&exact)
    );
    assert!(broken(&exact) >= broken(&feedback));
    let usf_cos = gradient_alignment(&usf, &x, &labels).unwrap();
    println!(
        "cosine feedback/exact: BP {:.4}, uSF {:.4}",
        bp_cos.mean(),
        usf_cos.mean()
    );
    assert!(usf_cos.mean() < 0.99, "uSF cosine {}", usf_cos.mean());

    // A surrogate that is the model itself gives exactly the exact-gradient attack.
    let (x16, l16) = (x.clone().slice(0..16), &labels[..16]);
    let exact_adv = host(
        pgd.run(&usf, &x16, l16, 0.05, &GradientSource::Exact)
            .unwrap()
            .adversarial,
    );
    let self_transfer = pgd
        .run(&usf, &x16, l16, 0.05, &GradientSource::Transfer(&usf))
        .unwrap();
    assert_eq!(host(self_transfer.adversarial), exact_adv);
    // Transfer from the BP model: crafted there, judged on the uSF model.
    let transfer = pgd
        .run(&usf, &x16, l16, 0.05, &GradientSource::Transfer(&bp))
        .unwrap();
    let judged = predict(&usf, transfer.adversarial.clone()).unwrap();
    assert_eq!(
        transfer.success,
        judged
            .iter()
            .zip(l16)
            .map(|(p, l)| p != l)
            .collect::<Vec<_>>()
    );
    // brSF redraws its feedback at every backward: one draw per seed, EOT averages draws.
    let mut brsf = usf.duplicate();
    set_rule(&mut brsf, FeedbackRule::BrSf, 0).unwrap();
    let brsf = attack_mode(brsf);
    let pgd_seed = |seed| PgdConfig::paper().with_seed(seed).init().unwrap();
    let run = |seed, source: GradientSource<'_>| {
        host(
            pgd_seed(seed)
                .run(&brsf, &x16, l16, 0.05, &source)
                .unwrap()
                .adversarial,
        )
    };
    assert_eq!(
        run(1, GradientSource::Feedback),
        run(1, GradientSource::Feedback)
    );
    assert_ne!(
        run(1, GradientSource::Feedback),
        run(2, GradientSource::Feedback)
    );
    assert_eq!(
        run(1, GradientSource::Eot(4)),
        run(1, GradientSource::Eot(4))
    );
    assert_ne!(
        run(1, GradientSource::Eot(4)),
        run(1, GradientSource::Feedback)
    );

    // Decision-based attacks on 12 samples: adversarial, in the box, shrinking, within budget.
    let (xs, ls) = (x.clone().slice(0..12), &labels[..12]);
    let budget = 1500;
    let hsj = HopSkipJumpConfig::new()
        .with_steps(20)
        .with_query_budget(budget)
        .init()
        .unwrap();
    let hsj_inf = HopSkipJumpConfig::new()
        .with_norm(Norm::Linf)
        .with_steps(20)
        .with_query_budget(budget)
        .init()
        .unwrap();
    let boundary = BoundaryAttackConfig::new()
        .with_steps(600)
        .with_query_budget(budget)
        .init()
        .unwrap();
    for attack in [&hsj as &dyn MinimizationAttack, &hsj_inf, &boundary] {
        let out = attack.run(&bp, &xs, ls).unwrap();
        let adv = host(out.adversarial.clone());
        assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)));
        let predicted = predict(&bp, out.adversarial.clone()).unwrap();
        let x0 = host(xs.clone());
        let measured = out.norm.distances(&adv, &x0, 64);
        let mut shrunk = 0;
        for i in 0..12 {
            assert!(
                out.success[i],
                "{}: no adversarial for sample {i}",
                attack.name()
            );
            assert_ne!(
                predicted[i],
                ls[i],
                "{}: sample {i} not adversarial",
                attack.name()
            );
            assert!(
                out.queries[i] <= budget,
                "{}: {} queries",
                attack.name(),
                out.queries[i]
            );
            assert!((measured[i] - out.distances[i]).abs() < 1e-5);
            assert!(out.distances[i] <= out.initial_distances[i] + 1e-9);
            if out.distances[i] < 0.9 * out.initial_distances[i] {
                shrunk += 1;
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{}: median distance {:.3} → {:.3}, {shrunk} of 12 shrank by 10 %, queries max {}",
            attack.name(),
            median(out.initial_distances.clone()),
            median(out.distances.clone()),
            out.queries.iter().max().unwrap()
        );
        assert!(
            shrunk >= 9,
            "{}: only {shrunk} of 12 perturbations shrank by 10 %",
            attack.name()
        );
    }

    // Targeted: the smallest perturbation into the next class.
    let targets: Vec<usize> = ls.iter().map(|l| (l + 1) % 10).collect();
    let out = hsj.run_targeted(&bp, &xs, &targets).unwrap();
    let predicted = predict(&bp, out.adversarial.clone()).unwrap();
    for i in 0..12 {
        if out.success[i] {
            assert_eq!(predicted[i], targets[i], "targeted sample {i}");
        }
    }
    let reached = out.success.iter().filter(|s| **s).count();
    println!(
        "hopskipjump-l2 targeted: {reached} of 12 reached, median distance {:.3}",
        {
            let mut d: Vec<f64> = out
                .distances
                .iter()
                .copied()
                .filter(|d| d.is_finite())
                .collect();
            d.sort_by(f64::total_cmp);
            d.get(d.len() / 2).copied().unwrap_or(f64::NAN)
        }
    );
    // A targeted start needs noise or a batch image the model puts in the target class, so the
    // batch's classes bound the count (measured 6 here; 9 under the initial weights drawn
    // before the initialisation became eager; four times the queries reach no more).
    assert!(reached >= 5, "targeted HopSkipJump reached {reached} of 12");

    // A suite over both sources and HopSkipJump, aggregated to the worst case.
    let report = RobustnessSuite::new(Norm::Linf, vec![0.0, 0.05, 0.1])
        .unwrap()
        .attack(&pgd, GradientSource::Feedback)
        .attack(&pgd, GradientSource::Exact)
        .decision_attack(&hsj_inf)
        .with_gradient_cosine(true)
        .with_progress(true)
        .run(&usf, &xs, ls)
        .unwrap();
    for (k, point) in report.worst_case.points.iter().enumerate() {
        let least = report
            .entries
            .iter()
            .map(|e| e.curve.points[k].value)
            .fold(1.0, f64::min);
        assert!(
            point.value <= least,
            "the worst case is at most every entry"
        );
    }
    assert_eq!(report.worst_case.points[0].value, report.clean_accuracy);
    assert_eq!(report.gradient_cosine.as_ref().map(Vec::len), Some(12));
}

/// The report's checks on hand-made curves.
#[test]
fn obfuscation_flags_and_curve_warnings() {
    use signsym_metrics::{RobustMetric, RobustnessCurve};
    let curve = |label: &str, values: &[f64]| {
        let mut c = RobustnessCurve::new(label, RobustMetric::Accuracy, 0.95).unwrap();
        for (e, v) in [0.0, 0.05, 0.1, 0.2].iter().zip(values) {
            c.push_accuracy(*e, (v * 100.0).round() as usize, 100)
                .unwrap();
        }
        c
    };
    let entry = |label: &str, source, values: &[f64]| EntryReport {
        attack: label.into(),
        name: label.split('/').next().unwrap().into(),
        source,
        curve: curve(label, values),
        distances: None,
        per_sample: Vec::new(),
    };
    let entries = vec![
        entry(
            "pgd5-linf/feedback",
            SourceKind::Feedback,
            &[0.9, 0.8, 0.7, 0.6],
        ),
        entry("pgd5-linf/exact", SourceKind::Exact, &[0.9, 0.5, 0.1, 0.0]),
    ];
    let flags = obfuscation_flags(&entries, 0.05);
    let flagged: Vec<f64> = flags.iter().map(|f| f.epsilon).collect();
    assert_eq!(flagged, vec![0.05, 0.1, 0.2]);
    assert_eq!(flags[0].reference_entry, "pgd5-linf/exact");
    assert!((flags[2].feedback - 0.6).abs() < 1e-12 && flags[2].reference == 0.0);
    // Rising, then a stall well above zero after the curve started falling.
    let warnings = curve_warnings(&curve("c", &[0.9, 0.5, 0.6, 0.6]), 0.02, 0.05);
    assert!(matches!(warnings[0], CurveWarning::Rises { to_epsilon, .. } if to_epsilon == 0.1));
    assert!(
        matches!(warnings[1], CurveWarning::Stalls { from_epsilon, .. } if from_epsilon == 0.1)
    );
    assert_eq!(warnings.len(), 2);
    assert!(curve_warnings(&curve("ok", &[0.9, 0.5, 0.1, 0.0]), 0.02, 0.05).is_empty());
}

struct OneHot<'a>(&'a ImageDataset);

impl BatchSource for OneHot<'_> {
    type Target = Tensor<2>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<2>), ModelError> {
        let (images, classes) = self.0.batch(indices, device)?;
        Ok((images, classes.one_hot(self.0.num_classes).float()))
    }
}

/// HAG and SDHA on a small hashing model trained with HyP² on the digits.
#[test]
fn hag_and_sdha_flip_bits_and_lower_map() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    device.seed(21);
    let (train, test) = digits();
    let bits = 16;
    let hyp2 = HyP2Config::new(10).with_bits(bits).init(&device).unwrap();
    let config = FineTuneConfig::pretraining(3e-3)
        .with_weight_decay(0.0)
        .with_epochs(6)
        .with_seed(21)
        .with_progress(false);
    let net = pretrain(
        small_cnn(Task::hashing(bits), &device),
        hyp2,
        &OneHot(&train),
        None,
        &config,
        None,
    )
    .unwrap()
    .network;
    let net = attack_mode(net);
    let (db_x, db_labels) = images(&train, 600, &device);
    let database = HashDatabase::encode(
        &net,
        &db_x,
        LabelSets::from_classes(&db_labels, 10).unwrap(),
        200,
    )
    .unwrap();
    let (q, q_labels) = images(&test, 60, &device);
    let q_sets = LabelSets::from_classes(&q_labels, 10).unwrap();
    let map = MapConfig::top_k(100);
    let clean_codes = PackedCodes::from_tensor(net.codes(q.clone()).unwrap()).unwrap();
    let clean = map_at_k(
        &clean_codes,
        &q_sets,
        database.packed(),
        database.labels(),
        map,
    )
    .unwrap()
    .map;
    assert!(clean > 0.6, "clean mAP@100 {clean}");
    let hag = HagConfig::paper().init().unwrap();
    let sdha = SdhaConfig::paper().init().unwrap();
    for attack in [&hag as &dyn RetrievalAttack, &sdha] {
        let zero = attack
            .run(&net, &q, &q_sets, &database, 0.0, &GradientSource::Exact)
            .unwrap();
        assert_eq!(zero.mean_hamming(), 0.0);
        let out = attack
            .run(&net, &q, &q_sets, &database, 0.1, &GradientSource::Exact)
            .unwrap();
        let curve = robust_map(
            &net,
            attack,
            &q,
            &q_sets,
            &database,
            &[0.0, 0.1],
            &GradientSource::Exact,
            map,
            30,
        )
        .unwrap();
        println!(
            "{}: mean Hamming {:.2} of {bits}; mAP@100 {:.3} → {:.3}",
            attack.name(),
            out.mean_hamming(),
            curve.points[0].value,
            curve.points[1].value
        );
        assert!((curve.points[0].value - clean).abs() < 1e-12);
        assert!(
            out.mean_hamming() > 2.0,
            "{}: mean Hamming {}",
            attack.name(),
            out.mean_hamming()
        );
        assert!(
            curve.points[1].value < clean - 0.1,
            "{}: mAP {} vs {clean}",
            attack.name(),
            curve.points[1].value
        );
        let linf = Norm::Linf.distances(&host(out.adversarial.clone()), &host(q.clone()), 64);
        assert!(linf.iter().all(|&d| d <= 0.1 + 1e-6));
    }
    // The module stays usable afterwards (attacks do not change parameters).
    assert_eq!(
        net.num_params(),
        small_cnn(Task::hashing(bits), &device).num_params()
    );
}

/// The wgpu device, when the `wgpu` feature is on and an adapter starts (required in CI).
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Option<Device> {
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        Tensor::<1>::from_floats([1.0, 2.0], &device)
            .sum()
            .into_scalar::<f32>();
        device
    });
    match probe {
        Ok(device) => Some(device),
        Err(_) if std::env::var_os("SIGNSYM_REQUIRE_WGPU").is_some() => {
            panic!("SIGNSYM_REQUIRE_WGPU is set but no wgpu adapter could be started")
        }
        Err(_) => {
            eprintln!("note: no wgpu adapter here; skipping the wgpu attacks");
            None
        }
    }
}

/// FGSM and PGD through a uSF layer on wgpu agree with Flex, for both gradient sources.
#[cfg(feature = "wgpu")]
#[test]
fn attacks_on_wgpu_match_flex() {
    let Some(plain) = wgpu_device() else { return };
    let gpu = plain.clone().autodiff();
    let _rng = rng_lock();
    let flex = Device::flex().autodiff();
    flex.seed(8);
    let layer = FeedbackLinearConfig::new(16, 10)
        .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::USf))
        .init(&flex);
    // Moved as plain tensors, then tracked again: a moved autodiff parameter would be a graph
    // node, consumed by the first backward.
    let gpu_layer = layer.valid().to_device(&plain).train();
    let x = Tensor::<4>::random([8, 1, 4, 4], Distribution::Uniform(0.0, 1.0), &flex);
    let x_gpu = Tensor::<4>::from_data(x.to_data(), &gpu);
    let labels = [0, 1, 2, 3, 4, 5, 6, 9];
    let on_flex = FnModel::new(10, |x: Tensor<4>| layer.forward(x.flatten::<2>(1, 3)));
    let on_gpu = FnModel::new(10, |x: Tensor<4>| gpu_layer.forward(x.flatten::<2>(1, 3)));
    let pgd = PgdConfig::new()
        .with_norm(Norm::L2)
        .with_random_start(true)
        .init()
        .unwrap();
    for source in [GradientSource::Feedback, GradientSource::Exact] {
        for attack in [&Fgsm::default() as &dyn BoundedAttack, &pgd] {
            let a = attack.run(&on_flex, &x, &labels, 0.1, &source).unwrap();
            let b = attack.run(&on_gpu, &x_gpu, &labels, 0.1, &source).unwrap();
            let (a, b) = (host(a.adversarial), host(b.adversarial));
            let close = a
                .iter()
                .zip(&b)
                .filter(|(p, q)| (*p - *q).abs() < 1e-4)
                .count();
            // A pixel whose gradient is rounding noise may take the other sign (with uSF, a row of
            // equal signs sums errors that sum to zero; rare with ten outputs).
            assert!(
                close * 100 >= a.len() * 97,
                "{} {source:?}: {close} of {} agree",
                attack.name(),
                a.len()
            );
        }
    }
}

/// The DLR losses on a hand-computed case: values and gradients in closed form.
#[test]
fn dlr_losses_match_hand_computed_values_and_gradients() {
    let device = Device::flex().autodiff();
    let scores = Tensor::<2>::from_floats([[3.0, 1.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0]], &device)
        .require_grad();
    let loss = dlr_loss(scores.clone(), &[0, 0]).unwrap();
    // Row 0: y = 0 ranks first, so the runner-up is class 2; π3 is class 1:
    // −(3 − 2) / (3 − 1) = −0.5. Row 1: class 1 leads; π3 is class 0 itself:
    // −(1 − 4) / (4 − 1) = 1.
    let values = host(loss.clone());
    assert!(
        (values[0] + 0.5).abs() < 1e-6 && (values[1] - 1.0).abs() < 1e-6,
        "{values:?}"
    );
    let grads = loss.sum().backward();
    let g = host(scores.grad(&grads).unwrap());
    // Row 0, L = −(z0 − z2)/(z0 − z1): ∂z0 = −(z2 − z1)/4, ∂z1 = −(z0 − z2)/4, ∂z2 = 1/2.
    let expected = [-0.25, -0.25, 0.5, 0.0];
    for (k, e) in expected.iter().enumerate() {
        assert!((g[k] - e).abs() < 1e-6, "∂z{k}: {} vs {e}", g[k]);
    }
    // Row 1, L = −(z0 − z1)/(z1 − z0) = 1 whatever the logits: no gradient.
    assert!(g[4..].iter().all(|v| v.abs() < 1e-6), "{:?}", &g[4..]);

    let scores = Tensor::<2>::from_floats([[3.0, 1.0, 2.0, 0.0]], &device);
    // Target class 2: −(3 − 2) / (3 − (1 + 0)/2) = −0.4.
    let t = targeted_dlr_loss(scores.clone(), &[0], &[2]).unwrap();
    assert!((host(t)[0] + 0.4).abs() < 1e-6);
    assert!(matches!(
        dlr_loss(scores.clone().slice([0..1, 0..2]), &[0]),
        Err(AttackError::InvalidParameter {
            name: "classes",
            ..
        })
    ));
    assert!(targeted_dlr_loss(scores.slice([0..1, 0..3]), &[0], &[1]).is_err());
}

/// Checkpoints as the paper defines them (`w_j = ⌈p_j N⌉`, recurrence on `p_j`), and the step
/// size halving at each one when the loss never rises.
#[test]
fn apgd_checkpoints_and_step_size_schedule_follow_the_paper() {
    for steps in [10, 37, 50, 100, 250] {
        let mut expected = Vec::new();
        let (mut before, mut p) = (0.0f64, 0.22f64);
        while p <= 1.0 + 1e-12 {
            let w = (p * steps as f64 - 1e-9).ceil() as usize;
            if expected.last() != Some(&w) {
                expected.push(w);
            }
            let next = p + (p - before - 0.03).max(0.06);
            before = p;
            p = next;
        }
        assert_eq!(apgd_checkpoints(steps), expected, "N = {steps}");
    }
    let device = Device::flex().autodiff();
    // A model whose loss never changes: every checkpoint halves the step.
    let model = FnModel::new(3, |x: Tensor<4>| {
        let z = x.flatten::<2>(1, 3).sum_dim(1).mul_scalar(0.0);
        Tensor::cat(
            vec![z.clone().add_scalar(1.0), z.clone(), z.sub_scalar(1.0)],
            1,
        )
    });
    let x = Tensor::<4>::full([2, 1, 2, 2], 0.5, &device);
    let eps = 0.1f32;
    let apgd = ApgdConfig::ce().with_steps(50).init().unwrap();
    let trace = apgd
        .trace(&model, &x, &[0, 0], eps as f64, &GradientSource::Exact)
        .unwrap();
    assert_eq!(trace.step_sizes.len(), 50);
    for (i, steps) in trace.step_sizes.iter().enumerate() {
        let halvings = trace.checkpoints.iter().filter(|&&w| w <= i).count() as i32;
        let expected = 2.0 * eps * 0.5f32.powi(halvings);
        for s in steps {
            assert!(
                (s - expected).abs() < 1e-7,
                "iteration {i}: {s} vs {expected}"
            );
        }
    }
}

/// APGD and Square on the BP digits CNN: inside the ball and the box, ε = 0 is clean
/// accuracy, APGD-CE at least as strong as PGD with the same iterations, Square within its
/// budget and breaking a share of the points.
#[test]
fn apgd_and_square_on_the_digits_cnn() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    let (train, test) = digits();
    let bp = attack_mode(bp_digits_model(&train, &device));
    let (x, labels) = images(&test, 120, &device);
    let x0 = host(x.clone());
    let clean = accuracy(&bp, &x, &labels);
    let dim = 64;
    let eps = [0.0, 0.03, 0.06, 0.1];
    let steps = 20;
    let apgd = ApgdConfig::ce().with_steps(steps).init().unwrap();
    let pgd = PgdConfig::new()
        .with_steps(steps)
        .with_step_size(StepSize::Relative(2.5 / steps as f64))
        .with_random_start(true)
        .init()
        .unwrap();
    let a = robust_accuracy(&bp, &apgd, &x, &labels, &eps, &GradientSource::Exact, 60).unwrap();
    let p = robust_accuracy(&bp, &pgd, &x, &labels, &eps, &GradientSource::Exact, 60).unwrap();
    assert_eq!(a.points[0].value, clean);
    let total =
        |c: &signsym_metrics::RobustnessCurve| c.points.iter().map(|p| p.value).sum::<f64>();
    println!(
        "clean {clean:.3}; APGD-CE {:?}; PGD-{steps} {:?}",
        a.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        p.points.iter().map(|p| p.value).collect::<Vec<_>>()
    );
    // APGD-CE is at least as strong as PGD with the same budget of steps, up to one image in
    // the sum over budgets (measured: equal at 0.03 and 0.06, one image weaker at 0.1).
    assert!(
        total(&a) <= total(&p) + 1.0 / labels.len() as f64 + 1e-12,
        "APGD {} vs PGD {}",
        total(&a),
        total(&p)
    );

    for (attack, norm, epsilon) in [
        (
            ApgdConfig::targeted().with_steps(10).with_target_classes(3),
            Norm::Linf,
            0.08,
        ),
        (
            ApgdConfig::dlr().with_steps(10).with_norm(Norm::L2),
            Norm::L2,
            0.6,
        ),
    ] {
        let out = attack
            .init()
            .unwrap()
            .run(&bp, &x, &labels, epsilon, &GradientSource::Exact)
            .unwrap();
        let adv = host(out.adversarial);
        assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)), "box violated");
        for d in norm.distances(&adv, &x0, dim) {
            assert!(
                d <= epsilon * (1.0 + 1e-5) + 1e-6,
                "{norm:?}: {d} > {epsilon}"
            );
        }
        assert!(
            out.gradients.iter().all(|&g| g <= 3 * 11),
            "{:?}",
            out.gradients
        );
    }

    let budget = 300;
    for (norm, epsilon) in [(Norm::Linf, 0.1), (Norm::L2, 1.0)] {
        let square = SquareConfig::new()
            .with_norm(norm)
            .with_queries(budget)
            .with_seed(1)
            .init()
            .unwrap();
        let out = square
            .run(&bp, &x, &labels, epsilon, &GradientSource::Exact)
            .unwrap();
        assert!(
            out.queries.iter().all(|&q| q <= budget),
            "{:?}",
            out.queries
        );
        assert!(out.gradients.iter().all(|&g| g == 0));
        let adv = host(out.adversarial.clone());
        assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)), "box violated");
        for d in norm.distances(&adv, &x0, dim) {
            assert!(
                d <= epsilon * (1.0 + 1e-5) + 1e-6,
                "{norm:?}: {d} > {epsilon}"
            );
        }
        // Judged on the returned points.
        assert_eq!(
            out.success,
            predict(&bp, out.adversarial.clone())
                .unwrap()
                .iter()
                .zip(&labels)
                .map(|(p, l)| p != l)
                .collect::<Vec<_>>()
        );
        let robust = out.robust_accuracy();
        println!("Square {norm:?} ε = {epsilon}: robust accuracy {robust:.3} (clean {clean:.3})");
        assert!(robust < clean - 0.2, "{norm:?}: Square left {robust}");
    }
}

/// AutoAttack through the feedback backward and through the exact gradient of the same
/// weights: identical for BP, apart (and flagged) for uSF.
#[test]
fn autoattack_flags_feedback_obfuscation_on_usf_not_on_bp() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    let (train, test) = digits();
    let (x, labels) = images(&test, 100, &device);
    let bp = attack_mode(bp_digits_model(&train, &device));
    let mut usf = bp_digits_model(&train, &device);
    set_rule(&mut usf, FeedbackRule::USf, 0).unwrap();
    let usf = attack_mode(usf);
    let aa = AutoAttackConfig::new()
        .with_steps(10)
        .with_target_classes(2)
        .with_square_queries(100)
        .init()
        .unwrap();
    let fgsm = Fgsm::default();
    let eps = vec![0.0, 0.04, 0.08];
    let mut gaps = Vec::new();
    for (name, model) in [("bp", &bp), ("usf", &usf)] {
        let report = RobustnessSuite::new(Norm::Linf, eps.clone())
            .unwrap()
            .attack(&fgsm, GradientSource::Feedback)
            .attack(&fgsm, GradientSource::Exact)
            .autoattack(&aa, GradientSource::Feedback)
            .autoattack(&aa, GradientSource::Exact)
            .run(model, &x, &labels)
            .unwrap();
        assert_eq!(report.autoattack.len(), 2);
        let aa_fb = &report.autoattack[0];
        let aa_ex = &report.autoattack[1];
        assert_eq!(aa_fb.curve.points[0].value, report.clean_accuracy);
        for stage in &aa_ex.stages {
            assert_eq!(stage.attacked[0], 0, "ε = 0 attacks nothing");
        }
        // Robust accuracy only falls from stage to stage; the headline is the worst case.
        for k in 0..eps.len() {
            let r: Vec<f64> = aa_ex.stages.iter().map(|s| s.robust_accuracy[k]).collect();
            assert!(r.windows(2).all(|w| w[1] <= w[0]), "{r:?}");
            assert!(report.headline().points[k].value <= aa_ex.curve.points[k].value);
        }
        let gap: f64 = (1..eps.len())
            .map(|k| aa_fb.curve.points[k].value - aa_ex.curve.points[k].value)
            .sum();
        println!(
            "{name}: AA feedback {:?}, exact {:?}, flags {:?}",
            aa_fb
                .curve
                .points
                .iter()
                .map(|p| p.value)
                .collect::<Vec<_>>(),
            aa_ex
                .curve
                .points
                .iter()
                .map(|p| p.value)
                .collect::<Vec<_>>(),
            report
                .obfuscation
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        );
        gaps.push(gap);
        if name == "bp" {
            assert!(report.obfuscation.is_empty(), "{:?}", report.obfuscation);
            assert_eq!(
                aa_fb.robust, aa_ex.robust,
                "BP's feedback is its exact gradient"
            );
        } else {
            assert!(
                report
                    .obfuscation
                    .iter()
                    .any(|f| f.feedback_entry.starts_with("autoattack")),
                "no AutoAttack flag for uSF: {:?}",
                report.obfuscation
            );
            assert!(
                report
                    .obfuscation
                    .iter()
                    .any(|f| f.reference_entry == WORST_CASE_REFERENCE),
                "no worst-case flag for uSF"
            );
        }
    }
    assert!(gaps[1] > gaps[0] + 0.05, "{gaps:?}");
}

/// AutoAttack's sanity checks: zero gradients and a random forward are reported.
#[test]
fn autoattack_sanity_flags() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::full([4, 1, 2, 2], 0.5, &device);
    let aa = AutoAttackConfig::new()
        .with_steps(5)
        .with_target_classes(1)
        .with_square_queries(10)
        .init()
        .unwrap();
    // Class 0 always wins and no pixel matters.
    let flat = FnModel::new(4, |x: Tensor<4>| {
        let z = x.flatten::<2>(1, 3).sum_dim(1).mul_scalar(0.0);
        Tensor::cat(vec![z.clone().add_scalar(2.0), z.clone(), z.clone(), z], 1)
    });
    let report = aa
        .run(&flat, &x, &[0; 4], &[0.0, 0.1], &GradientSource::Exact)
        .unwrap();
    assert!(
        report.flags.contains(&SanityFlag::ZeroGradients {
            source: SourceKind::Exact,
            count: 4,
            samples: 4
        }),
        "{:?}",
        report.flags
    );
    assert_eq!(report.curve.points[1].value, 1.0);
    // Noise from the device generator in the forward.
    let noisy = FnModel::new(4, |x: Tensor<4>| {
        let f = x.flatten::<2>(1, 3);
        let noise = Tensor::<2>::random(
            [f.dims()[0], 4],
            Distribution::Normal(0.0, 1.0),
            &f.device(),
        );
        f.slice([0..4, 0..4]) + noise
    });
    let report = aa
        .run(&noisy, &x, &[0; 4], &[0.0], &GradientSource::Exact)
        .unwrap();
    assert!(
        report
            .flags
            .iter()
            .any(|f| matches!(f, SanityFlag::NonDeterministicForward { .. })),
        "{:?}",
        report.flags
    );
    assert!(matches!(
        SquareConfig::new().with_queries(1).init(),
        Err(AttackError::InvalidParameter {
            name: "queries",
            ..
        })
    ));
    assert!(ApgdConfig::ce().with_rho(0.0).init().is_err());
    assert!(ApgdConfig::ce().with_momentum(1.5).init().is_err());
    assert!(AutoAttackConfig::new().with_batch_size(0).init().is_err());
}

/// Sy-FAR's penalty (γ = 1) on the adversarial logits of PGD-10 (exact gradient) at ε, averaged
/// over batches of 64 as training sees them.
fn soft_asymmetry(net: &Network<SmallCnn>, x: &Tensor<4>, labels: &[usize], eps: f64) -> f64 {
    let model = attack_mode(net.duplicate());
    let pgd = PgdConfig::new()
        .with_steps(10)
        .with_step_size(StepSize::Relative(0.25))
        .with_random_start(true)
        .init()
        .unwrap();
    let penalty = signsym_losses::SymmetryRegularizerConfig::new(10)
        .init()
        .unwrap();
    let n = labels.len();
    let batches: Vec<(usize, usize)> = (0..n).step_by(64).map(|s| (s, (s + 64).min(n))).collect();
    let mut total = 0.0;
    for &(start, end) in &batches {
        let batch = x.clone().slice(start..end);
        let out = pgd
            .run(
                &model,
                &batch,
                &labels[start..end],
                eps,
                &GradientSource::Exact,
            )
            .unwrap();
        let logits = model.predict_scores(out.adversarial);
        let classes: Vec<i64> = labels[start..end].iter().map(|&l| l as i64).collect();
        let targets = Tensor::<1, burn::tensor::Int>::from_data(
            TensorData::new(classes, [end - start]),
            &logits.device(),
        );
        total += f64::from(
            penalty
                .penalty(logits, targets)
                .unwrap()
                .into_scalar::<f32>(),
        );
    }
    total / batches.len() as f64
}

/// Robust accuracy of a network against PGD-10 (exact gradient) at ε, and the asymmetry of its
/// adversarial confusion matrix.
fn pgd_robustness(
    net: &Network<SmallCnn>,
    x: &Tensor<4>,
    labels: &[usize],
    eps: f64,
) -> (f64, f64) {
    let model = attack_mode(net.duplicate());
    let pgd = PgdConfig::new()
        .with_steps(10)
        .with_step_size(StepSize::Relative(0.25))
        .with_random_start(true)
        .init()
        .unwrap();
    let out = pgd
        .run(&model, x, labels, eps, &GradientSource::Exact)
        .unwrap();
    let mut confusion = signsym_metrics::ConfusionMatrix::new(10).unwrap();
    confusion.update(labels, &out.predicted).unwrap();
    (out.robust_accuracy(), confusion.fairness().total_asymmetry)
}

/// Adversarial training (Madry, exact gradient) on the digits beats standard training under
/// PGD; Sy-FAR's symmetry term lowers the asymmetry it penalises (the soft adversarial
/// confusion matrix's) against adversarial training alone; the Jacobian term lowers the
/// measured Jacobian norm. Measured here (450 test images, PGD-10 at ε = 0.1): standard 0.436
/// robust (hard asymmetry 2.56), PGD-AT 0.640 (1.94, soft 0.141), Sy-FAR λ = 3 0.607 (2.32, soft
/// 0.124). The hard count moves either way with the initial weights (2.17 → 1.92 under the
/// weights drawn before the initialisation became eager); the soft one is what the term
/// optimises.
#[test]
fn adversarial_training_sy_far_and_jacobian_terms_on_digits() {
    let _rng = rng_lock();
    let device = Device::flex().autodiff();
    let (train, test) = digits();
    let (x, labels) = images(&test, 450, &device);
    let eps = 0.1;
    let start = bp_digits_model(&train, &device);
    let train_with = |terms: Vec<
        Box<dyn signsym_models::Term<SmallCnn, burn::tensor::Tensor<1, burn::tensor::Int>>>,
    >,
                      task_weight: f64| {
        device.seed(21);
        let mut terms = terms;
        let config = FineTuneConfig::new()
            .with_rule(Some(FeedbackRule::Bp))
            .with_task_weight(task_weight)
            .with_backbone_lr(2e-3)
            .with_head_lr(2e-3)
            .with_weight_decay(0.0)
            // Batches of 64: the soft confusion matrix of a batch needs a few samples per class.
            .with_epochs(6)
            .with_batch_size(64)
            .with_seed(21)
            .with_progress(false);
        let ce = CrossEntropyConfig::new().init(&device).unwrap();
        signsym_models::fine_tune_with(
            start.duplicate(),
            ce,
            &mut terms,
            &train,
            None,
            &config,
            None,
        )
        .unwrap()
        .network
    };
    let adversarial = || -> Box<dyn signsym_models::Term<SmallCnn, burn::tensor::Tensor<1, burn::tensor::Int>>> {
        let pgd = PgdConfig::new()
            .with_steps(3)
            .with_step_size(StepSize::Relative(0.8))
            .with_random_start(true)
            .init()
            .unwrap();
        Box::new(AdversarialTerm::new(Box::new(pgd), eps, SourceKind::Exact, AdversarialForm::Madry, 1.0).unwrap())
    };
    let standard = train_with(Vec::new(), 1.0);
    let at = train_with(vec![adversarial()], 0.0);
    let syfar = train_with(
        vec![adversarial(), Box::new(SymmetryTerm::new(10, 3.0).unwrap())],
        0.0,
    );
    let (r_std, a_std) = pgd_robustness(&standard, &x, &labels, eps);
    let (r_at, a_at) = pgd_robustness(&at, &x, &labels, eps);
    let (r_sy, a_sy) = pgd_robustness(&syfar, &x, &labels, eps);
    let (s_at, s_sy) = (
        soft_asymmetry(&at, &x, &labels, eps),
        soft_asymmetry(&syfar, &x, &labels, eps),
    );
    println!(
        "PGD-10 ε = {eps}: standard {r_std:.3} (asymmetry {a_std:.3}), PGD-AT {r_at:.3} ({a_at:.3}, \
         soft {s_at:.4}), Sy-FAR {r_sy:.3} ({a_sy:.3}, soft {s_sy:.4})"
    );
    assert!(
        r_at > r_std + 0.15,
        "adversarial training {r_at} vs standard {r_std}"
    );
    // What the term penalises: the mass-weighted asymmetry of the soft adversarial confusion
    // matrix, per batch of 64 as in training. (The hard count Σ|C_ij − C_ji| of 450 images is
    // too noisy at this scale to go either way reliably: see the measurements above.)
    assert!(
        s_sy < 0.95 * s_at,
        "Sy-FAR soft asymmetry {s_sy} vs adversarial training {s_at}"
    );

    // TRADES: clean loss + β·KL, crafted by maximising the KL.
    let pgd = PgdConfig::new().with_steps(3).init().unwrap();
    let trades = AdversarialTerm::new(
        Box::new(pgd),
        eps,
        SourceKind::Exact,
        AdversarialForm::Trades { beta: 6.0 },
        1.0,
    )
    .unwrap();
    let trades_net = train_with(vec![Box::new(trades)], 1.0);
    let (r_tr, _) = pgd_robustness(&trades_net, &x, &labels, eps);
    println!("TRADES β = 6: {r_tr:.3}");
    // Measured 0.491 against 0.436 (+25 of 450 images); with the weights drawn before the
    // initialisation became eager the gap was over 0.1.
    assert!(r_tr > r_std + 0.03, "TRADES {r_tr} vs standard {r_std}");

    // The Jacobian term lowers the features' measured Jacobian norm.
    let jac = train_with(
        vec![Box::new(
            signsym_models::JacobianTerm::new(0.5, 1, 1e-2).unwrap(),
        )],
        1.0,
    );
    let norm = |net: &Network<SmallCnn>| {
        let model = signsym_models::eval_mode(net.duplicate());
        signsym_metrics::jacobian_frobenius(
            x.clone().slice(0..100),
            |x| model.backbone.features(x),
            &signsym_metrics::JacobianConfig::new().with_projections(16),
        )
        .unwrap()
        .mean
    };
    let (n_std, n_jac) = (norm(&standard), norm(&jac));
    println!("Jacobian norm: standard {n_std:.3}, with the term {n_jac:.3}");
    assert!(n_jac < 0.8 * n_std, "{n_jac} vs {n_std}");

    // Bad settings are typed errors.
    let square = SquareConfig::new().init().unwrap();
    assert!(
        AdversarialTerm::new(
            Box::new(square),
            eps,
            SourceKind::Exact,
            AdversarialForm::Madry,
            1.0
        )
        .is_err()
    );
    let pgd = PgdConfig::new().init().unwrap();
    assert!(
        AdversarialTerm::new(
            Box::new(pgd),
            eps,
            SourceKind::Transfer,
            AdversarialForm::Madry,
            1.0
        )
        .is_err()
    );
}

/// A brSF fine-tuning and a brSF attack running in two threads at once give exactly what each
/// gives alone: both draw from their own thread's random scope, not from the process-wide
/// generator that `Backend::seed` replaces for everyone.
#[test]
fn brsf_training_and_attack_in_two_threads_equal_each_alone() {
    use signsym_feedback::FeedbackModule;
    use signsym_feedback::random::with_device_seed;
    let (train, test) = digits();
    let train = train.select(&(0..160).collect::<Vec<_>>());
    let device = Device::flex().autodiff();
    let (x, labels) = images(&test, 24, &device);
    // Built before any thread starts, each from its seed under the device lock.
    let start = with_device_seed(&device, 11, || small_cnn(Task::classification(10), &device));
    let mut victim = with_device_seed(&device, 12, || small_cnn(Task::classification(10), &device));
    set_rule(&mut victim, FeedbackRule::BrSf, 0).unwrap();
    let victim = attack_mode(victim);

    let tune = |start: Network<SmallCnn>, seed: u64| -> Vec<f32> {
        let config = FineTuneConfig::new()
            .with_rule(Some(FeedbackRule::BrSf))
            .with_backbone_lr(3e-3)
            .with_head_lr(3e-3)
            .with_epochs(2)
            .with_batch_size(16)
            .with_seed(seed)
            .with_progress(false);
        let ce = CrossEntropyConfig::new()
            .init(&start.device().unwrap())
            .unwrap();
        let tuned = fine_tune(start, ce, &train, None, &config, None).unwrap();
        let mut weights = Vec::new();
        tuned.network.visit_feedback("", &mut |_, layer| {
            weights.extend(host(layer.weight_matrix().detach()));
        });
        weights
    };
    let attack = |victim: &Network<SmallCnn>, x: &Tensor<4>| -> Vec<f32> {
        let pgd = PgdConfig::paper()
            .with_steps(3)
            .with_seed(5)
            .init()
            .unwrap();
        host(
            pgd.run(victim, x, &labels, 0.2, &GradientSource::Feedback)
                .unwrap()
                .adversarial,
        )
    };

    let tuned_alone = tune(start.duplicate(), 1);
    let attacked_alone = attack(&victim, &x);
    // The draws matter: another training seed trains other weights.
    assert!(
        tune(start.duplicate(), 2) != tuned_alone,
        "the seed changed nothing"
    );

    let (tuned_beside, attacked_beside) = std::thread::scope(|s| {
        let trainer = {
            let start = start.duplicate();
            s.spawn(move || tune(start, 1))
        };
        // Attack over and over while the training runs, each backward drawing brSF's matrices.
        let attacker = {
            let victim = victim.duplicate();
            let x = x.clone();
            s.spawn(move || (0..6).map(|_| attack(&victim, &x)).collect::<Vec<_>>())
        };
        (trainer.join().unwrap(), attacker.join().unwrap())
    });
    // Compared whole, not printed: thousands of weights.
    assert!(
        tuned_beside == tuned_alone,
        "the training drew differently beside an attack"
    );
    for (k, adversarial) in attacked_beside.iter().enumerate() {
        assert!(
            *adversarial == attacked_alone,
            "attack {k} drew differently beside a training"
        );
    }
}
