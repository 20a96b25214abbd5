//! The feedback ops against independent references, on every device:
//! forward bit-identical to burn's layers (to rounding for the 2-d convolution on Flex, which has
//! a kernel of its own), dW and db equal to BP, dx equal to the straight-through
//! formulation `op(x.detach(), W, b) + op(x, V) − op(x, V).detach()` and, for linear, to `g·Vᵀ`.

use crate::common::*;
use burn::nn::PaddingConfig1d;
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv_transpose2d, conv1d, conv2d, linear};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use signsym_feedback::layers::*;
use signsym_feedback::ops::feedback_matrix;
use signsym_feedback::{
    FeedbackConfig, FeedbackForm, FeedbackKernel, FeedbackRule, FeedbackScale, ScaleKind,
};

const TOL: f32 = 2e-5;

/// The `V` a layer should use, computed independently on the test side.
fn expected_v<const W: usize>(
    rule: FeedbackRule,
    scale: FeedbackScale,
    weight: Tensor<W>,
    fixed: Option<Tensor<W>>,
    brsf_mask: Option<Tensor<W>>,
    fans: (usize, usize),
) -> Tensor<W> {
    let v0 = match rule {
        // BP is V = W whatever the scale.
        FeedbackRule::Bp => return weight,
        FeedbackRule::USf => weight.clone().sign(),
        FeedbackRule::FrSf => fixed.unwrap() * weight.clone().sign(),
        FeedbackRule::BrSf => brsf_mask.unwrap() * weight.clone().sign(),
        FeedbackRule::Fa => fixed.unwrap(),
    };
    let s = match scale {
        FeedbackScale::Unit => 1.0,
        FeedbackScale::InitStd => (2.0 / (fans.0 + fans.1) as f32).sqrt(),
        FeedbackScale::MatchNorm => frobenius(weight) / frobenius(v0.clone()),
    };
    v0.mul_scalar(s)
}

struct Grads<const D: usize, const W: usize> {
    y: Tensor<D>,
    dx: Tensor<D>,
    dw: Tensor<W>,
    db: Tensor<1>,
}

/// Runs one layer case through every check.
#[allow(clippy::too_many_arguments)]
fn check_case<const D: usize, const W: usize>(
    name: &str,
    device: &Device,
    rule: FeedbackRule,
    scale: FeedbackScale,
    x: Tensor<D>,
    weight: Tensor<W>,
    bias: Tensor<1>,
    fixed: Option<Tensor<W>>,
    fans: (usize, usize),
    ours: impl Fn(Tensor<D>) -> Tensor<D>,
    burn_op: impl Fn(Tensor<D>, Tensor<W>, Option<Tensor<1>>) -> Tensor<D>,
) {
    let what = |s: &str| format!("{name} {rule} {scale} on {device:?}: {s}");
    // The upstream gradient g = r: loss = sum(y ∘ r).
    let y_shape = burn_op(x.clone(), weight.clone().detach(), None).dims();
    let r = random(y_shape, device);

    // Ours. brSF draws M at backward time from the device RNG: seed it, and redraw the same M.
    device.seed(7);
    let xo = x.clone().detach().require_grad();
    let y = ours(xo.clone());
    let grads = (y.clone() * r.clone()).sum().backward();
    let ours = Grads {
        y: y.detach(),
        dx: xo.grad(&grads).unwrap(),
        dw: weight.grad(&grads).unwrap(),
        db: bias.grad(&grads).unwrap(),
    };
    // The same draw again: `feedback_matrix` with W = 1 and unit scale is the mask itself.
    device.seed(7);
    let mask = (rule == FeedbackRule::BrSf).then(|| {
        let kernel = FeedbackKernel {
            form: FeedbackForm::RandomMaskedSign(Distribution::Uniform(0.0, 1.0)),
            scale: ScaleKind::Unit,
        };
        feedback_matrix(Tensor::<W>::ones(weight.shape(), device), None, kernel).unwrap()
    });
    let v = expected_v(rule, scale, weight.clone().detach(), fixed, mask, fans);

    // BP through burn's own op.
    let xb = x.clone().detach().require_grad();
    let wb = weight.clone().detach().require_grad();
    let bb = bias.clone().detach().require_grad();
    let yb = burn_op(xb.clone(), wb.clone(), Some(bb.clone()));
    let g = (yb.clone() * r.clone()).sum().backward();
    if name.starts_with("conv") && format!("{device:?}").contains("Flex") {
        // On Flex every convolution (1-d and transposed through the 2-d kernels) is our im2col
        // kernel: burn's numbers, summed in another order.
        assert_close(
            &what("forward equals burn's layer"),
            ours.y.clone(),
            yb.detach(),
            TOL,
        );
    } else {
        assert_identical(
            &what("forward equals burn's layer"),
            ours.y.clone(),
            yb.detach(),
        );
    }
    assert_close(
        &what("dW equals BP"),
        ours.dw.clone(),
        wb.grad(&g).unwrap(),
        TOL,
    );
    assert_close(
        &what("db equals BP"),
        ours.db.clone(),
        bb.grad(&g).unwrap(),
        TOL,
    );

    // Straight-through reference.
    let xs = x.clone().detach().require_grad();
    let ws = weight.clone().detach().require_grad();
    let bs = bias.clone().detach().require_grad();
    let through_v = burn_op(xs.clone(), v.clone(), None);
    let ys = burn_op(xs.clone().detach(), ws.clone(), Some(bs.clone())) + through_v.clone()
        - through_v.detach();
    let g = (ys * r).sum().backward();
    assert_close(
        &what("dx equals straight-through"),
        ours.dx,
        xs.grad(&g).unwrap(),
        TOL,
    );
    assert_close(
        &what("dW equals straight-through"),
        ours.dw,
        ws.grad(&g).unwrap(),
        TOL,
    );
    assert_close(
        &what("db equals straight-through"),
        ours.db,
        bs.grad(&g).unwrap(),
        TOL,
    );
}

