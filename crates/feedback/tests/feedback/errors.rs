//! Bad input gives typed errors, never a panic.

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::*;
use signsym_feedback::ops::{feedback_conv2d, feedback_linear};
use signsym_feedback::*;

#[test]
fn rule_and_scale_names() {
    let _serial = crate::common::serial();
    for (name, rule) in [
        ("bp", FeedbackRule::Bp),
        ("USF", FeedbackRule::USf),
        ("FrSf", FeedbackRule::FrSf),
        (" brsf ", FeedbackRule::BrSf),
        ("Fa", FeedbackRule::Fa),
    ] {
        assert_eq!(name.parse::<FeedbackRule>().unwrap(), rule);
        assert_eq!(rule.to_string().parse::<FeedbackRule>().unwrap(), rule);
    }
    assert_eq!(
        "sgd".parse::<FeedbackRule>(),
        Err(FeedbackError::UnknownRule("sgd".into()))
    );
    assert_eq!(
        "match-norm".parse::<FeedbackScale>().unwrap(),
        FeedbackScale::MatchNorm
    );
    assert!(matches!(
        "huge".parse::<FeedbackScale>(),
        Err(FeedbackError::UnknownScale(_))
    ));
}

#[test]
fn tensor_ops_check_shapes() {
    let device = Device::flex();
    let x = Tensor::<2>::ones([2, 3], &device);
    let w = Tensor::<2>::ones([3, 4], &device);
    let err =
        feedback_linear(x.clone(), w.clone(), None, Tensor::ones([4, 3], &device)).unwrap_err();
    assert_eq!(
        err,
        FeedbackError::FeedbackShape {
            layer: "feedback_linear".into(),
            expected: vec![3, 4],
            found: vec![4, 3]
        }
    );
    assert!(matches!(
        feedback_linear(
            Tensor::<2>::ones([2, 5], &device),
            w.clone(),
            None,
            w.clone()
        ),
        Err(FeedbackError::InputShape { .. })
    ));
    assert!(matches!(
        feedback_linear(x, w.clone(), Some(Tensor::ones([3], &device)), w),
        Err(FeedbackError::InputShape { .. })
    ));
    let k = Tensor::<4>::ones([4, 2, 3, 3], &device);
    let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    assert!(matches!(
        feedback_conv2d(
            Tensor::ones([1, 3, 5, 5], &device),
            k.clone(),
            None,
            k.clone(),
            options
        ),
        Err(FeedbackError::InputShape { .. })
    ));
    let grouped = ConvOptions::new([1, 1], [0, 0], [1, 1], 3);
    assert!(matches!(
        feedback_conv2d(
            Tensor::ones([1, 6, 5, 5], &device),
            k.clone(),
            None,
            k,
            grouped
        ),
        Err(FeedbackError::InvalidConfig(_))
    ));
}

#[test]
fn layers_check_inputs_and_configs() {
    let _serial = crate::common::serial();
    let device = Device::flex();
    let layer = FeedbackLinearConfig::new(3, 2).init(&device);
    assert!(matches!(
        layer.try_forward(Tensor::<2>::ones([1, 4], &device)),
        Err(FeedbackError::InputShape { .. })
    ));
    assert_eq!(
        layer
            .try_forward(Tensor::<3>::ones([2, 5, 3], &device))
            .unwrap()
            .dims(),
        [2, 5, 2]
    );
    let conv = FeedbackConv2dConfig::new([2, 4], [3, 3]).init(&device);
    assert!(matches!(
        conv.try_forward(Tensor::ones([1, 3, 8, 8], &device)),
        Err(FeedbackError::InputShape { .. })
    ));
    assert!(matches!(
        FeedbackConv2dConfig::new([3, 4], [3, 3])
            .with_groups(2)
            .try_init(&device),
        Err(FeedbackError::InvalidConfig(_))
    ));
    assert!(matches!(
        FeedbackConv1dConfig::new(4, 6, 3)
            .with_groups(0)
            .try_init(&device),
        Err(FeedbackError::InvalidConfig(_))
    ));
    let bad_dist = FeedbackConfig::new()
        .with_rule(FeedbackRule::FrSf)
        .with_magnitude(FeedbackDistribution::Uniform {
            low: 1.0,
            high: 0.0,
        });
    assert!(matches!(
        FeedbackLinearConfig::new(3, 2)
            .with_feedback(bad_dist)
            .try_init(&device),
        Err(FeedbackError::InvalidDistribution(_))
    ));
    let nan = FeedbackDistribution::Normal {
        mean: f64::NAN,
        std: 1.0,
    };
    assert!(nan.validate().is_err());
}
