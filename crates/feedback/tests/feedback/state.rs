//! Fixed feedback tensors are state, not parameters: untouched by Adam and weight decay, saved and
//! loaded with the record, checked on load. Rules switch at run time without touching weights.

use crate::common::*;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::*;
use signsym_feedback::*;

#[derive(Module, Debug)]
struct Net {
    conv: FeedbackConv2d,
    fc: FeedbackLinear,
    act: Relu,
}
feedback_module!(Net { conv, fc });

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            conv: FeedbackConv2dConfig::new([1, 3], [3, 3]).init(device),
            fc: FeedbackLinearConfig::new(3 * 4 * 4, 5).init(device),
            act: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.act.forward(self.conv.forward(x));
        self.fc.forward(h.flatten::<2>(1, 3))
    }
}

fn loss(net: &Net, x: Tensor<4>) -> Tensor<1> {
    net.forward(x).powi_scalar(2).sum()
}

#[test]
fn fixed_tensors_survive_adam_with_weight_decay() {
    let _serial = serial();
    for device in devices() {
        device.seed(3);
        let mut net = Net::new(&device);
        set_rules(&mut net, 5, |path| {
            if path == "conv" {
                FeedbackRule::FrSf
            } else {
                FeedbackRule::Fa
            }
        })
        .unwrap();
        let m_before = host(net.conv.feedback.as_ref().unwrap().val());
        let b_before = host(net.fc.feedback.as_ref().unwrap().val());
        let w_before = host(net.fc.weight.val());
        let mut optim = AdamConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
            .init();
        for _ in 0..2 {
            let x = random::<4>([2, 1, 6, 6], &device);
            let grads = loss(&net, x).backward();
            let grads = GradientsParams::from_grads(grads, &net);
            net = optim.step(1e-2, net, grads);
        }
        assert_eq!(host(net.conv.feedback.as_ref().unwrap().val()), m_before);
        assert_eq!(host(net.fc.feedback.as_ref().unwrap().val()), b_before);
        assert_ne!(
            host(net.fc.weight.val()),
            w_before,
            "weights should have moved"
        );
    }
}

#[test]
fn fixed_tensors_round_trip_through_records_and_files() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(4);
    let mut net = Net::new(&device);
    set_rule(&mut net, FeedbackRule::FrSf, 77).unwrap();
    let m = host(net.conv.feedback.as_ref().unwrap().val());
    let w = host(net.conv.weight.val());

    // Through bytes.
    let bytes = net.clone().into_record().into_bytes().unwrap();
    let mut fresh = Net::new(&device);
    set_rule(&mut fresh, FeedbackRule::FrSf, 78).unwrap();
    assert_ne!(host(fresh.conv.feedback.as_ref().unwrap().val()), m);
    let fresh = fresh
        .try_load_record(ModuleRecord::from_bytes(bytes).unwrap())
        .unwrap();
    assert_eq!(host(fresh.conv.feedback.as_ref().unwrap().val()), m);
    assert_eq!(host(fresh.conv.weight.val()), w);

    // Through a file.
    let path = std::env::temp_dir().join(format!("signsym-state-{}.bpk", std::process::id()));
    net.clone().save_file(&path).unwrap();
    let mut other = Net::new(&device);
    set_rule(&mut other, FeedbackRule::FrSf, 1).unwrap();
    let other = other.try_load_file(&path).unwrap();
    assert_eq!(host(other.conv.feedback.as_ref().unwrap().val()), m);
    std::fs::remove_file(path).ok();
}

#[test]
fn a_feedback_tensor_of_the_wrong_shape_is_an_error() {
    let _serial = serial();
    let device = Device::flex();
    let bad = FeedbackLinear {
        weight: Param::from_tensor(Tensor::<2>::ones([4, 3], &device)),
        bias: None,
        feedback: Some(Param::from_tensor(Tensor::<2>::ones([3, 3], &device))),
        settings: FeedbackConfig::new().with_rule(FeedbackRule::FrSf),
    };
    match bad.validate() {
        Err(FeedbackError::FeedbackShape {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), (vec![4, 3], vec![3, 3]))
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(matches!(
        bad.try_forward(Tensor::<2>::ones([1, 4], &device)),
        Err(FeedbackError::FeedbackShape { .. })
    ));
    // Loading it into a well-formed frSF layer fails and names the key.
    let target = FeedbackLinearConfig::new(4, 3)
        .with_bias(false)
        .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::FrSf))
        .init(&device);
    let err = target.try_load_record(bad.into_record()).unwrap_err();
    assert!(format!("{err:?}").contains("feedback"), "{err:?}");
}

#[test]
fn missing_fixed_tensor_is_reported_with_the_layer_path() {
    let _serial = serial();
    let device = Device::flex();
    let mut net = Net::new(&device);
    set_rule(&mut net, FeedbackRule::Fa, 0).unwrap();
    net.fc.feedback = None;
    match validate_model(&net) {
        Err(FeedbackError::MissingFeedback { layer, rule }) => {
            assert_eq!((layer.as_str(), rule.as_str()), ("fc", "fa"))
        }
        other => panic!("expected MissingFeedback, got {other:?}"),
    }
}