fn feedback(rule: FeedbackRule, scale: FeedbackScale) -> FeedbackConfig {
    FeedbackConfig::new()
        .with_rule(rule)
        .with_scale(scale)
        .with_seed(11)
}

const SCALES: [FeedbackScale; 3] = [
    FeedbackScale::Unit,
    FeedbackScale::InitStd,
    FeedbackScale::MatchNorm,
];

#[test]
fn linear_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(1);
        for rule in FeedbackRule::ALL {
            for scale in SCALES {
                let layer = FeedbackLinearConfig::new(5, 4)
                    .with_feedback(feedback(rule, scale))
                    .init(&device);
                let w = layer.weight.val();
                let b = layer.bias.as_ref().unwrap().val();
                let fixed = layer.feedback.as_ref().map(|f| f.val());
                check_case(
                    "linear rank 2",
                    &device,
                    rule,
                    scale,
                    random([3, 5], &device),
                    w.clone(),
                    b.clone(),
                    fixed.clone(),
                    (5, 4),
                    |x| layer.forward(x),
                    linear,
                );
                check_case(
                    "linear rank 3",
                    &device,
                    rule,
                    scale,
                    random([2, 3, 5], &device),
                    w,
                    b,
                    fixed,
                    (5, 4),
                    |x| layer.forward(x),
                    linear,
                );
            }
        }
    }
}

#[test]
fn linear_input_gradient_is_g_times_v_transposed() {
    let _serial = serial();
    for device in devices() {
        let w = Tensor::<2>::from_floats([[0.5, -0.2, 0.0], [-0.1, 0.3, 0.05]], &device);
        let layer = FeedbackLinear {
            weight: burn::module::Param::from_tensor(w.clone()),
            bias: None,
            feedback: None,
            settings: feedback(FeedbackRule::USf, FeedbackScale::Unit),
        };
        let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device).require_grad();
        let g = Tensor::<2>::from_floats([[1.0, -2.0, 3.0]], &device);
        let grads = (layer.forward(x.clone()) * g).sum().backward();
        // sign(W) = [[1,-1,0],[-1,1,1]]; g·sign(W)ᵀ = [1+2+0, -1-2+3] = [3, 0].
        assert_eq!(host(x.grad(&grads).unwrap()), vec![3.0, 0.0]);
        // dW = xᵀ·g exactly.
        assert_eq!(
            host(layer.weight.val().grad(&grads).unwrap()),
            vec![1.0, -2.0, 3.0, 2.0, -4.0, 6.0]
        );
    }
}

