//! `frozen_weights`: a feedback tensor formed once per layer inside the scope gives the same
//! input gradients as forming it at every backward, follows a weight that changes, and brSF still
//! redraws. The convolutions use the scope's store (on Flex, those formed slice by slice keep the
//! slices' `V₀` whole and copy it back); the linear layers form `V` beside their product at every
//! backward (on Flex), in the scope or not, with the same bits.

use crate::common::*;
use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::*;
use signsym_feedback::ops::feedback_conv2d;
use signsym_feedback::{
    FeedbackConfig, FeedbackRule, FeedbackScale, frozen_weights, frozen_weights_active,
};

fn settings(rule: FeedbackRule) -> FeedbackConfig {
    FeedbackConfig::new()
        .with_rule(rule)
        .with_scale(FeedbackScale::MatchNorm)
        .with_seed(3)
}

fn layer(rule: FeedbackRule, device: &Device) -> FeedbackLinear {
    FeedbackLinearConfig::new(6, 5)
        .with_feedback(settings(rule))
        .init(device)
}

fn conv_layer(rule: FeedbackRule, channels: [usize; 2], device: &Device) -> FeedbackConv2d {
    FeedbackConv2dConfig::new(channels, [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_feedback(settings(rule))
        .init(device)
}

/// A seeded Flex autodiff device with an input `x` and an output weighting `r` for [`layer`].
fn linear_inputs(seed: u64) -> (Device, Tensor<2>, Tensor<2>) {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let x = random::<2>([4, 6], &device);
    let r = random::<2>([4, 5], &device);
    (device, x, r)
}

/// The input gradient of `sum(layer(x) ∘ r)`.
fn dx(layer: &FeedbackLinear, x: &Tensor<2>, r: &Tensor<2>) -> Tensor<2> {
    let x = x.clone().detach().require_grad();
    let grads = (layer.forward(x.clone()) * r.clone()).sum().backward();
    x.grad(&grads).unwrap()
}

/// The input gradient of `sum(conv(x) ∘ r)`.
fn conv_dx(layer: &FeedbackConv2d, x: &Tensor<4>, r: &Tensor<4>) -> Tensor<4> {
    let x = x.clone().detach().require_grad();
    let grads = (layer.forward(x.clone()) * r.clone()).sum().backward();
    x.grad(&grads).unwrap()
}

#[test]
fn frozen_weights_reuse_feedback_without_changing_gradients() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(21);
    // A small layer (its V formed whole), and one whose weights outweigh its input gradient
    // (formed slice by slice beside the products, kept whole by the scope, then copied).
    for (channels, map) in [([3, 4], 5), ([128, 8], 2)] {
        let x = random::<4>([2, channels[0], map, map], &device);
        let r = random::<4>([2, channels[1], map, map], &device);
        for rule in [FeedbackRule::USf, FeedbackRule::FrSf, FeedbackRule::Fa] {
            let mut net = conv_layer(rule, channels, &device);
            let outside = conv_dx(&net, &x, &r);
            // Reference for uSF: the same convolution with V = s·sign(W) given, s = ‖W‖/‖sign W‖.
            if rule == FeedbackRule::USf {
                let w = net.weight.val().detach();
                let s = w.clone().powi_scalar(2).sum().sqrt()
                    / w.clone().sign().powi_scalar(2).sum().sqrt();
                let v = w.clone().sign() * s.unsqueeze::<4>();
                let input = x.clone().detach().require_grad();
                let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
                let bias = net.bias.as_ref().map(|b| b.val().detach());
                let y = feedback_conv2d(input.clone(), w, bias, v, options).unwrap();
                let want = input.grad(&(y * r.clone()).sum().backward()).unwrap();
                assert_close("uSF dx with V given", outside.clone(), want, 1e-5);
            }
            frozen_weights(|| {
                assert!(frozen_weights_active());
                // Formed at the first backward, reused at the second: the same values each time.
                assert_identical(
                    &format!("{rule:?}: first"),
                    conv_dx(&net, &x, &r),
                    outside.clone(),
                );
                assert_identical(
                    &format!("{rule:?}: again"),
                    conv_dx(&net, &x, &r),
                    outside.clone(),
                );
                // A new weight inside the scope is a new tensor: its own feedback, not the stored one.
                let w2 = (net.weight.val().detach() * 2.0 - 0.3).into_data();
                net.weight = Param::from_tensor(Tensor::from_data(w2, &device));
                let fresh = conv_dx(&net, &x, &r);
                assert_ne!(
                    host(fresh.clone()),
                    host(outside.clone()),
                    "{rule:?}: changed weight"
                );
                let after = frozen_weights(|| conv_dx(&net, &x, &r));
                assert_identical(&format!("{rule:?}: nested"), after, fresh);
            });
            assert!(!frozen_weights_active());
            // Outside again: the changed weight's gradient, as inside a fresh scope.
            assert_identical(
                &format!("{rule:?}: after the scope"),
                conv_dx(&net, &x, &r),
                frozen_weights(|| conv_dx(&net, &x, &r)),
            );
        }
    }
}

/// Linear layers: the same bits in and out of the scope, and uSF's against `g·(s·sign W)ᵀ` by hand.
#[test]
fn frozen_weights_leave_linear_gradients_unchanged() {
    let _serial = serial();
    let (device, x, r) = linear_inputs(23);
    for rule in [
        FeedbackRule::Bp,
        FeedbackRule::USf,
        FeedbackRule::FrSf,
        FeedbackRule::Fa,
    ] {
        let net = layer(rule, &device);
        let outside = dx(&net, &x, &r);
        if rule == FeedbackRule::USf {
            let w = net.weight.val().detach();
            let s = w.clone().powi_scalar(2).sum().sqrt()
                / w.clone().sign().powi_scalar(2).sum().sqrt();
            let v = w.sign() * s.unsqueeze::<2>();
            let want = r.clone().matmul(v.transpose());
            assert_close("uSF dx by hand", outside.clone(), want, 1e-5);
        }
        let inside = frozen_weights(|| (dx(&net, &x, &r), dx(&net, &x, &r)));
        assert_identical(&format!("{rule:?}: first"), inside.0, outside.clone());
        assert_identical(&format!("{rule:?}: again"), inside.1, outside);
    }
}

#[test]
fn frozen_weights_still_redraw_brsf() {
    let _serial = serial();
    let (device, x, r) = linear_inputs(22);
    let net = layer(FeedbackRule::BrSf, &device);
    frozen_weights(|| {
        let (a, b) = (dx(&net, &x, &r), dx(&net, &x, &r));
        assert_ne!(
            host(a),
            host(b),
            "brSF draws new magnitudes at every backward"
        );
    });
}
