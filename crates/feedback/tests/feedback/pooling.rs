//! The max pooling op against burn's `max_pool2d`: values and input gradients equal to the bit,
//! on shapes with and without padding, overlapping windows, odd sizes, ties and NaN.

use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Distribution, Tensor};
use signsym_feedback::ops::max_pool2d;

fn burn_max_pool2d(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Tensor<4> {
    let options = MaxPoolOptions {
        kernel_size: kernel,
        stride,
        padding: padding.map(|p| (p, p)),
        dilation,
        ceil_mode,
    };
    burn::tensor::module::max_pool2d(x, options)
}

fn bits(t: Tensor<4>) -> Vec<u32> {
    t.into_data()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn max_pooling_equals_burns_forward_and_backward() {
    let _serial = crate::common::serial();
    let device = Device::flex().autodiff();
    // (shape, kernel, stride, padding): the small CNN's 2×2/2, ResNet's 3×3/2 pad 1, AlexNet's
    // 3×3/2, overlapping stride 1, odd sizes, a non-square window.
    let cases = [
        ([3, 4, 8, 8], [2, 2], [2, 2], [0, 0]),
        ([2, 3, 9, 7], [3, 3], [2, 2], [1, 1]),
        ([2, 2, 11, 11], [3, 3], [2, 2], [0, 0]),
        ([1, 3, 6, 5], [3, 2], [1, 1], [1, 0]),
        ([2, 1, 5, 5], [2, 2], [2, 2], [0, 0]),
    ];
    for (k, (shape, kernel, stride, padding)) in cases.into_iter().enumerate() {
        device.seed(k as u64);
        // Values on a coarse grid: many ties inside windows, where the first maximum must win.
        let base = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 4.0), &device).floor();
        let mut data = base.into_data().try_to_vec::<f32>().unwrap();
        if k == 1 {
            data[5] = f32::NAN;
        }
        let x = || {
            Tensor::<4>::from_data(burn::tensor::TensorData::new(data.clone(), shape), &device)
                .require_grad()
        };
        let weights = Tensor::<4>::random(
            burn_max_pool2d(x(), kernel, stride, padding, [1, 1], false).dims(),
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let (ours_x, theirs_x) = (x(), x());
        let ours = max_pool2d(ours_x.clone(), kernel, stride, padding);
        let theirs = burn_max_pool2d(theirs_x.clone(), kernel, stride, padding, [1, 1], false);
        assert_eq!(bits(ours.clone()), bits(theirs.clone()), "case {k}: values");
        let g_ours = ours_x
            .grad(&(ours * weights.clone()).sum().backward())
            .unwrap();
        let g_theirs = theirs_x.grad(&(theirs * weights).sum().backward()).unwrap();
        let (g_ours, g_theirs) = (
            Tensor::<4>::from_inner(g_ours),
            Tensor::<4>::from_inner(g_theirs),
        );
        assert_eq!(bits(g_ours), bits(g_theirs), "case {k}: input gradient");
    }
    // A plain (non-autodiff) device takes the same kernel.
    let plain = Device::flex();
    let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &plain);
    assert_eq!(
        bits(max_pool2d(x.clone(), [2, 2], [2, 2], [0, 0])),
        bits(burn_max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false))
    );
}