#[test]
fn conv1d_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(2);
        for rule in FeedbackRule::ALL {
            for scale in SCALES {
                let layer = FeedbackConv1dConfig::new(4, 6, 3)
                    .with_stride(2)
                    .with_dilation(2)
                    .with_groups(2)
                    .with_padding(PaddingConfig1d::Explicit(1, 2))
                    .with_feedback(feedback(rule, scale))
                    .init(&device);
                let options = ConvOptions::new_with_padding([2], [(1, 2)], [2], 2);
                check_case(
                    "conv1d",
                    &device,
                    rule,
                    scale,
                    random([2, 4, 11], &device),
                    layer.weight.val(),
                    layer.bias.as_ref().unwrap().val(),
                    layer.feedback.as_ref().map(|f| f.val()),
                    (2 * 3, 6 * 3),
                    |x| layer.forward(x),
                    |x, w, b| conv1d(x, w, b, options.clone()),
                );
            }
        }
    }
}

#[test]
fn conv2d_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(3);
        for rule in FeedbackRule::ALL {
            for scale in SCALES {
                let layer = FeedbackConv2dConfig::new([4, 6], [3, 2])
                    .with_stride([2, 1])
                    .with_dilation([1, 2])
                    .with_groups(2)
                    .with_padding(PaddingConfig2d::Explicit(1, 0, 2, 1))
                    .with_feedback(feedback(rule, scale))
                    .init(&device);
                let options = ConvOptions::new_with_padding([2, 1], [(1, 2), (0, 1)], [1, 2], 2);
                check_case(
                    "conv2d",
                    &device,
                    rule,
                    scale,
                    random([2, 4, 9, 8], &device),
                    layer.weight.val(),
                    layer.bias.as_ref().unwrap().val(),
                    layer.feedback.as_ref().map(|f| f.val()),
                    (2 * 6, 6 * 6),
                    |x| layer.forward(x),
                    |x, w, b| conv2d(x, w, b, options.clone()),
                );
            }
        }
    }
}

/// Layers whose weights outweigh their input gradient (ResNet-18's late layers) take Flex's
/// sliced input gradient, `V₀` formed beside its products: on 2 × 2 maps block by block, on
/// 3 × 3 maps as one product over the batch.
#[test]
fn conv2d_through_the_sliced_input_gradient_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(5);
        for (map, rules) in [
            (2, &FeedbackRule::ALL[..]),
            (3, &[FeedbackRule::FrSf, FeedbackRule::BrSf][..]),
        ] {
            for &rule in rules {
                for scale in SCALES {
                    let layer = FeedbackConv2dConfig::new([128, 8], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_feedback(feedback(rule, scale))
                        .init(&device);
                    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
                    check_case(
                        "conv2d sliced",
                        &device,
                        rule,
                        scale,
                        random([2, 128, map, map], &device),
                        layer.weight.val(),
                        layer.bias.as_ref().unwrap().val(),
                        layer.feedback.as_ref().map(|f| f.val()),
                        (128 * 9, 8 * 9),
                        |x| layer.forward(x),
                        |x, w, b| conv2d(x, w, b, options.clone()),
                    );
                }
            }
        }
    }
}

#[test]
fn conv2d_same_padding_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(4);
        for rule in [FeedbackRule::USf, FeedbackRule::Fa] {
            let layer = FeedbackConv2dConfig::new([3, 5], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Same)
                .with_feedback(feedback(rule, FeedbackScale::MatchNorm))
                .init(&device);
            // Same padding for 7 inputs, kernel 3, stride 2: 4 outputs, (1, 1) padding.
            let options = ConvOptions::new_with_padding([2, 2], [(1, 1), (1, 1)], [1, 1], 1);
            check_case(
                "conv2d same",
                &device,
                rule,
                FeedbackScale::MatchNorm,
                random([2, 3, 7, 7], &device),
                layer.weight.val(),
                layer.bias.as_ref().unwrap().val(),
                layer.feedback.as_ref().map(|f| f.val()),
                (27, 45),
                |x| layer.forward(x),
                |x, w, b| conv2d(x, w, b, options.clone()),
            );
        }
    }
}