#[test]
fn burn_records_load_into_feedback_layers_and_back() {
    let _serial = serial();
    let device = Device::flex();
    device.seed(5);
    let linear: Linear = LinearConfig::new(6, 2).init(&device);
    let w = host(linear.weight.val());
    let layer = FeedbackLinearConfig::new(6, 2)
        .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::FrSf))
        .init(&device);
    let m = host(layer.feedback.as_ref().unwrap().val());
    // A burn record has no `feedback` key: a partial load keeps the layer's own M.
    let layer = layer
        .try_load_record(linear.clone().into_record().allow_partial(true))
        .unwrap();
    assert_eq!(host(layer.weight.val()), w);
    assert_eq!(host(layer.feedback.as_ref().unwrap().val()), m);
    // Without allow_partial the missing key is an error, not a silent success.
    let strict = FeedbackLinearConfig::new(6, 2)
        .with_feedback(FeedbackConfig::new().with_rule(FeedbackRule::FrSf))
        .init(&device);
    assert!(strict.try_load_record(linear.into_record()).is_err());
    // A BP layer's record is a burn Linear record.
    let bp = FeedbackLinearConfig::new(6, 2).init(&device);
    let wb = host(bp.weight.val());
    let back: Linear = LinearConfig::new(6, 2)
        .init(&device)
        .try_load_record(bp.into_record())
        .unwrap();
    assert_eq!(host(back.weight.val()), wb);
}

#[test]
fn switching_rules_changes_input_gradient_not_forward() {
    let _serial = serial();
    for device in devices() {
        device.seed(6);
        let mut net = Net::new(&device);
        let x = random::<4>([2, 1, 6, 6], &device);
        let y_bp = host(net.forward(x.clone()));
        let g_bp = host(input_gradient(x.clone(), |x| loss(&net, x)));
        let w = host(net.conv.weight.val());
        set_rule(&mut net, FeedbackRule::USf, 0).unwrap();
        assert_eq!(host(net.conv.weight.val()), w, "weights untouched");
        assert_eq!(host(net.forward(x.clone())), y_bp, "forward unchanged");
        let g_usf = host(input_gradient(x.clone(), |x| loss(&net, x)));
        assert_ne!(g_usf, g_bp, "input gradient should change");
        // The exact scope recovers BP's gradient from the uSF model.
        let g_exact = host(exact_input_gradient(x.clone(), |x| loss(&net, x)));
        let max_diff = g_exact
            .iter()
            .zip(&g_bp)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-5, "exact scope differs from BP by {max_diff}");
        // Per-layer: BP on the last layer only.
        set_rules(&mut net, 0, |p| {
            if p == "fc" {
                FeedbackRule::Bp
            } else {
                FeedbackRule::USf
            }
        })
        .unwrap();
        assert_eq!(net.fc.rule(), FeedbackRule::Bp);
        assert_eq!(net.conv.rule(), FeedbackRule::USf);
    }
}

#[test]
fn alignment_diagnostics() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(8);
    let mut net = Net::new(&device);
    let x = random::<4>([3, 1, 6, 6], &device);
    let bp = input_gradient_alignment(x.clone(), |x| loss(&net, x));
    assert!(
        bp.per_sample.iter().all(|c| (c - 1.0).abs() < 1e-5),
        "{bp:?}"
    );
    for s in layer_summaries(&net) {
        assert!((s.alignment.unwrap() - 1.0).abs() < 1e-9);
    }
    for rule in [
        FeedbackRule::USf,
        FeedbackRule::FrSf,
        FeedbackRule::BrSf,
        FeedbackRule::Fa,
    ] {
        set_rule(&mut net, rule, 3).unwrap();
        let a = input_gradient_alignment(x.clone(), |x| loss(&net, x));
        assert!(a.batch < 0.9999, "{rule}: {a:?}");
        assert_eq!(a.per_sample.len(), 3);
        for s in layer_summaries(&net) {
            let cos = s.alignment.unwrap();
            match rule {
                // Sign-concordant: positively aligned, but not equal.
                FeedbackRule::USf | FeedbackRule::FrSf | FeedbackRule::BrSf => {
                    assert!(cos > 0.3 && cos < 0.999, "{rule} {}: {cos}", s.path)
                }
                // A random B is nearly orthogonal to W.
                _ => assert!(cos.abs() < 0.5, "{rule} {}: {cos}", s.path),
            }
        }
    }
}

#[test]
fn distinct_layers_get_distinct_reproducible_fixed_tensors() {
    let _serial = serial();
    let device = Device::flex();
    let mut a = vec![
        FeedbackLinearConfig::new(4, 4).init(&device),
        FeedbackLinearConfig::new(4, 4).init(&device),
    ];
    set_rule(&mut a, FeedbackRule::FrSf, 9).unwrap();
    let m0 = host(a[0].feedback.as_ref().unwrap().val());
    let m1 = host(a[1].feedback.as_ref().unwrap().val());
    assert_ne!(m0, m1);
    assert!(m0.iter().all(|v| (0.0..1.0).contains(v)));
    let mut b = vec![FeedbackLinearConfig::new(4, 4).init(&device)];
    set_rule(&mut b, FeedbackRule::FrSf, 9).unwrap();
    assert_eq!(host(b[0].feedback.as_ref().unwrap().val()), m0);
}
