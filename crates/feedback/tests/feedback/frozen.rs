//! `frozen_weights`: a feedback tensor formed once per layer inside the scope gives the same
//! input gradients as forming it at every backward, follows a weight that changes, and brSF still
//! redraws.

use crate::common::*;
use burn::module::Param;
use burn::tensor::{Device, Tensor};
use signsym_feedback::layers::*;
use signsym_feedback::{
    FeedbackConfig, FeedbackRule, FeedbackScale, frozen_weights, frozen_weights_active,
};

fn layer(rule: FeedbackRule, device: &Device) -> FeedbackLinear {
    FeedbackLinearConfig::new(6, 5)
        .with_feedback(
            FeedbackConfig::new()
                .with_rule(rule)
                .with_scale(FeedbackScale::MatchNorm)
                .with_seed(3),
        )
        .init(device)
}

/// The input gradient of `sum(layer(x) ∘ r)`.
fn dx(layer: &FeedbackLinear, x: &Tensor<2>, r: &Tensor<2>) -> Tensor<2> {
    let x = x.clone().detach().require_grad();
    let grads = (layer.forward(x.clone()) * r.clone()).sum().backward();
    x.grad(&grads).unwrap()
}

#[test]
fn frozen_weights_reuse_feedback_without_changing_gradients() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(21);
    let x = random::<2>([4, 6], &device);
    let r = random::<2>([4, 5], &device);
    for rule in [FeedbackRule::USf, FeedbackRule::FrSf, FeedbackRule::Fa] {
        let mut net = layer(rule, &device);
        let outside = dx(&net, &x, &r);
        // Reference by hand for uSF: g·(s·sign(W))ᵀ with s = ‖W‖/‖sign W‖.
        if rule == FeedbackRule::USf {
            let w = net.weight.val().detach();
            let s = w.clone().powi_scalar(2).sum().sqrt()
                / w.clone().sign().powi_scalar(2).sum().sqrt();
            let v = w.sign() * s.unsqueeze::<2>();
            assert_close(
                "uSF dx by hand",
                outside.clone(),
                r.clone().matmul(v.transpose()),
                1e-5,
            );
        }
        frozen_weights(|| {
            assert!(frozen_weights_active());
            // Formed at the first backward, reused at the second: the same values each time.
            assert_identical(
                &format!("{rule:?}: first"),
                dx(&net, &x, &r),
                outside.clone(),
            );
            assert_identical(
                &format!("{rule:?}: again"),
                dx(&net, &x, &r),
                outside.clone(),
            );
            // A new weight inside the scope is a new tensor: its own feedback, not the stored one.
            let w2 = (net.weight.val().detach() * 2.0 - 0.3).into_data();
            net.weight = Param::from_tensor(Tensor::from_data(w2, &device));
            let fresh = dx(&net, &x, &r);
            assert_ne!(
                host(fresh.clone()),
                host(outside.clone()),
                "{rule:?}: changed weight"
            );
            let after = frozen_weights(|| dx(&net, &x, &r));
            assert_identical(&format!("{rule:?}: nested"), after, fresh);
        });
        assert!(!frozen_weights_active());
        // Outside again: the changed weight's gradient, as inside a fresh scope.
        assert_identical(
            &format!("{rule:?}: after the scope"),
            dx(&net, &x, &r),
            frozen_weights(|| dx(&net, &x, &r)),
        );
    }
}

#[test]
fn frozen_weights_still_redraw_brsf() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(22);
    let x = random::<2>([4, 6], &device);
    let r = random::<2>([4, 5], &device);
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