#[test]
fn conv_transpose2d_matches_references() {
    let _serial = serial();
    for device in devices() {
        device.seed(5);
        for rule in FeedbackRule::ALL {
            for scale in SCALES {
                let layer = FeedbackConvTranspose2dConfig::new([4, 6], [3, 3])
                    .with_stride([2, 2])
                    .with_padding([1, 1])
                    .with_padding_out([1, 1])
                    .with_groups(2)
                    .with_feedback(feedback(rule, scale))
                    .init(&device);
                let options = ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 2);
                check_case(
                    "conv_transpose2d",
                    &device,
                    rule,
                    scale,
                    random([2, 4, 5, 5], &device),
                    layer.weight.val(),
                    layer.bias.as_ref().unwrap().val(),
                    layer.feedback.as_ref().map(|f| f.val()),
                    (3 * 9, 4 * 9),
                    |x| layer.forward(x),
                    |x, w, b| conv_transpose2d(x, w, b, options.clone()),
                );
            }
        }
    }
}

/// With `V = W` the custom op's gradients are true derivatives: finite differences agree.
#[test]
fn weight_feedback_op_agrees_with_finite_differences() {
    let _serial = serial();
    use signsym_feedback::ops::feedback_conv2d;
    let device = Device::flex().autodiff();
    device.seed(9);
    let x = random::<4>([1, 2, 5, 5], &device);
    let w = random::<4>([3, 2, 3, 3], &device);
    let b = random::<1>([3], &device);
    let r = random::<4>([1, 3, 3, 3], &device);
    let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let f = |x: Tensor<4>, w: Tensor<4>| -> f64 {
        let y =
            feedback_conv2d(x, w.clone(), Some(b.clone()), w.detach(), options.clone()).unwrap();
        f64::from((y * r.clone()).sum().into_scalar::<f32>())
    };
    let xg = x.clone().require_grad();
    let wg = w.clone().require_grad();
    let y = feedback_conv2d(
        xg.clone(),
        wg.clone(),
        Some(b.clone()),
        w.clone(),
        options.clone(),
    )
    .unwrap();
    let grads = (y * r.clone()).sum().backward();
    let dx = host(xg.grad(&grads).unwrap());
    let dw = host(wg.grad(&grads).unwrap());

    let h = 1e-2f32;
    let xs = host(x.clone());
    let ws = host(w.clone());
    for &i in &[0usize, 7, 24, 31, 49] {
        let mut plus = xs.clone();
        let mut minus = xs.clone();
        plus[i] += h;
        minus[i] -= h;
        let tp = Tensor::<4>::from_data(burn::tensor::TensorData::new(plus, [1, 2, 5, 5]), &device);
        let tm =
            Tensor::<4>::from_data(burn::tensor::TensorData::new(minus, [1, 2, 5, 5]), &device);
        let fd = (f(tp, w.clone()) - f(tm, w.clone())) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(dx[i])).abs() < 2e-3,
            "dx[{i}]: fd {fd} vs {}",
            dx[i]
        );
    }
    for &i in &[0usize, 5, 17, 30, 53] {
        let mut plus = ws.clone();
        let mut minus = ws.clone();
        plus[i] += h;
        minus[i] -= h;
        let tp = Tensor::<4>::from_data(burn::tensor::TensorData::new(plus, [3, 2, 3, 3]), &device);
        let tm =
            Tensor::<4>::from_data(burn::tensor::TensorData::new(minus, [3, 2, 3, 3]), &device);
        // The weight moves in the forward only; V stays the unperturbed W, as in the op above.
        let fp = {
            let y = feedback_conv2d(x.clone(), tp, Some(b.clone()), w.clone(), options.clone())
                .unwrap();
            f64::from((y * r.clone()).sum().into_scalar::<f32>())
        };
        let fm = {
            let y = feedback_conv2d(x.clone(), tm, Some(b.clone()), w.clone(), options.clone())
                .unwrap();
            f64::from((y * r.clone()).sum().into_scalar::<f32>())
        };
        let fd = (fp - fm) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(dw[i])).abs() < 2e-3,
            "dW[{i}]: fd {fd} vs {}",
            dw[i]
        );
    }
}

#[test]
fn brsf_redraws_its_magnitudes_at_every_backward() {
    let _serial = serial();
    for device in devices() {
        device.seed(21);
        let layer = FeedbackLinearConfig::new(6, 5)
            .with_feedback(feedback(FeedbackRule::BrSf, FeedbackScale::Unit))
            .init(&device);
        let x = random::<2>([4, 6], &device);
        let dx = || {
            let x = x.clone().detach().require_grad();
            let grads = layer.forward(x.clone()).sum().backward();
            host(x.grad(&grads).unwrap())
        };
        let (first, second) = (dx(), dx());
        assert_ne!(first, second, "brSF gave the same input gradient twice");
        device.seed(99);
        let a = dx();
        device.seed(99);
        assert_eq!(a, dx(), "same device seed, same brSF draw");
    }
}

