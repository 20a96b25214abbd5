//! The default scale keeps a deep network's input gradient finite and the size of BP's; the
//! paper's unit scale does not.

use crate::common::*;
use burn::nn::PaddingConfig2d;
use burn::tensor::Device;
use burn::tensor::activation::relu;
use signsym_feedback::layers::{FeedbackConv2d, FeedbackConv2dConfig};
use signsym_feedback::{FeedbackRule, FeedbackScale, input_gradient, set_rule, set_scale};

const DEPTH: usize = 16;

fn stack(device: &Device) -> Vec<FeedbackConv2d> {
    (0..DEPTH)
        .map(|_| {
            FeedbackConv2dConfig::new([8, 8], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        })
        .collect()
}

fn grad_norm(layers: &[FeedbackConv2d], device: &Device) -> f32 {
    device.seed(12);
    let x = random::<4>([2, 8, 8, 8], device);
    let g = input_gradient(x, |x| {
        let mut h = x;
        for layer in layers {
            h = relu(layer.forward(h));
        }
        h.sum()
    });
    let values = host(g);
    assert!(
        values.iter().all(|v| v.is_finite()),
        "non-finite input gradient"
    );
    values.iter().map(|v| v * v).sum::<f32>().sqrt()
}

#[test]
fn default_scale_keeps_sixteen_layers_near_bp() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut layers = stack(&device);
    let bp = grad_norm(&layers, &device);
    assert!(bp > 0.0);
    for rule in FeedbackRule::ALL {
        set_rule(&mut layers, rule, 1).unwrap();
        let norm = grad_norm(&layers, &device);
        let ratio = norm / bp;
        eprintln!("{rule}: |dx| / |dx_bp| = {ratio:e}");
        assert!(
            (1e-3..1e3).contains(&ratio),
            "{rule}: ratio {ratio:e} outside [1e-3, 1e3]"
        );
    }
    // The formula as written in the paper: one to two orders of magnitude per layer.
    set_rule(&mut layers, FeedbackRule::USf, 1).unwrap();
    set_scale(&mut layers, FeedbackScale::Unit);
    let unit = grad_norm(&layers, &device) / bp;
    eprintln!("usf, unit scale: ratio {unit:e}");
    assert!(unit > 1e10, "unit scale should blow up, ratio {unit:e}");
}