#[test]
fn activation_matmul_is_untouched() {
    let _serial = serial();
    for device in devices() {
        device.seed(31);
        let layer = FeedbackLinearConfig::new(4, 3)
            .with_bias(false)
            .with_feedback(feedback(FeedbackRule::USf, FeedbackScale::Unit))
            .init(&device);
        let a = random::<2>([2, 5], &device).require_grad();
        let b = random::<2>([5, 4], &device).require_grad();
        let r = random::<2>([2, 3], &device);
        let grads = (layer.forward(a.clone().matmul(b.clone())) * r.clone())
            .sum()
            .backward();
        // Through the layer: g_h = r·sign(W)ᵀ; through the activation matmul h = a·b, exactly.
        let g_h = r.matmul(layer.weight.val().detach().sign().transpose());
        let b_val = b.clone().detach();
        let a_val = a.clone().detach();
        assert_close(
            "da",
            a.grad(&grads).unwrap(),
            g_h.clone().matmul(b_val.transpose()),
            TOL,
        );
        assert_close(
            "db",
            b.grad(&grads).unwrap(),
            a_val.transpose().matmul(g_h),
            TOL,
        );
    }
}

/// A first layer: the input needs no gradient, the weight and bias do.
#[test]
fn weight_gradient_without_input_gradient() {
    let _serial = serial();
    for device in devices() {
        device.seed(41);
        for rule in [FeedbackRule::USf, FeedbackRule::Fa] {
            let layer = FeedbackLinearConfig::new(3, 2)
                .with_feedback(feedback(rule, FeedbackScale::MatchNorm))
                .init(&device);
            let conv = FeedbackConv2dConfig::new([2, 3], [3, 3])
                .with_feedback(feedback(rule, FeedbackScale::MatchNorm))
                .init(&device);
            let x = random::<2>([4, 3], &device);
            let grads = layer.forward(x.clone()).sum().backward();
            let dw = layer.weight.val().grad(&grads).unwrap();
            // d/dW sum(x·W + b) = xᵀ·1.
            let want = x.transpose().matmul(Tensor::ones([4, 2], &device));
            assert_close("linear dW", dw, want, TOL);
            let xc = random::<4>([1, 2, 5, 5], &device);
            let grads = conv.forward(xc.clone()).sum().backward();
            let w = conv.weight.val().detach().require_grad();
            let g = conv2d(
                xc,
                w.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            )
            .sum()
            .backward();
            assert_close(
                "conv dW",
                conv.weight.val().grad(&grads).unwrap(),
                w.grad(&g).unwrap(),
                TOL,
            );
        }
    }
}

/// The recorded op works under burn's gradient checkpointing too (its state is retrieved through
/// the checkpointer), also when a memory-bound op after it is recomputed.
#[test]
fn conv2d_under_gradient_checkpointing_matches_straight_through() {
    let _serial = serial();
    for device in [
        Device::flex().autodiff(),
        Device::flex().autodiff().gradient_checkpointing(),
    ] {
        for rule in [FeedbackRule::USf, FeedbackRule::FrSf] {
            device.seed(51);
            let layer = FeedbackConv2dConfig::new([2, 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_feedback(feedback(rule, FeedbackScale::Unit))
                .init(&device);
            let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let x = random::<4>([2, 2, 6, 6], &device);
            let r = random::<4>([2, 3, 6, 6], &device);
            let xa = x.clone().require_grad();
            let ga = (relu(layer.forward(xa.clone())) * r.clone())
                .sum()
                .backward();
            let w = layer.weight.val().detach();
            let b = layer.bias.as_ref().unwrap().val().detach();
            let v = match rule {
                FeedbackRule::FrSf => {
                    layer.feedback.as_ref().unwrap().val().detach() * w.clone().sign()
                }
                _ => w.clone().sign(),
            };
            // Straight-through at the pre-activation, then the same ReLU.
            let xb = x.clone().require_grad();
            let through_v = conv2d(xb.clone(), v, None, options.clone());
            let pre = conv2d(x.clone(), w, Some(b), options.clone()) + through_v.clone()
                - through_v.detach();
            let gb = (relu(pre) * r).sum().backward();
            assert_close(
                &format!("{rule} on {device:?}"),
                xa.grad(&ga).unwrap(),
                xb.grad(&gb).unwrap(),
                TOL,
            );
        }
    }
}

/// The extension's Flex kernels for a convolution's input and weight gradients against burn's
/// generic ones, over strides, asymmetric padding, dilation, groups, 1×1 kernels and batches
/// smaller and larger than the thread count, samples one per product and several side by side
/// (a full and a partial chunk of 8 at 4 × 4 positions), patch rows copied from zero-bordered
/// planes (outputs narrower than 16) and line by line (wider), weight gradients arranged both
/// ways (fewer output channels per group than patch rows, and more: the 16 → 32 1 × 1 case),
/// small padded maps taken block by block over the taps that meet the input (2 × 2 and 1 × 1),
/// weight gradients formed in parts of the batch and summed (twelve samples, six parts);
/// and the same bits with one thread as with two.
#[test]
fn flex_conv2d_kernels_match_burn_on_many_shapes() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(11);
    // (batch, in, out, [h, w], [k1, k2], stride, padding (begin, end) per axis, dilation, groups)
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [(usize, usize); 2],
        [usize; 2],
        usize,
    );
    let cases: [Case; 16] = [
        (1, 3, 4, [7, 6], [3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
        (3, 4, 6, [9, 8], [3, 2], [2, 1], [(1, 2), (0, 1)], [1, 2], 2),
        (5, 8, 8, [6, 6], [1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
        (
            2,
            6,
            9,
            [11, 5],
            [5, 3],
            [3, 2],
            [(2, 0), (1, 1)],
            [1, 1],
            3,
        ),
        (4, 4, 4, [8, 8], [3, 3], [1, 1], [(1, 1), (1, 1)], [2, 2], 4),
        (2, 2, 3, [4, 4], [4, 4], [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
        (
            6,
            5,
            7,
            [10, 10],
            [7, 7],
            [2, 2],
            [(3, 3), (3, 3)],
            [1, 1],
            1,
        ),
        (
            2,
            16,
            32,
            [4, 4],
            [1, 1],
            [2, 2],
            [(0, 0), (0, 0)],
            [1, 1],
            1,
        ),
        (
            10,
            6,
            4,
            [4, 4],
            [3, 3],
            [1, 1],
            [(1, 1), (1, 1)],
            [1, 1],
            2,
        ),
        (
            2,
            3,
            5,
            [9, 40],
            [3, 3],
            [1, 2],
            [(1, 1), (2, 1)],
            [1, 1],
            1,
        ),
        (
            3,
            2,
            2,
            [5, 17],
            [2, 3],
            [1, 1],
            [(0, 1), (1, 1)],
            [2, 1],
            1,
        ),
        // Block by block (mostly padding): 2 × 2 maps in two chunks of samples, with groups; a
        // 1 × 1 map (the weight gradient tap by tap too); stride 2 onto 1 × 1; dilated and
        // asymmetric.
        (
            20,
            8,
            6,
            [2, 2],
            [3, 3],
            [1, 1],
            [(1, 1), (1, 1)],
            [1, 1],
            2,
        ),
        (
            18,
            6,
            8,
            [1, 1],
            [3, 3],
            [1, 1],
            [(1, 1), (1, 1)],
            [1, 1],
            1,
        ),
        (3, 4, 4, [2, 2], [3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1], 1),
        (4, 3, 5, [2, 3], [3, 3], [1, 1], [(2, 1), (1, 2)], [2, 1], 1),
        // A sample per product, twelve of them: the weight gradient in six parts of two.
        (
            12,
            3,
            4,
            [12, 12],
            [3, 3],
            [1, 1],
            [(1, 1), (1, 1)],
            [1, 1],
            1,
        ),
    ];
    for (case, &(batch, cin, cout, hw, k, stride, padding, dilation, groups)) in
        cases.iter().enumerate()
    {
        let options = ConvOptions::new_with_padding(stride, padding, dilation, groups);
        check_against_burn(
            &format!("conv2d case {case}"),
            &device,
            random([batch, cin, hw[0], hw[1]], &device),
            random([cout, cin / groups, k[0], k[1]], &device),
            random([cout, cin / groups, k[0], k[1]], &device),
            random([cout], &device),
            |x, w, b, v| {
                signsym_feedback::ops::feedback_conv2d(x, w, Some(b), v, options.clone()).unwrap()
            },
            |x, w, b| conv2d(x, w, b, options.clone()),
            None,
        );
    }
}

/// What a test of one convolution kind compares: ours (forward with a bias, `dx` through `V`,
/// `dW`, `db`) against burn's op with `W` (forward, `dW`, `db`) and with `V` (`dx`), the forward
/// off the graph equal to the one on it, and the same bits on one thread as on two. `dw_want`, where given, replaces burn's `dW` as the reference
/// (it takes the output gradient `r`).
#[allow(clippy::too_many_arguments)]
fn check_against_burn<const D: usize>(
    what: &str,
    device: &Device,
    x: Tensor<D>,
    w: Tensor<D>,
    v: Tensor<D>,
    b: Tensor<1>,
    ours: impl Fn(Tensor<D>, Tensor<D>, Tensor<1>, Tensor<D>) -> Tensor<D> + Sync,
    burn_op: impl Fn(Tensor<D>, Tensor<D>, Option<Tensor<1>>) -> Tensor<D>,
    dw_want: Option<&dyn Fn(&Tensor<D>) -> Tensor<D>>,
) {
    let r = random(burn_op(x.clone(), w.clone(), None).dims(), device);
    let run = || {
        let (xo, wo, bo) = (
            x.clone().detach().require_grad(),
            w.clone().detach().require_grad(),
            b.clone().detach().require_grad(),
        );
        let y = ours(xo.clone(), wo.clone(), bo.clone(), v.clone());
        let g = (y.clone() * r.clone()).sum().backward();
        let grads = (
            xo.grad(&g).unwrap(),
            wo.grad(&g).unwrap(),
            bo.grad(&g).unwrap(),
        );
        (y.detach(), grads)
    };
    let (y, (dx, dw, db)) = run();
    // The forward off the graph (nothing requires a gradient) is the same op, to the bit.
    assert_identical(
        &format!("{what}: untracked forward"),
        ours(x.clone(), w.clone(), b.clone(), v.clone()),
        y.clone(),
    );
    let (xb, wb, bb) = (
        x.clone().detach().require_grad(),
        w.clone().detach().require_grad(),
        b.clone().detach().require_grad(),
    );
    let yb = burn_op(xb.clone().detach(), wb.clone(), Some(bb.clone()));
    let g = (yb.clone() * r.clone()).sum().backward();
    assert_close(&format!("{what}: forward"), y.clone(), yb.detach(), TOL);
    assert_close(
        &format!("{what}: dW"),
        dw.clone(),
        match dw_want {
            Some(f) => f(&r),
            None => wb.grad(&g).unwrap(),
        },
        TOL,
    );
    assert_close(
        &format!("{what}: db"),
        db.clone(),
        bb.grad(&g).unwrap(),
        TOL,
    );
    let g = (burn_op(xb.clone(), v.clone(), None) * r.clone())
        .sum()
        .backward();
    assert_close(
        &format!("{what}: dx"),
        dx.clone(),
        xb.grad(&g).unwrap(),
        TOL,
    );
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (yt, (dxt, dwt, _)) = pool.install(run);
        assert_identical(
            &format!("{what}: forward, {threads} thread(s)"),
            yt,
            y.clone(),
        );
        assert_identical(&format!("{what}: dx, {threads} thread(s)"), dxt, dx.clone());
        assert_identical(&format!("{what}: dW, {threads} thread(s)"), dwt, dw.clone());
    }
}

/// 1-d convolutions run the 2-d kernels on a unit height: against burn's `conv1d` over strides,
/// asymmetric padding, dilation, groups, a 1-wide kernel, and lengths of one to a few hundred.
/// The weight gradient against a host loop instead: burn 0.22.1's own is wrong with groups and
/// stride together (case 2: off by more than the gradient's size; the loop agrees with ours).
#[test]
fn flex_conv1d_kernels_match_burn() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(12);
    // (batch, in, out, length, k, stride, padding (begin, end), dilation, groups)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        (usize, usize),
        usize,
        usize,
    );
    let cases: [Case; 6] = [
        (2, 4, 6, 11, 3, 2, (1, 2), 2, 2),
        (3, 3, 5, 40, 5, 1, (2, 2), 1, 1),
        (1, 8, 8, 300, 7, 3, (3, 0), 1, 4),
        (5, 6, 4, 9, 1, 1, (0, 0), 1, 1),
        (4, 16, 32, 1, 3, 1, (1, 1), 1, 1),
        (12, 2, 3, 24, 4, 2, (0, 1), 3, 1),
    ];
    for (case, &(batch, cin, cout, len, k, stride, padding, dilation, groups)) in
        cases.iter().enumerate()
    {
        let options = ConvOptions::new_with_padding([stride], [padding], [dilation], groups);
        let x = random([batch, cin, len], &device);
        let xs = host(x.clone());
        // dW[o, c, t] = Σ_n Σ_l r[n, o, l] · x[n, group(o)·cg + c, l·stride + t·dilation − begin].
        let host_dw = |r: &Tensor<3>| {
            let out = r.dims()[2];
            let rs = host(r.clone());
            let (cg, og) = (cin / groups, cout / groups);
            let mut dw = vec![0.0f32; cout * cg * k];
            for n in 0..batch {
                for o in 0..cout {
                    for c in 0..cg {
                        let xc = (n * cin + o / og * cg + c) * len;
                        for t in 0..k {
                            for l in 0..out {
                                let at = (l * stride + t * dilation).checked_sub(padding.0);
                                if let Some(at) = at.filter(|&at| at < len) {
                                    dw[(o * cg + c) * k + t] +=
                                        rs[(n * cout + o) * out + l] * xs[xc + at];
                                }
                            }
                        }
                    }
                }
            }
            Tensor::<3>::from_data(TensorData::new(dw, [cout, cg, k]), &device)
        };
        check_against_burn(
            &format!("conv1d case {case}"),
            &device,
            x,
            random([cout, cin / groups, k], &device),
            random([cout, cin / groups, k], &device),
            random([cout], &device),
            |x, w, b, v| {
                signsym_feedback::ops::feedback_conv1d(x, w, Some(b), v, options.clone()).unwrap()
            },
            |x, w, b| conv1d(x, w, b, options.clone()),
            Some(&host_dw),
        );
    }
}

/// Transposed 2-d convolutions run the convolution kernels with the roles swapped: against
/// burn's `conv_transpose2d` over strides, padding, output padding, dilation, groups, 1 × 1
/// kernels, maps from 1 × 1 to 16 × 16, and batches of one to twelve.
#[test]
fn flex_conv_transpose2d_kernels_match_burn() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(13);
    // (batch, in, out, [h, w], [k1, k2], stride, padding, padding_out, dilation, groups)
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
    );
    let cases: [Case; 7] = [
        (2, 4, 6, [5, 5], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 2),
        (3, 8, 4, [7, 6], [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 1),
        (1, 6, 9, [4, 9], [3, 2], [1, 3], [2, 0], [0, 2], [2, 1], 3),
        (4, 5, 5, [8, 8], [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 1),
        (
            12,
            16,
            8,
            [16, 16],
            [3, 3],
            [1, 1],
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        ),
        (6, 32, 16, [1, 1], [4, 4], [2, 2], [0, 0], [0, 0], [1, 1], 1),
        (2, 4, 4, [3, 3], [3, 3], [3, 2], [0, 1], [2, 1], [1, 2], 4),
    ];
    for (case, &(batch, cin, cout, hw, k, stride, padding, padding_out, dilation, groups)) in
        cases.iter().enumerate()
    {
        let options = ConvTransposeOptions::new(stride, padding, padding_out, dilation, groups);
        check_against_burn(
            &format!("conv_transpose2d case {case}"),
            &device,
            random([batch, cin, hw[0], hw[1]], &device),
            random([cin, cout / groups, k[0], k[1]], &device),
            random([cin, cout / groups, k[0], k[1]], &device),
            random([cout], &device),
            |x, w, b, v| {
                signsym_feedback::ops::feedback_conv_transpose2d(x, w, Some(b), v, options.clone())
                    .unwrap()
            },
            |x, w, b| conv_transpose2d(x, w, b, options.clone()),
            None,
        );
    }
}
